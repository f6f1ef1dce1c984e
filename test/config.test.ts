import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { packingOptions } from '../src/data/packing.js';
import { configToToml, loadConfig, parseConfig, shardingOptions } from '../src/train/config.js';
import { configError } from './helpers/config-error.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const tmp = mkdtempSync(join(tmpdir(), 'loongtrain-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function tomlFile(name: string, text: string): string {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
}


describe('defaults and files', () => {
  test('no file and an empty file give every default', (t) => {
    // The defaults themselves, not a backend chosen through the environment (the suite also runs per backend).
    const env = process.env.LOONGTRAIN_KERNELS;
    delete process.env.LOONGTRAIN_KERNELS;
    t.after(() => {
      if (env !== undefined) process.env.LOONGTRAIN_KERNELS = env;
    });
    const cfg = loadConfig(undefined, []);
    assert.deepEqual(cfg, loadConfig(tomlFile('empty.toml', ''), []));
    assert.deepEqual(cfg.model, { vocabSize: 257, dim: 64, layers: 2, heads: 4, kvHeads: 2, ffnDim: 176, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true, initStd: 0.02 });
    assert.deepEqual(cfg.data, { source: 'brown', tokenizer: 'byte' });
    assert.deepEqual(cfg.parallel, { dp: 1, hp: 1, cp: 1, innerRingSize: 1, placement: 'head-first' });
    assert.deepEqual(cfg.optim, { lr: 3e-3, minLr: 3e-4, warmupSteps: 10, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1, zeroStage: 0, zeroShardGroup: 'world' });
    assert.deepEqual(cfg.train, { steps: 100, seqLen: 256, batchSize: 1, seed: 1234, arenaMiB: 512, commTimeoutMs: 60000, kernels: 'auto', backend: 'auto', causal: true, maxNonFiniteSteps: 0 });
    assert.deepEqual(cfg.checkpoint, { policy: 'none', fraction: 1 });
    // One folder per run: checkpoints, metrics and the effective config together.
    assert.deepEqual(cfg.run, { dir: 'runs/default' });
    assert.deepEqual(cfg.save, { dir: join('runs/default', 'checkpoints'), every: 0, keep: 2 });
    assert.deepEqual(cfg.log, { dir: 'runs/default', progress: 'auto', trace: false, tensorboard: false });
    const apart = loadConfig(undefined, ['run.dir=runs/a', 'save.dir=/ck']);
    assert.deepEqual([apart.save.dir, apart.log.dir], ['/ck', 'runs/a'], 'save.dir and log.dir set a folder apart');
  });

  test('vocabSize comes from the tokenizer unless given', () => {
    assert.equal(parseConfig({ data: { tokenizer: 'gpt2' } }).model.vocabSize, 50257);
    assert.equal(parseConfig({ model: { vocabSize: 300 } }).model.vocabSize, 300);
  });

  test('configs/demo.toml is the README demo', () => {
    const cfg = loadConfig(join(ROOT, 'configs/demo.toml'), []);
    assert.deepEqual(cfg.parallel, { dp: 1, hp: 2, cp: 2, innerRingSize: 2, placement: 'head-first' });
    assert.deepEqual(cfg.data, { source: 'brown', tokenizer: 'byte' });
    assert.equal(cfg.model.vocabSize, 257, 'vocabulary from the byte tokenizer');
    assert.equal(cfg.train.seqLen % (2 * cfg.parallel.hp * cfg.parallel.cp), 0, 'seqLen shards over sp = 4');
    assert.equal(cfg.save.dir, 'runs/demo/checkpoints');
    assert.equal(cfg.log.dir, 'runs/demo');
  });

  test('configToToml round-trips the effective config', () => {
    const cfg = loadConfig(join(ROOT, 'configs/demo.toml'), ['log.peakGflopsPerRank=12.5', 'parallel.innerRingSize=2']);
    assert.deepEqual(parseConfig(parseToml(configToToml(cfg))), cfg);
  });

  test('a missing file or bad TOML names the file (and the line)', () => {
    configError(() => loadConfig(join(tmp, 'missing.toml'), []), 'missing.toml does not exist');
    const bad = tomlFile('bad.toml', '[train]\nsteps = = 3\n');
    configError(() => loadConfig(bad, []), 'bad.toml is not valid TOML', '2:');
  });
});

describe('overrides', () => {
  test('TOML values, bare words, later overrides win, new sections', () => {
    const file = tomlFile('o.toml', '[train]\nsteps = 7\n');
    const cfg = loadConfig(file, [
      'train.steps=50',
      'optim.lr=1e-2',
      'train.causal=false',
      'parallel.placement=context-first',
      'data.path="my data/x.txt"',
      'data.source=files',
      'train.seed=9',
      'train.seed = 10',
    ]);
    assert.equal(cfg.train.steps, 50);
    assert.equal(cfg.optim.lr, 1e-2);
    assert.equal(cfg.train.causal, false);
    assert.equal(cfg.parallel.placement, 'context-first');
    assert.equal(cfg.data.path, 'my data/x.txt');
    assert.equal(cfg.data.source, 'files');
    assert.equal(cfg.train.seed, 10);
  });

  test('a malformed override is refused with the expected form', () => {
    configError(() => loadConfig(undefined, ['train.steps']), '--set "train.steps"', 'section.key=value');
    configError(() => loadConfig(undefined, ['steps=3']), 'section.key=value');
    configError(() => loadConfig(undefined, ['a.b.c=3']), 'section.key=value');
    configError(() => loadConfig(tomlFile('s.toml', 'train = 3\n'), ['train.steps=3']), 'train is not a table');
  });

  test('an override with a bad value names the key, the value and the origin', () => {
    configError(() => loadConfig(undefined, ['train.steps=lots']), 'the default config + --set train.steps=lots', 'train.steps = "lots"', 'expected an integer');
  });
});

describe('validation errors', () => {
  test('unknown key: full path, allowed keys of the section, nearest name', () => {
    const msg = configError(() => parseConfig({ train: { stepz: 5 } }), 'unknown key train.stepz', '(did you mean steps?)', 'allowed keys of [train]: steps, seqLen, batchSize, seed');
    assert.ok(msg.includes('causal'));
  });

  test('balanced sharding\'s seqLen rule is checked before any rank starts, naming the rule and the nearest valid lengths', () => {
    configError(
      () => loadConfig(undefined, ['parallel.hp=1', 'parallel.cp=4', 'parallel.sharding=balanced', 'parallel.balanceChunks=3', 'train.seqLen=64']),
      'train.seqLen = 64 is invalid: it must be a multiple of 12, from cp·balanceChunks = 12', 'nearest valid lengths: 60 or 72',
    );
    assert.equal(loadConfig(undefined, ['parallel.hp=1', 'parallel.cp=4', 'parallel.sharding=balanced', 'parallel.balanceChunks=4', 'train.seqLen=64']).parallel.balanceChunks, 4);
  });

  test('unknown section lists the sections', () => {
    configError(() => parseConfig({ modle: {} }), 'unknown section [modle]', 'did you mean model?', 'model, data, parallel, optim, train, checkpoint, run, save, log');
  });

  test('wrong types and ranges name the key, the value and what is allowed', () => {
    configError(() => parseConfig({ train: { steps: '10' } }), 'train.steps = "10"', 'expected an integer');
    configError(() => parseConfig({ optim: { lr: '1e-3' } }), 'optim.lr = "1e-3"', 'expected a number');
    configError(() => parseConfig({ train: { steps: 1.5 } }), 'train.steps = 1.5', 'expected an integer');
    configError(() => parseConfig({ train: { steps: 0 } }), 'train.steps = 0', 'must be ≥ 1');
    configError(() => parseConfig({ optim: { lr: 0 } }), 'optim.lr = 0', 'must be > 0');
    configError(() => parseConfig({ optim: { beta2: 1 } }), 'optim.beta2 = 1', 'must be < 1');
    configError(() => parseConfig({ train: { arenaMiB: 8192 } }), 'train.arenaMiB = 8192', 'must be ≤ 4096');
    configError(() => parseConfig({ train: { causal: 'yes' } }), 'train.causal = "yes"', 'true or false');
    configError(() => parseConfig({ model: 3 }), '[model] = 3', 'expected a table');
    configError(() => parseConfig({ log: { dir: '' } }), 'log.dir = ""', 'must not be empty');
  });

  test('enums list their values', () => {
    configError(() => parseConfig({ parallel: { placement: 'ring-first' } }), 'parallel.placement = "ring-first"', '"head-first", "context-first"');
    configError(() => parseConfig({ data: { tokenizer: 'bpe' } }), 'data.tokenizer = "bpe"', '"byte", "gpt2"');
    configError(() => parseConfig({ data: { source: 'web' } }), '"brown", "files"');
    configError(() => parseConfig({ train: { kernels: 'cuda' } }), 'use one of "reference"');
    configError(() => parseConfig({ log: { progress: 'fancy' } }), '"auto", "bar", "plain", "none"');
  });

  test('several problems are reported together', () => {
    const msg = configError(() => parseConfig({ train: { steps: -1, stepz: 1 }, optim: { lr: 'fast' } }, 'x.toml'), 'x.toml: 3 problems');
    for (const f of ['train.steps = -1', 'unknown key train.stepz', 'optim.lr = "fast"']) assert.ok(msg.includes(f), f);
  });

  test('data.packing, data.positions, parallel.sharding and parallel.balanceChunks', () => {
    // Unset, they stay out of the config (it prints as before) and resolve to their defaults.
    const plain = parseConfig({});
    assert.equal('packing' in plain.data || 'positions' in plain.data || 'sharding' in plain.parallel || 'balanceChunks' in plain.parallel, false);
    assert.deepEqual(packingOptions(plain.data), { packing: 'concat', positions: 'sequence' });
    assert.deepEqual(shardingOptions(plain.parallel), { sharding: 'zigzag', balanceChunks: 8 });
    const docs = parseConfig({ data: { packing: 'documents' } });
    assert.deepEqual(packingOptions(docs.data), { packing: 'documents', positions: 'document' });
    assert.deepEqual(packingOptions(parseConfig({ data: { packing: 'documents', positions: 'sequence' } }).data), { packing: 'documents', positions: 'sequence' });
    const set = loadConfig(undefined, ['data.packing=documents', 'data.positions=document', 'parallel.sharding=balanced', 'parallel.balanceChunks=4']);
    assert.deepEqual([set.data.packing, set.data.positions, set.parallel.sharding, set.parallel.balanceChunks], ['documents', 'document', 'balanced', 4]);
    assert.deepEqual(shardingOptions(set.parallel), { sharding: 'balanced', balanceChunks: 4 });
    assert.deepEqual(parseConfig(parseToml(configToToml(set))), set, 'the keys round-trip through configToToml');

    configError(() => parseConfig({ data: { packing: 'packed' } }), 'data.packing = "packed"', '"concat", "documents"');
    configError(() => parseConfig({ data: { positions: 'absolute' } }), 'data.positions = "absolute"', '"document", "sequence"');
    configError(() => parseConfig({ parallel: { sharding: 'striped' } }), 'parallel.sharding = "striped"', '"zigzag", "balanced"');
    configError(() => parseConfig({ parallel: { balanceChunks: 0 } }), 'parallel.balanceChunks = 0', '≥ 1');
    configError(() => parseConfig({ parallel: { balanceChunks: 2.5 } }), 'parallel.balanceChunks = 2.5', 'an integer');
    // positions = "document" needs documents: with concat (given or by default) it names both keys and what is valid.
    for (const data of [{ positions: 'document' }, { packing: 'concat', positions: 'document' }]) {
      configError(() => parseConfig({ data }), '1 problem', 'data.positions = "document"', 'data.packing = "concat"', 'data.packing = "documents"', 'data.positions = "sequence"');
    }
    const msg = configError(() => loadConfig(undefined, ['data.positions=document', 'optim.minLr=1']), '2 problems');
    assert.ok(msg.includes('data.positions') && msg.includes('optim.minLr'), 'reported with the other cross-field problems');
    configError(() => parseConfig({ data: { packings: 'documents' } }), 'unknown key data.packings', '(did you mean packing?)');
  });

  test('cross-field rules', () => {
    configError(() => parseConfig({ data: { source: 'files' } }), 'data.path is required when data.source = "files"');
    configError(() => parseConfig({ optim: { lr: 1e-3, minLr: 2e-3 } }), 'optim.minLr = 0.002', 'optim.lr = 0.001');
    // A warmup longer than the run is not an error: the run warms up over all of it (train() says so).
    assert.equal(parseConfig({ train: { steps: 5 } }).optim.warmupSteps, 10);
    configError(() => parseConfig({ model: { vocabSize: 100 } }), 'model.vocabSize = 100', '257');
    configError(() => parseConfig({ model: { dim: 60, heads: 4 } }), 'headDim', '15');
    configError(() => parseConfig({ parallel: { cp: 4, innerRingSize: 3 } }), 'parallel.innerRingSize = 3', '1, 2, 4');
    configError(() => parseConfig({ parallel: { hp: 4 }, model: { heads: 4, kvHeads: 2 }, train: { seqLen: 100 } }), 'train.seqLen = 100', '2·sp = 8');
    configError(() => parseConfig({ parallel: { hp: 3 } }), 'parallel.hp = 3', 'nearest valid hp');
    const msg = configError(() => parseConfig({ optim: { lr: 1e-3, minLr: 2e-3 }, model: { vocabSize: 100 } }), '2 problems');
    assert.ok(msg.includes('minLr') && msg.includes('vocabSize'));
  });
});
