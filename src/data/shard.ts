import { checkSeqLen, type ParallelDims } from '../parallel/dims.js';
import { rankTokenIndices, takeIndices } from '../parallel/sharding.js';

/** The part of one sequence a rank holds. */
export interface SequenceShard {
  /** [S/sp] token ids */
  tokens: Int32Array;
  /** [S/sp] label ids (already shifted over the whole sequence) */
  labels: Int32Array;
  /** [S/sp] global positions of those tokens in the sequence (for RoPE and the causal mask) */
  positions: Int32Array;
}

/**
 * Zigzag 2D shard of a whole sequence for `rank` (algorithms.md §2, via rankTokenIndices):
 * tokens, labels and positions are taken at the same indices, so labels must already be
 * shifted over the whole sequence (SequenceSampler does that).
 * @throws RangeError if tokens and labels differ in length; ConfigError naming train.seqLen,
 * 2·sp and the nearest valid lengths when the length is not a positive multiple of 2·sp (checkSeqLen).
 */
export function shardSequence(dims: ParallelDims, rank: number, tokens: Int32Array, labels: Int32Array): SequenceShard {
  const seqLen = tokens.length;
  if (labels.length !== seqLen) throw new RangeError(`shardSequence: ${seqLen} tokens but ${labels.length} labels; they must have the same length`);
  checkSeqLen(dims, seqLen);
  const positions = rankTokenIndices(dims, seqLen, rank);
  return { tokens: takeIndices(tokens, positions), labels: takeIndices(labels, positions), positions };
}
