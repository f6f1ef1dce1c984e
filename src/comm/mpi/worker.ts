/**
 * Body of an mpi process's rank thread: the process's main thread initialised MPI (with
 * MPI_THREAD_MULTIPLE, so both threads may call it) and stays free for signals and reports;
 * this thread builds the rank's Arena and RankContext over MPI communicators and serves the rank.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Arena } from '../../tensor/arena.js';
import { createRankContext } from '../rank-context.js';
import { serveRank, type RankThreadInit } from '../rank-entry.js';
import { Tracer } from '../trace.js';
import { MpiGroup } from './group.js';
import { loadMpi } from './library.js';

const init = workerData as RankThreadInit;
const port = parentPort!;
const tracer = new Tracer(init.trace, init.rank);
const stop = new Int32Array(init.stop);

port.on('message', () => {});
serveRank(init.rank, tracer, (m) => port.postMessage(m), init.entry, init.args, () => {
  const lib = loadMpi();
  if ('reason' in lib) throw new Error(`rank ${init.rank}: Open MPI did not load in the rank thread: ${lib.reason}`);
  return createRankContext({
    rank: init.rank,
    world: init.world,
    arena: new Arena(init.arenaBytes, init.rank),
    timeoutMs: init.timeoutMs,
    tracer,
    report: (msg) => port.postMessage({ type: 'report', msg }),
    stopRequested: () => Atomics.load(stop, 0) !== 0,
    // Members create a group's communicator together; every rank creates its groups in the same order.
    rawGroup: (kind, ranks, _id, groupRank) => new MpiGroup(lib, lib.createGroup(lib.world, ranks, 0), kind, Object.freeze([...ranks]), groupRank, init.rank, init.timeoutMs),
  });
});
