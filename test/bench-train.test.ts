import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createKernels } from '../src/kernels/registry.js';
import { KERNEL_CATEGORIES, timedKernels } from '../src/kernels/timed.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { benchTrain, formatTrainTable, type TorchPeer } from '../src/train/bench-train.js';

const arena = new Arena(16 << 20);
const rng = new Rng(11);
const rand = (shape: number[]): Tensor => Tensor.from(arena, shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));

describe('timedKernels', () => {
  for (const backend of ['reference', 'wasm'] as const) {
    it(`${backend}: a wrapped call gives the same bits, and its time lands in its own category only`, () => {
      const inner = createKernels(backend, arena);
      const timed = timedKernels(inner);
      const a = rand([64, 48]);
      const b = rand([48, 32]);
      const want = Tensor.zeros(arena, [64, 32]);
      const got = Tensor.zeros(arena, [64, 32]);
      inner.matmul(want, a, b, 64, 32, 48);
      timed.kernels.matmul(got, a, b, 64, 32, 48);
      assert.deepEqual(got.data, want.data);
      const t = timed.times();
      assert.ok(t.gemm > 0, 'matmul counted as gemm');
      assert.equal(t.attention, 0);
      assert.equal(t.elementwise, 0);
      assert.equal(timed.kernels.name, inner.name);
      // A method with a return value: the value comes through.
      assert.equal(timed.kernels.sumSquares(a), inner.sumSquares(a));
      assert.ok(timed.times().elementwise > 0);
    });
  }

  it('counts attention, and the categories add up to the time spent in the calls; reset clears them', () => {
    const timed = timedKernels(createKernels('wasm', arena));
    const [s, h, d] = [128, 2, 16];
    const q = rand([s, h, d]);
    const k = rand([s, h, d]);
    const v = rand([s, h, d]);
    const out = Tensor.zeros(arena, [s, h, d]);
    const lse = Tensor.zeros(arena, [s, h]);
    const t0 = performance.now();
    timed.kernels.attentionForward(q, k, v, out, lse, { mask: { kind: 'causal', offset: 0 }, scale: 1 / Math.sqrt(d) });
    timed.kernels.scale(out, 0.5);
    const outside = performance.now() - t0;
    const t = timed.times();
    assert.ok(t.attention > 0 && t.elementwise > 0 && t.gemm === 0, JSON.stringify(t));
    const sum = KERNEL_CATEGORIES.reduce((acc, c) => acc + t[c], 0);
    assert.ok(sum <= outside, `kernel time ${sum} ms exceeds the ${outside} ms around the calls`);
    timed.reset();
    assert.deepEqual(timed.times(), { attention: 0, gemm: 0, elementwise: 0 });
  });

  it('wraps a backend whose methods come from a prototype chain (no own keys)', () => {
    const chained = Object.create(createKernels('reference', arena)) as ReturnType<typeof createKernels>;
    const timed = timedKernels(chained);
    const x = rand([8, 8]);
    timed.kernels.scale(x, 2);
    assert.ok(timed.times().elementwise > 0);
  });
});

describe('bench train (tiny)', () => {
  it('reports the breakdown, which sums to the step, and the torch ratios from a peer', async () => {
    const calls: string[] = [];
    const peer: TorchPeer = {
      torchAvailable: () => ({ ok: true }),
      runTorchPeer: async (o) => {
        calls.push(`${o.attention}@${o.seqLen}`);
        // The first step is left out: 1e6 would dominate any median that kept it.
        return { stepMs: o.attention === 'chunked' ? [1e6, 100, 100] : [1e6, 300, 300], torch: 'fake 0.0' };
      },
    };
    const report = await benchTrain({ seqLens: [32], steps: 3, rounds: 2, kernels: 'wasm', peer, torchThreads: 2, torchTimeoutMs: 1000 });
    assert.deepEqual(calls, ['chunked@32', 'naive@32', 'chunked@32', 'naive@32']);
    const r = report.results[0]!;
    assert.equal(r.steps, 4, '2 rounds × (3 steps − the first)');
    const parts = Object.values(r.breakdown);
    const sumMs = parts.reduce((a, p) => a + p.ms, 0);
    assert.ok(r.breakdown.gemm.ms > 0 && r.breakdown.attention.ms > 0 && r.breakdown.elementwise.ms > 0, JSON.stringify(r.breakdown));
    // Medians of the parts need not sum to the median step exactly, but each step's parts do.
    assert.ok(Math.abs(sumMs - r.medianStepMs) / r.medianStepMs < 0.5, `parts ${sumMs} ms vs step ${r.medianStepMs} ms`);
    assert.ok(Math.abs(r.ratioVsTorchChunked! - 100 / r.medianStepMs) < 1e-9);
    assert.ok(Math.abs(r.ratioVsTorchNaive! - 300 / r.medianStepMs) < 1e-9);
    assert.ok(r.model.pctNativePeak > 0 && r.model.pctNativePeak < 100);
    assert.match(formatTrainTable(report), /outside kernels/);
  });

  it('says why when torch is not available, instead of failing', async () => {
    const peer: TorchPeer = {
      torchAvailable: () => ({ ok: false, reason: 'python3-torch is not installed' }),
      runTorchPeer: () => Promise.reject(new Error('must not run')),
    };
    const report = await benchTrain({ seqLens: [16], steps: 2, rounds: 1, kernels: 'wasm', peer, torchThreads: 2, torchTimeoutMs: 1000 });
    assert.deepEqual(report.torch, { ok: false, threads: 2, reason: 'python3-torch is not installed' });
    assert.equal(report.results[0]!.ratioVsTorchChunked, null);
    assert.match(formatTrainTable(report), /not run: python3-torch is not installed/);
  });

  it('rejects a seqLen the layout cannot split, naming it', async () => {
    await assert.rejects(benchTrain({ seqLens: [4098], steps: 2, rounds: 1, kernels: 'wasm', peer: null, torchThreads: 2, torchTimeoutMs: 1000 }), /seqLen 4098 is invalid/);
  });
});
