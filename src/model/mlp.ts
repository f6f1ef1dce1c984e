import type { Kernels } from '../kernels/kernels.js';
import type { MemoryCategory } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';
import { linearBackwardInput, linearBackwardWeight, linearForward } from './linear.js';
import type { ParamStore } from './params.js';

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
  /** Parameter names `layers.l.mlp.{w1,w3,w2}`, looked up in the store at use time. */
  private readonly w1: string;
  private readonly w3: string;
  private readonly w2: string;
  private readonly ffnDim: number;

  constructor(
    private readonly kernels: Kernels,
    private readonly params: ParamStore,
    layer: number,
  ) {
    const p = `layers.${layer}.mlp`;
    [this.w1, this.w3, this.w2] = [`${p}.w1`, `${p}.w3`, `${p}.w2`];
    this.ffnDim = params.config.ffnDim;
  }

  /**
   * gate = xn·W1ᵀ and up = xn·W3ᵀ [T, F] for xn [T, D] (category `category`: 'saved' when kept
   * until backward, 'activations' when recomputed): what the backward needs.
   */
  gateUp(xn: Tensor, category: MemoryCategory = 'saved'): MlpSaved {
    const shape = [xn.shape[0]!, this.ffnDim];
    const gate = Tensor.empty(xn.arena, shape, category);
    const up = Tensor.empty(xn.arena, shape, category);
    linearForward(this.kernels, gate, xn, this.params.param(this.w1), false);
    linearForward(this.kernels, up, xn, this.params.param(this.w3), false);
    return { xn, gate, up };
  }

  /** residual [T, D] += W2·(silu(xn·W1ᵀ) ∘ xn·W3ᵀ) for xn [T, D]; keeps {@link gateUp}'s tensors. */
  forward(residual: Tensor, xn: Tensor, category: MemoryCategory = 'saved'): MlpSaved {
    const saved = this.gateUp(xn, category);
    const hidden = this.hidden(saved.gate, saved.up);
    linearForward(this.kernels, residual, hidden, this.params.param(this.w2), true);
    hidden.free();
    return saved;
  }

  /** Free what {@link gateUp} kept, without a backward. */
  release(saved: MlpSaved): void {
    saved.gate.free();
    saved.up.free();
  }

  /** From dResidual [T, D] write dxn [T, D] and accumulate the gradients of W1, W3, W2. Frees gate and up. */
  backward(saved: MlpSaved, dResidual: Tensor, dxn: Tensor): void {
    const { kernels, params } = this;
    const { xn, gate, up } = saved;
    const hidden = this.hidden(gate, up);
    linearBackwardWeight(kernels, params.grad(this.w2), dResidual, hidden);
    const dHidden = hidden; // reuse the buffer: the hidden values are no longer needed
    linearBackwardInput(kernels, dHidden, dResidual, params.param(this.w2), false);
    const dGate = Tensor.empty(xn.arena, gate.shape, 'activations');
    const dUp = Tensor.empty(xn.arena, gate.shape, 'activations');
    kernels.swigluBackward(dGate, dUp, dHidden, gate, up);
    dHidden.free();
    linearBackwardInput(kernels, dxn, dGate, params.param(this.w1), false);
    linearBackwardInput(kernels, dxn, dUp, params.param(this.w3), true);
    linearBackwardWeight(kernels, params.grad(this.w1), dGate, xn);
    linearBackwardWeight(kernels, params.grad(this.w3), dUp, xn);
    for (const tensor of [gate, up, dGate, dUp]) tensor.free();
  }

  private hidden(gate: Tensor, up: Tensor): Tensor {
    const hidden = Tensor.empty(gate.arena, gate.shape, 'activations');
    this.kernels.swigluForward(hidden, gate, up);
    return hidden;
  }
}
