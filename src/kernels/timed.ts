import type { Kernels } from './kernels.js';

/** Where a kernel's time is counted in the step breakdown (docs/bench.md, `bench train`). */
export type KernelCategory = 'attention' | 'gemm' | 'elementwise';

/** Wall milliseconds spent inside the kernels of each category. */
export type KernelTimes = Record<KernelCategory, number>;

type KernelMethod = Exclude<keyof Kernels, 'name'>;

/**
 * Every method of the {@link Kernels} interface with its category. A Record over the
 * interface's keys, so a method added to the interface fails to compile until it is listed
 * here: backends are class instances and Object.create chains, whose own keys do not name
 * their methods.
 */
const CATEGORY: Record<KernelMethod, KernelCategory> = {
  matmul: 'gemm',
  attentionForward: 'attention',
  attentionBackward: 'attention',
  mergeAttention: 'attention',
  rmsnormForward: 'elementwise',
  rmsnormBackward: 'elementwise',
  rope: 'elementwise',
  swigluForward: 'elementwise',
  swigluBackward: 'elementwise',
  crossEntropy: 'elementwise',
  embeddingForward: 'elementwise',
  embeddingBackward: 'elementwise',
  adamw: 'elementwise',
  axpy: 'elementwise',
  scale: 'elementwise',
  sumSquares: 'elementwise',
};

/** The categories in report order. */
export const KERNEL_CATEGORIES: readonly KernelCategory[] = ['attention', 'gemm', 'elementwise'];

/** A timing decorator over one Kernels object. */
export interface TimedKernels {
  /** Same results as the wrapped kernels (every call is forwarded with its arguments and `this`). */
  kernels: Kernels;
  /** Milliseconds accumulated per category since creation or the last reset (a copy). */
  times(): KernelTimes;
  /** Set every category back to 0. */
  reset(): void;
}

/**
 * Wrap every method of `inner` so that its wall time (two performance.now() calls per call) is
 * added to its category: `attention` (attentionForward, attentionBackward, mergeAttention),
 * `gemm` (matmul), `elementwise` (the rest). Calls a backend makes internally (one kernel
 * calling another through its own `this`) run unwrapped, so nothing is counted twice.
 */
export function timedKernels(inner: Kernels): TimedKernels {
  const acc: KernelTimes = { attention: 0, gemm: 0, elementwise: 0 };
  const wrapped: Record<string, unknown> = { name: inner.name };
  for (const method of Object.keys(CATEGORY) as KernelMethod[]) {
    const category = CATEGORY[method];
    const fn = inner[method] as (...args: unknown[]) => unknown;
    if (typeof fn !== 'function') throw new Error(`timedKernels: backend "${inner.name}" has no method ${method}`);
    wrapped[method] = (...args: unknown[]): unknown => {
      const t0 = performance.now();
      try {
        return fn.apply(inner, args);
      } finally {
        acc[category] += performance.now() - t0;
      }
    };
  }
  return {
    kernels: wrapped as unknown as Kernels,
    times: () => ({ ...acc }),
    reset: () => {
      acc.attention = 0;
      acc.gemm = 0;
      acc.elementwise = 0;
    },
  };
}
