import { doubleRingGroups } from '../attention/ring-groups.js';
import { TwoDAttention } from '../attention/two-d.js';
import type { ProcessGroup } from '../comm/process-group.js';
import type { RankContext } from '../comm/rank-context.js';
import { type Sequence, SequenceSampler, sequencePosition } from '../data/packing.js';
import { shardSequence } from '../data/shard.js';
import type { Kernels } from '../kernels/kernels.js';
import { getKernels } from '../kernels/registry.js';
import { headDim } from '../model/config.js';
import { countValidLabels, Transformer } from '../model/model.js';
import { AdamW } from '../optim/adamw.js';
import { clipGradNorm } from '../optim/clip.js';
import { WarmupCosineSchedule } from '../optim/schedule.js';
import { ParallelDims } from '../parallel/dims.js';
import { loadCheckpoint, readTrainerState, saveCheckpoint, type TrainerState } from './checkpoint.js';
import type { Config } from './config.js';
import type { RankStepReport } from './metrics.js';

/** What the launcher hands every rank (structured-cloneable; `stream` lives in a SharedArrayBuffer). */
export interface RankTrainArgs {
  config: Config;
  tokenizer: string;
  /** The packed token stream of the whole data set (data/packing.ts). */
  stream: Int32Array;
  /** Checkpoint folder to resume from, if any. */
  resumeFrom?: string;
  /** Last step to run (≤ config.train.steps); a checkpoint is written there. */
  stopAt: number;
  /**
   * Set to non-zero by the launcher (on Ctrl-C) to stop after the current step with a
   * checkpoint. An Int32Array over a SharedArrayBuffer of one element.
   */
  stopRequest?: Int32Array;
}

export interface RankTrainResult {
  /** Global mean loss of each step this run took, in step order. */
  losses: number[];
  /** Path of the last checkpoint written (rank 0 only). */
  checkpoint?: string;
}

/** A checkpoint written by rank 0. */
export interface CheckpointReport {
  kind: 'checkpoint';
  step: number;
  path: string;
}

/**
 * Sum of f64 values over the group, identical on every member and independent of f32 rounding:
 * each value travels as an f32 pair (hi, lo) with hi + lo = x to ~2⁻⁴⁸ relative.
 */
function allSumF64(group: ProcessGroup, x: number): number {
  const hi = Math.fround(x);
  const send = new Float32Array([hi, x - hi]);
  const all = new Float32Array(2 * group.size);
  group.allGather(send, all);
  let sum = 0;
  for (let i = 0; i < group.size; i++) sum += all[2 * i]! + all[2 * i + 1]!;
  return sum;
}

/** What every rank builds before its first step: the grid, kernels, groups and the model with 2D-Attention. */
export interface RankSetup {
  dims: ParallelDims;
  kernels: Kernels;
  /** All ranks: gradients and losses are summed over every token shard of the global batch. */
  world: ProcessGroup;
  model: Transformer;
}

/**
 * Build this rank's grid, groups and model (parameters initialised from train.seed).
 * @throws ConfigError when the world size does not match the layout.
 */
export function buildRank(ctx: RankContext, cfg: Config): RankSetup {
  const dims = new ParallelDims(cfg.parallel, ctx.world);
  const kernels = getKernels(cfg.train.kernels);
  const hpGroup = ctx.newGroup('hp', dims.hpGroup(ctx.rank));
  const cpGroup = ctx.newGroup('cp', dims.cpGroup(ctx.rank));
  const world = ctx.newGroup('world', Array.from({ length: ctx.world }, (_, i) => i));
  // The groups are what attention actually runs on: check them against the requested layout (F15).
  if (hpGroup.size !== dims.hp || cpGroup.size !== dims.cp || world.size !== dims.world) {
    throw new Error(`rank ${ctx.rank}: effective group sizes hp=${hpGroup.size}, cp=${cpGroup.size}, world=${world.size} differ from the requested layout ${dims}`);
  }
  const ringGroups = doubleRingGroups(ctx, dims);
  const attention = (): TwoDAttention =>
    new TwoDAttention({
      kernels,
      hpGroup,
      cpGroup,
      heads: cfg.model.heads,
      kvHeads: cfg.model.kvHeads,
      headDim: headDim(cfg.model),
      causal: cfg.train.causal,
      ...ringGroups,
      tracer: ctx.tracer,
    });
  const model = new Transformer(kernels, ctx.arena, cfg.model, attention, { seed: cfg.train.seed });
  return { dims, kernels, world, model };
}

/**
 * Forward and backward of this rank's share of a global batch, with the gradients summed over
 * `world` (every token shard: dp × hp × cp). `batch` is the whole global batch in dp-major
 * order (dp index d uses batch[d·B … d·B + B − 1], B = batch.length / dp). Returns the loss
 * Σ token losses / Σ valid labels of the WHOLE batch (labels −1 are ignored), identical on
 * every rank; the gradients are of that loss.
 * @throws Error when the batch does not split evenly over dp or holds no valid label.
 */
export function forwardBackward(model: Transformer, dims: ParallelDims, rank: number, world: ProcessGroup, batch: readonly Sequence[]): number {
  if (batch.length % dims.dp !== 0) throw new Error(`global batch of ${batch.length} sequences does not split over dp = ${dims.dp}`);
  const perDp = batch.length / dims.dp;
  let validLabels = 0;
  for (const seq of batch) validLabels += countValidLabels(seq.labels);
  if (validLabels === 0) throw new Error('the global batch has no valid label (all are −1); its loss is undefined');
  const { block } = dims.coords(rank);
  model.params.zeroGrads();
  let lossSum = 0;
  for (const seq of batch.slice(block * perDp, (block + 1) * perDp)) {
    const shard = shardSequence(dims, rank, seq.tokens, seq.labels);
    lossSum += model.forward(shard.tokens, shard.positions, shard.labels, 1 / validLabels);
    model.backward();
  }
  world.allReduce(model.params.grads.data);
  return allSumF64(world, lossSum) / validLabels;
}

/**
 * One rank's training loop (DESIGN.md "One rank's step"): data shard → model forward/backward
 * with 2D-Attention → gradients summed over every token shard of the global batch (the world
 * group: dp × hp × cp) → global-norm clipping → AdamW. The loss is Σ token losses / Σ valid
 * labels of the whole global batch, identical on every rank.
 */
export function run(ctx: RankContext, args: RankTrainArgs): RankTrainResult {
  const cfg = args.config;
  const { dims, kernels, world, model } = buildRank(ctx, cfg);
  const { params } = model;
  const optimizer = new AdamW(kernels, ctx.arena, params.layout, params.params, params.grads, cfg.optim);
  const schedule = new WarmupCosineSchedule({ maxLr: cfg.optim.lr, minLr: cfg.optim.minLr, warmupSteps: cfg.optim.warmupSteps, totalSteps: cfg.train.steps });
  const sampler = new SequenceSampler(args.stream, cfg.train.seqLen, cfg.train.seed);
  const { batchSize } = cfg.train;
  const maxNorm = cfg.optim.gradClip > 0 ? cfg.optim.gradClip : Infinity;

  let startStep = 0;
  if (args.resumeFrom !== undefined) {
    const state = readTrainerState(args.resumeFrom);
    optimizer.importState(loadCheckpoint(args.resumeFrom, params, state.optimizerStep));
    startStep = state.step;
  }

  const losses: number[] = [];
  let checkpoint: string | undefined;
  for (let step = startStep + 1; step <= args.stopAt; step++) {
    const t0 = performance.now();
    ctx.arena.resetPeak();
    const waitBefore = totalWaitMs(ctx);
    const batch: Sequence[] = [];
    for (let d = 0; d < dims.dp; d++) {
      for (let b = 0; b < batchSize; b++) batch.push(sampler.globalSequence(sequencePosition(step - 1, dims.dp, batchSize, d, b)));
    }
    const loss = forwardBackward(model, dims, ctx.rank, world, batch);
    const gradNorm = clipGradNorm(kernels, params.grads, maxNorm);
    const lr = schedule.lr(step);
    if (Number.isFinite(gradNorm)) optimizer.update(lr);
    losses.push(loss);
    // Timed before any checkpoint so that saving does not show up as a slow step.
    const report: RankStepReport = {
      kind: 'step',
      step,
      loss,
      lr,
      gradNorm,
      stepMs: performance.now() - t0,
      peakBytes: ctx.arena.stats().peakBytes,
      commWaitMs: totalWaitMs(ctx) - waitBefore,
    };
    ctx.report(report);

    // Every rank must stop at the same step: agree on the launcher's stop request collectively.
    const stopping = args.stopRequest !== undefined && anyRank(world, Atomics.load(args.stopRequest, 0) !== 0);
    if (stopping || step === args.stopAt || (cfg.save.every > 0 && step % cfg.save.every === 0)) {
      if (ctx.rank === 0) {
        const state: TrainerState = {
          format: 1,
          step,
          optimizerStep: optimizer.step,
          dataPosition: sequencePosition(step, dims.dp, batchSize, 0, 0),
          sequencesPerStep: dims.dp * batchSize,
          causal: cfg.train.causal,
          seed: cfg.train.seed,
          model: cfg.model,
          tokenizer: args.tokenizer,
          seqLen: cfg.train.seqLen,
          layout: dims.toString(),
          rngState: cfg.train.seed,
        };
        checkpoint = saveCheckpoint(cfg.save.dir, state, params, optimizer.exportState(), cfg.save.keep);
        ctx.report({ kind: 'checkpoint', step, path: checkpoint } satisfies CheckpointReport);
      }
      world.barrier();
    }
    if (stopping) break;
  }
  return checkpoint === undefined ? { losses } : { losses, checkpoint };
}

/** Whether `flag` is true on any rank of `group` (the same answer on every rank). */
function anyRank(group: ProcessGroup, flag: boolean): boolean {
  const buf = new Float32Array([flag ? 1 : 0]);
  group.allReduce(buf);
  return buf[0]! > 0;
}

function totalWaitMs(ctx: RankContext): number {
  let ms = 0;
  for (const c of Object.values(ctx.counters())) ms += c.waitMs;
  return ms;
}

