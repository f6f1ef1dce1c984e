import type { AttentionCore, AttentionSaved } from '../attention/core.js';
import type { Kernels } from '../kernels/kernels.js';
import type { MemoryCategory } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';
import type { CheckpointPolicy } from './checkpoint.js';
import { headDim } from './config.js';
import { type MlpSaved, SwiGLUMlp } from './mlp.js';
import type { ParamStore } from './params.js';
import { RMSNorm, type RMSNormSaved } from './rmsnorm.js';
import { SelfAttention, type SelfAttentionSaved, type TokenPlacement } from './self-attention.js';

/**
 * Every intermediate the block's backward needs: the normalised inputs of both branches (xn1,
 * xn2) and the mid-block residual h, all [T, D] (owned), plus each sub-layer's own state.
 */
interface BlockInternals {
  attnNorm: RMSNormSaved;
  xn1: Tensor;
  attn: SelfAttentionSaved;
  h: Tensor;
  mlpNorm: RMSNormSaved;
  xn2: Tensor;
  mlp: MlpSaved;
}

/**
 * What {@link TransformerBlock.forward} keeps, by checkpoint policy. The block input x [T, D]
 * and the token placement are the caller's (x must stay alive until backward).
 * - `none`: every intermediate (category 'saved');
 * - `full`: nothing but x;
 * - `selective++`: x and the attention core's saved state (output, LSE, the core's q/k/v).
 */
export type BlockSaved =
  | { policy: 'none'; x: Tensor; placement: TokenPlacement; internals: BlockInternals }
  | { policy: 'full'; x: Tensor; placement: TokenPlacement }
  | { policy: 'selective++'; x: Tensor; placement: TokenPlacement; attn: AttentionSaved };

/** Per-block counts since construction (what the checkpoint tests read, failure cases F10, F11). */
export interface BlockCounters {
  /** Calls of the attention core's forward, the first forwards and recomputations together. */
  attentionForwards: number;
  /** Attention core forwards run while recomputing in backward (`full` only). */
  attentionRecomputes: number;
  /** Backwards that recomputed the block's forward first (`full` and `selective++`). */
  recomputes: number;
  /** Forwards that kept the attention core's output and LSE for a recomputing backward (`selective++`). */
  attentionKept: number;
}

/**
 * One pre-norm LLaMA block: h = x + Attn(RMSNorm(x)); y = h + MLP(RMSNorm(h)), with an
 * activation checkpoint policy (docs/model.md, Checkpointing). Parameters
 * `layers.l.{attn_norm, attn.*, mlp_norm, mlp.*}`.
 */
export class TransformerBlock {
  readonly counters: BlockCounters = { attentionForwards: 0, attentionRecomputes: 0, recomputes: 0, attentionKept: 0 };
  private readonly attnNorm: RMSNorm;
  private readonly attn: SelfAttention;
  private readonly mlpNorm: RMSNorm;
  private readonly mlp: SwiGLUMlp;
  /** [H, d]: one token's attention output. */
  private readonly outRow: [number, number];

  constructor(
    private readonly kernels: Kernels,
    params: ParamStore,
    private readonly layer: number,
    core: AttentionCore,
    readonly policy: CheckpointPolicy = 'none',
  ) {
    const p = `layers.${layer}`;
    const eps = params.config.normEps;
    this.attnNorm = new RMSNorm(kernels, params, `${p}.attn_norm`, eps);
    this.attn = new SelfAttention(kernels, params, layer, core);
    this.mlpNorm = new RMSNorm(kernels, params, `${p}.mlp_norm`, eps);
    this.mlp = new SwiGLUMlp(kernels, params, layer);
    this.outRow = [params.config.heads, headDim(params.config)];
  }

  /**
   * x [T, D] and the tokens' placement (RoPE positions [T], the step's layout) → y [T, D] (category 'saved', owned by the
   * caller, who must keep x alive until backward). What is kept depends on the policy
   * ({@link BlockSaved}); a checkpointed block's intermediates are 'activations', freed here.
   */
  forward(x: Tensor, placement: TokenPlacement): { y: Tensor; saved: BlockSaved } {
    const { policy } = this;
    const keep = policy === 'none';
    const { internals, y } = this.compute(x, placement, undefined, keep ? 'saved' : 'activations', false);
    if (keep) return { y: y!, saved: { policy, x, placement, internals } };
    const attn = internals.attn.attn;
    this.releaseInternals(internals, policy === 'full');
    if (policy === 'full') return { y: y!, saved: { policy, x, placement } };
    this.counters.attentionKept++;
    return { y: y!, saved: { policy, x, placement, attn } };
  }

  /**
   * Forward only (evaluation): x [T, D] → y [T, D] (category 'saved', owned by the caller) with
   * the same kernel calls as {@link forward}, whatever the policy, keeping nothing: every
   * intermediate, the attention core's state included, is freed before it returns.
   */
  forwardOnly(x: Tensor, placement: TokenPlacement): Tensor {
    const { internals, y } = this.compute(x, placement, undefined, 'activations', false);
    this.releaseInternals(internals, true);
    return y!;
  }

  /**
   * From dy [T, D] write dx [T, D]; accumulate every parameter gradient; free what forward
   * saved. A checkpointed block first recomputes its intermediates from x (and, for
   * `selective++`, the kept attention output) with the same kernel calls as the forward, so
   * the gradients are bit-identical to `none`.
   * @throws Error naming the tensor when a kept tensor's shape differs from the recomputed one's.
   */
  backward(saved: BlockSaved, dy: Tensor, dx: Tensor): void {
    let internals: BlockInternals;
    if (saved.policy === 'none') internals = saved.internals;
    else {
      this.counters.recomputes++;
      const attn = saved.policy === 'selective++' ? saved.attn : undefined;
      internals = this.compute(saved.x, saved.placement, attn, 'activations', true).internals;
    }
    const { kernels } = this;
    const arena = dy.arena;
    // Both are overwritten before any read (dxn by the MLP's dx = dy·W, dh by the norm's backward).
    const dxn = Tensor.empty(arena, dy.shape, 'activations');
    const dh = Tensor.empty(arena, dy.shape, 'activations');
    this.mlp.backward(internals.mlp, dy, dxn);
    this.mlpNorm.backward(internals.mlpNorm, dxn, dh);
    kernels.axpy(dh, dy, 1); // the residual path
    this.attn.backward(internals.attn, dh, dxn);
    this.attnNorm.backward(internals.attnNorm, dxn, dx);
    kernels.axpy(dx, dh, 1);
    for (const tensor of [dxn, dh, internals.xn1, internals.h, internals.xn2]) tensor.free();
  }

  /**
   * The block's forward from x: xn1 = RMSNorm(x); h = x + Attn(xn1) (the attention core runs
   * unless its `kept` state is given); xn2 = RMSNorm(h); gate and up of the MLP; unless
   * `recompute`, also y = h + MLP(xn2). Intermediates get `category`; y is 'saved'.
   */
  private compute(
    x: Tensor,
    placement: TokenPlacement,
    kept: AttentionSaved | undefined,
    category: MemoryCategory,
    recompute: boolean,
  ): { internals: BlockInternals; y?: Tensor } {
    if (placement.positions.length !== x.shape[0]) {
      throw new Error(`layer ${this.layer}: positions has ${placement.positions.length} entries but the layer input x has shape [${x.shape.join(', ')}]`);
    }
    const xn1 = Tensor.empty(x.arena, x.shape, category);
    const attnNorm = this.attnNorm.forward(xn1, x, category);
    const h = Tensor.from(x.arena, x.shape, x.data, category);
    let attn: AttentionSaved;
    if (kept === undefined) {
      attn = this.attn.attend(xn1, placement);
      this.counters.attentionForwards++;
      if (recompute) this.counters.attentionRecomputes++;
    } else {
      const expected = [x.shape[0]!, ...this.outRow];
      if (kept.out.shape.join() !== expected.join()) {
        throw new Error(
          `layer ${this.layer} recomputation: the kept attention output has shape [${kept.out.shape.join(', ')}] but the recomputed layer needs [${expected.join(', ')}]`,
        );
      }
      attn = kept;
    }
    this.attn.project(h, attn);
    const xn2 = Tensor.empty(x.arena, x.shape, category);
    const mlpNorm = this.mlpNorm.forward(xn2, h, category);
    let y: Tensor | undefined;
    let mlp: MlpSaved;
    if (recompute) {
      // The block output is the next layer's input, which is kept: only the backward's needs are recomputed.
      mlp = this.mlp.gateUp(xn2, category);
    } else {
      y = Tensor.from(x.arena, x.shape, h.data, 'saved');
      mlp = this.mlp.forward(y, xn2, category);
    }
    return { internals: { attnNorm, xn1, attn: { xn: xn1, placement, attn }, h, mlpNorm, xn2, mlp }, y };
  }

  /** Free a checkpointed forward's intermediates; the attention core's state too when `withAttention`. */
  private releaseInternals(internals: BlockInternals, withAttention: boolean): void {
    if (withAttention) this.attn.release(internals.attn.attn);
    this.mlp.release(internals.mlp);
    for (const tensor of [internals.attnNorm.rstd, internals.mlpNorm.rstd, internals.xn1, internals.h, internals.xn2]) tensor.free();
  }
}
