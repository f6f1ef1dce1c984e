import { expSoftmax, expv, logd, madd } from './simd';

/*
 * The elementwise half of GEMM-tiled attention (the `blas` backend, src/kernels/blas/attention.ts;
 * docs/kernels-blas.md): the driver computes each tile's scores S = Q·Kᵀ and the products with V,
 * dO, K and Q by cblas_sgemm on arena memory, and these kernels do what lies between — the online
 * softmax with its masks (FlashAttention-2, Dao 2023, algorithm 1), the final normalisation and
 * LSE, and the backward's P and dS (algorithm 2) — in 128-bit SIMD.
 *
 * A tile is `rows` query rows × `cols` keys of a row-major f32 buffer with row stride `ld`
 * floats (a multiple of 4, ≥ cols rounded up to 4: lanes past `cols` are computed and then
 * masked, so no scalar tail loop is needed). Query row i of the tile sees keys
 * [keyStart[i] − colBase, keyEnd[i] − colBase) of it (i32 per row; ranges of the whole block,
 * offset by the caller to the tile's first row). Matrices of one head inside [rows, heads, d]
 * tensors are addressed by their first element and a row stride in floats.
 */

/** The visible columns [lo, hi) of tile row i, clamped to [0, cols). */
// @ts-ignore: decorator
@inline function visible(keyStart: usize, keyEnd: usize, i: i32, colBase: i32, cols: i32): i64 {
  const lo = max(0, min(cols, load<i32>(keyStart + <usize>i * 4) - colBase));
  const hi = max(lo, min(cols, load<i32>(keyEnd + <usize>i * 4) - colBase));
  return (<i64>lo << 32) | <i64>hi;
}

/** Lanes j..j+3 of a row that lie outside [lo, hi), as an i32x4 mask. */
// @ts-ignore: decorator
@inline function outside(j: i32, lo: i32, hi: i32): v128 {
  const idx = i32x4.add(i32x4.splat(j), i32x4(0, 1, 2, 3));
  return v128.or(i32x4.lt_s(idx, i32x4.splat(lo)), i32x4.ge_s(idx, i32x4.splat(hi)));
}

/** Row r of a strided matrix: x + r·stride floats. */
// @ts-ignore: decorator
@inline function rowAt(x: usize, r: i32, stride: i32): usize {
  return x + <usize>r * <usize>stride * 4;
}

/** x[0, n) *= a (n ≥ 0; d need not be a multiple of 4). */
function scaleRow(x: usize, n: i32, a: f32): void {
  const av = f32x4.splat(a);
  let c = 0;
  for (; c + 4 <= n; c += 4) v128.store(x + <usize>c * 4, f32x4.mul(v128.load(x + <usize>c * 4), av));
  for (; c < n; c++) store<f32>(x + <usize>c * 4, load<f32>(x + <usize>c * 4) * a);
}

/** Start of a query block: its output rows [rows, d] (row stride oStride) zeroed, m = −∞, l = 0. */
export function tileRowsInit(o: usize, oStride: i32, d: i32, rows: i32, m: usize, l: usize): void {
  for (let i = 0; i < rows; i++) {
    memory.fill(rowAt(o, i, oStride), 0, <usize>d * 4);
    store<f32>(m + <usize>i * 4, -Infinity);
    store<f32>(l + <usize>i * 4, 0);
  }
}

/**
 * One key tile of the online softmax, in place: the scores s [rows, cols] become
 * P = exp(scale·s − m') on visible pairs and 0 elsewhere, with m' = max(m, scale·max s) the
 * row's new running maximum; l ← e^(m − m')·l + Σ P and the output rows o [rows, d] (stride
 * oStride) are rescaled by e^(m − m'), so that the caller's O += P·V continues the running sum.
 * A row with no visible key in the tile keeps m, l and o, and gets P = 0.
 */
export function tileSoftmax(
  s: usize, ld: i32, rows: i32, cols: i32, keyStart: usize, keyEnd: usize, colBase: i32, scale: f32,
  m: usize, l: usize, o: usize, oStride: i32, d: i32,
): void {
  const negInf = f32x4.splat(-Infinity);
  const sv = f32x4.splat(scale);
  const width = (cols + 3) & ~3;
  for (let i = 0; i < rows; i++) {
    const row = rowAt(s, i, ld);
    const range = visible(keyStart, keyEnd, i, colBase, cols);
    const lo = <i32>(range >> 32);
    const hi = <i32>range;
    if (lo >= hi) {
      memory.fill(row, 0, <usize>width * 4);
      continue;
    }
    // Unmasked rows (the bulk of a causal block's tiles) skip the lane compares.
    const full = lo == 0 && hi == width;
    let mx = negInf;
    let c = 0;
    if (full) {
      // Four running maxima: one would make every max wait for the previous one.
      let m1 = negInf;
      let m2 = negInf;
      let m3 = negInf;
      for (; c + 16 <= width; c += 16) {
        const at = row + <usize>c * 4;
        mx = f32x4.pmax(mx, v128.load(at));
        m1 = f32x4.pmax(m1, v128.load(at, 16));
        m2 = f32x4.pmax(m2, v128.load(at, 32));
        m3 = f32x4.pmax(m3, v128.load(at, 48));
      }
      mx = f32x4.pmax(f32x4.pmax(mx, m1), f32x4.pmax(m2, m3));
    }
    for (; c < width; c += 4) {
      let x = v128.load(row + <usize>c * 4);
      if (!full) x = v128.bitselect(negInf, x, outside(c, lo, hi));
      mx = f32x4.pmax(mx, x);
    }
    mx = f32x4.pmax(mx, i32x4.shuffle(mx, mx, 2, 3, 0, 1));
    mx = f32x4.pmax(mx, i32x4.shuffle(mx, mx, 1, 0, 3, 2));
    const mOld = load<f32>(m + <usize>i * 4);
    // scale > 0 and rounding is monotone, so scale·max s is exactly the max of scale·s.
    const mNew = max(mOld, f32x4.extract_lane(mx, 0) * scale);
    // The max pass only read the raw scores; the scale is applied here, in the exponent's madd.
    const negM = f32x4.splat(-mNew);
    let sum = f32x4.splat(0);
    let j = 0;
    if (full) {
      // Two independent vectors per iteration: e^x is a long dependent chain.
      let sum2 = f32x4.splat(0);
      for (; j + 8 <= width; j += 8) {
        const p0 = expSoftmax(madd(v128.load(row + <usize>j * 4), sv, negM));
        const p1 = expSoftmax(madd(v128.load(row + <usize>j * 4, 16), sv, negM));
        v128.store(row + <usize>j * 4, p0);
        v128.store(row + <usize>j * 4, p1, 16);
        sum = f32x4.add(sum, p0);
        sum2 = f32x4.add(sum2, p1);
      }
      sum = f32x4.add(sum, sum2);
    }
    for (; j < width; j += 4) {
      let x = madd(v128.load(row + <usize>j * 4), sv, negM);
      // Masked lanes get −∞, whose exponential is 0.
      if (!full) x = v128.bitselect(negInf, x, outside(j, lo, hi));
      const p = expSoftmax(x);
      v128.store(row + <usize>j * 4, p);
      sum = f32x4.add(sum, p);
    }
    sum = f32x4.add(sum, i32x4.shuffle(sum, sum, 2, 3, 0, 1));
    sum = f32x4.add(sum, i32x4.shuffle(sum, sum, 1, 0, 3, 2));
    const alpha = f32x4.extract_lane(expv(f32x4.splat(mOld - mNew)), 0);
    store<f32>(l + <usize>i * 4, alpha * load<f32>(l + <usize>i * 4) + f32x4.extract_lane(sum, 0));
    store<f32>(m + <usize>i * 4, mNew);
    if (alpha != 1) scaleRow(rowAt(o, i, oStride), d, alpha);
  }
}

/**
 * End of a query block: o rows /= l and lse[i·lseStride] = m + ln l; a row that saw no key
 * (l = 0) gets o = 0 and lse = −∞.
 */
export function tileRowsFinish(o: usize, oStride: i32, d: i32, rows: i32, m: usize, l: usize, lse: usize, lseStride: i32): void {
  for (let i = 0; i < rows; i++) {
    const li = load<f32>(l + <usize>i * 4);
    const out = lse + <usize>i * <usize>lseStride * 4;
    if (li > 0) {
      scaleRow(rowAt(o, i, oStride), d, <f32>(1.0 / <f64>li));
      store<f32>(out, <f32>(<f64>load<f32>(m + <usize>i * 4) + logd(<f64>li)));
    } else {
      memory.fill(rowAt(o, i, oStride), 0, <usize>d * 4);
      store<f32>(out, -Infinity);
    }
  }
}

/** D[i] = Σ_c dO[i, c]·O[i, c] for the block's rows (both with row stride `stride`), in f64, stored as f32. */
export function tileRowDots(dO: usize, o: usize, stride: i32, d: i32, rows: i32, D: usize): void {
  for (let i = 0; i < rows; i++) {
    const a = rowAt(dO, i, stride);
    const b = rowAt(o, i, stride);
    let acc: f64 = 0;
    for (let c = 0; c < d; c++) acc += <f64>load<f32>(a + <usize>c * 4) * <f64>load<f32>(b + <usize>c * 4);
    store<f32>(D + <usize>i * 4, <f32>acc);
  }
}

/**
 * Backward, in place: scores s [rows, cols] become P = exp(scale·s − lse_i) on visible pairs,
 * 0 elsewhere and in rows whose lse is −∞ (lse of row i at lse + i·lseStride floats).
 */
export function tileProbs(s: usize, ld: i32, rows: i32, cols: i32, keyStart: usize, keyEnd: usize, colBase: i32, scale: f32, lse: usize, lseStride: i32): void {
  const negInf = f32x4.splat(-Infinity);
  const sv = f32x4.splat(scale);
  const width = (cols + 3) & ~3;
  for (let i = 0; i < rows; i++) {
    const row = rowAt(s, i, ld);
    const li = load<f32>(lse + <usize>i * <usize>lseStride * 4);
    const range = visible(keyStart, keyEnd, i, colBase, cols);
    const lo = <i32>(range >> 32);
    const hi = <i32>range;
    if (lo >= hi || li == -Infinity) {
      memory.fill(row, 0, <usize>width * 4);
      continue;
    }
    const full = lo == 0 && hi == width;
    const negL = f32x4.splat(-li);
    let j = 0;
    if (full) {
      for (; j + 8 <= width; j += 8) {
        const p0 = expSoftmax(madd(v128.load(row + <usize>j * 4), sv, negL));
        const p1 = expSoftmax(madd(v128.load(row + <usize>j * 4, 16), sv, negL));
        v128.store(row + <usize>j * 4, p0);
        v128.store(row + <usize>j * 4, p1, 16);
      }
    }
    for (; j < width; j += 4) {
      let x = madd(v128.load(row + <usize>j * 4), sv, negL);
      if (!full) x = v128.bitselect(negInf, x, outside(j, lo, hi));
      v128.store(row + <usize>j * 4, expSoftmax(x));
    }
  }
}

/**
 * Backward, start of a query block: every row i of the dP tile dp [rows, ld] becomes −D_i, so
 * that dP = dO·Vᵀ accumulated onto it (β = 1) yields dP − D_i directly: OpenBLAS's β = 0 first
 * zeroes C in a separate pass over the tile, which cost the 256 × 256 × d product 7–18% here.
 */
export function tileNegRows(dp: usize, ld: i32, rows: i32, D: usize): void {
  for (let i = 0; i < rows; i++) {
    const row = rowAt(dp, i, ld);
    const v = f32x4.splat(-load<f32>(D + <usize>i * 4));
    for (let j = 0; j < ld; j += 4) v128.store(row + <usize>j * 4, v);
  }
}

/**
 * Backward, in place: p [rows, cols] becomes dS·scale = P ⊙ (dP − D_i)·scale, where dp (same
 * layout) holds dP − D_i (see {@link tileNegRows}); dp is left holding −D_i again for the next
 * key tile, stored while its lines are still in L1.
 */
export function tileScoreGrads(p: usize, dp: usize, ld: i32, rows: i32, cols: i32, D: usize, scale: f32): void {
  const width = (cols + 3) & ~3;
  const sv = f32x4.splat(scale);
  for (let i = 0; i < rows; i++) {
    const pr = rowAt(p, i, ld);
    const gr = rowAt(dp, i, ld);
    const negD = f32x4.splat(-load<f32>(D + <usize>i * 4));
    for (let j = 0; j < width; j += 4) {
      const at = <usize>j * 4;
      v128.store(pr + at, f32x4.mul(f32x4.mul(v128.load(pr + at), v128.load(gr + at)), sv));
      v128.store(gr + at, negD);
    }
  }
}
