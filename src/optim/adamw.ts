import type { Kernels } from '../kernels/kernels.js';
import type { ParamLayout } from '../model/params.js';
import type { Arena } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';

/** AdamW hyper-parameters other than the learning rate, which a schedule gives per step. */
export interface AdamWHyper {
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay λ (p ← p·(1 − lr·λ) …), applied only to parameters of rank ≥ 2. */
  weightDecay: number;
}

/** Optimizer state for checkpoints: the number of steps taken and copies of m and v. */
export interface AdamWState {
  step: number;
  m: Float32Array;
  v: Float32Array;
}

/** A contiguous run of the flat tensors that shares one weight-decay setting. */
interface Segment {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  decay: boolean;
}

function checkHyper(h: AdamWHyper): void {
  const bad = (field: string, value: number, valid: string): Error => new Error(`AdamW: ${field} = ${value} is invalid: it must be ${valid}`);
  if (!(h.beta1 >= 0 && h.beta1 < 1)) throw bad('beta1', h.beta1, 'in [0, 1)');
  if (!(h.beta2 >= 0 && h.beta2 < 1)) throw bad('beta2', h.beta2, 'in [0, 1)');
  if (!(h.eps > 0 && Number.isFinite(h.eps))) throw bad('eps', h.eps, 'a positive finite number');
  if (!(h.weightDecay >= 0 && Number.isFinite(h.weightDecay))) throw bad('weightDecay', h.weightDecay, 'a finite number ≥ 0');
}

/**
 * AdamW (Loshchilov & Hutter 2019; update formula in Kernels.adamw) over flat parameter and
 * gradient tensors laid out by {@link ParamLayout}. m and v are flat too (category 'optim').
 * Weight decay applies to every parameter whose shape has rank ≥ 2 (the attention and MLP
 * matrices, the embedding table and an untied `output`) and not to 1-D norm gains.
 *
 * The tensors may be a contiguous slice of the flat layout starting at element `offset` (a
 * ZeRO shard); decay is then decided by the layout entries the slice overlaps.
 */
export class AdamW {
  private readonly segments: Segment[] = [];
  private readonly m: Tensor;
  private readonly v: Tensor;
  private stepCount = 0;

  /**
   * @param params parameters [n] (updated in place); @param grads their gradients [n].
   * @param offset element of the flat layout that params[0] holds (0 unless sharded).
   * @throws Error on a bad hyper-parameter, size mismatch or a slice outside the layout.
   */
  constructor(
    private readonly kernels: Kernels,
    arena: Arena,
    layout: ParamLayout,
    params: Tensor,
    grads: Tensor,
    private readonly hyper: AdamWHyper,
    offset = 0,
  ) {
    checkHyper(hyper);
    const n = params.size;
    if (grads.size !== n) throw new Error(`AdamW: grads have ${grads.size} elements, params ${n}; they must match`);
    if (!Number.isInteger(offset) || offset < 0 || offset + n > layout.flatSize) {
      throw new Error(`AdamW: slice [${offset}, ${offset + n}) is outside the flat layout [0, ${layout.flatSize})`);
    }
    this.m = Tensor.zeros(arena, [n], 'optim');
    this.v = Tensor.zeros(arena, [n], 'optim');
    const specs = layout.specs;
    // Each entry owns [its offset, the next entry's offset): alignment gaps are zero in params
    // and grads and stay zero under AdamW, so they can ride with either neighbour.
    let runStart = offset;
    for (let i = 0; i < specs.length; i++) {
      const start = Math.max(specs[i]!.offset, offset);
      const end = Math.min(i + 1 < specs.length ? specs[i + 1]!.offset : layout.flatSize, offset + n);
      if (start >= end) continue;
      const decay = specs[i]!.shape.length >= 2;
      const next = specs[i + 1];
      const nextInSlice = next !== undefined && next.offset < offset + n;
      if (nextInSlice && (next.shape.length >= 2) === decay) continue;
      this.segments.push(this.segment(params, grads, runStart - offset, end - offset, decay));
      runStart = end;
    }
  }

  /** Number of steps taken (the next step is stepCount + 1). */
  get step(): number {
    return this.stepCount;
  }

  /**
   * One update with learning rate `lr` (from the schedule) using the current gradients.
   * @throws Error when lr is negative or not finite.
   */
  update(lr: number): void {
    if (!(lr >= 0 && Number.isFinite(lr))) throw new Error(`AdamW: lr = ${lr} is invalid: it must be a finite number ≥ 0`);
    this.stepCount++;
    const { beta1, beta2, eps, weightDecay } = this.hyper;
    for (const s of this.segments) {
      this.kernels.adamw(s.param, s.grad, s.m, s.v, { lr, beta1, beta2, eps, weightDecay: s.decay ? weightDecay : 0, step: this.stepCount });
    }
  }

  /** Copies of m, v and the step count. */
  exportState(): AdamWState {
    return { step: this.stepCount, m: this.m.data.slice(), v: this.v.data.slice() };
  }

  /** Restore state from {@link exportState}. @throws Error naming a length or step that does not fit. */
  importState(state: AdamWState): void {
    const n = this.m.size;
    if (state.m.length !== n || state.v.length !== n) {
      throw new Error(`AdamW.importState: m has ${state.m.length} and v ${state.v.length} elements, this optimizer holds ${n}`);
    }
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`AdamW.importState: step = ${state.step} is invalid: it must be an integer ≥ 0`);
    this.m.data.set(state.m);
    this.v.data.set(state.v);
    this.stepCount = state.step;
  }

  private segment(params: Tensor, grads: Tensor, start: number, end: number, decay: boolean): Segment {
    return { param: params.rows(start, end), grad: grads.rows(start, end), m: this.m.rows(start, end), v: this.v.rows(start, end), decay };
  }
}
