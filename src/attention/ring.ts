import type { CommRequest, ProcessGroup } from '../comm/process-group.js';
import type { Tracer } from '../comm/trace.js';
import type { MemoryHandle, MemoryLedger } from '../tensor/memory-ledger.js';
import { Tensor } from '../tensor/tensor.js';
import { checkAttentionShape, checkQkvShapes, expectShape, type AttentionKernels, type AttentionShape } from './local.js';
import { NO_TRACE, ringTopology, type RingTopology } from './ring-groups.js';
import type { SequenceLayout } from '../parallel/sequence-layout.js';
import { checkSamePlans, ringPlans, type HopPlan } from './ring-plan.js';

/**
 * Ring attention over a context-parallel group (algorithms.md §4), plain or double
 * (Double-Ring-Attention, LoongTrain §3.3), in the head-split layout that follows the Ulysses
 * all-to-all: every ring position holds the S/cp tokens the step's SequenceLayout gives it
 * (its zigzag pair, or its balanced chunks) for H/hp query heads. The ring position is the
 * cp-group rank, and every hop's rectangle and mask come from the layout (DESIGN decision 6);
 * the schedule is in docs/attention.md.
 */

/** What {@link RingAttention.forward} returns and its backward consumes. */
export interface RingSaved {
  /** Merged output [2c, Hl, d]. */
  out: Tensor;
  /** Merged lse [2c, Hl]. */
  lse: Tensor;
  /** The hops the forward ran, in order; the backward must run the same ones (failure case F2). */
  plans: HopPlan[];
}

/**
 * What the ring's memory hooks ({@link RingAttention.forwardMemory}, …) need: the ring's own
 * head shape (after the hp split, KV heads replicated), the tokens of one ring position and the
 * ring sizes of its topology.
 */
export interface RingMemoryShape extends AttentionShape {
  /** Tokens of one ring position, S/cp. */
  tokens: number;
  /** Inner ring size w (cp for a plain ring). */
  innerSize: number;
  /** Outer ring size W = cp / w (1 for a plain ring). */
  outerSize: number;
}

/** The ledger handles of what {@link RingAttention.forwardMemory} keeps: {@link RingSaved}'s out and lse. */
export interface RingSavedMemory {
  out: MemoryHandle;
  lse: MemoryHandle;
}

/** Hops a ring attention has run since construction (forward and backward passes both count). */
export interface RingCounters {
  /** Hops whose block had visible pairs and ran the kernels. */
  computedHops: number;
  /** Hops whose block had no visible (query, key) pair: no kernel ran (the K/V still moved on). */
  skippedHops: number;
}

export interface RingAttentionOptions extends AttentionShape {
  kernels: AttentionKernels;
  /** The context-parallel group; its group rank is the ring position. */
  group: ProcessGroup;
  /**
   * Double ring: the rank's inner ring (kind 'inner', ParallelDims.innerRing) and outer ring
   * (kind 'outer', ParallelDims.outerRing), both or neither. Omitted: one plain ring over `group`.
   */
  innerGroup?: ProcessGroup;
  outerGroup?: ProcessGroup;
  /** Records 'phase', 'compute' and 'comm' spans of the ring (docs/attention.md, Tracing). */
  tracer?: Tracer;
}

/** What one walk of the ring does besides moving K/V blocks. */
interface RingVisitor {
  /** Before the inner pass of outer step j (its outer K/V transfer is already posted). */
  beforePass?(outerStep: number): void;
  /** Work on the held block of one hop, while the next block is in flight. */
  block(plan: HopPlan, k: Tensor, v: Tensor): void;
  /** After the inner pass of outer step j, before its outer K/V transfer is awaited. */
  afterPass?(outerStep: number): void;
}

/**
 * Ring attention over a cp group with inner ring size w (w = cp: plain ring; w = 1: plain ring
 * over the outer links). `heads`/`kvHeads` are the heads this rank holds (after the hp split).
 * Every transfer posts its send and receive before any wait, so rings of two (next = previous)
 * cannot deadlock (F14).
 */
export class RingAttention {
  private readonly kernels: AttentionKernels;
  private readonly topo: RingTopology;
  private readonly shape: AttentionShape;
  private readonly scale: number;
  private readonly tracer: Tracer;
  readonly counters: RingCounters = { computedHops: 0, skippedHops: 0 };

  /** @throws Error when heads, kvHeads or headDim are invalid, or the inner/outer groups do not fit the cp group. */
  constructor(opts: RingAttentionOptions) {
    this.scale = checkAttentionShape(opts);
    this.kernels = opts.kernels;
    this.tracer = opts.tracer ?? NO_TRACE;
    this.topo = ringTopology(opts.group, opts.innerGroup, opts.outerGroup, this.tracer);
    this.shape = { heads: opts.heads, kvHeads: opts.kvHeads, headDim: opts.headDim };
  }

  /**
   * q [S/cp, Hl, d], k and v [S/cp, Hkvl, d] of this ring position (the layout's
   * positionTokens, in order) → merged out [S/cp, Hl, d] and lse [S/cp, Hl] (category 'saved');
   * rows with no visible key get out 0 and lse −∞. Sends (w − 1)·W inner and W − 1 outer K/V
   * messages of 2·(S/cp)·Hkvl·d elements (algorithms.md §6; a plain ring: cp − 1), also for hops
   * with nothing visible, which skip the kernels.
   * @throws Error on wrong shapes or a layout of another cp or length; CommTimeoutError from the groups.
   */
  forward(q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout): RingSaved {
    const { heads, headDim } = this.shape;
    const tokens = checkQkvShapes(this.shape, q, k, v);
    const arena = q.arena;
    const plans = this.plans(layout, tokens);
    const out = Tensor.zeros(arena, [tokens, heads, headDim], 'saved');
    const lse = Tensor.zeros(arena, [tokens, heads], 'saved');
    lse.data.fill(-Infinity);
    const blockOut = Tensor.zeros(arena, [tokens, heads, headDim], 'scratch');
    const blockLse = Tensor.zeros(arena, [tokens, heads], 'scratch');
    this.tracer.span('ring forward', 'phase', undefined, () =>
      this.traverse(plans, k, v, {
        block: (plan, kBlock, vBlock) =>
          this.compute('attention block forward', plan, () => {
            for (const b of plan.blocks) {
              const rows = b.queryEnd - b.queryStart;
              const bo = blockOut.rows(0, rows);
              const bl = blockLse.rows(0, rows);
              this.kernels.attentionForward(
                q.rows(b.queryStart, b.queryEnd), kBlock.rows(b.keyStart, b.keyEnd), vBlock.rows(b.keyStart, b.keyEnd),
                bo, bl, { mask: b.mask, scale: this.scale },
              );
              this.kernels.mergeAttention(out.rows(b.queryStart, b.queryEnd), lse.rows(b.queryStart, b.queryEnd), bo, bl);
            }
          }),
      }),
    );
    blockOut.free();
    blockLse.free();
    return { out, lse, plans };
  }

  /**
   * Memory hook of {@link forward} (docs/memory.md): its arena allocations in its order, on
   * `ledger` — the merged out and lse ('saved', returned: the backward frees them), the block
   * result buffers ('scratch'), the K/V blocks of {@link traverse}. Change it with forward.
   */
  static forwardMemory(ledger: MemoryLedger, shape: RingMemoryShape): RingSavedMemory {
    const { tokens, heads, headDim } = shape;
    const out = ledger.alloc(tokens * heads * headDim, 'saved');
    const lse = ledger.alloc(tokens * heads, 'saved');
    const blockOut = ledger.alloc(tokens * heads * headDim, 'scratch');
    const blockLse = ledger.alloc(tokens * heads, 'scratch');
    RingAttention.traverseMemory(ledger, shape);
    ledger.free(blockOut, blockLse);
    return { out, lse };
  }

  /**
   * Backward of {@link forward}: from dOut [S/cp, Hl, d] accumulate into dq [S/cp, Hl, d], dk and
   * dv [S/cp, Hkvl, d], using the merged out and lse (failure case F1) and the same layout. The ring runs again with the
   * forward's hop plans. Within each inner pass, each block's dK/dV accumulator travels with it
   * and takes one extra inner hop home to the rank that started the outer step with the block;
   * that rank adds it into the block's running total, which travels the outer ring and reaches
   * the block's owner in one final outer hop. Messages: (w − 1)·W + W − 1 K/V, plus w·W inner
   * dK/dV (none when w = 1) and W outer dK/dV (none when W = 1); a plain ring: cp − 1 and cp.
   * Frees saved.out and saved.lse.
   * @throws Error before any message when this backward's hops differ from the forward's (F2).
   */
  backward(saved: RingSaved, q: Tensor, k: Tensor, v: Tensor, dOut: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, layout: SequenceLayout): void {
    const { heads, kvHeads, headDim } = this.shape;
    const tokens = checkQkvShapes(this.shape, q, k, v);
    expectShape('dOut', dOut, tokens, heads, headDim);
    expectShape('dq', dq, tokens, heads, headDim);
    expectShape('dk', dk, tokens, kvHeads, headDim);
    expectShape('dv', dv, tokens, kvHeads, headDim);
    const plans = this.plans(layout, tokens);
    checkSamePlans(saved.plans, plans);
    const { out, lse } = saved;
    const { inner, outer, innerSize: w } = this.topo;
    const block = (): Tensor => Tensor.zeros(q.arena, [2, tokens, kvHeads, headDim], 'comm');
    // [2, 2c, Hkvl, d]: dK and dV of the held block within this inner pass, and the next one's.
    let acc = block();
    let accIn = w > 1 ? block() : undefined;
    // Running totals of a block over the outer steps so far: the one arriving and the one leaving.
    let totalIn = outer ? block() : undefined;
    let totalOut = outer ? block() : undefined;
    let totalRecv: CommRequest | undefined;
    let totalSend: CommRequest | undefined;
    this.tracer.span('ring backward', 'phase', undefined, () =>
      this.traverse(plans, k, v, {
        beforePass: (j) => {
          acc.data.fill(0);
          if (outer && j > 0) totalRecv = outer.recv(totalIn!.data, 'dKV');
        },
        block: (plan, kBlock, vBlock) => {
          const [dkBlock, dvBlock] = splitKv(acc, tokens, kvHeads, headDim);
          this.compute('attention block backward', plan, () => {
            for (const b of plan.blocks) {
              const [qs, qe, ks, ke] = [b.queryStart, b.queryEnd, b.keyStart, b.keyEnd];
              this.kernels.attentionBackward(
                q.rows(qs, qe), kBlock.rows(ks, ke), vBlock.rows(ks, ke), out.rows(qs, qe), lse.rows(qs, qe), dOut.rows(qs, qe),
                dq.rows(qs, qe), dkBlock.rows(ks, ke), dvBlock.rows(ks, ke), { mask: b.mask, scale: this.scale },
              );
            }
          });
          if (accIn === undefined) return;
          // The accumulator moves on with its block; after the pass's last block it moves home.
          const reqs = [inner.send(acc.data, 'dKV'), inner.recv(accIn.data, 'dKV')];
          for (const r of reqs) r.wait();
          [acc, accIn] = [accIn, acc];
        },
        afterPass: (j) => {
          if (!outer) return;
          // acc holds this inner ring's share of the block this rank started outer step j with.
          if (j === 0) totalIn!.data.set(acc.data);
          else {
            totalRecv!.wait();
            addInto(totalIn!.data, acc.data);
          }
          totalSend?.wait();
          totalSend = outer.send(totalIn!.data, 'dKV');
          [totalIn, totalOut] = [totalOut, totalIn];
        },
      }),
    );
    // The total gradient of this position's own K/V block: home from the inner pass (W = 1) or
    // from the outer predecessor, which sent the block's last running total.
    let home = acc;
    if (outer) {
      const r = outer.recv(totalIn!.data, 'dKV');
      r.wait();
      totalSend!.wait();
      home = totalIn!;
    }
    const [dkHome, dvHome] = splitKv(home, tokens, kvHeads, headDim);
    addInto(dk.data, dkHome.data);
    addInto(dv.data, dvHome.data);
    for (const t of [acc, accIn, totalIn, totalOut, out, lse]) t?.free();
  }

  /**
   * Memory hook of {@link backward} (docs/memory.md): the dK/dV accumulators ('comm': acc, accIn
   * when w > 1, the outer running totals when W > 1), the K/V blocks of {@link traverse}, then
   * frees the accumulators and the forward's out and lse (`saved`). Change it with backward.
   */
  static backwardMemory(ledger: MemoryLedger, shape: RingMemoryShape, saved: RingSavedMemory): void {
    const { tokens, kvHeads, headDim, innerSize: w } = shape;
    const outer = shape.outerSize > 1;
    const block = (): MemoryHandle => ledger.alloc(2 * tokens * kvHeads * headDim, 'comm');
    const acc = block();
    const accIn = w > 1 ? block() : undefined;
    const totalIn = outer ? block() : undefined;
    const totalOut = outer ? block() : undefined;
    RingAttention.traverseMemory(ledger, shape);
    ledger.free(acc, accIn, totalIn, totalOut, saved.out, saved.lse);
  }

  /** @throws Error when the layout is for another cp or sequence length than this ring's q/k/v. */
  private plans(layout: SequenceLayout, tokens: number): HopPlan[] {
    const { cp, position, innerSize } = this.topo;
    if (layout.cp !== cp || layout.positionTokens(position).length !== tokens) {
      throw new Error(
        `ring: the sequence layout is for cp = ${layout.cp} with ${layout.positionTokens(0).length} tokens per ring position, but this ring has cp = ${cp} and q/k/v of ${tokens} tokens`,
      );
    }
    return ringPlans(layout, position, innerSize);
  }

  /**
   * A 'compute' span around one block's kernels (args: the block's rectangle, mask kind and
   * visible pairs); a hop with no visible pair runs nothing and is counted as skipped.
   */
  private compute(name: string, plan: HopPlan, fn: () => void): void {
    if (plan.pairs === 0) {
      this.counters.skippedHops++;
      return;
    }
    this.counters.computedHops++;
    const args = {
      source: plan.source,
      queryStart: plan.queryStart,
      queryEnd: plan.queryEnd,
      keyStart: plan.keyStart,
      keyEnd: plan.keyEnd,
      mask: plan.mask.kind,
      pairs: plan.pairs,
      blocks: plan.blocks.length,
    };
    this.tracer.span(name, 'compute', args, fn);
  }

  /**
   * Walk the ring (algorithms.md §4, double ring): for each outer step j, post the outer send of
   * the block this rank started the step with and the outer receive of the next one, run the
   * inner pass over w blocks (each: post the inner transfer of the held block, work on it,
   * wait), then wait for the outer transfer. Hop (j, i) holds the block of source position
   * ((k − j) mod W)·w + ((u − i) mod w) = plans[j·w + i].source.
   */
  private traverse(plans: HopPlan[], k: Tensor, v: Tensor, visit: RingVisitor): void {
    const { kvHeads, headDim } = this.shape;
    const { inner, outer, innerSize: w, outerSize: outerSteps } = this.topo;
    const tokens = k.shape[0]!;
    const block = (): Tensor => Tensor.zeros(k.arena, [2, tokens, kvHeads, headDim], 'comm');
    // One message carries K and V together: [2, 2c, Hkvl, d]. `start` is the block this rank
    // starts the outer step with; it is being sent on the outer ring during the whole pass.
    let start = block();
    start.data.set(k.data, 0);
    start.data.set(v.data, k.size);
    let outerIn = outer ? block() : undefined;
    // Inner receive buffers. With one outer step `start` is free once its inner send is
    // awaited, so it is reused (two buffers, as a plain ring); otherwise a third one is needed.
    const innerA = w > 1 ? block() : undefined;
    const innerB = w > 2 && outer ? block() : undefined;
    for (let j = 0; j < outerSteps; j++) {
      const outerReqs = outer && j < outerSteps - 1 ? [outer.send(start.data, 'KV'), outer.recv(outerIn!.data, 'KV')] : [];
      visit.beforePass?.(j);
      this.tracer.span(`inner pass ${j}`, 'phase', { outerStep: j }, () => {
        let cur = start;
        let free = innerA;
        for (let i = 0; i < w; i++) {
          const last = i === w - 1;
          const reqs = last ? [] : [inner.send(cur.data, 'KV'), inner.recv(free!.data, 'KV')];
          const [kBlock, vBlock] = splitKv(cur, tokens, kvHeads, headDim);
          visit.block(plans[j * w + i]!, kBlock, vBlock);
          for (const r of reqs) r.wait();
          if (last) continue;
          const sent = cur;
          cur = free!;
          free = sent === start && outer ? innerB : sent;
        }
      });
      visit.afterPass?.(j);
      for (const r of outerReqs) r.wait();
      if (outerIn !== undefined) [start, outerIn] = [outerIn, start];
    }
    for (const t of [start, outerIn, innerA, innerB]) t?.free();
  }

  /**
   * Memory hook of {@link traverse}: its K/V block buffers [2, S/cp, Hkvl, d] ('comm': start,
   * outerIn when W > 1, innerA when w > 1, innerB when w > 2 and W > 1), live for the whole walk.
   * Change it with traverse.
   */
  private static traverseMemory(ledger: MemoryLedger, shape: RingMemoryShape): void {
    const { tokens, kvHeads, headDim, innerSize: w } = shape;
    const outer = shape.outerSize > 1;
    const block = (): MemoryHandle => ledger.alloc(2 * tokens * kvHeads * headDim, 'comm');
    const start = block();
    const outerIn = outer ? block() : undefined;
    const innerA = w > 1 ? block() : undefined;
    const innerB = w > 2 && outer ? block() : undefined;
    ledger.free(start, outerIn, innerA, innerB);
  }
}

/** The K (or dK) and V (or dV) halves of a [2, 2c, Hkvl, d] block buffer, as [2c, Hkvl, d] views. */
function splitKv(buf: Tensor, tokens: number, kvHeads: number, headDim: number): [Tensor, Tensor] {
  return [buf.rows(0, 1).reshape([tokens, kvHeads, headDim]), buf.rows(1, 2).reshape([tokens, kvHeads, headDim])];
}

/** dst += src element-wise (f32). */
function addInto(dst: Float32Array, src: Float32Array): void {
  for (let e = 0; e < dst.length; e++) dst[e]! += src[e]!;
}
