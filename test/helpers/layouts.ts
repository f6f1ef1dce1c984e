import { SequenceLayout } from '../../src/parallel/sequence-layout.js';
import type { Sequence } from '../../src/data/packing.js';

/** The SequenceLayout of one rank holding a whole sequence of `seqLen` tokens as one document. */
export function localLayout(seqLen: number, causal = true): SequenceLayout {
  return new SequenceLayout({ hp: 1, cp: 1, seqLen, causal });
}

/** A training sequence of one document: positions 0…S−1 and cu_seqlens [0, S] (what concat packing gives). */
export function concatSequence(tokens: Int32Array, labels: Int32Array): Sequence {
  return { tokens, labels, positions: Int32Array.from(tokens, (_, i) => i), cuSeqlens: Int32Array.of(0, tokens.length) };
}
