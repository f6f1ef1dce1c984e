/**
 * Float64 references of the model's layers and of the whole LLaMA-style model, written plainly
 * for tests, plus central finite differences for their gradients. Layouts follow the f32 code:
 * row-major, matrices [out, in] with y = x·Wᵀ, q [T, H, d], k and v [T, Hkv, d].
 */

import type { ModelConfig } from '../../src/model/config.js';
import { refBackward, refForward } from './attention-ref.js';

/** op(A)·op(B) for A [M, K] ([K, M] when transA) and B [K, N] ([N, K] when transB) → [M, N]. */
export function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, m: number, n: number, k: number, transA = false, transB = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i]! : a[i * k + p]!) * (transB ? b[j * k + p]! : b[p * n + j]!);
      c[i * n + j] = s;
    }
  }
  return c;
}

/** RMSNorm of x [T, D] with gain w [D]: x·w/√(mean(x²) + eps). */
export function rmsnormRef(x: ArrayLike<number>, w: ArrayLike<number>, eps: number): Float64Array {
  const d = w.length;
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[r * d + i]! ** 2;
    const s = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) out[r * d + i] = x[r * d + i]! * s * w[i]!;
  }
  return out;
}

/** RoPE of x [T, H, d]: pair (2i, 2i+1) of token t rotated by positions[t]·theta^(−2i/d). */
export function ropeRef(x: ArrayLike<number>, positions: ArrayLike<number>, theta: number, heads: number, d: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let t = 0; t < positions.length; t++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < d / 2; i++) {
        const angle = positions[t]! / theta ** ((2 * i) / d);
        const base = (t * heads + h) * d + 2 * i;
        out[base] = x[base]! * Math.cos(angle) - x[base + 1]! * Math.sin(angle);
        out[base + 1] = x[base]! * Math.sin(angle) + x[base + 1]! * Math.cos(angle);
      }
    }
  }
  return out;
}

/** silu(gate)·up elementwise, silu(z) = z/(1 + e^−z). */
export function swigluRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  return Float64Array.from({ length: gate.length }, (_, i) => (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!);
}

/** Per-row cross-entropy −log softmax(logits)[label] of logits [T, V]; 0 where label = −1. */
export function crossEntropyRef(logits: ArrayLike<number>, labels: ArrayLike<number>): Float64Array {
  const t = labels.length;
  const v = logits.length / t;
  const losses = new Float64Array(t);
  for (let r = 0; r < t; r++) {
    if (labels[r] === -1) continue;
    let max = -Infinity;
    for (let i = 0; i < v; i++) max = Math.max(max, logits[r * v + i]!);
    let sum = 0;
    for (let i = 0; i < v; i++) sum += Math.exp(logits[r * v + i]! - max);
    losses[r] = max + Math.log(sum) - logits[r * v + labels[r]!]!;
  }
  return losses;
}

/** Central finite differences (f(x + h·e_i) − f(x − h·e_i)) / 2h of a float64 function; x is restored. */
export function centralDifference(f: (x: Float64Array) => number, x: Float64Array, h = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const xi = x[i]!;
    x[i] = xi + h;
    const plus = f(x);
    x[i] = xi - h;
    const minus = f(x);
    x[i] = xi;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((x, i) => x + b[i]!);
}

/** Named float64 parameters, with the names and shapes of src/model/params.ts. */
export type RefParams = Map<string, Float64Array>;

/**
 * Σ over valid labels of the token losses of the whole model in float64 (causal attention over
 * the given token order, RoPE at `positions`). tokens, positions, labels [T].
 */
export function refModelLoss(config: ModelConfig, p: RefParams, tokens: ArrayLike<number>, positions: ArrayLike<number>, labels: ArrayLike<number>): number {
  const { dim: D, heads: H, kvHeads: Hkv, ffnDim: F, vocabSize: V, normEps: eps, ropeTheta: theta } = config;
  const d = D / H;
  const T = tokens.length;
  const get = (name: string): Float64Array => p.get(name)!;
  let x: Float64Array = new Float64Array(T * D);
  for (let t = 0; t < T; t++) x.set(get('tok_embeddings').subarray(tokens[t]! * D, tokens[t]! * D + D), t * D);
  for (let l = 0; l < config.layers; l++) {
    const w = (n: string): Float64Array => get(`layers.${l}.${n}`);
    const xn = rmsnormRef(x, w('attn_norm'), eps);
    const q = ropeRef(matmulRef(xn, w('attn.wq'), T, H * d, D, false, true), positions, theta, H, d);
    const k = ropeRef(matmulRef(xn, w('attn.wk'), T, Hkv * d, D, false, true), positions, theta, Hkv, d);
    const v = matmulRef(xn, w('attn.wv'), T, Hkv * d, D, false, true);
    const o = refForward(q, k, v, { sq: T, sk: T, heads: H, kvHeads: Hkv, d, causal: true }).out;
    x = add(x, matmulRef(o, w('attn.wo'), T, D, H * d, false, true));
    const hn = rmsnormRef(x, w('mlp_norm'), eps);
    const hidden = swigluRef(matmulRef(hn, w('mlp.w1'), T, F, D, false, true), matmulRef(hn, w('mlp.w3'), T, F, D, false, true));
    x = add(x, matmulRef(hidden, w('mlp.w2'), T, D, F, false, true));
  }
  const xf = rmsnormRef(x, get('norm'), eps);
  const logits = matmulRef(xf, get(config.tiedEmbeddings ? 'tok_embeddings' : 'output'), T, V, D, false, true);
  return crossEntropyRef(logits, labels).reduce((a, b) => a + b, 0);
}

/**
 * (f(x + h·u) − f(x − h·u)) / 2h: the derivative of f along direction u by central differences;
 * x is restored. Checks a whole gradient g through ⟨g, u⟩ with two evaluations of f.
 */
export function directionalDifference(f: () => number, x: Float64Array, u: ArrayLike<number>, h = 1e-5): number {
  const x0 = x.slice();
  const shift = (sign: number): number => {
    for (let i = 0; i < x.length; i++) x[i] = x0[i]! + sign * h * u[i]!;
    return f();
  };
  const plus = shift(1);
  const minus = shift(-1);
  x.set(x0);
  return (plus - minus) / (2 * h);
}

/** Backward of {@link rmsnormRef} for x [T, D]: dx = s·(g∘w − x·s²·mean(g∘w∘x)) and dw = Σ_t g∘x·s, s = 1/rms. */
function rmsnormBackwardRef(dout: Float64Array, x: Float64Array, w: Float64Array, eps: number, dw: Float64Array): Float64Array {
  const d = w.length;
  const dx = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let ss = 0;
    let dot = 0;
    for (let i = 0; i < d; i++) {
      ss += x[r * d + i]! ** 2;
      dot += dout[r * d + i]! * w[i]! * x[r * d + i]!;
    }
    const s = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) {
      dx[r * d + i] = s * (dout[r * d + i]! * w[i]! - (x[r * d + i]! * s * s * dot) / d);
      dw[i] += dout[r * d + i]! * x[r * d + i]! * s;
    }
  }
  return dx;
}

function accumulate(into: Float64Array, x: Float64Array): void {
  for (let i = 0; i < x.length; i++) into[i] += x[i]!;
}

/**
 * Analytic float64 backward of {@link refModelLoss}: the loss and d(gradScale · loss)/d(each
 * parameter). Written layer by layer from the chain rule, independently of the f32 code; tests
 * check it against {@link directionalDifference} of {@link refModelLoss}.
 */
export function refModelGrads(
  config: ModelConfig, p: RefParams, tokens: ArrayLike<number>, positions: ArrayLike<number>, labels: ArrayLike<number>, gradScale: number,
): { loss: number; grads: RefParams } {
  const { dim: D, heads: H, kvHeads: Hkv, ffnDim: F, vocabSize: V, normEps: eps, ropeTheta: theta } = config;
  const d = D / H;
  const T = tokens.length;
  const get = (name: string): Float64Array => p.get(name)!;
  const grads: RefParams = new Map([...p].map(([name, values]) => [name, new Float64Array(values.length)]));
  const grad = (name: string): Float64Array => grads.get(name)!;
  const attnDims = { sq: T, sk: T, heads: H, kvHeads: Hkv, d, causal: true };
  const negPositions = Array.from(positions, (x) => -x); // RoPE at −pos is the inverse rotation

  // Forward, keeping every intermediate.
  let x: Float64Array = new Float64Array(T * D);
  for (let t = 0; t < T; t++) x.set(get('tok_embeddings').subarray(tokens[t]! * D, tokens[t]! * D + D), t * D);
  const tape = [];
  for (let l = 0; l < config.layers; l++) {
    const w = (n: string): Float64Array => get(`layers.${l}.${n}`);
    const xn = rmsnormRef(x, w('attn_norm'), eps);
    const q = ropeRef(matmulRef(xn, w('attn.wq'), T, H * d, D, false, true), positions, theta, H, d);
    const k = ropeRef(matmulRef(xn, w('attn.wk'), T, Hkv * d, D, false, true), positions, theta, Hkv, d);
    const v = matmulRef(xn, w('attn.wv'), T, Hkv * d, D, false, true);
    const o = refForward(q, k, v, attnDims).out;
    const h = add(x, matmulRef(o, w('attn.wo'), T, D, H * d, false, true));
    const hn = rmsnormRef(h, w('mlp_norm'), eps);
    const gate = matmulRef(hn, w('mlp.w1'), T, F, D, false, true);
    const up = matmulRef(hn, w('mlp.w3'), T, F, D, false, true);
    const hidden = swigluRef(gate, up);
    tape.push({ x, xn, q, k, v, o, h, hn, gate, up, hidden });
    x = add(h, matmulRef(hidden, w('mlp.w2'), T, D, F, false, true));
  }
  const xf = rmsnormRef(x, get('norm'), eps);
  const headName = config.tiedEmbeddings ? 'tok_embeddings' : 'output';
  const logits = matmulRef(xf, get(headName), T, V, D, false, true);
  const loss = crossEntropyRef(logits, labels).reduce((a, b) => a + b, 0);

  // Backward.
  const dlogits = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    if (labels[t] === -1) continue;
    const row = logits.subarray(t * V, t * V + V);
    const max = Math.max(...row);
    const z = row.reduce((s, y) => s + Math.exp(y - max), 0);
    for (let i = 0; i < V; i++) dlogits[t * V + i] = (gradScale * Math.exp(row[i]! - max)) / z - (i === labels[t] ? gradScale : 0);
  }
  accumulate(grad(headName), matmulRef(dlogits, xf, V, D, T, true));
  let dx = rmsnormBackwardRef(matmulRef(dlogits, get(headName), T, D, V), x, get('norm'), eps, grad('norm'));
  for (let l = config.layers - 1; l >= 0; l--) {
    const w = (n: string): Float64Array => get(`layers.${l}.${n}`);
    const g = (n: string): Float64Array => grad(`layers.${l}.${n}`);
    const s = tape[l]!;
    accumulate(g('mlp.w2'), matmulRef(dx, s.hidden, D, F, T, true));
    const dhidden = matmulRef(dx, w('mlp.w2'), T, F, D);
    const dgate = dhidden.map((dh, i) => {
      const sg = 1 / (1 + Math.exp(-s.gate[i]!));
      return dh * s.up[i]! * (sg + s.gate[i]! * sg * (1 - sg));
    });
    const dup = dhidden.map((dh, i) => (dh * s.gate[i]!) / (1 + Math.exp(-s.gate[i]!)));
    accumulate(g('mlp.w1'), matmulRef(dgate, s.hn, F, D, T, true));
    accumulate(g('mlp.w3'), matmulRef(dup, s.hn, F, D, T, true));
    const dhn = add(matmulRef(dgate, w('mlp.w1'), T, D, F), matmulRef(dup, w('mlp.w3'), T, D, F));
    const dh = add(dx, rmsnormBackwardRef(dhn, s.h, w('mlp_norm'), eps, g('mlp_norm')));
    accumulate(g('attn.wo'), matmulRef(dh, s.o, D, H * d, T, true));
    const att = refBackward(s.q, s.k, s.v, matmulRef(dh, w('attn.wo'), T, H * d, D), attnDims);
    const dq = ropeRef(att.dq, negPositions, theta, H, d);
    const dk = ropeRef(att.dk, negPositions, theta, Hkv, d);
    accumulate(g('attn.wq'), matmulRef(dq, s.xn, H * d, D, T, true));
    accumulate(g('attn.wk'), matmulRef(dk, s.xn, Hkv * d, D, T, true));
    accumulate(g('attn.wv'), matmulRef(att.dv, s.xn, Hkv * d, D, T, true));
    const dxn = add(add(matmulRef(dq, w('attn.wq'), T, D, H * d), matmulRef(dk, w('attn.wk'), T, D, Hkv * d)), matmulRef(att.dv, w('attn.wv'), T, D, Hkv * d));
    dx = add(dh, rmsnormBackwardRef(dxn, s.x, w('attn_norm'), eps, g('attn_norm')));
  }
  const demb = grad('tok_embeddings');
  for (let t = 0; t < T; t++) for (let i = 0; i < D; i++) demb[tokens[t]! * D + i] += dx[t * D + i]!;
  return { loss, grads };
}
