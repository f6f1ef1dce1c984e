import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { loadConfig, type Config } from '../../src/train/config.js';

/** The tiny model of the training tests: dim 32, 2 layers, 4 heads over 2 KV heads, seqLen 64, quiet logs. */
export const TINY_MODEL = ['model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64', 'train.seqLen=64', 'log.progress=none'];

/**
 * A source of configs for a test file: each call gives the tiny model with `base` and then
 * `overrides` applied, in a run folder of its own (log and checkpoints under a temporary root
 * removed after the file's tests).
 */
export function tinyRuns(name: string, base: string[]): (overrides?: string[]) => Config {
  const root = mkdtempSync(join(tmpdir(), `loongtrain-${name}-`));
  after(() => rmSync(root, { recursive: true, force: true }));
  let runs = 0;
  return (overrides = []) => {
    const dir = join(root, `run-${runs++}`);
    return loadConfig(undefined, [...TINY_MODEL, ...base, `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`, ...overrides]);
  };
}
