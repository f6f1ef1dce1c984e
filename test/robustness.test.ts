import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { RankFailedError } from '../src/comm/launcher.js';
import { ConfigError } from '../src/errors.js';
import { listCheckpoints, loadCheckpoint, readTrainerState } from '../src/train/checkpoint.js';
import { loadConfig, type Config } from '../src/train/config.js';
import { MetricsFile, MetricsWriteError } from '../src/train/metrics-file.js';
import { paramLayout } from '../src/model/params.js';
import { train } from '../src/train/train.js';
import { writeBrownSample } from './helpers/brown-sample.js';

/*
 * What real runs meet (divergence, signals, full disks, bad folders, rollbacks, torn files),
 * each made impossible: a clear error naming the file, key or value, nothing saved lost, no hang.
 */

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'loongtrain-robust-'));
const text = join(root, 'brown.txt');
let runs = 0;
before(() => writeBrownSample(text, 100_000));
after(() => rmSync(root, { recursive: true, force: true }));

const TINY = ['model.dim=16', 'model.layers=1', 'model.heads=2', 'model.kvHeads=2', 'model.ffnDim=32', 'train.seqLen=32', 'data.source=files'];

function newRun(): string {
  return join(root, `run-${runs++}`);
}

function sets(dir: string, overrides: readonly string[]): string[] {
  return [...TINY, `data.path=${text}`, `run.dir=${dir}`, 'log.progress=plain', ...overrides];
}

function config(dir: string, overrides: readonly string[]): Config {
  return loadConfig(undefined, sets(dir, overrides));
}

function cliArgs(dir: string, overrides: readonly string[]): string[] {
  return [CLI, 'train', ...sets(dir, overrides).flatMap((s) => ['--set', s])];
}

/** The CLI's exit code and stderr (it may fail: that is what is tested). */
async function cli(args: readonly string[]): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await run(process.execPath, args, { timeout: 120_000 });
    return { code: 0, stderr };
  } catch (e) {
    const err = e as { code?: number; stderr?: string };
    return { code: err.code ?? -1, stderr: err.stderr ?? '' };
  }
}

function metricsRows(dir: string): Array<{ step: number; loss: number | null; lr: number; skipped: boolean; nonFinite?: string[] }> {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

describe('divergence (item 1)', () => {
  const diverging = ['train.steps=30', 'optim.lr=1e6', 'optim.minLr=0', 'optim.warmupSteps=0', 'save.every=2', 'save.keep=50'];

  it('a non-finite loss or gradient norm stops the run naming the step; every checkpoint written is finite', async () => {
    const dir = newRun();
    await assert.rejects(train(config(dir, diverging)), (e: unknown) => {
      assert.ok(e instanceof RankFailedError, String(e));
      assert.equal((e.cause as Error).name, 'TrainingDivergedError');
      assert.match(e.message, /step (\d+): the (loss|gradient norm) is NaN.*stopped after 1 such step \(train\.maxNonFiniteSteps = 0/);
      return true;
    });
    const rows = metricsRows(dir);
    const bad = rows[rows.length - 1]!;
    assert.equal(bad.skipped, true);
    assert.ok(bad.nonFinite!.length > 0, 'the row names what went non-finite');
    const layout = paramLayout(config(dir, diverging).model);
    for (const c of listCheckpoints(join(dir, 'checkpoints'))) {
      assert.ok(c.step < bad.step, `no checkpoint at or after the diverged step ${bad.step} (found ${c.step})`);
      const full = loadCheckpoint(c.path, layout, readTrainerState(c.path).optimizerStep);
      assert.ok(full.params.every(Number.isFinite), `checkpoint ${c.step} is finite`);
    }
  });

  it('train.maxNonFiniteSteps = 3 skips three steps (no update, logged), then stops at the fourth', async () => {
    const dir = newRun();
    await assert.rejects(train(config(dir, [...diverging, 'train.maxNonFiniteSteps=3'])), /stopped after 4 such steps \(train\.maxNonFiniteSteps = 3/);
    const skipped = metricsRows(dir).filter((r) => r.skipped);
    assert.equal(skipped.length, 4);
  });

  it('the CLI exits non-zero with the step and the cause, without a stack', async () => {
    const { code, stderr } = await cli(cliArgs(newRun(), diverging));
    assert.equal(code, 1);
    assert.match(stderr, /skipped \(not finite: no update\)/);
    assert.match(stderr, /loongtrain: step \d+: the (loss|gradient norm) is NaN/);
    assert.doesNotMatch(stderr, /\n\s+at /);
  });
});

describe('folders are checked before any rank starts (item 3)', () => {
  it('save.dir or log.dir that is a file, that cannot be made, or that is read-only', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    const ro = join(root, 'read-only');
    mkdirSync(ro);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,ro', 'tmpfs', ro]);
    try {
      const cases: Array<[string[], RegExp]> = [
        [[`save.dir=${file}`], /save\.dir = ".*a-file" is a file, not a folder/],
        [[`log.dir=${file}`], /log\.dir = ".*a-file" is a file, not a folder/],
        [['save.dir=/proc/loongtrain/checkpoints'], /save\.dir = "\/proc\/loongtrain\/checkpoints" cannot be created: ENOENT.*choose a folder you can write/],
        [[`log.dir=${file}/sub`], /log\.dir = ".*a-file\/sub" cannot be created: ENOTDIR/],
        [[`save.dir=${ro}`], /save\.dir = ".*read-only" is not writable: EROFS/],
        [[`log.dir=${ro}`], /log\.dir = ".*read-only" is not writable: EROFS/],
      ];
      for (const [overrides, message] of cases) {
        const t0 = performance.now();
        await assert.rejects(train(config(newRun(), ['train.steps=2', ...overrides])), (e: unknown) => e instanceof ConfigError && message.test(e.message));
        assert.ok(performance.now() - t0 < 10_000, 'refused before training');
      }
    } finally {
      execFileSync('umount', [ro]);
    }
  });
});

describe('metrics.jsonl is never torn (items 4, 5)', () => {
  it('a row that does not fit on a full disk is cut back: the file ends with whole rows', () => {
    const small = join(root, 'small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', small]);
    try {
      const m = new MetricsFile(join(small, 'metrics.jsonl'), undefined, () => {});
      const row = { step: 0, loss: 1.5, pad: 'x'.repeat(900) };
      let rows = 0;
      assert.throws(() => {
        for (;;) m.append({ ...row, step: ++rows });
      }, (e: unknown) => e instanceof MetricsWriteError && /cannot append to .*metrics\.jsonl: ENOSPC.*keeps every row up to the previous step/.test(e.message));
      m.close();
      const lines = readFileSync(join(small, 'metrics.jsonl'), 'utf8').split('\n');
      assert.equal(lines.pop(), '', 'ends with a newline');
      assert.deepEqual(lines.map((l) => (JSON.parse(l) as { step: number }).step), Array.from({ length: rows - 1 }, (_, i) => i + 1));
    } finally {
      execFileSync('umount', [small]);
    }
  });

  it('--resume drops a torn last line with a warning', async () => {
    const dir = newRun();
    await train(config(dir, ['train.steps=4']), { stopAt: 2 });
    appendFileSync(join(dir, 'metrics.jsonl'), '{"step": 3, "loss": 2.');
    const lines: string[] = [];
    await train(config(dir, ['train.steps=4']), { resume: join(dir, 'checkpoints'), out: (l) => lines.push(l) });
    assert.ok(lines.some((l) => /metrics: dropped a torn last line of .*metrics\.jsonl/.test(l)), lines.join('\n'));
    assert.deepEqual(metricsRows(dir).map((r) => r.step), [1, 2, 3, 4]);
  });
});

describe('signals (item 6)', () => {
  it('SIGUSR1 is a requested pause: checkpoint, the resume command, exit 0 (and no debugger opened)', async () => {
    const dir = newRun();
    const child = spawn(process.execPath, cliArgs(dir, ['train.steps=100000', 'log.every=1']), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/step 3 \|/.test(stderr) && child.exitCode === null && !child.killed) child.kill('SIGUSR1');
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /Debugger listening/);
    assert.match(stderr, /interrupted after step \d+; checkpoint \S+; continue with: npx loongtrain train .* --resume/);
    // The run folder itself is accepted by --resume (its checkpoints are in checkpoints/).
    const resumed = await cli([...cliArgs(dir, ['train.steps=12']), '--resume', dir]);
    assert.equal(resumed.code, 0, resumed.stderr);
  });

  it('SIGTERM stops every rank after the current step with a checkpoint and prints how to resume (exit 143)', async () => {
    const dir = newRun();
    const child = spawn(process.execPath, cliArgs(dir, ['train.steps=100000', 'parallel.cp=2', 'log.every=1']), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/step 3 \|/.test(stderr) && child.exitCode === null && !child.killed) child.kill('SIGTERM');
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 143, stderr);
    assert.match(stderr, /SIGTERM: stopping after the current step and saving a checkpoint/);
    assert.match(stderr, /interrupted after step \d+; checkpoint \S+; continue with: npx loongtrain train .* --resume/);
  });
});

describe('resume keeps the run it resumes (items 2, 9, 11, 12)', () => {
  it('the schedule (steps, lr, warmup, minLr) comes from the checkpoint unless --set changes it, and a change is printed', async () => {
    const straight = newRun();
    const schedule = ['train.steps=8', 'optim.warmupSteps=2', 'optim.lr=2e-2', 'optim.minLr=1e-3'];
    await cli(cliArgs(straight, schedule));
    const dir = newRun();
    await cli([...cliArgs(dir, schedule), '--stop-at', '4']);
    // Resumed without repeating the schedule: the defaults (100 steps, another lr) must not win.
    const resumed = await cli([...cliArgs(dir, []), '--resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resume: train\.steps = 8 from the checkpoint \(the config says 100/);
    assert.match(resumed.stderr, /resume: optim\.lr = 0\.02 from the checkpoint/);
    assert.deepEqual(metricsRows(dir).map((r) => [r.step, r.lr, r.loss]), metricsRows(straight).map((r) => [r.step, r.lr, r.loss]));
    const longer = newRun();
    await cli([...cliArgs(longer, schedule), '--stop-at', '4']);
    const changed = await cli([...cliArgs(longer, ['train.steps=10']), '--resume']);
    assert.match(changed.stderr, /resume: train\.steps changed from 8 \(checkpoint\) to 10 \(--set\)/);
    assert.equal(metricsRows(longer).length, 10);
  });

  it('resuming an older checkpoint while newer ones exist is refused; --rollback moves them aside and pruning keeps the new branch', async () => {
    const dir = newRun();
    const ck = join(dir, 'checkpoints');
    await cli(cliArgs(dir, ['train.steps=6', 'save.every=1', 'save.keep=10']));
    const refused = await cli([...cliArgs(dir, ['train.steps=6', 'save.every=1', 'save.keep=1']), '--resume', join(ck, 'step-00000003'), '--stop-at', '4']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--resume from step 3: save\.dir .* holds newer checkpoints \(step 4, 5, 6\).*--rollback/);
    const rolled = await cli([...cliArgs(dir, ['train.steps=6', 'save.every=1', 'save.keep=1']), '--resume', join(ck, 'step-00000003'), '--stop-at', '4', '--rollback']);
    assert.equal(rolled.code, 0, rolled.stderr);
    assert.match(rolled.stderr, /--rollback: moved checkpoints of step 4, 5, 6 \(and a copy of metrics\.jsonl\) to .*rolled-back-/);
    assert.match(rolled.stderr, /metrics: dropped the rows of steps 4–6 from .*metrics\.jsonl: they ran after the checkpoint this run resumes from/);
    assert.deepEqual(listCheckpoints(ck).map((c) => c.step), [4], 'the new step 4 is kept, nothing newer is left to resume by mistake');
    const aside = readdirSync(ck).find((n) => n.startsWith('rolled-back-'))!;
    assert.deepEqual(readdirSync(join(ck, aside)).sort(), ['metrics.jsonl', 'step-00000004', 'step-00000005', 'step-00000006']);
    assert.equal(readFileSync(join(ck, aside, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 6, 'the rolled-back branch keeps its metrics rows');
  });

  it("a checkpoint of another folder may branch into an empty run.dir, not into one holding another run", async () => {
    const a = newRun();
    await train(config(a, ['train.steps=4']), { stopAt: 2 });
    const b = newRun();
    await train(config(b, ['train.steps=4']));
    const before = readFileSync(join(b, 'metrics.jsonl'), 'utf8');
    await assert.rejects(train(config(b, ['train.steps=4']), { resume: join(a, 'checkpoints') }), (e: unknown) =>
      e instanceof ConfigError && /is a checkpoint of another folder than save\.dir .* already holds another run; continue that checkpoint's run in its own folder \(--set run\.dir=/.test(e.message));
    assert.equal(readFileSync(join(b, 'metrics.jsonl'), 'utf8'), before, "the other run's metrics are untouched");
    const branch = newRun();
    const result = await train(config(branch, ['train.steps=4']), { resume: join(a, 'checkpoints') });
    assert.deepEqual(result.steps.map((st) => st.step), [3, 4]);
  });

  it('a schedule merged from the checkpoint and --set is checked like a config (minLr ≤ lr)', async () => {
    const dir = newRun();
    await cli([...cliArgs(dir, ['train.steps=6', 'optim.lr=1e-2', 'optim.minLr=5e-3']), '--stop-at', '2']);
    const { code, stderr } = await cli([...cliArgs(dir, ['optim.lr=1e-3']), '--resume']);
    assert.equal(code, 2);
    assert.match(stderr, /--resume: optim\.minLr = 0\.005 would exceed optim\.lr = 0\.001/);
  });

  it('temp folders left by a killed save are removed at the next start, with a line saying so', async () => {
    const dir = newRun();
    await train(config(dir, ['train.steps=4']), { stopAt: 2 });
    const stale = join(dir, 'checkpoints', 'step-00000003.tmp-999999');
    mkdirSync(stale);
    writeFileSync(join(stale, 'model.safetensors'), 'partial');
    const lines: string[] = [];
    await train(config(dir, ['train.steps=4']), { resume: join(dir, 'checkpoints'), out: (l) => lines.push(l) });
    assert.ok(!existsSync(stale));
    assert.ok(lines.some((l) => /removed 1 incomplete checkpoint folder left by an interrupted save \(step-00000003\.tmp-999999\)/.test(l)), lines.join('\n'));
  });

  it("a run never truncates another run's metrics: a fresh run into a folder with metrics is refused", async () => {
    const demo = newRun();
    await train(config(demo, ['train.steps=3']));
    const before = readFileSync(join(demo, 'metrics.jsonl'), 'utf8');
    await assert.rejects(train(config(demo, ['train.steps=3', `save.dir=${join(newRun(), 'ck')}`])), (e: unknown) => e instanceof ConfigError && /log\.dir .* already holds .*metrics\.jsonl of an earlier run.*--set run\.dir=runs\/NAME.*--overwrite/.test(e.message));
    // The README's example: another run.dir keeps checkpoints, metrics and config together, apart from the demo's.
    const mine = newRun();
    await train(config(mine, ['train.steps=3']), { stopAt: 2 });
    assert.equal(readFileSync(join(demo, 'metrics.jsonl'), 'utf8'), before);
    assert.ok(existsSync(join(mine, 'metrics.jsonl')) && existsSync(join(mine, 'config.toml')) && existsSync(join(mine, 'checkpoints', 'step-00000002')));
  });
});

describe('smaller things (item 13)', () => {
  it('a run shorter than its warmup runs, with a note; log.progress=none still prints the first line', async () => {
    const lines: string[] = [];
    const result = await train(config(newRun(), ['train.steps=3', 'optim.warmupSteps=20', 'log.progress=none']), { out: (l) => lines.push(l) });
    assert.equal(result.steps.length, 3);
    assert.ok(lines.some((l) => /optim\.warmupSteps = 20 is longer than the run/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /^loongtrain: 1 rank .*kernels/.test(l)), 'the header names the layout and kernels');
    assert.ok(!lines.some((l) => /^step /.test(l)), 'no step lines');
  });

  it('plain output off a terminal prints about 100 lines, always the first and the last step', async () => {
    const lines: string[] = [];
    await train(config(newRun(), ['train.steps=300', 'model.dim=8', 'model.ffnDim=8', 'train.seqLen=8']), { out: (l) => lines.push(l) });
    const steps = lines.filter((l) => l.startsWith('step ')).map((l) => Number(/^step (\d+)/.exec(l)![1]));
    assert.equal(steps[0], 1);
    assert.equal(steps[steps.length - 1], 300);
    assert.ok(steps.length >= 90 && steps.length <= 110, `${steps.length} lines`);
  });

  it('train() with a config object holding an unknown key or a bad value is refused naming it', async () => {
    const cfg = config(newRun(), ['train.steps=2']);
    await assert.rejects(train({ ...cfg, train: { ...cfg.train, stepz: 3 } } as Config), (e: unknown) => e instanceof ConfigError && /unknown key train\.stepz \(did you mean steps\?\)/.test(e.message));
    await assert.rejects(train({ ...cfg, optim: { ...cfg.optim, lr: -1 } }), (e: unknown) => e instanceof ConfigError && /optim\.lr = -1 is invalid/.test(e.message));
  });

  it('bench with a misspelt suite suggests the right one', async () => {
    const { code, stderr } = await cli([CLI, 'bench', 'atention']);
    assert.equal(code, 2);
    assert.match(stderr, /bench suite "atention" is unknown \(did you mean attention\?\)/);
  });
});

describe('the general rule on a table of bad inputs: exit 2 before any step, the key/file/field named, no stack', () => {
  const ck = join(root, 'table-run');
  const fifo = join(root, 'fifo.txt');
  const binary = join(root, 'binary.txt');
  const onlyReadme = join(root, 'only-readme');
  before(async () => {
    await train(config(ck, ['train.steps=2']));
    execFileSync('mkfifo', [fifo]);
    writeFileSync(binary, Buffer.from([0x68, 0x69, 0x00, 0xff]));
    mkdirSync(onlyReadme);
    writeFileSync(join(onlyReadme, 'README.md'), '# notes');
  });
  /** A copy of the table run's checkpoint folder whose trainer.json is `text`. */
  const damaged = (name: string, text: string): string => {
    const dir = join(root, `damaged-${name}`);
    execFileSync('cp', ['-r', ck, dir]);
    writeFileSync(join(dir, 'checkpoints', 'step-00000002', 'trainer.json'), text);
    return dir;
  };
  const cases: Array<[string, () => string[], RegExp]> = [
    ['a negative train.maxNonFiniteSteps', () => cliArgs(newRun(), ['train.maxNonFiniteSteps=-1']), /train\.maxNonFiniteSteps = -1 is invalid: it must be ≥ 0/],
    ['an empty run.dir', () => cliArgs(newRun(), ['run.dir=""']), /run\.dir = "" is invalid: it must not be empty/],
    ['log.every = 0', () => cliArgs(newRun(), ['log.every=0']), /log\.every = 0 is invalid: it must be ≥ 1/],
    ['data.maxFileMiB = 0', () => cliArgs(newRun(), ['data.maxFileMiB=0']), /data\.maxFileMiB = 0 is invalid/],
    ['a FIFO as data', () => cliArgs(newRun(), [`data.path=${fifo}`]), /fifo\.txt.*FIFO/i],
    ['a binary data file', () => cliArgs(newRun(), [`data.path=${binary}`]), /binary\.txt is not valid UTF-8 text: NUL byte 0x00 at offset 2/],
    ['a data folder of other files only', () => cliArgs(newRun(), [`data.path=${onlyReadme}`]), /only-readme.*README\.md/],
    ['save.dir that is a file', () => cliArgs(newRun(), [`save.dir=${binary}`]), /save\.dir = ".*binary\.txt" is a file, not a folder/],
    ['trainer.json = null', () => [...cliArgs(damaged('null', 'null'), ['train.steps=4']), '--resume'], /trainer\.json is not a LoongTrain\.ts trainer state: it holds null/],
    ['trainer.json with step -1', () => {
      const state = JSON.parse(readFileSync(join(ck, 'checkpoints', 'step-00000002', 'trainer.json'), 'utf8')) as Record<string, unknown>;
      return [...cliArgs(damaged('step', JSON.stringify({ ...state, step: -1 })), ['train.steps=4']), '--resume'];
    }, /trainer\.json is not a LoongTrain\.ts trainer state: step = -1 \(expected an integer ≥ 0\)/],
    ['a metrics.jsonl damaged before its last line', () => {
      const dir = damaged('metrics', readFileSync(join(ck, 'checkpoints', 'step-00000002', 'trainer.json'), 'utf8'));
      writeFileSync(join(dir, 'metrics.jsonl'), '{"step": 1, "loss": 5}\nnot json\n{"step": 2, "loss": 4}\n');
      return [...cliArgs(dir, ['train.steps=4']), '--resume'];
    }, /metrics\.jsonl line 2 is not a JSON metrics row; move the file aside or repair it before --resume/],
  ];
  for (const [name, args, message] of cases) {
    it(name, async () => {
      const { code, stderr } = await cli(args());
      assert.ok(code === 2 || code === 1, `exit code ${code}`);
      assert.match(stderr, message);
      assert.doesNotMatch(stderr, /^step \d/m, 'no step ran');
      assert.doesNotMatch(stderr, /\n\s+at /, 'no stack');
    });
  }
});
