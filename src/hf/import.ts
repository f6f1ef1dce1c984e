import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packingOptions } from '../data/packing.js';
import { TOKENIZER_NAMES, TOKENIZER_VOCAB_SIZES, type TokenizerName } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { paramLayout, type ParamLayout } from '../model/params.js';
import { listCheckpoints, saveCheckpoint, type TrainerState } from '../train/checkpoint.js';
import { loadConfig } from '../train/config.js';
import { type NamedTensor, readSafetensors } from '../train/safetensors.js';
import { fromHfTensor, hfTensorName, modelConfigFromHf, type HfModelInfo } from './llama.js';

/** An HF LLaMA folder read into our layout. */
export interface HfModel {
  dir: string;
  info: HfModelInfo;
  layout: ParamLayout;
  /** [layout.flatSize], our parameter order and RoPE pairing (alignment gaps 0). */
  params: Float32Array;
  /** The safetensors files read. */
  files: string[];
}

const SHARD = /^model-(\d+)-of-(\d+)\.safetensors$/;
/** Buffers older HF checkpoints store that are derived from config.json (recomputed, not weights). */
const DERIVED = /\.rotary_emb\.inv_freq$/;

/** Which safetensors files hold the weights, and, with an index, which tensor is in which file. */
function weightFiles(dir: string): { files: string[]; weightMap?: Map<string, string> } {
  const indexFile = join(dir, 'model.safetensors.index.json');
  if (existsSync(indexFile)) {
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexFile, 'utf8'));
    } catch (e) {
      throw new ConfigError(`${indexFile} cannot be read: ${(e as Error).message}`);
    }
    const wm = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof wm !== 'object' || wm === null || Array.isArray(wm) || !Object.values(wm).every((f) => typeof f === 'string')) {
      throw new ConfigError(`${indexFile}: weight_map must be an object of tensor name → file name`);
    }
    const weightMap = new Map(Object.entries(wm as Record<string, string>));
    const files = [...new Set(weightMap.values())].sort();
    for (const f of files) if (f.includes('/') || f.includes('\\') || !existsSync(join(dir, f))) throw new ConfigError(`${indexFile}: weight_map names file ${JSON.stringify(f)}, which is not in ${dir}`);
    return { files, weightMap };
  }
  if (existsSync(join(dir, 'model.safetensors'))) return { files: ['model.safetensors'] };
  const shards = existsSync(dir) ? readdirSync(dir).filter((f) => SHARD.test(f)) : [];
  if (shards.length > 0) throw new ConfigError(`${dir} holds sharded weights (${shards[0]}, …) but no model.safetensors.index.json; it is needed to know which tensor is in which shard`);
  if (!existsSync(dir)) throw new ConfigError(`Hugging Face model folder ${dir} does not exist`);
  throw new ConfigError(`${dir} has no model.safetensors (nor model.safetensors.index.json with shards); only safetensors weights can be imported (convert a pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))`);
}

/**
 * Read the HF LLaMA folder `dir` (config.json and model.safetensors, or model-0000N-of-0000M
 * shards listed by model.safetensors.index.json; F32, F16 or BF16, converted to f32) into our
 * layout, undoing the RoPE row permutation of q and k (docs/model.md).
 * @throws ConfigError naming the file and the field or tensor for what we cannot represent:
 * config.json's fields (modelConfigFromHf), a `*.bias` tensor, a missing tensor, a shape that
 * differs from what config.json implies, a non-finite value, a tensor we have no place for, an
 * lm_head.weight that differs from the embedding of a tied model, an unsupported dtype.
 */
export function readHfModel(dir: string): HfModel {
  const configFile = join(dir, 'config.json');
  if (!existsSync(configFile)) throw new ConfigError(existsSync(dir) ? `${dir} has no config.json; it is not a Hugging Face model folder` : `Hugging Face model folder ${dir} does not exist`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(configFile, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${configFile} cannot be read: ${(e as Error).message}`);
  }
  const info = modelConfigFromHf(raw, configFile);
  const config = info.model;
  const { files, weightMap } = weightFiles(dir);
  const tensors = new Map<string, { t: NamedTensor; file: string }>();
  for (const f of files) {
    const path = join(dir, f);
    let content;
    try {
      content = readSafetensors(path, { convert: true });
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
    for (const [name, t] of content.tensors) {
      if (weightMap !== undefined && weightMap.get(name) !== f) continue;
      tensors.set(name, { t, file: path });
    }
  }
  if (weightMap !== undefined) {
    for (const [name, f] of weightMap) if (!tensors.has(name)) throw new ConfigError(`${join(dir, 'model.safetensors.index.json')} puts tensor "${name}" in ${f}, which does not hold it`);
  }
  for (const [name, { file }] of tensors) {
    if (name.endsWith('.bias')) throw new ConfigError(`${file}: tensor "${name}" is a bias; LoongTrain.ts models have no biases, so this model cannot be imported`);
  }
  const layout = paramLayout(config);
  const params = new Float32Array(layout.flatSize);
  const used = new Set<string>();
  const needs = `config.json (hidden_size ${config.dim}, intermediate_size ${config.ffnDim}, num_attention_heads ${config.heads}, num_key_value_heads ${config.kvHeads}, vocab_size ${config.vocabSize})`;
  for (const spec of layout.specs) {
    const hf = hfTensorName(spec.name, config).hf;
    const found = tensors.get(hf);
    if (found === undefined) throw new ConfigError(`${dir}: tensor "${hf}" is missing (the weights of our ${spec.name}, shape [${spec.shape.join(', ')}] by ${needs})`);
    const { t, file } = found;
    if (t.shape.join(',') !== spec.shape.join(',')) throw new ConfigError(`${file}: tensor "${hf}" has shape [${t.shape.join(', ')}], but ${needs} implies [${spec.shape.join(', ')}]`);
    const bad = t.data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new ConfigError(`${file}: tensor "${hf}"[${bad}] = ${t.data[bad]} is not finite`);
    params.set(fromHfTensor(spec, t.data, config), spec.offset);
    used.add(hf);
  }
  const head = tensors.get('lm_head.weight');
  if (config.tiedEmbeddings && head !== undefined) {
    const emb = tensors.get('model.embed_tokens.weight')!.t.data;
    if (head.t.data.length !== emb.length || head.t.data.some((x, i) => x !== emb[i])) {
      throw new ConfigError(`${head.file}: tie_word_embeddings = true in config.json but tensor "lm_head.weight" differs from "model.embed_tokens.weight"; set tie_word_embeddings to false to import both`);
    }
    used.add('lm_head.weight');
  }
  const extra = [...tensors.keys()].filter((n) => !used.has(n) && !DERIVED.test(n));
  if (extra.length > 0) {
    throw new ConfigError(`${dir}: tensor${extra.length === 1 ? '' : 's'} ${extra.slice(0, 5).map((n) => `"${n}"`).join(', ')}${extra.length > 5 ? ` and ${extra.length - 5} more` : ''} ${extra.length === 1 ? 'has' : 'have'} no place in a LLaMA model of ${needs}`);
  }
  return { dir, info, layout, params, files: files.map((f) => join(dir, f)) };
}

export interface HfImportOptions {
  /** Our tokenizer for the model (default: config.json's loongtrain_tokenizer, as our export writes). */
  tokenizer?: string;
  /** A training config whose run identity (train.seqLen, seed, batch, dp, data.packing, causal) the checkpoint records, so --resume with it continues; the model section comes from config.json. */
  config?: string;
  set?: readonly string[];
}

export interface HfImportResult {
  checkpoint: string;
  model: ModelConfig;
  tokenizer: TokenizerName;
  seqLen: number;
  /** The [model] section a training config must have to --resume this checkpoint. */
  modelToml: string;
}

/** The --set overrides that make a config's model section the imported one. */
export function modelOverrides(model: ModelConfig): string[] {
  return (Object.keys(model) as (keyof ModelConfig)[]).map((k) => `model.${k}=${String(model[k])}`);
}

/** Our tokenizer for an imported model: the option, else config.json's loongtrain_tokenizer; checked against vocab_size. */
export function importTokenizer(info: HfModelInfo, option: string | undefined, dir: string): TokenizerName {
  const name = option ?? info.tokenizer;
  if (name === undefined) {
    throw new ConfigError(`${join(dir, 'config.json')} does not say which LoongTrain.ts tokenizer the model uses (no loongtrain_tokenizer): pass --tokenizer ${TOKENIZER_NAMES.join('|')}`);
  }
  if (!(TOKENIZER_NAMES as readonly string[]).includes(name)) throw new ConfigError(`tokenizer ${JSON.stringify(name)} is unknown: use one of ${TOKENIZER_NAMES.map((n) => `"${n}"`).join(', ')}`);
  const need = TOKENIZER_VOCAB_SIZES[name as TokenizerName];
  if (info.model.vocabSize < need) throw new ConfigError(`${join(dir, 'config.json')}: vocab_size = ${info.model.vocabSize} is smaller than the ${name} tokenizer's ${need} tokens; pick the tokenizer the model was trained with`);
  return name as TokenizerName;
}

/**
 * Import the HF LLaMA folder `from` as a step-0 checkpoint in the checkpoint folder `out`
 * (`out/step-00000000/`, fresh AdamW state), usable by `train --resume`, generate and eval.
 * The run identity it records (seqLen, seed, sequences per step, causal, packing) comes from
 * `opts.config` + `opts.set` (defaults when absent; train.seqLen defaults to
 * max_position_embeddings when neither sets it), the model from config.json.
 * @throws ConfigError from readHfModel, for an unknown tokenizer, a config that does not validate
 * with the imported model, or an `out` that already holds checkpoints.
 */
export function importHf(from: string, out: string, opts: HfImportOptions = {}): HfImportResult {
  const hf = readHfModel(from);
  const tokenizer = importTokenizer(hf.info, opts.tokenizer, from);
  const existing = listCheckpoints(out);
  if (existing.length > 0) throw new ConfigError(`--out ${out} already holds ${existing.length} checkpoint(s) (newest step ${existing[existing.length - 1]!.step}); import into an empty folder`);
  const sets = [...(opts.set ?? [])];
  const seqLenSet = sets.some((s) => s.trim().startsWith('train.seqLen'));
  const pre = opts.config === undefined && !seqLenSet && hf.info.maxPositionEmbeddings !== undefined ? [`train.seqLen=${hf.info.maxPositionEmbeddings}`] : [];
  const cfg = loadConfig(opts.config, [...pre, ...sets, ...modelOverrides(hf.info.model), `data.tokenizer="${tokenizer}"`]);
  const sequencesPerStep = cfg.parallel.dp * cfg.train.batchSize;
  const state: TrainerState = {
    format: 1,
    step: 0,
    optimizerStep: 0,
    dataPosition: 0,
    sequencesPerStep,
    causal: cfg.train.causal,
    seed: cfg.train.seed,
    model: hf.info.model,
    tokenizer,
    seqLen: cfg.train.seqLen,
    layout: `imported from Hugging Face ${from}`,
    rngState: cfg.train.seed,
    packing: packingOptions(cfg.data),
  };
  const zeros = new Float32Array(hf.layout.flatSize);
  const checkpoint = saveCheckpoint(out, state, hf.layout, { params: hf.params, m: zeros, v: zeros, step: 0 }, 1);
  const m = hf.info.model;
  const modelToml = ['[model]', ...(Object.keys(m) as (keyof ModelConfig)[]).map((k) => `${k} = ${String(m[k])}`)].join('\n');
  return { checkpoint, model: m, tokenizer, seqLen: cfg.train.seqLen, modelToml };
}
