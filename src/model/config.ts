import { ConfigError } from '../errors.js';
import { divisors } from '../parallel/dims.js';

/** Shape and initialisation of a LLaMA-style decoder (docs/model.md). */
export interface ModelConfig {
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** Model width D = heads · headDim. */
  dim: number;
  /** Number of transformer blocks. */
  layers: number;
  /** Query heads H. */
  heads: number;
  /** KV heads Hkv (grouped-query attention); H must be a multiple of Hkv. */
  kvHeads: number;
  /** SwiGLU hidden width F. */
  ffnDim: number;
  /** RoPE base θ (10000 in LLaMA). */
  ropeTheta: number;
  /** ε inside RMSNorm's square root. */
  normEps: number;
  /** The LM head reuses `tok_embeddings` instead of an own `output` matrix. */
  tiedEmbeddings: boolean;
  /** Standard deviation of the normal initialisation of weight matrices. */
  initStd: number;
}

function positiveInt(field: keyof ModelConfig, value: unknown): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ConfigError(`model.${field} = ${String(value)} is invalid: it must be a positive integer`);
  }
}

function positiveFinite(field: keyof ModelConfig, value: unknown): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new ConfigError(`model.${field} = ${String(value)} is invalid: it must be a positive finite number`);
  }
}

/**
 * Check every field and return the config unchanged.
 * @throws ConfigError naming the field, its value and what would be valid: sizes must be positive
 * integers, heads a multiple of kvHeads, dim a multiple of heads, headDim = dim/heads even (RoPE
 * rotates pairs), ropeTheta, normEps and initStd positive and finite, tiedEmbeddings a boolean.
 */
export function validateModelConfig(config: ModelConfig): ModelConfig {
  for (const field of ['vocabSize', 'dim', 'layers', 'heads', 'kvHeads', 'ffnDim'] as const) positiveInt(field, config[field]);
  for (const field of ['ropeTheta', 'normEps', 'initStd'] as const) positiveFinite(field, config[field]);
  if (typeof config.tiedEmbeddings !== 'boolean') {
    throw new ConfigError(`model.tiedEmbeddings = ${String(config.tiedEmbeddings)} is invalid: it must be true or false`);
  }
  const { dim, heads, kvHeads } = config;
  if (heads % kvHeads !== 0) {
    throw new ConfigError(`model.kvHeads = ${kvHeads} does not divide model.heads = ${heads}; valid kvHeads: ${divisors(heads).join(', ')}`);
  }
  if (dim % heads !== 0) {
    throw new ConfigError(`model.dim = ${dim} is not a multiple of model.heads = ${heads}; valid heads: ${divisors(dim).join(', ')}`);
  }
  if ((dim / heads) % 2 !== 0) {
    const valid = divisors(dim).filter((h) => (dim / h) % 2 === 0 && h % kvHeads === 0);
    throw new ConfigError(
      `headDim = model.dim / model.heads = ${dim}/${heads} = ${Number((dim / heads).toFixed(2))} must be an even integer for RoPE; heads that give an even headDim with kvHeads = ${kvHeads}: ${valid.join(', ') || 'none'}`,
    );
  }
  return config;
}

/** Head dimension d = dim / heads. */
export function headDim(config: ModelConfig): number {
  return config.dim / config.heads;
}
