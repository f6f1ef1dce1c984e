import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { launchRanks } from '../src/comm/backends.js';
import type { Sequence } from '../src/data/packing.js';
import { Rng } from '../src/tensor/rng.js';
import { loadConfig } from '../src/train/config.js';
import { train } from '../src/train/train.js';
import { ConfigError } from '../src/errors.js';
import { assertClose } from './helpers/assert-close.js';
import type { TrainStepArgs } from './fixtures/train-step.js';

/*
 * Training on packed documents (data.packing = "documents"): the loss curve of every layout
 * equals one rank, and no attention weight crosses a document boundary.
 */

const root = mkdtempSync(join(tmpdir(), 'loongtrain-documents-'));
after(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;

/** Short documents of 3–70 characters (many shorter than a zigzag chunk), one per JSONL line. */
function writeCorpus(): string {
  const words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches at dawn'.split(' ');
  const rng = new Rng(42);
  const lines: string[] = [];
  for (let i = 0; i < 400; i++) {
    let text = '';
    const target = 3 + rng.int(68);
    while (text.length < target) text += (text === '' ? '' : ' ') + words[rng.int(words.length)];
    lines.push(JSON.stringify({ text: text.slice(0, target) }));
  }
  const path = join(root, 'docs.jsonl');
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}

let corpus = '';
before(() => {
  corpus = writeCorpus();
});

/** The overrides of a small model on the documents corpus, writing into `dir`. */
function overridesIn(dir: string, extra: string[]): string[] {
  return [
    'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64',
    'train.seqLen=64', 'train.steps=10', 'optim.warmupSteps=2', 'optim.lr=1e-2', 'optim.minLr=1e-3',
    'data.source=files', `data.path=${corpus}`, 'data.packing=documents',
    'log.progress=none', `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`,
    ...extra,
  ];
}

function config(extra: string[]) {
  return loadConfig(undefined, overridesIn(join(root, `run-${runs++}`), extra));
}

describe('training with packing = "documents" matches one rank', () => {
  let single: number[] = [];
  before(async () => {
    single = (await train(config([]))).steps.map((s) => s.loss);
  });

  it('one rank learns, and its losses differ from concat packing (the masks and ignored labels are in effect)', async () => {
    assert.equal(single.length, 10);
    assert.ok(single[9]! < single[0]! - 0.3, `loss ${single[0]} → ${single[9]} should drop`);
    const concat = (await train(config(['data.packing=concat']))).steps.map((s) => s.loss);
    assert.ok(Math.abs(concat[0]! - single[0]!) > 1e-4, `concat ${concat[0]} vs documents ${single[0]}`);
  });

  for (const layout of [
    ['parallel.hp=2', 'parallel.cp=2'],
    ['parallel.hp=1', 'parallel.cp=4'],
    ['parallel.preset=loongtrain', 'parallel.sp=4', 'parallel.hp=1', 'parallel.innerRingSize=2'],
    ['parallel.hp=2', 'parallel.cp=2', 'parallel.sharding=balanced', 'parallel.balanceChunks=4'],
    ['parallel.hp=2', 'parallel.cp=2', 'checkpoint.policy=selective++', 'checkpoint.fraction=1'],
  ]) {
    it(`${layout.join(' ')}: 10 losses within 1e-5 relative, attention imbalance logged`, async () => {
      const result = await train(config(layout));
      assertClose(result.steps.map((s) => s.loss), single, 1e-5, layout.join(' '));
      for (const s of result.steps) assert.ok(s.attentionImbalance >= 1 && Number.isFinite(s.attentionImbalance), `step ${s.step}: imbalance ${s.attentionImbalance}`);
    });
  }
});

describe('resuming a packed-documents run', () => {
  it('continues exactly under another layout, and refuses a config with another packing, naming both', async () => {
    const full = (await train(config(['train.steps=4']))).steps.map((s) => s.loss);
    const dir = join(root, `run-${runs++}`);
    const cfg = loadConfig(undefined, overridesIn(dir, ['train.steps=4']));
    await train(cfg, { stopAt: 2 });
    const resumed = await train(loadConfig(undefined, overridesIn(dir, ['train.steps=4', 'parallel.hp=2', 'parallel.cp=2'])), { resume: cfg.save.dir });
    assertClose(resumed.steps.map((s) => s.loss), full.slice(2), 1e-5, 'resumed at hp2 × cp2');
    const concat = loadConfig(undefined, overridesIn(dir, ['train.steps=4', 'data.packing=concat']));
    await assert.rejects(train(concat, { resume: cfg.save.dir }), (e: unknown) => e instanceof ConfigError && /data\.packing: checkpoint documents, config concat/.test(e.message) && /data\.positions: checkpoint document, config sequence/.test(e.message));
  });
});

type StepResult = { loss: number; grads: Float32Array };

/** One forward/backward of `batch` under `layout`, every rank's loss checked equal. */
async function step(layout: string[], batch: Sequence[]): Promise<number> {
  const cfg = loadConfig(undefined, ['model.dim=16', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=32', 'train.seqLen=32', 'data.packing=documents', ...layout]);
  const world = cfg.parallel.dp * cfg.parallel.hp * cfg.parallel.cp;
  const args: TrainStepArgs = { config: cfg, batch };
  const results = (await launchRanks({ world, entry: new URL('./fixtures/train-step.js', import.meta.url).href, args, timeoutMs: 20000, arenaBytes: 64 * 2 ** 20 })) as StepResult[];
  for (const r of results) assert.equal(r.loss, results[0]!.loss, 'every rank reports the same loss');
  return results[0]!.loss;
}

describe('no attention weight crosses a document boundary', () => {
  it('changing document 1\'s tokens leaves the loss of document 2 bit-identical, on one rank and at hp2 × cp2', async () => {
    // Documents [0, 13) and [13, 32); only document 2's labels count.
    const cuSeqlens = Int32Array.of(0, 13, 32);
    const rng = new Rng(3);
    const tokens = Int32Array.from({ length: 32 }, () => rng.int(256));
    const positions = Int32Array.from({ length: 32 }, (_, i) => (i < 13 ? i : i - 13));
    const labels = Int32Array.from({ length: 32 }, (_, i) => (i >= 13 && i < 31 ? tokens[i + 1]! : -1));
    const changed = tokens.slice();
    for (let i = 0; i < 13; i++) changed[i] = (changed[i]! + 1 + i) % 256;
    for (const layout of [[], ['parallel.hp=2', 'parallel.cp=2']]) {
      const a = await step(layout, [{ tokens, labels, positions, cuSeqlens }]);
      const b = await step(layout, [{ tokens: changed, labels, positions, cuSeqlens }]);
      assert.equal(b, a, `${layout.join(' ') || 'one rank'}: document 2's loss is bit-identical`);
      // The same change with both tokens in one document does change it: the test can fail.
      const one = await step(layout, [{ tokens, labels, positions: Int32Array.from({ length: 32 }, (_, i) => i), cuSeqlens: Int32Array.of(0, 32) }]);
      const oneChanged = await step(layout, [{ tokens: changed, labels, positions: Int32Array.from({ length: 32 }, (_, i) => i), cuSeqlens: Int32Array.of(0, 32) }]);
      assert.notEqual(oneChanged, one, `${layout.join(' ') || 'one rank'}: without the boundary the change reaches document 2`);
    }
  });
});
