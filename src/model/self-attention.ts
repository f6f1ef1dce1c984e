import type { AttentionCore, AttentionSaved } from '../attention/core.js';
import type { Kernels } from '../kernels/kernels.js';
import type { SequenceLayout } from '../parallel/sequence-layout.js';
import { Tensor } from '../tensor/tensor.js';
import { headDim } from './config.js';
import { linearBackwardInput, linearBackwardWeight, linearForward } from './linear.js';
import type { ParamStore } from './params.js';

/**
 * Where this rank's T tokens sit in the step's sequence: their RoPE positions [T] (offsets in
 * their document, or in the sequence; docs/data.md) and the step's SequenceLayout, which says
 * which sequence indices the rank holds and what each query may see.
 */
export interface TokenPlacement {
  positions: Int32Array;
  layout: SequenceLayout;
}

/**
 * What {@link SelfAttention.backward} needs from the forward ({@link SelfAttention.attend} then
 * {@link SelfAttention.project}): its input xn (owned by the caller), the token placement and
 * the attention core's saved state (output, LSE and the core's own q/k/v; owned by the core,
 * freed by its backward or release).
 */
export interface SelfAttentionSaved {
  xn: Tensor;
  placement: TokenPlacement;
  attn: AttentionSaved;
}

/**
 * Grouped-query self-attention of one layer: q = xn·Wqᵀ, k = xn·Wkᵀ, v = xn·Wvᵀ, RoPE on q and k
 * at the tokens' own positions (never their place in the shard: failure case F6), an injected {@link AttentionCore}
 * (single-rank or 2D-Attention) and the output projection Wo. Parameters `layers.l.attn.{wq,wk,wv,wo}`.
 */
export class SelfAttention {
  /** Parameter names `layers.l.attn.{wq,wk,wv,wo}`, looked up in the store at use time. */
  private readonly wq: string;
  private readonly wk: string;
  private readonly wv: string;
  private readonly wo: string;
  private readonly heads: number;
  private readonly kvHeads: number;
  private readonly headDim: number;
  private readonly ropeTheta: number;

  constructor(
    private readonly kernels: Kernels,
    private readonly params: ParamStore,
    layer: number,
    private readonly core: AttentionCore,
  ) {
    const p = `layers.${layer}.attn`;
    [this.wq, this.wk, this.wv, this.wo] = [`${p}.wq`, `${p}.wk`, `${p}.wv`, `${p}.wo`];
    const config = params.config;
    this.heads = config.heads;
    this.kvHeads = config.kvHeads;
    this.headDim = headDim(config);
    this.ropeTheta = config.ropeTheta;
  }

  /**
   * The attention core on RoPE(xn·Wqᵀ), RoPE(xn·Wkᵀ), xn·Wvᵀ for xn [T, D] at the placement's
   * positions [T], masked by its layout. q [T, H, d], k and v [T, Hkv, d] are temporaries
   * (category 'activations'): the core keeps its own copy of what its backward needs.
   */
  attend(xn: Tensor, placement: TokenPlacement): AttentionSaved {
    const { kernels, heads, kvHeads, headDim: d, ropeTheta, params } = this;
    const { positions } = placement;
    const t = positions.length;
    const q = Tensor.empty(xn.arena, [t, heads, d], 'activations');
    const k = Tensor.empty(xn.arena, [t, kvHeads, d], 'activations');
    const v = Tensor.empty(xn.arena, [t, kvHeads, d], 'activations');
    linearForward(kernels, q, xn, params.param(this.wq), false);
    linearForward(kernels, k, xn, params.param(this.wk), false);
    linearForward(kernels, v, xn, params.param(this.wv), false);
    kernels.rope(q, positions, ropeTheta, false);
    kernels.rope(k, positions, ropeTheta, false);
    const attn = this.core.forward(q, k, v, placement.layout);
    for (const tensor of [q, k, v]) tensor.free();
    return attn;
  }

  /** residual [T, D] += attn.out·Woᵀ (the output projection of an {@link attend} result). */
  project(residual: Tensor, attn: AttentionSaved): void {
    linearForward(this.kernels, residual, attn.out, this.params.param(this.wo), true);
  }

  /** Free the core's saved state of an {@link attend} result that will not be backpropagated. */
  release(attn: AttentionSaved): void {
    this.core.release(attn);
  }

  /**
   * From dResidual [T, D] (the gradient of the residual stream after this branch) write dxn
   * [T, D] and accumulate the gradients of Wq, Wk, Wv, Wo. Frees the core's saved state.
   */
  backward(saved: SelfAttentionSaved, dResidual: Tensor, dxn: Tensor): void {
    const { kernels, ropeTheta, heads, kvHeads, headDim: d, params } = this;
    const { xn, placement, attn } = saved;
    const { positions } = placement;
    const arena = xn.arena;
    const t = positions.length;
    // Wo's gradient needs the attention output, which the core's backward frees.
    linearBackwardWeight(kernels, params.grad(this.wo), dResidual, attn.out);
    const dOut = Tensor.empty(arena, [t, heads, d], 'activations');
    linearBackwardInput(kernels, dOut, dResidual, params.param(this.wo), false);
    const dq = Tensor.zeros(arena, [t, heads, d], 'activations');
    const dk = Tensor.zeros(arena, [t, kvHeads, d], 'activations');
    const dv = Tensor.zeros(arena, [t, kvHeads, d], 'activations');
    this.core.backward(attn, dOut, dq, dk, dv, placement.layout);
    dOut.free();
    // RoPE is a rotation, so its backward is the inverse rotation at the same positions.
    kernels.rope(dq, positions, ropeTheta, true);
    kernels.rope(dk, positions, ropeTheta, true);
    linearBackwardInput(kernels, dxn, dq, params.param(this.wq), false);
    linearBackwardInput(kernels, dxn, dk, params.param(this.wk), true);
    linearBackwardInput(kernels, dxn, dv, params.param(this.wv), true);
    linearBackwardWeight(kernels, params.grad(this.wq), dq, xn);
    linearBackwardWeight(kernels, params.grad(this.wk), dk, xn);
    linearBackwardWeight(kernels, params.grad(this.wv), dv, xn);
    for (const tensor of [dq, dk, dv]) tensor.free();
  }
}
