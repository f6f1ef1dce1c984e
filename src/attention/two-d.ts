import type { ProcessGroup } from '../comm/process-group.js';
import type { Tracer } from '../comm/trace.js';
import type { SequenceLayout } from '../parallel/sequence-layout.js';
import type { MemoryCategory } from '../tensor/arena.js';
import type { MemoryHandle, MemoryLedger } from '../tensor/memory-ledger.js';
import { Tensor } from '../tensor/tensor.js';
import type { AttentionCore, AttentionSaved } from './core.js';
import { checkAttentionShape, checkQkvShapes, expectShape, type AttentionKernels, type AttentionShape } from './local.js';
import { RingAttention, type RingCounters, type RingMemoryShape, type RingSaved, type RingSavedMemory } from './ring.js';
import { gatherHeads, replicateKvHeads, replicatedKvHeads, scatterHeads, sumKvReplicas } from './ulysses.js';

export interface TwoDAttentionOptions extends AttentionShape {
  kernels: AttentionKernels;
  /** Head-parallel group (Ulysses all-to-all), members in ascending h. */
  hpGroup: ProcessGroup;
  /** Context-parallel group (ring); its group rank is the ring position c. */
  cpGroup: ProcessGroup;
  /**
   * Double-Ring-Attention with inner ring size w < cp: the rank's inner and outer rings
   * (kinds 'inner' and 'outer'; RankGroups of src/parallel/rank-groups.ts makes them), both or neither.
   * Omitted: one plain ring over cpGroup, counted as 'cp'.
   */
  innerGroup?: ProcessGroup;
  outerGroup?: ProcessGroup;
  /** Records the ring's 'phase', 'compute' and 'comm' spans (docs/attention.md, Tracing). */
  tracer?: Tracer;
}

/** What the forward keeps for the backward, all in the head-split layout [S/cp, ·/hp, d]. */
interface TwoDState {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  ring: RingSaved;
}

/**
 * What the 2D-Attention memory hooks ({@link TwoDAttention.forwardMemory}, …) need: the
 * core's head shape (all heads, as the constructor takes it), this rank's tokens and the layout.
 */
export interface TwoDMemoryShape extends AttentionShape {
  /** This rank's tokens T = S/(hp·cp). */
  tokens: number;
  /** Head-parallel size (the hp group). */
  hp: number;
  /** Context-parallel size (the ring). */
  cp: number;
  /** Inner ring size w, a divisor of cp (cp: a plain ring). */
  innerRingSize: number;
}

/** The ledger handles of what {@link TwoDAttention.forwardMemory} keeps, as {@link AttentionSaved} and {@link TwoDState} hold them. */
export interface TwoDSavedMemory {
  out: MemoryHandle;
  state: { q: MemoryHandle; k: MemoryHandle; v: MemoryHandle; ring: RingSavedMemory };
}

/** The sizes TwoDAttention's constructor derives, for the memory hooks. */
function twoDMemorySizes(shape: TwoDMemoryShape): { kvRep: number; ring: RingMemoryShape } {
  const { heads, kvHeads, headDim, tokens, hp, cp, innerRingSize: w } = shape;
  const kvHeadsRep = replicatedKvHeads(heads, kvHeads, hp);
  return {
    kvRep: kvHeadsRep / kvHeads,
    ring: { heads: heads / hp, kvHeads: kvHeadsRep / hp, headDim, tokens: hp * tokens, innerSize: w, outerSize: cp / w },
  };
}

/**
 * 2D-Attention (LoongTrain §3; algorithms.md §2–§4): q [T, H, d], k and v [T, Hkv, d] of this
 * rank's T = S/sp zigzag tokens → Ulysses all-to-all over the hp group (KV heads replicated
 * hp/Hkv times when hp > Hkv) → zigzag ring attention (plain, or double with inner ring size
 * w) over the cp group on [S/cp, H/hp, d] →
 * reverse all-to-all → out [T, H, d]. After the all-to-all, the rank with context coordinate
 * c holds the zigzag pair of ring position c, which is what the ring's block rules assume.
 * The backward mirrors it: dO in, ring backward, dQ/dK/dV out (replica gradients summed).
 */
export class TwoDAttention implements AttentionCore {
  private readonly shape: AttentionShape;
  private readonly hpGroup: ProcessGroup;
  private readonly kvRep: number;
  private readonly ring: RingAttention;

  /**
   * @throws Error when heads, kvHeads, headDim or the hp split are invalid (algorithms.md §3),
   * or the inner/outer groups are not this rank's rings in cpGroup (algorithms.md §1).
   */
  constructor(opts: TwoDAttentionOptions) {
    checkAttentionShape(opts);
    const hp = opts.hpGroup.size;
    const kvHeadsRep = replicatedKvHeads(opts.heads, opts.kvHeads, hp);
    this.shape = { heads: opts.heads, kvHeads: opts.kvHeads, headDim: opts.headDim };
    this.hpGroup = opts.hpGroup;
    this.kvRep = kvHeadsRep / opts.kvHeads;
    this.ring = new RingAttention({
      kernels: opts.kernels,
      group: opts.cpGroup,
      innerGroup: opts.innerGroup,
      outerGroup: opts.outerGroup,
      tracer: opts.tracer,
      heads: opts.heads / hp,
      kvHeads: kvHeadsRep / hp,
      headDim: opts.headDim,
    });
  }

  /**
   * q [T, H, d], k and v [T, Hkv, d] → saved.out [T, H, d] (category 'saved'). Keeps
   * q/k/v after the all-to-all and the ring's merged out and lse (category 'saved') in
   * saved.state. Its four all-to-alls (q, k, v in, out back) send (hp − 1)/hp · T·d·(2H + 2·max(Hkv, hp)) elements (algorithms.md §6).
   * @throws Error on shapes that do not match the constructor's.
   */
  forward(q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout): AttentionSaved {
    const t = checkQkvShapes(this.shape, q, k, v);
    this.checkLayout(layout);
    const qH = this.toHeads(q, 'saved');
    const kH = this.kvToHeads(k);
    const vH = this.kvToHeads(v);
    const state: TwoDState = { q: qH, k: kH, v: vH, ring: this.ring.forward(qH, kH, vH, layout) };
    const out = Tensor.empty(q.arena, [t, this.shape.heads, this.shape.headDim], 'saved');
    gatherHeads(this.hpGroup, state.ring.out, out);
    return { out, state };
  }

  /**
   * Memory hook of {@link forward} (docs/memory.md): its arena allocations in its order, on
   * `ledger` — q, k, v to heads (KV replication, the all-to-all send buffers), the ring's
   * {@link RingAttention.forwardMemory}, out back (the receive buffer). Returns what the
   * forward keeps ('saved'), for {@link backwardMemory} or {@link releaseMemory}. Change it with forward.
   */
  static forwardMemory(ledger: MemoryLedger, shape: TwoDMemoryShape): TwoDSavedMemory {
    const { tokens: t, heads, kvHeads, headDim: d, hp } = shape;
    const { kvRep, ring } = twoDMemorySizes(shape);
    ledger.phase = 'attention forward: all-to-all';
    const q = TwoDAttention.toHeadsMemory(ledger, hp, t * heads * d, 'saved');
    const k = TwoDAttention.kvToHeadsMemory(ledger, hp, kvRep, t * kvHeads * d);
    const v = TwoDAttention.kvToHeadsMemory(ledger, hp, kvRep, t * kvHeads * d);
    ledger.phase = 'attention forward: ring';
    const ringSaved = RingAttention.forwardMemory(ledger, ring);
    ledger.phase = 'attention forward: all-to-all back';
    const out = ledger.alloc(t * heads * d, 'saved');
    TwoDAttention.gatherHeadsMemory(ledger, hp, t * heads * d);
    return { out, state: { q, k, v, ring: ringSaved } };
  }

  /**
   * From dOut [T, H, d] accumulate into dq [T, H, d], dk and dv [T, Hkv, d], using the
   * head-split q/k/v and the merged out and lse the forward kept. Frees saved.out and the saved
   * state.
   * @throws Error naming the first of dOut, dq, dk, dv whose shape does not match the forward's,
   * or when the ring's hops differ from the forward's (F2).
   */
  backward(saved: AttentionSaved, dOut: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, layout: SequenceLayout): void {
    const t = saved.out.shape[0]!;
    this.checkLayout(layout);
    const { heads, kvHeads, headDim } = this.shape;
    expectShape('dOut', dOut, t, heads, headDim);
    expectShape('dq', dq, t, heads, headDim);
    expectShape('dk', dk, t, kvHeads, headDim);
    expectShape('dv', dv, t, kvHeads, headDim);
    const st = saved.state as TwoDState;
    const arena = dOut.arena;
    const dOutH = this.toHeads(dOut, 'scratch');
    const dqH = Tensor.zeros(arena, st.q.shape, 'scratch');
    const dkH = Tensor.zeros(arena, st.k.shape, 'scratch');
    const dvH = Tensor.zeros(arena, st.v.shape, 'scratch');
    this.ring.backward(st.ring, st.q, st.k, st.v, dOutH, dqH, dkH, dvH, layout);
    dOutH.free();
    gatherHeads(this.hpGroup, dqH, dq, true);
    this.fromHeadsKv(dkH, dk);
    this.fromHeadsKv(dvH, dv);
    for (const x of [dqH, dkH, dvH, st.q, st.k, st.v, saved.out]) x.free();
  }

  /**
   * Memory hook of {@link backward} (docs/memory.md): dO to heads and the head-split gradients
   * ('scratch'), the ring's {@link RingAttention.backwardMemory}, dQ/dK/dV back (the receive
   * buffers, replica sums); frees `saved`. Change it with backward.
   */
  static backwardMemory(ledger: MemoryLedger, shape: TwoDMemoryShape, saved: TwoDSavedMemory): void {
    const { tokens: t, heads, kvHeads, headDim: d, hp } = shape;
    const { kvRep, ring } = twoDMemorySizes(shape);
    const st = saved.state;
    ledger.phase = 'attention backward: all-to-all';
    const dOutH = TwoDAttention.toHeadsMemory(ledger, hp, t * heads * d, 'scratch');
    const dqH = ledger.alloc(t * heads * d, 'scratch');
    const dkH = ledger.alloc(t * kvHeads * kvRep * d, 'scratch');
    const dvH = ledger.alloc(t * kvHeads * kvRep * d, 'scratch');
    ledger.phase = 'attention backward: ring';
    RingAttention.backwardMemory(ledger, ring, st.ring);
    ledger.free(dOutH);
    ledger.phase = 'attention backward: all-to-all back';
    TwoDAttention.gatherHeadsMemory(ledger, hp, t * heads * d);
    TwoDAttention.fromHeadsKvMemory(ledger, hp, kvRep, t * kvHeads * d);
    TwoDAttention.fromHeadsKvMemory(ledger, hp, kvRep, t * kvHeads * d);
    ledger.free(dqH, dkH, dvH, st.q, st.k, st.v, saved.out);
  }

  /** Free saved.out and the saved state (head-split q/k/v, merged out and lse) without a backward. */
  release(saved: AttentionSaved): void {
    const st = saved.state as TwoDState;
    for (const x of [st.q, st.k, st.v, st.ring.out, st.ring.lse, saved.out]) x.free();
  }

  /** Memory hook of {@link release}: frees what {@link forwardMemory} kept. Change it with release. */
  static releaseMemory(ledger: MemoryLedger, saved: TwoDSavedMemory): void {
    const st = saved.state;
    ledger.free(st.q, st.k, st.v, st.ring.out, st.ring.lse, saved.out);
  }

  /**
   * The merged lse a forward kept, [S/cp, H/hp] in the head-split layout: the tokens of the
   * zigzag pair of ring position c (algorithms.md §2) and this rank's head group h.
   */
  headSplitLse(saved: AttentionSaved): Tensor {
    return (saved.state as TwoDState).ring.lse;
  }

  /** Hops of this core's ring that ran the kernels or were skipped (nothing visible), since construction. */
  get ringCounters(): RingCounters {
    return this.ring.counters;
  }

  /** @throws Error when the layout's hp is not this core's hp group size (its cp is checked by the ring). */
  private checkLayout(layout: SequenceLayout): void {
    if (layout.hp !== this.hpGroup.size) throw new Error(`attention: the sequence layout is for hp = ${layout.hp}, but this 2D-Attention's hp group has ${this.hpGroup.size} ranks`);
  }

  /** [T, Hx, d] → a new [hp·T, Hx/hp, d] from x's arena. */
  private toHeads(x: Tensor, category: MemoryCategory): Tensor {
    const [t, hx, d] = x.shape as [number, number, number];
    const hp = this.hpGroup.size;
    const y = Tensor.empty(x.arena, [hp * t, hx / hp, d], category);
    scatterHeads(this.hpGroup, x, y);
    return y;
  }

  /**
   * Memory hook of {@link toHeads} for x of `elements` values: the result y, then scatterHeads'
   * send buffer of x's size (category 'comm', only when hp > 1; src/attention/ulysses.ts).
   */
  private static toHeadsMemory(ledger: MemoryLedger, hp: number, elements: number, category: MemoryCategory): MemoryHandle {
    const y = ledger.alloc(elements, category);
    if (hp > 1) ledger.temp(elements, 'comm');
    return y;
  }

  /** Memory of gatherHeads (src/attention/ulysses.ts) into a tensor of `elements` values: its receive buffer ('comm', only when hp > 1). */
  private static gatherHeadsMemory(ledger: MemoryLedger, hp: number, elements: number): void {
    if (hp > 1) ledger.temp(elements, 'comm');
  }

  /** K or V [T, Hkv, d] → [hp·T, max(Hkv, hp)/hp, d] (category 'saved'), heads replicated first when hp > Hkv. */
  private kvToHeads(x: Tensor): Tensor {
    if (this.kvRep === 1) return this.toHeads(x, 'saved');
    const [t, hkv, d] = x.shape as [number, number, number];
    const rep = Tensor.empty(x.arena, [t, hkv * this.kvRep, d], 'scratch');
    replicateKvHeads(x, this.kvRep, rep);
    const y = this.toHeads(rep, 'saved');
    rep.free();
    return y;
  }

  /** Memory hook of {@link kvToHeads} for K or V of `elements` values: the replicas ('scratch', when kvRep > 1) around {@link toHeadsMemory}. */
  private static kvToHeadsMemory(ledger: MemoryLedger, hp: number, kvRep: number, elements: number): MemoryHandle {
    if (kvRep === 1) return TwoDAttention.toHeadsMemory(ledger, hp, elements, 'saved');
    const rep = ledger.alloc(elements * kvRep, 'scratch');
    const y = TwoDAttention.toHeadsMemory(ledger, hp, elements * kvRep, 'saved');
    ledger.free(rep);
    return y;
  }

  /** dK or dV [hp·T, Hkvr/hp, d] back to this rank's tokens, replicas summed, added into dx [T, Hkv, d]. */
  private fromHeadsKv(dH: Tensor, dx: Tensor): void {
    if (this.kvRep === 1) {
      gatherHeads(this.hpGroup, dH, dx, true);
      return;
    }
    const [t, hkv, d] = dx.shape as [number, number, number];
    const dRep = Tensor.empty(dx.arena, [t, hkv * this.kvRep, d], 'scratch');
    gatherHeads(this.hpGroup, dH, dRep);
    sumKvReplicas(dRep, this.kvRep, dx);
    dRep.free();
  }

  /** Memory hook of {@link fromHeadsKv} into dx of `elements` values: the replica gradients ('scratch', when kvRep > 1) around gatherHeads' receive buffer. */
  private static fromHeadsKvMemory(ledger: MemoryLedger, hp: number, kvRep: number, elements: number): void {
    if (kvRep === 1) {
      TwoDAttention.gatherHeadsMemory(ledger, hp, elements);
      return;
    }
    const dRep = ledger.alloc(elements * kvRep, 'scratch');
    TwoDAttention.gatherHeadsMemory(ledger, hp, elements * kvRep);
    ledger.free(dRep);
  }
}
