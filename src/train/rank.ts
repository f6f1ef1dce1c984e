import { TwoDAttention } from '../attention/two-d.js';
import { GROUP_KINDS, type CommCounters, type GroupKind, type ProcessGroup } from '../comm/process-group.js';
import type { RankContext } from '../comm/rank-context.js';
import { packingOptions, type Sequence, SequenceSampler, sequencePosition } from '../data/packing.js';
import { sequenceLayoutOf, shardSequence } from '../data/shard.js';
import type { Kernels } from '../kernels/kernels.js';
import { createKernels } from '../kernels/registry.js';
import { timedKernels, type TimedKernels } from '../kernels/timed.js';
import { headDim } from '../model/config.js';
import { checkpointedLayers } from '../model/checkpoint.js';
import { countValidLabels, Transformer } from '../model/model.js';
import { ModelParams, type ParamStore } from '../model/params.js';
import { allSumF64 } from '../comm/collectives.js';
import { ZeroOptimizer, type ZeroStage } from '../optim/zero.js';
import { WarmupCosineSchedule } from '../optim/schedule.js';
import { ParallelDims } from '../parallel/dims.js';
import type { SequenceLayout } from '../parallel/sequence-layout.js';
import { buildRankGroups, type ZeroShardGroup } from '../parallel/rank-groups.js';
import { loadCheckpoint, readTrainerState, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { evalOptions, shardingOptions, type Config } from './config.js';
import { TrainingDivergedError } from '../errors.js';
import type { RankStepReport } from './metrics.js';
import { scheduleOf } from './resume-schedule.js';
import { scoringSequences, type HeldOutRecord } from '../data/heldout.js';
import { evaluateSequences } from './evaluate.js';
import { awaitLogged } from './logged-step.js';

/** What the launcher hands every rank (structured-cloneable; `stream` and `docStarts` live in SharedArrayBuffers). */
export interface RankTrainArgs {
  config: Config;
  tokenizer: string;
  /** The packed token stream of the whole data set (data/packing.ts). */
  stream: Int32Array;
  /** Where each document starts in `stream` (TokenStream.docStarts), for data.packing = "documents". */
  docStarts: Int32Array;
  /** Checkpoint folder to resume from, if any. */
  resumeFrom?: string;
  /** A fresh run's initial parameters (flat, the model's layout) from model.init (src/hf/init.ts); ignored with resumeFrom. */
  initParams?: Float32Array;
  /** Last step to run (≤ config.train.steps); a checkpoint is written there. */
  stopAt: number;
  /** The held-out split's validation stream and document starts (data/heldout.ts), when the run has one. */
  valStream?: Int32Array;
  valDocStarts?: Int32Array;
  /** The split as the checkpoints record it (TrainerState.heldOut). */
  heldOut?: HeldOutRecord;
  /** The coordinator's last written metrics row (logged-step.ts); rank 0 waits on it before each save. */
  loggedStep?: Int32Array;
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

/** What every rank builds before its first step: the grid, kernels, groups and the model with 2D-Attention. */
export interface RankSetup {
  dims: ParallelDims;
  kernels: Kernels;
  /** All ranks: gradients and losses are summed over every token shard of the global batch. */
  world: ProcessGroup;
  model: Transformer<ParamStore>;
  /** Hybrid ZeRO of optim.zeroStage over optim.zeroShardGroup: owns the parameter store and the optimizer state. */
  zero: ZeroOptimizer;
  /** The SequenceLayout of one sequence under this run's layout, mask and sharding (built once per sequence). */
  layoutOf: (seq: Sequence) => SequenceLayout;
  /** With log.kernelTimes: the timer around `kernels`, read and reset once per step. */
  kernelTimer?: TimedKernels;
}

/**
 * Build this rank's grid, groups, ZeRO optimizer and model (parameters initialised from
 * train.seed, identical under every layout).
 * @throws ConfigError when the world size does not match the layout.
 */
export function buildRank(ctx: RankContext, cfg: Config): RankSetup {
  const dims = new ParallelDims(cfg.parallel, ctx.world);
  // Per rank: the wasm and blas kernels work on this rank's arena.
  const kernelTimer = cfg.log.kernelTimes === true ? timedKernels(createKernels(cfg.train.kernels, ctx.arena)) : undefined;
  const kernels = kernelTimer?.kernels ?? createKernels(cfg.train.kernels, ctx.arena);
  const stage = cfg.optim.zeroStage as ZeroStage;
  const groups = buildRankGroups(ctx, dims, { stage, shardGroup: cfg.optim.zeroShardGroup as ZeroShardGroup });
  const { world } = groups;
  const attention = (): TwoDAttention =>
    new TwoDAttention({
      kernels,
      hpGroup: groups.hp,
      cpGroup: groups.cp,
      heads: cfg.model.heads,
      kvHeads: cfg.model.kvHeads,
      headDim: headDim(cfg.model),
      innerGroup: groups.inner,
      outerGroup: groups.outer,
      tracer: ctx.tracer,
    });
  const checkpoint = { policy: cfg.checkpoint.policy, layers: checkpointedLayers(cfg.checkpoint.fraction, cfg.model.layers) };
  const zero = new ZeroOptimizer({
    kernels,
    arena: ctx.arena,
    config: cfg.model,
    seed: cfg.train.seed,
    hyper: cfg.optim,
    stage,
    shard: groups.zeroShard,
    replicas: groups.zeroReplicas,
    world,
  });
  const model = new Transformer(kernels, ctx.arena, cfg.model, attention, { params: zero.store, checkpoint });
  const sharding = { causal: cfg.train.causal, ...shardingOptions(cfg.parallel) };
  return { dims, kernels, world, model, zero, layoutOf: (seq) => sequenceLayoutOf(dims, seq, sharding), ...(kernelTimer !== undefined ? { kernelTimer } : {}) };
}

/**
 * Forward and backward of this rank's share of a global batch, with the gradients summed over
 * every token shard (dp × hp × cp) by `reduceGradients` (default: all-reduce of the whole
 * gradients over `world`, for replicated {@link ModelParams}; a ZeRO run passes
 * ZeroOptimizer.reduceGradients). `batch` is the whole global batch in dp-major
 * order (dp index d uses batch[d·B … d·B + B − 1], B = batch.length / dp); each sequence is
 * sharded and masked by its own SequenceLayout (`setup.layoutOf`). Returns the loss
 * Σ token losses / Σ valid labels of the WHOLE batch (labels −1 are ignored), identical on
 * every rank (the gradients are of that loss), and this rank's attention work: the visible
 * (query, key) pairs per head of its ring position over its sequences.
 * @throws Error when the batch does not split evenly over dp or holds no valid label, or when a
 * sharded store comes without its reduction.
 */
export function forwardBackward(
  setup: Pick<RankSetup, 'model' | 'dims' | 'world' | 'layoutOf'>,
  rank: number,
  batch: readonly Sequence[],
  reduceGradients: () => void = () => {
    if (!(setup.model.params instanceof ModelParams)) throw new Error('forwardBackward: sharded parameters need their ZeroOptimizer.reduceGradients');
    setup.world.allReduce(setup.model.params.grads.data);
  },
): { loss: number; attentionPairs: number } {
  const { model, dims, world } = setup;
  if (batch.length % dims.dp !== 0) throw new Error(`global batch of ${batch.length} sequences does not split over dp = ${dims.dp}`);
  const perDp = batch.length / dims.dp;
  let validLabels = 0;
  for (const seq of batch) validLabels += countValidLabels(seq.labels);
  if (validLabels === 0) throw new Error('the global batch has no valid label (all are −1); its loss is undefined');
  const { block, h, c } = dims.coords(rank);
  model.params.zeroGrads();
  let lossSum = 0;
  let attentionPairs = 0;
  for (const seq of batch.slice(block * perDp, (block + 1) * perDp)) {
    const layout = setup.layoutOf(seq);
    const shard = shardSequence(layout, h, c, seq);
    lossSum += model.forward(shard.tokens, shard.positions, shard.labels, 1 / validLabels, layout);
    model.backward();
    attentionPairs += layout.work()[c]!;
  }
  reduceGradients();
  return { loss: allSumF64(world, lossSum) / validLabels, attentionPairs };
}

/**
 * One training step of this rank on the global batch `batch`: forward/backward, gradients
 * summed over every token shard (ZeRO: reduce-scattered over the shard group as each unit's
 * backward ends), clipping by the global norm (each parameter counted once), and the AdamW step
 * with learning rate `lr` on this rank's shard — skipped when the loss or the norm is not finite,
 * so the parameters and optimizer state stay as they were.
 * Returns the global mean loss, the norm before clipping and whether the update was skipped,
 * identical on every rank.
 */
export function trainStep(
  setup: RankSetup, rank: number, batch: readonly Sequence[], lr: number, maxNorm: number,
): { loss: number; gradNorm: number; skipped: boolean; attentionPairs: number } {
  const { zero } = setup;
  const { loss, attentionPairs } = forwardBackward(setup, rank, batch, () => zero.reduceGradients());
  const gradNorm = zero.clip(maxNorm);
  const skipped = !Number.isFinite(loss) || !Number.isFinite(gradNorm);
  if (!skipped) zero.update(lr);
  return { loss, gradNorm, skipped, attentionPairs };
}

/**
 * The error that stops a run after its `count`-th non-finite step, naming the step and what went non-finite.
 */
function divergence(step: number, loss: number, gradNorm: number, count: number, allowed: number): TrainingDivergedError {
  const what = [!Number.isFinite(loss) ? `the loss is ${loss}` : '', !Number.isFinite(gradNorm) ? `the gradient norm is ${gradNorm}` : ''].filter((x) => x !== '').join(' and ');
  return new TrainingDivergedError(
    `step ${step}: ${what}; stopped after ${count} such step${count === 1 ? '' : 's'} (train.maxNonFiniteSteps = ${allowed} may be skipped). ` +
      'Nothing was saved for this step or after it, and every checkpoint written holds finite values. Lower optim.lr, raise optim.warmupSteps or optim.gradClip, or allow skips with train.maxNonFiniteSteps',
  );
}

/**
 * One rank's training loop (DESIGN.md "One rank's step"): data shard → model forward/backward
 * with 2D-Attention → gradients summed over every token shard of the global batch (dp × hp ×
 * cp) → global-norm clipping → AdamW on this rank's ZeRO shard. The loss is Σ token losses /
 * Σ valid labels of the whole global batch, identical on every rank.
 */
export function run(ctx: RankContext, args: RankTrainArgs): RankTrainResult {
  const cfg = args.config;
  const setup = buildRank(ctx, cfg);
  const { dims, world, model, zero } = setup;
  // A run shorter than its warmup warms up over all of it (train() says so in the log).
  const warmupSteps = Math.min(cfg.optim.warmupSteps, cfg.train.steps);
  const schedule = new WarmupCosineSchedule({ maxLr: cfg.optim.lr, minLr: cfg.optim.minLr, warmupSteps, totalSteps: cfg.train.steps });
  const sampler = new SequenceSampler(args.stream, cfg.train.seqLen, cfg.train.seed, { ...packingOptions(cfg.data), docStarts: args.docStarts });
  const { batchSize } = cfg.train;
  const maxNorm = cfg.optim.gradClip > 0 ? cfg.optim.gradClip : Infinity;
  // Validation (train.evalEvery): the first evalSequences sequences of the held-out stream, the same every time.
  const { evalEvery, evalSequences } = evalOptions(cfg);
  const validation = evalEvery > 0 && args.valStream !== undefined && args.valStream.length > 0
    ? scoringSequences(args.valStream, args.valDocStarts ?? new Int32Array(0), cfg.train.seqLen, packingOptions(cfg.data), evalSequences)
    : [];

  let startStep = 0;
  if (args.resumeFrom !== undefined) {
    const state = readTrainerState(args.resumeFrom);
    zero.loadFullState(loadCheckpoint(args.resumeFrom, model.params.layout, state.optimizerStep));
    startStep = state.step;
  }
  if (args.resumeFrom === undefined && args.initParams !== undefined) {
    const zeros = new Float32Array(args.initParams.length);
    zero.loadFullState({ params: args.initParams, m: zeros, v: zeros, step: 0 });
  }

  const losses: number[] = [];
  let checkpoint: string | undefined;
  let nonFinite = 0;
  for (let step = startStep + 1; step <= args.stopAt; step++) {
    const t0 = performance.now();
    ctx.arena.resetPeak();
    setup.kernelTimer?.reset();
    const before = ctx.counters();
    const batch: Sequence[] = [];
    for (let d = 0; d < dims.dp; d++) {
      for (let b = 0; b < batchSize; b++) batch.push(sampler.globalSequence(sequencePosition(step - 1, dims.dp, batchSize, d, b)));
    }
    const lr = schedule.lr(step);
    const { loss, gradNorm, skipped, attentionPairs } = trainStep(setup, ctx.rank, batch, lr, maxNorm);
    losses.push(loss);
    if (skipped) nonFinite++;
    // Timed before any checkpoint so that saving does not show up as a slow step.
    const stats = ctx.arena.stats();
    const report: RankStepReport = {
      kind: 'step',
      step,
      loss,
      lr,
      gradNorm,
      skipped,
      stepMs: performance.now() - t0,
      peakBytes: stats.peakBytes,
      peakBytesByCategory: stats.peakByCategory,
      attentionPairs,
      ...stepTraffic(before, ctx.counters()),
      ...(setup.kernelTimer !== undefined ? { kernelMs: setup.kernelTimer.times() } : {}),
    };
    // After the step's update and its timing: the model a checkpoint of this step holds.
    if (validation.length > 0 && (step % evalEvery === 0 || step === args.stopAt)) {
      report.valLoss = evaluateSequences(setup, ctx.rank, validation).loss;
    }
    ctx.report(report);
    // Loss and norm are global, so every rank stops at the same step, before any save.
    if (nonFinite > cfg.train.maxNonFiniteSteps) throw divergence(step, loss, gradNorm, nonFinite, cfg.train.maxNonFiniteSteps);

    // Every rank must stop at the same step: agree on the launcher's stop request collectively.
    const stopping = anyRank(world, ctx.stopRequested());
    if (stopping || step === args.stopAt || (cfg.save.every > 0 && step % cfg.save.every === 0)) {
      // Every rank takes part in gathering the shards; rank 0 writes the whole tensors.
      const full = zero.gatherFullState();
      if (full !== undefined) {
        if (args.loggedStep !== undefined) awaitLogged(args.loggedStep, step, ctx.timeoutMs);
        const state: TrainerState = {
          format: 1,
          step,
          optimizerStep: zero.step,
          dataPosition: sequencePosition(step, dims.dp, batchSize, 0, 0),
          sequencesPerStep: dims.dp * batchSize,
          causal: cfg.train.causal,
          seed: cfg.train.seed,
          model: cfg.model,
          tokenizer: args.tokenizer,
          seqLen: cfg.train.seqLen,
          layout: dims.toString(),
          zeroStage: zero.stage,
          zeroShardGroup: cfg.optim.zeroShardGroup,
          rngState: cfg.train.seed,
          schedule: scheduleOf(cfg),
          packing: packingOptions(cfg.data),
          ...(args.heldOut !== undefined ? { heldOut: args.heldOut } : {}),
        };
        checkpoint = saveCheckpoint(cfg.save.dir, state, model.params.layout, full, cfg.save.keep);
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

/** This rank's communication wait and bytes sent per kind between two counter snapshots. */
function stepTraffic(before: Record<GroupKind, CommCounters>, after: Record<GroupKind, CommCounters>): Pick<RankStepReport, 'commWaitMs' | 'commBytesByKind'> {
  let commWaitMs = 0;
  for (const k of GROUP_KINDS) commWaitMs += after[k].waitMs - before[k].waitMs;
  const commBytesByKind = Object.fromEntries(GROUP_KINDS.map((k) => [k, after[k].bytesSent - before[k].bytesSent])) as Record<GroupKind, number>;
  return { commWaitMs, commBytesByKind };
}

