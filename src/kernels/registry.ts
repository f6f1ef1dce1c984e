import { ConfigError } from '../errors.js';
import type { Arena } from '../tensor/arena.js';
import { blasAvailable, createBlasKernels } from './blas/index.js';
import type { Kernels } from './kernels.js';
import { referenceKernels } from './reference/index.js';
import { createWasmKernels, wasmAvailable } from './wasm/index.js';

/** The kernel backends (docs/kernels-blas.md): `wasm` and `blas` work on one rank's arena. */
export const BACKEND_NAMES = ['reference', 'wasm', 'blas'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** What config `train.kernels` accepts: a backend, or `auto` (the fastest available). */
export const KERNEL_NAMES = [...BACKEND_NAMES, 'auto'] as const;
export type KernelChoice = (typeof KERNEL_NAMES)[number];

/** Order `auto` tries: BLAS GEMMs beat the WebAssembly ones, which beat plain TypeScript. */
const AUTO_ORDER: readonly BackendName[] = ['blas', 'wasm', 'reference'];

export interface BackendStatus {
  ok: boolean;
  /** What it runs on when ok, e.g. the BLAS library and where the other kernels come from. */
  detail?: string;
  /** Why it cannot run, and the fix, when not ok. */
  reason?: string;
}

/** Whether backend `name` can run here, and why not. Loads the BLAS library on first ask. */
export function backendStatus(name: BackendName): BackendStatus {
  switch (name) {
    case 'reference':
      return { ok: true, detail: 'plain TypeScript' };
    case 'wasm': {
      const w = wasmAvailable();
      return w.ok ? { ok: true, detail: w.note } : { ok: false, reason: w.reason ?? w.note };
    }
    case 'blas': {
      const b = blasAvailable();
      if (!b.ok) return { ok: false, reason: b.reason! };
      const core = b.core === undefined ? '' : `, ${b.core.name} kernels${b.core.chosenBy === 'OpenBLAS' ? '' : ` (OPENBLAS_CORETYPE${b.core.chosenBy === 'loongtrain' ? ' set from the CPU flags' : ''})`}`;
      return { ok: true, detail: `${b.library!}${core}; ${wasmAvailable().ok ? 'attention as GEMM tiles, other kernels from wasm' : 'attention and other kernels from reference'}` };
    }
  }
}

/**
 * The backend `choice` runs on: itself when available, for `auto` the first available of blas,
 * wasm, reference. Call it before ranks start so that an unavailable backend is a config error.
 * @throws ConfigError naming train.kernels, the backend and why it cannot run (with the fix),
 * or an unknown name and the valid ones.
 */
export function resolveKernels(choice: string): { name: BackendName; detail: string } {
  if (!(KERNEL_NAMES as readonly string[]).includes(choice)) {
    throw new ConfigError(`train.kernels = ${JSON.stringify(choice)} is invalid: use one of ${KERNEL_NAMES.map((n) => `"${n}"`).join(', ')}`);
  }
  const order = choice === 'auto' ? AUTO_ORDER : [choice as BackendName];
  for (const name of order) {
    const s = backendStatus(name);
    if (s.ok) return { name, detail: s.detail ?? name };
  }
  throw new ConfigError(`train.kernels = "${choice}" cannot run here: ${backendStatus(choice as BackendName).reason ?? 'unavailable'}; use "auto" to take the fastest available backend`);
}

/**
 * The kernels of backend `choice` (`auto` resolved as {@link resolveKernels}) for one rank:
 * `wasm` and `blas` operate on `arena`'s memory, so every rank creates its own.
 * @throws ConfigError when the backend cannot run here (see resolveKernels).
 */
export function createKernels(choice: KernelChoice, arena: Arena): Kernels {
  const { name } = resolveKernels(choice);
  if (name === 'reference') return referenceKernels;
  const wasmKernels = wasmAvailable().ok ? createWasmKernels(arena) : undefined;
  if (name === 'wasm') return wasmKernels!;
  return wasmKernels === undefined ? createBlasKernels(referenceKernels) : createBlasKernels(wasmKernels, { arena, tiles: wasmKernels.attentionTiles });
}

/**
 * The backends that need no arena, by name (only `reference`): for code that runs kernels
 * outside a rank.
 * @throws Error naming the unknown backend and the valid names.
 */
export function getKernels(name: string): Kernels {
  if (name !== 'reference') {
    throw new Error(`unknown kernel backend ${JSON.stringify(name)}: valid names are "reference" ("wasm" and "blas" work on a rank's arena: use createKernels(name, arena))`);
  }
  return referenceKernels;
}
