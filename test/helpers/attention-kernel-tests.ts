import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { AttentionMask, AttentionOptions, Kernels } from '../../src/kernels/kernels.js';
import { referenceKernels as R } from '../../src/kernels/reference/index.js';
import { Arena } from '../../src/tensor/arena.js';
import type { Rng } from '../../src/tensor/rng.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { randomArray, refBackward, refForward, relError, type RefDims } from './attention-ref.js';
import { CAUSAL, documentMask, NONE, randomRanges, visibleOf } from './masks.js';

/*
 * The attention-kernel checks every backend with its own attention runs (wasm builds, blas's
 * GEMM tiles): forward and backward against the float64 reference of attention-ref.ts and the
 * reference kernel on every mask kind and awkward size, rows and keys with nothing visible,
 * blocks merged, and sentinels around every output.
 */

/** f32 tiles, online softmax and SIMD e^x (2 ulp), forward and backward (seen: 1e-6 forward, 2.8e-6 backward). */
export const ATTENTION_TOL = 1e-5;

/** Rows i < split see a few keys at the start, the others a few at the end: interior key tiles are seen by no row. */
export function farRanges(sq: number, sk: number, split: number): AttentionMask {
  const keyStart = Int32Array.from({ length: sq }, (_, i) => (i < split ? 0 : sk - 10 - (i % 4)));
  const keyEnd = Int32Array.from({ length: sq }, (_, i) => (i < split ? 5 + (i % 3) : sk));
  return { kind: 'documents', keyStart, keyEnd };
}

export interface AttentionCase {
  label?: string;
  sq: number;
  sk: number;
  heads: number;
  kvHeads: number;
  d: number;
  mask: AttentionMask;
}

function refDims(c: AttentionCase, scale: number): RefDims {
  const { sq, sk, heads, kvHeads, d } = c;
  return { sq, sk, heads, kvHeads, d, causal: false, visible: visibleOf(c.mask), scale };
}

/** Bytes the arena gives a tensor of `elements` f32 values (rounded up to 64). */
function blockBytes(elements: number): number {
  return Math.max(64, Math.ceil((elements * 4) / 64) * 64);
}

export /**
 * A zero tensor of `shape` allocated between two 16-float sentinels in `a`, which must be a fresh
 * arena (first fit then places the three back to back). `check` asserts that nothing outside
 * the tensor changed: both sentinels and the bytes between the tensor's end and its 64-byte block end.
 */
function guarded(a: Arena, shape: number[]): { t: Tensor; check(what: string): void } {
  const pattern = Float32Array.from({ length: 16 }, (_, i) => 1000 + i);
  const before = Tensor.from(a, [16], pattern);
  const t = Tensor.zeros(a, shape);
  const after = Tensor.from(a, [16], pattern);
  assert.equal(t.byteOffset, before.byteOffset + 64, 'the guarded tensor directly follows its first sentinel');
  assert.equal(after.byteOffset, t.byteOffset + blockBytes(t.size), 'the second sentinel directly follows the guarded tensor');
  return {
    t,
    check(what: string): void {
      assert.deepEqual(before.data, pattern, `${what}: the tensor allocated right before is unchanged`);
      assert.deepEqual(after.data, pattern, `${what}: the tensor allocated right after is unchanged`);
      const gap = new Uint8Array(a.buffer, t.byteOffset + t.size * 4, after.byteOffset - t.byteOffset - t.size * 4);
      assert.ok(gap.every((b) => b === 0), `${what}: the padding after the tensor is untouched`);
    },
  };
}

/**
 * Register the attention tests of one backend: `K` runs on `arena` (rng draws the inputs);
 * `fresh` makes the same backend over a new arena (for the sentinel tests); `extraCases` adds
 * cases (e.g. sizes past the backend's own block sizes).
 */
export function attentionKernelTests(label: string, K: Kernels, arena: Arena, fresh: (a: Arena) => Kernels, rng: Rng, extraCases: Array<AttentionCase & { label: string }> = []): void {
  const TOL = { attention: ATTENTION_TOL };
  const rand = (shape: number[], scale = 1): Tensor => Tensor.from(arena, shape, randomArray(rng, shape.reduce((a, b) => a * b, 1), scale));
  const freeAll = (...ts: Tensor[]): void => {
    for (const t of ts) t.free();
  };
  const assertClose = (what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number): void => {
    for (let i = 0; i < got.length; i++) assert.ok(!Number.isNaN(got[i]!), `${label} ${what}[${i}] is NaN`);
    const err = relError(got, want);
    assert.ok(err <= tol, `${label} ${what}: relative error ${err} > ${tol}`);
  };

  const attentionCases: Array<AttentionCase & { label: string }> = [
    { label: 'headDim 1, causal, one row', sq: 1, sk: 1, heads: 1, kvHeads: 1, d: 1, mask: CAUSAL },
    { label: 'headDim 1, non-causal rectangular', sq: 5, sk: 9, heads: 2, kvHeads: 1, d: 1, mask: NONE },
    { label: 'MHA causal, sizes not multiples of 4', sq: 7, sk: 7, heads: 2, kvHeads: 2, d: 6, mask: CAUSAL },
    { label: 'GQA 4:2 non-causal, d = 12', sq: 11, sk: 13, heads: 4, kvHeads: 2, d: 12, mask: NONE },
    { label: 'GQA 3:1 causal over several tiles (S = 130 > 64)', sq: 130, sk: 130, heads: 3, kvHeads: 1, d: 16, mask: CAUSAL },
    { label: 'non-causal over several tiles, d = 64', sq: 70, sk: 131, heads: 2, kvHeads: 1, d: 64, mask: NONE },
    { label: 'headDim 128, causal', sq: 67, sk: 67, heads: 2, kvHeads: 2, d: 128, mask: CAUSAL },
    { label: 'causal offset +63, Sq = 70 < Sk = 133', sq: 70, sk: 133, heads: 2, kvHeads: 1, d: 16, mask: { kind: 'causal', offset: 63 } },
    { label: 'causal offset −70, Sq = 133 > Sk = 70 (rows 0–69 see nothing)', sq: 133, sk: 70, heads: 3, kvHeads: 3, d: 8, mask: { kind: 'causal', offset: -70 } },
    { label: 'causal offset −5, Sq = Sk = 130, GQA 4:2, d = 5', sq: 130, sk: 130, heads: 4, kvHeads: 2, d: 5, mask: { kind: 'causal', offset: -5 } },
    { label: 'documents, random ranges (empty, single key, unaligned), GQA 4:2, d = 5, Sq = 70, Sk = 133', sq: 70, sk: 133, heads: 4, kvHeads: 2, d: 5, mask: randomRanges(rng, 70, 133) },
    { label: 'documents, random ranges, MQA 3:1, d = 64, Sq = 70, Sk = 133', sq: 70, sk: 133, heads: 3, kvHeads: 1, d: 64, mask: randomRanges(rng, 70, 133) },
    { label: 'documents, random ranges, Sq = 133, Sk = 9', sq: 133, sk: 9, heads: 2, kvHeads: 2, d: 7, mask: randomRanges(rng, 133, 9) },
    {
      label: 'documents from cu_seqlens: short documents in a 100-token block',
      sq: 100, sk: 100, heads: 2, kvHeads: 1, d: 12, mask: documentMask([0, 3, 17, 18, 40, 64, 65, 100], 0, 100, 0, 100),
    },
    {
      label: 'documents from cu_seqlens: query rows 20–99 of a 100-token block that starts mid-document',
      sq: 80, sk: 100, heads: 2, kvHeads: 2, d: 16, mask: documentMask([0, 130, 150, 151, 181, 300], 120, 80, 100, 100),
    },
    { label: 'documents: two far-apart key ranges, interior key tiles seen by no row', sq: 70, sk: 200, heads: 2, kvHeads: 1, d: 8, mask: farRanges(70, 200, 35) },
    {
      label: 'documents: every row empty',
      sq: 70, sk: 133, heads: 2, kvHeads: 1, d: 8,
      mask: { kind: 'documents', keyStart: Int32Array.from({ length: 70 }, (_, i) => [0, 133, 70, 9][i % 4]!), keyEnd: Int32Array.from({ length: 70 }, (_, i) => [0, 133, 3, 9][i % 4]!) },
    },
  ];

  for (const c of [...attentionCases, ...extraCases]) {
    it(`${label} attention forward and backward: ${c.label}`, () => {
      const scale = 1 / Math.sqrt(c.d);
      const opts: AttentionOptions = { mask: c.mask, scale };
      const dims = refDims(c, scale);
      const q = rand([c.sq, c.heads, c.d], 1.5);
      const k = rand([c.sk, c.kvHeads, c.d], 1.5);
      const v = rand([c.sk, c.kvHeads, c.d]);
      const dO = rand([c.sq, c.heads, c.d]);
      const out = rand([c.sq, c.heads, c.d]);
      const lse = rand([c.sq, c.heads]);
      K.attentionForward(q, k, v, out, lse, opts);
      const ref = refForward(q.data, k.data, v.data, dims);
      assertClose('out', out.data, ref.out, TOL.attention);
      assertClose('lse', lse.data, ref.lse, TOL.attention);
      // Rows without visible keys: exactly out 0 and lse −∞.
      for (let r = 0; r < c.sq * c.heads; r++) {
        if (ref.lse[r] !== -Infinity) continue;
        assert.equal(lse.data[r], -Infinity, `lse[${r}] of a row without visible keys`);
        assert.ok(out.data.subarray(r * c.d, (r + 1) * c.d).every((x) => x === 0), `out row ${r} without visible keys is 0`);
      }
      // The backward accumulates: start from random gradients and compare the increments.
      const [dq, dk, dv] = [rand(q.shape as number[]), rand(k.shape as number[]), rand(v.shape as number[])];
      const [dq0, dk0, dv0] = [Float64Array.from(dq.data), Float64Array.from(dk.data), Float64Array.from(dv.data)];
      K.attentionBackward(q, k, v, out, lse, dO, dq, dk, dv, opts);
      const g = refBackward(q.data, k.data, v.data, dO.data, dims);
      assertClose('dq', dq.data.map((x, i) => x - dq0[i]!), g.dq, TOL.attention);
      assertClose('dk', dk.data.map((x, i) => x - dk0[i]!), g.dk, TOL.attention);
      assertClose('dv', dv.data.map((x, i) => x - dv0[i]!), g.dv, TOL.attention);
      // Exact zeros: queries without visible keys (lse −∞) and keys no query sees add nothing.
      const rowLen = c.d;
      for (let r = 0; r < c.sq * c.heads; r++) {
        if (ref.lse[r] !== -Infinity) continue;
        for (let x = r * rowLen; x < (r + 1) * rowLen; x++) assert.equal(dq.data[x], Math.fround(dq0[x]!), `dq[${x}] of a row without visible keys is untouched`);
      }
      const seen = visibleOf(c.mask);
      for (let j = 0; j < c.sk; j++) {
        let any = false;
        for (let i = 0; i < c.sq && !any; i++) any = seen(i, j);
        if (any) continue;
        for (let x = j * c.kvHeads * c.d; x < (j + 1) * c.kvHeads * c.d; x++) {
          assert.equal(dk.data[x], Math.fround(dk0[x]!), `dk[${x}] of key ${j} that no query sees is untouched`);
          assert.equal(dv.data[x], Math.fround(dv0[x]!), `dv[${x}] of key ${j} that no query sees is untouched`);
        }
      }
      // And the reference kernel, fed the same f32 inputs.
      const [ro, rl] = [Tensor.zeros(arena, out.shape), Tensor.zeros(arena, lse.shape)];
      R.attentionForward(q, k, v, ro, rl, opts);
      assertClose('out vs reference kernel', out.data, ro.data, TOL.attention);
      assertClose('lse vs reference kernel', lse.data, rl.data, TOL.attention);
      const [rq, rk, rv] = [Tensor.zeros(arena, q.shape), Tensor.zeros(arena, k.shape), Tensor.zeros(arena, v.shape)];
      R.attentionBackward(q, k, v, out, lse, dO, rq, rk, rv, opts);
      assertClose('dq vs reference kernel', dq.data.map((x, i) => x - dq0[i]!), rq.data, TOL.attention);
      assertClose('dk vs reference kernel', dk.data.map((x, i) => x - dk0[i]!), rk.data, TOL.attention);
      assertClose('dv vs reference kernel', dv.data.map((x, i) => x - dv0[i]!), rv.data, TOL.attention);
      freeAll(q, k, v, dO, out, lse, dq, dk, dv, ro, rl, rq, rk, rv);
    });
  }

  it(`${label} ` + 'attention: no visible key (Sk = 0) gives out 0 and lse −∞; lse −∞ rows add no gradient', () => {
    const q = rand([3, 2, 5]);
    const k0 = rand([0, 1, 5]);
    const out = rand([3, 2, 5]);
    const lse = rand([3, 2]);
    K.attentionForward(q, k0, k0, out, lse, { mask: NONE, scale: 0.4 });
    assert.ok(out.data.every((x) => x === 0));
    assert.ok(lse.data.every((x) => x === -Infinity));
    // A block with keys, given a final lse of −∞ for every row: nothing may change, no NaN.
    const k = rand([4, 1, 5]);
    const v = rand([4, 1, 5]);
    const dO = rand([3, 2, 5]);
    const [dq, dk, dv] = [rand([3, 2, 5]), rand([4, 1, 5]), rand([4, 1, 5])];
    const before = [Float32Array.from(dq.data), Float32Array.from(dk.data), Float32Array.from(dv.data)];
    for (const mask of [NONE, CAUSAL, { kind: 'causal', offset: 2 } as const, randomRanges(rng, 3, 4)]) {
      K.attentionBackward(q, k, v, out, lse, dO, dq, dk, dv, { mask, scale: 0.4 });
      assert.deepEqual([dq.data, dk.data, dv.data], before, `mask ${mask.kind}`);
    }
    freeAll(q, k0, out, lse, k, v, dO, dq, dk, dv);
  });

  it(`${label} ` + 'attention: a mask under which no row sees any key gives out 0 and lse −∞, and adds no gradient even given finite lse', () => {
    const [sq, sk, heads, d] = [70, 90, 2, 8];
    const q = rand([sq, heads, d]);
    const k = rand([sk, 1, d]);
    const v = rand([sk, 1, d]);
    const dO = rand([sq, heads, d]);
    const out = rand([sq, heads, d]);
    const lse = rand([sq, heads]);
    const empty: AttentionMask = { kind: 'documents', keyStart: Int32Array.from({ length: sq }, (_, i) => (i * 7) % (sk + 1)), keyEnd: Int32Array.from({ length: sq }, (_, i) => (i * 7) % (sk + 1) - (i % 2)).map((x) => Math.max(0, x)) };
    for (let i = 0; i < sq; i++) assert.ok(empty.keyStart[i]! >= empty.keyEnd[i]!, 'every row is empty');
    for (const mask of [empty, { kind: 'causal', offset: -sq } as const]) {
      K.attentionForward(q, k, v, out, lse, { mask, scale: 0.3 });
      assert.ok(out.data.every((x) => x === 0), `${mask.kind}: out is 0`);
      assert.ok(lse.data.every((x) => x === -Infinity), `${mask.kind}: lse is −∞`);
      // The final lse of these rows comes from other blocks: finite. The block still adds nothing.
      const final = rand([sq, heads]);
      const [dq, dk, dv] = [rand([sq, heads, d]), rand([sk, 1, d]), rand([sk, 1, d])];
      const before = [Float32Array.from(dq.data), Float32Array.from(dk.data), Float32Array.from(dv.data)];
      K.attentionBackward(q, k, v, out, final, dO, dq, dk, dv, { mask, scale: 0.3 });
      assert.deepEqual([dq.data, dk.data, dv.data], before, `${mask.kind}: gradients untouched`);
      freeAll(final, dq, dk, dv);
    }
    freeAll(q, k, v, dO, out, lse);
  });

  it(`${label} ` + 'attention: key blocks of a document mask, merged, equal the full attention; block backwards with the final lse sum to the full gradients', () => {
    const [s, heads, kvHeads, d] = [150, 2, 1, 16];
    const cu = [0, 20, 21, 90, 150];
    const scale = 1 / Math.sqrt(d);
    const full = { sq: s, sk: s, heads, kvHeads, d, mask: documentMask(cu, 0, s, 0, s) };
    const q = rand([s, heads, d], 1.5);
    const k = rand([s, kvHeads, d], 1.5);
    const v = rand([s, kvHeads, d]);
    const dO = rand([s, heads, d]);
    const ref = refForward(q.data, k.data, v.data, refDims(full, scale));
    const grads = refBackward(q.data, k.data, v.data, dO.data, refDims(full, scale));
    const o = Tensor.zeros(arena, [s, heads, d]);
    const l = Tensor.zeros(arena, [s, heads]);
    l.data.fill(-Infinity);
    const ob = Tensor.zeros(arena, [s, heads, d]);
    const lb = Tensor.zeros(arena, [s, heads]);
    const bounds: Array<[number, number]> = [[0, 64], [64, 101], [101, 150]];
    for (const [a, b] of bounds) {
      K.attentionForward(q, k.rows(a, b), v.rows(a, b), ob, lb, { mask: documentMask(cu, 0, s, a, b - a), scale });
      K.mergeAttention(o, l, ob, lb);
    }
    assertClose('merged out', o.data, ref.out, TOL.attention);
    assertClose('merged lse', l.data, ref.lse, TOL.attention);
    const [dq, dk, dv] = [Tensor.zeros(arena, q.shape), Tensor.zeros(arena, k.shape), Tensor.zeros(arena, v.shape)];
    for (const [a, b] of bounds) {
      K.attentionBackward(q, k.rows(a, b), v.rows(a, b), o, l, dO, dq, dk.rows(a, b), dv.rows(a, b), { mask: documentMask(cu, 0, s, a, b - a), scale });
    }
    assertClose('dq from blocks', dq.data, grads.dq, TOL.attention);
    assertClose('dk from blocks', dk.data, grads.dk, TOL.attention);
    assertClose('dv from blocks', dv.data, grads.dv, TOL.attention);
    freeAll(q, k, v, dO, o, l, ob, lb, dq, dk, dv);
  });

  it(`${label} ` + 'attention: a scale that is not a positive finite number is refused by forward and backward, naming the value, and nothing is written', () => {
    const q = rand([3, 2, 4]);
    const k = rand([5, 2, 4]);
    const v = rand([5, 2, 4]);
    const out = rand([3, 2, 4]);
    const lse = rand([3, 2]);
    const [dq, dk, dv] = [rand([3, 2, 4]), rand([5, 2, 4]), rand([5, 2, 4])];
    const before = [out, lse, dq, dk, dv].map((t) => Float32Array.from(t.data));
    // 1e39 is finite as an f64 but +∞ as the f32 the wasm and blas kernels take.
    for (const scale of [0, -0.5, Number.NaN, Number.POSITIVE_INFINITY, 1e39]) {
      const wrong = new RegExp(`scale = ${String(scale).replace(/[-+]/g, '\\$&')} is invalid: it must be a positive finite number`);
      assert.throws(() => K.attentionForward(q, k, v, out, lse, { mask: NONE, scale }), wrong, `forward, scale ${scale}`);
      assert.throws(() => K.attentionBackward(q, k, v, out, lse, q, dq, dk, dv, { mask: CAUSAL, scale }), wrong, `backward, scale ${scale}`);
    }
    assert.deepEqual([out, lse, dq, dk, dv].map((t) => t.data), before, 'the refused calls wrote nothing');
    freeAll(q, k, v, out, lse, dq, dk, dv);
  });

  it(`${label} ` + 'attention: an lse laid out [H, Sq] (or flat) is refused by forward and backward, naming the shape, and nothing is written', () => {
    // Sq = 3 ≠ H = 2: [H, Sq] has the right size but would be read transposed.
    const q = rand([3, 2, 4]);
    const k = rand([5, 2, 4]);
    const v = rand([5, 2, 4]);
    const out = rand([3, 2, 4]);
    const wrong = /lse has shape \[(2, 3|6)\], expected \[Sq, H\] = \[3, 2\]/;
    for (const lse of [rand([2, 3]), rand([6])]) {
      const [dq, dk, dv] = [rand([3, 2, 4]), rand([5, 2, 4]), rand([5, 2, 4])];
      const before = [out, lse, dq, dk, dv].map((t) => Float32Array.from(t.data));
      assert.throws(() => K.attentionForward(q, k, v, out, lse, { mask: NONE, scale: 0.5 }), wrong, `forward, lse ${JSON.stringify(lse.shape)}`);
      assert.throws(() => K.attentionBackward(q, k, v, out, lse, q, dq, dk, dv, { mask: CAUSAL, scale: 0.5 }), wrong, `backward, lse ${JSON.stringify(lse.shape)}`);
      assert.deepEqual([out, lse, dq, dk, dv].map((t) => t.data), before, 'the refused calls wrote nothing');
      // The same call with lse [Sq, H] runs: the refusal is the layout, not the call.
      const good = rand([3, 2]);
      K.attentionForward(q, k, v, out, good, { mask: NONE, scale: 0.5 });
      assert.ok(good.data.every(Number.isFinite), 'lse [Sq, H] is accepted and written');
      freeAll(lse, dq, dk, dv, good);
    }
    freeAll(q, k, v, out);
  });

  it(`${label} ` + 'attention forward and backward write nothing outside out, lse, dq, dk, dv', () => {
    const cases: AttentionCase[] = [
      { sq: 13, sk: 13, heads: 3, kvHeads: 1, d: 6, mask: CAUSAL },
      { sq: 8, sk: 8, heads: 2, kvHeads: 2, d: 8, mask: CAUSAL },
      { sq: 5, sk: 70, heads: 2, kvHeads: 1, d: 12, mask: NONE },
      { sq: 13, sk: 21, heads: 2, kvHeads: 1, d: 6, mask: randomRanges(rng, 13, 21) },
      { sq: 70, sk: 9, heads: 1, kvHeads: 1, d: 5, mask: randomRanges(rng, 70, 9) },
      { sq: 11, sk: 30, heads: 2, kvHeads: 2, d: 4, mask: { kind: 'causal', offset: 17 } },
    ];
    for (const c of cases) {
      const what = `attention ${JSON.stringify({ ...c, mask: c.mask.kind })}`;
      const own = new Arena(8 << 20, 7);
      const W = fresh(own);
      const qShape = [c.sq, c.heads, c.d];
      const kShape = [c.sk, c.kvHeads, c.d];
      const [q, dO] = [0, 1].map(() => Tensor.from(own, qShape, randomArray(rng, c.sq * c.heads * c.d, 1)));
      const [k, v] = [0, 1].map(() => Tensor.from(own, kShape, randomArray(rng, c.sk * c.kvHeads * c.d, 1)));
      const out = guarded(own, qShape);
      const lse = guarded(own, [c.sq, c.heads]);
      const opts: AttentionOptions = { mask: c.mask, scale: 1 / Math.sqrt(c.d) };
      W.attentionForward(q!, k!, v!, out.t, lse.t, opts);
      out.check(`${what} forward: out`);
      lse.check(`${what} forward: lse`);
      const [dq, dk, dv] = [guarded(own, qShape), guarded(own, kShape), guarded(own, kShape)];
      W.attentionBackward(q!, k!, v!, out.t, lse.t, dO!, dq.t, dk.t, dv.t, opts);
      for (const [name, g] of [['dq', dq], ['dk', dk], ['dv', dv]] as const) g.check(`${what} backward: ${name}`);
      const ref = refBackward(q!.data, k!.data, v!.data, dO!.data, refDims(c, opts.scale));
      assertClose(`${what} dq`, dq.t.data, ref.dq, TOL.attention);
      assertClose(`${what} dk`, dk.t.data, ref.dk, TOL.attention);
      assertClose(`${what} dv`, dv.t.data, ref.dv, TOL.attention);
    }
  });
}
