import type { ParallelDims } from '../parallel/dims.js';
import { SequenceLayout, type Sharding } from '../parallel/sequence-layout.js';
import { takeIndices } from '../parallel/sharding.js';
import type { Sequence } from './packing.js';

/** The part of one sequence a rank holds. */
export interface SequenceShard {
  /** [S/sp] token ids */
  tokens: Int32Array;
  /** [S/sp] label ids (already shifted over the whole sequence; −1 at document ends) */
  labels: Int32Array;
  /** [S/sp] RoPE positions of those tokens (their offsets in their document, or in the sequence) */
  positions: Int32Array;
}

/** How a run shards and masks its sequences (train.causal, parallel.sharding, parallel.balanceChunks). */
export interface ShardingOptions {
  causal: boolean;
  sharding: Sharding;
  balanceChunks: number;
}

/**
 * The SequenceLayout of one sequence over the hp × cp block: its documents (cu_seqlens), the
 * run's mask and sharding.
 * @throws ConfigError when the sequence length does not fit the sharding, or cu_seqlens is invalid.
 */
export function sequenceLayoutOf(dims: Pick<ParallelDims, 'hp' | 'cp'>, seq: Sequence, opts: ShardingOptions): SequenceLayout {
  return new SequenceLayout({ hp: dims.hp, cp: dims.cp, seqLen: seq.tokens.length, cuSeqlens: seq.cuSeqlens, ...opts });
}

/**
 * The shard of rank (h, c) of the hp × cp block: tokens, labels and RoPE positions taken at the
 * layout's rankTokens(h, c) (algorithms.md §2 for zigzag), so labels must already be shifted
 * over the whole sequence (SequenceSampler does that) and the document boundaries travel with
 * their tokens through the layout.
 * @throws RangeError when the sequence's arrays differ in length from each other or from the layout.
 */
export function shardSequence(layout: SequenceLayout, h: number, c: number, seq: Sequence): SequenceShard {
  const seqLen = seq.tokens.length;
  for (const [name, a] of [['labels', seq.labels], ['positions', seq.positions]] as const) {
    if (a.length !== seqLen) throw new RangeError(`shardSequence: ${seqLen} tokens but ${a.length} ${name}; they must have the same length`);
  }
  if (layout.seqLen !== seqLen) throw new RangeError(`shardSequence: the layout is for ${layout.seqLen} tokens, the sequence has ${seqLen}`);
  const indices = layout.rankTokens(h, c);
  return { tokens: takeIndices(seq.tokens, indices), labels: takeIndices(seq.labels, indices), positions: takeIndices(seq.positions, indices) };
}
