import type { Kernels } from '../kernels/kernels.js';
import type { SequenceLayout } from '../parallel/sequence-layout.js';
import { Tensor } from '../tensor/tensor.js';
import type { AttentionCore, AttentionSaved } from './core.js';

/** The attention part of {@link Kernels}: a whole Kernels object or just these three functions. */
export type AttentionKernels = Pick<Kernels, 'attentionForward' | 'attentionBackward' | 'mergeAttention'>;

/** Attention head layout shared by the attention cores. */
export interface AttentionShape {
  /** Query heads H. */
  heads: number;
  /** KV heads Hkv (H must be a multiple). */
  kvHeads: number;
  headDim: number;
}

export interface LocalAttentionOptions extends AttentionShape {
  kernels: AttentionKernels;
}

/**
 * Check the head layout and return the score scale 1/√headDim.
 * @throws Error naming heads, kvHeads or headDim, the value and what is valid.
 */
export function checkAttentionShape(shape: AttentionShape): number {
  const { heads, kvHeads, headDim } = shape;
  for (const [field, value] of [['heads', heads], ['kvHeads', kvHeads], ['headDim', headDim]] as const) {
    if (!Number.isInteger(value) || value < 1) throw new Error(`attention: ${field} = ${value} is invalid: it must be a positive integer`);
  }
  if (heads % kvHeads !== 0) throw new Error(`attention: heads = ${heads} is not a multiple of kvHeads = ${kvHeads}`);
  return 1 / Math.sqrt(headDim);
}

/**
 * Check one tensor's shape against [rows, heads, headDim].
 * @throws Error naming the tensor, its shape and the expected shape.
 */
export function expectShape(name: string, t: Tensor, rows: number, heads: number, headDim: number): void {
  const s = t.shape;
  if (s.length !== 3 || s[0] !== rows || s[1] !== heads || s[2] !== headDim) {
    throw new Error(`attention: ${name} has shape [${s.join(', ')}], expected [${rows}, ${heads}, ${headDim}]`);
  }
}

/**
 * Check the inputs of an attention core: q [T, heads, headDim], k and v [T, kvHeads, headDim],
 * with T taken from q. Returns T.
 * @throws Error naming the first tensor whose shape differs, its shape and the expected shape.
 */
export function checkQkvShapes(shape: AttentionShape, q: Tensor, k: Tensor, v: Tensor): number {
  const { heads, kvHeads, headDim } = shape;
  const t = q.shape[0] ?? 0;
  expectShape('q', q, t, heads, headDim);
  expectShape('k', k, t, kvHeads, headDim);
  expectShape('v', v, t, kvHeads, headDim);
  return t;
}

/**
 * The one-block plan of a single-rank layout (hp = cp = 1): the whole sequence against itself.
 * @throws Error when the layout has hp or cp > 1 or another length than q.
 */
function localPlan(layout: SequenceLayout, tokens: number): ReturnType<SequenceLayout['hop']> {
  if (layout.hp !== 1 || layout.cp !== 1 || layout.seqLen !== tokens) {
    throw new Error(`attention: LocalAttention needs a single-rank layout (hp = cp = 1) of ${tokens} tokens, got hp = ${layout.hp}, cp = ${layout.cp}, seqLen = ${layout.seqLen}`);
  }
  return layout.hop(0, 0);
}

/** Saved state of {@link LocalAttention}: its own copies of q, k, v and the LSE of `saved.out`, [T, H]. */
interface LocalState {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  lse: Tensor;
}

/**
 * Attention of one rank over its whole sequence (sp = 1): q [T, H, d], k and v [T, Hkv, d].
 * The forward keeps copies of q, k, v, the output and its LSE; the backward uses them
 * (algorithms.md §5).
 */
export class LocalAttention implements AttentionCore {
  private readonly kernels: AttentionKernels;
  private readonly shape: AttentionShape;
  private readonly scale: number;

  /** @throws Error when heads, kvHeads or headDim are invalid. */
  constructor(opts: LocalAttentionOptions) {
    this.scale = checkAttentionShape(opts);
    this.kernels = opts.kernels;
    this.shape = { heads: opts.heads, kvHeads: opts.kvHeads, headDim: opts.headDim };
  }

  /**
   * q [T, H, d], k and v [T, Hkv, d] → saved.out [T, H, d] under the layout's mask (rows with
   * no visible key: 0, lse −∞); keeps copies of q, k, v and the lse [T, H] in saved.state.
   * Everything kept is category 'saved', from q's arena.
   * @throws Error on shapes that do not match the constructor's heads/kvHeads/headDim, or a layout that is not single-rank.
   */
  forward(q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout): AttentionSaved {
    const t = checkQkvShapes(this.shape, q, k, v);
    const plan = localPlan(layout, t);
    const { heads, headDim } = this.shape;
    const state: LocalState = {
      q: Tensor.from(q.arena, q.shape, q.data, 'saved'),
      k: Tensor.from(k.arena, k.shape, k.data, 'saved'),
      v: Tensor.from(v.arena, v.shape, v.data, 'saved'),
      lse: Tensor.zeros(q.arena, [t, heads], 'saved'),
    };
    const out = Tensor.zeros(q.arena, [t, heads, headDim], 'saved');
    state.lse.data.fill(-Infinity);
    // A single-rank layout holds the sequence in order: its plan is at most one block.
    for (const { queryStart: qs, queryEnd: qe, keyStart: ks, keyEnd: ke, mask } of plan.blocks) {
      this.kernels.attentionForward(state.q.rows(qs, qe), state.k.rows(ks, ke), state.v.rows(ks, ke), out.rows(qs, qe), state.lse.rows(qs, qe), { mask, scale: this.scale });
    }
    return { out, state };
  }

  /**
   * Accumulate into dq [T, H, d], dk and dv [T, Hkv, d] from dOut [T, H, d]. Frees saved.out
   * and the saved state: `saved` must not be used afterwards.
   * @throws Error naming the first of dOut, dq, dk, dv whose shape does not match the forward's.
   */
  backward(saved: AttentionSaved, dOut: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, layout: SequenceLayout): void {
    const st = saved.state as LocalState;
    const t = checkQkvShapes(this.shape, st.q, st.k, st.v);
    const { heads, kvHeads, headDim } = this.shape;
    expectShape('dOut', dOut, t, heads, headDim);
    expectShape('dq', dq, t, heads, headDim);
    expectShape('dk', dk, t, kvHeads, headDim);
    expectShape('dv', dv, t, kvHeads, headDim);
    const plan = localPlan(layout, t);
    for (const { queryStart: qs, queryEnd: qe, keyStart: ks, keyEnd: ke, mask } of plan.blocks) {
      this.kernels.attentionBackward(
        st.q.rows(qs, qe), st.k.rows(ks, ke), st.v.rows(ks, ke), saved.out.rows(qs, qe), st.lse.rows(qs, qe), dOut.rows(qs, qe),
        dq.rows(qs, qe), dk.rows(ks, ke), dv.rows(ks, ke), { mask, scale: this.scale },
      );
    }
    this.release(saved);
  }

  /** Free saved.out and the saved state without a backward. */
  release(saved: AttentionSaved): void {
    const st = saved.state as LocalState;
    for (const x of [st.q, st.k, st.v, st.lse, saved.out]) x.free();
  }
}
