import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PNG } from 'pngjs';
import { loadConfig } from '../src/train/config.js';
import { plotRun } from '../src/train/plot.js';
import { train } from '../src/train/train.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const packageJson = fileURLToPath(new URL('../../package.json', import.meta.url));
const run = promisify(execFile);

const root = mkdtempSync(join(tmpdir(), 'loongtrain-plot-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** `loongtrain ARGS`: exit code, stdout and stderr. */
async function loongtrain(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

interface Pixels {
  width: number;
  height: number;
  /** Share of pixels that are not the white background. */
  inked: number;
  /** Pixels close to the colour (r, g, b). */
  near(r: number, g: number, b: number): number;
}

/** Decode a PNG with pngjs (not the library that wrote it). */
function decode(path: string): Pixels {
  const png = PNG.sync.read(readFileSync(path));
  const { width, height, data } = png;
  let inked = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i]! < 245 || data[i + 1]! < 245 || data[i + 2]! < 245) inked++;
  return {
    width,
    height,
    inked: inked / (width * height),
    near(r, g, b) {
      let n = 0;
      for (let i = 0; i < data.length; i += 4) if (Math.abs(data[i]! - r) + Math.abs(data[i + 1]! - g) + Math.abs(data[i + 2]! - b) < 40) n++;
      return n;
    },
  };
}

describe('loongtrain plot', () => {
  let dir = '';
  before(async () => {
    dir = join(root, 'run');
    const cfg = loadConfig(undefined, [
      'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64',
      'train.seqLen=64', 'train.steps=25', 'optim.warmupSteps=2', 'log.progress=none', `run.dir=${dir}`,
    ]);
    await train(cfg, { out: () => {} });
  });

  it('draws a run\'s metrics.jsonl to <run-dir>/metrics.png: a PNG of the size it reports, with the curves drawn', async () => {
    const { code, stderr } = await loongtrain('plot', dir);
    assert.equal(code, 0, stderr);
    const path = join(dir, 'metrics.png');
    const m = /25 steps \(loss, lr, throughput\) drawn to (.+) \((\d+)×(\d+)\)/.exec(stderr);
    assert.ok(m !== null, stderr);
    assert.equal(m[1], path);
    const png = decode(path);
    assert.deepEqual([png.width, png.height], [Number(m[2]), Number(m[3])]);
    assert.ok(png.width >= 1000 && png.height >= 1000, `${png.width}×${png.height}: three panels one above the other`);
    // Over 1% even where no font is installed (resvg then draws no text).
    assert.ok(png.inked > 0.01, `${(png.inked * 100).toFixed(1)}% of the pixels are drawn`);
    // The loss, lr and throughput lines are blue (#1f77b4).
    assert.ok(png.near(0x1f, 0x77, 0xb4) > 2000, `${png.near(0x1f, 0x77, 0xb4)} line pixels`);
    assert.equal(png.near(0xd6, 0x27, 0x28), 0, 'no validation curve: the rows have no valLoss');
  });

  it('--out writes elsewhere; validation loss is drawn when rows have valLoss; rows without time, tokens or tokensPerSec are read', async () => {
    const old = join(root, 'synthetic');
    mkdirSync(old);
    const rows = Array.from({ length: 60 }, (_, i) => {
      const step = i + 1;
      return { step, loss: 5 * Math.exp(-step / 30) + 1, lr: 1e-3, gradNorm: 1, tgs: 1000 + (step % 7) * 50, ...(step % 10 === 0 ? { valLoss: 5 * Math.exp(-step / 30) + 1.2 } : {}) };
    });
    writeFileSync(join(old, 'metrics.jsonl'), rows.map((r) => JSON.stringify(r) + '\n').join('') + '{"step": 61, "lo');
    const out = join(root, 'elsewhere', 'plot.png');
    const result = await plotRun(old, out);
    assert.equal(result.path, out);
    assert.equal(result.rows, 60, 'the torn last line is left out');
    assert.deepEqual(result.panels, ['loss', 'lr', 'throughput']);
    assert.ok(!existsSync(join(old, 'metrics.png')));
    const png = decode(out);
    assert.deepEqual([png.width, png.height], [result.width, result.height]);
    assert.ok(png.near(0xd6, 0x27, 0x28) > 100, `validation loss drawn in red: ${png.near(0xd6, 0x27, 0x28)} pixels`);
    assert.ok(png.near(0x1f, 0x77, 0xb4) > 2000);
    const cliOut = join(root, 'cli-out.png');
    const r = await loongtrain('plot', old, '--out', cliOut);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(decode(cliOut).width, result.width);
  });

  it('a missing folder, a folder without metrics.jsonl and an empty metrics file are clear errors', async () => {
    const missing = await loongtrain('plot', join(root, 'nope'));
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /nope does not exist; give a run's folder/);
    const empty = join(root, 'empty');
    mkdirSync(empty);
    const none = await loongtrain('plot', empty);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /holds no metrics\.jsonl/);
    writeFileSync(join(empty, 'metrics.jsonl'), '');
    const noRows = await loongtrain('plot', empty);
    assert.equal(noRows.code, 2);
    assert.match(noRows.stderr, /metrics\.jsonl holds no steps yet/);
    assert.ok(!existsSync(join(empty, 'metrics.png')));
  });
});

describe('loongtrain --version', () => {
  it('prints the version of package.json', async () => {
    const { version } = JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await loongtrain(flag);
      assert.equal(r.code, 0);
      assert.equal(r.stdout.trim(), version);
    }
  });
});
