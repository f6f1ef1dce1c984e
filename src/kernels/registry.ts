import type { Kernels } from './kernels.js';
import { referenceKernels } from './reference/index.js';

const BACKENDS: Readonly<Record<string, Kernels>> = { reference: referenceKernels };

/** Names of the kernel backends this build has (config `train.kernels` accepts exactly these). */
export const KERNEL_NAMES = Object.keys(BACKENDS) as readonly string[];

/**
 * The kernel backend called `name`.
 * @throws Error naming the unknown backend and the valid names.
 */
export function getKernels(name: string): Kernels {
  if (!Object.hasOwn(BACKENDS, name)) {
    throw new Error(`unknown kernel backend ${JSON.stringify(name)}: valid names are ${KERNEL_NAMES.map((n) => `"${n}"`).join(', ')}`);
  }
  return BACKENDS[name]!;
}
