import type { Tokenizer } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import type { Decoder } from './decoder.js';
import type { Sampler } from './sampling.js';

/*
 * The generation loop over a {@link Decoder} and a {@link Sampler}, and the incremental
 * detokenizer that turns the sampled ids into text as they come.
 */

export const DEFAULT_MAX_NEW_TOKENS = 200;

export interface GenerateOptions {
  /** Tokens to sample at most (≥ 1). */
  maxNewTokens: number;
  /** Token ids that end generation (not emitted): the tokenizer's separator. */
  stopIds: readonly number[];
  /**
   * true (the default): prefill the prompt once, then one {@link Decoder.step} per token.
   * false: recompute the whole sequence for every token (reset, prefill of prompt + generated):
   * the reference the cache is tested and benchmarked against.
   */
  cache?: boolean;
  /** Called with each sampled token (stop tokens excluded), as it is sampled. */
  onToken?: (id: number) => void;
}

export type StopReason = 'max-new-tokens' | 'end-token' | 'context-full';

export interface GenerateResult {
  /** The sampled tokens, stop token excluded. */
  tokens: number[];
  stop: StopReason;
  /** Time of the prompt's prefill and of everything after it (sampling and steps), ms. */
  prefillMs: number;
  decodeMs: number;
}

/**
 * Sample up to `maxNewTokens` tokens after `prompt` (≥ 1 token; the caller puts the separator
 * first for an empty prompt). Stops early at a stop id or when the decoder's context is full.
 * The decoder is reset first. @throws ConfigError when the prompt does not fit the context.
 */
export function generateTokens(decoder: Decoder, sampler: Sampler, prompt: ArrayLike<number>, opts: GenerateOptions): GenerateResult {
  const { maxNewTokens, stopIds } = opts;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new ConfigError(`--max-new-tokens ${maxNewTokens} is invalid: it must be a positive integer`);
  if (prompt.length < 1) throw new Error('generateTokens: the prompt has no tokens (start an empty prompt with the separator)');
  if (prompt.length > decoder.capacity) {
    throw new ConfigError(`the prompt is ${prompt.length} tokens, more than the context of ${decoder.capacity} tokens (--context): shorten the prompt or raise --context`);
  }
  const cache = opts.cache ?? true;
  const seq = Array.from(prompt);
  const t0 = performance.now();
  decoder.reset();
  let logits = decoder.prefill(seq);
  const t1 = performance.now();
  const tokens: number[] = [];
  let stop: StopReason = 'max-new-tokens';
  for (;;) {
    const id = sampler.sample(logits);
    if (stopIds.includes(id)) {
      stop = 'end-token';
      break;
    }
    tokens.push(id);
    seq.push(id);
    opts.onToken?.(id);
    if (tokens.length >= maxNewTokens) break;
    if (seq.length >= decoder.capacity) {
      stop = 'context-full';
      break;
    }
    if (cache) logits = decoder.step(id);
    else {
      decoder.reset();
      logits = decoder.prefill(seq);
    }
  }
  return { tokens, stop, prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
}

/** U+FFFD, what an incomplete or invalid UTF-8 sequence decodes to. */
const REPLACEMENT = '\uFFFD';
/** Ids held back at most while their text ends in an incomplete character (a UTF-8 character has ≤ 4 bytes). */
const MAX_PENDING = 8;

/**
 * Turns ids into text piece by piece, so that a character whose UTF-8 bytes span several tokens
 * (byte tokenizer; some GPT-2 tokens) is written once whole: ids are held back while their text
 * ends in U+FFFD (an incomplete character), at most {@link MAX_PENDING} of them (then the
 * replacement characters of truly invalid bytes are written). Relies on `tokenizer.decode`
 * being stateless and decoding an incomplete tail to U+FFFD.
 */
export class TextStream {
  private pending: number[] = [];

  constructor(private readonly tokenizer: Tokenizer) {}

  /** The text that `id` completes ('' while a character is incomplete). */
  push(id: number): string {
    this.pending.push(id);
    const text = this.tokenizer.decode(this.pending);
    if (text.endsWith(REPLACEMENT) && this.pending.length < MAX_PENDING) return '';
    this.pending = [];
    return text;
  }

  /** The text of the ids still held back (at the end of generation). */
  flush(): string {
    const text = this.pending.length === 0 ? '' : this.tokenizer.decode(this.pending);
    this.pending = [];
    return text;
  }
}

/**
 * The prompt's token ids: its encoding, or the separator alone for an empty prompt (the model
 * then starts a new document).
 */
export function promptTokens(tokenizer: Tokenizer, prompt: string): Int32Array {
  return prompt === '' ? Int32Array.of(tokenizer.separatorId) : tokenizer.encode(prompt);
}
