/** Attention masks for the kernel tests: the kinds, their definition as a predicate, and random and document masks. */
import type { AttentionMask } from '../../src/kernels/kernels.js';
import type { Rng } from '../../src/tensor/rng.js';

export const NONE: AttentionMask = { kind: 'none' };
export const CAUSAL: AttentionMask = { kind: 'causal', offset: 0 };

/** Whether query i sees key j under `mask`, written from the mask's definition (kernels.ts). */
export function visibleOf(mask: AttentionMask): (i: number, j: number) => boolean {
  switch (mask.kind) {
    case 'none':
      return () => true;
    case 'causal':
      return (i, j) => j <= i + mask.offset;
    case 'documents':
      return (i, j) => mask.keyStart[i]! <= j && j < mask.keyEnd[i]!;
  }
}

/**
 * Per-row ranges mixing every kind of row: empty (start = end, and start > end), a single key,
 * the whole block, and random ranges whose bounds are not multiples of 4 or 8.
 */
export function randomRanges(rng: Rng, sq: number, sk: number): AttentionMask {
  const keyStart = new Int32Array(sq);
  const keyEnd = new Int32Array(sq);
  for (let i = 0; i < sq; i++) {
    const a = rng.int(sk + 1);
    const b = rng.int(sk + 1);
    switch (i % 6) {
      case 0: [keyStart[i], keyEnd[i]] = [a, a]; break;
      case 1: [keyStart[i], keyEnd[i]] = [Math.max(a, b), Math.min(a, b)]; break;
      case 2: [keyStart[i], keyEnd[i]] = sk > 0 ? [Math.min(a, sk - 1), Math.min(a, sk - 1) + 1] : [0, 0]; break;
      case 3: [keyStart[i], keyEnd[i]] = [0, sk]; break;
      default: [keyStart[i], keyEnd[i]] = [Math.min(a, b), Math.max(a, b)];
    }
  }
  return { kind: 'documents', keyStart, keyEnd };
}

/**
 * The mask of document-causal attention for query tokens [q0, q0 + sq) over key tokens
 * [k0, k0 + sk) of a sequence cut into documents at cuSeqlens: token t sees the tokens of its
 * own document up to itself, as rows of the key block.
 */
export function documentMask(cuSeqlens: number[], q0: number, sq: number, k0: number, sk: number): AttentionMask {
  const keyStart = new Int32Array(sq);
  const keyEnd = new Int32Array(sq);
  for (let i = 0; i < sq; i++) {
    const t = q0 + i;
    const doc = cuSeqlens.findIndex((c, n) => c <= t && t < cuSeqlens[n + 1]!);
    keyStart[i] = Math.min(sk, Math.max(0, cuSeqlens[doc]! - k0));
    keyEnd[i] = Math.max(keyStart[i]!, Math.min(sk, t + 1 - k0));
  }
  return { kind: 'documents', keyStart, keyEnd };
}
