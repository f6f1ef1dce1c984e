import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { resolveLayout, type LayoutRequest } from '../src/parallel/presets.js';

const base: LayoutRequest = { dp: 1, placement: 'head-first' };

describe('parallel presets and sp resolve to full layouts (F15)', () => {
  const cases: [string, Partial<LayoutRequest>, [number, number, number]][] = [
    ['no sizes: one rank', {}, [1, 1, 1]],
    ['hp and cp', { hp: 2, cp: 4 }, [2, 4, 4]],
    ['sp with hp', { sp: 8, hp: 2 }, [2, 4, 4]],
    ['sp with cp', { sp: 8, cp: 2 }, [4, 2, 2]],
    ['ulysses', { preset: 'ulysses', sp: 4 }, [4, 1, 1]],
    ['ulysses from hp alone', { preset: 'ulysses', hp: 8 }, [8, 1, 1]],
    ['ring', { preset: 'ring', sp: 4 }, [1, 4, 4]],
    ['usp', { preset: 'usp', sp: 8, hp: 2 }, [2, 4, 4]],
    ['loongtrain', { preset: 'loongtrain', sp: 8, hp: 2, innerRingSize: 2 }, [2, 4, 2]],
    ['loongtrain with w = 1', { preset: 'loongtrain', hp: 1, cp: 4, innerRingSize: 1 }, [1, 4, 1]],
  ];
  for (const [name, req, [hp, cp, w]] of cases) {
    it(name, () => {
      const r = resolveLayout({ ...base, ...req });
      assert.deepEqual([r.hp, r.cp, r.innerRingSize], [hp, cp, w]);
      assert.equal(r.dp, 1);
    });
  }

  const errors: [string, Partial<LayoutRequest>, RegExp][] = [
    ['sp alone', { sp: 8 }, /parallel\.sp = 8 needs its split .* hp × cp = 8 \(hp ∈ \{1, 2, 4, 8\}\)/],
    ['usp with sp alone', { preset: 'usp', sp: 4 }, /parallel\.sp = 4 needs its split/],
    ['ring without a size', { preset: 'ring' }, /preset = "ring" needs parallel\.sp/],
    ['ring contradicted by hp', { preset: 'ring', sp: 4, hp: 2 }, /parallel\.hp = 2 contradicts parallel\.preset = "ring", which sets hp = 1/],
    ['usp with a double ring', { preset: 'usp', hp: 2, cp: 4, innerRingSize: 2 }, /innerRingSize = 2 contradicts parallel\.preset = "usp" .* use preset "loongtrain"/],
    ['loongtrain with w = cp', { preset: 'loongtrain', hp: 2, cp: 4, innerRingSize: 4 }, /needs parallel\.innerRingSize, a divisor of cp = 4 smaller than cp \(one of 1, 2\), got 4/],
    ['sp that cp does not divide', { sp: 4, cp: 3 }, /parallel\.cp = 3 does not divide parallel\.sp = 4; choose cp ∈ \{1, 2, 4\}/],
    ['loongtrain with cp = 1', { preset: 'loongtrain', hp: 4, cp: 1 }, /cp = 1 has none, so raise cp or use preset "usp"/],
    ['sp that hp does not divide', { sp: 8, hp: 3 }, /parallel\.hp = 3 does not divide parallel\.sp = 8; choose hp ∈ \{1, 2, 4, 8\}/],
  ];
  for (const [name, req, pattern] of errors) {
    it(`refuses ${name}`, () => {
      assert.throws(() => resolveLayout({ ...base, ...req }), (e: Error) => e instanceof ConfigError && pattern.test(e.message));
    });
  }
});
