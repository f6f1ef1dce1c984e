import type { AttentionCore } from '../attention/core.js';
import type { Kernels } from '../kernels/kernels.js';
import { Tensor } from '../tensor/tensor.js';
import { type MlpSaved, SwiGLUMlp } from './mlp.js';
import type { ModelParams } from './params.js';
import { RMSNorm, type RMSNormSaved } from './rmsnorm.js';
import { SelfAttention, type SelfAttentionSaved } from './self-attention.js';

/**
 * What {@link TransformerBlock.forward} keeps: the normalised inputs of both branches (xn1,
 * xn2) and the mid-block residual h, all [T, D] (category 'saved', owned), plus each sub-layer's
 * own saved state. The block input x is the caller's.
 */
export interface BlockSaved {
  attnNorm: RMSNormSaved;
  xn1: Tensor;
  attn: SelfAttentionSaved;
  h: Tensor;
  mlpNorm: RMSNormSaved;
  xn2: Tensor;
  mlp: MlpSaved;
}

/**
 * One pre-norm LLaMA block: h = x + Attn(RMSNorm(x)); y = h + MLP(RMSNorm(h)).
 * Parameters `layers.l.{attn_norm, attn.*, mlp_norm, mlp.*}`.
 */
export class TransformerBlock {
  private readonly attnNorm: RMSNorm;
  private readonly attn: SelfAttention;
  private readonly mlpNorm: RMSNorm;
  private readonly mlp: SwiGLUMlp;

  constructor(
    private readonly kernels: Kernels,
    params: ModelParams,
    layer: number,
    core: AttentionCore,
  ) {
    const p = `layers.${layer}`;
    const eps = params.config.normEps;
    this.attnNorm = new RMSNorm(kernels, params.param(`${p}.attn_norm`), params.grad(`${p}.attn_norm`), eps);
    this.attn = new SelfAttention(kernels, params, layer, core);
    this.mlpNorm = new RMSNorm(kernels, params.param(`${p}.mlp_norm`), params.grad(`${p}.mlp_norm`), eps);
    this.mlp = new SwiGLUMlp(kernels, params, layer);
  }

  /**
   * x [T, D] and the tokens' global positions [T] → y [T, D] (category 'saved', owned by the
   * caller, who must keep x alive until backward).
   */
  forward(x: Tensor, positions: Int32Array): { y: Tensor; saved: BlockSaved } {
    const xn1 = Tensor.zeros(x.arena, x.shape, 'saved');
    const attnNorm = this.attnNorm.forward(xn1, x);
    const h = Tensor.from(x.arena, x.shape, x.data, 'saved');
    const attn = this.attn.forward(h, xn1, positions);
    const xn2 = Tensor.zeros(x.arena, x.shape, 'saved');
    const mlpNorm = this.mlpNorm.forward(xn2, h);
    const y = Tensor.from(x.arena, x.shape, h.data, 'saved');
    const mlp = this.mlp.forward(y, xn2);
    return { y, saved: { attnNorm, xn1, attn, h, mlpNorm, xn2, mlp } };
  }

  /** From dy [T, D] write dx [T, D]; accumulate every parameter gradient; free what forward saved. */
  backward(saved: BlockSaved, dy: Tensor, dx: Tensor): void {
    const { kernels } = this;
    const arena = dy.arena;
    const dxn = Tensor.zeros(arena, dy.shape, 'activations');
    const dh = Tensor.zeros(arena, dy.shape, 'activations');
    this.mlp.backward(saved.mlp, dy, dxn);
    this.mlpNorm.backward(saved.mlpNorm, dxn, dh);
    kernels.axpy(dh, dy, 1); // the residual path
    this.attn.backward(saved.attn, dh, dxn);
    this.attnNorm.backward(saved.attnNorm, dxn, dx);
    kernels.axpy(dx, dh, 1);
    for (const tensor of [dxn, dh, saved.xn1, saved.h, saved.xn2]) tensor.free();
  }
}
