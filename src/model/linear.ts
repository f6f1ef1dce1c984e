import type { Kernels } from '../kernels/kernels.js';
import type { Tensor } from '../tensor/tensor.js';

/*
 * A bias-free linear map with the weight stored [out, in] (the PyTorch/LLaMA layout):
 * y = x·Wᵀ for x [T, in], W [out, in], y [T, out].
 */

/** y = x·Wᵀ, or y += x·Wᵀ when `accumulate` (how a branch adds into the residual stream). */
export function linearForward(kernels: Kernels, y: Tensor, x: Tensor, w: Tensor, accumulate: boolean): void {
  const [out, inp] = w.shape as [number, number];
  kernels.matmul(y, x, w, x.size / inp, out, inp, { transB: true, accumulate });
}

/** Gradient of the input, dx = dy·W (overwritten, or added when `accumulate`). */
export function linearBackwardInput(kernels: Kernels, dx: Tensor, dy: Tensor, w: Tensor, accumulate: boolean): void {
  const [out, inp] = w.shape as [number, number];
  kernels.matmul(dx, dy, w, dy.size / out, inp, out, { accumulate });
}

/** Gradient of the weight, dW += dyᵀ·x (summed over the T tokens). */
export function linearBackwardWeight(kernels: Kernels, dw: Tensor, dy: Tensor, x: Tensor): void {
  const [out, inp] = dw.shape as [number, number];
  kernels.matmul(dw, dy, x, out, inp, dy.size / out, { transA: true, accumulate: true });
}
