import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors.js';
import { configToToml, type Config } from './config.js';
import type { StepMetrics } from './metrics.js';

/**
 * The project's test hosts (scripts/test-hosts.sh): network namespaces on a private subnet made
 * on this machine, joined by a bridge, each a "host" with its own hostname, so that `mpirun`
 * places ranks on several hosts whose links `tc` shapes like a cluster's, while ranks of one
 * host talk through Open MPI's shared memory. Needs root, iproute2 and Open MPI. Used by the
 * cluster benchmark and the tests; nothing is sent outside the namespaces they make.
 */

const SCRIPT = fileURLToPath(new URL('../../../scripts/test-hosts.sh', import.meta.url));
const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** The install command named when a tool the test hosts need is missing. */
export const TEST_HOSTS_INSTALL = 'apt-get install iproute2 openmpi-bin libopenmpi-dev';

export interface TestHostsOptions {
  /** Egress rate of each host toward the others, in tc's units (e.g. "1gbit"); unshaped when absent. */
  rate?: string;
  /** Ranks each host takes (hostfile slots). */
  slots: number;
}

/** tc's rate units, as scripts/test-hosts.sh reads them (SI and binary bits or bytes per second; a bare number is bits/s). */
const TC_RATE = /^[0-9]+(\.[0-9]+)?(|bit|kbit|mbit|gbit|tbit|kibit|mibit|gibit|tibit|bps|kbps|mbps|gbps|tbps|kibps|mibps|gibps|tibps)$/i;

/**
 * Check the benchmarks' link rates before any host is made: each "unshaped" or a tc rate.
 * @throws ConfigError naming the first bad rate and the valid forms, or an empty list.
 */
export function checkLinkRates(rates: readonly string[]): void {
  if (rates.length === 0) throw new ConfigError('--rates is empty: give tc rates such as 1gbit, or "unshaped"');
  for (const rate of rates) {
    if (rate !== 'unshaped' && !TC_RATE.test(rate)) throw new ConfigError(`--rates: "${rate}" is not a link rate: use "unshaped" or a tc rate, a number with a unit such as 1gbit, 200mbit, 50mbps`);
  }
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

export interface TestHostsTrainOptions {
  steps: number;
  /** Ranks on each of the 2 hosts. */
  perHost: number;
  /** The run's log folder (metrics.jsonl); its config goes to `<dir>.toml`. */
  dir: string;
  /** What the run is, for the error: "cluster bench: ring at 1gbit". */
  what: string;
  limitMs: number;
  /** mpirun options before the program (e.g. --bind-to none). */
  mpirunArgs?: readonly string[];
}

/**
 * Train `steps` steps of `config` with layout `parallel` under mpirun on 2 test hosts made by
 * testHostsUp, `perHost` ranks on each, with no checkpoints, progress or trace (the benchmarks'
 * runs).
 * @returns rank 0's metrics rows, one per step.
 * @throws Error naming `what`, the exit code and the tail of the job's output when it fails.
 */
export async function trainOnTestHosts(config: Config, parallel: Config['parallel'], opts: TestHostsTrainOptions): Promise<StepMetrics[]> {
  const { steps, perHost, dir } = opts;
  const run: Config = {
    ...config,
    parallel,
    train: { ...config.train, steps, backend: 'auto' },
    optim: { ...config.optim, warmupSteps: Math.min(config.optim.warmupSteps, steps) },
    save: { ...config.save, dir: join(dir, 'checkpoints'), every: 0 },
    log: { ...config.log, dir, progress: 'none', trace: false },
  };
  const toml = `${dir}.toml`;
  writeFileSync(toml, configToToml(run));
  const world = 2 * perHost;
  const job = await testHostsRun(world, perHost, [...(opts.mpirunArgs ?? []), process.execPath, CLI, 'train', '--config', toml], opts.limitMs);
  if (job.code !== 0) throw new Error(`${opts.what} with ${perHost} rank${perHost === 1 ? '' : 's'} per host failed (exit ${job.code}):\n${job.stderr.slice(-4000)}`);
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as StepMetrics);
}
