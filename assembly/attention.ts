import { expf, expv, logd, roundUp, transpose4x4 } from './simd';
import { tile } from './gemm';

/*
 * Flash-attention style block kernels (Dao 2023, FlashAttention-2; algorithms.md §5) for one
 * (query block, key block) pair: q [Sq, H, d], k and v [Sk, Hkv, d], query head h uses KV head
 * ⌊h / (H/Hkv)⌋. Work runs per head over tiles of BR queries × BC keys; the scores of one tile
 * live in scratch and an Sq×Sk matrix never exists.
 *
 * Scores are computed transposed, Sᵀ = K·Qᵀ (keys × queries), so the online-softmax statistics
 * of a query are updated by vertical SIMD over four queries at once and Sᵀ is already the
 * packed A operand of P·V. Every operand is first copied into scratch padded to multiples of 8
 * (queries, keys, head dim) with zeros, so the 4×8 register tile of gemm.ts never needs an edge
 * case; padded keys are masked with −∞ and padded queries are never written back.
 *
 * Masks arrive as per-row key ranges (src/kernels/checks.ts keyRanges): query i sees keys
 * [keyStart[i], keyEnd[i]) (empty when start ≥ end; end ≤ sk). A (query tile, key tile) pair
 * is classified from the ranges of the tile's real rows ({@link tileKind}): no row sees a key of
 * the tile → skipped without computing; every row sees every key → no masking; otherwise the
 * scores are masked elementwise with vector compares. The forward also loops, per query tile,
 * only over the key tiles overlapping the union of its rows' ranges.
 */

/** Queries per tile (a multiple of 8, the register tile's width). */
const BR: i32 = 64;
/** Keys per tile (a multiple of 8). */
const BC: i32 = 64;

/** Byte address of element [row, head, c] of a [rows, heads, d] tensor at base. */
// @ts-ignore: decorator
@inline function at(base: usize, row: i32, heads: i32, head: i32, d: i32, c: i32): usize {
  return base + (<usize>(row * heads + head) * d + c) * 4;
}

/** Copy head `head` of x [rows, heads, d] into dst [rowsPadded, dp] (row-major, zero padded), times `mul`. */
function packRows(dst: usize, x: usize, rows: i32, heads: i32, head: i32, d: i32, rowsPadded: i32, dp: i32, mul: f32): void {
  memory.fill(dst, 0, <usize>rowsPadded * dp * 4);
  for (let r = 0; r < rows; r++) {
    const src = at(x, r, heads, head, d, 0);
    const out = dst + <usize>(r * dp) * 4;
    for (let c = 0; c < d; c++) store<f32>(out + <usize>c * 4, load<f32>(src + <usize>c * 4) * mul);
  }
}

/**
 * Re-layout padded rows src [rowsPadded, dp] into `width`-row panels: dst[(r/width)][c][r%width],
 * the A operand (width 4) or B operand (width 8) of the register tile with depth over c.
 */
function panelize(dst: usize, src: usize, rowsPadded: i32, dp: i32, width: i32): void {
  for (let r0 = 0; r0 < rowsPadded; r0 += width) {
    const panel = dst + <usize>(r0 * dp) * 4;
    for (let w = 0; w < width; w += 4) {
      for (let c = 0; c < dp; c += 4) {
        transpose4x4(src + (<usize>(r0 + w) * dp + c) * 4, <usize>dp * 4, panel + <usize>(c * width + w) * 4, <usize>width * 4);
      }
    }
  }
}

/**
 * Re-layout padded rows src [rowsPadded, dp] into 8-column panels: dst[(c/8)][r][c%8], the B
 * operand of the register tile with depth over rows (8 contiguous columns per row, rows 32
 * bytes apart, so a tile's whole B operand is one contiguous run).
 */
function columnPanels(dst: usize, src: usize, rowsPadded: i32, dp: i32): void {
  for (let c = 0; c < dp; c += 8) {
    const panel = dst + <usize>(c * rowsPadded) * 4;
    for (let r = 0; r < rowsPadded; r++) {
      const from = src + (<usize>r * dp + c) * 4;
      v128.store(panel + <usize>r * 32, v128.load(from));
      v128.store(panel + <usize>r * 32, v128.load(from, 16), 16);
    }
  }
}

/** Address of rows [r0, …) of column block c (a multiple of 8) in columnPanels(…) of rowsPadded rows. */
// @ts-ignore: decorator
@inline function colAt(panels: usize, rowsPadded: i32, r0: i32, c: i32): usize {
  return panels + (<usize>c * rowsPadded + <usize>r0 * 8) * 4;
}

/** A (query tile, key tile) pair that no row of the query tile sees any key of: skipped. */
const TILE_EMPTY: i32 = 0;
/** Every row of the query tile sees every key of the key tile: no masking. */
const TILE_FULL: i32 = 1;
/** Some but not all pairs visible: masked elementwise. */
const TILE_MIXED: i32 = 2;

/**
 * How query rows [i0, i0 + n) see keys [j0, j1), from their ranges [start[i], end[i]):
 * {@link TILE_EMPTY}, {@link TILE_FULL} or {@link TILE_MIXED}. A key j1 > sk (padding) is never
 * visible, since end ≤ sk.
 */
function tileKind(start: usize, end: usize, i0: i32, n: i32, j0: i32, j1: i32): i32 {
  let any = false;
  let all = true;
  for (let i = i0; i < i0 + n; i++) {
    const s = load<i32>(start + <usize>i * 4);
    const e = load<i32>(end + <usize>i * 4);
    if (s > j0 || e < j1) all = false;
    if (max(s, j0) < min(e, j1)) any = true;
  }
  return !any ? TILE_EMPTY : all ? TILE_FULL : TILE_MIXED;
}

/**
 * Scores of one tile, transposed: st[j][i] = Σ_c kPanels(j0+j, c)·qPanels(i0+i, c) for j < bcp
 * (a multiple of 4), i < brp (a multiple of 8); then, for a {@link TILE_MIXED} tile, −∞ where
 * key j0+j is outside query i0+i's range [start, end) (padded keys and padded queries, whose
 * ranges are empty, included).
 */
function scoresT(st: usize, kPanels: usize, qPanels: usize, dp: i32, j0: i32, bcp: i32, i0: i32, brp: i32, kind: i32, start: usize, end: usize): void {
  for (let jr = 0; jr < bcp; jr += 4) {
    const a = kPanels + <usize>((j0 + jr) * dp) * 4;
    for (let ir = 0; ir < brp; ir += 8) {
      tile(dp, a, 16, qPanels + <usize>((i0 + ir) * dp) * 4, 32, st + <usize>(jr * brp + ir) * 4, <usize>brp * 4, false);
    }
  }
  if (kind != TILE_MIXED) return;
  const negInf = f32x4.splat(-Infinity);
  const rangeStart = start + <usize>i0 * 4;
  const rangeEnd = end + <usize>i0 * 4;
  for (let j = 0; j < bcp; j++) {
    const key = i32x4.splat(j0 + j);
    const row = st + <usize>(j * brp) * 4;
    for (let i = 0; i < brp; i += 4) {
      const masked = v128.or(i32x4.lt_s(key, v128.load(rangeStart + <usize>i * 4)), i32x4.ge_s(key, v128.load(rangeEnd + <usize>i * 4)));
      v128.store(row + <usize>i * 4, v128.bitselect(negInf, v128.load(row + <usize>i * 4), masked));
    }
  }
}

/**
 * Copy the ranges keyStart, keyEnd [sq] into start, end [sqp] (scratch), padded queries given
 * the empty range [0, 0), so the masking reads four rows at a time without an edge case.
 */
function padRanges(start: usize, end: usize, keyStart: usize, keyEnd: usize, sq: i32, sqp: i32): void {
  memory.copy(start, keyStart, <usize>sq * 4);
  memory.copy(end, keyEnd, <usize>sq * 4);
  memory.fill(start + <usize>sq * 4, 0, <usize>(sqp - sq) * 4);
  memory.fill(end + <usize>sq * 4, 0, <usize>(sqp - sq) * 4);
}

/**
 * Scratch bytes {@link attentionForward} needs, in f64: for long blocks the count passes 2^31
 * (e.g. backward at S = 400000, d = 128), which i32 arithmetic would wrap to a negative size.
 */
export function attentionForwardScratchBytes(sq: i32, sk: i32, d: i32): f64 {
  const dp = <f64>roundUp(d, 8);
  const sqp = <f64>roundUp(sq, 8);
  const skp = <f64>roundUp(sk, 8);
  // Row staging, K panels, V column panels, Q panels, Sᵀ tile, O accumulator, m, l, padded ranges.
  return (max(skp, sqp) * dp + 2 * skp * dp + sqp * dp + <f64>(BC * BR) + <f64>BR * dp + <f64>(2 * BR) + 2 * sqp) * 4;
}

/**
 * Kernels.attentionForward: writes out [Sq, H, d] and lse [Sq, H] (natural log; −∞ and out 0
 * for a row without visible keys). Query i sees keys [keyStart[i], keyEnd[i]) (i32 [sq] each,
 * 0 ≤ start, end ≤ sk: checked by the caller).
 */
export function attentionForward(
  q: usize, k: usize, v: usize, out: usize, lse: usize,
  sq: i32, sk: i32, heads: i32, kvHeads: i32, d: i32, keyStart: usize, keyEnd: usize, scale: f32, scratch: usize,
): void {
  const dp = roundUp(d, 8);
  const sqp = roundUp(sq, 8);
  const skp = roundUp(sk, 8);
  const group = heads / kvHeads;
  const rows = scratch;
  const kPanels = rows + <usize>(max(skp, sqp) * dp) * 4;
  const vCols = kPanels + <usize>(skp * dp) * 4;
  const qPanels = vCols + <usize>(skp * dp) * 4;
  const st = qPanels + <usize>(sqp * dp) * 4;
  const acc = st + <usize>(BC * BR) * 4;
  const mRow = acc + <usize>(BR * dp) * 4;
  const lRow = mRow + <usize>BR * 4;
  const start = lRow + <usize>BR * 4;
  const end = start + <usize>sqp * 4;
  padRanges(start, end, keyStart, keyEnd, sq, sqp);
  for (let h = 0; h < heads; h++) {
    const kvh = h / group;
    if (h % group == 0) {
      packRows(rows, k, sk, kvHeads, kvh, d, skp, dp, 1);
      panelize(kPanels, rows, skp, dp, 4);
      packRows(rows, v, sk, kvHeads, kvh, d, skp, dp, 1);
      columnPanels(vCols, rows, skp, dp);
    }
    // The score scale is folded into Q once per head.
    packRows(rows, q, sq, heads, h, d, sqp, dp, scale);
    panelize(qPanels, rows, sqp, dp, 8);
    for (let i0 = 0; i0 < sqp; i0 += BR) {
      const brp = min(BR, sqp - i0);
      memory.fill(acc, 0, <usize>(brp * dp) * 4);
      for (let i = 0; i < brp; i++) {
        store<f32>(mRow + <usize>i * 4, -Infinity);
        store<f32>(lRow + <usize>i * 4, 0);
      }
      // Key tiles over the union [lo, hi) of the real rows' ranges (4-aligned for the K panels).
      const n = min(brp, sq - i0);
      let lo = sk;
      let hi = 0;
      for (let i = i0; i < i0 + n; i++) {
        const s = load<i32>(start + <usize>i * 4);
        const e = load<i32>(end + <usize>i * 4);
        if (s < e) {
          lo = min(lo, s);
          hi = max(hi, e);
        }
      }
      for (let j0 = lo & ~3; j0 < hi; j0 += BC) {
        const bcp = roundUp(min(BC, hi - j0), 4);
        const kind = tileKind(start, end, i0, n, j0, j0 + bcp);
        if (kind == TILE_EMPTY) continue;
        scoresT(st, kPanels, qPanels, dp, j0, bcp, i0, brp, kind, start, end);
        onlineSoftmax(st, bcp, brp, mRow, lRow, acc, dp);
        // acc[i][:] += Σ_j P[i][j]·V[j][:]: A = Pᵀ read four queries at a time.
        for (let ir = 0; ir < brp; ir += 4) {
          for (let c = 0; c < dp; c += 8) {
            tile(bcp, st + <usize>ir * 4, <usize>brp * 4, colAt(vCols, skp, j0, c), 32, acc + (<usize>ir * dp + c) * 4, <usize>dp * 4, true);
          }
        }
      }
      for (let i = 0; i < n; i++) {
        const l = load<f32>(lRow + <usize>i * 4);
        const o = at(out, i0 + i, heads, h, d, 0);
        const row = acc + <usize>(i * dp) * 4;
        if (l == 0) {
          memory.fill(o, 0, <usize>d * 4);
          store<f32>(lse + (<usize>(i0 + i) * heads + h) * 4, -Infinity);
          continue;
        }
        const inv: f32 = 1 / l;
        for (let c = 0; c < d; c++) store<f32>(o + <usize>c * 4, load<f32>(row + <usize>c * 4) * inv);
        store<f32>(lse + (<usize>(i0 + i) * heads + h) * 4, <f32>(<f64>load<f32>(mRow + <usize>i * 4) + logd(<f64>l)));
      }
    }
  }
}

/**
 * One online-softmax step over a transposed score tile st [bcp][brp] (FlashAttention-2): per
 * query i, m' = max(m, max_j S), P = e^(S − m') written over st, l' = l·e^(m − m') + Σ_j P and
 * the output accumulator row rescaled by e^(m − m'). A query with m' = −∞ (no visible key yet)
 * gets P = 0 and keeps l = 0.
 */
function onlineSoftmax(st: usize, bcp: i32, brp: i32, mRow: usize, lRow: usize, acc: usize, dp: i32): void {
  const rowBytes = <usize>brp * 4;
  for (let i = 0; i < brp; i += 4) {
    const col = st + <usize>i * 4;
    const mOld = v128.load(mRow + <usize>i * 4);
    let mNew = mOld;
    for (let j = 0; j < bcp; j++) mNew = f32x4.pmax(mNew, v128.load(col + <usize>j * rowBytes));
    // Subtracting 0 instead of −∞ keeps −∞ − (−∞) from turning into NaN.
    const shift = v128.andnot(mNew, f32x4.eq(mNew, f32x4.splat(-Infinity)));
    let sum = f32x4.splat(0);
    for (let j = 0; j < bcp; j++) {
      const addr = col + <usize>j * rowBytes;
      const p = expv(f32x4.sub(v128.load(addr), shift));
      v128.store(addr, p);
      sum = f32x4.add(sum, p);
    }
    const alpha = expv(f32x4.sub(mOld, shift));
    v128.store(lRow + <usize>i * 4, f32x4.add(f32x4.mul(v128.load(lRow + <usize>i * 4), alpha), sum));
    v128.store(mRow + <usize>i * 4, mNew);
    rescaleRow(acc + <usize>(i * dp) * 4, dp, f32x4.extract_lane(alpha, 0));
    rescaleRow(acc + <usize>((i + 1) * dp) * 4, dp, f32x4.extract_lane(alpha, 1));
    rescaleRow(acc + <usize>((i + 2) * dp) * 4, dp, f32x4.extract_lane(alpha, 2));
    rescaleRow(acc + <usize>((i + 3) * dp) * 4, dp, f32x4.extract_lane(alpha, 3));
  }
}

// @ts-ignore: decorator
@inline function rescaleRow(row: usize, dp: i32, alpha: f32): void {
  if (alpha == 1) return;
  const s = f32x4.splat(alpha);
  for (let c = 0; c < dp; c += 4) v128.store(row + <usize>c * 4, f32x4.mul(v128.load(row + <usize>c * 4), s));
}

/** Scratch bytes {@link attentionBackward} needs, in f64 (see {@link attentionForwardScratchBytes}). */
export function attentionBackwardScratchBytes(sq: i32, sk: i32, d: i32): f64 {
  const dp = <f64>roundUp(d, 8);
  const sqp = <f64>roundUp(sq, 8);
  const skp = <f64>roundUp(sk, 8);
  // Row staging; K panels and column panels, V panels, dK and dV accumulators; Q panels and
  // column panels, dO panels and column panels, dQ accumulator; Pᵀ, dSᵀ, P, dS tiles; D and lse;
  // padded ranges.
  return (max(skp, sqp) * dp + 5 * skp * dp + 5 * sqp * dp + <f64>(4 * BC * BR) + 4 * sqp) * 4;
}

/**
 * Kernels.attentionBackward (FlashAttention-2 backward, algorithms.md §5): with P = e^(S − lse)
 * recomputed per tile and D_i = rowsum(dO_i ∘ O_i), accumulates dv += Pᵀ·dO,
 * dk += scale·dSᵀ·Q, dq += scale·dS·K with dS = P ∘ (dO·Vᵀ − D), over the keys
 * [keyStart[i], keyEnd[i]) of each query i (as in {@link attentionForward}). Rows with lse −∞
 * contribute nothing. `o` is the final merged output of these query rows.
 */
export function attentionBackward(
  q: usize, k: usize, v: usize, o: usize, lse: usize, dO: usize, dq: usize, dk: usize, dv: usize,
  sq: i32, sk: i32, heads: i32, kvHeads: i32, d: i32, keyStart: usize, keyEnd: usize, scale: f32, scratch: usize,
): void {
  const dp = roundUp(d, 8);
  const sqp = roundUp(sq, 8);
  const skp = roundUp(sk, 8);
  const group = heads / kvHeads;
  const kvBytes = <usize>(skp * dp) * 4;
  const qBytes = <usize>(sqp * dp) * 4;
  const rows = scratch;
  const kPanels = rows + <usize>(max(skp, sqp) * dp) * 4;
  const kCols = kPanels + kvBytes;
  const vPanels = kCols + kvBytes;
  const dkAcc = vPanels + kvBytes;
  const dvAcc = dkAcc + kvBytes;
  const qPanels = dvAcc + kvBytes;
  const qCols = qPanels + qBytes;
  const doPanels = qCols + qBytes;
  const doCols = doPanels + qBytes;
  const dqAcc = doCols + qBytes;
  const pt = dqAcc + qBytes;
  const dst = pt + <usize>(BC * BR) * 4;
  const p = dst + <usize>(BC * BR) * 4;
  const ds = p + <usize>(BC * BR) * 4;
  const dRow = ds + <usize>(BC * BR) * 4;
  const lseRow = dRow + <usize>sqp * 4;
  const start = lseRow + <usize>sqp * 4;
  const end = start + <usize>sqp * 4;
  padRanges(start, end, keyStart, keyEnd, sq, sqp);
  for (let kvh = 0; kvh < kvHeads; kvh++) {
    packRows(rows, k, sk, kvHeads, kvh, d, skp, dp, 1);
    panelize(kPanels, rows, skp, dp, 4);
    columnPanels(kCols, rows, skp, dp);
    packRows(rows, v, sk, kvHeads, kvh, d, skp, dp, 1);
    panelize(vPanels, rows, skp, dp, 4);
    memory.fill(dkAcc, 0, kvBytes);
    memory.fill(dvAcc, 0, kvBytes);
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      packRows(rows, q, sq, heads, h, d, sqp, dp, scale);
      panelize(qPanels, rows, sqp, dp, 8);
      // dK needs scale·dSᵀ·Q with raw Q: dS already carries the scale.
      packRows(rows, q, sq, heads, h, d, sqp, dp, 1);
      columnPanels(qCols, rows, sqp, dp);
      packRows(rows, dO, sq, heads, h, d, sqp, dp, 1);
      panelize(doPanels, rows, sqp, dp, 8);
      columnPanels(doCols, rows, sqp, dp);
      memory.fill(dqAcc, 0, qBytes);
      for (let i = 0; i < sqp; i++) {
        let rowD: f32 = 0;
        // +∞ makes e^(S − lse) = 0: padded queries and rows without visible keys add nothing.
        let l: f32 = Infinity;
        if (i < sq) {
          const orow = at(o, i, heads, h, d, 0);
          const grow = at(dO, i, heads, h, d, 0);
          for (let c = 0; c < d; c++) rowD += load<f32>(orow + <usize>c * 4) * load<f32>(grow + <usize>c * 4);
          const li = load<f32>(lse + (<usize>i * heads + h) * 4);
          if (li != -Infinity) l = li;
        }
        store<f32>(dRow + <usize>i * 4, rowD);
        store<f32>(lseRow + <usize>i * 4, l);
      }
      for (let j0 = 0; j0 < sk; j0 += BC) {
        const bcp = roundUp(min(BC, sk - j0), 4);
        for (let i0 = 0; i0 < sqp; i0 += BR) {
          const brp = min(BR, sqp - i0);
          // Pairs no row sees (e.g. above the causal diagonal) are skipped.
          const kind = tileKind(start, end, i0, min(brp, sq - i0), j0, j0 + bcp);
          if (kind == TILE_EMPTY) continue;
          scoresT(pt, kPanels, qPanels, dp, j0, bcp, i0, brp, kind, start, end);
          probabilitiesT(pt, bcp, brp, lseRow + <usize>i0 * 4);
          // dPᵀ = V·dOᵀ, then dSᵀ = scale·Pᵀ ∘ (dPᵀ − D) in place.
          for (let jr = 0; jr < bcp; jr += 4) {
            for (let ir = 0; ir < brp; ir += 8) {
              tile(dp, vPanels + <usize>((j0 + jr) * dp) * 4, 16, doPanels + <usize>((i0 + ir) * dp) * 4, 32, dst + <usize>(jr * brp + ir) * 4, <usize>brp * 4, false);
            }
          }
          gradScoresT(dst, pt, bcp, brp, dRow + <usize>i0 * 4, scale);
          for (let jr = 0; jr < bcp; jr += 4) {
            for (let ir = 0; ir < brp; ir += 4) {
              transpose4x4(pt + <usize>(jr * brp + ir) * 4, <usize>brp * 4, p + <usize>(ir * bcp + jr) * 4, <usize>bcp * 4);
              transpose4x4(dst + <usize>(jr * brp + ir) * 4, <usize>brp * 4, ds + <usize>(ir * bcp + jr) * 4, <usize>bcp * 4);
            }
          }
          // dV[j] += Σ_i P[i][j]·dO[i], dK[j] += Σ_i dS[i][j]·Q[i]: A = P, dS read four keys at a time.
          for (let jr = 0; jr < bcp; jr += 4) {
            const accRow = (<usize>(j0 + jr) * dp) * 4;
            for (let c = 0; c < dp; c += 8) {
              tile(brp, p + <usize>jr * 4, <usize>bcp * 4, colAt(doCols, sqp, i0, c), 32, dvAcc + accRow + <usize>c * 4, <usize>dp * 4, true);
              tile(brp, ds + <usize>jr * 4, <usize>bcp * 4, colAt(qCols, sqp, i0, c), 32, dkAcc + accRow + <usize>c * 4, <usize>dp * 4, true);
            }
          }
          // dQ[i] += Σ_j dS[i][j]·K[j]: A = dSᵀ read four queries at a time.
          for (let ir = 0; ir < brp; ir += 4) {
            for (let c = 0; c < dp; c += 8) {
              tile(bcp, dst + <usize>ir * 4, <usize>brp * 4, colAt(kCols, skp, j0, c), 32, dqAcc + (<usize>(i0 + ir) * dp + c) * 4, <usize>dp * 4, true);
            }
          }
        }
      }
      addRows(dq, dqAcc, sq, heads, h, d, dp);
    }
    addRows(dk, dkAcc, sk, kvHeads, kvh, d, dp);
    addRows(dv, dvAcc, sk, kvHeads, kvh, d, dp);
  }
}

/** Pᵀ = e^(Sᵀ − lse) in place over st [bcp][brp]; lse of query i at lseRow[i]. */
function probabilitiesT(st: usize, bcp: i32, brp: i32, lseRow: usize): void {
  for (let i = 0; i < brp; i += 4) {
    const l = v128.load(lseRow + <usize>i * 4);
    for (let j = 0; j < bcp; j++) {
      const addr = st + (<usize>(j * brp + i)) * 4;
      v128.store(addr, expv(f32x4.sub(v128.load(addr), l)));
    }
  }
}

/** dSᵀ = scale·Pᵀ ∘ (dPᵀ − D) in place over dpt [bcp][brp]; D of query i at dRow[i]. */
function gradScoresT(dpt: usize, pt: usize, bcp: i32, brp: i32, dRow: usize, scale: f32): void {
  const s = f32x4.splat(scale);
  for (let i = 0; i < brp; i += 4) {
    const dv = v128.load(dRow + <usize>i * 4);
    for (let j = 0; j < bcp; j++) {
      const off = (<usize>(j * brp + i)) * 4;
      const g = f32x4.mul(v128.load(pt + off), f32x4.sub(v128.load(dpt + off), dv));
      v128.store(dpt + off, f32x4.mul(g, s));
    }
  }
}

/** x[r, head, :] += acc[r][:d] for r < rows (acc rows dp floats apart). */
function addRows(x: usize, acc: usize, rows: i32, heads: i32, head: i32, d: i32, dp: i32): void {
  for (let r = 0; r < rows; r++) {
    const dst = at(x, r, heads, head, d, 0);
    const src = acc + <usize>(r * dp) * 4;
    for (let c = 0; c < d; c++) store<f32>(dst + <usize>c * 4, load<f32>(dst + <usize>c * 4) + load<f32>(src + <usize>c * 4));
  }
}

/**
 * Kernels.mergeAttention (algorithms.md §5, stable form), in place over `rows` (query, head)
 * rows of width d: L' = L + softplus(Lb − L), O' = O − σ(Lb − L)(O − Ob). L = −∞ takes (Ob, Lb);
 * Lb = −∞ keeps (O, L). softplus and σ are evaluated in f64 from one e^−|Δ|.
 */
export function mergeAttention(o: usize, lse: usize, ob: usize, lseb: usize, rows: i32, d: i32): void {
  for (let r = 0; r < rows; r++) {
    const l = load<f32>(lse + <usize>r * 4);
    const lb = load<f32>(lseb + <usize>r * 4);
    if (lb == -Infinity) continue;
    const row = o + <usize>(r * d) * 4;
    const rowb = ob + <usize>(r * d) * 4;
    if (l == -Infinity) {
      memory.copy(row, rowb, <usize>d * 4);
      store<f32>(lse + <usize>r * 4, lb);
      continue;
    }
    const delta = <f64>lb - <f64>l;
    const e = <f64>expf(<f32>-Math.abs(delta));
    // σ(Δ) and softplus(Δ) = max(Δ, 0) + log(1 + e^−|Δ|), both without overflow.
    const w = delta >= 0 ? 1 / (1 + e) : e / (1 + e);
    const softplus = max(delta, 0) + logd(1 + e);
    const wv = f32x4.splat(<f32>w);
    let c = 0;
    for (; c + 4 <= d; c += 4) {
      const x = v128.load(row + <usize>c * 4);
      v128.store(row + <usize>c * 4, f32x4.sub(x, f32x4.mul(wv, f32x4.sub(x, v128.load(rowb + <usize>c * 4)))));
    }
    for (; c < d; c++) {
      const x = load<f32>(row + <usize>c * 4);
      store<f32>(row + <usize>c * 4, x - <f32>w * (x - load<f32>(rowb + <usize>c * 4)));
    }
    store<f32>(lse + <usize>r * 4, <f32>(<f64>l + softplus));
  }
}
