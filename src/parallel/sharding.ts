import type { ParallelDims } from './dims.js';

/**
 * Sequence indices held by rank (h, c) under zigzag 2D sharding (algorithms.md §2): the
 * sequence is cut into 2·cp chunks; context coordinate c owns chunks c and 2·cp − 1 − c, in
 * that order; that concatenation is cut into hp equal pieces and rank (h, c) holds piece h.
 * Returns S/sp ascending-within-piece indices. Requires seqLen divisible by 2·sp (see checkSeqLen).
 */
export function zigzagIndices(dims: ParallelDims, seqLen: number, h: number, c: number): Int32Array {
  const chunk = seqLen / (2 * dims.cp);
  const piece = seqLen / dims.sp;
  const out = new Int32Array(piece);
  for (let i = 0; i < piece; i++) {
    const j = h * piece + i; // index into the concatenation [chunk c, chunk 2cp−1−c]
    const chunkId = j < chunk ? c : 2 * dims.cp - 1 - c;
    out[i] = chunkId * chunk + (j % chunk);
  }
  return out;
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
