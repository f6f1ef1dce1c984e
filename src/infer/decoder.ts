import type { AttentionCore, AttentionSaved } from '../attention/core.js';
import { checkAttentionShape, checkQkvShapes } from '../attention/local.js';
import { ConfigError } from '../errors.js';
import type { Kernels } from '../kernels/kernels.js';
import { TransformerBlock } from '../model/block.js';
import { headDim, type ModelConfig } from '../model/config.js';
import { Embedding } from '../model/embedding.js';
import { linearForward } from '../model/linear.js';
import type { ModelParams } from '../model/params.js';
import { RMSNorm } from '../model/rmsnorm.js';
import { SequenceLayout } from '../parallel/sequence-layout.js';
import type { Arena } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';

/*
 * Inference-only forward with a KV cache (docs/model.md, "Inference"). The decoder runs the
 * training model's own layers — Embedding, TransformerBlock (RMSNorm → q/k/v → RoPE →
 * attention → wo → RMSNorm → SwiGLU), the final RMSNorm and the head matrix through
 * linearForward — so there is no second copy of the model's formulas. The one difference is the
 * attention core: {@link KVCacheAttention} appends each layer's new keys and values to that
 * layer's cache and attends the new queries to every cached key, with the kernels' mask
 * `{ kind: 'causal', offset: cached }` (query i of the new rows sees keys j ≤ i + cached).
 * The blocks run with the `full` checkpoint policy, whose forward keeps nothing: every
 * intermediate is freed before the block returns, so only the caches persist between calls.
 */

/** Shapes: C = cache capacity (tokens), Hkv = kvHeads, d = headDim. */
export interface DecoderOptions {
  /** Tokens the cache holds (prompt and generated together); positions run 0 … capacity − 1. */
  capacity: number;
  /** Most tokens one forward processes; longer prefills run in chunks of this size (default 256). */
  chunk?: number;
}

export const DEFAULT_PREFILL_CHUNK = 256;

/**
 * Arena bytes a {@link Decoder} needs beyond the parameters: the caches (layers · C · 2 · Hkv · d
 * floats) and the temporaries of one chunk of `chunk` tokens (residual, norms, q/k/v, attention
 * output and LSE, gate/up/hidden, the logits of the chunk), with a margin for alignment.
 */
export function decoderBytes(config: ModelConfig, capacity: number, chunk = DEFAULT_PREFILL_CHUNK): number {
  const d = headDim(config);
  const cache = config.layers * capacity * 2 * config.kvHeads * d;
  const t = Math.min(chunk, capacity);
  const perToken = 8 * config.dim + 3 * config.heads * d + 2 * config.kvHeads * d + 2 * config.heads + 3 * config.ffnDim + config.vocabSize;
  return 4 * (cache + t * perToken) + 64 * 64 + 2 ** 20;
}

/**
 * The attention core of one layer at inference: a KV cache k, v [C, Hkv, d] (category 'saved')
 * holding the RoPE'd keys and values of the `length` tokens seen so far. {@link forward} of
 * T new tokens (q [T, H, d], k and v [T, Hkv, d], RoPE applied at positions length … length+T−1)
 * writes k and v into cache rows [length, length + T), then attends q to cache rows
 * [0, length + T) with mask causal offset = length, and advances `length` by T. The output
 * [T, H, d] is category 'activations', freed by {@link release}. There is no backward.
 */
export class KVCacheAttention implements AttentionCore {
  private readonly k: Tensor;
  private readonly v: Tensor;
  private readonly scale: number;
  private readonly shape: { heads: number; kvHeads: number; headDim: number };
  /** Tokens in the cache. */
  length = 0;

  constructor(
    private readonly kernels: Kernels,
    arena: Arena,
    config: ModelConfig,
    readonly capacity: number,
  ) {
    this.shape = { heads: config.heads, kvHeads: config.kvHeads, headDim: headDim(config) };
    this.scale = checkAttentionShape(this.shape);
    this.k = Tensor.zeros(arena, [capacity, config.kvHeads, this.shape.headDim], 'saved');
    this.v = Tensor.zeros(arena, [capacity, config.kvHeads, this.shape.headDim], 'saved');
  }

  /**
   * q [T, H, d], k and v [T, Hkv, d] of T new tokens → out [T, H, d]; `layout` (the new tokens
   * alone, causal) is only checked for its length: what they see is the cache plus themselves.
   * @throws Error when the T new tokens do not fit the cache.
   */
  forward(q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout): AttentionSaved {
    const t = checkQkvShapes(this.shape, q, k, v);
    if (layout.seqLen !== t) throw new Error(`KVCacheAttention: layout of ${layout.seqLen} tokens for ${t} new tokens`);
    const start = this.length;
    const end = start + t;
    if (end > this.capacity) throw new Error(`KVCacheAttention: ${t} new tokens after ${start} cached exceed the capacity ${this.capacity}`);
    this.k.rows(start, end).data.set(k.data);
    this.v.rows(start, end).data.set(v.data);
    const out = Tensor.zeros(q.arena, [t, this.shape.heads, this.shape.headDim], 'activations');
    const lse = Tensor.zeros(q.arena, [t, this.shape.heads], 'activations');
    this.kernels.attentionForward(q, this.k.rows(0, end), this.v.rows(0, end), out, lse, { mask: { kind: 'causal', offset: start }, scale: this.scale });
    lse.free();
    this.length = end;
    return { out, state: undefined };
  }

  backward(): void {
    throw new Error('KVCacheAttention is inference-only: it has no backward');
  }

  /** Free the output of a {@link forward}. */
  release(saved: AttentionSaved): void {
    saved.out.free();
  }

  /** Return the cache's memory to the arena. */
  free(): void {
    this.k.free();
    this.v.free();
  }
}

/**
 * A decoder over a trained model's parameters with a per-layer KV cache: {@link prefill} the
 * prompt, then {@link step} one token at a time, each returning the next token's logits [V].
 * The positions of new tokens continue from the cache length (RoPE at length, length + 1, …),
 * so a prefill followed by steps gives the logits of one forward over the whole sequence.
 * Everything lives in the parameters' arena; call {@link free} to return the caches.
 */
export class Decoder {
  readonly config: ModelConfig;
  readonly capacity: number;
  private readonly chunk: number;
  private readonly embedding: Embedding;
  private readonly caches: KVCacheAttention[];
  private readonly blocks: TransformerBlock[];
  private readonly norm: RMSNorm;
  private readonly head: string;
  private readonly layouts = new Map<number, SequenceLayout>();
  private freed = false;

  /** @throws ConfigError when capacity or chunk is not a positive integer. */
  constructor(
    private readonly kernels: Kernels,
    private readonly params: ModelParams,
    opts: DecoderOptions,
  ) {
    const config = params.config;
    this.config = config;
    for (const [name, value] of [['capacity', opts.capacity], ['chunk', opts.chunk ?? DEFAULT_PREFILL_CHUNK]] as const) {
      if (!Number.isInteger(value) || value < 1) throw new ConfigError(`decoder ${name} = ${value} is invalid: it must be a positive integer`);
    }
    this.capacity = opts.capacity;
    this.chunk = opts.chunk ?? DEFAULT_PREFILL_CHUNK;
    const arena = params.params.arena;
    this.embedding = new Embedding(kernels, params);
    this.caches = [];
    this.blocks = [];
    for (let l = 0; l < config.layers; l++) {
      const cache = new KVCacheAttention(kernels, arena, config, this.capacity);
      this.caches.push(cache);
      this.blocks.push(new TransformerBlock(kernels, params, l, cache));
    }
    this.norm = new RMSNorm(kernels, params, 'norm', config.normEps);
    this.head = config.tiedEmbeddings ? 'tok_embeddings' : 'output';
  }

  /** Tokens in the cache: the position the next token gets. */
  get length(): number {
    return this.caches[0]?.length ?? 0;
  }

  /** Empty the cache (the next token gets position 0). */
  reset(): void {
    for (const c of this.caches) c.length = 0;
  }

  /**
   * Append `tokens` [T] (T ≥ 1) to the cache, in chunks of at most `chunk` tokens, and return the
   * logits [V] of the last one (the distribution of the token after it).
   * @throws ConfigError naming a token outside [0, V) or when the tokens do not fit the cache.
   */
  prefill(tokens: ArrayLike<number>): Float32Array {
    return this.forward(tokens, false);
  }

  /** Append one token and return the logits [V] of the next. @throws ConfigError as {@link prefill}. */
  step(token: number): Float32Array {
    return this.forward([token], false);
  }

  /**
   * Append `tokens` [T] and return the logits of every one of them, [T · V] row-major (row t:
   * the distribution of the token after tokens[t]). For tests and scoring; generation needs only
   * {@link prefill} and {@link step}.
   */
  logitsAll(tokens: ArrayLike<number>): Float32Array {
    return this.forward(tokens, true);
  }

  /** Return the caches to the arena; the decoder cannot be used afterwards. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    for (const c of this.caches) c.free();
  }

  private forward(tokens: ArrayLike<number>, allRows: boolean): Float32Array {
    if (this.freed) throw new Error('Decoder: used after free()');
    const t = tokens.length;
    const v = this.config.vocabSize;
    if (t < 1) throw new ConfigError('decoder: no tokens to process (give at least one)');
    for (let i = 0; i < t; i++) {
      const id = tokens[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= v) throw new ConfigError(`decoder: token ${id} at index ${i} is outside the vocabulary [0, ${v})`);
    }
    if (this.length + t > this.capacity) {
      throw new ConfigError(`decoder: ${t} more tokens after ${this.length} do not fit the context of ${this.capacity} tokens`);
    }
    const out = new Float32Array((allRows ? t : 1) * v);
    for (let s = 0; s < t; s += this.chunk) {
      const e = Math.min(t, s + this.chunk);
      const ids = Int32Array.from({ length: e - s }, (_, i) => tokens[s + i]!);
      const wantRows = allRows ? [0, e - s] : e === t ? [e - s - 1, e - s] : undefined;
      const logits = this.chunkForward(ids, wantRows as [number, number] | undefined);
      if (logits !== undefined) out.set(logits, allRows ? s * v : 0);
    }
    return out;
  }

  /**
   * One chunk: ids [T] at positions length … length + T − 1 through embedding and blocks (each
   * appending to its cache), then, for rows [r0, r1) of the chunk, final norm and head:
   * logits [(r1 − r0) · V]. Every tensor allocated here is freed before it returns.
   */
  private chunkForward(ids: Int32Array, rows: [number, number] | undefined): Float32Array | undefined {
    const { kernels, params, config } = this;
    const arena = params.params.arena;
    const t = ids.length;
    const start = this.length;
    const placement = { positions: Int32Array.from({ length: t }, (_, i) => start + i), layout: this.layoutOf(t) };
    let x = Tensor.zeros(arena, [t, config.dim], 'activations');
    this.embedding.forward(x, ids);
    for (const block of this.blocks) {
      // Inference keeps nothing: every intermediate is freed before forwardOnly returns.
      const y = block.forwardOnly(x, placement);
      x.free();
      x = y;
    }
    let logits: Float32Array | undefined;
    if (rows !== undefined) {
      const [r0, r1] = rows;
      const xr = x.rows(r0, r1);
      const xf = Tensor.zeros(arena, xr.shape, 'activations');
      const { rstd } = this.norm.forward(xf, xr, 'activations');
      const w = params.param(this.head);
      const out = Tensor.zeros(arena, [r1 - r0, config.vocabSize], 'activations');
      linearForward(kernels, out, xf, w, false);
      logits = out.data.slice();
      for (const tensor of [rstd, xf, out]) tensor.free();
    }
    x.free();
    return logits;
  }

  /** The layout of T new tokens on their own (one rank, causal), cached by T. */
  private layoutOf(t: number): SequenceLayout {
    let layout = this.layouts.get(t);
    if (layout === undefined) {
      layout = new SequenceLayout({ hp: 1, cp: 1, seqLen: t, causal: true });
      if (this.layouts.size < 8) this.layouts.set(t, layout);
    }
    return layout;
  }
}
