import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { readHfModel } from './import.js';

/** The model fields an imported model must share with the run's config (its tensors' shapes). */
const SHAPE_FIELDS = ['vocabSize', 'dim', 'layers', 'heads', 'kvHeads', 'ffnDim', 'tiedEmbeddings'] as const;
/** HF's name of each (config.json). */
const HF_FIELD: Record<(typeof SHAPE_FIELDS)[number], string> = {
  vocabSize: 'vocab_size', dim: 'hidden_size', layers: 'num_hidden_layers', heads: 'num_attention_heads', kvHeads: 'num_key_value_heads', ffnDim: 'intermediate_size', tiedEmbeddings: 'tie_word_embeddings',
};

/**
 * `model.init = "hf:DIR"`: the initial parameters of a fresh run, read from the Hugging Face
 * LLaMA folder DIR (readHfModel) instead of drawn from train.seed. The shapes must match the
 * run's model; ropeTheta, normEps and initStd are the run's (a larger model.ropeTheta at a longer
 * train.seqLen is the context extension of docs/model.md, "Longer context"), and the notes say
 * where they differ from DIR's config.json.
 * @throws ConfigError for a value that is not "hf:DIR", anything readHfModel refuses, a shape
 * field that differs (each named with both values and its config.json name), or a tokenizer
 * that differs from the one config.json names.
 */
export function hfInitParams(model: ModelConfig, init: string, tokenizer: string): { params: Float32Array; notes: string[] } {
  if (!init.startsWith('hf:') || init.length <= 3) throw new ConfigError(`model.init = ${JSON.stringify(init)} is invalid: use "hf:DIR", a Hugging Face LLaMA folder (config.json + safetensors)`);
  const dir = init.slice(3);
  const hf = readHfModel(dir);
  const theirs = hf.info.model;
  const diffs = SHAPE_FIELDS.filter((k) => theirs[k] !== model[k]).map((k) => `model.${k} = ${String(model[k])}, but ${HF_FIELD[k]} = ${String(theirs[k])}`);
  if (diffs.length > 0) throw new ConfigError(`model.init = ${JSON.stringify(init)}: the model differs from ${dir}/config.json in\n  ${diffs.join('\n  ')}\n  set these model keys to the imported model's values`);
  if (hf.info.tokenizer !== undefined && hf.info.tokenizer !== tokenizer) {
    throw new ConfigError(`model.init = ${JSON.stringify(init)}: the model was trained with the ${hf.info.tokenizer} tokenizer (config.json loongtrain_tokenizer) but data.tokenizer = "${tokenizer}"`);
  }
  const notes = [`initial parameters from ${dir} (model.init)`];
  if (theirs.ropeTheta !== model.ropeTheta) notes.push(`model.ropeTheta = ${model.ropeTheta}, the imported model's rope_theta = ${theirs.ropeTheta} (RoPE base changed, e.g. to extend the context)`);
  if (theirs.normEps !== model.normEps) notes.push(`model.normEps = ${model.normEps}, the imported model's rms_norm_eps = ${theirs.normEps}`);
  return { params: hf.params, notes };
}
