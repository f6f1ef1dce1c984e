import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { referenceKernels as K } from '../src/kernels/reference/index.js';
import type { ModelConfig } from '../src/model/config.js';
import { ModelParams } from '../src/model/params.js';
import { AdamW, type AdamWHyper } from '../src/optim/adamw.js';
import { clipGradNorm, gradNorm } from '../src/optim/clip.js';
import { WarmupCosineSchedule } from '../src/optim/schedule.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { relError } from './helpers/attention-ref.js';

const CONFIG: ModelConfig = {
  vocabSize: 10, dim: 8, layers: 2, heads: 2, kvHeads: 1, ffnDim: 12,
  ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false, initStd: 0.5,
};
const HYPER: AdamWHyper = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

/** Fill the gradients (not the alignment gaps) with fresh normal samples. */
function randomGrads(p: ModelParams, rng: Rng): void {
  for (const s of p.layout.specs) {
    const g = p.grad(s.name).data;
    for (let i = 0; i < g.length; i++) g[i] = rng.normal();
  }
}

describe('AdamW over the flat parameters', () => {
  it('matches the formula, decaying matrices and the embedding but not norm gains', () => {
    const arena = new Arena(1 << 20);
    const p = new ModelParams(arena, CONFIG);
    p.init(1);
    const opt = new AdamW(K, arena, p.layout, p.params, p.grads, HYPER);
    const rng = new Rng(2);
    // Float64 state per element; decay decided here from the documented names (norm gains end in "norm").
    const n = p.layout.flatSize;
    const w = Float64Array.from(p.params.data);
    const m = new Float64Array(n);
    const v = new Float64Array(n);
    const decays = new Uint8Array(n);
    for (const s of p.layout.specs) if (!s.name.endsWith('norm')) decays.fill(1, s.offset, s.offset + s.size);
    const { beta1, beta2, eps, weightDecay } = HYPER;
    for (const [step, lr] of [[1, 0.01], [2, 0.02], [3, 0.005]] as const) {
      randomGrads(p, rng);
      opt.update(lr);
      assert.equal(opt.step, step);
      for (let i = 0; i < n; i++) {
        const g = p.grads.data[i]!;
        m[i] = beta1 * m[i]! + (1 - beta1) * g;
        v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
        const update = m[i]! / (1 - beta1 ** step) / (Math.sqrt(v[i]! / (1 - beta2 ** step)) + eps);
        w[i] = w[i]! * (1 - lr * (decays[i] ? weightDecay : 0)) - lr * update;
      }
      assert.ok(relError(p.params.data, w) < 1e-6, `params after step ${step}`);
    }
    // With zero gradients only decay moves a weight; norm gains must not move at all then.
    p.grads.data.fill(0);
    const fresh = new AdamW(K, arena, p.layout, p.params, p.grads, HYPER);
    const norm = Float32Array.from(p.param('layers.1.mlp_norm').data);
    const wq = Float32Array.from(p.param('layers.1.attn.wq').data);
    fresh.update(0.5);
    assert.deepEqual(p.param('layers.1.mlp_norm').data, norm);
    assert.ok(relError(p.param('layers.1.attn.wq').data, Float64Array.from(wq, (x) => x * (1 - 0.5 * 0.1))) < 1e-6);
  });

  it('a shard at any offset updates exactly like the matching slice of the full flat tensor', () => {
    const arena = new Arena(1 << 20);
    const full = new ModelParams(arena, CONFIG);
    full.init(4);
    randomGrads(full, new Rng(5));
    const n = full.layout.flatSize;
    const cuts = [0, 37, 211, 212, n - 5, n];
    const shards = cuts.slice(0, -1).map((start, i) => {
      const end = cuts[i + 1]!;
      const params = Tensor.from(arena, [end - start], full.params.data.subarray(start, end), 'params');
      const grads = Tensor.from(arena, [end - start], full.grads.data.subarray(start, end), 'grads');
      return { start, params, opt: new AdamW(K, arena, full.layout, params, grads, HYPER, start) };
    });
    const opt = new AdamW(K, arena, full.layout, full.params, full.grads, HYPER);
    for (let step = 0; step < 2; step++) {
      opt.update(0.03);
      for (const s of shards) s.opt.update(0.03);
    }
    for (const s of shards) assert.deepEqual(s.params.data, full.params.data.subarray(s.start, s.start + s.params.size), `shard at ${s.start}`);
    assert.throws(() => new AdamW(K, arena, full.layout, shards[1]!.params, shards[1]!.params, HYPER, n - 3), /slice \[.*\) is outside the flat layout/);
  });

  it('exported state resumes exactly; bad state and hyper-parameters are named', () => {
    const arena = new Arena(1 << 20);
    const a = new ModelParams(arena, CONFIG);
    const b = new ModelParams(arena, CONFIG);
    a.init(6);
    const rng = new Rng(7);
    const optA = new AdamW(K, arena, a.layout, a.params, a.grads, HYPER);
    randomGrads(a, rng);
    optA.update(0.01);
    const saved = optA.exportState();
    b.params.data.set(a.params.data);
    const optB = new AdamW(K, arena, b.layout, b.params, b.grads, HYPER);
    optB.importState(saved);
    assert.equal(optB.step, 1);
    randomGrads(a, rng);
    b.grads.data.set(a.grads.data);
    optA.update(0.01);
    optB.update(0.01);
    assert.deepEqual(b.params.data, a.params.data);
    assert.throws(() => optB.importState({ ...saved, m: new Float32Array(3) }), /m has 3 and v \d+ elements, this optimizer holds \d+/);
    assert.throws(() => new AdamW(K, arena, a.layout, a.params, a.grads, { ...HYPER, beta2: 1 }), /beta2 = 1 is invalid: it must be in \[0, 1\)/);
    assert.throws(() => optA.update(-1), /lr = -1 is invalid/);
  });
});

describe('WarmupCosineSchedule', () => {
  it('linear warmup, cosine decay to minLr, then minLr (formula computed here)', () => {
    const [maxLr, minLr, w, total] = [3e-4, 3e-5, 10, 110];
    const s = new WarmupCosineSchedule({ maxLr, minLr, warmupSteps: w, totalSteps: total });
    for (let step = 1; step <= 130; step++) {
      let want: number;
      if (step <= w) want = maxLr * (step / w);
      else if (step >= total) want = minLr;
      else want = minLr + ((maxLr - minLr) * (1 + Math.cos((Math.PI * (step - w)) / (total - w)))) / 2;
      assert.ok(Math.abs(s.lr(step) - want) <= 1e-15, `step ${step}: ${s.lr(step)} vs ${want}`);
    }
    assert.equal(s.lr(w), maxLr);
    assert.ok(Math.abs(s.lr(60) - (maxLr + minLr) / 2) < 1e-15, 'halfway through the decay');
    assert.equal(s.lr(1), s.lr(1), 'pure');
    const noWarmup = new WarmupCosineSchedule({ maxLr: 1, minLr: 0, warmupSteps: 0, totalSteps: 4 });
    assert.ok(Math.abs(noWarmup.lr(2) - 0.5) < 1e-15);
    assert.equal(noWarmup.lr(4), 0);
  });

  it('rejects bad options and steps, naming the field', () => {
    const ok = { maxLr: 1, minLr: 0.1, warmupSteps: 2, totalSteps: 5 };
    const bad = (patch: object, pattern: RegExp): void => {
      assert.throws(() => new WarmupCosineSchedule({ ...ok, ...patch }), (e: unknown) => e instanceof ConfigError && pattern.test(e.message));
    };
    bad({ maxLr: 0 }, /schedule\.maxLr = 0/);
    bad({ minLr: 2 }, /schedule\.minLr = 2 is invalid: it must be in \[0, maxLr = 1\]/);
    bad({ warmupSteps: 1.5 }, /schedule\.warmupSteps = 1\.5/);
    bad({ totalSteps: 1 }, /schedule\.totalSteps = 1 is invalid: it must be an integer ≥ warmupSteps = 2/);
    assert.throws(() => new WarmupCosineSchedule(ok).lr(0), /step = 0 is invalid: steps are 1-based/);
  });
});

describe('global-norm clipping', () => {
  it('computes the norm in float64, scales only above maxNorm and returns the pre-clip norm', () => {
    const arena = new Arena(1 << 16);
    const rng = new Rng(8);
    const values = Float64Array.from({ length: 37 }, () => rng.normal());
    const g = Tensor.from(arena, [37], values, 'grads');
    const f32 = Float64Array.from(g.data);
    const want = Math.sqrt(f32.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(gradNorm(K, g) - want) <= 1e-12 * want);
    assert.equal(clipGradNorm(K, g, want * 2), gradNorm(K, g), 'below maxNorm: returns the norm');
    assert.deepEqual(Float64Array.from(g.data), f32, 'below maxNorm: untouched');
    const pre = clipGradNorm(K, g, 1);
    assert.ok(Math.abs(pre - want) <= 1e-12 * want);
    assert.ok(Math.abs(gradNorm(K, g) - 1) < 1e-6, 'clipped to norm 1');
    assert.ok(relError(g.data, f32.map((x) => x / want)) < 1e-6, 'direction kept');
    // A norm reduced elsewhere (ZeRO shards) is used as given.
    const before = Float64Array.from(g.data);
    assert.equal(clipGradNorm(K, g, 0.5, 2), 2);
    assert.ok(relError(g.data, before.map((x) => x / 4)) < 1e-6);
    const inf = Tensor.from(arena, [2], [Infinity, 1], 'grads');
    assert.equal(clipGradNorm(K, inf, 1), Infinity);
    assert.equal(inf.data[1], 1, 'non-finite norm: gradients untouched');
    assert.throws(() => clipGradNorm(K, g, 0), /maxNorm = 0 is invalid/);
  });
});
