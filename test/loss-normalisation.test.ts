import { concatSequence } from './helpers/layouts.js';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { launchRanks } from '../src/comm/backends.js';
import type { Sequence } from '../src/data/packing.js';
import { Rng } from '../src/tensor/rng.js';
import { loadConfig } from '../src/train/config.js';
import type { TrainStepArgs } from './fixtures/train-step.js';

type StepResult = { loss: number; grads: Float32Array; plainLossSum?: number };

const SEQ = 32;

/** Two random sequences with ~10% of labels ignored, unevenly: a run of 5 early labels of one sequence, and scattered ones. */
function batchWithIgnoredLabels(): { batch: Sequence[]; valid: number } {
  const rng = new Rng(7);
  const batch: Sequence[] = [];
  let valid = 0;
  for (let s = 0; s < 2; s++) {
    const tokens = Int32Array.from({ length: SEQ }, () => rng.int(257));
    const labels = Int32Array.from({ length: SEQ }, () => rng.int(257));
    if (s === 0) labels.fill(-1, 0, 5);
    else for (const i of [9, 30]) labels[i] = -1;
    valid += labels.filter((l) => l !== -1).length;
    batch.push(concatSequence(tokens, labels));
  }
  return { batch, valid };
}

async function step(layout: string[], batch: Sequence[]): Promise<StepResult> {
  const config = loadConfig(undefined, ['model.dim=16', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=32', `train.seqLen=${SEQ}`, ...layout]);
  const world = config.parallel.dp * config.parallel.hp * config.parallel.cp;
  const args: TrainStepArgs = { config, batch };
  const results = (await launchRanks({ world, entry: new URL('./fixtures/train-step.js', import.meta.url).href, args, timeoutMs: 20000, arenaBytes: 64 * 2 ** 20 })) as StepResult[];
  for (const r of results) assert.equal(r.loss, results[0]!.loss, 'every rank reports the same loss');
  return results[0]!;
}

describe('loss normalisation under sequence sharding (F12)', () => {
  it('loss = Σ token losses / Σ valid labels of the whole batch, and gradients match one rank, for cp = 2 and 4', async () => {
    const { batch, valid } = batchWithIgnoredLabels();
    assert.ok(valid < 2 * SEQ * 0.91 && valid > 2 * SEQ * 0.85, 'about 10% of labels are ignored');
    const one = await step([], batch);
    assert.ok(Math.abs(one.loss - one.plainLossSum! / valid) <= 1e-12 * one.loss, `one rank: ${one.loss} vs ${one.plainLossSum! / valid}`);
    let maxGrad = 0;
    for (const g of one.grads) maxGrad = Math.max(maxGrad, Math.abs(g));
    for (const layout of [['parallel.cp=2'], ['parallel.cp=4'], ['parallel.hp=2', 'parallel.cp=2'], ['parallel.dp=2', 'parallel.cp=2']]) {
      const r = await step(layout, batch);
      assert.ok(Math.abs(r.loss - one.loss) <= 1e-6 * one.loss, `${layout}: loss ${r.loss} vs one rank ${one.loss}`);
      let err = 0;
      for (let i = 0; i < one.grads.length; i++) err = Math.max(err, Math.abs(r.grads[i]! - one.grads[i]!));
      assert.ok(err <= 1e-5 * maxGrad, `${layout}: gradient error ${err} > 1e-5 × ${maxGrad}`);
    }
  });

  it('a batch with no valid label is an error, not a NaN loss', async () => {
    const { batch } = batchWithIgnoredLabels();
    for (const seq of batch) seq.labels.fill(-1);
    await assert.rejects(step(['parallel.cp=2'], batch), /rank \d failed: the global batch has no valid label/);
  });
});
