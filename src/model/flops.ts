import { headDim, type ModelConfig } from './config.js';

/**
 * Forward FLOPs of one sequence of `seqLen` tokens (algorithms.md §7), with D = dim, d = headDim,
 * H = heads, Hkv = kvHeads, F = ffnDim, V = vocabSize, S = seqLen; per layer:
 * 2·S·D·(D + 2·Hkv·d) (QKV) + 2·S·D² (output projection) + 3·2·S·D·F (SwiGLU) + 4·d·H·P
 * (attention; P visible (query, key) pairs: S(S+1)/2 causal, S² otherwise), plus 2·S·D·V for the
 * LM head. A training step's model FLOPs are 3× this (recomputation is not counted: that is HFU).
 * Elementwise work (norms, RoPE, softmax) is not counted, as in the paper's MFU.
 * @throws Error when seqLen is not a positive integer.
 */
export function modelFlops(config: ModelConfig, seqLen: number, causal: boolean): number {
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new Error(`modelFlops: seqLen = ${seqLen} is invalid: it must be a positive integer`);
  const s = seqLen;
  const D = config.dim;
  const d = headDim(config);
  const F = config.ffnDim;
  const pairs = causal ? (s * (s + 1)) / 2 : s * s;
  const perLayer = 2 * s * D * (D + 2 * config.kvHeads * d) + 2 * s * D * D + 3 * 2 * s * D * F + 4 * d * config.heads * pairs;
  return config.layers * perLayer + 2 * s * D * config.vocabSize;
}
