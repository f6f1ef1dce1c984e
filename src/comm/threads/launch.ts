import { availableParallelism } from 'node:os';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { checkLaunchOptions } from '../launch-options.js';
import { withStopSignals } from '../stop-signals.js';
import { RankFailedError, type LaunchOptions, type Launcher, type RankErrorInfo } from '../launcher.js';
import { deliverRankMessage, type RankMessage } from '../rank-entry.js';
import type { WorkerInit } from './protocol.js';

/** ports[r][p]: rank r's end of the channel between ranks r and p (null on the diagonal). */
function fullMesh(world: number): (MessagePort | null)[][] {
  const ports: (MessagePort | null)[][] = Array.from({ length: world }, () => new Array<MessagePort | null>(world).fill(null));
  for (let a = 0; a < world; a++) {
    for (let b = a + 1; b < world; b++) {
      const { port1, port2 } = new MessageChannel();
      ports[a]![b] = port1;
      ports[b]![a] = port2;
    }
  }
  return ports;
}

const WORKER_URL = new URL('./worker.js', import.meta.url);

/**
 * The `threads` backend's launcher: every rank a worker_thread of this process, connected by a
 * full mesh of MessageChannels and a shared doorbell (docs/comm.md). Any world size; this
 * process is the coordinator.
 */
export class ThreadsLauncher implements Launcher {
  readonly backend = 'threads' as const;
  readonly fixedWorld = undefined;
  readonly coordinator = true;
  private readonly stop = new Int32Array(new SharedArrayBuffer(4));

  describe(world: number): string {
    const cores = availableParallelism();
    return `1 process, ${world} worker thread${world === 1 ? '' : 's'} on ${cores} core${cores === 1 ? '' : 's'}`;
  }

  requestStop(): void {
    Atomics.store(this.stop, 0, 1);
  }

  /**
   * See Launcher.launch. Ctrl-C, SIGTERM or SIGUSR1 stops every rank after its current step
   * (onStop is told; listening to SIGUSR1 also keeps Node from opening its inspector on it); a
   * second one ends the process at once (exit code 130 or 143).
   */
  async launch(opts: LaunchOptions): Promise<unknown[]> {
    const entry = checkLaunchOptions(opts);
    return withStopSignals(
      ['SIGINT', 'SIGTERM', 'SIGUSR1'],
      (signal) => {
        this.requestStop();
        opts.onStop?.(signal);
      },
      (signal) => process.exit(signal === 'SIGINT' ? 130 : 143),
      () => this.run(entry, opts),
    );
  }

  /**
   * A rank fails when it throws, its worker fails to start or exits
   * unexpectedly, or its arguments/result cannot be cloned; all other workers are terminated
   * first (also those blocked in a receive). Workers are always terminated before the promise
   * settles. Rejects with Error `onReport threw …` / `onTrace threw …` when a callback throws.
   */
  private async run(entry: string, opts: LaunchOptions): Promise<unknown[]> {
    const { world } = opts;
    Atomics.store(this.stop, 0, 0);
    const doorbell = new SharedArrayBuffer(4 * world);
    const mesh = fullMesh(world);
    const workers: Worker[] = [];
    const results = new Array<unknown>(world);
    const returned = new Array<boolean>(world).fill(false);
    let remaining = world;

    return new Promise<unknown[]>((resolve, reject) => {
      let settled = false;
      const finish = (error: Error | null): void => {
        if (settled) return;
        settled = true;
        for (const row of mesh) for (const p of row) p?.close();
        void Promise.allSettled(workers.map((w) => w.terminate())).then(() => (error === null ? resolve(results) : reject(error)));
      };
      const fail = (rank: number, info: RankErrorInfo): void => finish(new RankFailedError(rank, info));
      const failText = (rank: number, message: string): void => fail(rank, { name: 'Error', message, stack: message });

      for (let rank = 0; rank < world && !settled; rank++) {
        const ports = mesh[rank]!;
        const init: WorkerInit = { rank, world, ports, doorbell, stop: this.stop.buffer as SharedArrayBuffer, entry, args: opts.args, timeoutMs: opts.timeoutMs, arenaBytes: opts.arenaBytes, trace: opts.trace ?? false };
        let worker: Worker;
        try {
          worker = new Worker(WORKER_URL, { workerData: init, transferList: ports.filter((p): p is MessagePort => p !== null) });
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          failText(rank, `could not start its worker (are launch args structured-cloneable?): ${message}`);
          break;
        }
        // Transferred ports are detached here; drop them so cleanup does not touch them.
        mesh[rank] = [];
        workers.push(worker);
        worker.on('message', (m: RankMessage) => {
          if (settled) return;
          deliverRankMessage(opts, rank, m, {
            done: (value) => {
              results[rank] = value;
              returned[rank] = true;
              if (--remaining === 0) finish(null);
            },
            fail: finish,
          });
        });
        worker.on('error', (err: Error) => fail(rank, { name: err.name, message: err.message, stack: err.stack ?? err.message }));
        worker.on('messageerror', (err: Error) => failText(rank, `a message from its worker could not be deserialized: ${err.message}`));
        worker.on('exit', (code: number) => {
          if (!returned[rank]) failText(rank, `its worker exited unexpectedly with code ${code} before run() returned`);
        });
      }
    });
  }
}
