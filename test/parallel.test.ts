import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { checkSeqLen, divisors, ParallelDims, PLACEMENTS, type Placement, validateLayout, validHpValues } from '../src/parallel/dims.js';

/** Assert `fn` throws a ConfigError whose message contains every fragment. */
function throwsConfig(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

type GroupFn = (dims: ParallelDims, rank: number) => number[];

/**
 * The distinct groups `fn` gives over all ranks, in order of first appearance. Also checks that every rank lies in its own group and that
 * all members of a group report the same group, so a partition is really a partition.
 */
function groupsOf(dims: ParallelDims, fn: GroupFn): number[][] {
  const seen = new Map<string, number[]>();
  for (let r = 0; r < dims.world; r++) {
    const g = fn(dims, r);
    assert.ok(g.includes(r), `rank ${r} is not in its own group [${g.join(', ')}]`);
    for (const m of g) assert.deepEqual(fn(dims, m), g, `rank ${m} disagrees with rank ${r} about their group`);
    seen.set(g.join(','), g);
  }
  return [...seen.values()];
}

/** Groups compared as a set (table order is not an API), each group's member order kept. */
function assertGroups(actual: number[][], expected: number[][], what: string): void {
  const key = (gs: number[][]): string[] => gs.map((g) => g.join(',')).sort();
  assert.deepEqual(key(actual), key(expected), what);
}

describe('ParallelDims: the 8-rank table of algorithms.md §1 (dp = 1, hp = 2, cp = 4, w = 2)', () => {
  const table: Record<Placement, Record<'hp' | 'cp' | 'inner' | 'outer', number[][]>> = {
    'head-first': {
      hp: [[0, 1], [2, 3], [4, 5], [6, 7]],
      cp: [[0, 2, 4, 6], [1, 3, 5, 7]],
      inner: [[0, 2], [4, 6], [1, 3], [5, 7]],
      outer: [[0, 4], [2, 6], [1, 5], [3, 7]],
    },
    'context-first': {
      hp: [[0, 4], [1, 5], [2, 6], [3, 7]],
      cp: [[0, 1, 2, 3], [4, 5, 6, 7]],
      inner: [[0, 1], [2, 3], [4, 5], [6, 7]],
      outer: [[0, 2], [1, 3], [4, 6], [5, 7]],
    },
  };
  for (const placement of PLACEMENTS) {
    const dims = new ParallelDims({ dp: 1, hp: 2, cp: 4, placement, innerRingSize: 2 }, 8);
    const want = table[placement];
    test(`${placement}: sizes`, () => {
      assert.deepEqual([dims.sp, dims.world, dims.innerRingSize, dims.outerRingSize], [8, 8, 2, 2]);
    });
    test(`${placement}: hp groups`, () => assertGroups(groupsOf(dims, (d, r) => d.hpGroup(r)), want.hp, 'hp groups'));
    test(`${placement}: cp groups, in ring-position order`, () => assertGroups(groupsOf(dims, (d, r) => d.cpGroup(r)), want.cp, 'cp groups'));
    test(`${placement}: inner rings`, () => assertGroups(groupsOf(dims, (d, r) => d.innerRing(r)), want.inner, 'inner rings'));
    test(`${placement}: outer rings`, () => assertGroups(groupsOf(dims, (d, r) => d.outerRing(r)), want.outer, 'outer rings'));
    test(`${placement}: dp = 1 gives singleton dp groups and one SP block`, () => {
      for (let r = 0; r < 8; r++) {
        assert.deepEqual(dims.dpGroup(r), [r]);
        assert.deepEqual(dims.spGroup(r), [0, 1, 2, 3, 4, 5, 6, 7]);
      }
    });
  }

  test('w = cp gives one plain ring per cp group and singleton outer rings; w = 1 the reverse', () => {
    const plain = new ParallelDims({ dp: 1, hp: 2, cp: 4, placement: 'head-first' });
    assert.equal(plain.innerRingSize, 4);
    assertGroups(groupsOf(plain, (d, r) => d.innerRing(r)), [[0, 2, 4, 6], [1, 3, 5, 7]], 'inner rings, w = cp');
    assertGroups(groupsOf(plain, (d, r) => d.outerRing(r)), [[0], [1], [2], [3], [4], [5], [6], [7]], 'outer rings, w = cp');
    const outerOnly = new ParallelDims({ dp: 1, hp: 2, cp: 4, placement: 'head-first', innerRingSize: 1 });
    assertGroups(groupsOf(outerOnly, (d, r) => d.outerRing(r)), [[0, 2, 4, 6], [1, 3, 5, 7]], 'outer rings, w = 1');
    assertGroups(groupsOf(outerOnly, (d, r) => d.innerRing(r)), [[0], [1], [2], [3], [4], [5], [6], [7]], 'inner rings, w = 1');
  });
});

describe('ParallelDims: dp = 2 (hp = 2, cp = 2)', () => {
  test('head-first: SP blocks are contiguous, dp groups join the same (h, c) of both blocks', () => {
    const dims = new ParallelDims({ dp: 2, hp: 2, cp: 2, placement: 'head-first' }, 8);
    assertGroups(groupsOf(dims, (d, r) => d.spGroup(r)), [[0, 1, 2, 3], [4, 5, 6, 7]], 'SP blocks');
    assertGroups(groupsOf(dims, (d, r) => d.dpGroup(r)), [[0, 4], [1, 5], [2, 6], [3, 7]], 'dp groups');
    assertGroups(groupsOf(dims, (d, r) => d.hpGroup(r)), [[0, 1], [2, 3], [4, 5], [6, 7]], 'hp groups');
    assertGroups(groupsOf(dims, (d, r) => d.cpGroup(r)), [[0, 2], [1, 3], [4, 6], [5, 7]], 'cp groups');
    assert.deepEqual(dims.coords(6), { block: 1, h: 0, c: 1 });
  });

  test('context-first: same blocks and dp groups, hp and cp groups swap roles', () => {
    const dims = new ParallelDims({ dp: 2, hp: 2, cp: 2, placement: 'context-first' }, 8);
    assertGroups(groupsOf(dims, (d, r) => d.spGroup(r)), [[0, 1, 2, 3], [4, 5, 6, 7]], 'SP blocks');
    assertGroups(groupsOf(dims, (d, r) => d.dpGroup(r)), [[0, 4], [1, 5], [2, 6], [3, 7]], 'dp groups');
    assertGroups(groupsOf(dims, (d, r) => d.hpGroup(r)), [[0, 2], [1, 3], [4, 6], [5, 7]], 'hp groups');
    assertGroups(groupsOf(dims, (d, r) => d.cpGroup(r)), [[0, 1], [2, 3], [4, 5], [6, 7]], 'cp groups');
    assert.deepEqual(dims.coords(6), { block: 1, h: 1, c: 0 });
  });

  test('dp = 3 with sp = 2: dp groups stride by sp', () => {
    const dims = new ParallelDims({ dp: 3, hp: 1, cp: 2, placement: 'head-first' }, 6);
    assertGroups(groupsOf(dims, (d, r) => d.dpGroup(r)), [[0, 2, 4], [1, 3, 5]], 'dp groups');
    assertGroups(groupsOf(dims, (d, r) => d.spGroup(r)), [[0, 1], [2, 3], [4, 5]], 'SP blocks');
  });
});

describe('ParallelDims: coords ↔ rankOf', () => {
  const layouts: Array<[number, number, number]> = [[1, 1, 1], [1, 2, 4], [2, 2, 2], [2, 4, 1], [3, 1, 4], [2, 3, 2]];
  for (const placement of PLACEMENTS) {
    for (const [dp, hp, cp] of layouts) {
      test(`${placement} dp=${dp} hp=${hp} cp=${cp}: a bijection between ranks and grid points`, () => {
        const dims = new ParallelDims({ dp, hp, cp, placement });
        const hit = new Set<number>();
        for (let block = 0; block < dp; block++) {
          for (let h = 0; h < hp; h++) {
            for (let c = 0; c < cp; c++) {
              const r = dims.rankOf(block, h, c);
              assert.ok(r >= block * dims.sp && r < (block + 1) * dims.sp, `rank ${r} of (${block}, ${h}, ${c}) is outside its SP block`);
              assert.deepEqual(dims.coords(r), { block, h, c });
              hit.add(r);
            }
          }
        }
        assert.equal(hit.size, dims.world);
        for (let r = 0; r < dims.world; r++) {
          const { block, h, c } = dims.coords(r);
          assert.equal(dims.rankOf(block, h, c), r);
        }
      });
    }
  }

  test('a rank outside the world is a RangeError', () => {
    const dims = new ParallelDims({ dp: 1, hp: 2, cp: 2, placement: 'head-first' });
    for (const bad of [-1, 4, 1.5]) assert.throws(() => dims.coords(bad), RangeError);
  });
});

describe('ParallelDims constructor validation', () => {
  const base = { dp: 1, hp: 2, cp: 4, placement: 'head-first' as Placement };

  test('world ≠ dp·hp·cp names both and the product to aim for', () => {
    throwsConfig(() => new ParallelDims(base, 6), 'world size 6', 'dp·hp·cp = 1·2·4 = 8', 'product is 6');
  });

  test('innerRingSize that does not divide cp lists the valid values', () => {
    throwsConfig(() => new ParallelDims({ ...base, innerRingSize: 3 }), 'parallel.innerRingSize = 3', 'parallel.cp = 4', 'valid values: 1, 2, 4');
    throwsConfig(() => new ParallelDims({ ...base, cp: 6, innerRingSize: 4 }), 'valid values: 1, 2, 3, 6');
    throwsConfig(() => new ParallelDims({ ...base, innerRingSize: 0 }), 'parallel.innerRingSize = 0', 'positive integer');
  });

  test('sizes must be positive integers and the placement known', () => {
    throwsConfig(() => new ParallelDims({ ...base, dp: 0 }), 'parallel.dp = 0', 'positive integer');
    throwsConfig(() => new ParallelDims({ ...base, hp: 1.5 }), 'parallel.hp = 1.5', 'positive integer');
    throwsConfig(() => new ParallelDims({ ...base, cp: -2 }), 'parallel.cp = -2', 'positive integer');
    throwsConfig(() => new ParallelDims({ ...base, placement: 'rows' as Placement }), 'parallel.placement = "rows"', '"head-first", "context-first"');
  });
});

describe('divisors and validHpValues', () => {
  test('divisors', () => {
    assert.deepEqual(divisors(1), [1]);
    assert.deepEqual(divisors(12), [1, 2, 3, 4, 6, 12]);
    assert.deepEqual(divisors(7), [1, 7]);
  });

  test('hp divides heads and divides kvHeads, or is a multiple of it above kvHeads (algorithms.md §3)', () => {
    assert.deepEqual(validHpValues(6, 3), [1, 3, 6]);
    assert.deepEqual(validHpValues(12, 4), [1, 2, 4, 12]);
    assert.deepEqual(validHpValues(16, 2), [1, 2, 4, 8, 16]);
    assert.deepEqual(validHpValues(8, 8), [1, 2, 4, 8]);
    assert.deepEqual(validHpValues(4, 1), [1, 2, 4]);
  });
});

describe('validateLayout', () => {
  const dims = (hp: number, cp: number): ParallelDims => new ParallelDims({ dp: 1, hp, cp, placement: 'head-first' });

  test('a fitting layout passes', () => {
    validateLayout(dims(2, 4), { heads: 8, kvHeads: 2, seqLen: 64 });
    validateLayout(dims(4, 2), { heads: 8, kvHeads: 2, seqLen: 16 });
  });

  test('heads not a multiple of kvHeads lists the valid kvHeads', () => {
    throwsConfig(() => validateLayout(dims(1, 1), { heads: 6, kvHeads: 4, seqLen: 8 }), 'model.heads = 6', 'model.kvHeads = 4', 'valid kvHeads: 1, 2, 3, 6');
  });

  test('hp that does not fit heads/kvHeads lists validHpValues', () => {
    throwsConfig(() => validateLayout(dims(2, 1), { heads: 6, kvHeads: 3, seqLen: 8 }), 'parallel.hp = 2', 'model.heads = 6', 'model.kvHeads = 3', 'with hp < kvHeads, hp must divide kvHeads', 'the nearest valid hp values are 1 and 3');
    throwsConfig(() => validateLayout(dims(6, 1), { heads: 12, kvHeads: 4, seqLen: 24 }), 'parallel.hp = 6', 'with hp > kvHeads, hp must be a multiple of kvHeads', 'the nearest valid hp values are 2 and 4');
    throwsConfig(() => validateLayout(dims(8, 1), { heads: 4, kvHeads: 2, seqLen: 32 }), 'parallel.hp = 8', 'hp must divide heads', 'the nearest valid hp values are 2 and 4');
  });

  test('seqLen not divisible by 2·sp names the nearest valid lengths', () => {
    const d = dims(2, 4); // sp = 8, unit 16
    throwsConfig(() => validateLayout(d, { heads: 8, kvHeads: 2, seqLen: 30 }), 'train.seqLen = 30', 'sp = 8', '2·sp = 16', 'nearest valid lengths: 16 or 32');
    throwsConfig(() => validateLayout(d, { heads: 8, kvHeads: 2, seqLen: 40 }), 'nearest valid lengths: 32 or 48');
    throwsConfig(() => validateLayout(d, { heads: 8, kvHeads: 2, seqLen: 8 }), 'train.seqLen = 8', 'nearest valid lengths: 16');
    throwsConfig(() => validateLayout(d, { heads: 8, kvHeads: 2, seqLen: 0 }), 'train.seqLen = 0', 'nearest valid lengths: 16');
  });

  test('checkSeqLen is the seqLen rule on its own', () => {
    const d = dims(1, 2); // sp = 2, unit 4
    for (const ok of [4, 8, 36]) checkSeqLen(d, ok);
    for (const bad of [0, 2, 6, 33, 4.5]) throwsConfig(() => checkSeqLen(d, bad), `train.seqLen = ${bad}`, '2·sp = 4');
  });
});
