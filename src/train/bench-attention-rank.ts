/**
 * Rank entry of the attention benchmarks (`loongtrain bench attention`, src/train/bench-attention.ts;
 * `loongtrain bench documents`, src/train/bench-documents.ts): one TwoDAttention layer on seeded
 * random q, k, v and dO of this rank's S/sp tokens, run forward + backward `warmup + reps` times.
 * The sequence is one document, or the packed documents of `cuSeqlens` under `sharding`; the
 * kernels are the reference ones unless `kernels` names another backend. Each run starts at a
 * world barrier; the rank reports its own time and communication per measured run, its ring's
 * computed and skipped hops, and its ring position's visible pairs.
 */
import type { RingCounters } from '../attention/ring.js';
import { TwoDAttention } from '../attention/two-d.js';
import { GROUP_KINDS, type CommCounters, type GroupKind } from '../comm/process-group.js';
import type { RankContext } from '../comm/rank-context.js';
import { createKernels, type KernelChoice } from '../kernels/registry.js';
import { ParallelDims } from '../parallel/dims.js';
import { buildRankGroups } from '../parallel/rank-groups.js';
import { SequenceLayout, type Sharding } from '../parallel/sequence-layout.js';
import { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import type { AttentionBenchOptions } from './bench-attention.js';
import { threadCpuMs } from './thread-cpu.js';

export interface AttentionBenchRankArgs extends AttentionBenchOptions {
  hp: number;
  cp: number;
  /** Inner ring size w of Double-Ring-Attention; cp = one plain ring. */
  innerRingSize: number;
  /** Packed documents as cu_seqlens (SequenceLayoutOptions.cuSeqlens); omitted: one document of seqLen tokens. */
  cuSeqlens?: number[];
  /** How tokens are assigned to ring positions (default zigzag). */
  sharding?: Sharding;
  /** Chunks per ring position under `balanced` (SequenceLayout's default when omitted). */
  balanceChunks?: number;
  /** Kernel backend, as createKernels takes it (default `reference`). */
  kernels?: KernelChoice;
}

/** Traffic of one pass, by group kind. */
export type PassCounters = Record<GroupKind, CommCounters>;

export interface AttentionBenchRankResult {
  /** Milliseconds of forward + backward of each measured run, on this rank. */
  ms: number[];
  /** Milliseconds this rank was blocked waiting for messages in each measured run (all kinds, both passes). */
  waitMs: number[];
  /**
   * CPU milliseconds this rank's thread ran in each measured run (threadCpuMs): its own work,
   * without the time it waited for messages or for a core; empty where the OS does not tell.
   */
  cpuMs: number[];
  /** Whether the layer ran a double ring (inner and outer groups given). */
  doubleRing: boolean;
  /** Counters of the last measured forward and backward (deterministic: equal in every run). */
  forward: PassCounters;
  backward: PassCounters;
  /** This rank's ring position c (its cp-group rank) and head-group index h. */
  position: number;
  headGroup: number;
  /** Visible (query, key) pairs per head of this rank's ring position (`layout.work()[position]`). */
  visiblePairs: number;
  /** Hops of the ring in one forward + backward (the last measured run; the same in every run). */
  ringCounters: RingCounters;
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
    kernels: createKernels(a.kernels ?? 'reference', ctx.arena),
    heads: a.heads,
    kvHeads: a.kvHeads,
    headDim: a.headDim,
    hpGroup: groups.hp,
    cpGroup: groups.cp,
    innerGroup: groups.inner,
    outerGroup: groups.outer,
  });
  const layout = new SequenceLayout({
    hp: a.hp,
    cp: a.cp,
    seqLen: a.seqLen,
    causal: a.causal,
    ...(a.cuSeqlens !== undefined ? { cuSeqlens: Int32Array.from(a.cuSeqlens) } : {}),
    ...(a.sharding !== undefined ? { sharding: a.sharding } : {}),
    ...(a.balanceChunks !== undefined ? { balanceChunks: a.balanceChunks } : {}),
  });
  const { h, c } = dims.coords(ctx.rank);
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

  const result: AttentionBenchRankResult = {
    ms: [],
    waitMs: [],
    cpuMs: [],
    doubleRing: groups.inner !== undefined,
    forward: ctx.counters(),
    backward: ctx.counters(),
    position: c,
    headGroup: h,
    visiblePairs: layout.work()[c]!,
    ringCounters: { computedHops: 0, skippedHops: 0 },
  };
  for (let i = 0; i < a.warmup + a.reps; i++) {
    for (const g of [dq, dk, dv]) g.data.fill(0);
    groups.world.barrier();
    ctx.resetCounters();
    const hops = { ...attn.ringCounters };
    const cpuStart = threadCpuMs();
    const start = performance.now();
    const saved = attn.forward(q, k, v, layout);
    const forward = ctx.counters();
    ctx.resetCounters();
    attn.backward(saved, dOut, dq, dk, dv, layout);
    const ms = performance.now() - start;
    const cpuEnd = threadCpuMs();
    const backward = ctx.counters();
    const after = attn.ringCounters;
    if (i < a.warmup) continue;
    result.ringCounters = { computedHops: after.computedHops - hops.computedHops, skippedHops: after.skippedHops - hops.skippedHops };
    result.ms.push(ms);
    result.waitMs.push(totalWaitMs(forward) + totalWaitMs(backward));
    if (cpuStart !== undefined && cpuEnd !== undefined) result.cpuMs.push(cpuEnd - cpuStart);
    result.forward = forward;
    result.backward = backward;
  }
  return result;
}
