import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { RankFailedError } from '../src/comm/launcher.js';
import { ConfigError } from '../src/errors.js';
import { loadConfig } from '../src/train/config.js';
import { train } from '../src/train/train.js';
import { assertClose } from './helpers/assert-close.js';

const root = mkdtempSync(join(tmpdir(), 'loongtrain-train-'));
after(() => rmSync(root, { recursive: true, force: true }));
let runs = 0;

/** A small model on the Brown corpus; every run gets its own log and checkpoint folders. */
function config(overrides: string[] = []) {
  const dir = join(root, `run-${runs++}`);
  return loadConfig(undefined, [
    'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64',
    'train.seqLen=64', 'train.steps=10', 'optim.warmupSteps=2', 'optim.lr=1e-2', 'optim.minLr=1e-3',
    'log.progress=none', `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`,
    ...overrides,
  ]);
}

async function losses(overrides: string[], opts: Parameters<typeof train>[1] = {}): Promise<number[]> {
  return (await train(config(overrides), opts)).steps.map((s) => s.loss);
}

describe('training matches one rank on every layout', () => {
  let single: number[] = [];
  before(async () => {
    single = await losses([]);
  });
  it('one rank learns (loss drops over 10 steps)', () => {
    assert.equal(single.length, 10);
    assert.ok(single[9]! < single[0]! - 0.3, `loss ${single[0]} → ${single[9]} should drop`);
  });
  for (const layout of [
    ['parallel.hp=2', 'parallel.cp=2'],
    ['parallel.hp=4', 'parallel.cp=1'],
    ['parallel.hp=1', 'parallel.cp=4'],
    ['parallel.hp=2', 'parallel.cp=2', 'parallel.placement=context-first'],
    ['parallel.hp=4', 'parallel.cp=1', 'model.kvHeads=1'],
  ]) {
    it(layout.join(' '), async () => {
      const extra = layout.filter((s) => s.startsWith('model.'));
      const reference = extra.length === 0 ? single : await losses(extra);
      assertClose(await losses(layout), reference, 1e-4, layout.join(' '));
    });
  }
  for (const layout of [
    ['parallel.hp=2', 'parallel.cp=4', 'parallel.innerRingSize=2', 'parallel.placement=context-first'],
    ['parallel.preset=loongtrain', 'parallel.sp=8', 'parallel.hp=1', 'parallel.innerRingSize=2'],
    ['parallel.preset=ulysses', 'parallel.sp=4', 'parallel.dp=2'],
    ['parallel.preset=ring', 'parallel.sp=8'],
  ]) {
    it(`8 ranks: ${layout.join(' ')}`, async () => {
      const dp = layout.includes('parallel.dp=2') ? 2 : 1;
      const reference = dp === 1 ? single.slice(0, 4) : await losses(['train.batchSize=2'], { stopAt: 4 });
      assertClose(await losses(layout, { stopAt: 4 }), reference, 1e-4, layout.join(' '));
    });
  }
  it('dp=2 × (hp=1, cp=2) equals one rank with two sequences per step', async () => {
    const reference = await losses(['train.batchSize=2', 'train.steps=5']);
    assertClose(await losses(['parallel.dp=2', 'parallel.cp=2', 'train.steps=5']), reference, 1e-4, 'dp=2');
  });
});

describe('checkpoints and resume', () => {
  it('a run stopped after step 3 and resumed gives exactly the losses of an uninterrupted run', async () => {
    const full = await losses(['train.steps=6']);
    const cfg = config(['train.steps=6']);
    const first = await train(cfg, { stopAt: 3 });
    assert.ok(first.checkpoint !== undefined && existsSync(join(first.checkpoint, 'model.safetensors')));
    const second = await train(cfg, { resume: cfg.save.dir });
    assert.deepEqual([...first.steps, ...second.steps].map((s) => s.loss), full);
    assert.deepEqual(second.steps.map((s) => s.step), [4, 5, 6]);
  });

  it('a checkpoint saved under hp=2, cp=2 resumes on one rank, continuing the loss curve', async () => {
    const full = await losses(['train.steps=6']);
    const cfg = config(['train.steps=6', 'parallel.hp=2', 'parallel.cp=2']);
    await train(cfg, { stopAt: 3 });
    const resumed = await train({ ...cfg, parallel: { ...cfg.parallel, hp: 1, cp: 1, innerRingSize: 1 } }, { resume: cfg.save.dir });
    assertClose(resumed.steps.map((s) => s.loss), full.slice(3), 1e-5, 'resumed on one rank');
  });

  it('resuming with a different model shape is refused, naming what differs', async () => {
    const cfg = config(['train.steps=2']);
    await train(cfg);
    const other = config(['train.steps=4', 'model.dim=64', `save.dir=${cfg.save.dir}`]);
    await assert.rejects(train(other, { resume: cfg.save.dir }), (e: Error) => e instanceof ConfigError && /model\.dim: checkpoint 32, config 64/.test(e.message));
  });

  it('a resumed run must consume data at the same rate (dp × batchSize) and with the same seed', async () => {
    const cfg = config(['train.steps=4']);
    await train(cfg, { stopAt: 2 });
    await assert.rejects(train({ ...cfg, train: { ...cfg.train, batchSize: 2 } }, { resume: cfg.save.dir }), (e: Error) =>
      e instanceof ConfigError && /sequences per step \(parallel\.dp × train\.batchSize\): checkpoint 1, config 2/.test(e.message));
    await assert.rejects(train({ ...cfg, train: { ...cfg.train, seed: 99 } }, { resume: cfg.save.dir }), (e: Error) =>
      e instanceof ConfigError && /train\.seed: checkpoint 1234, config 99/.test(e.message));
  });

  it('a fresh run refuses a checkpoint folder holding an earlier run, and --overwrite replaces it', async () => {
    const cfg = config(['train.steps=2']);
    await train(cfg);
    // Another log folder, so that the checkpoints are what is refused (test/robustness.test.ts refuses the metrics).
    const elsewhere = { ...cfg, log: { ...cfg.log, dir: `${cfg.log.dir}-other` } };
    await assert.rejects(train(elsewhere), (e: Error) => e instanceof ConfigError && /already holds 1 checkpoint\(s\) of an earlier run \(newest: step 2\); continue that run with --resume/.test(e.message));
    const again = await train({ ...cfg, train: { ...cfg.train, steps: 1 }, optim: { ...cfg.optim, warmupSteps: 1 } }, { overwrite: true });
    assert.match(again.checkpoint ?? '', /step-00000001$/);
    const { listCheckpoints } = await import('../src/train/checkpoint.js');
    assert.deepEqual(listCheckpoints(cfg.save.dir).map((c) => c.step), [1]);
  });

  it('--resume without a checkpoint says so', async () => {
    const cfg = config();
    await assert.rejects(train(cfg, { resume: cfg.save.dir }), (e: Error) => e instanceof ConfigError && /no checkpoint in/.test(e.message));
  });
});

describe('invalid settings are rejected before any rank starts', () => {
  const cases: [string, string[], RegExp][] = [
    ['seq not divisible by 2·sp (F4, cp=4 seq=30)', ['parallel.cp=4', 'train.seqLen=30'], /seq must be divisible by 2·sp = 8; nearest valid lengths: 24 or 32/],
    ['seq not divisible by 2·sp (F4, cp=2 seq=33)', ['parallel.cp=2', 'train.seqLen=33'], /seq must be divisible by 2·sp = 4; nearest valid lengths: 32 or 36/],
    ['hp that splits the query→KV grouping (F8)', ['model.dim=48', 'model.heads=6', 'model.kvHeads=3', 'parallel.hp=2'], /parallel\.hp = 2 .*heads = 6.*kvHeads = 3: with hp < kvHeads, hp must divide kvHeads.*nearest valid hp values are 1 and 3/],
    ['hp larger than heads', ['parallel.hp=8', 'train.seqLen=64'], /hp must divide heads; the nearest valid hp values are 2 and 4/],
    ['an sp size without hp and cp (F15)', ['parallel.sp=8'], /parallel\.sp = 8 needs its split into head and context parallel sizes: set parallel\.hp and parallel\.cp with hp × cp = 8 \(hp ∈ \{1, 2, 4, 8\}\)/],
    ['sizes contradicting sp', ['parallel.sp=8', 'parallel.hp=2', 'parallel.cp=2'], /parallel\.hp × parallel\.cp = 2 × 2 = 4 ≠ parallel\.sp = 8/],
    ['a preset contradicted by a size', ['parallel.preset=ulysses', 'parallel.sp=4', 'parallel.cp=2'], /parallel\.cp = 2 contradicts parallel\.preset = "ulysses", which sets cp = 1/],
    ['the loongtrain preset without an inner ring size', ['parallel.preset=loongtrain', 'parallel.sp=8', 'parallel.hp=2'], /preset = "loongtrain" needs parallel\.innerRingSize, a divisor of cp = 4 smaller than cp \(one of 1, 2\)/],
    ['innerRingSize not dividing cp', ['parallel.cp=4', 'parallel.innerRingSize=3'], /innerRingSize = 3 does not divide parallel\.cp = 4; valid values: 1, 2, 4/],
    ['unknown placement', ['parallel.placement=heads-first'], /parallel\.placement = "heads-first" is invalid: use one of "head-first", "context-first"/],
    ['zero cp', ['parallel.cp=0'], /parallel\.cp = 0 is invalid/],
    ['kvHeads not dividing heads', ['model.kvHeads=3'], /kvHeads/],
    ['odd headDim', ['model.dim=36', 'model.heads=4'], /headDim/],
    ['unknown key', ['train.stepz=3'], /unknown key train\.stepz \(did you mean steps\?\)/],
    ['wrong type', ['train.steps=many'], /train\.steps = "many" is invalid: expected an integer/],
    ['unknown kernels', ['train.kernels=fast'], /train\.kernels = "fast" is invalid: use one of "reference"/],
  ];
  for (const [name, overrides, pattern] of cases) {
    it(name, () => {
      assert.throws(() => config(overrides), (e: Error) => e instanceof ConfigError && pattern.test(e.message), `expected ${pattern}`);
    });
  }

  it('a world size that is not dp·hp·cp is rejected by the grid itself, naming the sizes', async () => {
    const { ParallelDims } = await import('../src/parallel/dims.js');
    assert.throws(() => new ParallelDims({ dp: 1, hp: 2, cp: 2, placement: 'head-first' }, 8), /world size 8 ≠ dp·hp·cp = 1·2·2 = 4/);
  });

  it('an arena that cannot hold the model states is refused before launch, with a size that fits', async () => {
    const cfg = config(['model.dim=512', 'model.ffnDim=2048', 'model.heads=8', 'train.arenaMiB=64']);
    await assert.rejects(train(cfg), (e: Error) => e instanceof ConfigError && /train\.arenaMiB = 64 is too small: .* need [\d.]+ MiB per rank; use at least \d+/.test(e.message));
  });

  it('a --stop-at past train.steps is refused before the data is read', async () => {
    const cfg = config();
    await assert.rejects(train(cfg, { stopAt: 11 }), (e: Error) => e instanceof ConfigError && /--stop-at 11 .*\[1, train\.steps = 10\]/.test(e.message));
    assert.equal(existsSync(cfg.log.dir), false, 'nothing written');
  });
});

describe('failures stop the job with the rank\'s error', () => {
  it('an arena too small for the activations stops the job with the failing rank\'s error', async () => {
    const cfg = config(['parallel.hp=2', 'train.seqLen=4096', 'train.arenaMiB=2']);
    await assert.rejects(train(cfg), (e: Error) => e instanceof RankFailedError && /rank \d failed: tensor arena exhausted: requested \d+ bytes .* of 2097152 bytes/.test(e.message));
  });
});

describe('the loongtrain command', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const run = promisify(execFile);
  it('refuses --resume together with --overwrite', async () => {
    await assert.rejects(run(process.execPath, [cli, 'train', '--resume', '--overwrite']), (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 2);
      assert.match(e.stderr, /--overwrite deletes the checkpoints of an earlier run .* with --resume it would delete the checkpoint being resumed/);
      return true;
    });
  });

  it('exits 2 with the config error on stderr', async () => {
    await assert.rejects(run(process.execPath, [cli, 'train', '--set', 'parallel.hp=3']), (e: { code: number; stderr: string }) => {
      assert.equal(e.code, 2);
      assert.match(e.stderr, /loongtrain: .*parallel\.hp = 3/s);
      return true;
    });
  });
  it('trains and reports the loss drop', async () => {
    const dir = join(root, 'cli');
    const { stderr } = await run(process.execPath, [cli, 'train', '--set', 'train.steps=3', '--set', 'optim.warmupSteps=1', '--set', 'train.seqLen=32', '--set', 'model.dim=16',
      '--set', 'log.progress=plain', '--set', `log.dir=${dir}`, '--set', `save.dir=${dir}/ck`]);
    assert.match(stderr, /step 3 \| loss [\d.]+ \| lr/);
    assert.match(stderr, /done: steps 1–3, loss [\d.]+ → [\d.]+ in [\d.]+ s; checkpoint .*step-00000003/);
    assert.ok(existsSync(join(dir, 'metrics.jsonl')));
  });

  it('Ctrl-C stops every rank after the current step with a checkpoint, and --resume continues without duplicate metrics', async () => {
    const dir = join(root, 'interrupt');
    const args = [cli, 'train', '--set', 'train.steps=200', '--set', 'optim.warmupSteps=1', '--set', 'train.seqLen=32', '--set', 'model.dim=16', '--set', 'parallel.cp=2',
      '--set', 'log.progress=plain', '--set', 'log.every=1', '--set', `log.dir=${dir}`, '--set', `save.dir=${dir}/ck`];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/step 3 \|/.test(stderr) && !child.killed) child.kill('SIGINT');
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 130, stderr);
    const m = /interrupted after step (\d+); checkpoint (\S+); continue with: npx loongtrain train .* --resume/.exec(stderr);
    assert.ok(m !== null, stderr);
    const stoppedAt = Number(m[1]);
    assert.ok(stoppedAt >= 3 && stoppedAt < 200 && existsSync(join(m[2]!, 'model.safetensors')));
    await run(process.execPath, [...args.slice(0, 3), 'train.steps=' + (stoppedAt + 2), ...args.slice(4), '--resume']).catch((e: { stderr: string }) => assert.fail(e.stderr));
    const steps = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    assert.deepEqual(steps, Array.from({ length: stoppedAt + 2 }, (_, i) => i + 1));
  });
});
