/**
 * Rank entry of the CPU link measurement (src/plan/cpu.ts `measureLink` on threads,
 * src/plan/hosts-link-main.ts on Open MPI): ranks 0 and 1 of the world ping-pong f32 messages of
 * each size with blocking send/recv on the backend in use (threads or mpi); rank 0 reports the
 * median one-way time per size (half a round trip).
 */
import type { LaunchOptions } from '../comm/launcher.js';
import type { RankContext } from '../comm/rank-context.js';

export interface LinkRankArgs {
  /** Message sizes in f32 elements. */
  sizes: number[];
  warmup: number;
  reps: number;
}

/** A small and a large message: α from the first, bandwidth from the difference. */
const SIZES = [16, 1 << 18];

/** The launch of the ping-pong on 2 ranks, for either backend's launcher. */
export const LINK_LAUNCH: LaunchOptions = {
  world: 2,
  entry: new URL('./cpu-link-rank.js', import.meta.url).href,
  args: { sizes: SIZES, warmup: 5, reps: 31 } satisfies LinkRankArgs,
  timeoutMs: 60_000,
  arenaBytes: 16 * 2 ** 20,
};

/** α (µs) and bandwidth (GB/s) from rank 0's one-way times of the LINK_LAUNCH sizes. */
export function linkFromOneWay([small, large]: readonly number[]): { linkLatencyUs: number; linkGBps: number } {
  const bytes = 4 * (SIZES[1]! - SIZES[0]!);
  return { linkLatencyUs: small! * 1e3, linkGBps: bytes / Math.max(1e-6, large! - small!) / 1e6 };
}

export function run(ctx: RankContext, a: LinkRankArgs): { oneWayMs: number[] } | null {
  const g = ctx.newGroup('world', Array.from({ length: ctx.world }, (_, i) => i));
  const oneWayMs: number[] = [];
  for (const n of a.sizes) {
    const buf = new Float32Array(n);
    const times: number[] = [];
    for (let i = 0; i < a.warmup + a.reps; i++) {
      g.barrier();
      const t0 = performance.now();
      if (ctx.rank === 0) {
        g.send(buf, 1, 7);
        g.recv(buf, 1, 8);
      } else if (ctx.rank === 1) {
        g.recv(buf, 0, 7);
        g.send(buf, 0, 8);
      }
      if (i >= a.warmup) times.push((performance.now() - t0) / 2);
    }
    times.sort((x, y) => x - y);
    oneWayMs.push(times[times.length >> 1]!);
  }
  return ctx.rank === 0 ? { oneWayMs } : null;
}
