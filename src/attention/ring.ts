import type { CommRequest, ProcessGroup } from '../comm/process-group.js';
import { Tensor } from '../tensor/tensor.js';
import { checkAttentionShape, checkQkvShapes, expectShape, type AttentionKernels, type AttentionShape } from './local.js';

/**
 * Ring attention over a context-parallel group (algorithms.md §4), in the head-split layout
 * that follows the Ulysses all-to-all: every ring position holds its zigzag pair
 * [early chunk, late chunk] of c tokens each (2c = S/cp tokens) for H/hp query heads.
 * The ring position is the cp-group rank (DESIGN decision 6).
 */

/** Tag of K/V block messages. */
export const KV_TAG = 0x4b56;
/** Tag of dK/dV accumulator messages. */
export const DKV_TAG = 0x444b;

/** What one ring hop computes: a rectangle of the rank's queries against the held KV block. */
export interface HopPlan {
  /** Ring position the held KV block started at. */
  source: number;
  /** Query rows [start, end) of the rank's 2c local tokens. */
  queryStart: number;
  queryEnd: number;
  /** Key rows [start, end) of the held KV block. */
  keyStart: number;
  keyEnd: number;
  /** Causal mask inside the rectangle (only the own block, which is square). */
  causal: boolean;
}

/**
 * The plan of one hop (algorithms.md §4). `tokens` = 2c local tokens per position.
 * Causal: own block → causal over all 2c tokens; source before me → all 2c queries × EARLY c
 * keys, no mask; source after me → LATE c queries × all 2c keys, no mask. Non-causal: all × all.
 * @throws Error when a position is outside [0, cp) or tokens is odd under causal zigzag.
 */
export function hopPlan(position: number, source: number, cp: number, tokens: number, causal: boolean): HopPlan {
  for (const [name, p] of [['position', position], ['source', source]] as const) {
    if (!Number.isInteger(p) || p < 0 || p >= cp) throw new Error(`ring: ${name} ${p} must be an integer ring position in [0, ${cp})`);
  }
  const all = { source, queryStart: 0, queryEnd: tokens, keyStart: 0, keyEnd: tokens, causal: false };
  if (!causal) return all;
  if (tokens % 2 !== 0) throw new Error(`ring: causal zigzag needs an even number of local tokens (two chunks of c), got ${tokens}`);
  const c = tokens / 2;
  if (source === position) return { ...all, causal: true };
  if (source < position) return { ...all, keyEnd: c };
  return { ...all, queryStart: c };
}

/** Query–key score pairs a hop computes (per head): the work balanced by zigzag sharding. */
export function hopScorePairs(plan: HopPlan): number {
  const nq = plan.queryEnd - plan.queryStart;
  const nk = plan.keyEnd - plan.keyStart;
  return plan.causal ? (nq * (nq + 1)) / 2 : nq * nk;
}

/** Source positions of a plain ring, one per step: step i holds the block of (r − i) mod cp. */
export function plainRingSources(position: number, cp: number): number[] {
  return Array.from({ length: cp }, (_, i) => (position - i + cp) % cp);
}

/** The positions a plain ring at `position` sends to (next) and receives from (prev); equal when cp = 2. */
function ringPeers(position: number, cp: number): { next: number; prev: number } {
  return { next: (position + 1) % cp, prev: (position - 1 + cp) % cp };
}

/** The hop plans of a plain ring at `position`, in step order. */
export function ringPlans(position: number, cp: number, tokens: number, causal: boolean): HopPlan[] {
  return plainRingSources(position, cp).map((s) => hopPlan(position, s, cp, tokens, causal));
}

function planText(p: HopPlan): string {
  return `source ${p.source}, queries [${p.queryStart}, ${p.queryEnd}), keys [${p.keyStart}, ${p.keyEnd}), ${p.causal ? 'causal' : 'no mask'}`;
}

/** What {@link RingAttention.forward} returns and its backward consumes. */
export interface RingSaved {
  /** Merged output [2c, Hl, d]. */
  out: Tensor;
  /** Merged lse [2c, Hl]. */
  lse: Tensor;
  /** The hops the forward ran, in order; the backward must run the same ones (failure case F2). */
  plans: HopPlan[];
}

export interface RingAttentionOptions extends AttentionShape {
  kernels: AttentionKernels;
  /** The context-parallel group; its group rank is the ring position. */
  group: ProcessGroup;
}

/**
 * Plain-ring attention over a cp group. `heads`/`kvHeads` are the heads this rank holds (after
 * the hp split). Each hop posts its K/V send to the next position and its receive from the
 * previous one together, computes, then waits, so cp = 2 (next = previous) cannot deadlock.
 */
export class RingAttention {
  private readonly kernels: AttentionKernels;
  private readonly group: ProcessGroup;
  private readonly shape: AttentionShape;
  private readonly scale: number;

  /** @throws Error when heads, kvHeads or headDim are invalid. */
  constructor(opts: RingAttentionOptions) {
    this.scale = checkAttentionShape(opts);
    this.kernels = opts.kernels;
    this.group = opts.group;
    this.shape = { heads: opts.heads, kvHeads: opts.kvHeads, headDim: opts.headDim, causal: opts.causal };
  }

  /**
   * q [2c, Hl, d], k and v [2c, Hkvl, d] of this ring position → merged out [2c, Hl, d] and lse
   * [2c, Hl] (category 'saved'). Sends cp − 1 K/V messages of 2·2c·Hkvl·d elements.
   * @throws Error on wrong shapes; CommTimeoutError from the group.
   */
  forward(q: Tensor, k: Tensor, v: Tensor): RingSaved {
    const { heads, headDim, causal } = this.shape;
    const tokens = checkQkvShapes(this.shape, q, k, v);
    const arena = q.arena;
    const plans = ringPlans(this.group.rank, this.group.size, tokens, causal);
    const out = Tensor.zeros(arena, [tokens, heads, headDim], 'saved');
    const lse = Tensor.zeros(arena, [tokens, heads], 'saved');
    lse.data.fill(-Infinity);
    const blockOut = Tensor.zeros(arena, [tokens, heads, headDim], 'scratch');
    const blockLse = Tensor.zeros(arena, [tokens, heads], 'scratch');
    this.runRing(plans, k, v, (plan, kBlock, vBlock) => {
      const rows = plan.queryEnd - plan.queryStart;
      const bo = blockOut.rows(0, rows);
      const bl = blockLse.rows(0, rows);
      this.kernels.attentionForward(
        q.rows(plan.queryStart, plan.queryEnd), kBlock.rows(plan.keyStart, plan.keyEnd), vBlock.rows(plan.keyStart, plan.keyEnd),
        bo, bl, { causal: plan.causal, scale: this.scale },
      );
      this.kernels.mergeAttention(out.rows(plan.queryStart, plan.queryEnd), lse.rows(plan.queryStart, plan.queryEnd), bo, bl);
    });
    blockOut.free();
    blockLse.free();
    return { out, lse, plans };
  }

  /**
   * Backward of {@link forward}: from dOut [2c, Hl, d] accumulate into dq [2c, Hl, d], dk and dv
   * [2c, Hkvl, d], using the merged out and lse (failure case F1). The ring runs again with the
   * forward's hop plans; each block's dK/dV accumulator travels with it and reaches its home
   * position in one final hop: cp − 1 K/V messages and cp dK/dV messages (none when cp = 1).
   * Frees saved.out and saved.lse.
   * @throws Error before any message when this backward's hops differ from the forward's (F2).
   */
  backward(saved: RingSaved, q: Tensor, k: Tensor, v: Tensor, dOut: Tensor, dq: Tensor, dk: Tensor, dv: Tensor): void {
    const { heads, kvHeads, headDim, causal } = this.shape;
    const tokens = checkQkvShapes(this.shape, q, k, v);
    expectShape('dOut', dOut, tokens, heads, headDim);
    expectShape('dq', dq, tokens, heads, headDim);
    expectShape('dk', dk, tokens, kvHeads, headDim);
    expectShape('dv', dv, tokens, kvHeads, headDim);
    const plans = ringPlans(this.group.rank, this.group.size, tokens, causal);
    checkSamePlans(saved.plans, plans);
    const { out, lse } = saved;
    const cp = this.group.size;
    const { next, prev } = ringPeers(this.group.rank, cp);
    // [2, 2c, Hkvl, d]: the accumulated dK and dV of the block currently held.
    let dkvCur = Tensor.zeros(q.arena, [2, tokens, kvHeads, headDim], 'comm');
    let dkvNext = Tensor.zeros(q.arena, [2, tokens, kvHeads, headDim], 'comm');
    this.runRing(plans, k, v, (plan, kBlock, vBlock) => {
      const qs = plan.queryStart;
      const qe = plan.queryEnd;
      const [dkBlock, dvBlock] = splitKv(dkvCur, tokens, kvHeads, headDim);
      this.kernels.attentionBackward(
        q.rows(qs, qe), kBlock.rows(plan.keyStart, plan.keyEnd), vBlock.rows(plan.keyStart, plan.keyEnd),
        out.rows(qs, qe), lse.rows(qs, qe), dOut.rows(qs, qe),
        dq.rows(qs, qe), dkBlock.rows(plan.keyStart, plan.keyEnd), dvBlock.rows(plan.keyStart, plan.keyEnd),
        { causal: plan.causal, scale: this.scale },
      );
      if (cp === 1) return;
      // The accumulator moves on with its block; after the last step it moves home.
      const reqs = [this.group.isend(dkvCur.data, next, DKV_TAG), this.group.irecv(dkvNext.data, prev, DKV_TAG)];
      for (const r of reqs) r.wait();
      [dkvCur, dkvNext] = [dkvNext, dkvCur];
    });
    // dkvCur now holds the total gradient of this position's own K/V block.
    const [dkHome, dvHome] = splitKv(dkvCur, tokens, kvHeads, headDim);
    for (let e = 0; e < dk.size; e++) dk.data[e]! += dkHome.data[e]!;
    for (let e = 0; e < dv.size; e++) dv.data[e]! += dvHome.data[e]!;
    dkvCur.free();
    dkvNext.free();
    out.free();
    lse.free();
  }

  /**
   * Walk the plain ring: at each step call `compute` with the K/V block held, while the block
   * moves on to the next position (send and receive posted before computing, awaited after).
   */
  private runRing(plans: HopPlan[], k: Tensor, v: Tensor, compute: (plan: HopPlan, k: Tensor, v: Tensor) => void): void {
    const { kvHeads, headDim } = this.shape;
    const tokens = k.shape[0]!;
    const cp = this.group.size;
    const { next, prev } = ringPeers(this.group.rank, cp);
    // One message per hop carries K and V together: [2, 2c, Hkvl, d].
    let kvCur = Tensor.zeros(k.arena, [2, tokens, kvHeads, headDim], 'comm');
    let kvNext = cp > 1 ? Tensor.zeros(k.arena, [2, tokens, kvHeads, headDim], 'comm') : undefined;
    kvCur.data.set(k.data, 0);
    kvCur.data.set(v.data, k.size);
    plans.forEach((plan, step) => {
      let reqs: CommRequest[] = [];
      if (step < cp - 1 && kvNext !== undefined) {
        reqs = [this.group.isend(kvCur.data, next, KV_TAG), this.group.irecv(kvNext.data, prev, KV_TAG)];
      }
      const [kBlock, vBlock] = splitKv(kvCur, tokens, kvHeads, headDim);
      compute(plan, kBlock, vBlock);
      for (const r of reqs) r.wait();
      if (reqs.length > 0 && kvNext !== undefined) [kvCur, kvNext] = [kvNext, kvCur];
    });
    kvCur.free();
    kvNext?.free();
  }
}

/** The K (or dK) and V (or dV) halves of a [2, 2c, Hkvl, d] block buffer, as [2c, Hkvl, d] views. */
function splitKv(buf: Tensor, tokens: number, kvHeads: number, headDim: number): [Tensor, Tensor] {
  return [buf.rows(0, 1).reshape([tokens, kvHeads, headDim]), buf.rows(1, 2).reshape([tokens, kvHeads, headDim])];
}

/**
 * Failure case F2: every backward hop must use the forward hop's block shapes and causal mode.
 * @throws Error naming the first differing hop and both plans.
 */
export function checkSamePlans(forward: readonly HopPlan[], backward: readonly HopPlan[]): void {
  if (forward.length !== backward.length) {
    throw new Error(`ring backward: ${backward.length} hops planned but the forward ran ${forward.length}; the ring layout changed between forward and backward`);
  }
  forward.forEach((f, i) => {
    const b = backward[i]!;
    if (planText(f) !== planText(b)) {
      throw new Error(`ring backward hop ${i}: plan (${planText(b)}) differs from the forward's (${planText(f)})`);
    }
  });
}
