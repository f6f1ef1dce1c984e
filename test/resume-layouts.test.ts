import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { readTrainerState } from '../src/train/checkpoint.js';
import { loadConfig } from '../src/train/config.js';
import { readSafetensors } from '../src/train/safetensors.js';
import { train } from '../src/train/train.js';

/*
 * Layout-independent checkpoints (docs/zero.md): saved under one (dp, hp, cp, zeroStage, shard
 * group), resumed under another, the loss curve continues as if never interrupted.
 */

const root = mkdtempSync(join(tmpdir(), 'loongtrain-resume-'));
after(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;

function config(overrides: string[]) {
  const dir = join(root, `run-${runs++}`);
  return loadConfig(undefined, [
    'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64',
    'train.seqLen=64', 'train.steps=6', 'optim.warmupSteps=2', 'optim.lr=1e-2', 'optim.minLr=1e-3',
    'log.progress=none', `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`,
    ...overrides,
  ]);
}

function assertClose(actual: number[], expected: number[], rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: number of steps`);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) / Math.abs(expected[i]!);
    assert.ok(err <= rel, `${what}: loss ${i + 1} is ${actual[i]}, uninterrupted ${expected[i]} (relative error ${err.toExponential(2)} > ${rel})`);
  }
}

/** Train the first 3 steps under `save`, return the step-3 checkpoint. */
async function saveAt3(save: string[]): Promise<{ path: string; losses: number[] }> {
  const result = await train(config(save), { stopAt: 3 });
  assert.ok(result.checkpoint !== undefined);
  return { path: result.checkpoint, losses: result.steps.map((s) => s.loss) };
}

/** Resume `path` under `load` (fresh folders for its own checkpoints) and return the losses of steps 4–6. */
async function resume(path: string, load: string[]): Promise<number[]> {
  const result = await train(config(load), { resume: path });
  assert.deepEqual(result.steps.map((s) => s.step), [4, 5, 6]);
  return result.steps.map((s) => s.loss);
}

describe('a checkpoint resumes under any layout and ZeRO stage', () => {
  let uninterrupted: number[] = [];
  before(async () => {
    uninterrupted = (await train(config([]))).steps.map((s) => s.loss);
  });

  describe('saved at sp=4 (hp=2, cp=2), zeroStage 3', () => {
    let saved: { path: string; losses: number[] };
    before(async () => {
      saved = await saveAt3(['parallel.hp=2', 'parallel.cp=2', 'optim.zeroStage=3']);
    });
    it('writes whole tensors and records the layout it was saved under', () => {
      assertClose(saved.losses, uninterrupted.slice(0, 3), 1e-5, 'steps 1–3 at sp=4, stage 3');
      const state = readTrainerState(saved.path);
      assert.equal(state.zeroStage, 3);
      assert.equal(state.zeroShardGroup, 'world');
      assert.match(state.layout, /hp=2 cp=2/);
      const model = readSafetensors(join(saved.path, 'model.safetensors')).tensors;
      assert.deepEqual(model.get('tok_embeddings')!.shape, [257, 32]);
      assert.deepEqual(model.get('layers.1.mlp.w2')!.shape, [32, 64]);
    });
    it('resumed at sp=2 (cp=2), zeroStage 1', async () => {
      assertClose(await resume(saved.path, ['parallel.cp=2', 'optim.zeroStage=1']), uninterrupted.slice(3), 1e-5, 'resumed at sp=2, stage 1');
    });
    it('resumed at one rank', async () => {
      assertClose(await resume(saved.path, []), uninterrupted.slice(3), 1e-5, 'resumed at one rank');
    });
  });

  describe('F13: saved with 4 shards, loaded with 2 and with 8', () => {
    let saved: { path: string; losses: number[] };
    before(async () => {
      saved = await saveAt3(['parallel.hp=2', 'parallel.cp=2', 'optim.zeroStage=2']);
    });
    it('2 shards (cp=2, zeroStage 3) continue the loss curve', async () => {
      assertClose(await resume(saved.path, ['parallel.cp=2', 'optim.zeroStage=3']), uninterrupted.slice(3), 1e-5, '2 shards');
    });
    it('8 shards (hp=2, cp=4, zeroStage 3) continue the loss curve', async () => {
      assertClose(await resume(saved.path, ['parallel.hp=2', 'parallel.cp=4', 'optim.zeroStage=3']), uninterrupted.slice(3), 1e-5, '8 shards');
    });
  });

  it('shards over sp, replicated over dp: dp=2 × cp=2 (2 shards) continues a run saved at cp=2, batchSize=2, zeroStage 3 over the world', async () => {
    const twoPerStep = ['train.batchSize=2'];
    const reference = (await train(config(twoPerStep))).steps.map((s) => s.loss);
    const saved = await saveAt3([...twoPerStep, 'parallel.cp=2', 'optim.zeroStage=3']);
    assertClose(saved.losses, reference.slice(0, 3), 1e-5, 'steps 1–3');
    const resumed = await resume(saved.path, ['parallel.dp=2', 'parallel.cp=2', 'optim.zeroStage=3', 'optim.zeroShardGroup=sp']);
    assertClose(resumed, reference.slice(3), 1e-5, 'resumed at dp=2 × cp=2 over sp');
  });

  describe('a checkpoint that does not fit is refused before any rank starts', () => {
    let saved: { path: string; losses: number[] };
    before(async () => {
      saved = await saveAt3(['parallel.cp=2', 'optim.zeroStage=3']);
    });
    it('a truncated tensor file, naming the file', async () => {
      const copy = join(root, 'truncated');
      mkdirSync(copy);
      for (const f of ['model.safetensors', 'optimizer.safetensors', 'trainer.json']) copyFileSync(join(saved.path, f), join(copy, f));
      truncateSync(join(copy, 'model.safetensors'), statSync(join(copy, 'model.safetensors')).size - 100);
      await assert.rejects(train(config(['optim.zeroStage=1']), { resume: copy }), (e: Error) =>
        e instanceof ConfigError && e.message.includes(`cannot resume from ${copy}`) && e.message.includes('model.safetensors'));
    });
    it('tensors of another model shape, naming the tensor and both shapes', async () => {
      const other = await train(config(['model.ffnDim=48', 'train.steps=1', 'optim.warmupSteps=1']));
      const copy = join(root, 'foreign');
      mkdirSync(copy);
      copyFileSync(join(other.checkpoint!, 'model.safetensors'), join(copy, 'model.safetensors'));
      for (const f of ['optimizer.safetensors', 'trainer.json']) copyFileSync(join(saved.path, f), join(copy, f));
      await assert.rejects(train(config([]), { resume: copy }), (e: Error) =>
        e instanceof ConfigError && /"layers\.0\.mlp\.w1" has shape \[48, 32\], the model needs \[64, 32\]/.test(e.message));
      assert.ok(readFileSync(join(copy, 'trainer.json'), 'utf8').includes('"ffnDim": 64'));
    });
  });
});
