import type { Arena, MemoryCategory } from './arena.js';

/**
 * A contiguous row-major f32 tensor living in a rank's {@link Arena}. Views made with
 * {@link rows} share memory with their parent and are never freed on their own.
 */
export class Tensor {
  readonly shape: readonly number[];
  /** Elements, a view into the arena's shared buffer. */
  readonly data: Float32Array;
  /** Byte offset of element 0 in the arena (what a WebAssembly or BLAS kernel receives). */
  readonly byteOffset: number;
  readonly arena: Arena;
  private readonly owner: boolean;
  private freed = false;

  private constructor(arena: Arena, shape: readonly number[], byteOffset: number, owner: boolean) {
    this.arena = arena;
    this.shape = shape;
    this.byteOffset = byteOffset;
    this.owner = owner;
    this.data = new Float32Array(arena.buffer, byteOffset, shapeSize(shape));
  }

  /** Allocate a zero-filled tensor of `shape` from `arena`, counted under `category`. */
  static zeros(arena: Arena, shape: readonly number[], category: MemoryCategory = 'activations'): Tensor {
    return Tensor.alloc(arena, shape, category, true);
  }

  /**
   * Allocate a tensor of `shape` whose values are left over from earlier allocations (any bits,
   * NaN included), for an output its producer overwrites entirely before anything reads it: a
   * matmul without `accumulate`, a kernel documented as overwriting, an all-to-all's receive
   * buffer, a copy. Saves the zero-fill, the largest cost outside kernels at long sequences.
   */
  static empty(arena: Arena, shape: readonly number[], category: MemoryCategory = 'activations'): Tensor {
    return Tensor.alloc(arena, shape, category, false);
  }

  private static alloc(arena: Arena, shape: readonly number[], category: MemoryCategory, zeroFill: boolean): Tensor {
    for (const n of shape) {
      if (!Number.isInteger(n) || n < 0) throw new Error(`tensor shape [${shape.join(', ')}] must hold non-negative integers`);
    }
    const offset = arena.allocBytes(shapeSize(shape) * 4, category, zeroFill);
    return new Tensor(arena, [...shape], offset, true);
  }

  /** Allocate a tensor of `shape` holding a copy of `values` (length must match). */
  static from(arena: Arena, shape: readonly number[], values: ArrayLike<number>, category: MemoryCategory = 'activations'): Tensor {
    const t = Tensor.empty(arena, shape, category);
    if (values.length !== t.size) throw new Error(`tensor of shape [${shape.join(', ')}] needs ${t.size} values, got ${values.length}`);
    t.data.set(values);
    return t;
  }

  get size(): number {
    return this.data.length;
  }

  /** Elements per index of the first dimension. */
  get rowSize(): number {
    return this.shape.length === 0 ? 1 : this.size / Math.max(1, this.shape[0]!);
  }

  /** A view of rows [start, end) of the first dimension, sharing memory. */
  rows(start: number, end: number): Tensor {
    const n = this.shape[0] ?? 0;
    if (!(0 <= start && start <= end && end <= n)) throw new Error(`rows(${start}, ${end}) out of range for first dimension ${n}`);
    return new Tensor(this.arena, [end - start, ...this.shape.slice(1)], this.byteOffset + start * this.rowSize * 4, false);
  }

  /** A view with another shape of the same size, sharing memory. */
  reshape(shape: readonly number[]): Tensor {
    if (shapeSize(shape) !== this.size) throw new Error(`cannot reshape [${this.shape.join(', ')}] to [${shape.join(', ')}]`);
    return new Tensor(this.arena, [...shape], this.byteOffset, false);
  }

  /** Return this tensor's memory to the arena. Views and double frees throw. */
  free(): void {
    if (!this.owner) throw new Error('a tensor view cannot be freed; free its parent');
    if (this.freed) throw new Error(`tensor [${this.shape.join(', ')}] freed twice`);
    this.freed = true;
    this.arena.freeBytes(this.byteOffset);
  }
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}
