import { deserialize, serialize } from 'node:v8';
import { Worker } from 'node:worker_threads';
import { ConfigError } from '../../errors.js';
import { checkLaunchOptions } from '../launch-options.js';
import { withStopSignals } from '../stop-signals.js';
import { RankFailedError, type LaunchOptions, type Launcher, type RankErrorInfo } from '../launcher.js';
import { deliverRankMessage, type RankMessage, type RankThreadInit } from '../rank-entry.js';
import { loadMpi, type Comm, type MpiLibrary, type Request } from './library.js';

/** Tag of rank messages (reports, results) on the launchers' own communicator. */
const REPORT_TAG = 1;
/** How often a process's main thread looks for rank messages, ms: reports are progress lines, not latency-bound. */
const POLL_MS = 2;
const WORKER_URL = new URL('./worker.js', import.meta.url);

/** What crosses from a rank's process to rank 0's: its rank and one of its RankMessages. */
interface Envelope {
  rank: number;
  message: RankMessage;
}

/**
 * The `mpi` backend's launcher (docs/comm.md): this process is one rank of a job that `mpirun`
 * (or `srun`) started. MPI is initialised on the main thread with MPI_THREAD_MULTIPLE; the rank
 * runs in a worker thread, so the main thread stays free for signals (Launcher.requestStop) and
 * for carrying the rank's reports and result to rank 0's process over a communicator of its own
 * (a duplicate of MPI_COMM_WORLD, so launcher traffic never meets the ranks'). At exit the
 * process calls MPI_Finalize, or MPI_Abort with the exit code after a failure, which ends every
 * process of the job: a failing rank never leaves the others waiting.
 */
class MpiLauncher implements Launcher {
  readonly backend = 'mpi' as const;
  readonly fixedWorld: number;
  readonly coordinator: boolean;
  private readonly rank: number;
  private readonly stop = new Int32Array(new SharedArrayBuffer(4));
  /** The stop signal that arrived during a launch, if any. */
  stopSignal: NodeJS.Signals | undefined;

  constructor(
    private readonly lib: MpiLibrary,
    private readonly reports: Comm,
  ) {
    this.rank = lib.rank(lib.world);
    this.fixedWorld = lib.size(lib.world);
    this.coordinator = this.rank === 0;
  }

  describe(world: number): string {
    const local = process.env.OMPI_COMM_WORLD_LOCAL_SIZE ?? process.env.SLURM_NTASKS_PER_NODE;
    return `Open MPI, ${world} process${world === 1 ? '' : 'es'}${local !== undefined ? ` (${local} on this host)` : ''}`;
  }

  requestStop(): void {
    Atomics.store(this.stop, 0, 1);
  }

  /**
   * See Launcher.launch. Rejects with ConfigError when `world` differs from the job's size.
   * In rank 0's process it resolves once every rank's result has arrived; elsewhere once this
   * rank's result has been handed to MPI.
   *
   * Stopping: when mpirun gets Ctrl-C or SIGTERM, each host's daemon sends its ranks SIGCONT at
   * once, SIGTERM after `odls_base_sigkill_timeout` seconds (default 1) and SIGKILL after twice
   * that; SIGUSR1 sent to mpirun is forwarded to every rank and nothing else follows. The first
   * of SIGCONT, SIGUSR1, SIGINT and SIGTERM stops every rank after its current step (the rest
   * are ignored: mpirun's own sequence ends the job if the step and the checkpoint take too
   * long). After a stop by mpirun's own sequence the process exits without MPI_Finalize, which
   * would wait for daemons that are tearing the job down; after SIGUSR1 it finalizes
   * (docs/comm.md, "Stopping a run").
   */
  async launch(opts: LaunchOptions): Promise<unknown[]> {
    const entry = checkLaunchOptions(opts);
    if (opts.world !== this.fixedWorld) {
      throw new ConfigError(`launch option world = ${opts.world} differs from the ${this.fixedWorld} processes mpirun started: start the job with mpirun -n ${opts.world}`);
    }
    return withStopSignals(
      ['SIGCONT', 'SIGUSR1', 'SIGINT', 'SIGTERM'],
      (signal) => {
        this.stopSignal = signal;
        this.requestStop();
        opts.onStop?.(signal);
      },
      undefined,
      () => this.run(entry, opts),
    );
  }

  private async run(entry: string, opts: LaunchOptions): Promise<unknown[]> {
    const world = opts.world;
    Atomics.store(this.stop, 0, 0);
    const init: RankThreadInit = { rank: this.rank, world, stop: this.stop.buffer as SharedArrayBuffer, entry, args: opts.args, timeoutMs: opts.timeoutMs, arenaBytes: opts.arenaBytes, trace: opts.trace ?? false };
    const results = new Array<unknown>(world);
    const worker = new Worker(WORKER_URL, { workerData: init });
    let remaining = this.coordinator ? world : 1;
    const sending: Request[] = [];
    let ownDone = false;

    return new Promise<unknown[]>((resolve, reject) => {
      let settled = false;
      const finish = (error: Error | null): void => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        void worker.terminate().then(() => (error === null ? resolve(results) : reject(error)));
      };
      const fail = (rank: number, info: RankErrorInfo): void => finish(new RankFailedError(rank, info));
      /** A message of rank `rank`, in the coordinator. */
      const take = (rank: number, m: RankMessage): void =>
        deliverRankMessage(opts, rank, m, {
          done: (value) => {
            results[rank] = value;
            if (--remaining === 0) finish(null);
          },
          fail: finish,
        });
      const forward = (m: RankMessage): void => {
        const bytes = serialize({ rank: this.rank, message: m } satisfies Envelope);
        // MPI keeps the pointer until the send completes: SharedArrayBuffer memory never moves.
        const stable = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
        stable.set(bytes);
        sending.push(this.lib.isend(stable, 0, REPORT_TAG, this.reports));
      };
      const poll = (): void => {
        try {
          if (this.coordinator) {
            for (let s = this.lib.iprobe(REPORT_TAG, this.reports); s !== null && !settled; s = this.lib.iprobe(REPORT_TAG, this.reports)) {
              const env = deserialize(this.lib.recvBytes(s.bytes, s.source, REPORT_TAG, this.reports)) as Envelope;
              take(env.rank, env.message);
            }
          } else {
            for (let i = sending.length - 1; i >= 0; i--) if (this.lib.test(sending[i]) !== null) sending.splice(i, 1);
            if (ownDone && sending.length === 0) finish(null);
          }
        } catch (err) {
          finish(err instanceof Error ? err : new Error(String(err)));
        }
      };
      const timer = setInterval(poll, POLL_MS);

      worker.on('message', (m: RankMessage) => {
        if (settled) return;
        if (m.type === 'error') {
          fail(this.rank, m.error);
          return;
        }
        if (m.type === 'done') {
          results[this.rank] = m.value;
          ownDone = true;
        }
        if (this.coordinator) take(this.rank, m);
        else forward(m);
      });
      worker.on('error', (err: Error) => fail(this.rank, { name: err.name, message: err.message, stack: err.stack ?? err.message }));
      worker.on('messageerror', (err: Error) => fail(this.rank, { name: 'Error', message: `a message from its worker could not be deserialized: ${err.message}`, stack: err.stack ?? err.message }));
      worker.on('exit', (code: number) => {
        if (!ownDone) fail(this.rank, { name: 'Error', message: `its worker exited unexpectedly with code ${code} before run() returned`, stack: '' });
      });
    });
  }
}

let instance: MpiLauncher | undefined;

/**
 * The launcher of this mpi process, made once: loads Open MPI, initialises it with
 * MPI_THREAD_MULTIPLE and arranges MPI_Finalize (exit code 0) or MPI_Abort (any other) at exit.
 * @throws ConfigError naming the packages to install when Open MPI does not load, or the thread
 * level when the library cannot give MPI_THREAD_MULTIPLE.
 */
export function mpiLauncher(): Launcher {
  if (instance !== undefined) return instance;
  const lib = loadMpi();
  if ('reason' in lib) throw new ConfigError(`train.backend = "mpi" needs Open MPI: ${lib.reason}`);
  const provided = lib.init();
  process.on('exit', (code) => {
    const signal = instance?.stopSignal;
    // SIGCONT, SIGINT, SIGTERM: mpirun is ending the job itself, and MPI_Finalize would wait for its daemons.
    if (signal !== undefined && signal !== 'SIGUSR1') return;
    // A clean end (a SIGUSR1 stop included: exit code 0) finalizes; a failure ends the whole job.
    if (code === 0) lib.finalize();
    else lib.abort(lib.world, code);
  });
  if (provided < lib.THREAD_MULTIPLE) {
    throw new ConfigError(
      `Open MPI at ${lib.path} provides thread level ${provided}, but the mpi backend needs MPI_THREAD_MULTIPLE (${lib.THREAD_MULTIPLE}): ` +
        'its rank thread and its main thread both call MPI. Use an Open MPI built with thread support (Debian\'s is; `ompi_info | grep -i thread` shows it)',
    );
  }
  const launcher = new MpiLauncher(lib, lib.dup(lib.world));
  instance = launcher;
  return launcher;
}
