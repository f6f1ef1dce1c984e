import { readFileSync } from 'node:fs';
import os from 'node:os';
import { GROUP_KINDS, type GroupKind } from '../comm/process-group.js';
import { MEMORY_CATEGORIES, type MemoryCategory } from '../tensor/arena.js';
import { KERNEL_CATEGORIES, type KernelCategory, type KernelTimes } from '../kernels/timed.js';

/**
 * Peak f32 FLOP/s of one rank's core, used as the MFU denominator (algorithms.md §7).
 * Unless configured, it is clock × 4 f32 lanes (128-bit WebAssembly SIMD) × 2 (a fused
 * multiply-add counts as two FLOPs) × 2 FMA units per core — the ceiling for our kernels on
 * x86-64 and arm64 cores of this class. The clock is read from /proc/cpuinfo ("cpu MHz", the
 * maximum over cores) or os.cpus(); returns the estimate and where it came from.
 */
export function peakFlopsPerRank(configuredGflops?: number): { flops: number; source: string } {
  if (configuredGflops !== undefined) return { flops: configuredGflops * 1e9, source: 'log.peakGflopsPerRank' };
  let mhz = 0;
  try {
    for (const m of readFileSync('/proc/cpuinfo', 'utf8').matchAll(/^cpu MHz\s*:\s*([\d.]+)/gm)) mhz = Math.max(mhz, Number(m[1]));
  } catch {
    // not Linux: fall back to what Node reports
  }
  if (mhz <= 0) mhz = Math.max(0, ...os.cpus().map((c) => c.speed));
  if (mhz <= 0) mhz = 2000;
  const flops = mhz * 1e6 * 4 * 2 * 2;
  return { flops, source: `${mhz.toFixed(0)} MHz × 4 lanes × 2 (FMA) × 2 units` };
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
  /** Model FLOPs utilisation (0–1): 3 × forward FLOPs per second / (ranks × peak). */
  mfu: number;
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
 * @param time the row's `time`, unix seconds (default: now)
 */
export function combineStep(reports: RankStepReport[], tokensPerStep: number, modelFlopsPerStep: number, peakPerRank: number, time = Date.now() / 1000): StepMetrics {
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
    mfu: modelFlopsPerStep / seconds / (world * peakPerRank),
    peakBytes: reports.map((r) => r.peakBytes),
    peakBytesByCategory: Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, reports.map((r) => r.peakBytesByCategory[c])])) as Record<MemoryCategory, number[]>,
    commWaitMs: reports.map((r) => r.commWaitMs),
    ...(first.kernelMs !== undefined ? { kernelMs: Object.fromEntries(KERNEL_CATEGORIES.map((c) => [c, reports.map((r) => r.kernelMs?.[c] ?? 0)])) as Record<KernelCategory, number[]> } : {}),
    attentionImbalance: imbalance(reports.map((r) => r.attentionPairs)),
    commBytesByKind: Object.fromEntries(GROUP_KINDS.map((k) => [k, reports.reduce((sum, r) => sum + r.commBytesByKind[k], 0)])) as Record<GroupKind, number>,
    ...(first.valLoss !== undefined ? { valLoss: first.valLoss, valPerplexity: Math.exp(first.valLoss) } : {}),
  };
}
