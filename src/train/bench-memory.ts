import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { resolveKernels } from '../kernels/registry.js';
import { predictPeakBytes, type MemoryLayout, type MemoryZero } from '../memory/predict.js';
import { CHECKPOINT_POLICIES, type CheckpointPolicy } from '../model/checkpoint.js';
import type { ZeroStage } from '../optim/zero.js';
import { MAX_ARENA_BYTES, MEMORY_CATEGORIES, type MemoryCategory } from '../tensor/arena.js';
import { machineInfo, median, table, type MachineInfo } from './bench-common.js';
import type { Config } from './config.js';
import { train } from './train.js';

/**
 * The memory benchmark (`loongtrain bench memory`, docs/bench.md): per-rank peak arena bytes
 * and step time of the trainer for sp ∈ {1, 2, 4, 8} × each checkpoint policy × ZeRO stage 0
 * and 3 (shard group: the world) at one sequence length, against the prediction of
 * src/memory/predict.ts (docs/memory.md), and the longest sequence the model trains at with
 * sp = 1 and sp = 8 within this machine's memory.
 */

/** The sequence-parallel layouts measured: hp = 2 wherever sp allows (kvHeads = 2 in the demo model), the rest of sp as one plain ring. */
export const MEMORY_LAYOUTS: readonly MemoryLayout[] = [
  { hp: 1, cp: 1, innerRingSize: 1 },
  { hp: 2, cp: 1, innerRingSize: 1 },
  { hp: 2, cp: 2, innerRingSize: 2 },
  { hp: 2, cp: 4, innerRingSize: 4 },
];

/** The ZeRO stages measured, each sharded over the world (= sp ranks: dp = 1): replicated model states and fully sharded ones. */
export const MEMORY_ZERO_STAGES: readonly ZeroStage[] = [0, 3];

export interface MemoryBenchOptions {
  /** Base config: model, data, kernels (parallel, checkpoint and train.seqLen are set per run). */
  config: Config;
  seqLen: number;
  /** Steps per run; the first `warmup` are left out of the step-time median. */
  steps: number;
  warmup: number;
  /** Run one step at the longest predicted sequence when its estimated time is at most this. */
  verifyLimitMs: number;
}

export const DEFAULT_MEMORY_BENCH = { seqLen: 1024, steps: 2, warmup: 1, verifyLimitMs: 120_000 } as const;

export interface MemoryRunResult {
  sp: number;
  hp: number;
  cp: number;
  policy: CheckpointPolicy;
  /** Hybrid ZeRO stage of the run (0: model states replicated). */
  zeroStage: ZeroStage;
  /** Ranks the model states are sharded over (the world for stages ≥ 1; 1 for stage 0). */
  shards: number;
  stepMs: number;
  /** Highest peak arena bytes over ranks and steps. */
  measuredPeakBytes: number;
  predictedPeakBytes: number;
  /** predicted / measured. */
  ratio: number;
  /** Each category's own peak (highest over ranks and steps). */
  measuredPeakByCategory: Record<MemoryCategory, number>;
  predictedPeakByCategory: Record<MemoryCategory, number>;
  /** Where the predicted peak happens. */
  peakPhase: string;
}

export interface LongestSequence {
  sp: number;
  hp: number;
  cp: number;
  policy: CheckpointPolicy;
  /** Arena bytes one rank may use: min(4 GiB, (machine memory − reserve) / ranks); ≤ 0 when there is none. */
  budgetBytesPerRank: number;
  /** Longest S (a multiple of 2·sp) whose predicted peak fits the budget; 0 when none does. */
  seqLen: number;
  /** Predicted peak at seqLen (when seqLen is 0: at the shortest sequence, 2·sp, which did not fit). */
  predictedPeakBytes: number;
  /** Step time at seqLen estimated from the measured zeroStage-0 run as stepMs · (S / S₀)² (attention dominates); 0 when seqLen is 0. */
  estimatedStepMs: number;
  /** A step actually run at seqLen (arena: the prediction + 25% for kernel scratch), or why not: over the time limit, nothing fits, or the run failed. */
  verified: { ran: true; measuredPeakBytes: number; stepMs: number } | { ran: false; reason: string };
}

export interface MemoryBenchReport {
  suite: 'memory';
  machine: MachineInfo;
  model: Config['model'];
  seqLen: number;
  /** The kernel backend the runs used (train.kernels resolved; wasm and blas take per-call scratch from the arena). */
  kernels: string;
  results: MemoryRunResult[];
  /** Memory kept back from the rank arenas for Node, the workers' heaps and message copies. */
  reserveBytes: { base: number; perRank: number };
  longest: LongestSequence[];
}

const MiB = 2 ** 20;
const RESERVE = { base: 2 * 2 ** 30, perRank: 256 * MiB };

/** Arena bytes one rank may use on this machine with `ranks` ranks; ≤ 0 when the reserve takes all the memory. */
export function arenaBudgetPerRank(ranks: number, totalBytes = os.totalmem()): number {
  const share = Math.floor((totalBytes - RESERVE.base - RESERVE.perRank * ranks) / ranks / MiB) * MiB;
  return Math.min(MAX_ARENA_BYTES, share);
}

/**
 * Arena bytes for a run whose predicted peak is `predictedBytes`: 25% above it (the wasm and
 * blas kernels take per-call scratch that the prediction leaves out), at least train.arenaMiB,
 * at most 4 GiB.
 */
function arenaWithHeadroom(cfg: Config, predictedBytes: number): number {
  return Math.min(MAX_ARENA_BYTES, Math.max(cfg.train.arenaMiB * MiB, 1.25 * predictedBytes));
}

/**
 * Longest S (a multiple of 2·hp·cp) whose predicted peak fits `budget` bytes per rank; 0 when
 * not even the shortest does. The prediction grows with S, so a doubling then bisection finds it.
 */
export function longestSeqLen(model: Config['model'], layout: MemoryLayout, policy: CheckpointPolicy, budget: number): number {
  const unit = 2 * layout.hp * layout.cp;
  const fits = (k: number): boolean => predictPeakBytes(model, k * unit, layout, { policy, fraction: 1 }).peakBytes <= budget;
  if (!fits(1)) return 0;
  let lo = 1;
  let hi = 2;
  while (fits(hi)) [lo, hi] = [hi, hi * 2];
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo * unit;
}

/** Train `steps` steps of `cfg` at `layout`, `policy`, ZeRO stage (over the world) and `seqLen`; returns the step metrics. */
async function runOnce(cfg: Config, layout: MemoryLayout, policy: CheckpointPolicy, zeroStage: ZeroStage, seqLen: number, steps: number, arenaBytes: number, scratch: string) {
  const name = `sp${layout.hp * layout.cp}-${policy}-zero${zeroStage}-${seqLen}`;
  const run = await train({
    ...cfg,
    parallel: { dp: 1, hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize, placement: 'head-first' },
    train: { ...cfg.train, steps, seqLen, batchSize: 1, arenaMiB: Math.ceil(arenaBytes / MiB) },
    optim: { ...cfg.optim, warmupSteps: Math.min(cfg.optim.warmupSteps, steps), zeroStage, zeroShardGroup: 'world' },
    checkpoint: { policy, fraction: 1 },
    save: { ...cfg.save, dir: join(scratch, name, 'checkpoints'), every: 0 },
    log: { ...cfg.log, dir: join(scratch, name), progress: 'none' },
  });
  return run.steps;
}

/**
 * Measure every layout × ZeRO stage × policy at `seqLen`, compare with the prediction, then find the longest
 * sequence for sp = 1 and sp = 8 and run one step there when its estimated time allows.
 * @throws ConfigError when seqLen does not split over sp = 8 (a multiple of 16) or a layout
 * does not fit the model.
 */
export async function benchMemory(opts: MemoryBenchOptions): Promise<MemoryBenchReport> {
  const { config: cfg, seqLen, steps, warmup } = opts;
  const scratch = mkdtempSync(join(os.tmpdir(), 'loongtrain-bench-memory-'));
  const results: MemoryRunResult[] = [];
  const longest: LongestSequence[] = [];
  try {
    for (const layout of MEMORY_LAYOUTS) {
      const sp = layout.hp * layout.cp;
      for (const zeroStage of MEMORY_ZERO_STAGES) {
        const zero: MemoryZero = { stage: zeroStage, shards: zeroStage === 0 ? 1 : sp };
        for (const policy of CHECKPOINT_POLICIES) {
          const predicted = predictPeakBytes(cfg.model, seqLen, layout, { policy, fraction: 1 }, zero);
          const measured = (await runOnce(cfg, layout, policy, zeroStage, seqLen, steps, arenaWithHeadroom(cfg, predicted.peakBytes), scratch)).slice(warmup);
          const peak = Math.max(...measured.flatMap((s) => s.peakBytes));
          const byCategory = Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, Math.max(...measured.flatMap((s) => s.peakBytesByCategory[c]))])) as Record<MemoryCategory, number>;
          results.push({
            sp,
            hp: layout.hp,
            cp: layout.cp,
            policy,
            zeroStage,
            shards: zero.shards,
            stepMs: median(measured.map((s) => s.stepMs)),
            measuredPeakBytes: peak,
            predictedPeakBytes: predicted.peakBytes,
            ratio: predicted.peakBytes / peak,
            measuredPeakByCategory: byCategory,
            predictedPeakByCategory: predicted.peakByCategory,
            peakPhase: predicted.phase,
          });
        }
      }
    }
    for (const layout of [MEMORY_LAYOUTS[0]!, MEMORY_LAYOUTS[MEMORY_LAYOUTS.length - 1]!]) {
      const sp = layout.hp * layout.cp;
      const budget = arenaBudgetPerRank(sp);
      for (const policy of CHECKPOINT_POLICIES) {
        const row = { sp, hp: layout.hp, cp: layout.cp, policy, budgetBytesPerRank: budget };
        const s = longestSeqLen(cfg.model, layout, policy, budget);
        if (s === 0) {
          // Not even the shortest sequence fits: report what it would need instead of a length.
          const shortest = predictPeakBytes(cfg.model, 2 * sp, layout, { policy, fraction: 1 }).peakBytes;
          const reason =
            budget <= 0
              ? `no budget: ${formatBytes(os.totalmem())} of machine memory leave nothing per rank for ${sp} ranks after the reserve`
              : `no sequence fits: the shortest (S = ${2 * sp}) needs ${formatBytes(shortest)} per rank, the budget is ${formatBytes(budget)}`;
          longest.push({ ...row, seqLen: 0, predictedPeakBytes: shortest, estimatedStepMs: 0, verified: { ran: false, reason } });
          continue;
        }
        const predicted = predictPeakBytes(cfg.model, s, layout, { policy, fraction: 1 }).peakBytes;
        const base = results.find((r) => r.sp === sp && r.policy === policy && r.zeroStage === 0)!;
        const estimatedStepMs = base.stepMs * (s / seqLen) ** 2;
        let verified: LongestSequence['verified'];
        if (estimatedStepMs > opts.verifyLimitMs) {
          verified = { ran: false, reason: `not run: one step is estimated at ${formatDuration(estimatedStepMs)} (limit ${formatDuration(opts.verifyLimitMs)})` };
        } else {
          try {
            // The prediction leaves out the wasm and blas kernels' per-call scratch: the same headroom as the runs above.
            const [step] = await runOnce(cfg, layout, policy, 0, s, 1, arenaWithHeadroom(cfg, predicted), scratch);
            verified = { ran: true, measuredPeakBytes: Math.max(...step!.peakBytes), stepMs: step!.stepMs };
          } catch (e) {
            verified = { ran: false, reason: `failed: ${e instanceof Error ? e.message : String(e)}` };
          }
        }
        longest.push({ ...row, seqLen: s, predictedPeakBytes: predicted, estimatedStepMs, verified });
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return { suite: 'memory', machine: machineInfo(), model: cfg.model, seqLen, kernels: resolveKernels(cfg.train.kernels).name, results, reserveBytes: RESERVE, longest };
}

function formatBytes(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / MiB).toFixed(1)} MiB`;
}

function formatDuration(ms: number): string {
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  if (s < 2 * 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(0)} days`;
}

/** Fixed-width tables of a report, for people. */
export function formatMemoryTable(report: MemoryBenchReport): string {
  const mib = (b: number): string => (b / MiB).toFixed(2);
  const runs = table(
    ['sp', 'hp×cp', 'zero', 'policy', 'step ms', 'peak MiB/rank', 'predicted', 'ratio', 'saved', 'activations', 'comm', 'predicted peak at'],
    report.results.map((r) => [
      String(r.sp), `${r.hp}×${r.cp}`, r.zeroStage === 0 ? '0' : `${r.zeroStage}/${r.shards}`, r.policy, r.stepMs.toFixed(0), mib(r.measuredPeakBytes), mib(r.predictedPeakBytes), r.ratio.toFixed(3),
      mib(r.measuredPeakByCategory.saved), mib(r.measuredPeakByCategory.activations), mib(r.measuredPeakByCategory.comm), r.peakPhase,
    ]),
  );
  const longest = table(
    ['sp', 'hp×cp', 'policy', 'budget MiB/rank', 'longest S', 'tokens/rank', 'predicted MiB', 'verified'],
    report.longest.map((l) => [
      String(l.sp), `${l.hp}×${l.cp}`, l.policy, mib(l.budgetBytesPerRank), String(l.seqLen), String(l.seqLen / l.sp), mib(l.predictedPeakBytes),
      l.verified.ran ? `ran: peak ${mib(l.verified.measuredPeakBytes)} MiB, ${formatDuration(l.verified.stepMs)}` : l.verified.reason,
    ]),
  );
  const m = report.machine;
  return [
    `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, node ${m.node}; seqLen ${report.seqLen}, kernels ${report.kernels}; zero: stage/shards (over the world); peak and category columns: highest over ranks (MiB)`,
    ...runs,
    '',
    `longest sequence (zeroStage 0) per rank budget = min(4 GiB arena limit, (machine memory − ${report.reserveBytes.base / 2 ** 30} GiB − ${report.reserveBytes.perRank / MiB} MiB per rank) / ranks):`,
    ...longest,
  ].join('\n');
}
