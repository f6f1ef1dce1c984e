import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { KERNEL_CATEGORIES, type KernelCategory } from '../kernels/timed.js';
import { backendStatus, type BackendName } from '../kernels/registry.js';
import { predictPeakBytes } from '../memory/predict.js';
import { headDim } from '../model/config.js';
import { modelFlops } from '../model/flops.js';
import { machineInfo, median, table, type MachineInfo } from './bench-common.js';
import { runTorchPeer, torchAvailable } from './bench-peer.js';
import { corePeaks, type CorePeak } from './bench-kernels.js';
import { loadConfig, type Config } from './config.js';
import type { StepMetrics } from './metrics.js';
import { train } from './train.js';

/**
 * `loongtrain bench train` (issue 11, docs/bench.md): the step time of one model trained on 2
 * ranks, broken down into time inside the attention, GEMM and elementwise kernels, time blocked
 * on communication, and the rest (time outside kernels: JS loops, copies, allocation), with the
 * same model in PyTorch as a peer, alternating in one run.
 */

/** The model of the bench (issue 11): LLaMA-style, head dim 32, GQA 8/2, tied head, byte tokenizer. */
export const TRAIN_BENCH_MODEL = { dim: 256, layers: 4, heads: 8, kvHeads: 2, ffnDim: 688 } as const;

/** The layout: Ulysses over both ranks (hp 2, cp 1), so each rank holds half of every sequence and half the heads in attention. */
export const TRAIN_BENCH_LAYOUT = { dp: 1, hp: 2, cp: 1, innerRingSize: 1, placement: 'head-first' } as const;

/** A PyTorch peer of the model (src/train/bench-peer.ts, over scripts/torch_peer.py). */
export interface TorchPeer {
  torchAvailable(): { ok: boolean; reason?: string };
  runTorchPeer(opts: {
    model: { dim: number; layers: number; heads: number; kvHeads: number; ffnDim: number; vocab: number; ropeTheta: number; normEps: number };
    attention: TorchAttention;
    seqLen: number;
    steps: number;
    threads: number;
    timeoutMs: number;
  }): Promise<{ stepMs: number[]; torch: string; error?: string }>;
}

/** The peer of scripts/torch_peer.py (bench-peer.ts), as the CLI runs it. */
export const TORCH_PEER: TorchPeer = { torchAvailable, runTorchPeer };

export type TorchAttention = 'chunked' | 'naive';
const TORCH_FORMS: readonly TorchAttention[] = ['chunked', 'naive'];

export interface TrainBenchOptions {
  /** Sequence lengths to train at, each a multiple of 2·hp·cp = 4. */
  seqLens: number[];
  /** Steps per round and runner; the first of each is never measured (wasm tier-up, first allocations). */
  steps: number;
  /** Rounds per seqLen: ours → torch chunked → torch naive, repeated, so drift hits all alike. */
  rounds: number;
  /** Kernel backend; `blas` falls back to `wasm` (with a note) where no CBLAS is installed. */
  kernels: BackendName;
  /** The PyTorch peer, or null to leave it out. */
  peer: TorchPeer | null;
  /** Threads of the torch peer (as many as our ranks, one per core). */
  torchThreads: number;
  /** Wall limit of one torch run, ms. */
  torchTimeoutMs: number;
}

export const DEFAULT_TRAIN_BENCH: Omit<TrainBenchOptions, 'peer'> = { seqLens: [4096, 8192], steps: 3, rounds: 2, kernels: 'blas', torchThreads: 2, torchTimeoutMs: 600_000 };

/** One part of the step: median over the measured steps of its ms (mean over ranks), and its share of the step. */
export interface BreakdownPart {
  ms: number;
  pctStep: number;
}

/** A throughput as FLOP/s per core and as a share of one core's native peak. */
export interface Rate {
  gflops: number;
  pctNativePeak: number;
}

export interface TorchResult {
  attention: TorchAttention;
  /** Measured steps over all rounds (the first step of each run left out). */
  steps: number;
  medianStepMs: number | null;
  /** Torch median step ms / ours: above 1, ours is faster. */
  ratio: number | null;
  torch?: string;
  /** Why a run gave no steps (timeout, out of memory, …). */
  error?: string;
}

export interface TrainBenchResult {
  seqLen: number;
  /** Measured steps over all rounds. */
  steps: number;
  medianStepMs: number;
  tokensPerSec: number;
  /** MFU as training logs it (train/metrics.ts: 3 × forward FLOPs / (step × ranks × the MFU peak)). */
  mfu: number;
  /** Model FLOPs (3 × forward) per second per rank. */
  model: Rate;
  /** The attention and GEMM kernels' rates: their share of the model FLOPs over their kernel time, per core. */
  attentionKernels: Rate;
  gemmKernels: Rate;
  breakdown: Record<KernelCategory | 'outsideKernels' | 'communication', BreakdownPart>;
  torch: TorchResult[];
  ratioVsTorchChunked: number | null;
  ratioVsTorchNaive: number | null;
}

export interface TrainBenchReport {
  suite: 'train';
  machine: MachineInfo;
  model: typeof TRAIN_BENCH_MODEL & { vocabSize: number; tiedEmbeddings: true };
  layout: { ranks: number; hp: number; cp: number; name: string };
  /** The backend that ran, and why it is not the one asked for. */
  kernels: BackendName;
  kernelsNote?: string;
  /** One core's native FMA peak (bench-kernels.ts corePeaks): the denominator of every pctNativePeak. */
  nativePeak: CorePeak;
  steps: number;
  rounds: number;
  /** Whether the torch peer ran, and why not. */
  torch: { ok: boolean; threads: number; reason?: string };
  results: TrainBenchResult[];
}

function checkOptions(o: TrainBenchOptions): void {
  const unit = 2 * TRAIN_BENCH_LAYOUT.hp * TRAIN_BENCH_LAYOUT.cp;
  if (o.seqLens.length === 0) throw new ConfigError('bench train: seqLens is empty: give at least one sequence length');
  for (const s of o.seqLens) {
    if (!Number.isInteger(s) || s < unit || s % unit !== 0) throw new ConfigError(`bench train: seqLen ${String(s)} is invalid: it must be a positive multiple of ${unit} (2 · hp · cp)`);
  }
  const ints: Array<[string, number, number]> = [['steps', o.steps, 2], ['rounds', o.rounds, 1], ['torchThreads', o.torchThreads, 1], ['torchTimeoutMs', o.torchTimeoutMs, 1]];
  for (const [field, value, min] of ints) {
    if (!Number.isInteger(value) || value < min) throw new ConfigError(`bench train: ${field} = ${String(value)} is invalid: it must be an integer ≥ ${min}`);
  }
}

/** The config of one of our runs: the bench model at `seqLen`, timed kernels, no checkpoints. */
function runConfig(base: Config, seqLen: number, steps: number, kernels: BackendName, dir: string): Config {
  const { hp, cp, innerRingSize } = TRAIN_BENCH_LAYOUT;
  const predicted = predictPeakBytes(base.model, seqLen, { hp, cp, innerRingSize }, { policy: 'none', fraction: 1 }).peakBytes;
  // 25% above the prediction: the kernels' per-call scratch is not in it (bench-memory.ts).
  const arenaMiB = Math.min(4096, Math.max(base.train.arenaMiB, Math.ceil((1.25 * predicted) / 2 ** 20)));
  return {
    ...base,
    train: { ...base.train, steps, seqLen, batchSize: 1, kernels, arenaMiB },
    optim: { ...base.optim, warmupSteps: Math.min(base.optim.warmupSteps, steps) },
    save: { ...base.save, dir: join(dir, 'checkpoints'), every: 0 },
    log: { ...base.log, dir, progress: 'none', kernelTimes: true },
  };
}

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * Train the bench model (TRAIN_BENCH_MODEL, layout TRAIN_BENCH_LAYOUT) at each seqLen for
 * `rounds` rounds of `steps` steps, each round followed by the torch peer's chunked and naive
 * forms when a peer is given and available; the first step of every run is left out. Per
 * seqLen: medians of step ms, tokens/s and MFU, the breakdown (per step, each category's ms
 * averaged over the ranks; outside kernels = step ms − kernel ms − comm wait ms of each rank),
 * rates as % of the native peak, and torch median / ours.
 * @throws ConfigError for an invalid option or a backend that cannot run here (blas falls back to wasm).
 * @throws RankFailedError when a rank fails.
 */
export async function benchTrain(opts: TrainBenchOptions): Promise<TrainBenchReport> {
  checkOptions(opts);
  let kernels = opts.kernels;
  let kernelsNote: string | undefined;
  const status = backendStatus(kernels);
  if (!status.ok) {
    if (kernels !== 'blas') throw new ConfigError(`bench train: kernels "${kernels}" cannot run here: ${status.reason ?? 'unavailable'}`);
    kernelsNote = `blas cannot run here (${status.reason ?? 'unavailable'}): ran wasm`;
    kernels = 'wasm';
  }
  const m = TRAIN_BENCH_MODEL;
  const { hp, cp } = TRAIN_BENCH_LAYOUT;
  const base = loadConfig(undefined, [
    ...Object.entries(m).map(([k, v]) => `model.${k}=${v}`),
    'model.tiedEmbeddings=true',
    `parallel.hp=${hp}`, `parallel.cp=${cp}`, 'parallel.placement="head-first"',
  ]);
  const ranks = hp * cp;
  const peak = corePeaks(base.log.peakGflopsPerRank).native;
  const torchStatus = opts.peer === null ? { ok: false, reason: 'no torch peer in this build' } : opts.peer.torchAvailable();
  const peer = torchStatus.ok ? opts.peer : null;
  const scratch = mkdtempSync(join(os.tmpdir(), 'loongtrain-bench-train-'));
  const results: TrainBenchResult[] = [];
  try {
    for (const seqLen of opts.seqLens) {
      const ours: StepMetrics[] = [];
      const torch = new Map<TorchAttention, { stepMs: number[]; torch?: string; error?: string }>(TORCH_FORMS.map((f) => [f, { stepMs: [] }]));
      for (let round = 0; round < opts.rounds; round++) {
        const dir = join(scratch, `s${seqLen}-r${round}`);
        const run = await train(runConfig(base, seqLen, opts.steps, kernels, dir));
        ours.push(...run.steps.slice(1));
        if (peer === null) continue;
        for (const attention of TORCH_FORMS) {
          const t = torch.get(attention)!;
          // A form that failed once (out of memory, timeout) fails again: skip its later rounds.
          if (t.error !== undefined) continue;
          const r = await peer.runTorchPeer({
            model: { dim: m.dim, layers: m.layers, heads: m.heads, kvHeads: m.kvHeads, ffnDim: m.ffnDim, vocab: base.model.vocabSize, ropeTheta: base.model.ropeTheta, normEps: base.model.normEps },
            attention, seqLen, steps: opts.steps, threads: opts.torchThreads, timeoutMs: opts.torchTimeoutMs,
          });
          t.torch = r.torch;
          if (r.error !== undefined) t.error = r.error;
          t.stepMs.push(...r.stepMs.slice(1));
        }
      }
      results.push(summarise(seqLen, ours, ranks, base, peak, peer === null ? [] : [...torch].map(([attention, t]) => ({ attention, ...t }))));
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return {
    suite: 'train',
    machine: machineInfo(),
    model: { ...m, vocabSize: base.model.vocabSize, tiedEmbeddings: true },
    layout: { ranks, hp, cp, name: `ulysses hp ${hp} × cp ${cp}` },
    kernels,
    ...(kernelsNote !== undefined ? { kernelsNote } : {}),
    nativePeak: peak,
    steps: opts.steps,
    rounds: opts.rounds,
    torch: { ok: torchStatus.ok, threads: opts.torchThreads, ...(torchStatus.reason !== undefined && !torchStatus.ok ? { reason: torchStatus.reason } : {}) },
    results,
  };
}

/** The per-seqLen row from our measured steps and the torch runs. */
export function summarise(
  seqLen: number, steps: readonly StepMetrics[], ranks: number, cfg: Pick<Config, 'model'>, peak: CorePeak,
  torchRuns: ReadonlyArray<{ attention: TorchAttention; stepMs: number[]; torch?: string; error?: string }>,
): TrainBenchResult {
  const stepMs = median(steps.map((s) => s.stepMs));
  // Model FLOPs (3 × forward, causal) of the step, split into the attention term and the rest (GEMMs).
  const total = 3 * modelFlops(cfg.model, seqLen, true);
  const attention = 3 * cfg.model.layers * 4 * headDim(cfg.model) * cfg.model.heads * ((seqLen * (seqLen + 1)) / 2);
  const gemm = total - attention;
  const rate = (flops: number, msPerCore: number): Rate => {
    const gflops = flops / ranks / (msPerCore / 1e3) / 1e9;
    return { gflops, pctNativePeak: (100 * gflops) / peak.gflops };
  };
  const perStep = (f: (s: StepMetrics, rank: number) => number): number => median(steps.map((s) => mean(s.commWaitMs.map((_, r) => f(s, r)))));
  const kernel = (s: StepMetrics, c: KernelCategory, r: number): number => s.kernelMs?.[c][r] ?? 0;
  const parts = {
    attention: perStep((s, r) => kernel(s, 'attention', r)),
    gemm: perStep((s, r) => kernel(s, 'gemm', r)),
    elementwise: perStep((s, r) => kernel(s, 'elementwise', r)),
    outsideKernels: perStep((s, r) => s.stepMs - KERNEL_CATEGORIES.reduce((sum, c) => sum + kernel(s, c, r), 0) - s.commWaitMs[r]!),
    communication: perStep((s, r) => s.commWaitMs[r]!),
  };
  const breakdown = Object.fromEntries(Object.entries(parts).map(([k, ms]) => [k, { ms, pctStep: (100 * ms) / stepMs }])) as TrainBenchResult['breakdown'];
  const torch: TorchResult[] = torchRuns.map((t) => {
    const med = t.stepMs.length > 0 ? median(t.stepMs) : null;
    return {
      attention: t.attention,
      steps: t.stepMs.length,
      medianStepMs: med,
      ratio: med === null ? null : med / stepMs,
      ...(t.torch !== undefined ? { torch: t.torch } : {}),
      ...(t.error !== undefined ? { error: t.error } : {}),
    };
  });
  const ratioOf = (a: TorchAttention): number | null => torch.find((t) => t.attention === a)?.ratio ?? null;
  return {
    seqLen,
    steps: steps.length,
    medianStepMs: stepMs,
    tokensPerSec: median(steps.map((s) => s.tokensPerSec)),
    mfu: median(steps.map((s) => s.mfu)),
    model: rate(total, stepMs),
    attentionKernels: rate(attention, parts.attention),
    gemmKernels: rate(gemm, parts.gemm),
    breakdown,
    torch,
    ratioVsTorchChunked: ratioOf('chunked'),
    ratioVsTorchNaive: ratioOf('naive'),
  };
}

const BREAKDOWN_NAMES: Array<[keyof TrainBenchResult['breakdown'], string]> = [
  ['attention', 'attention'], ['gemm', 'GEMM'], ['elementwise', 'elementwise'], ['outsideKernels', 'outside kernels'], ['communication', 'communication'],
];

/** The report as fixed-width tables, for people. */
export function formatTrainTable(r: TrainBenchReport): string {
  const fmt = (x: number | null, digits: number): string => (x === null ? '—' : x.toFixed(digits));
  const pctRate = (x: Rate): string => `${x.gflops.toFixed(1)} (${x.pctNativePeak.toFixed(1)}%)`;
  const m = r.machine;
  const lines = [
    `${m.cpu}, ${m.cores} cores, node ${m.node}; model dim ${r.model.dim}, ${r.model.layers} layers, ${r.model.heads}/${r.model.kvHeads} heads, ffn ${r.model.ffnDim}, vocab ${r.model.vocabSize}, tied head; ${r.layout.ranks} ranks (${r.layout.name}); kernels ${r.kernels}${r.kernelsNote !== undefined ? ` (${r.kernelsNote})` : ''}; ${r.rounds} rounds × ${r.steps} steps, the first of each run left out`,
    `native peak per core ${r.nativePeak.gflops.toFixed(1)} GFLOP/s (${r.nativePeak.source}); torch peer: ${r.torch.ok ? `${r.torch.threads} threads` : `not run: ${r.torch.reason ?? 'unavailable'}`}`,
    ...table(
      ['seqLen', 'steps', 'step ms', 'tok/s', 'MFU %', 'model GFLOP/s/core (% native)', 'attention kernels', 'GEMM kernels', 'vs torch chunked', 'vs torch naive'],
      r.results.map((x) => [String(x.seqLen), String(x.steps), x.medianStepMs.toFixed(0), x.tokensPerSec.toFixed(0), (100 * x.mfu).toFixed(1), pctRate(x.model), pctRate(x.attentionKernels), pctRate(x.gemmKernels), fmt(x.ratioVsTorchChunked, 2), fmt(x.ratioVsTorchNaive, 2)]),
    ),
    '',
    ...table(
      ['seqLen', ...BREAKDOWN_NAMES.map(([, n]) => `${n} ms (%)`), ''],
      r.results.map((x) => [String(x.seqLen), ...BREAKDOWN_NAMES.map(([k]) => `${x.breakdown[k].ms.toFixed(0)} (${x.breakdown[k].pctStep.toFixed(1)}%)`), '']),
    ),
  ];
  const torchRows = r.results.flatMap((x) => x.torch.map((t) => [String(x.seqLen), t.attention, String(t.steps), fmt(t.medianStepMs, 0), fmt(t.ratio, 2), t.error ?? t.torch ?? '']));
  if (torchRows.length > 0) lines.push('', ...table(['seqLen', 'torch', 'steps', 'step ms', 'torch / ours', 'note'], torchRows));
  return lines.join('\n');
}
