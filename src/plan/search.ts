import { ConfigError } from '../errors.js';
import { CHECKPOINT_POLICIES, type CheckpointPolicy } from '../model/checkpoint.js';
import { divisors, PLACEMENTS, validHpValues, type Placement } from '../parallel/dims.js';
import { ZERO_SHARD_GROUPS, type ZeroShardGroup } from '../parallel/rank-groups.js';
import { checkConfigObject, parseConfig } from '../train/config.js';
import { predictStep, type PlanCluster, type PlanLayout, type PlanRun, type StepPrediction } from './cost.js';
import { gpuMemory, gpuMemoryLowerBound, type GpuMemory } from './memory.js';

/** Parts of the layout the user fixed (any subset). */
export interface LayoutFixes {
  dp?: number;
  hp?: number;
  cp?: number;
  innerRingSize?: number;
  placement?: Placement;
  zeroStage?: 0 | 1 | 2 | 3;
  zeroShardGroup?: ZeroShardGroup;
  checkpoint?: CheckpointPolicy;
  checkpointFraction?: number;
}

/** One planned layout: the layout, its predicted step and its memory. */
export interface PlannedLayout extends Omit<PlanLayout, 'checkpointFraction' | 'offload' | 'tp' | 'precision'> {
  checkpointFraction: number;
  stepSeconds: number;
  tgs: number;
  mfuCausal: number;
  mfuFull: number;
  exposedCommShare: number;
  peakBytesPerGpu: number;
  fits: boolean;
  reason?: string;
  prediction: StepPrediction;
  memory: GpuMemory;
}

/**
 * The raw config our trainer would read for this run and layout ([model], [parallel], [optim]
 * ZeRO keys, [train] seqLen and batchSize, [checkpoint]), so that the planner checks a layout
 * with exactly the code training uses (src/train/config.ts parseConfig, which runs
 * parallel/dims.ts validateLayout and the sharding's own check).
 */
export function trainerConfig(run: PlanRun, layout: PlanLayout): Record<string, unknown> {
  const { model } = run;
  return {
    model: { vocabSize: model.vocabSize, dim: model.dim, layers: model.layers, heads: model.heads, kvHeads: model.kvHeads, ffnDim: model.ffnDim, ropeTheta: model.ropeTheta, normEps: model.normEps, tiedEmbeddings: model.tiedEmbeddings, initStd: model.initStd },
    parallel: { dp: layout.dp, hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize, placement: layout.placement },
    optim: { zeroStage: layout.zeroStage, zeroShardGroup: layout.zeroShardGroup },
    train: { seqLen: run.seqLen, batchSize: run.batch ?? 1 },
    checkpoint: { policy: layout.checkpoint, fraction: layout.checkpointFraction ?? 1 },
  };
}

/**
 * Check a layout as `loongtrain train` would, plus what the trainer cannot see: world = GPUs.
 * @throws ConfigError with the trainer's message.
 */
export function validateForTraining(run: PlanRun, layout: PlanLayout, gpus: number): void {
  const world = layout.dp * layout.hp * layout.cp;
  if (world !== gpus) throw new ConfigError(`dp·hp·cp = ${layout.dp}·${layout.hp}·${layout.cp} = ${world} ≠ --gpus ${gpus}`);
  if (layout.tp !== undefined && layout.tp !== 1) throw new ConfigError('tensor parallelism (tp) is not part of our trainer');
  if (layout.offload === true) throw new ConfigError('optimizer offload is not part of our trainer');
  const cfg = trainerConfig(run, layout);
  // parseConfig's cross-field rules (resolveConfig) read model, parallel and train only, and its
  // SequenceLayout check builds the whole sequence's token map (S entries): run it once per
  // (model, parallel, train) and check the other candidates' [optim] and [checkpoint] keys with
  // the same schema (checkConfigObject); the verdict is the one parseConfig gives.
  const key = JSON.stringify([cfg.model, cfg.parallel, cfg.train]);
  const known = validated.get(key);
  if (known === undefined) {
    try {
      parseConfig(cfg, 'plan layout');
      validated.set(key, '');
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      validated.set(key, e.message);
      throw e;
    }
    return;
  }
  if (known !== '') throw new ConfigError(known);
  checkConfigObject(cfg);
}

const validated = new Map<string, string>();

/** Every candidate layout for `gpus` GPUs agreeing with `fixes`, before validation. */
export function candidateLayouts(run: PlanRun, gpus: number, fixes: LayoutFixes): PlanLayout[] {
  const out: PlanLayout[] = [];
  const { heads, kvHeads } = run.model;
  const hpChoices = fixes.hp !== undefined ? [fixes.hp] : validHpValues(heads, kvHeads);
  for (const sp of divisors(gpus)) {
    for (const hp of hpChoices) {
      if (sp % hp !== 0) continue;
      const cp = sp / hp;
      if (fixes.cp !== undefined && fixes.cp !== cp) continue;
      const dp = gpus / sp;
      if (fixes.dp !== undefined && fixes.dp !== dp) continue;
      const ws = fixes.innerRingSize !== undefined ? [fixes.innerRingSize] : divisors(cp);
      // Placement only matters when both hp and cp exceed 1.
      const places = fixes.placement !== undefined ? [fixes.placement] : hp > 1 && cp > 1 ? PLACEMENTS : (['head-first'] as Placement[]);
      const stages = fixes.zeroStage !== undefined ? [fixes.zeroStage] : ([0, 1, 2, 3] as const);
      const policies = fixes.checkpoint !== undefined ? [fixes.checkpoint] : CHECKPOINT_POLICIES;
      for (const w of ws) {
        for (const placement of places) {
          for (const zeroStage of stages) {
            const groups = fixes.zeroShardGroup !== undefined ? [fixes.zeroShardGroup] : zeroStage === 0 ? (['world'] as ZeroShardGroup[]) : distinctGroups(dp, sp);
            for (const zeroShardGroup of groups) {
              for (const checkpoint of policies) {
                out.push({ dp, hp, cp, innerRingSize: w, placement, zeroStage, zeroShardGroup, checkpoint, checkpointFraction: fixes.checkpointFraction ?? 1 });
              }
            }
          }
        }
      }
    }
  }
  return out;
}

/** The ZeRO shard groups that differ for dp × sp: world; sp when dp > 1 and sp > 1; dp when sp > 1 and dp > 1. */
function distinctGroups(dp: number, sp: number): ZeroShardGroup[] {
  return ZERO_SHARD_GROUPS.filter((g) => g === 'world' || (dp > 1 && sp > 1));
}

export interface PlanResult {
  /** Layouts that fit, best predicted TGS first (at most `top`). */
  ranked: PlannedLayout[];
  /** The best-predicted layouts that do not fit, with the reason (at most `top`). */
  refused: PlannedLayout[];
  /** Candidates the trainer's validation rejected, with one example message each kind. */
  rejected: { count: number; examples: string[] };
  candidates: number;
}

/** Evaluate one layout already validated. */
export function evaluateLayout(run: PlanRun, layout: PlanLayout, cluster: PlanCluster): PlannedLayout {
  const prediction = predictStep(run, layout, cluster);
  const memory = gpuMemory(run.model, run.seqLen, layout, cluster.gpu);
  return {
    dp: layout.dp, hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize, placement: layout.placement,
    zeroStage: layout.zeroStage, zeroShardGroup: layout.zeroShardGroup, checkpoint: layout.checkpoint, checkpointFraction: layout.checkpointFraction ?? 1,
    stepSeconds: prediction.stepSeconds, tgs: prediction.tgs, mfuCausal: prediction.mfuCausal, mfuFull: prediction.mfuFull,
    exposedCommShare: prediction.exposedCommShare, peakBytesPerGpu: memory.peakBytesPerGpu, fits: memory.fits,
    ...(memory.reason !== undefined ? { reason: memory.reason } : {}),
    prediction, memory,
  };
}

/**
 * Rank the layouts of `run` on `cluster` agreeing with `fixes` by predicted TGS. Every candidate
 * first passes the trainer's validation (validateForTraining); those it rejects are never
 * ranked. Memory is evaluated from the best predicted down until `top` fitting ones are found.
 */
export function planLayouts(run: PlanRun, cluster: PlanCluster, fixes: LayoutFixes, top = 10): PlanResult {
  const candidates = candidateLayouts(run, cluster.gpus, fixes);
  const valid: { layout: PlanLayout; prediction: StepPrediction }[] = [];
  const reasons = new Map<string, number>();
  let rejected = 0;
  for (const layout of candidates) {
    try {
      validateForTraining(run, layout, cluster.gpus);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      rejected++;
      const first = e.message.split('\n').find((l) => l.trim().startsWith('- ')) ?? e.message;
      const kind = first.trim().replace(/^- /, '');
      reasons.set(kind, (reasons.get(kind) ?? 0) + 1);
      continue;
    }
    valid.push({ layout, prediction: predictStep(run, layout, cluster) });
  }
  valid.sort((a, b) => b.prediction.tgs - a.prediction.tgs);
  const ranked: PlannedLayout[] = [];
  const refused: PlannedLayout[] = [];
  for (const { layout } of valid) {
    if (ranked.length >= top) break;
    // Once enough refused examples are listed, skip the exact replay of layouts that cannot fit.
    if (refused.length >= top && gpuMemoryLowerBound(run.model, run.seqLen, layout, cluster.gpu) > cluster.gpu.hbmBytes) continue;
    const p = evaluateLayout(run, layout, cluster);
    if (p.fits) ranked.push(p);
    else if (refused.length < top) refused.push(p);
  }
  return { ranked, refused, rejected: { count: rejected, examples: [...reasons.keys()].slice(0, 3) }, candidates: candidates.length };
}
