import assert from 'node:assert/strict';
import { ConfigError } from '../../src/errors.js';

/** The ConfigError message `fn` throws, after checking it contains every fragment. */
export function configError(fn: () => unknown, ...fragments: string[]): string {
  let message = '';
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    message = e.message;
    for (const f of fragments) assert.ok(message.includes(f), `message ${JSON.stringify(message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
  return message;
}
