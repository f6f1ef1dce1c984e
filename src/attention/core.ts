import type { Tensor } from '../tensor/tensor.js';

/**
 * What attention keeps from its forward for its backward. Selective Checkpoint++ keeps exactly
 * this (the output and its LSE), so recomputation never re-runs distributed attention.
 */
export interface AttentionSaved {
  /** Attention output for this rank's tokens, [T, H, d] in the rank's token order. */
  out: Tensor;
  /** Opaque per-core state (e.g. merged output and LSE in the head-split layout). */
  state: unknown;
}

/**
 * Attention over this rank's share of the sequence: the model layer hands it the rank's
 * T = S/sp tokens with RoPE already applied, and gets back the output for the same tokens.
 * Implementations: single-rank local attention, and 2D-Attention (Ulysses × ring).
 */
export interface AttentionCore {
  /** q [T, H, d], k and v [T, Hkv, d] → saved.out [T, H, d]. */
  forward(q: Tensor, k: Tensor, v: Tensor): AttentionSaved;
  /** From dOut [T, H, d], accumulate into dq [T, H, d], dk and dv [T, Hkv, d]. Frees the saved state. */
  backward(saved: AttentionSaved, q: Tensor, k: Tensor, v: Tensor, dOut: Tensor, dq: Tensor, dk: Tensor, dv: Tensor): void;
}
