import type { AttentionCore, AttentionSaved } from '../attention/core.js';
import type { Kernels } from '../kernels/kernels.js';
import { Tensor } from '../tensor/tensor.js';
import { headDim } from './config.js';
import { linearBackwardInput, linearBackwardWeight, linearForward } from './linear.js';
import type { ModelParams } from './params.js';

/**
 * What {@link SelfAttention.forward} keeps for backward: its input xn (owned by the caller),
 * the positions, q [T, H, d], k and v [T, Hkv, d] after RoPE (category 'saved', owned) and the
 * attention core's saved output (owned by the core, freed by its backward).
 */
export interface SelfAttentionSaved {
  xn: Tensor;
  positions: Int32Array;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  attn: AttentionSaved;
}

/**
 * Grouped-query self-attention of one layer: q = xn·Wqᵀ, k = xn·Wkᵀ, v = xn·Wvᵀ, RoPE on q and k
 * with the tokens' GLOBAL positions (failure case F6), an injected {@link AttentionCore}
 * (single-rank or 2D-Attention) and the output projection Wo. Parameters `layers.l.attn.{wq,wk,wv,wo}`.
 */
export class SelfAttention {
  private readonly wq: Tensor;
  private readonly wk: Tensor;
  private readonly wv: Tensor;
  private readonly wo: Tensor;
  private readonly gq: Tensor;
  private readonly gk: Tensor;
  private readonly gv: Tensor;
  private readonly go: Tensor;
  private readonly heads: number;
  private readonly kvHeads: number;
  private readonly headDim: number;
  private readonly ropeTheta: number;

  constructor(
    private readonly kernels: Kernels,
    params: ModelParams,
    layer: number,
    private readonly core: AttentionCore,
  ) {
    const p = `layers.${layer}.attn`;
    [this.wq, this.wk, this.wv, this.wo] = (['wq', 'wk', 'wv', 'wo'] as const).map((n) => params.param(`${p}.${n}`)) as [Tensor, Tensor, Tensor, Tensor];
    [this.gq, this.gk, this.gv, this.go] = (['wq', 'wk', 'wv', 'wo'] as const).map((n) => params.grad(`${p}.${n}`)) as [Tensor, Tensor, Tensor, Tensor];
    const config = params.config;
    this.heads = config.heads;
    this.kvHeads = config.kvHeads;
    this.headDim = headDim(config);
    this.ropeTheta = config.ropeTheta;
  }

  /**
   * residual [T, D] += Wo·attention(RoPE(xn·Wqᵀ), RoPE(xn·Wkᵀ), xn·Wvᵀ) for xn [T, D] and the
   * tokens' global positions [T].
   */
  forward(residual: Tensor, xn: Tensor, positions: Int32Array): SelfAttentionSaved {
    const { kernels, heads, kvHeads, headDim: d, ropeTheta } = this;
    const t = positions.length;
    const q = Tensor.zeros(xn.arena, [t, heads, d], 'saved');
    const k = Tensor.zeros(xn.arena, [t, kvHeads, d], 'saved');
    const v = Tensor.zeros(xn.arena, [t, kvHeads, d], 'saved');
    linearForward(kernels, q, xn, this.wq, false);
    linearForward(kernels, k, xn, this.wk, false);
    linearForward(kernels, v, xn, this.wv, false);
    kernels.rope(q, positions, ropeTheta, false);
    kernels.rope(k, positions, ropeTheta, false);
    const attn = this.core.forward(q, k, v);
    linearForward(kernels, residual, attn.out, this.wo, true);
    return { xn, positions, q, k, v, attn };
  }

  /**
   * From dResidual [T, D] (the gradient of the residual stream after this branch) write dxn
   * [T, D] and accumulate the gradients of Wq, Wk, Wv, Wo. Frees everything the forward saved.
   */
  backward(saved: SelfAttentionSaved, dResidual: Tensor, dxn: Tensor): void {
    const { kernels, ropeTheta } = this;
    const { xn, positions, q, k, v, attn } = saved;
    const arena = xn.arena;
    // Wo's gradient needs the attention output, which the core's backward frees.
    linearBackwardWeight(kernels, this.go, dResidual, attn.out);
    const dOut = Tensor.zeros(arena, q.shape, 'activations');
    linearBackwardInput(kernels, dOut, dResidual, this.wo, false);
    const dq = Tensor.zeros(arena, q.shape, 'activations');
    const dk = Tensor.zeros(arena, k.shape, 'activations');
    const dv = Tensor.zeros(arena, v.shape, 'activations');
    this.core.backward(attn, q, k, v, dOut, dq, dk, dv);
    dOut.free();
    // RoPE is a rotation, so its backward is the inverse rotation at the same positions.
    kernels.rope(dq, positions, ropeTheta, true);
    kernels.rope(dk, positions, ropeTheta, true);
    linearBackwardInput(kernels, dxn, dq, this.wq, false);
    linearBackwardInput(kernels, dxn, dk, this.wk, true);
    linearBackwardInput(kernels, dxn, dv, this.wv, true);
    linearBackwardWeight(kernels, this.gq, dq, xn);
    linearBackwardWeight(kernels, this.gk, dk, xn);
    linearBackwardWeight(kernels, this.gv, dv, xn);
    for (const tensor of [q, k, v, dq, dk, dv]) tensor.free();
  }
}
