import type { ParallelDims } from './dims.js';

/**
 * Sequence indices held by ring position c under zigzag sharding (algorithms.md §2): the
 * sequence is cut into 2·cp chunks and position c holds chunks c and 2·cp − 1 − c, in that
 * order (S/cp ascending indices). Requires seqLen divisible by 2·cp.
 */
export function zigzagPositionIndices(cp: number, seqLen: number, c: number): Int32Array {
  const chunk = seqLen / (2 * cp);
  const out = new Int32Array(2 * chunk);
  for (let i = 0; i < chunk; i++) {
    out[i] = c * chunk + i;
    out[chunk + i] = (2 * cp - 1 - c) * chunk + i;
  }
  return out;
}

/**
 * Sequence indices held by rank (h, c) under zigzag 2D sharding (algorithms.md §2): piece h of
 * the hp equal pieces of ring position c's zigzag pair ({@link zigzagPositionIndices}).
 * Returns S/sp ascending indices. Requires seqLen divisible by 2·sp (see checkSeqLen).
 */
export function zigzagIndices(dims: ParallelDims, seqLen: number, h: number, c: number): Int32Array {
  const piece = seqLen / dims.sp;
  return zigzagPositionIndices(dims.cp, seqLen, c).slice(h * piece, (h + 1) * piece);
}

/** Zigzag indices of a global rank (see {@link zigzagIndices}). */
export function rankTokenIndices(dims: ParallelDims, seqLen: number, rank: number): Int32Array {
  const { h, c } = dims.coords(rank);
  return zigzagIndices(dims, seqLen, h, c);
}

/** Gather `values[indices[i]]` (tokens, labels or positions of one shard). */
export function takeIndices(values: Int32Array, indices: Int32Array): Int32Array {
  const out = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) out[i] = values[indices[i]!]!;
  return out;
}
