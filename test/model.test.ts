import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttentionCore, AttentionSaved } from '../src/attention/core.js';
import type { ProcessGroup } from '../src/comm/process-group.js';
import { LocalAttention } from '../src/attention/local.js';
import { ConfigError } from '../src/errors.js';
import type { Kernels } from '../src/kernels/kernels.js';
import { referenceKernels } from '../src/kernels/reference/index.js';
import { type ModelConfig, validateModelConfig } from '../src/model/config.js';
import { modelFlops } from '../src/model/flops.js';
import { countValidLabels, Transformer } from '../src/model/model.js';
import { initialParams, ModelParams, PARAM_ALIGN, paramLayout } from '../src/model/params.js';
import { ShardedParamStore } from '../src/optim/zero-store.js';
import { ParallelDims } from '../src/parallel/dims.js';
import { takeIndices, zigzagIndices } from '../src/parallel/sharding.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import type { SequenceLayout } from '../src/parallel/sequence-layout.js';
import { maskPairs } from '../src/kernels/checks.js';
import { localLayout } from './helpers/layouts.js';
import { relError } from './helpers/attention-ref.js';
import { directionalDifference, type RefParams, refModelGrads, refModelLoss } from './helpers/model-ref.js';

const BASE: ModelConfig = {
  vocabSize: 32, dim: 16, layers: 2, heads: 4, kvHeads: 2, ffnDim: 24,
  ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false, initStd: 0.02,
};

function localCore(config: ModelConfig): LocalAttention {
  return new LocalAttention({ kernels: referenceKernels, heads: config.heads, kvHeads: config.kvHeads, headDim: config.dim / config.heads });
}

function randomTokens(rng: Rng, n: number, vocab: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(vocab));
}

describe('model config and parameters', () => {
  it('validation names the field, the value and what is valid', () => {
    const bad = (patch: Partial<ModelConfig>, pattern: RegExp): void => {
      assert.throws(() => validateModelConfig({ ...BASE, ...patch }), (err: unknown) => err instanceof ConfigError && pattern.test(err.message));
    };
    bad({ vocabSize: 0 }, /model\.vocabSize = 0 is invalid: it must be a positive integer/);
    bad({ layers: 1.5 }, /model\.layers = 1\.5/);
    bad({ kvHeads: 3 }, /model\.kvHeads = 3 does not divide model\.heads = 4; valid kvHeads: 1, 2, 4/);
    bad({ heads: 3, kvHeads: 1 }, /model\.dim = 16 is not a multiple of model\.heads = 3; valid heads: 1, 2, 4, 8, 16/);
    bad({ heads: 16, kvHeads: 2 }, /headDim = .* = 1 must be an even integer for RoPE; heads that give an even headDim with kvHeads = 2: 2, 4, 8/);
    bad({ normEps: 0 }, /model\.normEps = 0 .* positive finite/);
    bad({ initStd: Number.NaN }, /model\.initStd = NaN/);
    assert.equal(validateModelConfig(BASE), BASE);
  });

  it('layout: fixed order, documented shapes, aligned non-overlapping offsets; output only when untied', () => {
    const untied = paramLayout(BASE);
    const names = untied.specs.map((s) => s.name);
    const perLayer = (l: number): string[] => ['attn_norm', 'attn.wq', 'attn.wk', 'attn.wv', 'attn.wo', 'mlp_norm', 'mlp.w1', 'mlp.w3', 'mlp.w2'].map((n) => `layers.${l}.${n}`);
    assert.deepEqual(names, ['tok_embeddings', ...perLayer(0), ...perLayer(1), 'norm', 'output']);
    const shape = (n: string): readonly number[] => untied.specs.find((s) => s.name === n)!.shape;
    assert.deepEqual(shape('layers.1.attn.wq'), [16, 16]);
    assert.deepEqual(shape('layers.1.attn.wk'), [8, 16]);
    assert.deepEqual(shape('layers.0.attn.wo'), [16, 16]);
    assert.deepEqual(shape('layers.0.mlp.w1'), [24, 16]);
    assert.deepEqual(shape('layers.0.mlp.w2'), [16, 24]);
    assert.deepEqual(shape('output'), [32, 16]);
    let end = 0;
    let count = 0;
    for (const s of untied.specs) {
      assert.equal(s.offset % PARAM_ALIGN, 0, `${s.name} offset aligned`);
      assert.ok(s.offset >= end, `${s.name} does not overlap its predecessor`);
      assert.equal(s.size, s.shape.reduce((a, b) => a * b, 1));
      end = s.offset + s.size;
      count += s.size;
    }
    assert.ok(untied.flatSize >= end);
    assert.equal(untied.numParams, count);
    const tied = paramLayout({ ...BASE, tiedEmbeddings: true });
    assert.deepEqual(tied.specs.map((s) => s.name), names.slice(0, -1));
    assert.equal(untied.numParams - tied.numParams, 32 * 16);
  });

  it('init: per-name streams independent of layer count and tying; norms 1; residual outputs scaled by 1/√(2·layers)', () => {
    const arena = new Arena(4 << 20);
    const a = new ModelParams(arena, { ...BASE, dim: 64, heads: 4, kvHeads: 2, initStd: 0.5 });
    const b = new ModelParams(arena, { ...BASE, dim: 64, heads: 4, kvHeads: 2, initStd: 0.5, layers: 3, tiedEmbeddings: true });
    a.init(7);
    b.init(7);
    for (const n of ['tok_embeddings', 'layers.1.attn.wq', 'layers.0.mlp.w3']) assert.deepEqual(a.param(n).data, b.param(n).data, n);
    assert.notDeepEqual(a.param('layers.0.attn.wq').data, a.param('layers.1.attn.wq').data);
    assert.ok(a.param('norm').data.every((x) => x === 1) && a.param('layers.1.mlp_norm').data.every((x) => x === 1));
    const std = (t: Tensor): number => Math.sqrt(t.data.reduce((s, x) => s + x * x, 0) / t.size);
    assert.ok(Math.abs(std(a.param('layers.0.attn.wq')) / 0.5 - 1) < 0.05, 'wq std ≈ initStd');
    assert.ok(Math.abs(std(a.param('layers.0.attn.wo')) / (0.5 / 2) - 1) < 0.05, 'wo std ≈ initStd/√(2·2)');
    assert.ok(Math.abs(std(b.param('layers.0.mlp.w2')) / (0.5 / Math.sqrt(6)) - 1) < 0.05, 'w2 std ≈ initStd/√(2·3)');
    const c = new ModelParams(arena, { ...BASE, dim: 64, heads: 4, kvHeads: 2, initStd: 0.5 });
    c.init(8);
    assert.notDeepEqual(a.param('layers.0.attn.wq').data, c.param('layers.0.attn.wq').data);
    assert.throws(() => a.param('layers.9.attn.wq'), /unknown parameter "layers\.9\.attn\.wq"/);
  });
});

/**
 * Give every parameter a random value large enough that attention, norms and SwiGLU are far from
 * linear (the default init would make the test nearly blind), and return the float64 copies.
 */
function randomizeParams(params: ModelParams, rng: Rng): RefParams {
  const ref: RefParams = new Map();
  for (const s of params.layout.specs) {
    const view = params.param(s.name).data;
    for (let i = 0; i < view.length; i++) view[i] = s.kind === 'norm' ? 1 + 0.3 * rng.normal() : rng.normal() * (s.kind === 'embedding' ? 1 : 0.4);
    ref.set(s.name, Float64Array.from(view));
  }
  return ref;
}

describe('Transformer forward/backward', () => {
  for (const tiedEmbeddings of [false, true]) {
    it(`loss and every parameter gradient match a float64 reference (${tiedEmbeddings ? 'tied' : 'untied'} embeddings, GQA 4/2)`, () => {
      const config: ModelConfig = { ...BASE, tiedEmbeddings };
      const arena = new Arena(4 << 20);
      const model = new Transformer(referenceKernels, arena, config, localCore(config), { seed: 1 });
      const rng = new Rng(tiedEmbeddings ? 11 : 12);
      const ref = randomizeParams(model.params, rng);
      const seq = 16;
      const tokens = randomTokens(rng, seq, config.vocabSize);
      const positions = Int32Array.from({ length: seq }, (_, i) => i);
      const labels = randomTokens(rng, seq, config.vocabSize);
      labels[3] = -1;
      labels[seq - 1] = -1;
      const gradScale = 1 / (countValidLabels(labels) + 5); // as if other ranks held 5 more valid labels
      model.params.grads.data.fill(0.25); // backward accumulates on top of what is there
      const loss = model.forward(tokens, positions, labels, gradScale, localLayout(tokens.length));
      model.backward();
      const { loss: refLoss, grads: refGrads } = refModelGrads(config, ref, tokens, positions, labels, gradScale);
      assert.ok(Math.abs(loss - refLoss) <= 1e-5 * refLoss, `loss ${loss} vs float64 ${refLoss}`);
      for (const [name, want] of refGrads) {
        const got = Float64Array.from(model.params.grad(name).data, (g) => g - 0.25);
        const err = relError(got, want);
        assert.ok(err <= 1e-5, `${name}: gradient relative error ${err}`);
        // The float64 reference's own backward against finite differences of its forward, along a random direction.
        const u = Float64Array.from({ length: want.length }, () => rng.normal());
        const unorm = Math.hypot(...u);
        u.forEach((x, i) => (u[i] = x / unorm));
        const fd = directionalDifference(() => gradScale * refModelLoss(config, ref, tokens, positions, labels), ref.get(name)!, u);
        const analytic = want.reduce((s, g, i) => s + g * u[i]!, 0);
        const gnorm = Math.hypot(...want);
        assert.ok(Math.abs(fd - analytic) <= 1e-7 * gnorm, `${name}: reference ⟨grad, u⟩ ${analytic} vs finite difference ${fd} (‖grad‖ ${gnorm})`);
      }
    });
  }

  it('frees every activation after backward, accumulates gradients and refuses out-of-order calls', () => {
    const config: ModelConfig = { ...BASE, tiedEmbeddings: true };
    const arena = new Arena(4 << 20);
    const requested: number[] = [];
    const model = new Transformer(referenceKernels, arena, config, (layer) => {
      requested.push(layer);
      return localCore(config);
    }, { seed: 3 });
    assert.deepEqual(requested, [0, 1], 'one core per layer from the factory');
    const rng = new Rng(5);
    const tokens = randomTokens(rng, 12, config.vocabSize);
    const positions = Int32Array.from({ length: 12 }, (_, i) => 100 + i);
    const labels = randomTokens(rng, 12, config.vocabSize);
    const before = arena.stats();
    model.params.zeroGrads();
    const loss1 = model.forward(tokens, positions, labels, 1 / 12, localLayout(tokens.length));
    const during = arena.stats();
    assert.ok(during.liveByCategory.saved > before.liveByCategory.saved, 'forward keeps saved tensors');
    assert.throws(() => model.forward(tokens, positions, labels, 1, localLayout(tokens.length)), /previous forward still holds its activations/);
    model.backward();
    const after = arena.stats();
    assert.equal(after.liveBytes, before.liveBytes, 'live bytes back to the pre-forward value');
    assert.equal(after.liveByCategory.activations, before.liveByCategory.activations);
    assert.equal(after.liveByCategory.saved, before.liveByCategory.saved);
    assert.throws(() => model.backward(), /no forward to backpropagate/);
    const once = Float32Array.from(model.params.grads.data);
    assert.ok(once.some((g) => g !== 0));
    const loss2 = model.forward(tokens, positions, labels, 1 / 12, localLayout(tokens.length));
    model.backward();
    assert.equal(loss2, loss1, 'same inputs, same loss');
    assert.ok(relError(model.params.grads.data, once.map((g) => 2 * g)) < 1e-6, 'second backward adds the same gradients');
  });

  it('rejects bad tokens, positions, labels, lengths and gradScale before allocating', () => {
    const arena = new Arena(4 << 20);
    const model = new Transformer(referenceKernels, arena, BASE, localCore(BASE));
    const ok = Int32Array.from([1, 2, 3]);
    const live = arena.stats().liveBytes;
    assert.throws(() => model.forward(Int32Array.from([1, 32, 3]), ok, ok, 1, localLayout(3)), /tokens\[1\] = 32 is invalid: it must be in \[0, 32\)/);
    assert.throws(() => model.forward(ok, Int32Array.from([0, -1, 2]), ok, 1, localLayout(3)), /positions\[1\] = -1 is invalid/);
    assert.throws(() => model.forward(ok, ok, Int32Array.from([1, -2, 3]), 1, localLayout(3)), /labels\[1\] = -2 is invalid: it must be in \[0, 32\) or −1/);
    assert.throws(() => model.forward(ok, Int32Array.from([0, 1]), ok, 1, localLayout(3)), /equal lengths, got 3, 2, 3/);
    assert.throws(() => model.forward(ok, ok, ok, Number.NaN, localLayout(3)), /gradScale = NaN/);
    assert.equal(arena.stats().liveBytes, live);
  });
});

/** A stand-in core that records the q and k it is given (after RoPE) and returns q as output. */
class CapturingCore implements AttentionCore {
  q: Float32Array[] = [];
  k: Float32Array[] = [];
  forward(q: Tensor, k: Tensor): AttentionSaved {
    this.q.push(q.data.slice());
    this.k.push(k.data.slice());
    return { out: Tensor.from(q.arena, q.shape, q.data), state: null };
  }
  backward(saved: AttentionSaved): void {
    saved.out.free();
  }
  release(saved: AttentionSaved): void {
    saved.out.free();
  }
}

describe('RoPE inside the model uses global positions (F6)', () => {
  it('q and k of a shard equal the matching rows of the full-sequence q and k, contiguous and zigzag', () => {
    const config: ModelConfig = { ...BASE, layers: 1, heads: 2, kvHeads: 1, dim: 16 }; // d = 8
    const seq = 16;
    const rng = new Rng(9);
    const tokens = randomTokens(rng, seq, config.vocabSize);
    const labels = randomTokens(rng, seq, config.vocabSize);
    const run = (idx: Int32Array): CapturingCore => {
      const core = new CapturingCore();
      const model = new Transformer(referenceKernels, new Arena(2 << 20), config, core, { seed: 4 });
      model.forward(takeIndices(tokens, idx), idx, takeIndices(labels, idx), 1, localLayout(idx.length));
      model.backward();
      return core;
    };
    const full = run(Int32Array.from({ length: seq }, (_, i) => i));
    const dims = new ParallelDims({ dp: 1, hp: 1, cp: 4, placement: 'head-first' });
    const shards = [
      ...Array.from({ length: 4 }, (_, c) => Int32Array.from({ length: 4 }, (_, i) => 4 * c + i)),
      ...Array.from({ length: 4 }, (_, c) => zigzagIndices(dims, seq, 0, c)),
    ];
    const qRow = config.heads * 8;
    const kRow = config.kvHeads * 8;
    for (const idx of shards) {
      const shard = run(idx);
      idx.forEach((g, i) => {
        assert.deepEqual(shard.q[0]!.subarray(i * qRow, (i + 1) * qRow), full.q[0]!.subarray(g * qRow, (g + 1) * qRow), `q of token ${g}`);
        assert.deepEqual(shard.k[0]!.subarray(i * kRow, (i + 1) * kRow), full.k[0]!.subarray(g * kRow, (g + 1) * kRow), `k of token ${g}`);
      });
    }
  });
});

/** A core that fails in one pass (the stand-in for any error inside a unit's forward or backward). */
class FailingCore implements AttentionCore {
  constructor(
    private readonly inner: AttentionCore,
    private readonly failIn: 'forward' | 'backward',
  ) {}
  forward(q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout): AttentionSaved {
    if (this.failIn === 'forward') throw new Error('core failed in forward');
    return this.inner.forward(q, k, v, layout);
  }
  backward(saved: AttentionSaved, dOut: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, layout: SequenceLayout): void {
    if (this.failIn === 'backward') throw new Error('core failed in backward');
    this.inner.backward(saved, dOut, dq, dk, dv, layout);
  }
  release(saved: AttentionSaved): void {
    this.inner.release(saved);
  }
}

/** A one-member shard group: ZeRO's gathers and reductions over it exchange no message. */
function soloGroup(): ProcessGroup {
  const none = (): never => {
    throw new Error('a one-member group sends nothing');
  };
  return {
    kind: 'world', ranks: [0], rank: 0, size: 1,
    send: none, recv: none, isend: none, irecv: none, allToAll: none, allGather: none, reduceScatter: none, allReduce: none, broadcast: none, barrier: none,
  };
}

describe('a throw inside a unit leaves the parameter store clean', () => {
  for (const failIn of ['forward', 'backward'] as const) {
    it(`ZeRO stage 3 store, attention of layer 1 throws in ${failIn}: no unit held, no gathered or prefetched buffer`, () => {
      const config: ModelConfig = { ...BASE, layers: 3 };
      const arena = new Arena(4 << 20);
      const store = new ShardedParamStore({ arena, config, group: soloGroup(), shardParams: true });
      store.loadFlat(initialParams(config, 3));
      const states = arena.stats().liveByCategory;
      const model = new Transformer(referenceKernels, arena, config, (l) => (l === 1 ? new FailingCore(localCore(config), failIn) : localCore(config)), { params: store });
      const rng = new Rng(5);
      const tokens = randomTokens(rng, 8, config.vocabSize);
      const positions = Int32Array.from({ length: 8 }, (_, i) => i);
      if (failIn === 'forward') {
        assert.throws(() => model.forward(tokens, positions, tokens, 1 / 8, localLayout(8)), /core failed in forward/);
      } else {
        model.forward(tokens, positions, tokens, 1 / 8, localLayout(8));
        assert.throws(() => model.backward(), /core failed in backward/);
      }
      const live = arena.stats().liveByCategory;
      // Only the shards remain: layer 1's gathered parameters and gradients and the prefetched neighbour are freed.
      assert.equal(live.params, states.params, 'parameter bytes back to the shard');
      assert.equal(live.grads, states.grads, 'gradient bytes back to the shard');
      assert.throws(() => store.param('layers.1.attn.wq'), /not gathered/);
      assert.throws(() => store.grad('layers.1.attn.wq'), /not available/);
      store.zeroGrads();
      // The store serves a unit again afterwards (the head: the last unit, which prefetches nothing).
      store.acquire('head', 'forward');
      assert.deepEqual(store.param('norm').data, new Float32Array(config.dim).fill(1));
      store.release('head', 'forward');
      assert.equal(arena.stats().liveByCategory.params, states.params);
    });
  }
});

describe('modelFlops', () => {
  it('equals the matmul and attention work the forward actually does (algorithms.md §7)', () => {
    for (const causal of [true, false]) {
      const config: ModelConfig = { ...BASE, ffnDim: 40 };
      let flops = 0;
      // Count 2·M·N·K per matmul and 4·d·H·(visible pairs) per attention call during forward.
      const counting: Kernels = {
        ...referenceKernels,
        matmul(c, a, b, m, n, k, opts) {
          flops += 2 * m * n * k;
          referenceKernels.matmul(c, a, b, m, n, k, opts);
        },
        attentionForward(q, k, v, out, lse, opts) {
          const [sq, h, d] = q.shape as [number, number, number];
          const sk = k.shape[0]!;
          flops += 4 * d * h * maskPairs(opts.mask, sq, sk);
          referenceKernels.attentionForward(q, k, v, out, lse, opts);
        },
      };
      const seq = 10;
      const core = new LocalAttention({ kernels: counting, heads: config.heads, kvHeads: config.kvHeads, headDim: config.dim / config.heads });
      const model = new Transformer(counting, new Arena(2 << 20), config, core, { seed: 2 });
      const tokens = new Int32Array(seq);
      model.forward(tokens, Int32Array.from({ length: seq }, (_, i) => i), tokens, 1, localLayout(seq, causal));
      assert.equal(modelFlops(config, seq, causal), flops, `causal = ${causal}`);
      model.backward();
    }
    assert.throws(() => modelFlops(BASE, 0, true), /seqLen = 0 is invalid/);
  });
});
