import { errorInfo, RankFailedError, type LaunchOptions, type RankErrorInfo } from './launcher.js';
import type { RankContext } from './rank-context.js';
import type { TraceEvent, Tracer } from './trace.js';

/** Messages from a rank's worker to its launcher, in the order the rank produced them (both backends). */
export type RankMessage =
  | { type: 'report'; msg: unknown }
  | { type: 'done'; value: unknown; /** The rank's trace events, when tracing was on. */ trace?: TraceEvent[] }
  | { type: 'error'; error: RankErrorInfo };

/**
 * Import the entry module and run its `run(ctx, args)` for one rank.
 * @throws TypeError when the module exports no function `run`; whatever run throws.
 */
export async function runEntry(entry: string, ctx: RankContext, args: unknown): Promise<unknown> {
  const module = (await import(entry)) as { run?: unknown };
  if (typeof module.run !== 'function') {
    throw new TypeError(`entry module ${entry} does not export a function run(ctx, args)`);
  }
  return (module.run as (c: RankContext, a: unknown) => unknown)(ctx, args);
}

/**
 * The body of a rank's thread on every backend: build its context, run the entry, and post
 * `done` (with the trace when tracing) or `error`. The thread then stays alive until its
 * launcher ends it, so no rank's exit can disturb messages its peers have not yet taken.
 */
export function serveRank(rank: number, tracer: Tracer, post: (m: RankMessage) => void, entry: string, args: unknown, context: () => RankContext): void {
  new Promise<RankContext>((resolve) => resolve(context()))
    .then((ctx) => runEntry(entry, ctx, args))
    .then(
      (value) => {
        try {
          post(tracer.enabled ? { type: 'done', value, trace: tracer.events() } : { type: 'done', value });
        } catch (err) {
          post({ type: 'error', error: errorInfo(new TypeError(`rank ${rank}: run() returned a value that cannot be sent to the launcher: ${errorInfo(err).message}`)) });
        }
      },
      (err: unknown) => post({ type: 'error', error: errorInfo(err) }),
    );
}

/**
 * Hand one of rank `rank`'s messages to a launch's callbacks, the same way on every backend: a
 * report to onReport; a result to `done`, after its trace went to onTrace; an error to `fail`
 * as RankFailedError. A callback that throws ends the launch with an error naming it.
 */
export function deliverRankMessage(
  opts: Pick<LaunchOptions, 'onReport' | 'onTrace'>,
  rank: number,
  m: RankMessage,
  on: { done: (value: unknown) => void; fail: (error: Error) => void },
): void {
  const callback = (what: string, fn: () => void): boolean => {
    try {
      fn();
      return true;
    } catch (err) {
      on.fail(new Error(`${what} of rank ${rank}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      return false;
    }
  };
  if (m.type === 'report') callback('onReport threw on a message', () => opts.onReport?.(rank, m.msg));
  else if (m.type === 'error') on.fail(new RankFailedError(rank, m.error));
  else if (m.trace === undefined || callback('onTrace threw on the events', () => opts.onTrace?.(rank, m.trace!))) on.done(m.value);
}

/** What every launcher hands a rank's thread (the threads backend adds its mesh). */
export interface RankThreadInit {
  rank: number;
  world: number;
  /** One Int32, non-zero once the launcher was asked to stop (Launcher.requestStop). */
  stop: SharedArrayBuffer;
  /** file:// URL of the entry module. */
  entry: string;
  args: unknown;
  timeoutMs: number;
  arenaBytes: number;
  /** Enable the rank's tracer (RankContext.tracer). */
  trace: boolean;
}
