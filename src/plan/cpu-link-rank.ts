/**
 * Rank entry of the CPU link measurement (src/plan/cpu.ts `measureLink`): ranks 0 and 1 of the
 * world ping-pong f32 messages of each size with blocking send/recv on the backend in use
 * (threads or mpi); rank 0 reports the median one-way time per size (half a round trip).
 */
import type { RankContext } from '../comm/rank-context.js';

export interface LinkRankArgs {
  /** Message sizes in f32 elements. */
  sizes: number[];
  warmup: number;
  reps: number;
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
