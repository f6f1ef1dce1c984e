import { TwoDAttention, type TwoDMemoryShape, type TwoDSavedMemory } from '../attention/two-d.js';
import { type CheckpointPolicy, checkpointedLayers, layerPolicies } from '../model/checkpoint.js';
import { headDim, type ModelConfig } from '../model/config.js';
import { type ParamPass, paramLayout, paramUnits } from '../model/params.js';
import { ZERO_STAGES, zeroPlan, type ZeroStage } from '../optim/zero.js';
import { unitSegments } from '../optim/zero-store.js';
import { ParallelDims, validateLayout } from '../parallel/dims.js';
import { MEMORY_CATEGORIES, type MemoryCategory } from '../tensor/arena.js';
import type { MemoryHandle, MemoryLedger } from '../tensor/memory-ledger.js';

/**
 * Per-rank peak arena bytes of one training step, predicted from the model, the sequence
 * length, the layout and the checkpoint policy (docs/memory.md). It replays, tensor by tensor,
 * what the code allocates — embedding, each block's forward (src/model/block.ts), the
 * 2D-Attention core (the memory hooks beside its code: TwoDAttention.forwardMemory,
 * backwardMemory, releaseMemory in src/attention/two-d.ts, which call RingAttention's in
 * ring.ts), the LM head, the backward in
 * reverse with recomputation — together with the model states of the ZeRO stage
 * (src/optim/zero.ts, zero-store.ts: shards, gathered units, per-unit gradient buffers), each
 * allocation rounded up to the arena's 64 bytes, and keeps the highest total. The arena's first-fit layout does not matter: peak bytes count live
 * allocations, not address ranges.
 */

/** The parts of a layout that change per-rank memory. */
export interface MemoryLayout {
  /** Head-parallel size (Ulysses all-to-all group). */
  hp: number;
  /** Context-parallel size (ring group). */
  cp: number;
  /** Inner ring size w, a divisor of cp (w = cp: a plain ring). */
  innerRingSize: number;
}

export interface MemoryPolicy {
  policy: CheckpointPolicy;
  /** The first ⌈fraction · layers⌉ layers use the policy, in (0, 1]. */
  fraction: number;
}

/** The ZeRO setting (docs/zero.md). */
export interface MemoryZero {
  /** 0 nothing sharded; 1 AdamW m, v; 2 also gradients; 3 also parameters. */
  stage: ZeroStage;
  /**
   * n, the shard group's size (`zeroShardCount`: world, sp or dp ranks; 1 for stage 0). Only
   * the size matters: the replica all-reduce of a smaller shard group takes no arena memory.
   */
  shards: number;
}

export interface MemoryPrediction {
  /** Highest live arena bytes during the step. */
  peakBytes: number;
  /** Bytes of all allocations of one step summed, model states (allocated once) left out (src/plan/cpu.ts times their zero-fill as an upper bound: Tensor.empty ones are not filled). */
  allocatedBytes: number;
  /** Live bytes per category at that moment (they sum to peakBytes). */
  atPeak: Record<MemoryCategory, number>;
  /** Each category's own highest live bytes (what Arena.stats().peakByCategory reports). */
  peakByCategory: Record<MemoryCategory, number>;
  /** Where the peak happens, e.g. "layer 1 backward: ring backward". */
  phase: string;
  /** Tokens per rank, S / (hp · cp). */
  tokensPerRank: number;
  /** Shard index whose rank is predicted: the one holding the most model-state bytes (ranks differ only there). */
  shardIndex: number;
}

/** Allocation granularity of the arena (src/tensor/arena.ts). */
const ALIGN = 64;

/** Arena bytes of a tensor of `elements` f32 values. */
export function tensorBytes(elements: number): number {
  return Math.max(ALIGN, Math.ceil((elements * 4) / ALIGN) * ALIGN);
}

function zeroByCategory(): Record<MemoryCategory, number> {
  return Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as Record<MemoryCategory, number>;
}

type Alloc = MemoryHandle;

/** Live bytes as allocations come and go, with the peak and what was live at it. */
class Ledger implements MemoryLedger {
  private readonly live = zeroByCategory();
  private total = 0;
  /** Bytes of every allocation of the step, summed (zero-filled or not: the replay does not tell Tensor.empty from Tensor.zeros). */
  allocated = 0;
  peak = 0;
  atPeak = zeroByCategory();
  readonly peakByCategory = zeroByCategory();
  peakPhase = '';
  phase = '';

  alloc(elements: number, category: MemoryCategory): Alloc {
    const a = { bytes: tensorBytes(elements), category };
    this.live[category] += a.bytes;
    this.total += a.bytes;
    this.allocated += a.bytes;
    if (this.live[category] > this.peakByCategory[category]) this.peakByCategory[category] = this.live[category];
    if (this.total > this.peak) {
      this.peak = this.total;
      this.atPeak = { ...this.live };
      this.peakPhase = this.phase;
    }
    return a;
  }

  free(...allocs: (Alloc | undefined)[]): void {
    for (const a of allocs) {
      if (a === undefined) continue;
      this.live[a.category] -= a.bytes;
      this.total -= a.bytes;
    }
  }

  /** Allocate and free at once: a temporary whose lifetime holds no other allocation. */
  temp(elements: number, category: MemoryCategory): void {
    this.free(this.alloc(elements, category));
  }
}

/** Sizes per rank, in f32 elements per token unless said otherwise. */
interface Dims {
  /** Tokens per rank T. */
  t: number;
  dim: number;
  heads: number;
  /** Hkv·d: one token's K (or V). */
  kv: number;
  ffn: number;
  vocab: number;
  /** What the attention core's memory hooks take. */
  attention: TwoDMemoryShape;
}

/** What a 2D-Attention forward keeps (TwoDAttention.forwardMemory). */
type CoreState = TwoDSavedMemory;

/**
 * Model states of shard `g` held between steps (what ZeroOptimizer allocates), one entry per
 * arena tensor: stages 0–1 the flat params and grads ([P] each), stage 1 m and v of its piece of
 * the one segment; stages 2–3 the gradient shard and m, v per non-empty piece of the unit
 * segments, with the whole params (stage 2, and stage 3 over one shard) or the params shard.
 */
function modelStateTensors(model: ModelConfig, zero: MemoryZero, g: number): { elements: number; category: MemoryCategory }[] {
  const flat = paramLayout(model).flatSize;
  const plan = zeroPlan(model, zero.stage, zero.shards);
  const pieces = plan.pieces(g).filter((p) => p.length > 0);
  const optim = zero.stage === 0 ? [flat, flat] : pieces.flatMap((p) => [p.length, p.length]);
  const shard = plan.shardSize(g);
  const params = zero.stage === 3 && zero.shards > 1 ? shard : flat;
  const grads = zero.stage >= 2 ? shard : flat;
  return [{ elements: params, category: 'params' }, { elements: grads, category: 'grads' }, ...optim.map((elements) => ({ elements, category: 'optim' as const }))];
}

/**
 * ShardedParamStore.acquire/release (src/optim/zero-store.ts) replayed on the ledger: stage 3
 * (over more than one shard) gathers each unit's segments into [segment] buffers ('params') and
 * posts the next unit's gather in the pass's order (the prefetch); a backward acquisition gives
 * each segment a [segment] gradient buffer ('grads') until release reduce-scatters it. Stages 0
 * and 1 (the replicated ModelParams) allocate nothing here.
 */
class StoreReplay {
  private readonly segmentsOfUnit: number[][];
  private readonly segmentLength: number[];
  private readonly gathered = new Map<number, { alloc: Alloc; refs: number }>();
  private readonly gradBuffers = new Map<number, { alloc: Alloc; refs: number }>();
  private readonly sharded: boolean;
  private readonly gathers: boolean;

  constructor(
    private readonly m: Ledger,
    model: ModelConfig,
    zero: MemoryZero,
  ) {
    const { segments, ofUnit } = unitSegments(paramLayout(model), paramUnits(model));
    this.segmentsOfUnit = ofUnit;
    this.segmentLength = segments.map((s) => s.end - s.start);
    this.sharded = zero.stage >= 2;
    this.gathers = zero.stage === 3 && zero.shards > 1;
  }

  /** Unit `u` in forward order: 0 the embedding, 1 … L the blocks, L + 1 the head. */
  acquire(u: number, pass: ParamPass): void {
    if (this.gathers) {
      for (const s of this.segmentsOfUnit[u]!) this.hold(this.gathered, s, 'params');
      for (const s of this.segmentsOfUnit[pass === 'forward' ? u + 1 : u - 1] ?? []) {
        if (!this.gathered.has(s)) this.gathered.set(s, { alloc: this.m.alloc(this.segmentLength[s]!, 'params'), refs: 0 });
      }
    }
    if (this.sharded && pass === 'backward') for (const s of this.segmentsOfUnit[u]!) this.hold(this.gradBuffers, s, 'grads');
  }

  release(u: number, pass: ParamPass): void {
    if (this.sharded && pass === 'backward') for (const s of this.segmentsOfUnit[u]!) this.drop(this.gradBuffers, s);
    if (this.gathers) for (const s of this.segmentsOfUnit[u]!) this.drop(this.gathered, s);
  }

  private hold(map: Map<number, { alloc: Alloc; refs: number }>, s: number, category: MemoryCategory): void {
    let buf = map.get(s);
    if (buf === undefined) {
      buf = { alloc: this.m.alloc(this.segmentLength[s]!, category), refs: 0 };
      map.set(s, buf);
    }
    buf.refs++;
  }

  private drop(map: Map<number, { alloc: Alloc; refs: number }>, s: number): void {
    const buf = map.get(s)!;
    if (--buf.refs > 0) return;
    this.m.free(buf.alloc);
    map.delete(s);
  }
}

/** A block's intermediates (src/model/block.ts BlockInternals). */
interface Internals {
  xn1: Alloc;
  rstd1: Alloc;
  h: Alloc;
  core: CoreState;
  xn2: Alloc;
  rstd2: Alloc;
  gate: Alloc;
  up: Alloc;
}

/** TransformerBlock.compute: norms, attention (unless its state is kept), projection, MLP. */
function blockCompute(m: Ledger, s: Dims, category: MemoryCategory, kept: CoreState | undefined, recompute: boolean): { internals: Internals; y?: Alloc } {
  const { t } = s;
  m.phase = recompute ? 'recomputation: norms' : 'forward: norms';
  const xn1 = m.alloc(t * s.dim, category);
  const rstd1 = m.alloc(t, category);
  const h = m.alloc(t * s.dim, category);
  let core = kept;
  if (core === undefined) {
    // SelfAttention.attend: q, k, v temporaries around the core's forward.
    const q = m.alloc(t * s.dim, 'activations');
    const k = m.alloc(t * s.kv, 'activations');
    const v = m.alloc(t * s.kv, 'activations');
    core = TwoDAttention.forwardMemory(m, s.attention);
    m.free(q, k, v);
  }
  m.phase = recompute ? 'recomputation: MLP' : 'forward: MLP';
  const xn2 = m.alloc(t * s.dim, category);
  const rstd2 = m.alloc(t, category);
  let y: Alloc | undefined;
  if (!recompute) y = m.alloc(t * s.dim, 'saved');
  const gate = m.alloc(t * s.ffn, category);
  const up = m.alloc(t * s.ffn, category);
  if (!recompute) m.temp(t * s.ffn, 'activations'); // the hidden silu(gate)∘up
  return { internals: { xn1, rstd1, h, core, xn2, rstd2, gate, up }, y };
}

/** What a block keeps from its forward until its backward. */
interface Kept {
  policy: CheckpointPolicy;
  internals?: Internals;
  core?: CoreState;
}

function blockForward(m: Ledger, s: Dims, policy: CheckpointPolicy): { y: Alloc; kept: Kept } {
  const { internals, y } = blockCompute(m, s, policy === 'none' ? 'saved' : 'activations', undefined, false);
  if (policy === 'none') return { y: y!, kept: { policy, internals } };
  const { xn1, rstd1, h, xn2, rstd2, gate, up, core } = internals;
  m.free(xn1, rstd1, h, xn2, rstd2, gate, up);
  if (policy === 'full') {
    TwoDAttention.releaseMemory(m, core);
    return { y: y!, kept: { policy } };
  }
  return { y: y!, kept: { policy, core } };
}

function blockBackward(m: Ledger, s: Dims, kept: Kept): void {
  const { t } = s;
  let internals = kept.internals;
  if (internals === undefined) {
    internals = blockCompute(m, s, 'activations', kept.core, true).internals;
  }
  m.phase = 'backward: MLP';
  const dxn = m.alloc(t * s.dim, 'activations');
  const dh = m.alloc(t * s.dim, 'activations');
  const hidden = m.alloc(t * s.ffn, 'activations');
  const dGate = m.alloc(t * s.ffn, 'activations');
  const dUp = m.alloc(t * s.ffn, 'activations');
  m.free(hidden);
  m.free(internals.gate, internals.up, dGate, dUp, internals.rstd2);
  m.phase = 'backward: attention';
  const dOut = m.alloc(t * s.dim, 'activations');
  const dq = m.alloc(t * s.dim, 'activations');
  const dk = m.alloc(t * s.kv, 'activations');
  const dv = m.alloc(t * s.kv, 'activations');
  TwoDAttention.backwardMemory(m, s.attention, internals.core);
  m.free(dOut, dq, dk, dv, internals.rstd1);
  m.free(dxn, dh, internals.xn1, internals.h, internals.xn2);
}

/**
 * Predicted peak arena bytes of one rank during one training step (forward, backward, gradient
 * reduction, clipping, AdamW) with the model states of ZeRO stage `zero.stage` over
 * `zero.shards` ranks (docs/memory.md; default stage 0: parameters, gradients and AdamW m, v
 * replicated, 4 + 4 + 8 bytes per element of the flat parameter layout). The rank predicted is
 * the one whose shard holds the most bytes (shards differ by at most one element per segment).
 * @param seqLen S, the tokens of one sequence (the rank holds S / (hp·cp)).
 * @throws ConfigError for a layout the trainer refuses (parallel/dims.ts validateLayout: hp,
 * cp, w not positive integers, w not dividing cp, hp not fitting heads and kvHeads, S not a
 * positive multiple of 2·hp·cp), an unknown policy or a fraction outside (0, 1]; Error when the
 * stage is not 0–3 or the shard count is not a positive integer (1 for stage 0).
 */
export function predictPeakBytes(model: ModelConfig, seqLen: number, layout: MemoryLayout, checkpoint: MemoryPolicy, zero: MemoryZero = { stage: 0, shards: 1 }): MemoryPrediction {
  const { hp, cp, innerRingSize: w } = layout;
  // The trainer's own check, so a layout it would refuse is never predicted (dp and placement do not change memory).
  validateLayout(new ParallelDims({ dp: 1, hp, cp, innerRingSize: w, placement: 'head-first' }), { heads: model.heads, kvHeads: model.kvHeads, seqLen });
  const sp = hp * cp;
  if (!ZERO_STAGES.includes(zero.stage)) throw new Error(`predictPeakBytes: zeroStage = ${zero.stage} is invalid: it must be one of ${ZERO_STAGES.join(', ')}`);
  if (!Number.isInteger(zero.shards) || zero.shards < 1 || (zero.stage === 0 && zero.shards !== 1)) {
    throw new Error(`predictPeakBytes: shards = ${zero.shards} is invalid: it must be a positive integer (the shard group's size), and 1 for zeroStage 0`);
  }
  const policies = layerPolicies({ policy: checkpoint.policy, layers: checkpointedLayers(checkpoint.fraction, model.layers) }, model.layers);
  const d = headDim(model);
  const s: Dims = {
    t: seqLen / sp,
    dim: model.dim,
    heads: model.heads,
    kv: model.kvHeads * d,
    ffn: model.ffnDim,
    vocab: model.vocabSize,
    attention: { heads: model.heads, kvHeads: model.kvHeads, headDim: d, tokens: seqLen / sp, hp, cp, innerRingSize: w },
  };
  const m = new Ledger();
  // Ranks differ only in their model states, held all step: predict the largest.
  const states = Array.from({ length: zero.shards }, (_, g) => modelStateTensors(model, zero, g));
  const bytesOf = (ts: { elements: number }[]): number => ts.reduce((a, x) => a + tensorBytes(x.elements), 0);
  const shardIndex = states.reduce((best, ts, g) => (bytesOf(ts) > bytesOf(states[best]!) ? g : best), 0);
  m.phase = 'model states';
  for (const { elements, category } of states[shardIndex]!) m.alloc(elements, category);
  m.allocated = 0; // held all run: allocated once, not every step
  const store = new StoreReplay(m, model, zero);
  const head = policies.length + 1;

  const { t } = s;
  m.phase = 'forward: embedding';
  const residuals = [m.alloc(t * s.dim, 'saved')];
  store.acquire(0, 'forward');
  store.release(0, 'forward');
  const kept: Kept[] = [];
  policies.forEach((policy, l) => {
    const before = m.peak;
    store.acquire(l + 1, 'forward');
    const { y, kept: k } = blockForward(m, s, policy);
    store.release(l + 1, 'forward');
    if (m.peak > before) m.peakPhase = `layer ${l} ${m.peakPhase}`;
    residuals.push(y);
    kept.push(k);
  });
  m.phase = 'forward: LM head';
  store.acquire(head, 'forward');
  const xf = m.alloc(t * s.dim, 'saved');
  const rstdF = m.alloc(t, 'saved');
  const dlogits = m.alloc(t * s.vocab, 'saved');
  m.temp(t, 'activations'); // per-token losses
  store.release(head, 'forward');

  m.phase = 'backward: LM head';
  let dx = m.alloc(t * s.dim, 'activations');
  store.acquire(head, 'backward');
  m.temp(t * s.dim, 'activations'); // dxf
  m.free(rstdF, xf, dlogits);
  store.release(head, 'backward');
  for (let l = policies.length - 1; l >= 0; l--) {
    m.free(residuals[l + 1]);
    const dPrev = m.alloc(t * s.dim, 'activations');
    const before = m.peak;
    store.acquire(l + 1, 'backward');
    blockBackward(m, s, kept[l]!);
    store.release(l + 1, 'backward');
    if (m.peak > before) m.peakPhase = `layer ${l} ${m.peakPhase}`;
    m.free(dx);
    dx = dPrev;
  }
  m.phase = 'backward: embedding';
  store.acquire(0, 'backward');
  store.release(0, 'backward');
  m.free(dx, residuals[0]);
  return { peakBytes: m.peak, allocatedBytes: m.allocated, atPeak: m.atPeak, peakByCategory: m.peakByCategory, phase: m.peakPhase, tokensPerRank: t, shardIndex };
}
