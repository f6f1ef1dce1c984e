import type { Kernels } from '../kernels/kernels.js';
import type { Tensor } from '../tensor/tensor.js';

/**
 * Token embedding: out[t, :] = table[tokens[t], :]; table [V, D]. Saves nothing for backward
 * but the token ids, which the caller still holds.
 */
export class Embedding {
  constructor(
    private readonly kernels: Kernels,
    private readonly table: Tensor,
    private readonly tableGrad: Tensor,
  ) {}

  /** out [T, D]. @throws Error naming a token id outside [0, V). */
  forward(out: Tensor, tokens: Int32Array): void {
    this.kernels.embeddingForward(out, this.table, tokens);
  }

  /** Accumulates dout [T, D] into the rows of the table's gradient named by `tokens`. */
  backward(dout: Tensor, tokens: Int32Array): void {
    this.kernels.embeddingBackward(this.tableGrad, dout, tokens);
  }
}
