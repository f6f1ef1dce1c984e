import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { referenceKernels as K } from '../src/kernels/reference/index.js';
import { getKernels } from '../src/kernels/registry.js';
import { ParallelDims } from '../src/parallel/dims.js';
import { zigzagIndices } from '../src/parallel/sharding.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { randomArray, relError } from './helpers/attention-ref.js';
import { centralDifference, crossEntropyRef, matmulRef, rmsnormRef, ropeRef, swigluRef } from './helpers/model-ref.js';

const TOL = 1e-5;
const arena = new Arena(8 << 20);
const rng = new Rng(20240618);

/** A tensor of f32-rounded normal samples (scaled) and the same values as float64. */
function rand(shape: number[], scale = 1): [Tensor, Float64Array] {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = Tensor.from(arena, shape, randomArray(rng, n, scale));
  return [t, Float64Array.from(t.data)];
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = TOL): void {
  const err = relError(got, want);
  assert.ok(err <= tol, `${what}: relative error ${err} > ${tol}`);
}

/** Σ dout·f(x): a scalar whose gradient w.r.t. x is the vector-Jacobian product with dout. */
function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

describe('reference dense kernels', () => {
  it('getKernels knows "reference" and names the valid backends otherwise', () => {
    assert.equal(getKernels('reference'), K);
    assert.throws(() => getKernels('wasm'), /unknown kernel backend "wasm": valid names are "reference"/);
    assert.throws(() => getKernels('toString'), /unknown kernel backend/);
  });

  it('matmul: every transA/transB combination, with and without accumulate, awkward sizes', () => {
    for (const [m, n, k] of [[1, 1, 1], [1, 7, 3], [5, 3, 9], [13, 17, 11], [4, 1, 6], [3, 5, 1]] as const) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const [a, a64] = rand(transA ? [k, m] : [m, k]);
          const [b, b64] = rand(transB ? [n, k] : [k, n]);
          const [c, c64] = rand([m, n]);
          const want = matmulRef(a64, b64, m, n, k, transA, transB);
          K.matmul(c, a, b, m, n, k, { transA, transB, accumulate: true });
          assertClose(c.data, want.map((x, i) => x + c64[i]!), `accumulate m=${m} n=${n} k=${k} tA=${transA} tB=${transB}`);
          K.matmul(c, a, b, m, n, k, { transA, transB });
          assertClose(c.data, want, `overwrite m=${m} n=${n} k=${k} tA=${transA} tB=${transB}`);
        }
      }
    }
  });

  it('matmul rejects sizes that do not match M, N, K', () => {
    const [a] = rand([2, 3]);
    const [b] = rand([3, 4]);
    const c = Tensor.zeros(arena, [2, 5]);
    assert.throws(() => K.matmul(c, a, b, 2, 4, 3), /matmul: C has 10 elements .* expected 8 = M·N = 2·4/);
    assert.throws(() => K.matmul(c, a, b, 2, 5, 3), /matmul: B has 12 elements/);
  });

  it('rmsnorm forward and backward match float64 (incl. one row, odd width)', () => {
    for (const [t, d] of [[1, 5], [3, 7], [4, 16]] as const) {
      const eps = 1e-5;
      const [x, x64] = rand([t, d]);
      const [w, w64] = rand([d], 0.5);
      const out = Tensor.zeros(arena, [t, d]);
      const rstd = Tensor.zeros(arena, [t]);
      K.rmsnormForward(out, rstd, x, w, eps);
      assertClose(out.data, rmsnormRef(x64, w64, eps), `rmsnorm forward [${t}, ${d}]`);
      const [dout, dout64] = rand([t, d]);
      const dx = Tensor.from(arena, [t, d], new Float32Array(t * d).fill(7)); // overwritten
      const [dw, dw64] = rand([d]); // accumulated
      K.rmsnormBackward(dx, dw, dout, x, w, rstd);
      assertClose(dx.data, centralDifference((xs) => dot(dout64, rmsnormRef(xs, w64, eps)), x64), `rmsnorm dx [${t}, ${d}]`);
      const dwFd = centralDifference((ws) => dot(dout64, rmsnormRef(x64, ws, eps)), w64.slice());
      assertClose(dw.data, dwFd.map((g, i) => g + dw64[i]!), `rmsnorm dw [${t}, ${d}]`);
    }
  });

  it('rope matches the float64 formula at global positions; inverse undoes it and is its adjoint', () => {
    const [t, h, d, theta] = [5, 3, 6, 10000];
    const positions = Int32Array.from([0, 3, 17, 1000, 65535]);
    const [x, x64] = rand([t, h, d]);
    K.rope(x, positions, theta, false);
    assertClose(x.data, ropeRef(x64, positions, theta, h, d), 'rope forward');
    const [g, g64] = rand([t, h, d]);
    K.rope(g, positions, theta, true);
    // ⟨R x, g⟩ = ⟨x, R⁻¹ g⟩: the inverse rotation is the backward of the forward one.
    const lhs = dot(x.data, g64);
    assert.ok(Math.abs(lhs - dot(x64, g.data)) <= 1e-5 * Math.max(1, Math.abs(lhs)), 'rope adjoint identity');
    K.rope(x, positions, theta, true);
    assertClose(x.data, x64, 'rope inverse ∘ rope');
  });

  it('rope of a shard with global positions equals the slice of full-sequence rope (F6, contiguous and zigzag)', () => {
    const [s, h, d, theta] = [16, 2, 8, 500];
    const [full] = rand([s, h, d]);
    const shardInput = Float32Array.from(full.data);
    K.rope(full, Int32Array.from({ length: s }, (_, i) => i), theta, false);
    const dims = new ParallelDims({ dp: 1, hp: 1, cp: 4, placement: 'head-first' });
    const contiguous = Array.from({ length: 4 }, (_, c) => Int32Array.from({ length: 4 }, (_, i) => 4 * c + i));
    const zigzag = Array.from({ length: 4 }, (_, c) => zigzagIndices(dims, s, 0, c));
    for (const idx of [...contiguous, ...zigzag]) {
      const shard = Tensor.zeros(arena, [idx.length, h, d]);
      idx.forEach((g, i) => shard.data.set(shardInput.subarray(g * h * d, (g + 1) * h * d), i * h * d));
      K.rope(shard, idx, theta, false);
      idx.forEach((g, i) => assert.deepEqual(shard.data.subarray(i * h * d, (i + 1) * h * d), full.data.subarray(g * h * d, (g + 1) * h * d), `token ${g}`));
    }
  });

  it('rope rejects a non-[T, H, d] tensor, an odd d and a bad theta', () => {
    const pos = Int32Array.from([0, 1]);
    assert.throws(() => K.rope(Tensor.zeros(arena, [2, 8]), pos, 1e4, false), /rope: x has shape \[2, 8\], expected \[T, H, d\]/);
    assert.throws(() => K.rope(Tensor.zeros(arena, [2, 1, 5]), pos, 1e4, false), /d even/);
    assert.throws(() => K.rope(Tensor.zeros(arena, [2, 1, 4]), pos, 0, false), /theta = 0/);
  });

  it('swiglu forward and backward match float64', () => {
    const [gate, gate64] = rand([3, 7], 3);
    const [up, up64] = rand([3, 7]);
    const out = Tensor.zeros(arena, [3, 7]);
    K.swigluForward(out, gate, up);
    assertClose(out.data, swigluRef(gate64, up64), 'swiglu forward');
    const [dout, dout64] = rand([3, 7]);
    const dgate = Tensor.zeros(arena, [3, 7]);
    const dup = Tensor.zeros(arena, [3, 7]);
    K.swigluBackward(dgate, dup, dout, gate, up);
    assertClose(dgate.data, centralDifference((g) => dot(dout64, swigluRef(g, up64)), gate64), 'swiglu dgate');
    assertClose(dup.data, centralDifference((u) => dot(dout64, swigluRef(gate64, u)), up64), 'swiglu dup');
  });

  it('crossEntropy: losses, sum, dlogits = gradScale·(softmax − onehot); ignored rows are 0; large logits stay finite', () => {
    const [t, v, gradScale] = [5, 11, 0.37];
    const [logits, logits64] = rand([t, v], 4);
    logits.data[2 * v + 3] = 400; // would overflow a naive exp in f32
    logits64[2 * v + 3] = 400;
    const labels = Int32Array.from([3, -1, 3, 10, 0]);
    const losses = Tensor.from(arena, [t], [9, 9, 9, 9, 9]);
    const sum = K.crossEntropy(logits, labels, losses, gradScale);
    const want = crossEntropyRef(logits64, labels);
    assertClose(losses.data, want, 'losses');
    assert.ok(Math.abs(sum - want.reduce((a, b) => a + b, 0)) <= 1e-6 * sum, 'returned sum');
    const fd = centralDifference((z) => gradScale * crossEntropyRef(z, labels).reduce((a, b) => a + b, 0), logits64);
    assertClose(logits.data, fd, 'dlogits');
    assert.deepEqual([...logits.data.subarray(v, 2 * v)], new Array(v).fill(0), 'ignored row gets zero gradient');
  });

  it('crossEntropy names a label outside [−1, V)', () => {
    const logits = Tensor.zeros(arena, [2, 4]);
    const losses = Tensor.zeros(arena, [2]);
    assert.throws(() => K.crossEntropy(logits, Int32Array.from([0, 4]), losses, 1), /labels\[1\] = 4 is invalid: it must be in \[0, 4\) or −1/);
    assert.throws(() => K.crossEntropy(logits, Int32Array.from([-2, 0]), losses, 1), /labels\[0\] = -2/);
  });

  it('embedding forward gathers rows; backward accumulates repeated ids; bad ids are named', () => {
    const [table, table64] = rand([6, 3]);
    const ids = Int32Array.from([5, 0, 5, 2]);
    const out = Tensor.zeros(arena, [4, 3]);
    K.embeddingForward(out, table, ids);
    assert.deepEqual([...out.data], [...ids].flatMap((id) => [...table64.subarray(id * 3, id * 3 + 3)]));
    const [dout, dout64] = rand([4, 3]);
    const [dtable, dtable64] = rand([6, 3]);
    K.embeddingBackward(dtable, dout, ids);
    const want = dtable64.slice();
    ids.forEach((id, r) => {
      for (let i = 0; i < 3; i++) want[id * 3 + i] += dout64[r * 3 + i]!;
    });
    assertClose(dtable.data, want, 'embedding backward');
    assert.throws(() => K.embeddingForward(out, table, Int32Array.from([0, 6, 1, 1])), /ids\[1\] = 6 is invalid: it must be in \[0, 6\)/);
  });

  it('adamw follows the decoupled-decay formula over several steps', () => {
    const n = 13;
    const [param, p64] = rand([n]);
    const m = Tensor.zeros(arena, [n]);
    const v = Tensor.zeros(arena, [n]);
    const m64 = new Float64Array(n);
    const v64 = new Float64Array(n);
    const [lr, beta1, beta2, eps, weightDecay] = [0.01, 0.9, 0.95, 1e-8, 0.1];
    for (let step = 1; step <= 3; step++) {
      const [grad, g64] = rand([n]);
      K.adamw(param, grad, m, v, { lr, beta1, beta2, eps, weightDecay, step });
      for (let i = 0; i < n; i++) {
        m64[i] = beta1 * m64[i]! + (1 - beta1) * g64[i]!;
        v64[i] = beta2 * v64[i]! + (1 - beta2) * g64[i]! ** 2;
        const update = m64[i]! / (1 - beta1 ** step) / (Math.sqrt(v64[i]! / (1 - beta2 ** step)) + eps);
        p64[i] = p64[i]! - lr * weightDecay * p64[i]! - lr * update;
      }
      assertClose(param.data, p64, `param after step ${step}`);
      assertClose(m.data, m64, `m after step ${step}`);
      assertClose(v.data, v64, `v after step ${step}`);
    }
    assert.throws(() => K.adamw(param, param, m, v, { lr, beta1, beta2, eps, weightDecay, step: 0 }), /step = 0 is invalid/);
  });

  it('axpy, scale and sumSquares', () => {
    const [y, y64] = rand([9]);
    const [x, x64] = rand([9]);
    K.axpy(y, x, -0.75);
    assertClose(y.data, y64.map((yi, i) => yi - 0.75 * x64[i]!), 'axpy');
    K.scale(x, 3.5);
    assertClose(x.data, x64.map((xi) => xi * 3.5), 'scale');
    // 2^24 + 1 is not an f32: an f32 accumulator would lose the small terms.
    const big = Tensor.from(arena, [3], [4096, 1, 1]);
    assert.equal(K.sumSquares(big), 4096 * 4096 + 2);
  });
});
