import type { Arena } from '../tensor/arena.js';
import { deriveSeed, Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';
import { headDim, type ModelConfig, validateModelConfig } from './config.js';

/** One parameter's place in the flat tensor: elements [offset, offset + size). */
export interface ParamSpec {
  readonly name: string;
  /** Matrices are [out, in] (y = x·Wᵀ); norm weights [D]; tables [V, D]. */
  readonly shape: readonly number[];
  /** Element offset into the flat tensor; a multiple of {@link PARAM_ALIGN}. */
  readonly offset: number;
  readonly size: number;
  /** What initialisation and weight decay treat it as. */
  readonly kind: 'matrix' | 'norm' | 'embedding';
}

/**
 * Offsets are rounded up to 16 elements (64 bytes) so each parameter view has the alignment of a
 * fresh arena allocation (what SIMD kernels expect). The gaps hold zeros in params and grads.
 */
export const PARAM_ALIGN = 16;

/** All parameters in their fixed order and the flat size including alignment gaps. */
export interface ParamLayout {
  readonly specs: readonly ParamSpec[];
  /** Elements of the flat params (and grads) tensor. */
  readonly flatSize: number;
  /** Number of model parameters (Σ sizes, without gaps). */
  readonly numParams: number;
}

/**
 * The fixed parameter order of docs/model.md: `tok_embeddings` [V, D]; per layer l:
 * `layers.l.attn_norm` [D], `layers.l.attn.wq` [H·d, D], `.wk` [Hkv·d, D], `.wv` [Hkv·d, D],
 * `.wo` [D, H·d], `layers.l.mlp_norm` [D], `layers.l.mlp.w1` [F, D] (gate), `.w3` [F, D] (up),
 * `.w2` [D, F] (down); then `norm` [D] and, when not tied, `output` [V, D].
 * @throws ConfigError from {@link validateModelConfig}.
 */
export function paramLayout(config: ModelConfig): ParamLayout {
  validateModelConfig(config);
  const { vocabSize: v, dim, ffnDim: f } = config;
  const qDim = config.heads * headDim(config);
  const kvDim = config.kvHeads * headDim(config);
  const specs: ParamSpec[] = [];
  let offset = 0;
  let numParams = 0;
  const add = (name: string, shape: number[], kind: ParamSpec['kind']): void => {
    const size = shape.reduce((a, b) => a * b, 1);
    specs.push({ name, shape, offset, size, kind });
    numParams += size;
    offset += Math.ceil(size / PARAM_ALIGN) * PARAM_ALIGN;
  };
  add('tok_embeddings', [v, dim], 'embedding');
  for (let l = 0; l < config.layers; l++) {
    const p = `layers.${l}`;
    add(`${p}.attn_norm`, [dim], 'norm');
    add(`${p}.attn.wq`, [qDim, dim], 'matrix');
    add(`${p}.attn.wk`, [kvDim, dim], 'matrix');
    add(`${p}.attn.wv`, [kvDim, dim], 'matrix');
    add(`${p}.attn.wo`, [dim, qDim], 'matrix');
    add(`${p}.mlp_norm`, [dim], 'norm');
    add(`${p}.mlp.w1`, [f, dim], 'matrix');
    add(`${p}.mlp.w3`, [f, dim], 'matrix');
    add(`${p}.mlp.w2`, [dim, f], 'matrix');
  }
  add('norm', [dim], 'norm');
  if (!config.tiedEmbeddings) add('output', [v, dim], 'matrix');
  return { specs, flatSize: offset, numParams };
}

/** Residual-branch output projections, whose init is scaled by 1/√(2·layers) (GPT-2 §2.3). */
function isResidualOutput(name: string): boolean {
  return name.endsWith('.attn.wo') || name.endsWith('.mlp.w2');
}

/**
 * The initial parameters as one flat array [flatSize] (alignment gaps 0), independent of the
 * parallel layout: parameter `name` draws from its own stream `new Rng(deriveSeed(seed, name))`.
 * Matrices and the embedding: normal · initStd, with `attn.wo` and `mlp.w2` scaled by
 * 1/√(2·layers); norm weights: 1. @throws ConfigError for a bad config.
 */
export function initialParams(config: ModelConfig, seed: number): Float32Array {
  const layout = paramLayout(config);
  const flat = new Float32Array(layout.flatSize);
  const { initStd, layers } = config;
  for (const s of layout.specs) {
    const data = flat.subarray(s.offset, s.offset + s.size);
    if (s.kind === 'norm') {
      data.fill(1);
      continue;
    }
    const std = isResidualOutput(s.name) ? initStd / Math.sqrt(2 * layers) : initStd;
    const rng = new Rng(deriveSeed(seed, s.name));
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std;
  }
  return flat;
}

/** Lookup of a layout's parameters by name. The function throws an Error naming an unknown name and how names look. */
export function paramSpecLookup(layout: ParamLayout): (name: string) => ParamSpec {
  const byName = new Map(layout.specs.map((s) => [s.name, s]));
  return (name) => {
    const s = byName.get(name);
    if (s === undefined) throw new Error(`unknown parameter ${JSON.stringify(name)}; parameters are named like tok_embeddings, layers.0.attn.wq, norm (see docs/model.md)`);
    return s;
  };
}

/**
 * View of parameter `s` with its shape, sharing `buf`'s memory; `buf` holds flat elements
 * from `base` on (0: a whole flat params or grads tensor; a segment's start: a ZeRO buffer).
 */
export function paramView(buf: Tensor, s: ParamSpec, base = 0): Tensor {
  return buf.rows(s.offset - base, s.offset - base + s.size).reshape(s.shape);
}

/** Which pass a unit is acquired for: 'backward' also makes its gradients writable. */
export type ParamPass = 'forward' | 'backward';

/** Parameters the model uses together, acquired and released as one (docs/zero.md). */
export interface ParamUnit {
  /** `embedding`, `layers.<l>` or `head`. */
  readonly name: string;
  /** Its parameters; the head of a tied model lists `tok_embeddings`. */
  readonly params: readonly string[];
}

/**
 * The units in forward order: `embedding` (tok_embeddings), `layers.0` … `layers.{L−1}` (all of
 * a block's parameters, norms included), `head` (norm, and output — or tok_embeddings when tied).
 */
export function paramUnits(config: ModelConfig): ParamUnit[] {
  const units: ParamUnit[] = [{ name: 'embedding', params: ['tok_embeddings'] }];
  for (let l = 0; l < config.layers; l++) {
    const p = `layers.${l}`;
    units.push({ name: p, params: ['attn_norm', 'attn.wq', 'attn.wk', 'attn.wv', 'attn.wo', 'mlp_norm', 'mlp.w1', 'mlp.w3', 'mlp.w2'].map((n) => `${p}.${n}`) });
  }
  units.push({ name: 'head', params: ['norm', config.tiedEmbeddings ? 'tok_embeddings' : 'output'] });
  return units;
}

/**
 * Where the model finds its parameters and gradients at use time (docs/zero.md). The
 * Transformer brackets each unit's forward and backward with acquire and release (in forward
 * order, and in reverse for backward), and layers look tensors up by name in between, never
 * keeping them. The replicated {@link ModelParams} holds everything and ignores the brackets;
 * a sharded store (ZeRO stages 2 and 3, src/optim/zero-store.ts) gathers a unit's parameters at
 * acquire and reduces its gradients at release.
 */
export interface ParamStore {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  /** Make unit `unit`'s parameters (and for 'backward' its gradients) available; may communicate. */
  acquire(unit: string, pass: ParamPass): void;
  /** End the use begun by the matching acquire; may communicate. */
  release(unit: string, pass: ParamPass): void;
  /**
   * After a forward or backward threw: end every acquisition still open and drop posted
   * prefetches, WITHOUT communicating (the peers may be anywhere; a collective here would wait
   * out the timeout and hide the error). Gradients not yet reduced are lost; the step must not
   * be completed.
   */
  abandon(): void;
  /** Parameter `name` with its shape. @throws Error for an unknown name or (sharded) outside its unit's acquisition. */
  param(name: string): Tensor;
  /** The gradient of `name`, accumulated into by backward. @throws Error likewise (sharded: only during a 'backward' acquisition). */
  grad(name: string): Tensor;
  /** Set every gradient to 0 (before a step's first backward). */
  zeroGrads(): void;
}

/**
 * Every parameter in ONE flat f32 tensor (category 'params') and the gradients in one flat
 * tensor of the same layout (category 'grads'), so gradients reduce in one collective and
 * checkpoints address parameters by name. The replicated {@link ParamStore}: acquire and
 * release do nothing.
 */
export class ModelParams implements ParamStore {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  /** [flatSize], category 'params'. */
  readonly params: Tensor;
  /** [flatSize], category 'grads'. */
  readonly grads: Tensor;
  private readonly spec: (name: string) => ParamSpec;

  /** Allocates zero params and grads from `arena`. @throws ConfigError for a bad config. */
  constructor(arena: Arena, config: ModelConfig) {
    this.config = config;
    this.layout = paramLayout(config);
    this.spec = paramSpecLookup(this.layout);
    this.params = Tensor.zeros(arena, [this.layout.flatSize], 'params');
    this.grads = Tensor.zeros(arena, [this.layout.flatSize], 'grads');
  }

  /** View of parameter `name` with its shape, sharing the flat tensor's memory. */
  param(name: string): Tensor {
    return paramView(this.params, this.spec(name));
  }

  /** View of the gradient of `name` with its shape, sharing the flat grads' memory. */
  grad(name: string): Tensor {
    return paramView(this.grads, this.spec(name));
  }

  /** Deterministic initialisation that does not depend on the parallel layout ({@link initialParams}). */
  init(seed: number): void {
    this.params.data.set(initialParams(this.config, seed));
  }

  acquire(): void {}

  release(): void {}

  abandon(): void {}

  /** Set every gradient to 0 (before a step's first backward). */
  zeroGrads(): void {
    this.grads.data.fill(0);
  }
}
