import type { AttentionCore } from '../attention/core.js';
import type { Kernels } from '../kernels/kernels.js';
import type { Arena } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';
import { TransformerBlock, type BlockSaved } from './block.js';
import type { ModelConfig } from './config.js';
import { Embedding } from './embedding.js';
import { type HeadSaved, LMHead } from './head.js';
import { ModelParams } from './params.js';

/** The attention core of every layer, or a factory giving layer l its own core. */
export type AttentionProvider = AttentionCore | ((layer: number) => AttentionCore);

export interface TransformerOptions {
  /** Seed of the parameter initialisation ({@link ModelParams.init}); default 0. */
  seed?: number;
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
 * explicit forward and backward (docs/model.md). Parameters and gradients live in
 * {@link params} (one flat tensor each).
 */
export class Transformer {
  readonly config: ModelConfig;
  readonly params: ModelParams;
  private readonly embedding: Embedding;
  private readonly blocks: TransformerBlock[];
  private readonly head: LMHead;
  private state: StepState | undefined;

  /**
   * Allocates parameters and gradients from `arena` and initialises the parameters from `seed`.
   * @throws ConfigError for an invalid config.
   */
  constructor(
    kernels: Kernels,
    private readonly arena: Arena,
    config: ModelConfig,
    attention: AttentionProvider,
    options: TransformerOptions = {},
  ) {
    this.config = config;
    this.params = new ModelParams(arena, config);
    this.params.init(options.seed ?? 0);
    this.embedding = new Embedding(kernels, this.params.param('tok_embeddings'), this.params.grad('tok_embeddings'));
    this.blocks = [];
    for (let l = 0; l < config.layers; l++) {
      const core = typeof attention === 'function' ? attention(l) : attention;
      this.blocks.push(new TransformerBlock(kernels, this.params, l, core));
    }
    this.head = new LMHead(kernels, this.params);
  }

  /**
   * Forward over this rank's T tokens. tokens [T] in [0, V); positions [T] the tokens' global
   * positions in the sequence (≥ 0; RoPE uses them); labels [T] in [0, V) or −1 (ignored).
   * Returns the SUM of the valid tokens' cross-entropy losses (natural log, float64) and keeps
   * what {@link backward} needs; d loss/d logit of a valid token is gradScale·(softmax − onehot)
   * (the trainer passes 1 / valid tokens of the whole global batch).
   * @throws Error naming the array and index of an invalid token, position or label, on length
   * mismatches, a non-finite gradScale, or when the previous forward has not been backpropagated.
   */
  forward(tokens: Int32Array, positions: Int32Array, labels: Int32Array, gradScale: number): number {
    if (this.state !== undefined) throw new Error('Transformer.forward: the previous forward still holds its activations; call backward() first');
    this.checkInputs(tokens, positions, labels, gradScale);
    const t = tokens.length;
    const x0 = Tensor.zeros(this.arena, [t, this.config.dim], 'saved');
    this.embedding.forward(x0, tokens);
    const residuals = [x0];
    const blocks: BlockSaved[] = [];
    for (const block of this.blocks) {
      const { y, saved } = block.forward(residuals[residuals.length - 1]!, positions);
      residuals.push(y);
      blocks.push(saved);
    }
    const { loss, saved: head } = this.head.forward(residuals[residuals.length - 1]!, labels, gradScale);
    this.state = { tokens, residuals, blocks, head };
    return loss;
  }

  /**
   * Backward of the last forward: accumulates into `params.grads` (call
   * `params.zeroGrads()` first for a fresh step) and frees every activation it kept.
   * @throws Error when there is no forward to backpropagate.
   */
  backward(): void {
    const state = this.state;
    if (state === undefined) throw new Error('Transformer.backward: no forward to backpropagate; call forward() first');
    this.state = undefined;
    const { residuals } = state;
    const shape = residuals[0]!.shape;
    let dx = Tensor.zeros(this.arena, shape, 'activations');
    this.head.backward(state.head, dx);
    for (let l = this.blocks.length - 1; l >= 0; l--) {
      residuals[l + 1]!.free();
      const dPrev = Tensor.zeros(this.arena, shape, 'activations');
      this.blocks[l]!.backward(state.blocks[l]!, dx, dPrev);
      dx.free();
      dx = dPrev;
    }
    this.embedding.backward(dx, state.tokens);
    dx.free();
    residuals[0]!.free();
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
