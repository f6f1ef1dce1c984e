import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import { launchRanks } from '../../src/comm/backends.js';
import { RankFailedError, type BackendName, type LaunchOptions } from '../../src/comm/launcher.js';
import { findMpirun, localMpirunArgs, mpirunEnv } from '../../src/comm/mpi/mpirun.js';
import type { TraceEvent } from '../../src/comm/trace.js';
import { ConfigError } from '../../src/errors.js';

/** Both backends, for contract tests that must hold on each. */
export const BACKENDS: readonly BackendName[] = ['threads', 'mpi'];

const RUNNER = new URL('./mpi-runner.js', import.meta.url).pathname;

export interface MpiRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Spawn `mpirun ARGS` (as this machine needs it: root switches), bounded by `limitMs` (then SIGKILL). */
export function runMpirun(args: readonly string[], limitMs = 120_000, env: NodeJS.ProcessEnv = process.env): Promise<MpiRun> {
  const mpirun = findMpirun();
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(mpirun, args, { env: mpirunEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

/**
 * `opts` on `backend`: threads in this process; mpi as `mpirun -n world` processes on this
 * machine running test/helpers/mpi-runner.ts. Callbacks are called after the job ends (mpi), in
 * each rank's order. A failed launch rejects as on threads: RankFailedError or ConfigError
 * carrying the rank's message.
 * @throws Error naming the packages to install when Open MPI is missing (the test fails, it is not skipped).
 */
export async function launchOn(backend: BackendName, opts: LaunchOptions): Promise<unknown[]> {
  if (backend === 'threads') return launchRanks(opts);
  const dir = mkdtempSync(join(tmpdir(), 'loongtrain-mpi-launch-'));
  try {
    const { onReport, onTrace, ...spec } = opts;
    writeFileSync(join(dir, 'spec'), serialize(spec));
    const run = await runMpirun([...localMpirunArgs(opts.world), process.execPath, RUNNER, join(dir, 'spec'), join(dir, 'out')]);
    const failed = run.stderr.split('\n').find((l) => l.startsWith('LAUNCH_FAILED '));
    if (failed !== undefined) {
      const f = JSON.parse(failed.slice('LAUNCH_FAILED '.length)) as { kind: string; message: string; rank?: number; cause?: { name: string; message: string; stack: string } };
      if (f.kind === 'rank' && f.cause !== undefined) throw new RankFailedError(f.rank!, f.cause);
      if (f.kind === 'config') throw new ConfigError(f.message);
      throw new Error(f.message);
    }
    if (run.code !== 0) throw new Error(`mpirun exited with ${run.code}:\n${run.stderr}`);
    const out = deserialize(readFileSync(join(dir, 'out'))) as { results: unknown[]; reports: Array<[number, unknown]>; traces: Array<[number, TraceEvent[]]> };
    for (const [rank, msg] of out.reports) onReport?.(rank, msg);
    for (const [rank, events] of out.traces) onTrace?.(rank, events);
    return out.results;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
