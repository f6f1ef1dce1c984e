/**
 * The elementwise kernels of GEMM-tiled attention that the `wasm` module exports
 * (assembly/attention-tiles.ts) for the `blas` backend's attention (src/kernels/blas/attention.ts).
 * Addresses are byte offsets into the rank's arena; strides are in floats; a tile is `rows` ×
 * `cols` of a row-major buffer with row stride `ld` (a multiple of 4, ≥ cols rounded up to 4).
 */
export interface AttentionTiles {
  /** Zero the output rows o [rows, d] (stride oStride), m [rows] = −∞, l [rows] = 0. */
  tileRowsInit(o: number, oStride: number, d: number, rows: number, m: number, l: number): void;
  /** Online softmax over one key tile (keys colBase…colBase+cols): s becomes P, m/l updated, o rows rescaled. */
  tileSoftmax(s: number, ld: number, rows: number, cols: number, keyStart: number, keyEnd: number, colBase: number, scale: number, m: number, l: number, o: number, oStride: number, d: number): void;
  /** o rows /= l, lse[i·lseStride] = m + ln l (−∞ and o = 0 when l = 0). */
  tileRowsFinish(o: number, oStride: number, d: number, rows: number, m: number, l: number, lse: number, lseStride: number): void;
  /** D[i] = Σ dO[i, :]·O[i, :] (rows of stride `stride`). */
  tileRowDots(dO: number, o: number, stride: number, d: number, rows: number, D: number): void;
  /** s becomes P = exp(scale·s − lse_i) on visible pairs, 0 elsewhere. */
  tileProbs(s: number, ld: number, rows: number, cols: number, keyStart: number, keyEnd: number, colBase: number, scale: number, lse: number, lseStride: number): void;
  /** Every row i of the dP tile dp [rows, ld] becomes −D_i (before dP − D = dO·Vᵀ + dp by a β = 1 GEMM). */
  tileNegRows(dp: number, ld: number, rows: number, D: number): void;
  /** p becomes P ⊙ dp · scale, where dp holds dP − D_i; dp is reset to −D_i. */
  tileScoreGrads(p: number, dp: number, ld: number, rows: number, cols: number, D: number, scale: number): void;
}
