import type { Kernels } from '../kernels/kernels.js';
import { Tensor } from '../tensor/tensor.js';
import { linearBackwardInput, linearBackwardWeight, linearForward } from './linear.js';
import type { ParamStore } from './params.js';
import { RMSNorm, type RMSNormSaved } from './rmsnorm.js';

/**
 * What {@link LMHead.forward} keeps: the final norm's state, its output xf [T, D] and
 * dlogits [T, V] (category 'saved', owned). The cross-entropy gradient is formed in forward
 * because gradScale is known there, so the logits buffer is kept as dlogits (T·V floats).
 */
export interface HeadSaved {
  norm: RMSNormSaved;
  xf: Tensor;
  dlogits: Tensor;
}

/**
 * Final RMSNorm, LM head logits = xf·Wᵀ with W = `tok_embeddings` (tied) or `output` [V, D],
 * and softmax cross-entropy with labels −1 ignored.
 */
export class LMHead {
  private readonly norm: RMSNorm;
  /** The head matrix's parameter name. */
  private readonly w: string;

  constructor(
    private readonly kernels: Kernels,
    private readonly params: ParamStore,
  ) {
    const config = params.config;
    this.norm = new RMSNorm(kernels, params, 'norm', config.normEps);
    this.w = config.tiedEmbeddings ? 'tok_embeddings' : 'output';
  }

  /**
   * x [T, D] (kept alive by the caller until backward), labels [T] in [0, V) or −1 → the SUM of
   * the valid tokens' losses (natural log, float64). d loss/d logit = gradScale·(softmax − onehot).
   * @throws Error naming a label outside [−1, V) (after allocating: validate labels first).
   */
  forward(x: Tensor, labels: Int32Array, gradScale: number): { loss: number; saved: HeadSaved } {
    const { kernels } = this;
    const t = labels.length;
    const xf = Tensor.empty(x.arena, x.shape, 'saved');
    const norm = this.norm.forward(xf, x);
    const w = this.params.param(this.w);
    const dlogits = Tensor.empty(x.arena, [t, w.shape[0]!], 'saved');
    linearForward(kernels, dlogits, xf, w, false);
    const losses = Tensor.empty(x.arena, [t], 'activations');
    const loss = kernels.crossEntropy(dlogits, labels, losses, gradScale);
    losses.free();
    return { loss, saved: { norm, xf, dlogits } };
  }

  /** Write dx [T, D]; accumulate the gradients of the head matrix and the final norm; free the saved state. */
  backward(saved: HeadSaved, dx: Tensor): void {
    const { kernels } = this;
    const { xf, dlogits } = saved;
    linearBackwardWeight(kernels, this.params.grad(this.w), dlogits, xf);
    const dxf = Tensor.empty(xf.arena, xf.shape, 'activations');
    linearBackwardInput(kernels, dxf, dlogits, this.params.param(this.w), false);
    this.norm.backward(saved.norm, dxf, dx);
    for (const tensor of [dxf, xf, dlogits]) tensor.free();
  }
}
