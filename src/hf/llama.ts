import { ConfigError } from '../errors.js';
import { headDim, type ModelConfig, validateModelConfig } from '../model/config.js';
import type { ParamSpec } from '../model/params.js';

/**
 * The Hugging Face LLaMA layout (transformers' LlamaForCausalLM) and how our parameters map onto
 * it (docs/model.md, "Hugging Face names and RoPE pairing").
 *
 * Matrices: both store nn.Linear's [out, in] (y = x·Wᵀ) and the embedding [V, D], so no
 * transpose. RoPE: we rotate the pairs (2i, 2i+1) of each head, HF's rotate-half rotates
 * (i, i + d/2), both with frequency θ^(−2i/d). So the rows of wq and wk are permuted inside each
 * head: HF row j of a head is our row π(j), π(j) = 2j for j < d/2 and π(j) = 2(j − d/2) + 1
 * for j ≥ d/2. q·k inside a head is unchanged by permuting both alike; v and o are not touched.
 * Export applies π (this is exactly `permute` of transformers' convert_llama_weights_to_hf.py,
 * which maps Meta's interleaved pairs — ours — to rotate-half); import applies its inverse.
 */

/** What the HF name of one of our parameters is, and whether its rows get the RoPE permutation (over how many heads). */
export interface HfTensorName {
  hf: string;
  /** Heads whose rows are permuted (q: heads, k: kvHeads); undefined: copied as is. */
  ropeHeads?: number;
}

/** The HF name of our parameter `name` (docs/model.md table). @throws Error for a name that is not one of ours. */
export function hfTensorName(name: string, config: ModelConfig): HfTensorName {
  if (name === 'tok_embeddings') return { hf: 'model.embed_tokens.weight' };
  if (name === 'norm') return { hf: 'model.norm.weight' };
  if (name === 'output') return { hf: 'lm_head.weight' };
  const m = /^layers\.(\d+)\.(.+)$/.exec(name);
  if (m !== null) {
    const p = `model.layers.${m[1]}`;
    switch (m[2]) {
      case 'attn_norm':
        return { hf: `${p}.input_layernorm.weight` };
      case 'attn.wq':
        return { hf: `${p}.self_attn.q_proj.weight`, ropeHeads: config.heads };
      case 'attn.wk':
        return { hf: `${p}.self_attn.k_proj.weight`, ropeHeads: config.kvHeads };
      case 'attn.wv':
        return { hf: `${p}.self_attn.v_proj.weight` };
      case 'attn.wo':
        return { hf: `${p}.self_attn.o_proj.weight` };
      case 'mlp_norm':
        return { hf: `${p}.post_attention_layernorm.weight` };
      case 'mlp.w1':
        return { hf: `${p}.mlp.gate_proj.weight` };
      case 'mlp.w3':
        return { hf: `${p}.mlp.up_proj.weight` };
      case 'mlp.w2':
        return { hf: `${p}.mlp.down_proj.weight` };
    }
  }
  throw new Error(`no Hugging Face name for parameter ${JSON.stringify(name)}`);
}

/**
 * Permute the rows of `w` ([heads·d, cols], row-major) inside each head between our RoPE pairing
 * and HF's. `toHf`: out row j of a head = in row π(j) (export); otherwise out row π(j) = in row j
 * (import, the inverse). Returns a new array.
 */
export function permuteRopeRows(w: Float32Array, heads: number, d: number, cols: number, toHf: boolean): Float32Array {
  if (w.length !== heads * d * cols || d % 2 !== 0) throw new Error(`permuteRopeRows: ${w.length} values are not [${heads}·${d}, ${cols}] with even d`);
  const out = new Float32Array(w.length);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < d; j++) {
      const ours = h * d + (j < half ? 2 * j : 2 * (j - half) + 1);
      const hf = h * d + j;
      const [from, to] = toHf ? [ours, hf] : [hf, ours];
      out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
    }
  }
  return out;
}

/** Our parameter's data in HF's layout (permuted rows for q and k). */
export function toHfTensor(spec: ParamSpec, data: Float32Array, config: ModelConfig): Float32Array {
  const { ropeHeads } = hfTensorName(spec.name, config);
  return ropeHeads === undefined ? data : permuteRopeRows(data, ropeHeads, headDim(config), spec.shape[1]!, true);
}

/** An HF tensor's data in our layout (the inverse of {@link toHfTensor}). */
export function fromHfTensor(spec: ParamSpec, data: Float32Array, config: ModelConfig): Float32Array {
  const { ropeHeads } = hfTensorName(spec.name, config);
  return ropeHeads === undefined ? data : permuteRopeRows(data, ropeHeads, headDim(config), spec.shape[1]!, false);
}

/** HF's LlamaConfig fields we write and read. */
export interface HfLlamaConfig {
  architectures: string[];
  model_type: 'llama';
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  num_hidden_layers: number;
  head_dim: number;
  hidden_act: 'silu';
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: null;
  vocab_size: number;
  tie_word_embeddings: boolean;
  max_position_embeddings: number;
  initializer_range: number;
  attention_bias: false;
  mlp_bias: false;
  bos_token_id?: number;
  eos_token_id?: number;
  torch_dtype: 'float32' | 'bfloat16';
  /** Our tokenizer's name (not an HF field; transformers keeps it as an attribute), read back by import. */
  loongtrain_tokenizer?: string;
}

/** config.json for our model trained at `seqLen` (max_position_embeddings). */
export function hfConfigOf(model: ModelConfig, seqLen: number, dtype: 'f32' | 'bf16', tokenizer: { name: string; separatorId: number }): HfLlamaConfig {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: model.dim,
    intermediate_size: model.ffnDim,
    num_attention_heads: model.heads,
    num_key_value_heads: model.kvHeads,
    num_hidden_layers: model.layers,
    head_dim: headDim(model),
    hidden_act: 'silu',
    rms_norm_eps: model.normEps,
    rope_theta: model.ropeTheta,
    rope_scaling: null,
    vocab_size: model.vocabSize,
    tie_word_embeddings: model.tiedEmbeddings,
    max_position_embeddings: seqLen,
    initializer_range: model.initStd,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: tokenizer.separatorId,
    eos_token_id: tokenizer.separatorId,
    torch_dtype: dtype === 'bf16' ? 'bfloat16' : 'float32',
    loongtrain_tokenizer: tokenizer.name,
  };
}

/** What {@link modelConfigFromHf} reads out of config.json. */
export interface HfModelInfo {
  model: ModelConfig;
  maxPositionEmbeddings: number | undefined;
  /** config.json's loongtrain_tokenizer, when present. */
  tokenizer: string | undefined;
}

/**
 * Our ModelConfig from an HF config.json object (defaults as LlamaConfig's: num_key_value_heads
 * = num_attention_heads, rms_norm_eps 1e-6, rope_theta 10000, tie_word_embeddings false,
 * initializer_range 0.02).
 * @throws ConfigError naming the config.json field (and `file`) for what we cannot represent:
 * another model_type or architecture, a hidden_act other than silu, attention_bias or mlp_bias,
 * head_dim ≠ hidden_size / num_attention_heads, any rope_scaling, a missing or invalid size.
 */
export function modelConfigFromHf(raw: unknown, file: string): HfModelInfo {
  const refuse = (field: string, value: unknown, why: string): never => {
    throw new ConfigError(`${file}: ${field} = ${JSON.stringify(value)} ${why}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${file} is not a JSON object (expected a Hugging Face LlamaConfig)`);
  const c = raw as Record<string, unknown>;
  if (c.model_type !== 'llama') refuse('model_type', c.model_type, 'is not supported: only "llama" (LlamaForCausalLM) can be imported');
  if (c.architectures !== undefined) {
    if (!Array.isArray(c.architectures) || c.architectures.length !== 1 || c.architectures[0] !== 'LlamaForCausalLM') {
      refuse('architectures', c.architectures, 'is not supported: only ["LlamaForCausalLM"] can be imported');
    }
  }
  const int = (field: string, fallback?: number): number => {
    const v = c[field] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) refuse(field, v, 'is invalid: it must be a positive integer');
    return v as number;
  };
  const num = (field: string, fallback: number): number => {
    const v = c[field] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) refuse(field, v, 'is invalid: it must be a positive finite number');
    return v as number;
  };
  const hidden = int('hidden_size');
  const heads = int('num_attention_heads');
  const kvHeads = int('num_key_value_heads', heads);
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu') refuse('hidden_act', c.hidden_act, 'is not supported: LoongTrain.ts uses SwiGLU with silu only');
  for (const field of ['attention_bias', 'mlp_bias'] as const) {
    if (c[field] !== undefined && c[field] !== false) refuse(field, c[field], 'is not supported: LoongTrain.ts has no biases');
  }
  if (c.head_dim !== undefined && c.head_dim !== null && c.head_dim !== hidden / heads) {
    refuse('head_dim', c.head_dim, `is not supported: LoongTrain.ts needs head_dim = hidden_size / num_attention_heads = ${hidden}/${heads}`);
  }
  if (c.rope_scaling !== undefined && c.rope_scaling !== null) {
    const s = c.rope_scaling as Record<string, unknown>;
    const type = typeof s === 'object' ? (s.rope_type ?? s.type) : s;
    refuse(`rope_scaling`, c.rope_scaling, `is not supported (rope_scaling type ${JSON.stringify(type)}): LoongTrain.ts has plain RoPE with a settable base; import without scaling and extend the context with a larger model.ropeTheta (docs/model.md, "Longer context")`);
  }
  const tied = c.tie_word_embeddings ?? false;
  if (typeof tied !== 'boolean') refuse('tie_word_embeddings', tied, 'is invalid: it must be true or false');
  const maxPos = c.max_position_embeddings === undefined ? undefined : int('max_position_embeddings');
  const model: ModelConfig = {
    vocabSize: int('vocab_size'),
    dim: hidden,
    layers: int('num_hidden_layers'),
    heads,
    kvHeads,
    ffnDim: int('intermediate_size'),
    ropeTheta: num('rope_theta', 10000),
    normEps: num('rms_norm_eps', 1e-6),
    tiedEmbeddings: tied as boolean,
    initStd: num('initializer_range', 0.02),
  };
  try {
    validateModelConfig(model);
  } catch (e) {
    throw new ConfigError(`${file}: the model cannot be represented: ${(e as Error).message} (model.dim = hidden_size, model.heads = num_attention_heads, model.kvHeads = num_key_value_heads)`);
  }
  const tok = typeof c.loongtrain_tokenizer === 'string' ? c.loongtrain_tokenizer : undefined;
  return { model, maxPositionEmbeddings: maxPos, tokenizer: tok };
}
