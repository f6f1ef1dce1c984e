import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ConfigError } from '../src/errors.js';
import { BACKEND_NAMES, backendStatus, createKernels, KERNEL_NAMES, resolveKernels, type BackendName } from '../src/kernels/registry.js';
import { Arena } from '../src/tensor/arena.js';
import { KERNELS_ENV, loadConfig, parseConfig } from '../src/train/config.js';
import { train } from '../src/train/train.js';

const root = mkdtempSync(join(tmpdir(), 'loongtrain-select-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const registry = new URL('../src/kernels/registry.js', import.meta.url).href;
const run = promisify(execFile);
const available = BACKEND_NAMES.filter((n) => backendStatus(n).ok);

/** Run `code` (an ES module) in a fresh Node whose dynamic linker cannot find any CBLAS library. */
async function withoutBlas(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, LOONGTRAIN_BLAS_LIBRARY: join(root, 'no-such-libblas.so') };
  try {
    const { stdout, stderr } = await run(process.execPath, args, { env });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('kernel backend selection', () => {
  it('config accepts reference, wasm, blas and auto (the default)', () => {
    assert.deepEqual([...KERNEL_NAMES], ['reference', 'wasm', 'blas', 'auto']);
    assert.equal(parseConfig({}).train.kernels, 'auto');
    assert.equal(parseConfig({ train: { kernels: 'blas' } }).train.kernels, 'blas');
    assert.throws(() => parseConfig({ train: { kernels: 'cuda' } }), /train\.kernels = "cuda" is invalid: use one of "reference", "wasm", "blas", "auto"/);
  });

  it(`${KERNELS_ENV} overrides the config file and --set overrides it`, () => {
    const saved = process.env[KERNELS_ENV];
    try {
      process.env[KERNELS_ENV] = 'reference';
      assert.equal(loadConfig(undefined).train.kernels, 'reference');
      assert.equal(loadConfig(undefined, ['train.kernels=auto']).train.kernels, 'auto');
      process.env[KERNELS_ENV] = 'fast';
      assert.throws(() => loadConfig(undefined), (e: unknown) => e instanceof ConfigError && /LOONGTRAIN_KERNELS=fast/.test(e.message) && /train\.kernels = "fast" is invalid/.test(e.message));
    } finally {
      if (saved === undefined) delete process.env[KERNELS_ENV];
      else process.env[KERNELS_ENV] = saved;
    }
  });

  it(`auto takes the first available of blas, wasm, reference (here: ${available.join(', ')} available)`, () => {
    const expected = (['blas', 'wasm', 'reference'] as BackendName[]).find((n) => available.includes(n));
    assert.equal(resolveKernels('auto').name, expected);
    assert.ok(available.includes('reference'));
  });

  it('createKernels gives each available backend, per arena', () => {
    const arena = new Arena(1 << 20);
    for (const name of available) assert.equal(createKernels(name, arena).name, name);
    assert.equal(createKernels('auto', arena).name, resolveKernels('auto').name);
    if (available.includes('blas')) {
      // blas replaces matmul, and attention when wasm runs here (its tile kernels do the softmax); the rest comes from wasm, else reference.
      const wasm = available.includes('wasm');
      const others = createKernels(wasm ? 'wasm' : 'reference', arena);
      const blas = createKernels('blas', arena);
      for (const k of ['matmul', ...(wasm ? (['attentionForward', 'attentionBackward'] as const) : [])] as const) assert.notEqual(blas[k], others[k], `${k} is blas's own`);
      for (const k of ['mergeAttention', 'rmsnormForward', 'crossEntropy', 'adamw', ...(wasm ? [] : (['attentionForward', 'attentionBackward'] as const))] as const) assert.equal(blas[k], others[k], `${k} is inherited`);
    }
  });

  it('an unknown name is a ConfigError naming the valid ones', () => {
    assert.throws(() => resolveKernels('gpu'), (e: unknown) => e instanceof ConfigError && /"reference", "wasm", "blas", "auto"/.test(e.message));
  });

  it('without a BLAS library, explicit blas is a ConfigError saying why, and auto falls back', async () => {
    const script = `import { resolveKernels } from ${JSON.stringify(registry)};
      let explicit; try { resolveKernels('blas'); explicit = 'no error'; } catch (e) { explicit = e.name + ': ' + e.message; }
      console.log(JSON.stringify({ explicit, auto: resolveKernels('auto').name }));`;
    const r = await withoutBlas(['--input-type=module', '-e', script]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { explicit: string; auto: string };
    assert.match(out.explicit, /^ConfigError: train\.kernels = "blas" cannot run here: no CBLAS library found \(tried .*no-such-libblas\.so \(not found\)\)/);
    assert.equal(out.auto, available.includes('wasm') ? 'wasm' : 'reference');
  });

  it('the CLI refuses an unavailable backend before any rank starts (exit code 2)', async () => {
    const r = await withoutBlas([cli, 'train', '--set', 'train.kernels=blas', '--set', 'train.steps=1', '--set', 'optim.warmupSteps=0', '--set', `log.dir=${join(root, 'cli')}`, '--set', `save.dir=${join(root, 'cli', 'ck')}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /loongtrain: train\.kernels = "blas" cannot run here: no CBLAS library found/);
  });

  describe('a 10-step training run gives the same losses on every available backend', () => {
    const losses = new Map<string, number[]>();
    for (const name of available) {
      it(`${name}: trains on 2 ranks (hp 2), prints and logs the backend`, async () => {
        const dir = join(root, `train-${name}`);
        const cfg = parseConfig({
          model: { dim: 32, layers: 2, heads: 4, kvHeads: 2, ffnDim: 64 },
          parallel: { hp: 2, cp: 1 },
          train: { seqLen: 64, steps: 10, kernels: name },
          optim: { warmupSteps: 2, lr: 1e-2, minLr: 1e-3 },
          log: { dir, progress: 'plain' },
          save: { dir: join(dir, 'ck') },
        });
        const lines: string[] = [];
        const result = await train(cfg, { out: (l) => lines.push(l) });
        assert.match(lines[0]!, new RegExp(`kernels ${name} \\(`));
        assert.match(readFileSync(join(dir, 'config.toml'), 'utf8'), new RegExp(`kernels = "${name}"`));
        losses.set(name, result.steps.map((s) => s.loss));
        assert.equal(losses.get(name)!.length, 10);
        const reference = losses.get('reference');
        if (reference === undefined || name === 'reference') return;
        for (let i = 0; i < 10; i++) {
          const rel = Math.abs(losses.get(name)![i]! - reference[i]!) / Math.abs(reference[i]!);
          assert.ok(rel <= 1e-4, `${name} step ${i + 1}: loss ${losses.get(name)![i]} vs reference ${reference[i]} (relative ${rel.toExponential(2)} > 1e-4)`);
        }
      });
    }
    it('auto is printed with the backend it chose', async () => {
      const dir = join(root, 'train-auto');
      const cfg = parseConfig({ model: { dim: 16, layers: 1, heads: 2, kvHeads: 1, ffnDim: 32 }, train: { seqLen: 16, steps: 1 }, optim: { warmupSteps: 0 }, log: { dir, progress: 'plain' }, save: { dir: join(dir, 'ck') } });
      const lines: string[] = [];
      await train(cfg, { out: (l) => lines.push(l) });
      assert.match(lines[0]!, new RegExp(`kernels ${resolveKernels('auto').name} \\(.*chosen by auto\\)`));
    });
  });
});
