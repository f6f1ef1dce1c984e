import type { Tensor } from '../../tensor/tensor.js';
import { checkCrossEntropy, checkIds, checkMatmul, checkSize, rowsOf, tableShape } from '../checks.js';
import type { AdamWOptions, MatmulOptions } from '../kernels.js';

/*
 * Plain-TypeScript dense kernels of the `reference` backend (every Kernels method except the
 * attention ones, which live in attention.ts). Dot products and row statistics accumulate in JS
 * numbers (float64) and are written as f32: this backend is the exactness yardstick for the
 * faster ones. Outputs must not alias inputs unless a method says it works in place.
 */

/**
 * C = op(A)·op(B) (+ C when `accumulate`). A is [M, K] ([K, M] when transA), B is [K, N]
 * ([N, K] when transB), C is [M, N]. Each C element is one float64 dot product.
 * @throws Error when a size does not match M, N, K.
 */
export function matmul(c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number, opts: MatmulOptions = {}): void {
  const { transA, transB } = checkMatmul(c, a, b, m, n, k, opts);
  const A = a.data;
  const B = b.data;
  const C = c.data;
  // Element (i, p) of op(A) is A[i·aRow + p·aCol]; element (p, j) of op(B) is B[p·bRow + j·bCol].
  const aRow = transA ? 1 : k;
  const aCol = transA ? m : 1;
  const bRow = transB ? 1 : n;
  const bCol = transB ? k : 1;
  const accumulate = opts.accumulate === true;
  for (let i = 0; i < m; i++) {
    const aBase = i * aRow;
    for (let j = 0; j < n; j++) {
      let sum = accumulate ? C[i * n + j]! : 0;
      let ai = aBase;
      let bi = j * bCol;
      for (let p = 0; p < k; p++) {
        sum += A[ai]! * B[bi]!;
        ai += aCol;
        bi += bRow;
      }
      C[i * n + j] = sum;
    }
  }
}

/**
 * RMSNorm (Zhang & Sennrich 2019): out[t, :] = x[t, :] · w · rstd[t], rstd[t] = 1/√(mean(x[t, :]²) + eps).
 * x, out [T, D]; w [D]; rstd [T] (written, saved for the backward).
 */
export function rmsnormForward(out: Tensor, rstd: Tensor, x: Tensor, w: Tensor, eps: number): void {
  const d = w.size;
  const t = rowsOf('rmsnormForward', 'x', x, d);
  checkSize('rmsnormForward', 'out', out, t * d, `T·D = ${t}·${d}`);
  checkSize('rmsnormForward', 'rstd', rstd, t, `T = ${t}`);
  const X = x.data;
  const W = w.data;
  const O = out.data;
  for (let r = 0; r < t; r++) {
    const base = r * d;
    let ss = 0;
    for (let i = 0; i < d; i++) ss += X[base + i]! * X[base + i]!;
    const s = 1 / Math.sqrt(ss / d + eps);
    rstd.data[r] = s;
    for (let i = 0; i < d; i++) O[base + i] = X[base + i]! * s * W[i]!;
  }
}

/**
 * Backward of {@link rmsnormForward}. With g = dout ∘ w:
 * dx = rstd · (g − x · rstd² · mean(g ∘ x)) (overwritten), dw += Σ_t dout ∘ x · rstd (accumulated).
 */
export function rmsnormBackward(dx: Tensor, dw: Tensor, dout: Tensor, x: Tensor, w: Tensor, rstd: Tensor): void {
  const d = w.size;
  const t = rowsOf('rmsnormBackward', 'x', x, d);
  checkSize('rmsnormBackward', 'dx', dx, t * d, `T·D = ${t}·${d}`);
  checkSize('rmsnormBackward', 'dout', dout, t * d, `T·D = ${t}·${d}`);
  checkSize('rmsnormBackward', 'dw', dw, d, `D = ${d}`);
  checkSize('rmsnormBackward', 'rstd', rstd, t, `T = ${t}`);
  const X = x.data;
  const W = w.data;
  const G = dout.data;
  const DX = dx.data;
  // dw sums over all T rows: keep that sum in float64 and add it to dw once.
  const dwSum = new Float64Array(d);
  for (let r = 0; r < t; r++) {
    const base = r * d;
    const s = rstd.data[r]!;
    let dot = 0;
    for (let i = 0; i < d; i++) dot += G[base + i]! * W[i]! * X[base + i]!;
    const c = (s * s * dot) / d;
    for (let i = 0; i < d; i++) {
      const xi = X[base + i]!;
      DX[base + i] = s * (G[base + i]! * W[i]! - xi * c);
      dwSum[i] = dwSum[i]! + G[base + i]! * xi * s;
    }
  }
  for (let i = 0; i < d; i++) dw.data[i] = dw.data[i]! + dwSum[i]!;
}

/**
 * Rotary position embedding (Su et al. 2021) in place on x [T, H, d] (must be 3-D, d even):
 * the pair (x[2i], x[2i+1]) of token t is rotated by angle positions[t]·theta^(−2i/d); `inverse`
 * rotates by the negative angle, which is also the backward (rotations are orthogonal).
 * Positions are the tokens' GLOBAL positions in the sequence (failure case F6).
 * @throws Error when x is not [positions.length, H, d] with d even.
 */
export function rope(x: Tensor, positions: Int32Array, theta: number, inverse: boolean): void {
  const s = x.shape;
  if (s.length !== 3 || s[0] !== positions.length || s[2]! % 2 !== 0) {
    throw new Error(`rope: x has shape [${s.join(', ')}], expected [T, H, d] with T = positions.length = ${positions.length} and d even`);
  }
  if (!(theta > 0) || !Number.isFinite(theta)) throw new Error(`rope: theta = ${theta} is invalid: it must be a positive finite number`);
  const [t, h, d] = s as [number, number, number];
  const half = d / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = Math.pow(theta, (-2 * i) / d);
  const X = x.data;
  const sign = inverse ? -1 : 1;
  for (let r = 0; r < t; r++) {
    const pos = positions[r]!;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i]!;
      const cos = Math.cos(angle);
      const sin = sign * Math.sin(angle);
      for (let head = 0; head < h; head++) {
        const base = (r * h + head) * d + 2 * i;
        const x0 = X[base]!;
        const x1 = X[base + 1]!;
        X[base] = x0 * cos - x1 * sin;
        X[base + 1] = x0 * sin + x1 * cos;
      }
    }
  }
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

/** SwiGLU (Shazeer 2020): out = silu(gate) ∘ up with silu(z) = z·σ(z); all [T, F]. */
export function swigluForward(out: Tensor, gate: Tensor, up: Tensor): void {
  checkSize('swigluForward', 'up', up, gate.size, `gate's size`);
  checkSize('swigluForward', 'out', out, gate.size, `gate's size`);
  const Gt = gate.data;
  const U = up.data;
  const O = out.data;
  for (let i = 0; i < Gt.length; i++) {
    const g = Gt[i]!;
    O[i] = g * sigmoid(g) * U[i]!;
  }
}

/** Backward of {@link swigluForward}: dup = dout ∘ silu(gate), dgate = dout ∘ up ∘ σ(gate)(1 + gate(1 − σ(gate))); both overwritten. */
export function swigluBackward(dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor): void {
  for (const [name, t] of [['up', up], ['dout', dout], ['dgate', dgate], ['dup', dup]] as const) {
    checkSize('swigluBackward', name, t, gate.size, `gate's size`);
  }
  const Gt = gate.data;
  const U = up.data;
  const D = dout.data;
  for (let i = 0; i < Gt.length; i++) {
    const g = Gt[i]!;
    const sg = sigmoid(g);
    dup.data[i] = D[i]! * g * sg;
    dgate.data[i] = D[i]! * U[i]! * sg * (1 + g * (1 - sg));
  }
}

/**
 * Softmax cross-entropy per row, natural log. logits [T, V] (overwritten with
 * dlogits = gradScale·(softmax − onehot), 0 for ignored rows), labels [T] in [0, V) or −1
 * (ignored), losses [T] (0 for ignored rows). Returns Σ losses of the valid rows in float64.
 * @throws Error naming the row and the label when a label is outside [−1, V).
 */
export function crossEntropy(logits: Tensor, labels: Int32Array, losses: Tensor, gradScale: number): number {
  const t = labels.length;
  const v = checkCrossEntropy(logits, labels, losses);
  if (t === 0) return 0;
  const L = logits.data;
  let total = 0;
  for (let r = 0; r < t; r++) {
    const label = labels[r]!;
    const base = r * v;
    if (label === -1) {
      losses.data[r] = 0;
      L.fill(0, base, base + v);
      continue;
    }
    if (!Number.isInteger(label) || label < 0 || label >= v) {
      throw new Error(`crossEntropy: labels[${r}] = ${label} is invalid: it must be in [0, ${v}) or −1 (ignored)`);
    }
    let max = -Infinity;
    for (let i = 0; i < v; i++) max = Math.max(max, L[base + i]!);
    let sum = 0;
    for (let i = 0; i < v; i++) sum += Math.exp(L[base + i]! - max);
    const logZ = max + Math.log(sum);
    const loss = logZ - L[base + label]!;
    losses.data[r] = loss;
    total += loss;
    for (let i = 0; i < v; i++) L[base + i] = gradScale * Math.exp(L[base + i]! - logZ);
    L[base + label] = L[base + label]! - gradScale;
  }
  return total;
}

/**
 * out[t, :] = table[ids[t], :]; table [V, D] (must be 2-D), out [T, D].
 * @throws Error naming the position of an id outside [0, V).
 */
export function embeddingForward(out: Tensor, table: Tensor, ids: Int32Array): void {
  const [v, d] = tableShape('embeddingForward', table);
  checkSize('embeddingForward', 'out', out, ids.length * d, `T·D = ${ids.length}·${d}`);
  checkIds('embeddingForward', 'ids', ids, v, false);
  for (let r = 0; r < ids.length; r++) out.data.set(table.data.subarray(ids[r]! * d, ids[r]! * d + d), r * d);
}

/** dtable[ids[t], :] += dout[t, :]; dtable [V, D] (must be 2-D), dout [T, D]. Repeated ids accumulate. */
export function embeddingBackward(dtable: Tensor, dout: Tensor, ids: Int32Array): void {
  const [v, d] = tableShape('embeddingBackward', dtable);
  checkSize('embeddingBackward', 'dout', dout, ids.length * d, `T·D = ${ids.length}·${d}`);
  checkIds('embeddingBackward', 'ids', ids, v, false);
  const DT = dtable.data;
  const DO = dout.data;
  for (let r = 0; r < ids.length; r++) {
    const base = ids[r]! * d;
    for (let i = 0; i < d; i++) DT[base + i] = DT[base + i]! + DO[r * d + i]!;
  }
}

/**
 * One AdamW step in place (Loshchilov & Hutter 2019, the PyTorch form):
 * m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; m̂ = m/(1−β1^step); v̂ = v/(1−β2^step);
 * p ← p·(1 − lr·weightDecay) − lr·m̂/(√v̂ + eps). param, grad, m, v have equal sizes.
 * @throws Error when sizes differ or step is not a positive integer.
 */
export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamWOptions): void {
  for (const [name, t] of [['grad', grad], ['m', m], ['v', v]] as const) checkSize('adamw', name, t, param.size, `param's size`);
  if (!Number.isInteger(opts.step) || opts.step < 1) throw new Error(`adamw: step = ${opts.step} is invalid: it must be a positive integer (1-based)`);
  const { lr, beta1, beta2, eps, weightDecay, step } = opts;
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  const decay = 1 - lr * weightDecay;
  const P = param.data;
  const G = grad.data;
  const M = m.data;
  const V = v.data;
  for (let i = 0; i < P.length; i++) {
    const g = G[i]!;
    const mi = beta1 * M[i]! + (1 - beta1) * g;
    const vi = beta2 * V[i]! + (1 - beta2) * g * g;
    M[i] = mi;
    V[i] = vi;
    P[i] = P[i]! * decay - (lr * (mi / bc1)) / (Math.sqrt(vi / bc2) + eps);
  }
}

/** y += alpha · x (same size). */
export function axpy(y: Tensor, x: Tensor, alpha: number): void {
  checkSize('axpy', 'x', x, y.size, `y's size`);
  const Y = y.data;
  const X = x.data;
  for (let i = 0; i < Y.length; i++) Y[i] = Y[i]! + alpha * X[i]!;
}

/** x *= alpha. */
export function scale(x: Tensor, alpha: number): void {
  const X = x.data;
  for (let i = 0; i < X.length; i++) X[i] = X[i]! * alpha;
}

/** Σ x², accumulated in float64. */
export function sumSquares(x: Tensor): number {
  const X = x.data;
  let s = 0;
  for (let i = 0; i < X.length; i++) s += X[i]! * X[i]!;
  return s;
}
