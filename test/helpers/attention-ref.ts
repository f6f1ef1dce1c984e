/**
 * Float64 single-device attention reference for tests: the full softmax written plainly
 * (materialising each row's probabilities), and its analytic backward.
 * Layouts: q [Sq, H, d], k and v [Sk, Hkv, d], query head j uses KV head ⌊j / (H/Hkv)⌋.
 */

import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/rng.js';

export interface RefDims {
  sq: number;
  sk: number;
  heads: number;
  kvHeads: number;
  d: number;
  causal: boolean;
  /**
   * Whether query i sees key j, replacing `causal` when given (document masks: both indices are
   * the tensors' own rows).
   */
  visible?: (i: number, j: number) => boolean;
  /** Defaults to 1/√d. */
  scale?: number;
}

export interface RefForward {
  /** [Sq, H, d] */
  out: Float64Array;
  /** [Sq, H]; −∞ for a row with no visible key. */
  lse: Float64Array;
}

export interface RefGrads {
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
}

function visible(dims: RefDims, i: number, j: number): boolean {
  if (dims.visible !== undefined) return dims.visible(i, j);
  return !dims.causal || j <= i;
}

/** Row probabilities P[i, h, j] (0 for masked keys) and lse, in float64. */
function probabilities(q: ArrayLike<number>, k: ArrayLike<number>, dims: RefDims): { p: Float64Array; lse: Float64Array } {
  const { sq, sk, heads, kvHeads, d } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(d);
  const group = heads / kvHeads;
  const p = new Float64Array(sq * heads * sk);
  const lse = new Float64Array(sq * heads);
  for (let i = 0; i < sq; i++) {
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / group);
      const row = (i * heads + h) * sk;
      let max = -Infinity;
      for (let j = 0; j < sk; j++) {
        if (!visible(dims, i, j)) continue;
        let s = 0;
        for (let c = 0; c < d; c++) s += q[(i * heads + h) * d + c]! * k[(j * kvHeads + kh) * d + c]!;
        p[row + j] = s * scale;
        max = Math.max(max, s * scale);
      }
      if (max === -Infinity) {
        lse[i * heads + h] = -Infinity;
        continue;
      }
      let sum = 0;
      for (let j = 0; j < sk; j++) if (visible(dims, i, j)) sum += Math.exp(p[row + j]! - max);
      const l = max + Math.log(sum);
      lse[i * heads + h] = l;
      for (let j = 0; j < sk; j++) p[row + j] = visible(dims, i, j) ? Math.exp(p[row + j]! - l) : 0;
    }
  }
  return { p, lse };
}

/** Softmax attention forward with lse, in float64. */
export function refForward(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, dims: RefDims): RefForward {
  const { sq, sk, heads, kvHeads, d } = dims;
  const group = heads / kvHeads;
  const { p, lse } = probabilities(q, k, dims);
  const out = new Float64Array(sq * heads * d);
  for (let i = 0; i < sq; i++) {
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / group);
      for (let j = 0; j < sk; j++) {
        const pij = p[(i * heads + h) * sk + j]!;
        for (let c = 0; c < d; c++) out[(i * heads + h) * d + c]! += pij * v[(j * kvHeads + kh) * d + c]!;
      }
    }
  }
  return { out, lse };
}

/**
 * Analytic backward of {@link refForward}: dP = dO·Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)),
 * dQ = scale·dS·K, dK = scale·dSᵀ·Q, dV = Pᵀ·dO (GQA heads summed into their KV head).
 */
export function refBackward(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, dO: ArrayLike<number>, dims: RefDims): RefGrads {
  const { sq, sk, heads, kvHeads, d } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(d);
  const group = heads / kvHeads;
  const { p } = probabilities(q, k, dims);
  const { out } = refForward(q, k, v, dims);
  const dq = new Float64Array(sq * heads * d);
  const dk = new Float64Array(sk * kvHeads * d);
  const dv = new Float64Array(sk * kvHeads * d);
  for (let i = 0; i < sq; i++) {
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / group);
      const ro = (i * heads + h) * d;
      let rowD = 0;
      for (let c = 0; c < d; c++) rowD += dO[ro + c]! * out[ro + c]!;
      for (let j = 0; j < sk; j++) {
        const pij = p[(i * heads + h) * sk + j]!;
        if (pij === 0) continue;
        const ko = (j * kvHeads + kh) * d;
        let dp = 0;
        for (let c = 0; c < d; c++) dp += dO[ro + c]! * v[ko + c]!;
        const ds = pij * (dp - rowD) * scale;
        for (let c = 0; c < d; c++) {
          dq[ro + c]! += ds * k[ko + c]!;
          dk[ko + c]! += ds * q[ro + c]!;
          dv[ko + c]! += pij * dO[ro + c]!;
        }
      }
    }
  }
  return { dq, dk, dv };
}

/** n standard-normal samples from a seeded Rng, times `scale`. */
export function randomArray(rng: Rng, n: number, scale = 1): Float64Array {
  const x = new Float64Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.normal() * scale;
  return x;
}

/**
 * max |got − want| / max |want| over finite entries; −∞ in `want` must be −∞ in `got`
 * (returns Infinity otherwise), and any NaN in `got` gives Infinity.
 */
export function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`relError: lengths ${got.length} and ${want.length} differ`);
  let scale = 0;
  for (let i = 0; i < want.length; i++) if (Number.isFinite(want[i]!)) scale = Math.max(scale, Math.abs(want[i]!));
  let err = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (Number.isNaN(g)) return Infinity;
    if (!Number.isFinite(w) || !Number.isFinite(g)) {
      if (g !== w) return Infinity;
      continue;
    }
    err = Math.max(err, Math.abs(g - w));
  }
  return scale === 0 ? err : err / scale;
}

/** Full-sequence attention inputs [S, H|Hkv, d] rounded to f32, the same on every rank and in the test. */
export interface AttentionInputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dO: Float32Array;
}

/** Seeded inputs for a sequence of `seq` tokens (q/dO [seq, heads, d], k/v [seq, kvHeads, d]). */
export function makeInputs(seed: number, seq: number, heads: number, kvHeads: number, d: number): AttentionInputs {
  const rng = new Rng(seed);
  return {
    q: Float32Array.from(randomArray(rng, seq * heads * d, 1.5)),
    k: Float32Array.from(randomArray(rng, seq * kvHeads * d, 1.5)),
    v: Float32Array.from(randomArray(rng, seq * kvHeads * d)),
    dO: Float32Array.from(randomArray(rng, seq * heads * d)),
  };
}

/** Default tolerance of attention comparisons: relative to the reference's largest magnitude. */
export const ATTENTION_TOL = 1e-5;

/**
 * Assert no NaN in `got` and relError(got, want) ≤ tol.
 * @throws AssertionError naming `name` and the error.
 */
export function assertClose(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tol = ATTENTION_TOL): void {
  for (let i = 0; i < got.length; i++) assert.ok(!Number.isNaN(got[i]!), `${name}[${i}] is NaN`);
  const e = relError(got, want);
  assert.ok(e <= tol, `${name}: relative error ${e} > ${tol}`);
}

/** One rank's rows and the global token index of each. */
export interface RowShard {
  indices: readonly number[];
  rows: Float32Array;
}

/**
 * Put each rank's rows back at their global token positions: [seq, rowLen]. Asserts that every
 * token is held by exactly one rank.
 */
export function gatherRows(shards: readonly RowShard[], seq: number, rowLen: number): Float64Array {
  const full = new Float64Array(seq * rowLen);
  const seen = new Array<number>(seq).fill(0);
  for (const { indices, rows } of shards) {
    indices.forEach((g, i) => {
      seen[g]! += 1;
      full.set(rows.subarray(i * rowLen, (i + 1) * rowLen), g * rowLen);
    });
  }
  assert.deepEqual(seen, new Array<number>(seq).fill(1), 'every token is held by exactly one rank');
  return full;
}

/** One rank's head-split lse [2c, H/hp]: grid coordinates (h, c) decide its tokens and heads. */
export interface LseShard {
  h: number;
  c: number;
  lse: Float32Array;
  /** Sequence indices of the lse rows (the layout's positionTokens(c)); default: the zigzag pair of c. */
  positionIndices?: readonly number[];
}

/**
 * Global lse [S, H] from head-split pieces: rank (h, c) holds chunks c and 2cp − 1 − c
 * (algorithms.md §2) for head group h. Entries no rank holds stay NaN.
 */
export function gatherHeadSplitLse(shards: readonly LseShard[], seq: number, heads: number, hp: number, cp: number): Float64Array {
  const full = new Float64Array(seq * heads).fill(NaN);
  const chunk = seq / (2 * cp);
  const hl = heads / hp;
  for (const { h, c, lse, positionIndices } of shards) {
    for (let i = 0; i < 2 * chunk; i++) {
      const g = positionIndices !== undefined ? positionIndices[i]! : i < chunk ? c * chunk + i : (2 * cp - 1 - c) * chunk + (i - chunk);
      for (let j = 0; j < hl; j++) full[g * heads + h * hl + j] = lse[i * hl + j]!;
    }
  }
  return full;
}
