import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TwoDAttention, type TwoDMemoryShape } from '../src/attention/two-d.js';
import { launchRanks } from '../src/comm/backends.js';
import { MEMORY_CATEGORIES, type MemoryCategory } from '../src/tensor/arena.js';
import type { MemoryHandle, MemoryLedger } from '../src/tensor/memory-ledger.js';
import type { AttentionMemoryArgs, AttentionMemoryResult, PassBytes } from './fixtures/attention-memory.js';

const ENTRY = fileURLToPath(new URL('./fixtures/attention-memory.js', import.meta.url));

const zero = (): Record<MemoryCategory, number> => Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as Record<MemoryCategory, number>;

/** A ledger of this test's own: live and peak bytes, per category, with the arena's 64-byte rounding. */
class CountingLedger implements MemoryLedger {
  phase = '';
  readonly live = zero();
  peak = 0;
  peakByCategory = zero();
  private total = 0;

  alloc(elements: number, category: MemoryCategory): MemoryHandle {
    const h = { bytes: Math.max(64, Math.ceil((elements * 4) / 64) * 64), category };
    this.live[category] += h.bytes;
    this.total += h.bytes;
    this.peak = Math.max(this.peak, this.total);
    this.peakByCategory[category] = Math.max(this.peakByCategory[category], this.live[category]);
    return h;
  }

  free(...handles: (MemoryHandle | undefined)[]): void {
    for (const h of handles) {
      if (h === undefined) continue;
      this.live[h.category] -= h.bytes;
      this.total -= h.bytes;
    }
  }

  temp(elements: number, category: MemoryCategory): void {
    this.free(this.alloc(elements, category));
  }

  /** Start a pass: what it allocates is counted from the bytes live now. */
  start(): { live: Record<MemoryCategory, number>; total: number } {
    this.peak = this.total;
    this.peakByCategory = { ...this.live };
    return { live: { ...this.live }, total: this.total };
  }

  since(start: { live: Record<MemoryCategory, number>; total: number }): PassBytes {
    const by = (f: (c: MemoryCategory) => number) => Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, f(c)])) as Record<MemoryCategory, number>;
    return { kept: by((c) => this.live[c] - start.live[c]), peak: this.peak - start.total, peakByCategory: by((c) => this.peakByCategory[c] - start.live[c]) };
  }
}

const base = { heads: 4, headDim: 4, seq: 48 };
const CASES: AttentionMemoryArgs[] = [
  { ...base, hp: 1, cp: 1, w: 1, kvHeads: 2 },
  { ...base, hp: 2, cp: 1, w: 1, kvHeads: 2 },
  // KV heads replicated ×4 (hp = 4 > kvHeads = 1).
  { ...base, hp: 4, cp: 1, w: 1, kvHeads: 1 },
  { ...base, hp: 1, cp: 3, w: 3, kvHeads: 2 },
  // Double rings: w = 2 with W = 2 (inner accumulators and outer totals), w = 1 with KV replicated, w = 3 with W = 2 (a third inner K/V buffer).
  { ...base, hp: 1, cp: 4, w: 2, kvHeads: 4, headDim: 6 },
  { ...base, hp: 2, cp: 2, w: 1, kvHeads: 1 },
  { ...base, hp: 1, cp: 6, w: 3, kvHeads: 2 },
];

describe('TwoDAttention memory hooks (docs/memory.md)', () => {
  for (const a of CASES) {
    it(`forwardMemory and backwardMemory replay the bytes a real forward and backward allocate: hp=${a.hp} cp=${a.cp} w=${a.w} Hkv=${a.kvHeads} d=${a.headDim}`, async () => {
      const ranks = (await launchRanks({ world: a.hp * a.cp, entry: ENTRY, args: a, timeoutMs: 20_000, arenaBytes: 4 << 20 })) as AttentionMemoryResult[];
      const shape: TwoDMemoryShape = { heads: a.heads, kvHeads: a.kvHeads, headDim: a.headDim, tokens: a.seq / (a.hp * a.cp), hp: a.hp, cp: a.cp, innerRingSize: a.w };
      const ledger = new CountingLedger();
      const fwdStart = ledger.start();
      const saved = TwoDAttention.forwardMemory(ledger, shape);
      const forward = ledger.since(fwdStart);
      const bwdStart = ledger.start();
      TwoDAttention.backwardMemory(ledger, shape, saved);
      const backward = ledger.since(bwdStart);
      assert.ok(forward.kept.saved > 0, 'the forward keeps saved bytes');
      for (const r of ranks) {
        assert.deepEqual(r.forward.kept, forward.kept, `rank ${r.rank}: bytes the forward keeps, per category (saved only)`);
        assert.equal(r.forward.peak, forward.peak, `rank ${r.rank}: forward peak bytes`);
        assert.deepEqual(r.forward.peakByCategory, forward.peakByCategory, `rank ${r.rank}: forward peak bytes per category`);
        assert.deepEqual(r.backward.kept, backward.kept, `rank ${r.rank}: the backward frees what the forward kept`);
        assert.equal(r.backward.peak, backward.peak, `rank ${r.rank}: backward peak bytes`);
        assert.deepEqual(r.backward.peakByCategory, backward.peakByCategory, `rank ${r.rank}: backward peak bytes per category`);
      }
      // What a checkpointed layer releases instead of a backward.
      const again = TwoDAttention.forwardMemory(ledger, shape);
      const live = { ...ledger.live };
      TwoDAttention.releaseMemory(ledger, again);
      for (const c of MEMORY_CATEGORIES) assert.equal(live[c] - ledger.live[c], forward.kept[c], `releaseMemory frees the forward's ${c} bytes`);
    });
  }
});
