import type { Kernels } from '../kernels/kernels.js';
import { Tensor } from '../tensor/tensor.js';
import { linearBackwardInput, linearBackwardWeight, linearForward } from './linear.js';
import type { ModelParams } from './params.js';

/**
 * What {@link SwiGLUMlp.forward} keeps: its input xn (owned by the caller), gate = xn·W1ᵀ and
 * up = xn·W3ᵀ, [T, F] (category 'saved', owned). The hidden silu(gate)∘up is recomputed in
 * backward (elementwise, cheap) instead of being kept.
 */
export interface MlpSaved {
  xn: Tensor;
  gate: Tensor;
  up: Tensor;
}

/**
 * SwiGLU feed-forward (Shazeer 2020, as in LLaMA): W2·(silu(xn·W1ᵀ) ∘ xn·W3ᵀ), W1 the gate and
 * W3 the up projection [F, D], W2 the down projection [D, F]. Parameters `layers.l.mlp.{w1,w3,w2}`.
 */
export class SwiGLUMlp {
  private readonly w1: Tensor;
  private readonly w3: Tensor;
  private readonly w2: Tensor;
  private readonly g1: Tensor;
  private readonly g3: Tensor;
  private readonly g2: Tensor;
  private readonly ffnDim: number;

  constructor(
    private readonly kernels: Kernels,
    params: ModelParams,
    layer: number,
  ) {
    const p = `layers.${layer}.mlp`;
    [this.w1, this.w3, this.w2] = (['w1', 'w3', 'w2'] as const).map((n) => params.param(`${p}.${n}`)) as [Tensor, Tensor, Tensor];
    [this.g1, this.g3, this.g2] = (['w1', 'w3', 'w2'] as const).map((n) => params.grad(`${p}.${n}`)) as [Tensor, Tensor, Tensor];
    this.ffnDim = params.config.ffnDim;
  }

  /** residual [T, D] += W2·(silu(xn·W1ᵀ) ∘ xn·W3ᵀ) for xn [T, D]. */
  forward(residual: Tensor, xn: Tensor): MlpSaved {
    const { kernels } = this;
    const shape = [xn.shape[0]!, this.ffnDim];
    const gate = Tensor.zeros(xn.arena, shape, 'saved');
    const up = Tensor.zeros(xn.arena, shape, 'saved');
    linearForward(kernels, gate, xn, this.w1, false);
    linearForward(kernels, up, xn, this.w3, false);
    const hidden = this.hidden(gate, up);
    linearForward(kernels, residual, hidden, this.w2, true);
    hidden.free();
    return { xn, gate, up };
  }

  /** From dResidual [T, D] write dxn [T, D] and accumulate the gradients of W1, W3, W2. Frees gate and up. */
  backward(saved: MlpSaved, dResidual: Tensor, dxn: Tensor): void {
    const { kernels } = this;
    const { xn, gate, up } = saved;
    const hidden = this.hidden(gate, up);
    linearBackwardWeight(kernels, this.g2, dResidual, hidden);
    const dHidden = hidden; // reuse the buffer: the hidden values are no longer needed
    linearBackwardInput(kernels, dHidden, dResidual, this.w2, false);
    const dGate = Tensor.zeros(xn.arena, gate.shape, 'activations');
    const dUp = Tensor.zeros(xn.arena, gate.shape, 'activations');
    kernels.swigluBackward(dGate, dUp, dHidden, gate, up);
    dHidden.free();
    linearBackwardInput(kernels, dxn, dGate, this.w1, false);
    linearBackwardInput(kernels, dxn, dUp, this.w3, true);
    linearBackwardWeight(kernels, this.g1, dGate, xn);
    linearBackwardWeight(kernels, this.g3, dUp, xn);
    for (const tensor of [gate, up, dGate, dUp]) tensor.free();
  }

  private hidden(gate: Tensor, up: Tensor): Tensor {
    const hidden = Tensor.zeros(gate.arena, gate.shape, 'activations');
    this.kernels.swigluForward(hidden, gate, up);
    return hidden;
  }
}
