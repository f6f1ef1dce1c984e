import type { ProcessGroup } from '../comm/process-group.js';
import type { Kernels } from '../kernels/kernels.js';
import type { ModelConfig } from '../model/config.js';
import { initialParams, ModelParams, paramLayout, type ParamStore, paramUnits } from '../model/params.js';
import type { ParallelDims } from '../parallel/dims.js';
import type { ZeroShardGroup } from '../parallel/rank-groups.js';
import type { Arena } from '../tensor/arena.js';
import type { Tensor } from '../tensor/tensor.js';
import { AdamW, type AdamWHyper } from './adamw.js';
import { clipGradNorm } from './clip.js';
import { allSumF64, gatherv, postAllGatherv } from '../comm/collectives.js';
import { zeroTag } from './zero-tags.js';
import { type ShardPiece, ShardPlan } from './shard-plan.js';
import { ShardedParamStore, unitSegments } from './zero-store.js';

/** ZeRO stage (Rajbhandari et al. 2020): 0 nothing sharded; 1 optimizer state; 2 also gradients; 3 also parameters. */
export type ZeroStage = 0 | 1 | 2 | 3;
export const ZERO_STAGES: readonly ZeroStage[] = [0, 1, 2, 3];


/** Number of shards the model states are split into: 1 for stage 0, else the shard group's size. */
export function zeroShardCount(dims: ParallelDims, stage: ZeroStage, shardGroup: ZeroShardGroup): number {
  if (stage === 0) return 1;
  return shardGroup === 'world' ? dims.world : shardGroup === 'sp' ? dims.sp : dims.dp;
}

/**
 * How a stage cuts the flat layout into shards: one segment for stages 0 and 1 (the optimizer
 * update and the parameter all-gather run over the whole flat tensors), one per parameter unit
 * for stages 2 and 3 (gradients are reduced, and stage-3 parameters gathered, unit by unit).
 * @throws ConfigError for a bad model config.
 */
export function zeroPlan(config: ModelConfig, stage: ZeroStage, shards: number): ShardPlan {
  const layout = paramLayout(config);
  const segments = stage <= 1 ? [{ start: 0, end: layout.flatSize }] : unitSegments(layout, paramUnits(config)).segments;
  return new ShardPlan(layout.flatSize, segments, shards);
}

/** Elements of the largest shard of {@link zeroPlan} (shards differ by at most one element per segment). */
export function largestShardSize(config: ModelConfig, stage: ZeroStage, shards: number): number {
  const plan = zeroPlan(config, stage, shards);
  let largest = 0;
  for (let g = 0; g < shards; g++) largest = Math.max(largest, plan.shardSize(g));
  return largest;
}

/** Per-rank bytes of each model-state category held between steps. */
export interface ModelStateBytes {
  params: number;
  grads: number;
  optim: number;
}

/**
 * Bytes of parameters, gradients and AdamW m + v that one rank holds between steps (docs/zero.md):
 * with P = flat elements and S = this rank's shard elements (≈ P/n),
 * stage 0: 4P + 4P + 8P; 1: 4P + 4P + 8S; 2: 4P + 4S + 8S; 3: 4S + 4S + 8S.
 * (The arena rounds each allocation up to 64 bytes; m and v are one pair of tensors per
 * non-empty piece, so the measured optimizer bytes exceed 8S by less than 128 per piece.)
 */
export function modelStateBytes(flatSize: number, shardSize: number, stage: ZeroStage): ModelStateBytes {
  const f = (sharded: boolean): number => 4 * (sharded ? shardSize : flatSize);
  return { params: f(stage >= 3), grads: f(stage >= 2), optim: 2 * f(stage >= 1) };
}

/** Whole flat model states (every element of the layout), as a checkpoint stores them. */
export interface FullState {
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
  /** AdamW updates taken. */
  step: number;
}

export interface ZeroOptions {
  kernels: Kernels;
  arena: Arena;
  config: ModelConfig;
  /** Parameter initialisation seed ({@link initialParams}). */
  seed: number;
  hyper: AdamWHyper;
  stage: ZeroStage;
  /** The shard group (size 1 for stage 0); this rank holds shard `shard.rank`. */
  shard: ProcessGroup;
  /** The ranks holding the same shard elsewhere (size 1 when the shard group is the world). */
  replicas: ProcessGroup;
  /** Every rank: the gradient all-reduce of stages 0 and 1 spans every token shard. */
  world: ProcessGroup;
}

/** One optimizer piece: AdamW over this rank's part of one segment. */
interface OptimPiece {
  piece: ShardPiece;
  param: Tensor;
  grad: Tensor;
  adamw: AdamW;
}

/**
 * Hybrid ZeRO over a shard group (docs/zero.md). The model reads parameters through `store`
 * ({@link ModelParams} for stages 0 and 1, {@link ShardedParamStore} for 2 and 3); this object
 * reduces gradients, clips by the global norm and takes the AdamW step on this rank's shard:
 *
 * | stage | gradient reduction | update | after the update |
 * |---|---|---|---|
 * | 0 | all-reduce over the world | all of P | — |
 * | 1 | all-reduce over the world | this rank's piece | all-gather params over the shard group |
 * | 2 | per unit: reduce-scatter over the shard group at release; then all-reduce of the shard over the replicas | this rank's pieces | all-gather params over the shard group |
 * | 3 | as 2 | this rank's pieces | — (the next forward gathers per unit) |
 */
export class ZeroOptimizer {
  readonly stage: ZeroStage;
  readonly store: ParamStore;
  readonly plan: ShardPlan;
  private readonly kernels: Kernels;
  private readonly shard: ProcessGroup;
  private readonly replicas: ProcessGroup;
  private readonly world: ProcessGroup;
  private readonly pieces: OptimPiece[];
  /** The whole parameters when they are replicated (stages 0–2). */
  private readonly fullParams: Tensor | undefined;
  private steps = 0;

  /**
   * Builds the store and the optimizer state and initialises the parameters from `seed` (the
   * same values under every layout). @throws ConfigError for a bad model config; Error for a
   * bad hyper-parameter.
   */
  constructor(o: ZeroOptions) {
    this.stage = o.stage;
    this.kernels = o.kernels;
    this.shard = o.shard;
    this.replicas = o.replicas;
    this.world = o.world;
    if (o.stage === 0 && o.shard.size !== 1) throw new Error(`ZeRO stage 0 shards nothing: its shard group must be this rank alone, got ${o.shard.size} ranks`);
    const init = initialParams(o.config, o.seed);
    if (o.stage <= 1) {
      const params = new ModelParams(o.arena, o.config);
      params.params.data.set(init);
      this.store = params;
      this.fullParams = params.params;
      this.plan = zeroPlan(o.config, o.stage, o.shard.size);
      this.pieces = this.plan.pieces(o.shard.rank).filter((p) => p.length > 0).map((p) => {
        const view = (t: Tensor): Tensor => t.rows(p.flatStart, p.flatStart + p.length);
        return this.optimPiece(o, p, view(params.params), view(params.grads));
      });
    } else {
      // One shard holds everything: stage 3 then gathers nothing and keeps the whole parameters, as stage 2.
      const store = new ShardedParamStore({ arena: o.arena, config: o.config, group: o.shard, shardParams: o.stage === 3 && o.shard.size > 1 });
      store.loadFlat(init);
      this.store = store;
      this.fullParams = store.fullParams;
      this.plan = store.plan;
      this.pieces = store.pieces.filter((p) => p.length > 0).map((p) => this.optimPiece(o, p, store.paramPiece(p), store.gradPiece(p)));
    }
  }

  /** AdamW updates taken. */
  get step(): number {
    return this.steps;
  }

  /**
   * After the last backward of a step: complete the gradient sum over every token shard of the
   * global batch (stage 0/1: all-reduce the whole gradients over the world; stage 2/3: the shard
   * group already reduce-scattered each unit, so all-reduce this rank's gradient shard over its
   * replicas).
   */
  reduceGradients(): void {
    if (this.stage <= 1) this.world.allReduce((this.store as ModelParams).grads.data);
    else this.replicas.allReduce((this.store as ShardedParamStore).gradShard.data);
  }

  /**
   * ‖g‖₂ of the whole model, each parameter counted once: Σg² over this rank's pieces (float64),
   * summed over the shard group (whose pieces tile the layout once); identical on every rank.
   */
  gradNorm(): number {
    let local = 0;
    for (const p of this.pieces) local += this.kernels.sumSquares(p.grad);
    return Math.sqrt(allSumF64(this.shard, local));
  }

  /**
   * Global-norm clipping (optim/clip.ts) of the gradients this rank updates with; returns the
   * norm before clipping. A non-finite norm leaves them untouched (skip the update).
   */
  clip(maxNorm: number): number {
    const norm = this.gradNorm();
    for (const p of this.pieces) clipGradNorm(this.kernels, p.grad, maxNorm, norm);
    return norm;
  }

  /** One AdamW step on this rank's pieces with learning rate `lr`; stages 1 and 2 then all-gather the parameters. */
  update(lr: number): void {
    for (const p of this.pieces) p.adamw.update(lr);
    this.steps++;
    if (this.stage === 1 || this.stage === 2) this.allGatherParams();
  }

  /**
   * The whole model states on global rank 0 (undefined elsewhere), for a checkpoint: replicated
   * states are copied, sharded ones are gathered from the members of rank 0's shard group (the
   * other shard groups hold the same values and send nothing). Every rank must call it.
   */
  gatherFullState(): FullState | undefined {
    const root = this.shard.ranks.indexOf(0);
    if (root < 0) return undefined;
    const isRoot = this.shard.rank === root;
    const flatSize = this.plan.flatSize;
    const full = isRoot ? { params: new Float32Array(flatSize), m: new Float32Array(flatSize), v: new Float32Array(flatSize), step: this.steps } : undefined;
    const states = new Map(this.pieces.map((p) => [p.piece.segment, p.adamw.exportState()]));
    const empty = new Float32Array(0);
    for (const [s, seg] of this.plan.segments.entries()) {
      const bounds = this.plan.segmentBounds(s).map((b) => b - seg.start);
      const at = (a: Float32Array | undefined): Float32Array | undefined => a?.subarray(seg.start, seg.end);
      const state = states.get(s);
      gatherv(this.shard, state?.m ?? empty, at(full?.m), bounds, root, zeroTag(s, 'save'));
      gatherv(this.shard, state?.v ?? empty, at(full?.v), bounds, root, zeroTag(s, 'save'));
      if (this.fullParams === undefined) {
        const piece = this.pieces.find((p) => p.piece.segment === s);
        gatherv(this.shard, piece?.param.data ?? empty, at(full?.params), bounds, root, zeroTag(s, 'save'));
      }
    }
    if (full !== undefined && this.fullParams !== undefined) full.params.set(this.fullParams.data);
    return full;
  }

  /** Take this rank's part of whole model states (a checkpoint; every rank calls it with the same values). */
  loadFullState(full: FullState): void {
    const flatSize = this.plan.flatSize;
    for (const [what, a] of [['params', full.params], ['m', full.m], ['v', full.v]] as const) {
      if (a.length !== flatSize) throw new Error(`ZeroOptimizer.loadFullState: ${what} has ${a.length} elements, the layout ${flatSize}`);
    }
    if (this.fullParams !== undefined) this.fullParams.data.set(full.params);
    else (this.store as ShardedParamStore).loadFlat(full.params);
    for (const p of this.pieces) {
      const range = (a: Float32Array): Float32Array => a.subarray(p.piece.flatStart, p.piece.flatStart + p.piece.length);
      p.adamw.importState({ step: full.step, m: range(full.m), v: range(full.v) });
    }
    this.steps = full.step;
  }

  private allGatherParams(): void {
    const params = this.fullParams!.data;
    const pending = this.plan.segments.map((seg, s) => {
      const bounds = this.plan.segmentBounds(s);
      const me = this.shard.rank;
      return postAllGatherv(this.shard, params.subarray(bounds[me]!, bounds[me + 1]!), params.subarray(seg.start, seg.end), bounds.map((b) => b - seg.start), zeroTag(s, 'gather'));
    });
    for (const p of pending) p.wait();
  }

  private optimPiece(o: ZeroOptions, piece: ShardPiece, param: Tensor, grad: Tensor): OptimPiece {
    return { piece, param, grad, adamw: new AdamW(o.kernels, o.arena, this.store.layout, param, grad, o.hyper, piece.flatStart) };
  }
}
