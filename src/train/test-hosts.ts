import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The project's test hosts (scripts/test-hosts.sh): network namespaces on a private subnet made
 * on this machine, joined by a bridge, each a "host" with its own hostname, so that `mpirun`
 * places ranks on several hosts whose links `tc` shapes like a cluster's, while ranks of one
 * host talk through Open MPI's shared memory. Needs root, iproute2 and Open MPI. Used by the
 * cluster benchmark and the tests; nothing is sent outside the namespaces they make.
 */

const SCRIPT = fileURLToPath(new URL('../../../scripts/test-hosts.sh', import.meta.url));

/** The install command named when a tool the test hosts need is missing. */
export const TEST_HOSTS_INSTALL = 'apt-get install iproute2 openmpi-bin libopenmpi-dev';

export interface TestHostsOptions {
  /** Egress rate of each host toward the others, in tc's units (e.g. "1gbit"); unshaped when absent. */
  rate?: string;
  /** Ranks each host takes (hostfile slots). */
  slots: number;
}

function script(args: readonly string[]): string {
  return execFileSync('bash', [SCRIPT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Check that test hosts can be made here.
 * @throws Error naming what is missing (root, iproute2's ip and tc, Open MPI) and how to get it.
 */
export function checkTestHosts(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error('test hosts need root (network namespaces): run as root, as CI does');
  for (const tool of ['ip', 'tc', 'mpirun', 'unshare']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`test hosts need ${tool}, which is not on PATH: ${TEST_HOSTS_INSTALL}`);
    }
  }
  if (!existsSync(SCRIPT)) throw new Error(`test hosts need ${SCRIPT}, which is missing from this checkout`);
}

/** Make `n` hosts lt-h0 … (removing any left over); returns the hostfile's path. */
export function testHostsUp(n: number, opts: TestHostsOptions): string {
  return script(['up', String(n), '--slots', String(opts.slots), ...(opts.rate !== undefined ? ['--rate', opts.rate] : [])]).trim();
}

/** Remove every test host; never fails when none is there. */
export function testHostsDown(): void {
  script(['down']);
}

/**
 * Run `mpirun -n world PROGRAM…` inside lt-h0 over the test hosts, `perHost` ranks on each host
 * in rank order (ranks 0 … perHost − 1 on lt-h0), bounded by `limitMs` (then killed).
 * @returns the exit code and what the job printed on stderr.
 */
export function testHostsRun(world: number, perHost: number, program: readonly string[], limitMs: number): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SCRIPT, 'mpirun', '-n', String(world), '--map-by', `ppr:${perHost}:node`, ...program], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const limit = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(limit);
      resolve({ code, stderr });
    });
  });
}

/** The command that runs `cmd` on test host `host` (its namespace and hostname). */
export function testHostsExec(host: string, cmd: readonly string[]): [string, string[]] {
  return ['bash', [SCRIPT, 'exec', host, ...cmd]];
}

/** Bytes host `host` has sent on its link to the others so far (its eth0's transmit counter, headers included). */
export function hostSentBytes(host: string): number {
  const out = execFileSync('ip', ['-n', host, '-s', '-j', 'link', 'show', 'dev', 'eth0'], { encoding: 'utf8' });
  const [link] = JSON.parse(out) as Array<{ stats64?: { tx?: { bytes?: number } } }>;
  const bytes = link?.stats64?.tx?.bytes;
  if (typeof bytes !== 'number') throw new Error(`no transmit counter for ${host}'s eth0: ${out}`);
  return bytes;
}
