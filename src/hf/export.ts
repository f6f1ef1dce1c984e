import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { loadTrainedModel } from '../infer/trained-model.js';
import { paramView } from '../model/params.js';
import { writeFileAtomic } from '../train/atomic-write.js';
import { type NamedTensor, writeSafetensors } from '../train/safetensors.js';
import { gpt2TokenizerFiles } from './gpt2-files.js';
import { hfConfigOf, hfTensorName, toHfTensor } from './llama.js';

export const HF_DTYPES = ['f32', 'bf16'] as const;
export type HfDtype = (typeof HF_DTYPES)[number];

export interface HfExportResult {
  /** The checkpoint folder that was read. */
  checkpoint: string;
  out: string;
  dtype: HfDtype;
  /** Files written into `out`, by name. */
  files: string[];
  tensors: number;
  /** Why no tokenizer files were written (the byte tokenizer has no HF form); undefined when they were. */
  tokenizerNote?: string;
}

/**
 * Write checkpoint `checkpoint` (a checkpoint folder, or a run or checkpoint folder: its newest
 * checkpoint) as a Hugging Face LlamaForCausalLM folder `out`: config.json, model.safetensors
 * (HF names, q/k rows permuted to rotate-half RoPE, F32 or BF16 rounded to nearest even;
 * metadata format "pt") and, for the gpt2 tokenizer, its HF tokenizer files (docs/model.md,
 * "Hugging Face names and RoPE pairing").
 * @throws ConfigError naming the checkpoint (loadTrainedModel) or a bad dtype.
 */
export function exportHf(checkpoint: string, out: string, opts: { dtype?: string } = {}): HfExportResult {
  const dtype = (opts.dtype ?? 'f32') as HfDtype;
  if (!HF_DTYPES.includes(dtype)) throw new ConfigError(`--dtype ${JSON.stringify(opts.dtype)} is invalid: use ${HF_DTYPES.map((d) => `"${d}"`).join(' or ')}`);
  const trained = loadTrainedModel(checkpoint, { kernels: 'reference', workBytes: 64 * 1024 });
  const { config, params, state, tokenizer } = trained;
  const tensors = new Map<string, NamedTensor>();
  for (const spec of params.layout.specs) {
    const data = paramView(params.params, spec).data;
    tensors.set(hfTensorName(spec.name, config).hf, { shape: spec.shape, data: toHfTensor(spec, data, config) });
  }
  mkdirSync(out, { recursive: true });
  const files: string[] = [];
  const write = (name: string, text: string): void => {
    writeFileAtomic(join(out, name), text);
    files.push(name);
  };
  write('config.json', JSON.stringify(hfConfigOf(config, state.seqLen, dtype, tokenizer), null, 2) + '\n');
  write('generation_config.json', JSON.stringify({ bos_token_id: tokenizer.separatorId, eos_token_id: tokenizer.separatorId }, null, 2) + '\n');
  writeSafetensors(join(out, 'model.safetensors'), tensors, { format: 'pt', loongtrain_step: String(state.step) }, { dtype: dtype === 'bf16' ? 'BF16' : 'F32' });
  files.push('model.safetensors');
  let tokenizerNote: string | undefined;
  if (tokenizer.name === 'gpt2') {
    for (const [name, text] of Object.entries(gpt2TokenizerFiles(state.seqLen))) write(name, text);
  } else {
    tokenizerNote = `the "${tokenizer.name}" tokenizer (UTF-8 bytes 0–255, separator ${tokenizer.separatorId}) has no Hugging Face tokenizer form; no tokenizer files were written (config.json's loongtrain_tokenizer names it)`;
  }
  return { checkpoint: trained.path, out, dtype, files, tensors: tensors.size, ...(tokenizerNote !== undefined ? { tokenizerNote } : {}) };
}
