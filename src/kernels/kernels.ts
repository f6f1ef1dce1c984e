import type { Tensor } from '../tensor/tensor.js';

/**
 * The compute kernels every backend (`reference`, later `wasm`, `blas`) implements. Kernels
 * work in place on arena tensors; a kernel never allocates tensors itself. Shapes are given
 * in each method's doc; a tensor of higher rank is read as its row-major flattening.
 */
export interface Kernels {
  readonly name: string;

  /**
   * C = op(A)·op(B) (+ C when `accumulate`). op(X) is X or Xᵀ per `transA`/`transB`.
   * A is [M, K] ([K, M] when transA), B is [K, N] ([N, K] when transB), C is [M, N].
   */
  matmul(c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number, opts?: MatmulOptions): void;

  /**
   * Attention of one block with log-sum-exp. q [Sq, H, d], k and v [Sk, Hkv, d] with H a
   * multiple of Hkv (query head j uses KV head ⌊j / (H/Hkv)⌋); writes out [Sq, H, d] and
   * lse [Sq, H] (natural log of the sum of exp(scale·q·k) over visible keys). `opts.mask` says
   * which keys each query row sees ({@link AttentionMask}; any Sq and Sk). A row with no visible
   * key gets output 0 and lse −∞. Never materialises an Sq×Sk matrix.
   */
  attentionForward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, opts: AttentionOptions): void;

  /**
   * Gradient share of one block, given the FINAL merged output `o` and `lse` of these query
   * rows (algorithms.md §5): accumulates into dq [Sq, H, d], dk and dv [Sk, Hkv, d].
   * D = rowsum(dO ∘ O) is computed from `o`. Rows with lse −∞ or no visible key contribute
   * nothing; keys no row sees get zero gradient.
   */
  attentionBackward(
    q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dO: Tensor,
    dq: Tensor, dk: Tensor, dv: Tensor, opts: AttentionOptions,
  ): void;

  /**
   * Merge a block result into a running one, in place (algorithms.md §5, stable form):
   * L' = L + softplus(Lb − L), O' = O − σ(Lb − L)(O − Ob). o, ob [rows, H, d]; lse, lseb [rows, H].
   */
  mergeAttention(o: Tensor, lse: Tensor, ob: Tensor, lseb: Tensor): void;

  /** out[t, :] = x[t, :] · w / rms(x[t, :]); x [T, D], w [D]; writes rstd [T] = 1/rms. */
  rmsnormForward(out: Tensor, rstd: Tensor, x: Tensor, w: Tensor, eps: number): void;
  /** dx [T, D] (overwritten) and dw [D] (accumulated) from dout, x, w and the saved rstd. */
  rmsnormBackward(dx: Tensor, dw: Tensor, dout: Tensor, x: Tensor, w: Tensor, rstd: Tensor): void;

  /**
   * Rotary embedding in place on x [T, H, d] (d even), pairs (2i, 2i+1) rotated by angle
   * positions[t] · theta^(−2i/d). `inverse` rotates by the negative angle (the backward).
   */
  rope(x: Tensor, positions: Int32Array, theta: number, inverse: boolean): void;

  /** out = silu(gate) ∘ up, all [T, F]. */
  swigluForward(out: Tensor, gate: Tensor, up: Tensor): void;
  /** dgate, dup [T, F] (overwritten) from dout, gate, up. */
  swigluBackward(dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor): void;

  /**
   * Softmax cross-entropy per row. logits [T, V], labels [T] (−1 = ignored). Writes
   * losses [T] (0 for ignored rows) and, in place of logits, dlogits = (softmax − onehot)·gradScale
   * (0 for ignored rows). Returns the sum of the losses of the valid rows, in float64.
   */
  crossEntropy(logits: Tensor, labels: Int32Array, losses: Tensor, gradScale: number): number;

  /** out[t, :] = table[ids[t], :]; table [V, D], out [T, D]. */
  embeddingForward(out: Tensor, table: Tensor, ids: Int32Array): void;
  /** dtable[ids[t], :] += dout[t, :]. */
  embeddingBackward(dtable: Tensor, dout: Tensor, ids: Int32Array): void;

  /** One AdamW step in place over equal-length param, grad, m, v (Loshchilov & Hutter 2019, decoupled decay). */
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamWOptions): void;

  /** y += alpha · x (same size). */
  axpy(y: Tensor, x: Tensor, alpha: number): void;
  /** x *= alpha. */
  scale(x: Tensor, alpha: number): void;
  /** Σ x², in float64. */
  sumSquares(x: Tensor): number;
}

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  accumulate?: boolean;
}

/**
 * Which keys each query row of one attention block sees; key indices are the block's own rows
 * [0, Sk), query indices its rows [0, Sq).
 * - `none`: every key.
 * - `causal`: query i sees keys j ≤ i + offset (offset 0 with Sq = Sk is the lower triangle; a
 *   block whose keys start `offset` tokens before its queries has that offset).
 * - `documents`: query i sees keys [keyStart[i], keyEnd[i]) (both [Sq]; an empty range is a row
 *   with no visible key). SequenceLayout (src/parallel/sequence-layout.ts) computes them from
 *   cu_seqlens: a block's tokens ascend in sequence order, so the keys of a query's document up
 *   to itself are one contiguous run of rows.
 */
export type AttentionMask =
  | { kind: 'none' }
  | { kind: 'causal'; offset: number }
  | { kind: 'documents'; keyStart: Int32Array; keyEnd: Int32Array };

export interface AttentionOptions {
  /** Visible keys of each query row. */
  mask: AttentionMask;
  /** Score scale, normally 1/√d; positive and finite as an f32, else every backend refuses the call (src/kernels/checks.ts attentionDims). */
  scale: number;
}

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number, for bias correction. */
  step: number;
}
