import type { Kernels } from '../kernels/kernels.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ParamStore } from './params.js';

/**
 * Token embedding: out[t, :] = table[tokens[t], :]; table `tok_embeddings` [V, D], looked up in
 * `params` at use time. Saves nothing for backward but the token ids, which the caller still holds.
 */
export class Embedding {
  constructor(
    private readonly kernels: Kernels,
    private readonly params: ParamStore,
  ) {}

  /** out [T, D]. @throws Error naming a token id outside [0, V). */
  forward(out: Tensor, tokens: Int32Array): void {
    this.kernels.embeddingForward(out, this.params.param('tok_embeddings'), tokens);
  }

  /** Accumulates dout [T, D] into the rows of the table's gradient named by `tokens`. */
  backward(dout: Tensor, tokens: Int32Array): void {
    this.kernels.embeddingBackward(this.params.grad('tok_embeddings'), dout, tokens);
  }
}
