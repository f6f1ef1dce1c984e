import { Arena } from '../../tensor/arena.js';
import { Rng } from '../../tensor/rng.js';
import { Tensor } from '../../tensor/tensor.js';
import { createWasmKernels } from './kernels.js';
import type { WasmSimd } from './loader.js';

/*
 * Single-thread timings of the `wasm` backend's heaviest kernels, for the kernel benchmark
 * (`npm run bench -- kernels`). Each call builds its own arena with random inputs, runs
 * `warmup` untimed calls (V8 compiles hot WebAssembly with its optimising tier after the first
 * calls), then times `repeats` calls.
 */

export interface BenchOptions {
  /** Which build to run (default `auto`). */
  simd?: WasmSimd;
  /** Untimed calls first (default 2). */
  warmup?: number;
  /** Timed calls (default 5). */
  repeats?: number;
}

export interface BenchResult {
  /** What was timed, e.g. "gemm 1024×1024×1024". */
  what: string;
  /** Floating-point operations of one call (a multiply-add counts 2). */
  flops: number;
  /** Milliseconds of each timed call, in order. */
  runsMs: number[];
  medianMs: number;
  /** flops / median time, in GFLOP/s. */
  gflops: number;
  /** flops / fastest time, in GFLOP/s. */
  bestGflops: number;
  /** True when the fused multiply-add (relaxed SIMD) build ran. */
  relaxedSimd: boolean;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function time(what: string, flops: number, relaxedSimd: boolean, opts: BenchOptions, run: () => void): BenchResult {
  const warmup = opts.warmup ?? 2;
  const repeats = opts.repeats ?? 5;
  if (!Number.isInteger(repeats) || repeats < 1) throw new Error(`bench: repeats = ${repeats} is invalid: it must be a positive integer`);
  for (let i = 0; i < warmup; i++) run();
  const runsMs: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    run();
    runsMs.push(performance.now() - t0);
  }
  const medianMs = median(runsMs);
  return { what, flops, runsMs, medianMs, gflops: flops / medianMs / 1e6, bestGflops: flops / Math.min(...runsMs) / 1e6, relaxedSimd };
}

function random(arena: Arena, rng: Rng, shape: number[]): Tensor {
  const t = Tensor.zeros(arena, shape);
  for (let i = 0; i < t.size; i++) t.data[i] = rng.normal();
  return t;
}

/**
 * Time C[M, N] = A[M, K]·B[K, N] (no transposes) with the wasm GEMM: 2·M·N·K FLOPs per call.
 * @throws Error when the wasm module is unavailable (see wasmAvailable()).
 */
export function benchGemm(m: number, n: number, k: number, opts: BenchOptions = {}): BenchResult {
  const bytes = (m * k + k * n + m * n) * 4 + (8 << 20);
  const arena = new Arena(bytes);
  const K = createWasmKernels(arena, { simd: opts.simd ?? 'auto' });
  const rng = new Rng(1);
  const a = random(arena, rng, [m, k]);
  const b = random(arena, rng, [k, n]);
  const c = Tensor.zeros(arena, [m, n]);
  return time(`gemm ${m}×${n}×${k}`, 2 * m * n * k, K.relaxedSimd, opts, () => K.matmul(c, a, b, m, n, k));
}

/**
 * Time one attention block forward + backward, [S, heads, headDim] with as many KV heads as
 * query heads, scale 1/√headDim. FLOPs count the visible (query, key) pairs P (S² non-causal,
 * S(S+1)/2 causal): forward 4·P·d per head (Q·Kᵀ and P·V), backward 10·P·d (Q·Kᵀ again,
 * dO·Vᵀ, Pᵀ·dO, dS·K, dSᵀ·Q).
 * @throws Error when the wasm module is unavailable (see wasmAvailable()).
 */
export function benchAttention(s: number, headDim: number, causal: boolean, heads = 1, opts: BenchOptions = {}): BenchResult {
  const n = s * heads * headDim;
  const arena = new Arena(n * 4 * 10 + s * heads * 8 + 40 * s * headDim * 4 + (8 << 20));
  const K = createWasmKernels(arena, { simd: opts.simd ?? 'auto' });
  const rng = new Rng(2);
  const [q, k, v, dO] = [0, 1, 2, 3].map(() => random(arena, rng, [s, heads, headDim])) as [Tensor, Tensor, Tensor, Tensor];
  const out = Tensor.zeros(arena, [s, heads, headDim]);
  const lse = Tensor.zeros(arena, [s, heads]);
  const [dq, dk, dv] = [0, 1, 2].map(() => Tensor.zeros(arena, [s, heads, headDim])) as [Tensor, Tensor, Tensor];
  const pairs = causal ? (s * (s + 1)) / 2 : s * s;
  const aOpts = { causal, scale: 1 / Math.sqrt(headDim) };
  return time(`attention fwd+bwd S=${s} heads=${heads} headDim=${headDim}${causal ? ' causal' : ''}`, 14 * pairs * headDim * heads, K.relaxedSimd, opts, () => {
    K.attentionForward(q, k, v, out, lse, aOpts);
    K.attentionBackward(q, k, v, out, lse, dO, dq, dk, dv, aOpts);
  });
}
