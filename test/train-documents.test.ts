import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { launchRanks } from '../src/comm/backends.js';
import { splitStreams } from '../src/data/heldout.js';
import { packingOptions, SequenceSampler, sequencePosition, type Sequence } from '../src/data/packing.js';
import { loadDocuments } from '../src/data/sources.js';
import { createTokenizer } from '../src/data/tokenizer.js';
import { SequenceLayout } from '../src/parallel/sequence-layout.js';
import { Rng } from '../src/tensor/rng.js';
import { evalOptions, loadConfig, shardingOptions, type Config } from '../src/train/config.js';
import { train } from '../src/train/train.js';
import { ConfigError } from '../src/errors.js';
import { assertClose } from './helpers/assert-close.js';
import type { TokenLossesArgs, TokenLossesResult } from './fixtures/token-losses.js';

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

/**
 * The SequenceLayout of each step's sequence, rebuilt here as train() samples it (the training
 * split of the corpus, SequenceSampler, sequencePosition) from that sequence's cu_seqlens: one
 * sequence per step (dp = batchSize = 1), so the logged max / mean over the ranks is the layout's.
 */
function stepLayouts(cfg: Config): SequenceLayout[] {
  assert.equal(cfg.parallel.dp * cfg.train.batchSize, 1, 'one sequence per step');
  const split = splitStreams(loadDocuments(cfg.data).documents, createTokenizer(cfg.data.tokenizer), evalOptions(cfg).valFraction);
  const sampler = new SequenceSampler(split.train.stream, cfg.train.seqLen, cfg.train.seed, { ...packingOptions(cfg.data), docStarts: split.train.docStarts });
  return Array.from({ length: cfg.train.steps }, (_, step) => {
    const seq = sampler.globalSequence(sequencePosition(step, 1, 1, 0, 0));
    assert.ok(seq.cuSeqlens.length > 2, `step ${step + 1}: several documents`);
    return new SequenceLayout({ hp: cfg.parallel.hp, cp: cfg.parallel.cp, seqLen: cfg.train.seqLen, causal: cfg.train.causal, cuSeqlens: seq.cuSeqlens, ...shardingOptions(cfg.parallel) });
  });
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
    it(`${layout.join(' ')}: 10 losses within 1e-5 relative, each step's attention imbalance that of its batch's SequenceLayout`, async () => {
      const cfg = config(layout);
      const result = await train(cfg);
      assertClose(result.steps.map((s) => s.loss), single, 1e-5, layout.join(' '));
      const want = stepLayouts(cfg).map((l) => l.imbalance());
      assert.deepEqual(result.steps.map((s) => s.attentionImbalance), want, `${layout.join(' ')}: each step's imbalance is its batch's SequenceLayout.imbalance()`);
      if (shardingOptions(cfg.parallel).sharding === 'zigzag') assert.ok(want.some((x) => x > 1), `zigzag with short documents is unbalanced in some step: ${want.join(', ')}`);
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

/**
 * Each sequence's training loss and per-token losses (test/fixtures/token-losses.ts) under
 * `layout`, one launch for all of them; every rank's results checked equal.
 */
async function scored(layout: string[], sequences: Sequence[]): Promise<TokenLossesResult> {
  const cfg = loadConfig(undefined, ['model.dim=16', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=32', 'train.seqLen=32', 'data.packing=documents', ...layout]);
  const world = cfg.parallel.dp * cfg.parallel.hp * cfg.parallel.cp;
  const args: TokenLossesArgs = { config: cfg, sequences };
  const results = (await launchRanks({ world, entry: new URL('./fixtures/token-losses.js', import.meta.url).href, args, timeoutMs: 20000, arenaBytes: 64 * 2 ** 20 })) as TokenLossesResult[];
  assert.equal(results.length, world);
  for (const r of results) assert.deepEqual(r, results[0], 'every rank reports the same losses');
  return results[0]!;
}

describe('no attention weight crosses a document boundary', () => {
  it('changing document 1\'s tokens leaves every per-token loss of document 2 bit-identical, on one rank, hp2 × cp2 and loongtrain cp 4 with w = 2', async () => {
    // Documents [0, 13) and [13, 32); only document 2's labels count.
    const cuSeqlens = Int32Array.of(0, 13, 32);
    const rng = new Rng(3);
    const tokens = Int32Array.from({ length: 32 }, () => rng.int(256));
    const positions = Int32Array.from({ length: 32 }, (_, i) => (i < 13 ? i : i - 13));
    const labels = Int32Array.from({ length: 32 }, (_, i) => (i >= 13 && i < 31 ? tokens[i + 1]! : -1));
    const changed = tokens.slice();
    for (let i = 0; i < 13; i++) changed[i] = (changed[i]! + 1 + i) % 256;
    // The same change with both documents made one (positions 0 … 31): it must reach document 2, or the test could not fail.
    const whole = { positions: Int32Array.from({ length: 32 }, (_, i) => i), cuSeqlens: Int32Array.of(0, 32) };
    const sequences: Sequence[] = [
      { tokens, labels, positions, cuSeqlens },
      { tokens: changed, labels, positions, cuSeqlens },
      { tokens, labels, ...whole },
      { tokens: changed, labels, ...whole },
    ];
    const doc2 = (xs: number[]): number[] => xs.slice(13, 31);
    for (const layout of [[], ['parallel.hp=2', 'parallel.cp=2'], ['parallel.preset=loongtrain', 'parallel.sp=4', 'parallel.hp=1', 'parallel.innerRingSize=2']]) {
      const name = layout.join(' ') || 'one rank';
      const { losses, tokenLosses } = await scored(layout, sequences);
      const [a, b, one, oneChanged] = tokenLosses.map(doc2) as [number[], number[], number[], number[]];
      assert.equal(a.length, 18);
      assert.ok(a.every(Number.isFinite), `${name}: document 2's 18 labelled tokens each have a loss`);
      assert.ok(tokenLosses[0]!.every((x, i) => Number.isNaN(x) === (i < 13 || i === 31)), `${name}: only document 2's labels are scored`);
      assert.deepEqual(b, a, `${name}: every per-token loss of document 2 is bit-identical`);
      assert.equal(losses[1], losses[0], `${name}: document 2's loss is bit-identical`);
      // Without the boundary the change reaches every token of document 2 (each attends to document 1's tokens).
      a.forEach((_, t) => assert.notEqual(oneChanged[t], one[t], `${name}: without the boundary, token ${13 + t}'s loss changes`));
      assert.notEqual(losses[3], losses[2], `${name}: without the boundary the change reaches document 2's loss`);
    }
  });
});
