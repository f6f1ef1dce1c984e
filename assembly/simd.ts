/*
 * SIMD building blocks shared by every kernel. The module is compiled twice (see
 * scripts/build-wasm.mjs): with relaxed SIMD, `madd` is one fused multiply-add; without, it is
 * a multiply then an add. Nothing here uses static data: the module imports the rank's arena
 * memory and must not own a single byte of it (docs/kernels.md).
 */

/** a·b + c per lane: fused (relaxed SIMD build) or multiply-then-add (plain SIMD build). */
// @ts-ignore: decorator
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** x rounded up to a multiple of `to` (> 0): padded tile and panel sizes. */
// @ts-ignore: decorator
@inline export function roundUp(x: i32, to: i32): i32 {
  return (x + to - 1) / to * to;
}

/** Below this, e^x < 2^−126 is returned as 0 (the smallest normal f32; −∞ maps to 0). */
const EXP_LO: f32 = -87.33654;
/** Above this, e^x is returned as +∞. */
const EXP_HI: f32 = 88.72283;
/** Reduction keeps 2^n normal: n = round(x·log2 e) must stay in [−126, 127]. */
const EXP_CLAMP_HI: f32 = 88.0;

/** 1.5·2^23: adding it rounds a float of magnitude < 2^22 to an integer held in the low mantissa bits. */
const ROUND_MAGIC: f32 = 12582912.0;

/**
 * e^x for x already clamped to [−88, 88] (Cephes expf: x = n·ln2 + r, |r| ≤ ln2/2, e^r as
 * 1 + r + r²·p(r), 2^n by building the exponent bits). p is Cephes' degree-5 minimax
 * polynomial (relative error ≤ 2 ulp), or with `short` a degree-3 one fitted here for the
 * attention tiles (relative error 2.3e-7 on the interval, 2 fewer fused multiply-adds per
 * 4 lanes; coefficients from an iteratively reweighted least-squares fit of (e^r − 1 − r)/r²
 * in relative error, /usr/bin/python3 + numpy). n = round(x·log2 e) comes from adding
 * {@link ROUND_MAGIC} (round to nearest even, like f32x4.nearest), whose bits then hold n in
 * the mantissa: (bits + 127) << 23 shifts the magic's own bits out and leaves 2^n's exponent,
 * with no float-to-int conversion (trunc_sat is a long instruction sequence on x86).
 * n = −127 (x ≤ −87.8) builds the bits of 0.0.
 */
// @ts-ignore: decorator
@inline function expReduced(xc: v128, short: bool): v128 {
  const k = madd(xc, f32x4.splat(1.44269504088896341), f32x4.splat(ROUND_MAGIC));
  const n = f32x4.sub(k, f32x4.splat(ROUND_MAGIC));
  // ln2 split in a high part exact in f32 and a low correction (Cephes C1, C2).
  let r = madd(n, f32x4.splat(-0.693359375), xc);
  r = madd(n, f32x4.splat(2.12194440e-4), r);
  let p: v128;
  if (short) {
    p = f32x4.splat(8.346440270543098e-3);
    p = madd(p, r, f32x4.splat(4.192711040377617e-2));
    p = madd(p, r, f32x4.splat(1.6666781902313232e-1));
    p = madd(p, r, f32x4.splat(4.999886155128479e-1));
  } else {
    p = f32x4.splat(1.9875691500e-4);
    p = madd(p, r, f32x4.splat(1.3981999507e-3));
    p = madd(p, r, f32x4.splat(8.3334519073e-3));
    p = madd(p, r, f32x4.splat(4.1665795894e-2));
    p = madd(p, r, f32x4.splat(1.6666665459e-1));
    p = madd(p, r, f32x4.splat(5.0000001201e-1));
  }
  const y = f32x4.add(madd(p, f32x4.mul(r, r), r), f32x4.splat(1));
  return f32x4.mul(y, i32x4.shl(i32x4.add(k, i32x4.splat(127)), 23));
}

/**
 * e^x per lane, relative error ≤ 2 ulp of f32 on [−87.3, 88] (Cephes expf: x = n·ln2 + r,
 * |r| ≤ ln2/2, e^r = 1 + r + r²·p(r) with Cephes' degree-5 p, 2^n by building the exponent
 * bits). Returns 0 below −87.34 (so −∞ gives 0, the masked-score case) and +∞ above 88.72. Inputs in
 * (88, 88.72] are clamped to 88 (so that 2^n stays a normal f32) and return e^88 ≈ 1.65e38, an
 * underestimate; no kernel passes such inputs where it matters: softmax and cross-entropy
 * exponents are ≤ 0 after subtracting the maximum, and the SiLU gate σ(g) = 1/(1 + e^−g) is
 * below 1e−38 there either way.
 */
// @ts-ignore: decorator
@inline export function expv(x: v128): v128 {
  let e = expReduced(f32x4.pmin(f32x4.pmax(x, f32x4.splat(EXP_LO)), f32x4.splat(EXP_CLAMP_HI)), false);
  e = v128.andnot(e, f32x4.lt(x, f32x4.splat(EXP_LO)));
  return v128.bitselect(f32x4.splat(Infinity), e, f32x4.gt(x, f32x4.splat(EXP_HI)));
}

/**
 * e^x per lane for the attention tiles' softmax exponents (x ≤ 0 up to rounding, or −∞),
 * relative error ≤ 2.3e-7 on [−87.3, 0] (the short polynomial of {@link expReduced}; the
 * attention results are checked against float64 within 1e-5): the reduction of {@link expv}
 * without its special cases. Inputs are clamped below at −88, where 2^n builds to the bits of
 * 0.0 (n = −127) or 2^−126, so −∞ and every x ≤ −88 give 0 (or below 1.2e−38), never NaN;
 * there is no upper clamp, so x must stay below 88. Six fewer instructions than expv, in the
 * tiles' inner loops.
 */
// @ts-ignore: decorator
@inline export function expSoftmax(x: v128): v128 {
  return expReduced(f32x4.pmax(x, f32x4.splat(-88.0)), true);
}

/** Scalar e^x with the accuracy of {@link expv} (lane 0 of the same computation). */
// @ts-ignore: decorator
@inline export function expf(x: f32): f32 {
  return f32x4.extract_lane(expv(f32x4.splat(x)), 0);
}

/**
 * Natural log for x > 0 in f64, relative error < 1e-12: x = 2^e·m with m in [√½, √2),
 * log m = 2·atanh(f), f = (m − 1)/(m + 1), |f| ≤ 0.1716, series to f^17.
 * Returns −∞ for 0 and NaN for negative x or NaN.
 */
export function logd(x: f64): f64 {
  if (x == 0) return -Infinity;
  if (!(x > 0)) return NaN;
  if (x == Infinity) return Infinity;
  let bits = reinterpret<u64>(x);
  let e: i64 = <i64>((bits >> 52) & 0x7ff);
  if (e == 0) {
    // Subnormal: scale into the normal range first.
    bits = reinterpret<u64>(x * 18014398509481984.0); // 2^54
    e = <i64>((bits >> 52) & 0x7ff) - 54;
  }
  e -= 1023;
  let m = reinterpret<f64>((bits & 0x000fffffffffffff) | 0x3ff0000000000000);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e += 1;
  }
  const f = (m - 1) / (m + 1);
  const f2 = f * f;
  const s = f2 * (1.0 / 3 + f2 * (1.0 / 5 + f2 * (1.0 / 7 + f2 * (1.0 / 9 + f2 * (1.0 / 11 + f2 * (1.0 / 13 + f2 * (1.0 / 15 + f2 / 17)))))));
  return <f64>e * 0.6931471805599453 + 2 * f * (1 + s);
}

/** Largest of the four lanes (NaN-free inputs). */
// @ts-ignore: decorator
@inline export function hmax(v: v128): f32 {
  const s = f32x4.pmax(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(f32x4.pmax(s, i32x4.shuffle(s, s, 1, 0, 3, 2)), 0);
}

/** Lanes 0, 1 (hi false) or 2, 3 (hi true) of an f32x4 as f64x2. */
// @ts-ignore: decorator
@inline export function widen(v: v128, hi: bool): v128 {
  return f64x2.promote_low_f32x4(hi ? i32x4.shuffle(v, v, 2, 3, 0, 1) : v);
}

/** acc + Σ lanes of a·b, products and sums in f64 (exact products, like the reference's doubles). */
// @ts-ignore: decorator
@inline export function dotWide(acc: v128, a: v128, b: v128): v128 {
  acc = f64x2.add(acc, f64x2.mul(widen(a, false), widen(b, false)));
  return f64x2.add(acc, f64x2.mul(widen(a, true), widen(b, true)));
}

/** acc + Σ lanes of v, widened to f64. */
// @ts-ignore: decorator
@inline export function addWide(acc: v128, v: v128): v128 {
  return f64x2.add(f64x2.add(acc, widen(v, false)), widen(v, true));
}

/** Sum of the two f64 lanes. */
// @ts-ignore: decorator
@inline export function hsumWide(v: v128): f64 {
  return f64x2.extract_lane(v, 0) + f64x2.extract_lane(v, 1);
}

/**
 * Transpose a 4×4 f32 block: reads rows src + r·srcStride (4 floats each, r < 4) and writes
 * column c as 4 contiguous floats at dst + c·dstStride. Strides in bytes.
 */
// @ts-ignore: decorator
@inline export function transpose4x4(src: usize, srcStride: usize, dst: usize, dstStride: usize): void {
  const r0 = v128.load(src);
  const r1 = v128.load(src + srcStride);
  const r2 = v128.load(src + 2 * srcStride);
  const r3 = v128.load(src + 3 * srcStride);
  const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5);
  const t1 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
  const t2 = i32x4.shuffle(r0, r1, 2, 6, 3, 7);
  const t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
  v128.store(dst, i32x4.shuffle(t0, t1, 0, 1, 4, 5));
  v128.store(dst + dstStride, i32x4.shuffle(t0, t1, 2, 3, 6, 7));
  v128.store(dst + 2 * dstStride, i32x4.shuffle(t2, t3, 0, 1, 4, 5));
  v128.store(dst + 3 * dstStride, i32x4.shuffle(t2, t3, 2, 3, 6, 7));
}
