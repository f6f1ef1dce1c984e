import type { Kernels } from '../kernels/kernels.js';
import type { MemoryCategory } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';
import type { ParamStore } from './params.js';

/** What {@link RMSNorm.forward} keeps: its input (owned by the caller) and rstd [T] (owned). */
export interface RMSNormSaved {
  x: Tensor;
  rstd: Tensor;
}

/**
 * RMSNorm with a learned gain w [D] (Zhang & Sennrich 2019): out = x · w / rms(x). The gain is
 * parameter `name` of `params`, looked up at use time (docs/zero.md, ParamStore).
 */
export class RMSNorm {
  constructor(
    private readonly kernels: Kernels,
    private readonly params: ParamStore,
    private readonly name: string,
    private readonly eps: number,
  ) {}

  /**
   * Writes out [T, D] from x [T, D]. Saves x (not copied: the caller keeps it alive until
   * backward) and rstd [T] (category `category`: 'saved' when kept until backward,
   * 'activations' when recomputed).
   */
  forward(out: Tensor, x: Tensor, category: MemoryCategory = 'saved'): RMSNormSaved {
    const weight = this.params.param(this.name);
    const rstd = Tensor.empty(x.arena, [x.size / weight.size], category);
    this.kernels.rmsnormForward(out, rstd, x, weight, this.eps);
    return { x, rstd };
  }

  /** Writes dx [T, D] from dout [T, D]; accumulates the gain's gradient; frees rstd. */
  backward(saved: RMSNormSaved, dout: Tensor, dx: Tensor): void {
    this.kernels.rmsnormBackward(dx, this.params.grad(this.name), dout, saved.x, this.params.param(this.name), saved.rstd);
    saved.rstd.free();
  }
}
