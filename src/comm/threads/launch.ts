import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { ConfigError } from '../../errors.js';
import { MAX_ARENA_BYTES } from '../../tensor/arena.js';
import type { TraceEvent } from '../trace.js';
import type { RankErrorInfo, WorkerInit, WorkerMessage } from './protocol.js';

export type { RankContext } from './context.js';

export interface LaunchOptions {
  /** Number of ranks, one worker_thread each. */
  world: number;
  /** Absolute path or file:// URL of a compiled ESM module exporting `run(ctx: RankContext, args: unknown): unknown | Promise<unknown>`. */
  entry: string;
  /** Structured-cloneable, passed to every rank (SharedArrayBuffers are shared, not copied). */
  args: unknown;
  /** Bound in milliseconds on every blocking wait in every rank. */
  timeoutMs: number;
  /** Size in bytes of each rank's Arena (src/tensor/arena.ts), at most 4 GiB. */
  arenaBytes: number;
  /** Receives the messages a rank posts with ctx.report(), in the order that rank posted them. */
  onReport?: (rank: number, msg: unknown) => void;
  /** Enable every rank's RankContext.tracer (docs/comm.md, Tracing). Default false: tracers record nothing. */
  trace?: boolean;
  /**
   * With `trace`, receives each rank's trace events (pid = rank, timestamps in µs on a clock
   * shared by all workers) when that rank's run() returns, before the launch resolves.
   */
  onTrace?: (rank: number, events: TraceEvent[]) => void;
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

function entryUrl(entry: unknown): string {
  if (typeof entry !== 'string' || entry === '') {
    throw new ConfigError(`launch option entry = ${JSON.stringify(entry)} is invalid: it must be an absolute path or a file:// URL of a compiled ESM module`);
  }
  let url: URL;
  if (entry.startsWith('file:')) url = new URL(entry);
  else if (isAbsolute(entry)) url = pathToFileURL(entry);
  else throw new ConfigError(`launch option entry = ${JSON.stringify(entry)} is invalid: it must be an absolute path or a file:// URL, not a relative path`);
  if (!existsSync(fileURLToPath(url))) {
    throw new ConfigError(`launch option entry = ${JSON.stringify(entry)} is invalid: no file at ${fileURLToPath(url)} (tests and the CLI run the compiled .js under dist/)`);
  }
  return url.href;
}

function validate(opts: LaunchOptions): string {
  if (typeof opts !== 'object' || opts === null) throw new ConfigError(`launch options must be an object, got ${String(opts)}`);
  const { world, timeoutMs, arenaBytes, onReport, trace, onTrace } = opts;
  if (!Number.isInteger(world) || world < 1) {
    throw new ConfigError(`launch option world = ${String(world)} is invalid: it must be a positive integer (the number of ranks)`);
  }
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new ConfigError(`launch option timeoutMs = ${String(timeoutMs)} is invalid: it must be a positive finite number of milliseconds`);
  }
  if (!Number.isInteger(arenaBytes) || arenaBytes < 1 || arenaBytes > MAX_ARENA_BYTES) {
    throw new ConfigError(`launch option arenaBytes = ${String(arenaBytes)} is invalid: it must be an integer in [1, ${MAX_ARENA_BYTES}] (4 GiB)`);
  }
  if (onReport !== undefined && typeof onReport !== 'function') {
    throw new ConfigError(`launch option onReport is invalid: it must be a function (rank, msg) => void or absent, got ${typeof onReport}`);
  }
  if (trace !== undefined && typeof trace !== 'boolean') {
    throw new ConfigError(`launch option trace = ${String(trace)} is invalid: it must be true, false or absent`);
  }
  if (onTrace !== undefined && typeof onTrace !== 'function') {
    throw new ConfigError(`launch option onTrace is invalid: it must be a function (rank, events) => void or absent, got ${typeof onTrace}`);
  }
  return entryUrl(opts.entry);
}

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
 * Run `entry`'s `run(ctx, args)` on `world` ranks, one worker_thread each, connected by a full
 * mesh of MessageChannels and a shared doorbell (docs/comm.md).
 *
 * @returns each rank's return value, in rank order, once every rank has returned.
 * @throws (rejects with) ConfigError for invalid options, naming the option, value and valid range.
 * @throws (rejects with) RankFailedError `rank R failed: <message>` when any rank throws, its worker fails to
 *   start or exits unexpectedly, or its arguments/result cannot be cloned; all other workers are
 *   terminated first (also those blocked in a receive), so the launch never hangs on them.
 *   Workers are always terminated before the promise settles.
 * @throws (rejects with) Error `onReport threw …` / `onTrace threw …` when a callback throws.
 */
export async function launchRanks(opts: LaunchOptions): Promise<unknown[]> {
  const entry = validate(opts);
  const { world } = opts;
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
      const init: WorkerInit = { rank, world, ports, doorbell, entry, args: opts.args, timeoutMs: opts.timeoutMs, arenaBytes: opts.arenaBytes, trace: opts.trace ?? false };
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
      worker.on('message', (m: WorkerMessage) => {
        if (settled) return;
        if (m.type === 'report') {
          try {
            opts.onReport?.(rank, m.msg);
          } catch (err) {
            finish(new Error(`onReport threw on a message from rank ${rank}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
          }
        } else if (m.type === 'done') {
          if (m.trace !== undefined) {
            try {
              opts.onTrace?.(rank, m.trace);
            } catch (err) {
              finish(new Error(`onTrace threw on the events of rank ${rank}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
              return;
            }
          }
          results[rank] = m.value;
          returned[rank] = true;
          if (--remaining === 0) finish(null);
        } else {
          fail(rank, m.error);
        }
      });
      worker.on('error', (err: Error) => fail(rank, { name: err.name, message: err.message, stack: err.stack ?? err.message }));
      worker.on('messageerror', (err: Error) => failText(rank, `a message from its worker could not be deserialized: ${err.message}`));
      worker.on('exit', (code: number) => {
        if (!returned[rank]) failText(rank, `its worker exited unexpectedly with code ${code} before run() returned`);
      });
    }
  });
}
