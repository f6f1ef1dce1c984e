import type { MemoryCategory } from './arena.js';

/**
 * The allocation ledger that a layer's memory hook replays its arena allocations on (docs/memory.md,
 * "Where the buffers come from"). Each hook sits beside the method whose allocations it mirrors
 * (e.g. `TwoDAttention.forwardMemory` beside `TwoDAttention.forward`) and calls the ledger in
 * the same order as that method allocates and frees; the memory predictor (src/memory/predict.ts)
 * implements the ledger and keeps the peak. It lives here, in the lowest layer, so that any layer
 * can describe its buffers without importing from src/memory/.
 */

/** One counted allocation: its arena bytes (rounded up to the arena's 64 bytes) and category. */
export interface MemoryHandle {
  readonly bytes: number;
  readonly category: MemoryCategory;
}

export interface MemoryLedger {
  /**
   * Where the replay is (e.g. "attention forward: ring"); the ledger reports the phase that was
   * set when the peak was reached. Hooks set it where their method starts a new stage.
   */
  phase: string;
  /** A tensor of `elements` f32 values of `category` becomes live (`Tensor.zeros`, `Tensor.from`). */
  alloc(elements: number, category: MemoryCategory): MemoryHandle;
  /** The tensors become free (`Tensor.free`); undefined entries are skipped (buffers a layout does not need). */
  free(...handles: (MemoryHandle | undefined)[]): void;
  /** Allocate and free at once: a temporary whose lifetime holds no other allocation. */
  temp(elements: number, category: MemoryCategory): void;
}
