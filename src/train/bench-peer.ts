/**
 * The PyTorch peer of `bench train`: runs scripts/torch_peer.py (our model in eager PyTorch,
 * naive or flash-style chunked attention) in a child Python and returns its step times.
 *
 * A development tool: only the bench imports this module, and a machine without Python or torch
 * gets a reason (with the install command) instead of a failure, so the product never depends
 * on Python.
 */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The model dims the peer builds (ours: ModelConfig's names; tied LM head always). */
export interface PeerModel {
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffnDim: number;
  vocab: number;
  ropeTheta: number;
  normEps: number;
}

export interface TorchPeerOptions {
  model: PeerModel;
  attention: 'naive' | 'chunked';
  seqLen: number;
  steps: number;
  /** torch.set_num_threads and OpenBLAS's thread count in the child. */
  threads: number;
  /** Wall-clock bound on the whole child run (start-up included); the child is killed past it. */
  timeoutMs: number;
}

export interface TorchPeerResult {
  /** Wall ms of each training step (forward, backward, clip, AdamW); empty on failure. */
  stepMs: number[];
  /** torch.__version__, or '' when it could not be learned. */
  torch: string;
  /** Why the peer produced no step times (no torch, out of memory, timed out, …). */
  error?: string;
}

const INSTALL = 'apt-get install -y python3-torch';

/** The script, from this module's compiled place (dist/src/train/) back to the checkout. */
const SCRIPT = fileURLToPath(new URL('../../../scripts/torch_peer.py', import.meta.url));

/** Debian's python3-torch lives under /usr/bin/python3; another python may come first on PATH. */
function python(): string {
  return process.env.LOONGTRAIN_PYTHON ?? '/usr/bin/python3';
}

let probe: { ok: boolean; reason?: string; version: string } | undefined;

function probeTorch(): { ok: boolean; reason?: string; version: string } {
  if (probe !== undefined) return probe;
  const py = python();
  const r = spawnSync(py, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 120_000 });
  if (r.error !== undefined) {
    probe = { ok: false, reason: `${py} did not run (${r.error.message}): the PyTorch peer needs Python 3 with torch; ${INSTALL} (or set LOONGTRAIN_PYTHON)`, version: '' };
  } else if (r.status !== 0) {
    const last = r.stderr.trim().split('\n').pop() || `exit ${r.status ?? r.signal}`;
    probe = { ok: false, reason: `${py} cannot import torch (${last}): ${INSTALL} (or set LOONGTRAIN_PYTHON)`, version: '' };
  } else {
    probe = { ok: true, version: r.stdout.trim() };
  }
  return probe;
}

/**
 * Whether the peer can run: `LOONGTRAIN_PYTHON` (default /usr/bin/python3) imports torch. The
 * answer is cached for the process; `reason` names the install command when not.
 */
export function torchAvailable(): { ok: boolean; reason?: string } {
  const p = probeTorch();
  return p.ok ? { ok: true } : { ok: false, reason: p.reason! };
}

/** The script's command line for `opts` (its flags are the model dims' snake_case names). */
function peerArgs(opts: TorchPeerOptions): string[] {
  const m = opts.model;
  const flags: [string, number][] = [
    ['--seq-len', opts.seqLen], ['--steps', opts.steps], ['--threads', opts.threads],
    ['--dim', m.dim], ['--layers', m.layers], ['--heads', m.heads], ['--kv-heads', m.kvHeads], ['--ffn-dim', m.ffnDim],
    ['--vocab', m.vocab], ['--rope-theta', m.ropeTheta], ['--norm-eps', m.normEps],
  ];
  return [SCRIPT, '--json', '--attention', opts.attention, ...flags.flatMap(([f, v]) => [f, String(v)])];
}

/**
 * Train the peer for `opts.steps` steps in a child Python and return each step's wall ms.
 * Never throws for a failure of the peer (torch missing, out of memory under the script's
 * address-space cap, a crash, the timeout): it comes back as `error` with `stepMs` empty.
 */
export async function runTorchPeer(opts: TorchPeerOptions): Promise<TorchPeerResult> {
  const p = probeTorch();
  if (!p.ok) return { stepMs: [], torch: '', error: p.reason! };
  return new Promise((resolve) => {
    const child = spawn(python(), peerArgs(opts), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    // Only the tail matters (the last line of a traceback); keep it bounded.
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-16384)));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ stepMs: [], torch: p.version, error: `${python()} did not start: ${e.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) return resolve({ stepMs: [], torch: p.version, error: `timed out after ${opts.timeoutMs} ms` });
      const line = stdout.trim().split('\n').pop() ?? '';
      let out: { stepMs?: unknown; torch?: unknown; error?: unknown } | undefined;
      try {
        out = JSON.parse(line) as typeof out;
      } catch {
        out = undefined;
      }
      const torch = typeof out?.torch === 'string' ? out.torch : p.version;
      if (out !== undefined && typeof out.error === 'string') return resolve({ stepMs: [], torch, error: out.error });
      if (code === 0 && Array.isArray(out?.stepMs) && out.stepMs.every((x) => typeof x === 'number')) {
        return resolve({ stepMs: out.stepMs as number[], torch });
      }
      const why = stderr.trim().split('\n').pop() || `no JSON on stdout (${JSON.stringify(line.slice(0, 200))})`;
      resolve({ stepMs: [], torch, error: `the peer exited with ${code ?? signal}: ${why}` });
    });
  });
}
