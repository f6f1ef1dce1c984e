import { addWide, dotWide, expv, hmax, hsumWide, logd } from './simd';

/*
 * Row-wise and element-wise kernels (every Kernels method except matmul and attention). Sums
 * that the reference backend keeps in float64 (row statistics, Σx², the cross-entropy partition
 * function, RMSNorm's dw) are widened to f64 here too; element-wise math runs in f32x4 with a
 * scalar tail that reuses the same vector expression on lane 0.
 */

/** RMSNorm forward: out[r] = x[r]·w·rstd[r], rstd[r] = 1/√(mean(x[r]²) + eps); x, out [t, d]. */
export function rmsnormForward(out: usize, rstd: usize, x: usize, w: usize, t: i32, d: i32, eps: f64): void {
  for (let r = 0; r < t; r++) {
    const xr = x + <usize>r * d * 4;
    const or = out + <usize>r * d * 4;
    let acc = f64x2.splat(0);
    let i = 0;
    for (; i + 4 <= d; i += 4) {
      const v = v128.load(xr + <usize>i * 4);
      acc = dotWide(acc, v, v);
    }
    let ss = hsumWide(acc);
    for (; i < d; i++) {
      const v = <f64>load<f32>(xr + <usize>i * 4);
      ss += v * v;
    }
    const s = <f32>(1 / Math.sqrt(ss / d + eps));
    store<f32>(rstd + <usize>r * 4, s);
    const sv = f32x4.splat(s);
    i = 0;
    for (; i + 4 <= d; i += 4) {
      v128.store(or + <usize>i * 4, f32x4.mul(f32x4.mul(v128.load(xr + <usize>i * 4), sv), v128.load(w + <usize>i * 4)));
    }
    for (; i < d; i++) store<f32>(or + <usize>i * 4, load<f32>(xr + <usize>i * 4) * s * load<f32>(w + <usize>i * 4));
  }
}

/** Scratch bytes {@link rmsnormBackward} needs: the f64 dw sum. */
export function rmsnormBackwardScratchBytes(d: i32): i32 {
  return d * 8;
}

/**
 * RMSNorm backward. With g = dout ∘ w: dx = rstd·(g − x·rstd²·mean(g ∘ x)) (overwritten),
 * dw += Σ_r dout ∘ x·rstd (summed over rows in f64 in scratch, added to dw once). Computed in
 * f64x2 like the reference: for small D, g·w and x·c nearly cancel and f32 would lose dx.
 */
export function rmsnormBackward(dx: usize, dw: usize, dout: usize, x: usize, w: usize, rstd: usize, t: i32, d: i32, scratch: usize): void {
  memory.fill(scratch, 0, <usize>d * 8);
  for (let r = 0; r < t; r++) {
    const base = <usize>r * d * 4;
    const s = <f64>load<f32>(rstd + <usize>r * 4);
    let acc = f64x2.splat(0);
    let i = 0;
    for (; i + 2 <= d; i += 2) {
      const off = base + <usize>i * 4;
      acc = f64x2.add(acc, f64x2.mul(f64x2.mul(load2(dout + off, 2), load2(w + <usize>i * 4, 2)), load2(x + off, 2)));
    }
    let dot = hsumWide(acc);
    if (i < d) {
      const off = base + <usize>i * 4;
      dot += <f64>load<f32>(dout + off) * <f64>load<f32>(w + <usize>i * 4) * <f64>load<f32>(x + off);
    }
    const c = f64x2.splat((s * s * dot) / d);
    const sv = f64x2.splat(s);
    i = 0;
    for (; i + 2 <= d; i += 2) rmsnormBackLanes(dx, dout, x, w, scratch, base, i, sv, c, 2);
    if (i < d) rmsnormBackLanes(dx, dout, x, w, scratch, base, i, sv, c, 1);
  }
  for (let i = 0; i < d; i++) store<f32>(dw + <usize>i * 4, <f32>(<f64>load<f32>(dw + <usize>i * 4) + load<f64>(scratch + <usize>i * 8)));
}

/** dx and the dw sum of `lanes` (2 or 1) elements from column i of the row at byte offset base. */
// @ts-ignore: decorator
@inline function rmsnormBackLanes(dx: usize, dout: usize, x: usize, w: usize, dwSum: usize, base: usize, i: i32, s: v128, c: v128, lanes: i32): void {
  const off = base + <usize>i * 4;
  const g = load2(dout + off, lanes);
  const xv = load2(x + off, lanes);
  store2(dx + off, f64x2.mul(s, f64x2.sub(f64x2.mul(g, load2(w + <usize>i * 4, lanes)), f64x2.mul(xv, c))), lanes);
  const sumAt = dwSum + <usize>i * 8;
  const sum = f64x2.add(lanes == 2 ? v128.load(sumAt) : v128.load64_zero(sumAt), f64x2.mul(f64x2.mul(g, xv), s));
  if (lanes == 2) v128.store(sumAt, sum);
  else v128.store64_lane(sumAt, sum, 0);
}

/** (sin x, cos x) as f64x2 for |x| < 2^30, error < 1e-15: x = k·π/2 + r, |r| ≤ π/4, Taylor series. */
// @ts-ignore: decorator
@inline function sincos(x: f64): v128 {
  const k = Math.round(x * 0.6366197723675814);
  // π/2 in two parts (fdlibm pio2_1, pio2_1t): k·PIO2_HI is exact for |k| < 2^20.
  const r = (x - k * 1.5707963267341256) - k * 6.077100506506192e-11;
  const r2 = r * r;
  const s = r * (1 - r2 / 6 * (1 - r2 / 20 * (1 - r2 / 42 * (1 - r2 / 72 * (1 - r2 / 110 * (1 - r2 / 156))))));
  const c = 1 - r2 / 2 * (1 - r2 / 12 * (1 - r2 / 30 * (1 - r2 / 56 * (1 - r2 / 90 * (1 - r2 / 132 * (1 - r2 / 182))))));
  const q = <i32>(<i64>k & 3);
  return f64x2(q == 0 ? s : q == 1 ? c : q == 2 ? -s : -c, q == 0 ? c : q == 1 ? -s : q == 2 ? -c : s);
}

/**
 * Rotary embedding in place on x [t, h, d]: pair (2i, 2i+1) of token r rotated by
 * positions[r]·invFreq[i] (`sign` −1 rotates backwards). positions: t i32 values; invFreq: d/2
 * f64 values (θ^(−2i/d), computed by the caller).
 */
export function rope(x: usize, positions: usize, invFreq: usize, t: i32, h: i32, d: i32, sign: f64): void {
  const half = d / 2;
  for (let r = 0; r < t; r++) {
    const pos = <f64>load<i32>(positions + <usize>r * 4);
    for (let i = 0; i < half; i++) {
      const sc = sincos(pos * load<f64>(invFreq + <usize>i * 8));
      const sin = <f32>(sign * f64x2.extract_lane(sc, 0));
      const cos = <f32>f64x2.extract_lane(sc, 1);
      for (let head = 0; head < h; head++) {
        const p = x + (<usize>(r * h + head) * d + 2 * i) * 4;
        const x0 = load<f32>(p);
        const x1 = load<f32>(p, 4);
        store<f32>(p, x0 * cos - x1 * sin);
        store<f32>(p, x0 * sin + x1 * cos, 4);
      }
    }
  }
}

/** σ(g) per lane, through e^−g (+∞ for g < −88.7 gives σ = 0). */
// @ts-ignore: decorator
@inline function sigmoidv(g: v128): v128 {
  return f32x4.div(f32x4.splat(1), f32x4.add(f32x4.splat(1), expv(f32x4.neg(g))));
}

// @ts-ignore: decorator
@inline function swigluv(g: v128, u: v128): v128 {
  return f32x4.mul(f32x4.mul(g, sigmoidv(g)), u);
}

/** SwiGLU forward over n elements: out = silu(gate) ∘ up. */
export function swigluForward(out: usize, gate: usize, up: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i * 4;
    v128.store(out + off, swigluv(v128.load(gate + off), v128.load(up + off)));
  }
  for (; i < n; i++) {
    const off = <usize>i * 4;
    store<f32>(out + off, f32x4.extract_lane(swigluv(f32x4.splat(load<f32>(gate + off)), f32x4.splat(load<f32>(up + off))), 0));
  }
}

/** dgate (even call) or dup (odd call) lanes of the SwiGLU backward. */
// @ts-ignore: decorator
@inline function swigluBackv(dgate: usize, dup: usize, off: usize, g: v128, u: v128, dy: v128, lanes: i32): void {
  const s = sigmoidv(g);
  const vup = f32x4.mul(dy, f32x4.mul(g, s));
  // dgate = dy·u·σ(g)·(1 + g·(1 − σ(g)))
  const vgate = f32x4.mul(f32x4.mul(f32x4.mul(dy, u), s), f32x4.add(f32x4.splat(1), f32x4.mul(g, f32x4.sub(f32x4.splat(1), s))));
  if (lanes == 4) {
    v128.store(dup + off, vup);
    v128.store(dgate + off, vgate);
  } else {
    store<f32>(dup + off, f32x4.extract_lane(vup, 0));
    store<f32>(dgate + off, f32x4.extract_lane(vgate, 0));
  }
}

/** SwiGLU backward over n elements: dup = dout ∘ silu(gate), dgate = dout ∘ up ∘ σ(gate)(1 + gate(1 − σ(gate))). */
export function swigluBackward(dgate: usize, dup: usize, dout: usize, gate: usize, up: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i * 4;
    swigluBackv(dgate, dup, off, v128.load(gate + off), v128.load(up + off), v128.load(dout + off), 4);
  }
  for (; i < n; i++) {
    const off = <usize>i * 4;
    swigluBackv(dgate, dup, off, f32x4.splat(load<f32>(gate + off)), f32x4.splat(load<f32>(up + off)), f32x4.splat(load<f32>(dout + off)), 1);
  }
}

/**
 * Softmax cross-entropy over t rows of v logits (labels: t i32 values in [0, v) or −1, checked
 * by the caller). Writes losses and, over the logits, gradScale·(softmax − onehot); ignored rows
 * get 0. Returns Σ losses of the valid rows (f64). The partition function is summed in f64.
 */
export function crossEntropy(logits: usize, labels: usize, losses: usize, t: i32, v: i32, gradScale: f32): f64 {
  let total: f64 = 0;
  for (let r = 0; r < t; r++) {
    const label = load<i32>(labels + <usize>r * 4);
    const row = logits + <usize>r * v * 4;
    if (label < 0) {
      store<f32>(losses + <usize>r * 4, 0);
      memory.fill(row, 0, <usize>v * 4);
      continue;
    }
    let mv = f32x4.splat(-Infinity);
    let i = 0;
    for (; i + 4 <= v; i += 4) mv = f32x4.pmax(mv, v128.load(row + <usize>i * 4));
    let mx = hmax(mv);
    for (; i < v; i++) mx = max(mx, load<f32>(row + <usize>i * 4));
    const mxv = f32x4.splat(mx);
    let acc = f64x2.splat(0);
    i = 0;
    for (; i + 4 <= v; i += 4) acc = addWide(acc, expv(f32x4.sub(v128.load(row + <usize>i * 4), mxv)));
    let sum = hsumWide(acc);
    for (; i < v; i++) sum += <f64>f32x4.extract_lane(expv(f32x4.splat(load<f32>(row + <usize>i * 4) - mx)), 0);
    const logZ = <f64>mx + logd(sum);
    const loss = logZ - <f64>load<f32>(row + <usize>label * 4);
    store<f32>(losses + <usize>r * 4, <f32>loss);
    total += loss;
    const lz = f32x4.splat(<f32>logZ);
    const gs = f32x4.splat(gradScale);
    i = 0;
    for (; i + 4 <= v; i += 4) {
      const p = row + <usize>i * 4;
      v128.store(p, f32x4.mul(gs, expv(f32x4.sub(v128.load(p), lz))));
    }
    for (; i < v; i++) {
      const p = row + <usize>i * 4;
      store<f32>(p, f32x4.extract_lane(f32x4.mul(gs, expv(f32x4.sub(f32x4.splat(load<f32>(p)), lz))), 0));
    }
    const at = row + <usize>label * 4;
    store<f32>(at, load<f32>(at) - gradScale);
  }
  return total;
}

/** out[r, :] = table[ids[r], :] for t rows of width d (ids: t i32 values in [0, V), checked by the caller). */
export function embeddingForward(out: usize, table: usize, ids: usize, t: i32, d: i32): void {
  for (let r = 0; r < t; r++) {
    memory.copy(out + <usize>r * d * 4, table + <usize>load<i32>(ids + <usize>r * 4) * d * 4, <usize>d * 4);
  }
}

/** dtable[ids[r], :] += dout[r, :]; repeated ids accumulate. */
export function embeddingBackward(dtable: usize, dout: usize, ids: usize, t: i32, d: i32): void {
  for (let r = 0; r < t; r++) axpy(dtable + <usize>load<i32>(ids + <usize>r * 4) * d * 4, dout + <usize>r * d * 4, 1, d);
}

/** y += alpha·x over n elements. */
export function axpy(y: usize, x: usize, alpha: f32, n: i32): void {
  const av = f32x4.splat(alpha);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i * 4;
    v128.store(y + off, f32x4.add(v128.load(y + off), f32x4.mul(av, v128.load(x + off))));
  }
  for (; i < n; i++) store<f32>(y + <usize>i * 4, load<f32>(y + <usize>i * 4) + alpha * load<f32>(x + <usize>i * 4));
}

/** x *= alpha over n elements. */
export function scale(x: usize, alpha: f32, n: i32): void {
  const av = f32x4.splat(alpha);
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(x + <usize>i * 4, f32x4.mul(av, v128.load(x + <usize>i * 4)));
  for (; i < n; i++) store<f32>(x + <usize>i * 4, load<f32>(x + <usize>i * 4) * alpha);
}

/** Σ x² over n elements, summed in f64. */
export function sumSquares(x: usize, n: i32): f64 {
  let acc = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(x + <usize>i * 4);
    acc = dotWide(acc, v, v);
  }
  let s = hsumWide(acc);
  for (; i < n; i++) {
    const v = <f64>load<f32>(x + <usize>i * 4);
    s += v * v;
  }
  return s;
}

/** Load `lanes` (2 or 1) f32 at p into an f64x2. */
// @ts-ignore: decorator
@inline function load2(p: usize, lanes: i32): v128 {
  return f64x2.promote_low_f32x4(lanes == 2 ? v128.load64_zero(p) : v128.load32_zero(p));
}

/** Store the f64x2 x as `lanes` (2 or 1) f32 at p. */
// @ts-ignore: decorator
@inline function store2(p: usize, x: v128, lanes: i32): void {
  const f = f32x4.demote_f64x2_zero(x);
  if (lanes == 2) v128.store64_lane(p, f, 0);
  else v128.store32_lane(p, f, 0);
}

/**
 * AdamW on `lanes` (2 or 1) elements at byte offset off, in f64 like the reference so results
 * round the same way: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; p ← p·decay − lr·(m/bc1)/(√(v/bc2) + eps).
 */
// @ts-ignore: decorator
@inline function adamwLanes(param: usize, grad: usize, m: usize, v: usize, off: usize, lanes: i32, lr: f64, b1: f64, b2: f64, eps: f64, bc1: f64, bc2: f64, decay: f64): void {
  const g = load2(grad + off, lanes);
  const mn = f64x2.add(f64x2.mul(f64x2.splat(b1), load2(m + off, lanes)), f64x2.mul(f64x2.splat(1 - b1), g));
  const vn = f64x2.add(f64x2.mul(f64x2.splat(b2), load2(v + off, lanes)), f64x2.mul(f64x2.mul(f64x2.splat(1 - b2), g), g));
  const step = f64x2.div(f64x2.mul(f64x2.splat(lr), f64x2.div(mn, f64x2.splat(bc1))), f64x2.add(f64x2.sqrt(f64x2.div(vn, f64x2.splat(bc2))), f64x2.splat(eps)));
  store2(m + off, mn, lanes);
  store2(v + off, vn, lanes);
  store2(param + off, f64x2.sub(f64x2.mul(load2(param + off, lanes), f64x2.splat(decay)), step), lanes);
}

/**
 * One AdamW step in place over n elements (Loshchilov & Hutter 2019, PyTorch form).
 * bc1 = 1 − β1^step, bc2 = 1 − β2^step, decay = 1 − lr·weightDecay (computed by the caller).
 */
export function adamw(param: usize, grad: usize, m: usize, v: usize, n: i32, lr: f64, b1: f64, b2: f64, eps: f64, bc1: f64, bc2: f64, decay: f64): void {
  let i = 0;
  for (; i + 2 <= n; i += 2) adamwLanes(param, grad, m, v, <usize>i * 4, 2, lr, b1, b2, eps, bc1, bc2, decay);
  if (i < n) adamwLanes(param, grad, m, v, <usize>i * 4, 1, lr, b1, b2, eps, bc1, bc2, decay);
}
