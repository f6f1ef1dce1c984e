/**
 * Float64 references of the model's layers and of the whole LLaMA-style model, written plainly
 * for tests, plus central finite differences for their gradients. Layouts follow the f32 code:
 * row-major, matrices [out, in] with y = x·Wᵀ, q [T, H, d], k and v [T, Hkv, d].
 */

import type { ModelConfig } from '../../src/model/config.js';
import { refForward } from './attention-ref.js';

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

/** d(gradScale · {@link refModelLoss})/d(each parameter) by central differences. */
export function refModelGrads(
  config: ModelConfig, p: RefParams, tokens: ArrayLike<number>, positions: ArrayLike<number>, labels: ArrayLike<number>, gradScale: number,
): RefParams {
  const grads: RefParams = new Map();
  for (const [name, values] of p) {
    grads.set(name, centralDifference(() => gradScale * refModelLoss(config, p, tokens, positions, labels), values));
  }
  return grads;
}
