import type { AttentionCore } from '../attention/core.js';
import type { Kernels } from '../kernels/kernels.js';
import type { SequenceLayout } from '../parallel/sequence-layout.js';
import type { Arena } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';
import { type BlockCounters, TransformerBlock, type BlockSaved } from './block.js';
import { type CheckpointOptions, type CheckpointPolicy, layerPolicies } from './checkpoint.js';
import type { ModelConfig } from './config.js';
import { Embedding } from './embedding.js';
import { type HeadSaved, LMHead } from './head.js';
import { ModelParams, type ParamPass, type ParamStore } from './params.js';

/** The attention core of every layer, or a factory giving layer l its own core. */
export type AttentionProvider = AttentionCore | ((layer: number) => AttentionCore);

export interface TransformerOptions<S extends ParamStore = ModelParams> {
  /** Seed of the parameter initialisation ({@link ModelParams.init}); default 0. Ignored with `params`. */
  seed?: number;
  /**
   * Where the parameters live, already initialised (a sharded ZeRO store, docs/zero.md); default:
   * a new replicated {@link ModelParams} from the arena, initialised from `seed`.
   */
  params?: S;
  /**
   * Activation checkpointing: the first `layers` blocks use `policy` (src/model/checkpoint.ts,
   * docs/model.md); default: no checkpointing.
   */
  checkpoint?: CheckpointOptions;
}

/** Everything one forward keeps until its backward. */
interface StepState {
  tokens: Int32Array;
  /** Residual stream x_0 … x_L, each [T, D] (category 'saved'); x_l is block l's input. */
  residuals: Tensor[];
  blocks: BlockSaved[];
  head: HeadSaved;
}

/** Number of labels that count towards the loss (every label except −1). */
export function countValidLabels(labels: Int32Array): number {
  let n = 0;
  for (const label of labels) if (label !== -1) n++;
  return n;
}

/**
 * A LLaMA-style decoder over one rank's tokens: embedding → `layers` pre-norm blocks (RMSNorm →
 * GQA attention with RoPE → RMSNorm → SwiGLU) → RMSNorm → LM head → cross-entropy, with an
 * explicit forward and backward (docs/model.md). Parameters and gradients live in the
 * {@link params} store (replicated: one flat tensor each); every unit (the embedding, each
 * block, the head) is acquired from it before its forward or backward and released after
 * (docs/zero.md, ParamStore).
 */
export class Transformer<S extends ParamStore = ModelParams> {
  readonly config: ModelConfig;
  readonly params: S;
  private readonly embedding: Embedding;
  private readonly blocks: TransformerBlock[];
  private readonly head: LMHead;
  private state: StepState | undefined;

  /**
   * Unless `options.params` gives a store, allocates parameters and gradients from `arena` and
   * initialises the parameters from `seed`.
   * @throws ConfigError for an invalid config, an unknown checkpoint policy name (F10) or a
   * checkpointed layer count outside [0, layers].
   */
  constructor(
    kernels: Kernels,
    private readonly arena: Arena,
    config: ModelConfig,
    attention: AttentionProvider,
    options: TransformerOptions<S> = {},
  ) {
    this.config = config;
    const policies = layerPolicies(options.checkpoint ?? { policy: 'none', layers: 0 }, config.layers);
    if (options.params !== undefined) {
      if (options.params.config !== config && JSON.stringify(options.params.config) !== JSON.stringify(config)) throw new Error('Transformer: the parameter store was built for another model config');
      this.params = options.params;
    } else {
      const params = new ModelParams(arena, config);
      params.init(options.seed ?? 0);
      this.params = params as unknown as S;
    }
    this.embedding = new Embedding(kernels, this.params);
    this.blocks = [];
    for (let l = 0; l < config.layers; l++) {
      const core = typeof attention === 'function' ? attention(l) : attention;
      this.blocks.push(new TransformerBlock(kernels, this.params, l, core, policies[l]));
    }
    this.head = new LMHead(kernels, this.params);
  }

  /** The checkpoint policy of each layer, in order. */
  get policies(): CheckpointPolicy[] {
    return this.blocks.map((b) => b.policy);
  }

  /**
   * Per layer, counts since construction: attention core forwards (first runs and
   * recomputations), those run while recomputing, recomputed backwards, and forwards that kept
   * the attention output and LSE for a recomputing backward. A copy.
   */
  counters(): BlockCounters[] {
    return this.blocks.map((b) => ({ ...b.counters }));
  }

  /**
   * Forward over this rank's T tokens. tokens [T] in [0, V); positions [T] the tokens' RoPE
   * positions (≥ 0: their offsets in their document or in the sequence, docs/data.md); labels
   * [T] in [0, V) or −1 (ignored); `layout` the step's SequenceLayout, whose rankTokens these
   * tokens are and which gives every attention mask.
   * Returns the SUM of the valid tokens' cross-entropy losses (natural log, float64) and keeps
   * what {@link backward} needs; d loss/d logit of a valid token is gradScale·(softmax − onehot)
   * (the trainer passes 1 / valid tokens of the whole global batch).
   * @throws Error naming the array and index of an invalid token, position or label, on length
   * mismatches, a non-finite gradScale, or when the previous forward has not been backpropagated.
   */
  forward(tokens: Int32Array, positions: Int32Array, labels: Int32Array, gradScale: number, layout: SequenceLayout): number {
    if (this.state !== undefined) throw new Error('Transformer.forward: the previous forward still holds its activations; call backward() first');
    this.checkInputs(tokens, positions, labels, gradScale);
    const placement = { positions, layout };
    const t = tokens.length;
    const x0 = Tensor.empty(this.arena, [t, this.config.dim], 'saved');
    this.using('embedding', 'forward', () => this.embedding.forward(x0, tokens));
    const residuals = [x0];
    const blocks: BlockSaved[] = [];
    for (const [l, block] of this.blocks.entries()) {
      const { y, saved } = this.using(`layers.${l}`, 'forward', () => block.forward(residuals[residuals.length - 1]!, placement));
      residuals.push(y);
      blocks.push(saved);
    }
    const { loss, saved: head } = this.using('head', 'forward', () => this.head.forward(residuals[residuals.length - 1]!, labels, gradScale));
    this.state = { tokens, residuals, blocks, head };
    return loss;
  }

  /**
   * Forward only, for evaluation: the same computation as {@link forward} over this rank's
   * tokens (same inputs and checks), returning the SUM of the valid tokens' cross-entropy
   * losses, but keeping no activation (each block frees its intermediates as it goes, the
   * head its logits) and touching no gradient. Parameters are acquired and released per unit
   * for the forward pass, as in training.
   * @throws Error as {@link forward} does for invalid inputs, or while a forward awaits its backward.
   */
  evaluate(tokens: Int32Array, positions: Int32Array, labels: Int32Array, layout: SequenceLayout): number {
    if (this.state !== undefined) throw new Error('Transformer.evaluate: a forward still holds its activations; call backward() first');
    this.checkInputs(tokens, positions, labels, 0);
    const placement = { positions, layout };
    let x = Tensor.zeros(this.arena, [tokens.length, this.config.dim], 'activations');
    this.using('embedding', 'forward', () => this.embedding.forward(x, tokens));
    for (const [l, block] of this.blocks.entries()) {
      const y = this.using(`layers.${l}`, 'forward', () => block.forwardOnly(x, placement));
      x.free();
      x = y;
    }
    const input = x;
    const loss = this.using('head', 'forward', () => {
      const { loss, saved } = this.head.forward(input, labels, 0);
      for (const tensor of [saved.norm.rstd, saved.xf, saved.dlogits]) tensor.free();
      return loss;
    });
    x.free();
    return loss;
  }

  /**
   * Backward of the last forward: accumulates into the store's gradients (call
   * `params.zeroGrads()` first for a fresh step) and frees every activation it kept.
   * @throws Error when there is no forward to backpropagate.
   */
  backward(): void {
    const state = this.state;
    if (state === undefined) throw new Error('Transformer.backward: no forward to backpropagate; call forward() first');
    this.state = undefined;
    const { residuals } = state;
    const shape = residuals[0]!.shape;
    let dx = Tensor.empty(this.arena, shape, 'activations');
    this.using('head', 'backward', () => this.head.backward(state.head, dx));
    for (let l = this.blocks.length - 1; l >= 0; l--) {
      residuals[l + 1]!.free();
      const dPrev = Tensor.empty(this.arena, shape, 'activations');
      this.using(`layers.${l}`, 'backward', () => this.blocks[l]!.backward(state.blocks[l]!, dx, dPrev));
      dx.free();
      dx = dPrev;
    }
    this.using('embedding', 'backward', () => this.embedding.backward(dx, state.tokens));
    dx.free();
    residuals[0]!.free();
  }

  /**
   * Run `body` with unit `unit` acquired from the store for `pass`. When the body or the release
   * throws, the store abandons its acquisitions and prefetches instead of releasing: a release
   * after backward reduce-scatters, which would wait on peers that are not coming.
   */
  private using<T>(unit: string, pass: ParamPass, body: () => T): T {
    this.params.acquire(unit, pass);
    try {
      const result = body();
      this.params.release(unit, pass);
      return result;
    } catch (err) {
      this.params.abandon();
      throw err;
    }
  }

  private checkInputs(tokens: Int32Array, positions: Int32Array, labels: Int32Array, gradScale: number): void {
    const t = tokens.length;
    if (positions.length !== t || labels.length !== t) {
      throw new Error(`Transformer.forward: tokens, positions and labels must have equal lengths, got ${t}, ${positions.length}, ${labels.length}`);
    }
    if (!Number.isFinite(gradScale)) throw new Error(`Transformer.forward: gradScale = ${gradScale} is invalid: it must be a finite number`);
    const v = this.config.vocabSize;
    for (let i = 0; i < t; i++) {
      if (tokens[i]! < 0 || tokens[i]! >= v) throw new Error(`Transformer.forward: tokens[${i}] = ${tokens[i]} is invalid: it must be in [0, ${v})`);
      if (positions[i]! < 0) throw new Error(`Transformer.forward: positions[${i}] = ${positions[i]} is invalid: global positions are ≥ 0`);
      if (labels[i]! < -1 || labels[i]! >= v) throw new Error(`Transformer.forward: labels[${i}] = ${labels[i]} is invalid: it must be in [0, ${v}) or −1 (ignored)`);
    }
  }
}
