import { ArenaExhaustedError } from '../errors.js';

/** What an allocation is for; the arena keeps live and peak bytes per category. */
export type MemoryCategory = 'params' | 'grads' | 'optim' | 'activations' | 'saved' | 'comm' | 'scratch';

export const MEMORY_CATEGORIES: readonly MemoryCategory[] = ['params', 'grads', 'optim', 'activations', 'saved', 'comm', 'scratch'];

/** Allocation granularity in bytes: keeps every tensor aligned for 128-bit SIMD and cache lines. */
const ALIGN = 64;
const WASM_PAGE = 65536;
/** A shared WebAssembly.Memory holds at most 65536 pages (4 GiB). */
export const MAX_ARENA_BYTES = 65536 * WASM_PAGE;

export interface ArenaStats {
  /** Bytes currently allocated. */
  liveBytes: number;
  /** Highest liveBytes since creation or the last resetPeak(). */
  peakBytes: number;
  /** Arena size in bytes. */
  limitBytes: number;
  liveByCategory: Record<MemoryCategory, number>;
  peakByCategory: Record<MemoryCategory, number>;
}

function zeroByCategory(): Record<MemoryCategory, number> {
  return Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as Record<MemoryCategory, number>;
}

/**
 * One rank's tensor memory: a shared `WebAssembly.Memory` of fixed size with a first-fit
 * free-list allocator (DESIGN decision 2). Kernels of any backend and peer ranks can address
 * the same bytes. Exhaustion throws {@link ArenaExhaustedError} naming the rank, request and limit.
 */
export class Arena {
  readonly memory: WebAssembly.Memory;
  readonly buffer: SharedArrayBuffer;
  /** The whole memory as f32s (it never grows, so the view stays valid): element i is bytes 4i … 4i + 3. */
  readonly floats: Float32Array;
  readonly limitBytes: number;
  readonly rank: number;
  /** Free blocks as [offset, size] sorted by offset, coalesced. */
  private free: Array<[number, number]>;
  private readonly sizes = new Map<number, { bytes: number; category: MemoryCategory }>();
  private live = 0;
  private peak = 0;
  private readonly liveCat = zeroByCategory();
  private readonly peakCat = zeroByCategory();

  /**
   * @param bytes arena size in bytes, rounded up to whole 64 KiB pages; at most 4 GiB.
   * @param rank the owning rank, named in errors.
   * @throws RangeError naming the size and the valid range if `bytes` is not finite, not positive or above 4 GiB.
   */
  constructor(bytes: number, rank = 0) {
    if (!Number.isFinite(bytes) || bytes <= 0 || bytes > MAX_ARENA_BYTES) {
      throw new RangeError(`rank ${rank}: arena size ${bytes} bytes is invalid; it must be a finite number in (0, ${MAX_ARENA_BYTES}] (4 GiB, the WebAssembly limit)`);
    }
    const pages = Math.ceil(bytes / WASM_PAGE);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    this.buffer = this.memory.buffer as unknown as SharedArrayBuffer;
    this.floats = new Float32Array(this.buffer);
    this.limitBytes = pages * WASM_PAGE;
    this.rank = rank;
    // Offset 0 is kept back so that a null pointer never names a live tensor.
    this.free = [[ALIGN, this.limitBytes - ALIGN]];
  }

  /**
   * Reserve `bytes` (rounded up to 64; 0 still takes one 64-byte block) and return the byte
   * offset. Memory is zero-filled unless `zeroFill` is false (then it holds whatever an earlier
   * allocation left: only for a caller that writes every byte before reading any).
   * @throws RangeError naming the rank and the value when `bytes` is not a non-negative integer
   * (a negative size is what an overflowed size computation looks like; rounding it up would
   * hand out a block smaller than the caller writes).
   * @throws ArenaExhaustedError naming the rank, the request, the category, live bytes and the limit.
   */
  allocBytes(bytes: number, category: MemoryCategory, zeroFill = true): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new RangeError(`rank ${this.rank}: arena allocation of ${bytes} bytes for ${category} is invalid: the size must be a non-negative integer`);
    }
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    for (let i = 0; i < this.free.length; i++) {
      const block = this.free[i]!;
      if (block[1] < size) continue;
      const offset = block[0];
      if (block[1] === size) this.free.splice(i, 1);
      else {
        block[0] += size;
        block[1] -= size;
      }
      this.sizes.set(offset, { bytes: size, category });
      this.live += size;
      this.liveCat[category] += size;
      if (this.live > this.peak) this.peak = this.live;
      if (this.liveCat[category] > this.peakCat[category]) this.peakCat[category] = this.liveCat[category];
      // In 8-byte lanes (offset and size are multiples of 64): on Node 20 a Uint8Array fill of
      // shared memory measured 2.5–4× slower, and this fill was the largest cost outside kernels.
      if (zeroFill) new Float64Array(this.buffer, offset, size / 8).fill(0);
      return offset;
    }
    throw new ArenaExhaustedError(
      `rank ${this.rank}: tensor arena exhausted: requested ${size} bytes for ${category} with ${this.live} of ${this.limitBytes} bytes live ` +
        `(largest free block ${Math.max(0, ...this.free.map((b) => b[1]))} bytes); raise train.arenaMiB or shorten train.seqLen`,
    );
  }

  /** Return an allocation made by {@link allocBytes}. Freeing an unknown offset throws. */
  freeBytes(offset: number): void {
    const entry = this.sizes.get(offset);
    if (entry === undefined) throw new Error(`rank ${this.rank}: arena free of unknown offset ${offset}`);
    this.sizes.delete(offset);
    this.live -= entry.bytes;
    this.liveCat[entry.category] -= entry.bytes;
    const end = offset + entry.bytes;
    let lo = 0;
    let hi = this.free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.free[mid]![0] < offset) lo = mid + 1;
      else hi = mid;
    }
    const prev = this.free[lo - 1];
    const next = this.free[lo];
    if (prev !== undefined && prev[0] + prev[1] === offset) {
      prev[1] += entry.bytes;
      if (next !== undefined && next[0] === end) {
        prev[1] += next[1];
        this.free.splice(lo, 1);
      }
    } else if (next !== undefined && next[0] === end) {
      next[0] = offset;
      next[1] += entry.bytes;
    } else {
      this.free.splice(lo, 0, [offset, entry.bytes]);
    }
  }

  /** Live and peak bytes, in total and per category. */
  stats(): ArenaStats {
    return {
      liveBytes: this.live,
      peakBytes: this.peak,
      limitBytes: this.limitBytes,
      liveByCategory: { ...this.liveCat },
      peakByCategory: { ...this.peakCat },
    };
  }

  /** Restart peak tracking from the current live bytes (e.g. at the start of a step). */
  resetPeak(): void {
    this.peak = this.live;
    for (const c of MEMORY_CATEGORIES) this.peakCat[c] = this.liveCat[c];
  }
}
