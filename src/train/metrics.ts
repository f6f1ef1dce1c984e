import { backendCeilingGflops, nativePeak } from '../kernels/peak.js';
import { GROUP_KINDS, type GroupKind } from '../comm/process-group.js';
import { MEMORY_CATEGORIES, type MemoryCategory } from '../tensor/arena.js';
import { KERNEL_CATEGORIES, type KernelCategory, type KernelTimes } from '../kernels/timed.js';

/** The MFU denominators of one rank and the first log line's account of them. */
export interface RankPeak {
  /** The core's native peak (kernels/peak.ts), or log.peakGflopsPerRank when set, FLOP/s. */
  flops: number;
  /** The same core's ceiling for the kernel backend that runs (backendCeilingGflops), FLOP/s. */
  ceilingFlops: number;
  /** E.g. "native peak 170.9 GFLOP/s per rank (AVX-512: 16 lanes × 2 FMA units × 2 × 2670 MHz measured); wasm ceiling 42.7". */
  description: string;
}

/**
 * The peak FLOP/s of one rank, the MFU denominator (algorithms.md §7; docs/model.md, "FLOPs
 * and MFU"): the core's native f32 FMA rate, the same for every kernel backend, so a backend
 * that cannot use the full vector width shows a lower MFU; `configuredGflops`
 * (log.peakGflopsPerRank) replaces it. The backend's own ceiling is the second figure.
 */
export function peakFlopsPerRank(backend: string, configuredGflops?: number): RankPeak {
  const peak = nativePeak(configuredGflops);
  const ceiling = backendCeilingGflops(backend, peak);
  const what = configuredGflops === undefined ? 'native peak' : 'peak';
  return {
    flops: peak.gflopsPerCore * 1e9,
    ceilingFlops: ceiling * 1e9,
    description: `${what} ${peak.gflopsPerCore.toFixed(1)} GFLOP/s per rank (${peak.source}); ${backend} ceiling ${ceiling.toFixed(1)}`,
  };
}

/** One training step as the launcher logs it (JSON-lines record). */
export interface StepMetrics {
  step: number;
  /**
   * When the launcher had every rank's report of the step: unix time in seconds, with
   * milliseconds as the fraction (Date.now() / 1000; TensorBoard's wall_time). Absent in the
   * rows of older metrics files, which readers (resume, plot) accept.
   */
  time: number;
  /**
   * Tokens of the global batch consumed so far, this step included: step × dp × batchSize ×
   * seqLen, so a resumed run counts the steps before its checkpoint. Absent in older rows.
   */
  tokens: number;
  /** Mean token loss over every valid label of the global batch (nats). */
  loss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** The loss or the gradient norm was not finite, so the step made no update (train.maxNonFiniteSteps). */
  skipped: boolean;
  /** Wall time of the step on the slowest rank, ms. */
  stepMs: number;
  /** Tokens of the global batch per second. */
  tokensPerSec: number;
  /** Tokens per rank per second. */
  tgs: number;
  /**
   * Model FLOPs utilisation (0–1): model FLOPs of the step (3 × forward, causal convention,
   * docs/model.md) / (step seconds × ranks × the core's native peak, or log.peakGflopsPerRank).
   */
  mfu: number;
  /** The same model FLOPs over the kernel backend's own ceiling (peakFlopsPerRank's ceilingFlops) instead of the native peak (0–1). */
  mfuBackendCeiling: number;
  /** Peak arena bytes of each rank during the step. */
  peakBytes: number[];
  /**
   * Per category (params, grads, optim, activations, saved, comm, scratch), each rank's peak
   * bytes of that category during the step. Each category peaks at its own moment, so these
   * do not sum to peakBytes (docs/memory.md).
   */
  peakBytesByCategory: Record<MemoryCategory, number[]>;
  /** Milliseconds each rank spent blocked on communication during the step. */
  commWaitMs: number[];
  /**
   * With log.kernelTimes: per category (attention, gemm, elementwise; kernels/timed.ts), the
   * milliseconds each rank spent inside kernels during the step. The rest of a rank's step,
   * stepMs − these − commWaitMs, is time outside kernels (JS loops, copies, allocation).
   */
  kernelMs?: Record<KernelCategory, number[]>;
  /**
   * Attention work imbalance: max / mean over the ranks of the visible (query, key) pairs each
   * rank's ring position computed in the step (1 = balanced; docs/attention.md, Balance).
   */
  attentionImbalance: number;
  /** Payload bytes sent during the step by all ranks together, per group kind (docs/comm.md, Counters). */
  commBytesByKind: Record<GroupKind, number>;
  /**
   * Validation loss after this step's update (train.evalEvery; absent on other steps): Σ token
   * losses / Σ valid labels over the held-out split's first train.evalSequences sequences (nats).
   */
  valLoss?: number;
  /** exp(valLoss). */
  valPerplexity?: number;
}

/** What each rank reports after a step. */
export interface RankStepReport {
  kind: 'step';
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  skipped: boolean;
  stepMs: number;
  peakBytes: number;
  peakBytesByCategory: Record<MemoryCategory, number>;
  commWaitMs: number;
  /** With log.kernelTimes: ms this rank spent inside kernels during the step, per category. */
  kernelMs?: KernelTimes;
  /** Visible (query, key) pairs per head of this rank's ring position over its sequences of the step. */
  attentionPairs: number;
  /** Payload bytes this rank sent during the step, per group kind. */
  commBytesByKind: Record<GroupKind, number>;
  /** Validation loss after the step's update, on the steps that evaluate (identical on every rank). */
  valLoss?: number;
}

/** max / mean of non-negative values (1 when they are all 0). */
function imbalance(values: number[]): number {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return mean === 0 ? 1 : Math.max(...values) / mean;
}

/**
 * Combine the per-rank reports of one step into the logged metrics.
 * @param tokensPerStep tokens of the global batch (dp × batchSize × seqLen)
 * @param modelFlopsPerStep 3 × forward FLOPs of the global batch (algorithms.md §7)
 * @param peakPerRank one rank's native peak and backend ceiling, FLOP/s (peakFlopsPerRank)
 * @param time the row's `time`, unix seconds (default: now)
 */
export function combineStep(reports: RankStepReport[], tokensPerStep: number, modelFlopsPerStep: number, peakPerRank: Pick<RankPeak, 'flops' | 'ceilingFlops'>, time = Date.now() / 1000): StepMetrics {
  const first = reports[0]!;
  const stepMs = Math.max(...reports.map((r) => r.stepMs));
  const seconds = stepMs / 1000;
  const world = reports.length;
  return {
    step: first.step,
    time,
    tokens: first.step * tokensPerStep,
    loss: first.loss,
    lr: first.lr,
    gradNorm: first.gradNorm,
    skipped: first.skipped,
    stepMs,
    tokensPerSec: tokensPerStep / seconds,
    tgs: tokensPerStep / world / seconds,
    mfu: modelFlopsPerStep / seconds / (world * peakPerRank.flops),
    mfuBackendCeiling: modelFlopsPerStep / seconds / (world * peakPerRank.ceilingFlops),
    peakBytes: reports.map((r) => r.peakBytes),
    peakBytesByCategory: Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, reports.map((r) => r.peakBytesByCategory[c])])) as Record<MemoryCategory, number[]>,
    commWaitMs: reports.map((r) => r.commWaitMs),
    ...(first.kernelMs !== undefined ? { kernelMs: Object.fromEntries(KERNEL_CATEGORIES.map((c) => [c, reports.map((r) => r.kernelMs?.[c] ?? 0)])) as Record<KernelCategory, number[]> } : {}),
    attentionImbalance: imbalance(reports.map((r) => r.attentionPairs)),
    commBytesByKind: Object.fromEntries(GROUP_KINDS.map((k) => [k, reports.reduce((sum, r) => sum + r.commBytesByKind[k], 0)])) as Record<GroupKind, number>,
    ...(first.valLoss !== undefined ? { valLoss: first.valLoss, valPerplexity: Math.exp(first.valLoss) } : {}),
  };
}
