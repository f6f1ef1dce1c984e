/** Body of one rank's worker thread of the threads backend: the rank's Arena and mesh endpoint, then serveRank. */
import { parentPort, workerData } from 'node:worker_threads';
import { Arena } from '../../tensor/arena.js';
import { serveRank } from '../rank-entry.js';
import { Tracer } from '../trace.js';
import { threadRankContext } from './context.js';
import type { WorkerInit } from './protocol.js';
import { Endpoint } from './transport.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const tracer = new Tracer(init.trace, init.rank);
const stop = new Int32Array(init.stop);

port.on('message', () => {});
serveRank(init.rank, tracer, (m) => port.postMessage(m), init.entry, init.args, () => {
  const endpoint = new Endpoint(init.rank, init.world, init.ports, new Int32Array(init.doorbell), init.timeoutMs);
  return threadRankContext(endpoint, new Arena(init.arenaBytes, init.rank), tracer, (msg) => port.postMessage({ type: 'report', msg }), () => Atomics.load(stop, 0) !== 0);
});
