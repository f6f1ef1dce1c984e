import type { Kernels } from '../kernels/kernels.js';
import { Tensor } from '../tensor/tensor.js';

/** What {@link RMSNorm.forward} keeps: its input (owned by the caller) and rstd [T] (owned). */
export interface RMSNormSaved {
  x: Tensor;
  rstd: Tensor;
}

/** RMSNorm with a learned gain w [D] (Zhang & Sennrich 2019): out = x · w / rms(x). */
export class RMSNorm {
  constructor(
    private readonly kernels: Kernels,
    private readonly weight: Tensor,
    private readonly weightGrad: Tensor,
    private readonly eps: number,
  ) {}

  /**
   * Writes out [T, D] from x [T, D]. Saves x (not copied: the caller keeps it alive until
   * backward) and rstd [T] (category 'saved').
   */
  forward(out: Tensor, x: Tensor): RMSNormSaved {
    const rstd = Tensor.zeros(x.arena, [x.size / this.weight.size], 'saved');
    this.kernels.rmsnormForward(out, rstd, x, this.weight, this.eps);
    return { x, rstd };
  }

  /** Writes dx [T, D] from dout [T, D]; accumulates the gain's gradient; frees rstd. */
  backward(saved: RMSNormSaved, dout: Tensor, dx: Tensor): void {
    this.kernels.rmsnormBackward(dx, this.weightGrad, dout, saved.x, this.weight, saved.rstd);
    saved.rstd.free();
  }
}
