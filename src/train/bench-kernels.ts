import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { AttentionOptions, Kernels, MatmulOptions } from '../kernels/kernels.js';
import { BACKEND_NAMES, backendStatus, createKernels, type BackendName } from '../kernels/registry.js';
import { Arena } from '../tensor/arena.js';
import { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import { benchLayouts } from './bench.js';
import { machineInfo, median, table, type MachineInfo } from './bench-common.js';
import type { Config } from './config.js';
import { peakFlopsPerRank } from './metrics.js';

/*
 * `loongtrain bench kernels` (docs/kernels-blas.md): GEMM and attention-block FLOP/s of every
 * available backend on one thread, and demo training steps per backend, against the peak of
 * one core.
 */

/** GEMM shapes of the issue, as M × N × K (C [M, N] = A [M, K] · B [K, N]). */
export const GEMM_SHAPES: ReadonlyArray<readonly [number, number, number]> = [[1024, 1024, 1024], [4096, 64, 4096], [4096, 4096, 64]];
/** The reference backend's plain loops would take seconds per run at the shapes above: it runs this one. */
export const REFERENCE_GEMM_SHAPE = [256, 256, 256] as const;
export const ATTENTION_SEQ_LENS = [4096, 8192] as const;
/** The reference attention at S = 4096 takes tens of seconds per run: it runs this length. */
export const REFERENCE_ATTENTION_SEQ_LEN = 1024;
const HEAD_DIM = 64;

export interface KernelBenchOptions {
  /** Training config (configs/demo.toml) for the training-step rows. */
  config: Config;
  /** Untimed runs before the measured ones (GEMM and attention), and leading training steps left out. */
  warmup: number;
  /** Measured runs of each GEMM and attention case; the report gives their median. */
  reps: number;
  /** Training steps per backend, the first `warmup` of them left out of the medians. */
  steps: number;
}

export const DEFAULT_KERNEL_BENCH = { warmup: 2, reps: 5, steps: 8 } as const;

/** One core's peak f32 FLOP/s: SIMD lanes × FMA units × 2 (an FMA is two FLOPs) × clock. */
export interface CorePeak {
  gflops: number;
  source: string;
}

export interface Peaks {
  /** 128-bit WebAssembly SIMD (4 f32 lanes): the ceiling of `wasm` and the MFU denominator (train/metrics.ts). */
  wasmSimd: CorePeak;
  /** The core's widest SIMD (AVX-512: 16 lanes, AVX/AVX2: 8, else 4): the ceiling of `blas`. */
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
  /** Null when not measured (see `note`). */
  medianMs: number | null;
  gflops: number | null;
  /** Percent of one core's 128-bit SIMD peak and of its native SIMD peak. */
  pctWasmPeak: number | null;
  pctNativePeak: number | null;
  note?: string;
}

export interface AttentionResult {
  backend: BackendName;
  seqLen: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  causal: true;
  medianMs: number | null;
  /** Forward + backward FLOP/s, counted as 3.5 × 4·d·H·P (P visible pairs; backward = 2.5 × forward). */
  gflops: number | null;
  pctWasmPeak: number | null;
  pctNativePeak: number | null;
  note?: string;
}

export interface TrainingResult {
  backend: BackendName;
  ranks: number;
  seqLen: number;
  steps: number;
  medianStepMs: number;
  tokensPerSec: number;
  /** MFU against the 128-bit SIMD peak (as training logs it), and the same work against the native peak. */
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
 * The clock a busy core actually runs at, in MHz: the best of 10 timings of a chain of
 * dependent one-cycle integer operations (add, xor), one per cycle on any out-of-order core.
 * Virtual machines often report only the nominal clock in /proc/cpuinfo while the cores boost
 * above it; without this, BLAS would show more than 100% of "peak".
 */
export function measureClockMHz(): number {
  const chain = (n: number, y: number, z: number): number => {
    let x = 1;
    for (let i = 0; i < n; i++) {
      x = (x + y) | 0; x ^= z; x = (x + y) | 0; x ^= z;
      x = (x + y) | 0; x ^= z; x = (x + y) | 0; x ^= z;
    }
    return x;
  };
  const n = 1e7;
  let best = 0;
  for (let r = 0; r < 10; r++) {
    const t0 = performance.now();
    clockSink ^= chain(n, r + 3, r + 7);
    best = Math.max(best, (8 * n) / ((performance.now() - t0) * 1e3));
  }
  return best;
}
/** Where the clock chains' results go, so that they cannot be optimised away. */
let clockSink = 0;

/**
 * One core's peaks: SIMD lanes × 2 FMA units × 2 FLOPs per FMA × clock (Haswell, Zen and later
 * have 2 FMA units; Apple and Neoverse cores more, so this can understate them). The clock is
 * the higher of /proc/cpuinfo's (train/metrics.ts) and {@link measureClockMHz}. Native lanes
 * come from the CPU flags in /proc/cpuinfo: avx512f → 16, avx2 or avx → 8, otherwise 4 (SSE,
 * NEON). log.peakGflopsPerRank, when set, is the 128-bit peak and the native one is scaled from it.
 */
export function corePeaks(configuredGflops?: number): Peaks {
  let flags = '';
  try {
    flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    // not Linux: assume 128-bit SIMD
  }
  const has = (f: string): boolean => new RegExp(`\\b${f}\\b`).test(flags);
  const [lanes, isa] = has('avx512f') ? [16, 'AVX-512'] : has('avx2') || has('avx') ? [8, has('avx2') ? 'AVX2' : 'AVX'] : [4, '128-bit'];
  const nominalMHz = peakFlopsPerRank().flops / 16e6;
  const measuredMHz = configuredGflops === undefined ? measureClockMHz() : null;
  const mhz = Math.max(nominalMHz, measuredMHz ?? 0);
  const clock = `${mhz.toFixed(0)} MHz (the higher of /proc/cpuinfo's ${nominalMHz.toFixed(0)} and the measured ${(measuredMHz ?? 0).toFixed(0)})`;
  const wasmGflops = configuredGflops ?? (mhz * 16) / 1e3;
  return {
    wasmSimd: { gflops: wasmGflops, source: configuredGflops !== undefined ? 'log.peakGflopsPerRank' : `4 lanes × 2 (FMA) × 2 units × ${clock}` },
    native: { gflops: (wasmGflops * lanes) / 4, source: `${isa}: ${lanes} lanes × 2 (FMA) × 2 units × clock = ${lanes / 4} × the 128-bit peak` },
    cores: os.cpus().length,
    nominalMHz,
    measuredMHz,
  };
}

/** Run `fn` `warmup` times untimed, then `reps` times; the median wall time in ms. */
export function timeMedian(fn: () => void, warmup: number, reps: number): number {
  for (let i = 0; i < warmup; i++) fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
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
    const ms = timeMedian(() => kernels.matmul(c, a, b, m, n, k, mm), opts.warmup, opts.reps);
    const gflops = (2 * m * n * k) / ms / 1e6;
    return { backend, m, n, k, medianMs: ms, gflops, pctWasmPeak: pct(gflops, peaks.wasmSimd), pctNativePeak: pct(gflops, peaks.native), ...(note !== undefined ? { note } : {}) };
  } finally {
    for (const t of [a, b, c]) t.free();
  }
}

export function attentionCase(backend: BackendName, kernels: Kernels, arena: Arena, seqLen: number, opts: Pick<KernelBenchOptions, 'warmup' | 'reps'>, peaks: Peaks, note?: string, shape: { heads: number; kvHeads: number; headDim: number } = { heads: 1, kvHeads: 1, headDim: HEAD_DIM }): AttentionResult {
  const { heads, kvHeads, headDim: HEAD_DIM } = shape;
  const rng = new Rng(seqLen);
  const q = randomTensor(arena, rng, [seqLen, heads, HEAD_DIM]);
  const k = randomTensor(arena, rng, [seqLen, kvHeads, HEAD_DIM]);
  const v = randomTensor(arena, rng, [seqLen, kvHeads, HEAD_DIM]);
  const dO = randomTensor(arena, rng, [seqLen, heads, HEAD_DIM]);
  const out = Tensor.zeros(arena, [seqLen, heads, HEAD_DIM]);
  const lse = Tensor.zeros(arena, [seqLen, heads]);
  const grads = [Tensor.zeros(arena, [seqLen, heads, HEAD_DIM]), Tensor.zeros(arena, [seqLen, kvHeads, HEAD_DIM]), Tensor.zeros(arena, [seqLen, kvHeads, HEAD_DIM])] as const;
  const att: AttentionOptions = { mask: { kind: 'causal', offset: 0 }, scale: 1 / Math.sqrt(HEAD_DIM) };
  try {
    const ms = timeMedian(
      () => {
        kernels.attentionForward(q, k, v, out, lse, att);
        kernels.attentionBackward(q, k, v, out, lse, dO, grads[0], grads[1], grads[2], att);
      },
      opts.warmup,
      opts.reps,
    );
    // FLOPs as model/flops.ts counts attention (4·d·H per visible pair) and FlashAttention-2's
    // convention for the backward (2.5 × forward: five matmuls of the block instead of two).
    const pairs = (seqLen * (seqLen + 1)) / 2;
    const gflops = (3.5 * 4 * HEAD_DIM * heads * pairs) / ms / 1e6;
    return { backend, seqLen, heads, kvHeads, headDim: HEAD_DIM, causal: true, medianMs: ms, gflops, pctWasmPeak: pct(gflops, peaks.wasmSimd), pctNativePeak: pct(gflops, peaks.native), ...(note !== undefined ? { note } : {}) };
  } finally {
    for (const t of [q, k, v, dO, out, lse, ...grads]) t.free();
  }
}

/**
 * Measure every available backend: GEMM at {@link GEMM_SHAPES} (reference at
 * {@link REFERENCE_GEMM_SHAPE} only), the attention block forward + backward at S 4096 and
 * 8192, one head, headDim 64, causal (reference at S {@link REFERENCE_ATTENTION_SEQ_LEN}; blas
 * has no attention of its own and is not measured twice), and `opts.steps` training steps of
 * `opts.config` per backend. Kernel cases run on this thread, one at a time.
 */
export async function benchKernels(opts: KernelBenchOptions): Promise<KernelBenchReport> {
  const peaks = corePeaks(opts.config.log.peakGflopsPerRank);
  const backends = BACKEND_NAMES.map((name) => ({ name, ...backendStatus(name) }));
  const available = backends.filter((b) => b.ok).map((b) => b.name);
  const gemm: GemmResult[] = [];
  const attention: AttentionResult[] = [];
  // 4096 × 4096 f32 C is 64 MiB; the rest is small next to it.
  const arena = new Arena(160 * 2 ** 20);
  for (const name of available) {
    const kernels = createKernels(name, arena);
    if (name === 'reference') {
      const skipped = GEMM_SHAPES.map(([m, n, k]) => `${m}×${n}×${k}`).join(', ');
      gemm.push(gemmCase(name, kernels, arena, REFERENCE_GEMM_SHAPE, opts, peaks, `plain loops: measured at 256³ instead of ${skipped}`));
      attention.push(attentionCase(name, kernels, arena, REFERENCE_ATTENTION_SEQ_LEN, opts, peaks, `plain loops: measured at S ${REFERENCE_ATTENTION_SEQ_LEN} instead of ${ATTENTION_SEQ_LENS.join(' and ')}`));
      continue;
    }
    for (const shape of GEMM_SHAPES) gemm.push(gemmCase(name, kernels, arena, shape, opts, peaks));
    if (name === 'blas') {
      const from = available.includes('wasm') ? 'wasm' : 'reference';
      for (const seqLen of ATTENTION_SEQ_LENS) {
        attention.push({ backend: name, seqLen, heads: 1, kvHeads: 1, headDim: HEAD_DIM, causal: true, medianMs: null, gflops: null, pctWasmPeak: null, pctNativePeak: null, note: `blas runs ${from}'s attention kernel` });
      }
      continue;
    }
    for (const seqLen of ATTENTION_SEQ_LENS) attention.push(attentionCase(name, kernels, arena, seqLen, opts, peaks));
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
      pctWasmPeak: 100 * r.median.mfu,
      pctNativePeak: (100 * r.median.mfu * peaks.wasmSimd.gflops) / peaks.native.gflops,
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
  return [
    `${m.cpu}, ${m.cores} cores, node ${m.node}; one core's peak: ${p.wasmSimd.gflops.toFixed(1)} GFLOP/s 128-bit SIMD (${p.wasmSimd.source}), ${p.native.gflops.toFixed(1)} GFLOP/s native (${p.native.source})`,
    ...r.backends.filter((b) => !b.ok).map((b) => `${b.name}: not available: ${b.reason}`),
    '',
    `GEMM C[M,N] = A[M,K]·B[K,N], one thread, median of ${r.reps} runs`,
    ...table(
      ['backend', 'M×N×K', 'ms', 'GFLOP/s', '% 128-bit peak', '% native peak', 'note'],
      r.gemm.map((g) => [g.backend, `${g.m}×${g.n}×${g.k}`, fmt(g.medianMs, 2), fmt(g.gflops, 2), fmt(g.pctWasmPeak, 1), fmt(g.pctNativePeak, 1), g.note ?? '']),
    ),
    '',
    `attention block forward + backward, causal, H 1, headDim ${HEAD_DIM}, one thread, median of ${r.reps} runs`,
    ...table(
      ['backend', 'S', 'ms', 'GFLOP/s', '% 128-bit peak', '% native peak', 'note'],
      r.attention.map((a) => [a.backend, String(a.seqLen), fmt(a.medianMs, 1), fmt(a.gflops, 2), fmt(a.pctWasmPeak, 1), fmt(a.pctNativePeak, 1), a.note ?? '']),
    ),
    '',
    'training steps (medians after the warmup steps; % of peak = MFU over all ranks)',
    ...table(
      ['backend', 'ranks', 'seqLen', 'step ms', 'tok/s', '% 128-bit peak', '% native peak', 'vs reference'],
      r.training.map((t) => [t.backend, String(t.ranks), String(t.seqLen), t.medianStepMs.toFixed(1), t.tokensPerSec.toFixed(0), t.pctWasmPeak.toFixed(2), t.pctNativePeak.toFixed(2), t.speedupVsReference === null ? '' : `${t.speedupVsReference.toFixed(1)}×`]),
    ),
  ].join('\n');
}
