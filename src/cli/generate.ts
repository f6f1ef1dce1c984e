import { existsSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { Decoder, decoderBytes } from '../infer/decoder.js';
import { DEFAULT_MAX_NEW_TOKENS, generateTokens, promptTokens, TextStream } from '../infer/generate.js';
import { Sampler, type SamplingOptions } from '../infer/sampling.js';
import { loadTrainedModel } from '../infer/trained-model.js';
import { KERNEL_NAMES, type KernelChoice } from '../kernels/registry.js';
import { paramLayout } from '../model/params.js';
import { MAX_ARENA_BYTES } from '../tensor/arena.js';
import { readTrainerState, resolveCheckpoint } from '../train/checkpoint.js';

/** The flags of `loongtrain generate` as commander parses them. */
export interface GenerateFlags extends Partial<SamplingOptions> {
  checkpoint?: string;
  prompt: string;
  maxNewTokens: number;
  context?: number;
  kernels: string;
  echo: boolean;
}

/** Where the command writes: generated text to `out` as it comes, the summary line to `err`. */
export interface GenerateIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/** A commander parser for a numeric flag: a ConfigError naming the flag instead of NaN downstream. */
export function numberFlag(flag: string): (v: string) => number {
  return (v: string) => {
    const n = v.trim() === '' ? Number.NaN : Number(v);
    if (!Number.isFinite(n)) throw new ConfigError(`${flag} ${JSON.stringify(v)} is invalid: it must be a number`);
    return n;
  };
}

/**
 * `loongtrain generate`: load the checkpoint (a checkpoint folder, or a run folder's newest),
 * prefill the prompt into a KV cache of `--context` tokens (default the run's train.seqLen) and
 * write each sampled token's text as it comes (the prompt first unless `--no-echo`), until
 * `--max-new-tokens`, the separator token or a full context; then one line on `err` with the
 * tokens/s.
 * @throws ConfigError naming the flag for a missing checkpoint, bad sampling options, or a
 * prompt longer than the context.
 */
export function runGenerate(flags: GenerateFlags, io: GenerateIo): void {
  const dir = flags.checkpoint;
  if (dir === undefined || dir === '') throw new ConfigError('--checkpoint DIR is required: a checkpoint folder (step-NNNNNNNN) or a run folder (its newest checkpoint)');
  if (!existsSync(dir)) throw new ConfigError(`--checkpoint ${dir}: no such folder`);
  let path: string;
  try {
    path = resolveCheckpoint(dir);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    throw new ConfigError(`--checkpoint ${dir}: no checkpoint there (expected a step-NNNNNNNN folder holding trainer.json, or a folder or run folder whose checkpoints/ holds one)`);
  }
  if (!(KERNEL_NAMES as readonly string[]).includes(flags.kernels)) {
    throw new ConfigError(`--kernels ${JSON.stringify(flags.kernels)} is invalid: use one of ${KERNEL_NAMES.map((n) => `"${n}"`).join(', ')}`);
  }
  const sampler = new Sampler({
    ...(flags.temperature !== undefined ? { temperature: flags.temperature } : {}),
    ...(flags.topK !== undefined ? { topK: flags.topK } : {}),
    ...(flags.topP !== undefined ? { topP: flags.topP } : {}),
    ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
  });
  const maxNewTokens = flags.maxNewTokens;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new ConfigError(`--max-new-tokens ${maxNewTokens} is invalid: it must be a positive integer`);
  const state = readTrainerState(path);
  const context = flags.context ?? state.seqLen;
  if (!Number.isInteger(context) || context < 1) throw new ConfigError(`--context ${context} is invalid: it must be a positive integer (tokens of prompt and generated text together)`);
  const workBytes = decoderBytes(state.model, context);
  const paramBytes = 2 * 4 * paramLayout(state.model).flatSize;
  if (paramBytes + workBytes > MAX_ARENA_BYTES) {
    let fits = context;
    while (fits > 1 && paramBytes + decoderBytes(state.model, fits) > MAX_ARENA_BYTES) fits = Math.floor(fits / 2);
    throw new ConfigError(
      `--context ${context} is too long: the KV cache and the model need ${((paramBytes + workBytes) / 2 ** 30).toFixed(1)} GiB, more than the 4 GiB WebAssembly memory; use at most about ${fits} tokens`,
    );
  }
  const model = loadTrainedModel(path, { kernels: flags.kernels as KernelChoice, workBytes });
  const { tokenizer } = model;
  const prompt = promptTokens(tokenizer, flags.prompt);
  if (prompt.length > context) {
    throw new ConfigError(
      `the prompt is ${prompt.length} tokens (${tokenizer.name} tokenizer), more than the context of ${context} tokens` +
        `${flags.context === undefined ? ` (the checkpoint's train.seqLen)` : ''}: shorten --prompt or raise --context`,
    );
  }
  const decoder = new Decoder(model.kernels, model.params, { capacity: context });
  const text = new TextStream(tokenizer);
  if (flags.echo) io.out(flags.prompt);
  const result = generateTokens(decoder, sampler, prompt, {
    maxNewTokens,
    stopIds: [tokenizer.separatorId],
    onToken: (id) => {
      const piece = text.push(id);
      if (piece !== '') io.out(piece);
    },
  });
  io.out(text.flush() + '\n');
  decoder.free();
  const n = result.tokens.length;
  const seconds = result.decodeMs / 1000;
  const why = { 'max-new-tokens': `--max-new-tokens ${maxNewTokens} reached`, 'end-token': 'end token sampled', 'context-full': `context of ${context} tokens full` }[result.stop];
  io.err(
    `generated ${n} token${n === 1 ? '' : 's'} in ${seconds.toFixed(2)} s: ${(n / Math.max(seconds, 1e-9)).toFixed(1)} tokens/s ` +
      `(prefill of ${prompt.length} prompt token${prompt.length === 1 ? '' : 's'}: ${result.prefillMs.toFixed(1)} ms; ${model.kernels.name} kernels; ${why}; ${path})\n`,
  );
}

export { DEFAULT_MAX_NEW_TOKENS };
