import { type Arena, MAX_ARENA_BYTES } from '../../tensor/arena.js';
import type { Tensor } from '../../tensor/tensor.js';
import { shapeText } from '../checks.js';

/*
 * Argument checks of the `wasm` backend, done in TypeScript before any address reaches the
 * module (which trusts its inputs), beyond the shared shape checks of src/kernels/checks.ts:
 * every tensor must live in the arena this backend was instantiated over, and scratch sizes
 * must be ones an arena can give.
 */

/** @throws Error naming the kernel and tensor when `t` is not in `arena`. */
export function checkArena(kernel: string, arena: Arena, tensors: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(tensors)) {
    if (t.arena !== arena) {
      throw new Error(
        `${kernel}: ${name} ${shapeText(t)} lives in rank ${t.arena.rank}'s arena, not in the arena of rank ${arena.rank} that these wasm kernels were created over (createWasmKernels(arena) per rank)`,
      );
    }
  }
}

/**
 * A kernel's scratch size in bytes, as the module's `…ScratchBytes` export computed it (in f64,
 * so a long sequence cannot wrap it around), checked before it reaches the arena.
 * @throws RangeError naming the kernel and the size when it is not a positive safe integer, or
 * when it exceeds what a 4 GiB arena can hold (then only a shorter block helps: more cp ranks
 * or a shorter sequence).
 */
export function checkScratchBytes(kernel: string, bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new RangeError(`${kernel}: scratch size ${bytes} bytes is invalid: it must be a positive integer (the size computation is broken for these shapes)`);
  }
  if (bytes > MAX_ARENA_BYTES) {
    throw new RangeError(
      `${kernel}: needs ${bytes} bytes of scratch, more than an arena can hold (${MAX_ARENA_BYTES} bytes, 4 GiB); shorten the sequence or split it over more context-parallel ranks (parallel.cp)`,
    );
  }
  return bytes;
}
