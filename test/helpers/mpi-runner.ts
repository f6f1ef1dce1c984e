/**
 * Run one launch on the mpi backend, as test/helpers/backends.ts asks: `mpirun -n N node
 * mpi-runner.js SPEC OUT`. SPEC holds the v8-serialized launch options (without callbacks);
 * rank 0 writes { results, reports, traces } to OUT. A failure is printed as one line
 * `LAUNCH_FAILED <json>` so the test side can rebuild the error, then the exit code makes the
 * launcher end the job.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { deserialize, serialize } from 'node:v8';
import { createLauncher } from '../../src/comm/backends.js';
import { RankFailedError, type LaunchOptions } from '../../src/comm/launcher.js';
import type { TraceEvent } from '../../src/comm/trace.js';
import { ConfigError } from '../../src/errors.js';

const [specPath, outPath] = process.argv.slice(2);
const spec = deserialize(readFileSync(specPath!)) as LaunchOptions;
const reports: Array<[number, unknown]> = [];
const traces: Array<[number, TraceEvent[]]> = [];
try {
  const launcher = await createLauncher('mpi');
  const results = await launcher.launch({ ...spec, onReport: (r, m) => reports.push([r, m]), onTrace: (r, e) => traces.push([r, e]) });
  if (launcher.coordinator) writeFileSync(outPath!, serialize({ results, reports, traces }));
} catch (err) {
  const e = err as Error;
  const kind = err instanceof RankFailedError ? 'rank' : err instanceof ConfigError ? 'config' : 'other';
  const cause = err instanceof RankFailedError && err.cause instanceof Error ? err.cause : undefined;
  process.stderr.write(`LAUNCH_FAILED ${JSON.stringify({ kind, message: e.message, rank: (err as RankFailedError).rank, cause: cause && { name: cause.name, message: cause.message, stack: cause.stack } })}\n`);
  process.exitCode = 1;
}
