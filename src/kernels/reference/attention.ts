import type { Tensor } from '../../tensor/tensor.js';
import { attentionDims, keyRanges, shapeText } from '../checks.js';
import type { AttentionOptions } from '../kernels.js';

/**
 * Reference (plain TypeScript) attention kernels: the `attentionForward`, `attentionBackward`
 * and `mergeAttention` methods of the Kernels interface (src/kernels/kernels.ts).
 *
 * Every row works on its own: scores of one (query row, head) live in a scratch of length Sk,
 * never an Sq×Sk matrix. Arithmetic inside a row is float64 (JS numbers); results are stored
 * in the f32 tensors. A row that sees no key gets output 0 and lse −∞ and contributes nothing
 * to any gradient, so −∞ never turns into NaN (DESIGN decision 4, failure case F3).
 */

/**
 * Attention of one block with log-sum-exp (Kernels.attentionForward). q [Sq, H, d], k and v
 * [Sk, Hkv, d]; writes out [Sq, H, d] and lse [Sq, H] = log Σ_j exp(scale·q_i·k_j) over the
 * visible keys of `opts.mask` (natural log). Query head j uses KV head ⌊j / (H/Hkv)⌋. A row
 * with no visible key gets out 0 and lse −∞.
 * @throws Error on inconsistent shapes, an invalid mask or a scale that is not positive and finite.
 */
export function attentionForward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, opts: AttentionOptions): void {
  const { sq, sk, heads, kvHeads, d, group } = attentionDims(q, k, v, { out }, lse, opts);
  const range = keyRanges(opts.mask, sq, sk);
  const scores = new Float64Array(sk);
  const acc = new Float64Array(d);
  const qd = q.data;
  const kd = k.data;
  const vd = v.data;
  for (let i = 0; i < sq; i++) {
    const j0 = range.start[i]!;
    const j1 = range.end[i]!;
    for (let h = 0; h < heads; h++) {
      const qo = (i * heads + h) * d;
      const kvh = Math.floor(h / group);
      const oo = (i * heads + h) * d;
      if (j1 <= j0) {
        for (let c = 0; c < d; c++) out.data[oo + c] = 0;
        lse.data[i * heads + h] = -Infinity;
        continue;
      }
      let max = -Infinity;
      for (let j = j0; j < j1; j++) {
        const ko = (j * kvHeads + kvh) * d;
        let s = 0;
        for (let c = 0; c < d; c++) s += qd[qo + c]! * kd[ko + c]!;
        s *= opts.scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      acc.fill(0);
      let sum = 0;
      for (let j = j0; j < j1; j++) {
        const p = Math.exp(scores[j]! - max);
        sum += p;
        const vo = (j * kvHeads + kvh) * d;
        for (let c = 0; c < d; c++) acc[c]! += p * vd[vo + c]!;
      }
      for (let c = 0; c < d; c++) out.data[oo + c] = acc[c]! / sum;
      lse.data[i * heads + h] = max + Math.log(sum);
    }
  }
}

/**
 * Gradient share of one block (Kernels.attentionBackward), given the FINAL merged `o` [Sq, H, d]
 * and `lse` [Sq, H] of these query rows (algorithms.md §5). With P_ij = exp(scale·q_i·k_j − lse_i)
 * and D_i = rowsum(dO_i ∘ O_i): dV_j += Σ_i P_ij dO_i, dS_ij = P_ij (dO_i·v_j − D_i),
 * dQ_i += scale Σ_j dS_ij k_j, dK_j += scale Σ_i dS_ij q_i. Accumulates into dq [Sq, H, d],
 * dk and dv [Sk, Hkv, d], over the visible keys of `opts.mask`. Rows with lse −∞ contribute nothing.
 * @throws Error on inconsistent shapes, an invalid mask or a scale that is not positive and finite.
 */
export function attentionBackward(
  q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor,
  dq: Tensor, dk: Tensor, dv: Tensor, opts: AttentionOptions,
): void {
  const { sq, sk, heads, kvHeads, d, group } = attentionDims(q, k, v, { o, dO, dq, dk, dv }, lse, opts);
  const range = keyRanges(opts.mask, sq, sk);
  const dqRow = new Float64Array(d);
  const qd = q.data;
  const kd = k.data;
  const vd = v.data;
  for (let i = 0; i < sq; i++) {
    const j0 = range.start[i]!;
    const j1 = range.end[i]!;
    for (let h = 0; h < heads; h++) {
      const l = lse.data[i * heads + h]!;
      if (l === -Infinity || j1 <= j0) continue;
      const ro = (i * heads + h) * d;
      const kvh = Math.floor(h / group);
      let rowD = 0;
      for (let c = 0; c < d; c++) rowD += dO.data[ro + c]! * o.data[ro + c]!;
      dqRow.fill(0);
      for (let j = j0; j < j1; j++) {
        const ko = (j * kvHeads + kvh) * d;
        let s = 0;
        let dp = 0;
        for (let c = 0; c < d; c++) {
          s += qd[ro + c]! * kd[ko + c]!;
          dp += dO.data[ro + c]! * vd[ko + c]!;
        }
        const p = Math.exp(s * opts.scale - l);
        const ds = p * (dp - rowD) * opts.scale;
        for (let c = 0; c < d; c++) {
          dv.data[ko + c]! += p * dO.data[ro + c]!;
          dk.data[ko + c]! += ds * qd[ro + c]!;
          dqRow[c]! += ds * kd[ko + c]!;
        }
      }
      for (let c = 0; c < d; c++) dq.data[ro + c]! += dqRow[c]!;
    }
  }
}

/** log(1 + e^x) without overflow for any x. */
function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/** 1 / (1 + e^−x) without overflow for any x. */
function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/**
 * Merge a block result into a running one, in place (Kernels.mergeAttention; algorithms.md §5,
 * stable form): L' = L + softplus(Lb − L), O' = O − σ(Lb − L)(O − Ob). If L = −∞ the row takes
 * (Ob, Lb); if Lb = −∞ it keeps (O, L); both −∞ leaves O and L unchanged (0 and −∞ when they
 * came from a kernel). Correct for LSE gaps of any size. o, ob [rows, H, d]; lse, lseb [rows, H].
 * @throws Error when the sizes do not pair up.
 */
export function mergeAttention(o: Tensor, lse: Tensor, ob: Tensor, lseb: Tensor): void {
  if (ob.size !== o.size || lseb.size !== lse.size || lse.size === 0 || o.size % lse.size !== 0) {
    throw new Error(
      `mergeAttention: o ${shapeText(o)} and ob ${shapeText(ob)} must be equal [rows, H, d], lse ${shapeText(lse)} and lseb ${shapeText(lseb)} equal [rows, H]`,
    );
  }
  const d = o.size / lse.size;
  for (let r = 0; r < lse.size; r++) {
    const l = lse.data[r]!;
    const lb = lseb.data[r]!;
    if (lb === -Infinity) continue;
    const base = r * d;
    if (l === -Infinity) {
      for (let c = 0; c < d; c++) o.data[base + c] = ob.data[base + c]!;
      lse.data[r] = lb;
      continue;
    }
    const delta = lb - l;
    const w = sigmoid(delta);
    for (let c = 0; c < d; c++) {
      const x = o.data[base + c]!;
      o.data[base + c] = x - w * (x - ob.data[base + c]!);
    }
    lse.data[r] = l + softplus(delta);
  }
}
