import type { Kernels } from '../kernels.js';
import { attentionBackward, attentionForward, mergeAttention } from './attention.js';
import * as dense from './dense.js';

/** The `reference` backend: plain TypeScript, float64 accumulation, the exactness yardstick. */
export const referenceKernels: Kernels = {
  name: 'reference',
  matmul: dense.matmul,
  attentionForward,
  attentionBackward,
  mergeAttention,
  rmsnormForward: dense.rmsnormForward,
  rmsnormBackward: dense.rmsnormBackward,
  rope: dense.rope,
  swigluForward: dense.swigluForward,
  swigluBackward: dense.swigluBackward,
  crossEntropy: dense.crossEntropy,
  embeddingForward: dense.embeddingForward,
  embeddingBackward: dense.embeddingBackward,
  adamw: dense.adamw,
  axpy: dense.axpy,
  scale: dense.scale,
  sumSquares: dense.sumSquares,
};
