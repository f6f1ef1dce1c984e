import assert from 'node:assert/strict';

/** Per-step losses `actual` equal `expected` within relative error `rel`, with the step named on failure. */
export function assertClose(actual: readonly number[], expected: readonly number[], rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: number of steps`);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) / Math.abs(expected[i]!);
    assert.ok(err <= rel, `${what}: step ${i + 1} loss ${actual[i]} vs ${expected[i]} (relative error ${err.toExponential(2)} > ${rel})`);
  }
}
