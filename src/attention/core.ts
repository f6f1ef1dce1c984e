import type { SequenceLayout } from '../parallel/sequence-layout.js';
import type { Tensor } from '../tensor/tensor.js';

/**
 * What attention keeps from its forward for its backward. Selective Checkpoint++ keeps exactly
 * this (the output, its LSE and the core's own inputs), so recomputation never re-runs
 * distributed attention.
 */
export interface AttentionSaved {
  /** Attention output for this rank's tokens, [T, H, d] in the rank's token order. */
  out: Tensor;
  /**
   * Opaque per-core state: everything the core's backward needs besides `out` (its own copy of
   * q/k/v, the LSE; e.g. head-split q/k/v and the merged output and LSE for 2D-Attention).
   */
  state: unknown;
}

/**
 * Attention over this rank's share of the sequence: the model layer hands it the rank's
 * T = S/sp tokens (the step's `layout.rankTokens(h, c)`, in that order) with RoPE already
 * applied, and gets back the output for the same tokens. What each query may see (causal,
 * document masks) comes only from the layout. The core keeps what its backward needs, so the
 * caller may free q, k and v right after `forward`. Implementations: single-rank local
 * attention, and 2D-Attention (Ulysses × ring).
 */
export interface AttentionCore {
  /** q [T, H, d], k and v [T, Hkv, d] → saved.out [T, H, d] under `layout`'s masks; q, k, v are not kept. */
  forward(q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout): AttentionSaved;
  /**
   * From dOut [T, H, d], accumulate into dq [T, H, d], dk and dv [T, Hkv, d], with the layout the
   * forward used (a different one is refused: F2). Frees saved.out and the saved state.
   */
  backward(saved: AttentionSaved, dOut: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, layout: SequenceLayout): void;
  /**
   * Free saved.out and the saved state without a backward (a checkpointed layer that will
   * recompute the forward). `saved` must not be used afterwards.
   */
  release(saved: AttentionSaved): void;
}
