import type { Tensor } from '../../tensor/tensor.js';
import { checkMatmul, checkNoOverlap } from '../checks.js';
import type { Kernels, MatmulOptions } from '../kernels.js';
import type { Arena } from '../../tensor/arena.js';
import type { AttentionTiles } from '../wasm/tiles.js';
import { gemmAttention } from './attention.js';
import { loadBlas, type Sgemm } from './library.js';

export { blasAvailable, BLAS_LIBRARY_ENV, type BlasAvailability } from './library.js';

// CBLAS enum values (cblas.h): CblasRowMajor, CblasNoTrans, CblasTrans.
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

/**
 * C = op(A)·op(B) (+ C when `accumulate`) as one row-major cblas_sgemm on the tensors' own
 * arena memory. koffi hands a Float32Array's backing store to C as a plain pointer, without a
 * copy, also for the SharedArrayBuffer of an arena (test/kernels-blas.test.ts checks the address).
 * A is [M, K] ([K, M] when transA), B is [K, N] ([N, K] when transB), C is [M, N]; f32
 * accumulation in BLAS's blocking order, so results differ from the reference by f32 rounding.
 * @throws Error when M, N, K is not a non-negative integer, a size does not match them, or C
 * overlaps A or B in memory.
 */
function blasMatmul(sgemm: Sgemm, c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number, opts: MatmulOptions = {}): void {
  const { transA, transB } = checkMatmul(c, a, b, m, n, k, opts);
  // The BLAS standard leaves an output aliasing an input undefined (blocked GEMMs read A and B after writing C).
  checkNoOverlap('matmul', ['C', c], { A: a, B: b });
  if (m === 0 || n === 0) return;
  // Leading dimensions are the row lengths as stored; BLAS rejects 0 even when K = 0 (then C = βC).
  const lda = Math.max(1, transA ? m : k);
  const ldb = Math.max(1, transB ? k : n);
  sgemm(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k, 1, a.data, lda, b.data, ldb, opts.accumulate === true ? 1 : 0, c.data, n);
}

/** The rank's arena and its wasm module's tile kernels, for the GEMM-tiled attention. */
export interface BlasAttentionTiles {
  arena: Arena;
  tiles: AttentionTiles;
}

/**
 * The `blas` backend: matmul through the system's CBLAS (OpenBLAS, Accelerate; one BLAS thread
 * per rank); with `tiled`, attention forward and backward as GEMM tiles (./attention.ts) whose
 * elementwise part runs in the wasm module; every other kernel (and attention without `tiled`)
 * taken from `others` (the rank's `wasm` kernels when available, else `reference`).
 * @throws Error with the reason from {@link blasAvailable} when no CBLAS library loads.
 */
export function createBlasKernels(others: Kernels, tiled?: BlasAttentionTiles): Kernels {
  const lib = loadBlas();
  if ('reason' in lib) throw new Error(`blas kernels unavailable: ${lib.reason}`);
  const { sgemm } = lib;
  const matmul: Kernels['matmul'] = (c, a, b, m, n, k, opts) => blasMatmul(sgemm, c, a, b, m, n, k, opts);
  const own: PropertyDescriptorMap = { name: { value: 'blas', enumerable: true }, matmul: { value: matmul, enumerable: true } };
  if (tiled !== undefined) {
    const attention = gemmAttention(sgemm, tiled.arena, tiled.tiles);
    own.attentionForward = { value: attention.attentionForward, enumerable: true };
    own.attentionBackward = { value: attention.attentionBackward, enumerable: true };
  }
  // Inherit rather than spread: a backend may be a class instance whose methods live on its prototype.
  return Object.create(others, own) as Kernels;
}
