import os from 'node:os';
import type { AttentionOptions, Kernels, MatmulOptions } from '../kernels/kernels.js';
import { backendCeilingGflops, nativePeak } from '../kernels/peak.js';
import { BACKEND_NAMES, backendStatus, createKernels, type BackendName } from '../kernels/registry.js';
import { Arena } from '../tensor/arena.js';
import { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import { benchLayouts } from './bench.js';
import { machineInfo, median, table, type MachineInfo } from './bench-common.js';
import type { Config } from './config.js';

/*
 * `loongtrain bench kernels` (docs/kernels-blas.md): GEMM and attention-block FLOP/s of every
 * available backend on one thread, and demo training steps per backend, against the native
 * peak of one core (kernels/peak.ts).
 */

/** GEMM shapes of the issue, as M × N × K (C [M, N] = A [M, K] · B [K, N]). */
export const GEMM_SHAPES: ReadonlyArray<readonly [number, number, number]> = [[1024, 1024, 1024], [4096, 64, 4096], [4096, 4096, 64]];
/** The reference backend's plain loops would take seconds per run at the shapes above: it runs this one. */
export const REFERENCE_GEMM_SHAPE = [256, 256, 256] as const;
export const ATTENTION_SEQ_LENS = [4096, 8192, 16384] as const;
export const ATTENTION_HEAD_DIMS = [32, 64, 128] as const;
/** The reference attention at S = 4096 takes tens of seconds per run: it runs this length. */
export const REFERENCE_ATTENTION_SEQ_LEN = 1024;
/**
 * Time one attention case may take after its first run, ms: a run at S 16384, headDim 128 takes
 * seconds, so the big cases get fewer than `reps` measured runs (and no further warmup).
 */
export const ATTENTION_BUDGET_MS = 4000;
const DEFAULT_HEAD_DIM = 64;

export interface KernelBenchOptions {
  /** Training config (configs/demo.toml) for the training-step rows. */
  config: Config;
  /**
   * Untimed runs before the measured ones (GEMM and attention), and leading training steps left
   * out; at least one of each is left out whatever this says (the first run pays for compiling).
   */
  warmup: number;
  /** Measured runs of each GEMM and attention case (at most: see ATTENTION_BUDGET_MS); the report gives their median. */
  reps: number;
  /** Training steps per backend, the first `warmup` of them left out of the medians. */
  steps: number;
}

export const DEFAULT_KERNEL_BENCH = { warmup: 2, reps: 5, steps: 8 } as const;

/** One core's peak f32 FLOP/s: SIMD lanes × FMA units × 2 (an FMA is two FLOPs) × clock (kernels/peak.ts). */
export interface CorePeak {
  gflops: number;
  source: string;
}

export interface Peaks {
  /** 128-bit WebAssembly SIMD (4 f32 lanes): the ceiling of `wasm` (backendCeilingGflops). */
  wasmSimd: CorePeak;
  /** The core's widest SIMD (nativePeak): the ceiling of `blas` and the MFU denominator of training (train/metrics.ts). */
  native: CorePeak;
  /** Cores of the machine; its peak is cores × one core's. */
  cores: number;
  /** The clock /proc/cpuinfo reports and the one measured (null when log.peakGflopsPerRank is set), MHz. */
  nominalMHz: number;
  measuredMHz: number | null;
}

export interface GemmResult {
  backend: BackendName;
  m: number;
  n: number;
  k: number;
  medianMs: number;
  gflops: number;
  /** Percent of one core's 128-bit SIMD peak and of its native SIMD peak. */
  pctWasmPeak: number;
  pctNativePeak: number;
  note?: string;
}

export interface AttentionResult {
  backend: BackendName;
  seqLen: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  causal: true;
  /** Measured runs the median is of (fewer than the bench's reps for the big cases: ATTENTION_BUDGET_MS). */
  reps: number;
  medianMs: number;
  /** Forward + backward FLOP/s, counted as 3.5 × 4·d·H·P (P visible pairs; backward = 2.5 × forward). */
  gflops: number;
  pctWasmPeak: number;
  pctNativePeak: number;
  /**
   * The same backend's GEMM rate at 1024³ (reference: 256³), GFLOP/s, measured alternately with
   * this case's runs (before each and after the last; their median); null when not measured.
   */
  gemmGflops: number | null;
  /** 100 · gflops / gemmGflops; null when gemmGflops is. */
  pctOfGemm: number | null;
  note?: string;
}

export interface TrainingResult {
  backend: BackendName;
  ranks: number;
  seqLen: number;
  steps: number;
  medianStepMs: number;
  tokensPerSec: number;
  /** The same work against the 128-bit SIMD peak, and MFU against the native peak (as training logs it). */
  pctWasmPeak: number;
  pctNativePeak: number;
  /** Reference step time / this step time (null when reference was not run). */
  speedupVsReference: number | null;
}

export interface KernelBenchReport {
  suite: 'kernels';
  machine: MachineInfo;
  peaks: Peaks;
  /** Backends and why each one that is missing cannot run here. */
  backends: Array<{ name: BackendName; ok: boolean; detail?: string; reason?: string }>;
  warmup: number;
  reps: number;
  gemm: GemmResult[];
  attention: AttentionResult[];
  training: TrainingResult[];
}

/**
 * One core's peaks from kernels/peak.ts: `native` is nativePeak() (lanes from the CPU flags ×
 * FMA units × 2 × the higher of /proc/cpuinfo's and the measured clock), `wasmSimd` its 128-bit
 * share (backendCeilingGflops('wasm')). `configuredGflops` (log.peakGflopsPerRank) replaces the
 * native peak, as in training, and nothing is measured.
 */
export function corePeaks(configuredGflops?: number): Peaks {
  const peak = nativePeak(configuredGflops);
  return {
    wasmSimd: { gflops: backendCeilingGflops('wasm', peak), source: `4 of the ${peak.lanes} native lanes` },
    native: { gflops: peak.gflopsPerCore, source: peak.source },
    cores: os.cpus().length,
    nominalMHz: peak.nominalMHz,
    measuredMHz: peak.measuredMHz,
  };
}

/**
 * Run `fn` `warmup` times untimed, then `reps` times; the median wall time in ms. `between`,
 * when given, runs untimed before each timed run (a reference measured alternately with `fn`).
 */
export function timeMedian(fn: () => void, warmup: number, reps: number, between?: () => void): number {
  for (let i = 0; i < warmup; i++) fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    between?.();
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

/**
 * Like {@link timeMedian} for cases of very different cost: the first run is always untimed
 * and sizes the rest, `min(reps, ⌊budgetMs / its time⌋)` measured runs (at least 1), after the
 * remaining `warmup − 1` untimed ones only when everything fits the budget. `between` runs
 * before each measured run, as in timeMedian; the budget counts `fn`'s runs only.
 */
export function timeWithinBudget(fn: () => void, warmup: number, reps: number, budgetMs: number, between?: () => void): { medianMs: number; reps: number } {
  const t0 = performance.now();
  fn();
  const firstMs = performance.now() - t0;
  // A timer too coarse to see the first run must not divide by zero.
  const runs = Math.max(1, Math.min(reps, Math.floor(budgetMs / Math.max(firstMs, 1e-3))));
  const moreWarmup = Math.max(0, warmup - 1);
  return { medianMs: timeMedian(fn, firstMs * (moreWarmup + runs) <= budgetMs ? moreWarmup : 0, runs, between), reps: runs };
}

function randomTensor(arena: Arena, rng: Rng, shape: number[]): Tensor {
  const t = Tensor.zeros(arena, shape);
  for (let i = 0; i < t.size; i++) t.data[i] = rng.normal();
  return t;
}

function pct(gflops: number, peak: CorePeak): number {
  return (100 * gflops) / peak.gflops;
}

export function gemmCase(backend: BackendName, kernels: Kernels, arena: Arena, [m, n, k]: readonly [number, number, number], opts: Pick<KernelBenchOptions, 'warmup' | 'reps'>, peaks: Peaks, note?: string, mm?: MatmulOptions): GemmResult {
  const rng = new Rng(m * 31 + n * 7 + k);
  const a = randomTensor(arena, rng, mm?.transA === true ? [k, m] : [m, k]);
  const b = randomTensor(arena, rng, mm?.transB === true ? [n, k] : [k, n]);
  const c = Tensor.zeros(arena, [m, n]);
  try {
    const ms = timeMedian(() => kernels.matmul(c, a, b, m, n, k, mm), Math.max(1, opts.warmup), opts.reps);
    const gflops = (2 * m * n * k) / ms / 1e6;
    return { backend, m, n, k, medianMs: ms, gflops, pctWasmPeak: pct(gflops, peaks.wasmSimd), pctNativePeak: pct(gflops, peaks.native), ...(note !== undefined ? { note } : {}) };
  } finally {
    for (const t of [a, b, c]) t.free();
  }
}

/**
 * Causal attention forward + backward of one shape, timed within `opts.budgetMs` (default: no
 * limit, `opts.reps` runs) after at least one untimed run.
 * @param gemmNow measures the backend's reference GEMM rate now, GFLOP/s; called before each
 *   timed run and once after the last, and the median of those is the row's `gemmGflops`, the
 *   denominator of `pctOfGemm`. A rate measured once at the start of the bench is not the rate of
 *   the minutes later that a case runs in, on a machine whose clock and neighbours change (on the
 *   2-core VM the 1024³ GEMM moved 90–142 GFLOP/s between runs a minute apart). null: not measured.
 */
export function attentionCase(
  backend: BackendName, kernels: Kernels, arena: Arena, seqLen: number, opts: Pick<KernelBenchOptions, 'warmup' | 'reps'> & { budgetMs?: number }, peaks: Peaks, note?: string,
  shape: { heads: number; kvHeads: number; headDim: number } = { heads: 1, kvHeads: 1, headDim: DEFAULT_HEAD_DIM }, gemmNow: (() => number) | null = null,
): AttentionResult {
  const { heads, kvHeads, headDim } = shape;
  const rng = new Rng(seqLen);
  const q = randomTensor(arena, rng, [seqLen, heads, headDim]);
  const k = randomTensor(arena, rng, [seqLen, kvHeads, headDim]);
  const v = randomTensor(arena, rng, [seqLen, kvHeads, headDim]);
  const dO = randomTensor(arena, rng, [seqLen, heads, headDim]);
  const out = Tensor.zeros(arena, [seqLen, heads, headDim]);
  const lse = Tensor.zeros(arena, [seqLen, heads]);
  const grads = [Tensor.zeros(arena, [seqLen, heads, headDim]), Tensor.zeros(arena, [seqLen, kvHeads, headDim]), Tensor.zeros(arena, [seqLen, kvHeads, headDim])] as const;
  const att: AttentionOptions = { mask: { kind: 'causal', offset: 0 }, scale: 1 / Math.sqrt(headDim) };
  try {
    const gemmRates: number[] = [];
    const between = gemmNow === null ? undefined : (): void => void gemmRates.push(gemmNow());
    const timed = timeWithinBudget(
      () => {
        kernels.attentionForward(q, k, v, out, lse, att);
        kernels.attentionBackward(q, k, v, out, lse, dO, grads[0], grads[1], grads[2], att);
      },
      opts.warmup,
      opts.reps,
      opts.budgetMs ?? Infinity,
      between,
    );
    between?.();
    const gemmGflops = gemmNow === null ? null : median(gemmRates);
    const ms = timed.medianMs;
    // FLOPs as model/flops.ts counts attention (4·d·H per visible pair) and FlashAttention-2's
    // convention for the backward (2.5 × forward: five matmuls of the block instead of two).
    const pairs = (seqLen * (seqLen + 1)) / 2;
    const gflops = (3.5 * 4 * headDim * heads * pairs) / ms / 1e6;
    return {
      backend, seqLen, heads, kvHeads, headDim, causal: true, reps: timed.reps, medianMs: ms, gflops,
      pctWasmPeak: pct(gflops, peaks.wasmSimd), pctNativePeak: pct(gflops, peaks.native), gemmGflops, pctOfGemm: gemmGflops === null ? null : (100 * gflops) / gemmGflops,
      ...(note !== undefined ? { note } : {}),
    };
  } finally {
    for (const t of [q, k, v, dO, out, lse, ...grads]) t.free();
  }
}

/**
 * Measure every available backend: GEMM at {@link GEMM_SHAPES} (reference at
 * {@link REFERENCE_GEMM_SHAPE} only), the attention block forward + backward, one head, causal,
 * at every S of {@link ATTENTION_SEQ_LENS} × headDim of {@link ATTENTION_HEAD_DIMS} (reference
 * at S {@link REFERENCE_ATTENTION_SEQ_LEN}), each within {@link ATTENTION_BUDGET_MS}, and
 * `opts.steps` training steps of `opts.config` per backend. Kernel cases run on this thread,
 * one at a time.
 */
export async function benchKernels(opts: KernelBenchOptions): Promise<KernelBenchReport> {
  const peaks = corePeaks(opts.config.log.peakGflopsPerRank);
  const backends = BACKEND_NAMES.map((name) => ({ name, ...backendStatus(name) }));
  const available = backends.filter((b) => b.ok).map((b) => b.name);
  const gemm: GemmResult[] = [];
  const attention: AttentionResult[] = [];
  // 4096 × 4096 f32 C is 64 MiB; attention at S 16384, headDim 128 holds eight 8 MiB tensors and its scratch.
  const arena = new Arena(192 * 2 ** 20);
  const attentionOpts = { ...opts, budgetMs: ATTENTION_BUDGET_MS };
  for (const name of available) {
    const kernels = createKernels(name, arena);
    const reference = name === 'reference';
    if (reference) {
      const skipped = GEMM_SHAPES.map(([m, n, k]) => `${m}×${n}×${k}`).join(', ');
      gemm.push(gemmCase(name, kernels, arena, REFERENCE_GEMM_SHAPE, opts, peaks, `plain loops: measured at 256³ instead of ${skipped}`));
    } else {
      for (const shape of GEMM_SHAPES) gemm.push(gemmCase(name, kernels, arena, shape, opts, peaks));
    }
    const referenceShape = reference ? REFERENCE_GEMM_SHAPE : GEMM_SHAPES[0]!;
    const gemmNow = (): number => gemmCase(name, kernels, arena, referenceShape, opts, peaks).gflops;
    const seqLens = reference ? [REFERENCE_ATTENTION_SEQ_LEN] : ATTENTION_SEQ_LENS;
    const note = reference ? `plain loops: measured at S ${REFERENCE_ATTENTION_SEQ_LEN} instead of ${ATTENTION_SEQ_LENS.join(', ')}; % of GEMM against its 256³ GEMM` : undefined;
    for (const seqLen of seqLens) {
      for (const headDim of ATTENTION_HEAD_DIMS) attention.push(attentionCase(name, kernels, arena, seqLen, attentionOpts, peaks, note, { heads: 1, kvHeads: 1, headDim }, gemmNow));
    }
  }

  const training: TrainingResult[] = [];
  for (const name of available) {
    const cfg: Config = { ...opts.config, train: { ...opts.config.train, kernels: name } };
    const report = await benchLayouts(cfg, [{ name, request: cfg.parallel }], opts.steps, opts.warmup);
    const r = report.results[0]!;
    const ref = training.find((t) => t.backend === 'reference');
    training.push({
      backend: name,
      ranks: r.ranks,
      seqLen: cfg.train.seqLen,
      steps: r.steps,
      medianStepMs: r.median.stepMs,
      tokensPerSec: r.median.tokensPerSec,
      pctWasmPeak: (100 * r.median.mfu * peaks.native.gflops) / peaks.wasmSimd.gflops,
      pctNativePeak: 100 * r.median.mfu,
      speedupVsReference: ref === undefined ? null : ref.medianStepMs / r.median.stepMs,
    });
  }
  return { suite: 'kernels', machine: machineInfo(), peaks, backends, warmup: opts.warmup, reps: opts.reps, gemm, attention, training };
}

const fmt = (x: number | null, digits: number): string => (x === null ? '—' : x.toFixed(digits));

/** The report as fixed-width tables, for people. */
export function formatKernelTable(r: KernelBenchReport): string {
  const m = r.machine;
  const p = r.peaks;
  const fewer = r.attention.filter((a) => a.reps < r.reps).length;
  return [
    `${m.cpu}, ${m.cores} cores, node ${m.node}; one core's native peak ${p.native.gflops.toFixed(1)} GFLOP/s (${p.native.source}); 128-bit SIMD ceiling ${p.wasmSimd.gflops.toFixed(1)} (${p.wasmSimd.source})`,
    ...r.backends.filter((b) => !b.ok).map((b) => `${b.name}: not available: ${b.reason}`),
    '',
    `GEMM C[M,N] = A[M,K]·B[K,N], one thread, median of ${r.reps} runs after ${Math.max(1, r.warmup)} untimed`,
    ...table(
      ['backend', 'M×N×K', 'ms', 'GFLOP/s', '% 128-bit peak', '% native peak', 'note'],
      r.gemm.map((g) => [g.backend, `${g.m}×${g.n}×${g.k}`, fmt(g.medianMs, 2), fmt(g.gflops, 2), fmt(g.pctWasmPeak, 1), fmt(g.pctNativePeak, 1), g.note ?? '']),
    ),
    '',
    `attention block forward + backward, causal, H 1, one thread, median of ${r.reps} runs after at least one untimed` +
      (fewer > 0 ? `, except ${fewer} case${fewer === 1 ? '' : 's'} that would pass ${ATTENTION_BUDGET_MS / 1000} s: the runs column says how many` : '') + `; % of GEMM = over the backend's own 1024³ GEMM (GEMM beside), measured alternately with the case's runs`,
    ...table(
      ['backend', 'S', 'headDim', 'runs', 'ms', 'GFLOP/s', '% 128-bit peak', '% native peak', 'GEMM beside', '% of GEMM', 'note'],
      r.attention.map((a) => [a.backend, String(a.seqLen), String(a.headDim), String(a.reps), fmt(a.medianMs, 1), fmt(a.gflops, 2), fmt(a.pctWasmPeak, 1), fmt(a.pctNativePeak, 1), fmt(a.gemmGflops, 1), fmt(a.pctOfGemm, 1), a.note ?? '']),
    ),
    '',
    'training steps (medians after the warmup steps, the first always left out; % of peak = MFU over all ranks)',
    ...table(
      ['backend', 'ranks', 'seqLen', 'step ms', 'tok/s', '% 128-bit peak', '% native peak', 'vs reference'],
      r.training.map((t) => [t.backend, String(t.ranks), String(t.seqLen), t.medianStepMs.toFixed(1), t.tokensPerSec.toFixed(0), t.pctWasmPeak.toFixed(2), t.pctNativePeak.toFixed(2), t.speedupVsReference === null ? '' : `${t.speedupVsReference.toFixed(1)}×`]),
    ),
  ].join('\n');
}
