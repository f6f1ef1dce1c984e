import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttentionOptions, Kernels } from '../src/kernels/kernels.js';
import { referenceKernels as R } from '../src/kernels/reference/index.js';
import { checkScratchBytes } from '../src/kernels/wasm/checks.js';
import { createWasmKernels, wasmAvailable, type WasmSimd } from '../src/kernels/wasm/index.js';
import { instantiate, wasmModule } from '../src/kernels/wasm/loader.js';
import { Arena, MAX_ARENA_BYTES } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { attentionKernelTests, guarded } from './helpers/attention-kernel-tests.js';
import { CAUSAL, NONE, randomRanges } from './helpers/masks.js';
import { randomArray, relError } from './helpers/attention-ref.js';

/*
 * The `wasm` backend against the reference backend (float64 accumulation, itself checked against
 * float64 formulas in kernels-dense.test.ts) and, for attention, against the float64 reference of
 * test/helpers/attention-ref.ts. Errors are max |wasm − reference| / max |reference|; the
 * tolerance of each kernel is named in TOL and documented in docs/kernels.md.
 */

const TOL = {
  /** f32 accumulation over K (tested up to K = 300) in the register tile. */
  matmul: 1e-5,
  merge: 1e-6,
  /** Row statistics in f64, products in f32. */
  rmsnorm: 1e-6,
  rope: 1e-6,
  /** σ through the SIMD e^x, f32 products. */
  swiglu: 1e-6,
  /** Partition function summed in f64; e^(x − logZ) in f32. */
  crossEntropy: 1e-6,
  /** Same f64 arithmetic as the reference: equal after rounding, up to the last bit. */
  adamw: 1e-7,
  /** Single f32 operations (alpha rounded to f32): within 2 ulp. */
  elementwise: 3e-7,
};

const availability = wasmAvailable();
const BUILDS: WasmSimd[] = availability.relaxedSimd ? ['relaxed', 'plain'] : ['plain'];

const arena = new Arena(32 << 20, 3);
const rng = new Rng(20240701);

function rand(shape: number[], scale = 1): Tensor {
  return Tensor.from(arena, shape, randomArray(rng, shape.reduce((a, b) => a * b, 1), scale));
}

function copy(t: Tensor): Tensor {
  return Tensor.from(arena, t.shape, t.data);
}

function freeAll(...ts: Tensor[]): void {
  for (const t of ts) t.free();
}

function assertClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number): void {
  for (let i = 0; i < got.length; i++) assert.ok(!Number.isNaN(got[i]!), `${what}[${i}] is NaN`);
  const err = relError(got, want);
  assert.ok(err <= tol, `${what}: relative error ${err} > ${tol}`);
}

function randomInts(n: number, lo: number, hi: number): Int32Array {
  return Int32Array.from({ length: n }, () => lo + rng.int(hi - lo));
}







describe('wasm backend availability', () => {
  it('is built and runs here; relaxed SIMD is detected and explained', () => {
    assert.ok(availability.ok, `wasm kernels unavailable: ${availability.reason}`);
    assert.equal(typeof availability.relaxedSimd, 'boolean');
    assert.match(availability.note, availability.relaxedSimd ? /relaxed SIMD/ : /plain SIMD build/);
    assert.equal(createWasmKernels(arena).relaxedSimd, availability.relaxedSimd);
  });

  it('relaxed build (fused multiply-add)', { skip: availability.relaxedSimd ? false : availability.note }, () => {
    assert.equal(createWasmKernels(arena, { simd: 'relaxed' }).relaxedSimd, true);
  });

  it('instantiating over an arena leaves its bytes untouched (the module owns no memory)', () => {
    const fresh = new Arena(1 << 20, 5);
    const bytes = new Uint8Array(fresh.buffer);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
    const K = createWasmKernels(fresh, { simd: 'plain' });
    assert.equal(K.name, 'wasm');
    for (let i = 0; i < bytes.length; i++) assert.equal(bytes[i], (i * 31 + 7) & 0xff, `byte ${i} changed`);
  });

  it('one instance per (arena, build)', () => {
    assert.equal(createWasmKernels(arena, { simd: 'plain' }), createWasmKernels(arena, { simd: 'plain' }));
    assert.notEqual(createWasmKernels(arena, { simd: 'plain' }), createWasmKernels(new Arena(1 << 20), { simd: 'plain' }));
  });
});

for (const simd of BUILDS) {
  describe(`wasm kernels, ${simd} SIMD build, against the reference`, () => {
    const K: Kernels = createWasmKernels(arena, { simd });

    it('matmul: every transA/transB/accumulate variant, awkward sizes and sizes past the GEMM blocks', () => {
      const sizes = [[1, 1, 1], [1, 7, 3], [5, 3, 9], [13, 17, 11], [4, 1, 6], [3, 5, 1], [8, 8, 8], [33, 65, 31], [200, 20, 300], [5, 2100, 3]] as const;
      for (const [m, n, k] of sizes) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            for (const accumulate of [false, true]) {
              const a = rand(transA ? [k, m] : [m, k]);
              const b = rand(transB ? [n, k] : [k, n]);
              const c = rand([m, n]);
              const cRef = copy(c);
              const opts = { transA, transB, accumulate };
              K.matmul(c, a, b, m, n, k, opts);
              R.matmul(cRef, a, b, m, n, k, opts);
              assertClose(`matmul m=${m} n=${n} k=${k} ${JSON.stringify(opts)}`, c.data, cRef.data, TOL.matmul);
              freeAll(a, b, c, cRef);
            }
          }
        }
      }
    });

    it('matmul with K = 0 writes zeros (or leaves C when accumulating)', () => {
      const a = rand([3, 0]);
      const b = rand([0, 5]);
      const c = rand([3, 5]);
      const before = Float32Array.from(c.data);
      K.matmul(c, a, b, 3, 5, 0, { accumulate: true });
      assert.deepEqual(c.data, before);
      K.matmul(c, a, b, 3, 5, 0);
      assert.ok(c.data.every((x) => x === 0));
      freeAll(a, b, c);
    });

    attentionKernelTests(`wasm ${simd}`, K, arena, (a) => createWasmKernels(a, { simd }), rng);

    it('matmul writes nothing outside C: edge tiles of every transpose variant leave the neighbouring tensors unchanged', () => {
      for (const [m, n, k] of [[5, 13, 7], [4, 8, 3], [1, 9, 2], [33, 3, 5]] as const) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const fresh = new Arena(4 << 20, 6);
            const W = createWasmKernels(fresh, { simd });
            const a = Tensor.from(fresh, transA ? [k, m] : [m, k], randomArray(rng, m * k, 1));
            const b = Tensor.from(fresh, transB ? [n, k] : [k, n], randomArray(rng, k * n, 1));
            const c = guarded(fresh, [m, n]);
            const opts = { transA, transB, accumulate: transA };
            W.matmul(c.t, a, b, m, n, k, opts);
            c.check(`matmul m=${m} n=${n} k=${k} ${JSON.stringify(opts)}`);
            const cRef = Tensor.zeros(fresh, [m, n]);
            R.matmul(cRef, a, b, m, n, k, opts);
            assertClose(`matmul m=${m} n=${n} k=${k}`, c.t.data, cRef.data, TOL.matmul);
          }
        }
      }
    });


    it('mergeAttention matches the reference, including −∞ on either side and large LSE gaps', () => {
      for (const [rows, d] of [[1, 1], [5, 3], [9, 8], [4, 13]] as const) {
        const o = rand([rows, 1, d]);
        const ob = rand([rows, 1, d]);
        const lse = rand([rows, 1], 3);
        const lseb = rand([rows, 1], 3);
        lse.data[0] = -Infinity;
        if (rows > 1) lseb.data[1] = -Infinity;
        if (rows > 2) lseb.data[2] = lse.data[2]! + 60;
        if (rows > 3) [lse.data[3], lseb.data[3]] = [-Infinity, -Infinity];
        const [oRef, lseRef] = [copy(o), copy(lse)];
        K.mergeAttention(o, lse, ob, lseb);
        R.mergeAttention(oRef, lseRef, ob, lseb);
        assertClose(`merge o rows=${rows} d=${d}`, o.data, oRef.data, TOL.merge);
        assertClose(`merge lse rows=${rows} d=${d}`, lse.data, lseRef.data, TOL.merge);
        freeAll(o, ob, lse, lseb, oRef, lseRef);
      }
    });

    it('rmsnorm forward and backward', () => {
      for (const [t, d] of [[1, 1], [3, 5], [4, 8], [7, 67]] as const) {
        const x = rand([t, d]);
        const w = rand([d]);
        const dout = rand([t, d]);
        const [out, rstd, outRef, rstdRef] = [rand([t, d]), rand([t]), rand([t, d]), rand([t])];
        K.rmsnormForward(out, rstd, x, w, 1e-5);
        R.rmsnormForward(outRef, rstdRef, x, w, 1e-5);
        assertClose('rmsnorm out', out.data, outRef.data, TOL.rmsnorm);
        assertClose('rmsnorm rstd', rstd.data, rstdRef.data, TOL.rmsnorm);
        const [dx, dw] = [rand([t, d]), rand([d])];
        const [dxRef, dwRef] = [rand([t, d]), copy(dw)];
        K.rmsnormBackward(dx, dw, dout, x, w, rstdRef);
        R.rmsnormBackward(dxRef, dwRef, dout, x, w, rstdRef);
        assertClose('rmsnorm dx', dx.data, dxRef.data, TOL.rmsnorm);
        assertClose('rmsnorm dw (accumulated)', dw.data, dwRef.data, TOL.rmsnorm);
        freeAll(x, w, dout, out, rstd, outRef, rstdRef, dx, dw, dxRef, dwRef);
      }
    });

    it('rope forward and inverse at large global positions, headDim 2 to 128', () => {
      for (const [t, h, d] of [[1, 1, 2], [3, 2, 6], [5, 3, 8], [4, 2, 128]] as const) {
        const x = rand([t, h, d]);
        const xRef = copy(x);
        const positions = randomInts(t, 0, 1 << 17);
        for (const inverse of [false, true]) {
          K.rope(x, positions, 10000, inverse);
          R.rope(xRef, positions, 10000, inverse);
          assertClose(`rope t=${t} h=${h} d=${d} inverse=${inverse}`, x.data, xRef.data, TOL.rope);
        }
        freeAll(x, xRef);
      }
    });

    it('swiglu forward and backward, including saturated gates', () => {
      for (const n of [1, 3, 8, 37]) {
        const gate = rand([n], 4);
        // Saturated gates (e^±100 overflows f32) next to ordinary ones: results below 2^−126
        // are flushed to 0, which only a tensor of nothing but such values would notice.
        if (n > 2) [gate.data[0], gate.data[1]] = [-100, 95];
        const up = rand([n]);
        const dout = rand([n]);
        const [out, outRef] = [rand([n]), rand([n])];
        K.swigluForward(out, gate, up);
        R.swigluForward(outRef, gate, up);
        assertClose(`swiglu n=${n}`, out.data, outRef.data, TOL.swiglu);
        const [dg, du, dgRef, duRef] = [rand([n]), rand([n]), rand([n]), rand([n])];
        K.swigluBackward(dg, du, dout, gate, up);
        R.swigluBackward(dgRef, duRef, dout, gate, up);
        assertClose(`swiglu dgate n=${n}`, dg.data, dgRef.data, TOL.swiglu);
        assertClose(`swiglu dup n=${n}`, du.data, duRef.data, TOL.swiglu);
        freeAll(gate, up, dout, out, outRef, dg, du, dgRef, duRef);
      }
    });

    it('cross-entropy: losses, total and dlogits, ignored rows, vocab not a multiple of 4', () => {
      for (const [t, v] of [[1, 1], [3, 7], [6, 50], [2, 1001]] as const) {
        const logits = rand([t, v], 3);
        const logitsRef = copy(logits);
        const labels = randomInts(t, 0, v);
        if (t > 2) labels[1] = -1;
        const [losses, lossesRef] = [rand([t]), rand([t])];
        const total = K.crossEntropy(logits, labels, losses, 0.25);
        const totalRef = R.crossEntropy(logitsRef, labels, lossesRef, 0.25);
        assert.ok(Math.abs(total - totalRef) <= TOL.crossEntropy * Math.max(1, Math.abs(totalRef)), `total ${total} vs ${totalRef}`);
        assertClose(`losses t=${t} v=${v}`, losses.data, lossesRef.data, TOL.crossEntropy);
        assertClose(`dlogits t=${t} v=${v}`, logits.data, logitsRef.data, TOL.crossEntropy);
        freeAll(logits, logitsRef, losses, lossesRef);
      }
    });

    it('embedding forward and backward with repeated ids', () => {
      const table = rand([11, 7]);
      const ids = Int32Array.from([3, 0, 10, 3, 3, 5]);
      const [out, outRef] = [rand([6, 7]), rand([6, 7])];
      K.embeddingForward(out, table, ids);
      R.embeddingForward(outRef, table, ids);
      assert.deepEqual(out.data, outRef.data);
      const dout = rand([6, 7]);
      const dtable = rand([11, 7]);
      const dtableRef = copy(dtable);
      K.embeddingBackward(dtable, dout, ids);
      R.embeddingBackward(dtableRef, dout, ids);
      assertClose('embedding dtable', dtable.data, dtableRef.data, TOL.elementwise);
      freeAll(table, out, outRef, dout, dtable, dtableRef);
    });

    it('adamw, axpy, scale, sumSquares (odd lengths)', () => {
      for (const n of [1, 2, 5, 64, 103]) {
        const [p, g, m] = [rand([n]), rand([n]), rand([n], 0.1)];
        const v = Tensor.from(arena, [n], randomArray(rng, n, 0.1).map((x) => x * x));
        const [pRef, mRef, vRef] = [copy(p), copy(m), copy(v)];
        const opts = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 };
        K.adamw(p, g, m, v, opts);
        R.adamw(pRef, g, mRef, vRef, opts);
        assertClose(`adamw param n=${n}`, p.data, pRef.data, TOL.adamw);
        assertClose(`adamw m n=${n}`, m.data, mRef.data, TOL.adamw);
        assertClose(`adamw v n=${n}`, v.data, vRef.data, TOL.adamw);
        const yRef = copy(p);
        K.axpy(p, g, -0.3);
        R.axpy(yRef, g, -0.3);
        assertClose(`axpy n=${n}`, p.data, yRef.data, TOL.elementwise);
        K.scale(p, 1.7);
        R.scale(yRef, 1.7);
        assertClose(`scale n=${n}`, p.data, yRef.data, TOL.elementwise);
        const ss = K.sumSquares(g);
        const ssRef = R.sumSquares(g);
        assert.ok(Math.abs(ss - ssRef) <= 1e-12 * ssRef, `sumSquares n=${n}: ${ss} vs ${ssRef}`);
        freeAll(p, g, m, v, pRef, mRef, vRef, yRef);
      }
    });
  });
}

describe('wasm kernels: bad input and bookkeeping', () => {
  const K = createWasmKernels(arena);

  it('rejects tensors from another arena, naming the tensor and both ranks', () => {
    const other = new Arena(1 << 20, 9);
    const x = Tensor.zeros(other, [4]);
    const y = Tensor.zeros(arena, [4]);
    assert.throws(() => K.axpy(y, x, 1), /axpy: x \[4\] lives in rank 9's arena, not in the arena of rank 3/);
    y.free();
  });

  it('rejects sizes, overlapping GEMM output, bad labels and ids like the reference does', () => {
    const a = Tensor.zeros(arena, [2, 3]);
    const b = Tensor.zeros(arena, [3, 4]);
    const c = Tensor.zeros(arena, [2, 4]);
    assert.throws(() => K.matmul(c, a, b, 2, 4, 2), /matmul: A has 6 elements \(shape \[2, 3\]\), expected 4 = M·K = 2·2/);
    const sq = Tensor.zeros(arena, [3, 3]);
    assert.throws(() => K.matmul(sq, sq, sq, 3, 3, 3), /matmul: C \[3, 3\] overlaps A \[3, 3\]/);
    const logits = Tensor.zeros(arena, [2, 4]);
    const losses = Tensor.zeros(arena, [2]);
    assert.throws(() => K.crossEntropy(logits, Int32Array.from([1, 4]), losses, 1), /crossEntropy: labels\[1\] = 4 is invalid: it must be in \[0, 4\) or −1/);
    assert.throws(() => K.embeddingForward(c, b, Int32Array.from([0, 3])), /embeddingForward: ids\[1\] = 3 is invalid: it must be in \[0, 3\)/);
    const q = Tensor.zeros(arena, [4, 2, 8]);
    const k = Tensor.zeros(arena, [5, 1, 8]);
    const lse = Tensor.zeros(arena, [4, 2]);
    assert.throws(() => K.attentionForward(q, k, k, q.reshape([4, 2, 8]), lse.rows(0, 3), { mask: NONE, scale: 1 }), /attention: lse has shape \[3, 2\], expected \[Sq, H\] = \[4, 2\]/);
    freeAll(a, b, c, sq, logits, losses, q, k, lse);
  });

  it('invalid attention masks are rejected naming the field, by the wasm and the reference backend alike, before any scratch is taken', () => {
    const q = Tensor.zeros(arena, [4, 2, 8]);
    const k = Tensor.zeros(arena, [5, 1, 8]);
    const out = Tensor.zeros(arena, [4, 2, 8]);
    const lse = Tensor.zeros(arena, [4, 2]);
    const [dq, dk, dv] = [Tensor.zeros(arena, q.shape), Tensor.zeros(arena, k.shape), Tensor.zeros(arena, k.shape)];
    const docs = (keyStart: number[], keyEnd: number[]): AttentionOptions => ({
      mask: { kind: 'documents', keyStart: Int32Array.from(keyStart), keyEnd: Int32Array.from(keyEnd) },
      scale: 1,
    });
    const bad: Array<[AttentionOptions, RegExp]> = [
      [docs([0, 0, 0, 0], [1, 2, 6, 5]), /attention: documents mask keyEnd\[2\] = 6 is outside \[0, Sk = 5\]/],
      [docs([0, 0, 7, 0], [1, 2, 3, 5]), /attention: documents mask keyStart\[2\] = 7 is outside \[0, Sk = 5\]/],
      [docs([0, -2, 0, 0], [1, 2, 3, 5]), /attention: documents mask keyStart\[1\] = -2 is outside \[0, Sk = 5\]/],
      [docs([0, 0, 0], [1, 2, 3, 5]), /attention: documents mask keyStart has 3 entries, expected one per query row \(Sq = 4\)/],
      [docs([0, 0, 0, 0], [1, 2, 3, 5, 5]), /attention: documents mask keyEnd has 5 entries, expected one per query row \(Sq = 4\)/],
      [{ mask: { kind: 'causal', offset: 1.5 }, scale: 1 }, /attention: causal mask offset = 1.5 is invalid: it must be an integer/],
      [{ mask: { kind: 'causal', offset: Number.POSITIVE_INFINITY }, scale: 1 }, /attention: causal mask offset = Infinity is invalid/],
    ];
    const live = arena.stats().liveBytes;
    const outBefore = Float32Array.from(out.data);
    for (const [name, backend] of [['wasm', K], ['reference', R]] as const) {
      for (const [opts, message] of bad) {
        assert.throws(() => backend.attentionForward(q, k, k, out, lse, opts), message, `${name} forward`);
        assert.throws(() => backend.attentionBackward(q, k, k, out, lse, q, dq, dk, dv, opts), message, `${name} backward`);
      }
    }
    assert.deepEqual(out.data, outBefore, 'nothing written');
    assert.equal(arena.stats().liveBytes, live, 'no scratch left behind');
    freeAll(q, k, out, lse, dq, dk, dv);
  });

  it('returns its scratch: arena live bytes are unchanged after each kernel, also when it throws inside the scratch region', () => {
    const live = arena.stats().liveBytes;
    const a = rand([40, 30]);
    const b = rand([30, 20]);
    const c = Tensor.zeros(arena, [40, 20]);
    const before = arena.stats().liveBytes;
    K.matmul(c, a, b, 40, 20, 30);
    assert.equal(arena.stats().liveBytes, before);
    assert.ok(arena.stats().peakByCategory.scratch > 0, 'GEMM packing is counted as scratch');
    // Option getters that throw, read only once the scratch is taken: the throw happens inside it.
    let scratchAtThrow = 0;
    const boom = (): never => {
      scratchAtThrow = arena.stats().liveByCategory.scratch;
      throw new Error('thrown inside the scratch region');
    };
    assert.throws(() => K.matmul(c, a, b, 40, 20, 30, { get accumulate(): boolean { return boom(); } }), /inside the scratch region/);
    assert.ok(scratchAtThrow > 0, 'matmul held its scratch when it threw');
    assert.equal(arena.stats().liveBytes, before);
    const q = rand([9, 2, 8]);
    const k = rand([9, 1, 8]);
    const out = Tensor.zeros(arena, [9, 2, 8]);
    const lse = Tensor.zeros(arena, [9, 2]);
    const [dq, dk, dv] = [Tensor.zeros(arena, q.shape), Tensor.zeros(arena, k.shape), Tensor.zeros(arena, k.shape)];
    const afterAttention = arena.stats().liveBytes;
    // The scale passes the argument checks (its first read), then throws when the kernel reads it inside the scratch region.
    const scaleThenBoom = (mask: AttentionOptions['mask']): AttentionOptions => {
      let reads = 0;
      return { mask, get scale(): number { return reads++ === 0 ? 0.5 : boom(); } };
    };
    for (const run of [
      () => K.attentionForward(q, k, k, out, lse, scaleThenBoom(CAUSAL)),
      () => K.attentionBackward(q, k, k, out, lse, q, dq, dk, dv, scaleThenBoom(CAUSAL)),
      () => K.attentionForward(q, k, k, out, lse, scaleThenBoom(randomRanges(rng, 9, 9))),
      () => K.attentionBackward(q, k, k, out, lse, q, dq, dk, dv, scaleThenBoom(randomRanges(rng, 9, 9))),
    ]) {
      scratchAtThrow = 0;
      assert.throws(run, /inside the scratch region/);
      assert.ok(scratchAtThrow > 0, 'attention held its scratch when it threw');
      assert.equal(arena.stats().liveBytes, afterAttention);
    }
    // A check that throws before the scratch is taken leaves nothing behind either.
    const logits = rand([2, 3]);
    const losses = Tensor.zeros(arena, [2]);
    const afterAlloc = arena.stats().liveBytes;
    assert.throws(() => K.crossEntropy(logits, Int32Array.from([0, 7]), losses, 1));
    assert.equal(arena.stats().liveBytes, afterAlloc);
    freeAll(a, b, c, q, k, out, lse, dq, dk, dv, logits, losses);
    assert.equal(arena.stats().liveBytes, live);
  });

  it('the arena refuses negative, fractional and non-finite sizes, naming the rank and the value', () => {
    const live = arena.stats().liveBytes;
    for (const bytes of [-5, -64, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(
        () => arena.allocBytes(bytes, 'scratch'),
        (e: unknown) => e instanceof RangeError && e.message.includes(`rank 3: arena allocation of ${bytes} bytes for scratch is invalid`),
      );
    }
    assert.equal(arena.stats().liveBytes, live, 'nothing was allocated');
    arena.freeBytes(arena.allocBytes(0, 'scratch'));
  });

  it('attention scratch sizes stay exact past 2^31 bytes and are refused clearly past 4 GiB, without allocating them', () => {
    // The module's sizing exports, called directly: nothing is allocated.
    const w = instantiate(wasmModule('plain').module, new Arena(1 << 16).memory);
    const d = 128;
    for (const [name, size] of [['attentionForward', w.attentionForwardScratchBytes], ['attentionBackward', w.attentionBackwardScratchBytes]] as const) {
      // The size is affine in S (a multiple of 8) for Sq = Sk = S: extrapolate from two small S.
      const at8 = size(8, 8, d);
      const step = size(16, 16, d) - at8;
      const expected = (s: number): number => at8 + ((s - 8) / 8) * step;
      for (const s of [4096, 400_000, 4_000_000]) assert.equal(size(s, s, d), expected(s), `${name} scratch at S = ${s}`);
      const long = size(4_000_000, 4_000_000, d);
      assert.ok(long > MAX_ARENA_BYTES, `${name}: S = 4e6 needs more than 4 GiB (${long} bytes)`);
      assert.throws(() => checkScratchBytes(name, long), new RegExp(`${name}: needs ${long} bytes of scratch, more than an arena can hold .*parallel\\.cp`));
    }
    const backward = w.attentionBackwardScratchBytes(400_000, 400_000, d);
    assert.ok(backward > 2 ** 31 && backward <= MAX_ARENA_BYTES, `backward at S = 400000 needs ${backward} bytes: past i32, within an arena`);
    assert.equal(checkScratchBytes('attentionBackward', backward), backward);
    for (const bad of [-5, 0, 1.5, Number.NaN]) {
      assert.throws(() => checkScratchBytes('attentionBackward', bad), new RegExp(`attentionBackward: scratch size ${bad} bytes is invalid`));
    }
  });
});
