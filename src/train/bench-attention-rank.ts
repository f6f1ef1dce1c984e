/**
 * Rank entry of the attention benchmark (`loongtrain bench attention`, src/train/bench-attention.ts):
 * one TwoDAttention layer with the reference kernels on seeded random q, k, v and dO of this
 * rank's S/sp tokens, run forward + backward `warmup + reps` times. Each run starts at a world
 * barrier; the rank reports its own time and communication per measured run.
 */
import { TwoDAttention } from '../attention/two-d.js';
import { GROUP_KINDS, type CommCounters, type GroupKind } from '../comm/process-group.js';
import type { RankContext } from '../comm/rank-context.js';
import { getKernels } from '../kernels/registry.js';
import { ParallelDims } from '../parallel/dims.js';
import { buildRankGroups } from '../parallel/rank-groups.js';
import { SequenceLayout } from '../parallel/sequence-layout.js';
import { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import type { AttentionBenchOptions } from './bench-attention.js';

export interface AttentionBenchRankArgs extends AttentionBenchOptions {
  hp: number;
  cp: number;
  /** Inner ring size w of Double-Ring-Attention; cp = one plain ring. */
  innerRingSize: number;
}

/** Traffic of one pass, by group kind. */
export type PassCounters = Record<GroupKind, CommCounters>;

export interface AttentionBenchRankResult {
  /** Milliseconds of forward + backward of each measured run, on this rank. */
  ms: number[];
  /** Milliseconds this rank was blocked waiting for messages in each measured run (all kinds, both passes). */
  waitMs: number[];
  /** Whether the layer ran a double ring (inner and outer groups given). */
  doubleRing: boolean;
  /** Counters of the last measured forward and backward (deterministic: equal in every run). */
  forward: PassCounters;
  backward: PassCounters;
}

function randomTensor(ctx: RankContext, rng: Rng, shape: readonly number[]): Tensor {
  const t = Tensor.zeros(ctx.arena, shape);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal();
  return t;
}

function totalWaitMs(counters: PassCounters): number {
  return GROUP_KINDS.reduce((sum, k) => sum + counters[k].waitMs, 0);
}

export function run(ctx: RankContext, a: AttentionBenchRankArgs): AttentionBenchRankResult {
  const dims = new ParallelDims({ dp: 1, hp: a.hp, cp: a.cp, innerRingSize: a.innerRingSize, placement: 'head-first' }, ctx.world);
  const groups = buildRankGroups(ctx, dims, { stage: 0, shardGroup: 'world' });
  const attn = new TwoDAttention({
    kernels: getKernels('reference'),
    heads: a.heads,
    kvHeads: a.kvHeads,
    headDim: a.headDim,
    hpGroup: groups.hp,
    cpGroup: groups.cp,
    innerGroup: groups.inner,
    outerGroup: groups.outer,
  });
  const layout = new SequenceLayout({ hp: a.hp, cp: a.cp, seqLen: a.seqLen, causal: a.causal });
  // The values only need to be finite and varied: timing and traffic do not depend on them.
  const rng = new Rng((a.seed + ctx.rank * 0x9e3779b9) >>> 0);
  const t = a.seqLen / dims.sp;
  const q = randomTensor(ctx, rng, [t, a.heads, a.headDim]);
  const k = randomTensor(ctx, rng, [t, a.kvHeads, a.headDim]);
  const v = randomTensor(ctx, rng, [t, a.kvHeads, a.headDim]);
  const dOut = randomTensor(ctx, rng, [t, a.heads, a.headDim]);
  const dq = Tensor.zeros(ctx.arena, q.shape);
  const dk = Tensor.zeros(ctx.arena, k.shape);
  const dv = Tensor.zeros(ctx.arena, v.shape);

  const result: AttentionBenchRankResult = { ms: [], waitMs: [], doubleRing: groups.inner !== undefined, forward: ctx.counters(), backward: ctx.counters() };
  for (let i = 0; i < a.warmup + a.reps; i++) {
    for (const g of [dq, dk, dv]) g.data.fill(0);
    groups.world.barrier();
    ctx.resetCounters();
    const start = performance.now();
    const saved = attn.forward(q, k, v, layout);
    const forward = ctx.counters();
    ctx.resetCounters();
    attn.backward(saved, dOut, dq, dk, dv, layout);
    const ms = performance.now() - start;
    const backward = ctx.counters();
    if (i < a.warmup) continue;
    result.ms.push(ms);
    result.waitMs.push(totalWaitMs(forward) + totalWaitMs(backward));
    result.forward = forward;
    result.backward = backward;
  }
  return result;
}
