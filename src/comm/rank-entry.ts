import { errorInfo, type RankErrorInfo } from './launcher.js';
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
