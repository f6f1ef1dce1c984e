/**
 * Body of one rank's worker thread: builds the rank's Arena, endpoint and RankContext, runs the
 * entry module's `run(ctx, args)` and posts the result or the error to the launcher. The worker
 * then stays alive until the launcher terminates it, so no rank's exit can disturb messages its
 * peers have not yet drained.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Arena } from '../../tensor/arena.js';
import { Tracer } from '../trace.js';
import { createRankContext } from './context.js';
import { errorInfo, type WorkerInit, type WorkerMessage } from './protocol.js';
import { Endpoint } from './transport.js';

const init = workerData as WorkerInit;
const port = parentPort!;
// Outside main(): its events travel with the result once run() returns.
const tracer = new Tracer(init.trace, init.rank);

function post(message: WorkerMessage): void {
  port.postMessage(message);
}

async function main(): Promise<unknown> {
  const module = (await import(init.entry)) as { run?: unknown };
  if (typeof module.run !== 'function') {
    throw new TypeError(`entry module ${init.entry} does not export a function run(ctx, args)`);
  }
  const arena = new Arena(init.arenaBytes, init.rank);
  const endpoint = new Endpoint(init.rank, init.world, init.ports, new Int32Array(init.doorbell), init.timeoutMs, tracer);
  const ctx = createRankContext(endpoint, arena, (msg) => post({ type: 'report', msg }));
  return (module.run as (c: typeof ctx, a: unknown) => unknown)(ctx, init.args);
}

port.on('message', () => {});
main().then(
  (value) => {
    try {
      post(tracer.enabled ? { type: 'done', value, trace: tracer.events() } : { type: 'done', value });
    } catch (err) {
      post({ type: 'error', error: errorInfo(new TypeError(`rank ${init.rank}: run() returned a value that cannot be sent to the launcher: ${errorInfo(err).message}`)) });
    }
  },
  (err: unknown) => post({ type: 'error', error: errorInfo(err) }),
);
