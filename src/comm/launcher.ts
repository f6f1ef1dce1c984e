import type { TraceEvent } from './trace.js';

/**
 * How ranks are started and how what they say gets back (DESIGN.md "Next layers"): training,
 * the benches and the CLI see only this interface; `threads` (src/comm/threads/) and `mpi`
 * (src/comm/mpi/) implement it, and src/comm/backends.ts picks one.
 */

export interface LaunchOptions {
  /** Number of ranks. The mpi backend takes it from `mpirun -n` and refuses another value. */
  world: number;
  /** Absolute path or file:// URL of a compiled ESM module exporting `run(ctx: RankContext, args: unknown): unknown | Promise<unknown>`. */
  entry: string;
  /** Structured-cloneable, passed to every rank (SharedArrayBuffers are shared within a process, copied to other processes). */
  args: unknown;
  /** Bound in milliseconds on every blocking wait in every rank. */
  timeoutMs: number;
  /** Size in bytes of each rank's Arena (src/tensor/arena.ts), at most 4 GiB. */
  arenaBytes: number;
  /** Receives the messages ranks post with ctx.report(), in the order each rank posted them; called in the coordinator only. */
  onReport?: (rank: number, msg: unknown) => void;
  /** Enable every rank's RankContext.tracer (docs/comm.md, Tracing). Default false: tracers record nothing. */
  trace?: boolean;
  /**
   * With `trace`, receives each rank's trace events (pid = rank, timestamps in µs since the
   * epoch) when that rank's run() returns, before the launch resolves; coordinator only.
   */
  onTrace?: (rank: number, events: TraceEvent[]) => void;
  /**
   * Called in this process when a stop signal arrived during the launch (Ctrl-C, SIGTERM; under
   * mpirun also the SIGCONT and SIGUSR1 it sends the ranks): every rank then stops after its
   * current step (RankContext.stopRequested). Which signals count, and what a second one does,
   * is the backend's (docs/comm.md, "Stopping a run").
   */
  onStop?: (signal: NodeJS.Signals) => void;
}

export type BackendName = 'threads' | 'mpi';

export interface Launcher {
  readonly backend: BackendName;
  /** The number of ranks fixed by the launching tool (`mpirun -n`), or undefined when this launcher starts any number. */
  readonly fixedWorld: number | undefined;
  /** Whether this process is the one that logs, writes metrics and owns the output (rank 0's process). */
  readonly coordinator: boolean;
  /** Where this process runs, for the first log line (e.g. "1 process, 4 worker threads" or "mpirun, 8 processes on 2 hosts"). */
  describe(world: number): string;
  /**
   * Run `entry`'s `run(ctx, args)` on `world` ranks.
   * @returns in the coordinator, each rank's return value in rank order; elsewhere only this process's own rank's slot is set.
   * @throws (rejects with) ConfigError for invalid options, naming the option, value and valid range.
   * @throws (rejects with) RankFailedError `rank R failed: <message>` when a rank fails; the job's other ranks are stopped, so the launch never hangs.
   */
  launch(opts: LaunchOptions): Promise<unknown[]>;
  /**
   * Ask every rank of the current launch to stop after its current step (RankContext.stopRequested
   * turns true in this process's ranks; ranks agree on it collectively). The launch's stop signals do this too.
   */
  requestStop(): void;
}

/** A rank's failure as it crosses a thread or process boundary: plain fields, since Error subclasses lose their class in cloning. */
export interface RankErrorInfo {
  name: string;
  message: string;
  stack: string;
}

export function errorInfo(err: unknown): RankErrorInfo {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack ?? `${err.name}: ${err.message}` };
  const text = `non-Error value thrown: ${String(err)}`;
  return { name: 'Error', message: text, stack: text };
}

/**
 * The error a launch rejects with when a rank fails (DESIGN decision 8: a rank that throws takes
 * the whole job down with its error). `cause` is an Error carrying the rank's original name,
 * message and stack; the stack is also appended to this error's own stack.
 */
export class RankFailedError extends Error {
  readonly rank: number;

  constructor(rank: number, info: RankErrorInfo) {
    const original = new Error(info.message);
    original.name = info.name;
    original.stack = info.stack;
    // Errors raised inside a rank usually name it already ("rank 3: …"); say it once.
    const prefix = `rank ${rank}: `;
    super(`rank ${rank} failed: ${info.message.startsWith(prefix) ? info.message.slice(prefix.length) : info.message}`, { cause: original });
    this.name = 'RankFailedError';
    this.rank = rank;
    this.stack = `${this.stack ?? ''}\nrank ${rank} stack: ${info.stack}`;
  }
}
