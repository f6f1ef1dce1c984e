import type { Kernels } from '../kernels/kernels.js';
import type { Tensor } from '../tensor/tensor.js';

/** ‖g‖₂ of the whole flat gradient tensor, accumulated in float64. */
export function gradNorm(kernels: Kernels, grads: Tensor): number {
  return Math.sqrt(kernels.sumSquares(grads));
}

/**
 * Global-norm clipping (Pascanu et al. 2013): if ‖g‖ > maxNorm, g ← g · maxNorm/‖g‖.
 * `norm` defaults to {@link gradNorm} of `grads`; a sharded optimizer passes the norm it reduced
 * over all shards. A non-finite norm leaves the gradients untouched (the caller should skip the
 * step). Returns the norm before clipping.
 * @throws Error when maxNorm is not positive (Infinity disables clipping).
 */
export function clipGradNorm(kernels: Kernels, grads: Tensor, maxNorm: number, norm: number = gradNorm(kernels, grads)): number {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm = ${maxNorm} is invalid: it must be > 0 (Infinity disables clipping)`);
  if (Number.isFinite(norm) && norm > maxNorm) kernels.scale(grads, maxNorm / norm);
  return norm;
}
