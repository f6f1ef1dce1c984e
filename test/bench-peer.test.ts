import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runTorchPeer, torchAvailable } from '../src/train/bench-peer.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/torch_peer.py', import.meta.url));
const TINY = { dim: 32, layers: 2, heads: 4, kvHeads: 2, ffnDim: 48, vocab: 257, ropeTheta: 10000, normEps: 1e-5 };

/** Fails (never skips) without torch: CI installs python3-torch (.ci/run), so a missing one is a broken setup. */
function requireTorch(): void {
  const t = torchAvailable();
  assert.ok(t.ok, `the PyTorch peer cannot run: ${t.reason}`);
}

describe('PyTorch peer (scripts/torch_peer.py)', () => {
  for (const attention of ['naive', 'chunked'] as const) {
    it(`${attention}: one positive wall time per training step`, async () => {
      requireTorch();
      const r = await runTorchPeer({ model: TINY, attention, seqLen: 64, steps: 2, threads: 1, timeoutMs: 300_000 });
      assert.equal(r.error, undefined, `peer failed: ${r.error}`);
      assert.match(r.torch, /^\d+\.\d+/);
      assert.equal(r.stepMs.length, 2);
      for (const ms of r.stepMs) assert.ok(Number.isFinite(ms) && ms > 0, `step time ${ms}`);
    });
  }

  it('chunked attention gives the same loss and gradients as naive (float64, ragged blocks, GQA)', () => {
    requireTorch();
    const py = process.env.LOONGTRAIN_PYTHON ?? '/usr/bin/python3';
    // seqLen 37 in blocks of 8: 5 query blocks, a partial last one, masked diagonal blocks.
    const args = [SCRIPT, '--check', '--seq-len', '37', '--block', '8', '--dim', '32', '--layers', '2', '--heads', '4', '--kv-heads', '2', '--ffn-dim', '48', '--threads', '1'];
    const r = spawnSync(py, args, { encoding: 'utf8', timeout: 300_000 });
    assert.ok(r.stdout.trim() !== '', `--check printed nothing (exit ${r.status}): ${r.stderr.trim().split('\n').pop()}`);
    const c = JSON.parse(r.stdout) as { ok: boolean; lossNaive: number; lossRelErr: number; maxGradRelErr: number; worstParam: string; gradcheck: boolean };
    assert.ok(Number.isFinite(c.lossNaive) && c.lossNaive > 0, `loss ${c.lossNaive}`);
    assert.ok(c.lossRelErr <= 1e-5, `loss differs by ${c.lossRelErr} relative`);
    assert.ok(c.maxGradRelErr <= 1e-5, `gradient of ${c.worstParam} differs by ${c.maxGradRelErr} relative`);
    assert.ok(c.gradcheck, 'torch.autograd.gradcheck of the chunked backward failed');
    assert.ok(c.ok && r.status === 0, `--check reports failure (exit ${r.status})`);
  });

  it('a failure of the peer comes back as an error, not a throw', async () => {
    requireTorch();
    // heads 3 do not divide dim 32: the script refuses the dims with a JSON error.
    const r = await runTorchPeer({ model: { ...TINY, heads: 3 }, attention: 'chunked', seqLen: 16, steps: 1, threads: 1, timeoutMs: 300_000 });
    assert.deepEqual(r.stepMs, []);
    assert.match(r.error ?? '', /dim 32 \/ heads 3/);
  });

  it('a run past timeoutMs is killed and reported', async () => {
    requireTorch();
    // 10 ms is far less than importing torch takes, so the child is always killed first.
    const r = await runTorchPeer({ model: TINY, attention: 'naive', seqLen: 16, steps: 1, threads: 1, timeoutMs: 10 });
    assert.deepEqual(r.stepMs, []);
    assert.equal(r.error, 'timed out after 10 ms');
  });
});
