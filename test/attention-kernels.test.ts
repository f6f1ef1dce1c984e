import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LocalAttention } from '../src/attention/local.js';
import type { AttentionMask, AttentionOptions } from '../src/kernels/kernels.js';
import { replicatedKvHeads, replicateKvHeads, sumKvReplicas } from '../src/attention/ulysses.js';
import { attentionBackward, attentionForward, mergeAttention } from '../src/kernels/reference/attention.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { SequenceLayout } from '../src/parallel/sequence-layout.js';
import { localLayout } from './helpers/layouts.js';
import { CAUSAL, documentMask, NONE, randomRanges, visibleOf } from './helpers/masks.js';
import { randomArray, refBackward, refForward, relError, type RefDims } from './helpers/attention-ref.js';

const TOL = 1e-5;
const arena = new Arena(16 << 20);
const kernels = { attentionForward, attentionBackward, mergeAttention };

function rand(rng: Rng, shape: number[], scale = 1): Tensor {
  return Tensor.from(arena, shape, randomArray(rng, shape.reduce((a, b) => a * b, 1), scale));
}

function assertClose(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tol = TOL): void {
  const e = relError(got, want);
  assert.ok(e <= tol, `${name}: relative error ${e} > ${tol}`);
}

function assertNoNaN(name: string, x: ArrayLike<number>): void {
  for (let i = 0; i < x.length; i++) assert.ok(!Number.isNaN(x[i]!), `${name}[${i}] is NaN`);
}

function freeAll(...ts: Tensor[]): void {
  for (const t of ts) t.free();
}


interface Case {
  label: string;
  sq: number;
  sk: number;
  heads: number;
  kvHeads: number;
  d: number;
  mask: AttentionMask;
}

function refDims(c: Case, scale?: number): RefDims {
  const { sq, sk, heads, kvHeads, d } = c;
  return { sq, sk, heads, kvHeads, d, causal: false, visible: visibleOf(c.mask), ...(scale !== undefined ? { scale } : {}) };
}

const maskRng = new Rng(4242);
const CASES: Case[] = [
  { label: 'MHA causal', sq: 7, sk: 7, heads: 2, kvHeads: 2, d: 4, mask: CAUSAL },
  { label: 'MHA non-causal', sq: 7, sk: 7, heads: 2, kvHeads: 2, d: 4, mask: NONE },
  { label: 'GQA non-causal rectangular, d odd', sq: 6, sk: 9, heads: 4, kvHeads: 2, d: 5, mask: NONE },
  { label: 'GQA causal 3:1', sq: 8, sk: 8, heads: 6, kvHeads: 2, d: 3, mask: CAUSAL },
  { label: 'Sq = 1 non-causal, MQA', sq: 1, sk: 5, heads: 2, kvHeads: 1, d: 4, mask: NONE },
  { label: 'Sq = Sk = 1 causal', sq: 1, sk: 1, heads: 2, kvHeads: 2, d: 4, mask: CAUSAL },
  { label: 'd = 1 causal', sq: 5, sk: 5, heads: 3, kvHeads: 3, d: 1, mask: CAUSAL },
  { label: 'd = 7 non-causal', sq: 4, sk: 6, heads: 2, kvHeads: 2, d: 7, mask: NONE },
  { label: 'causal offset +3, Sq < Sk', sq: 5, sk: 9, heads: 2, kvHeads: 1, d: 4, mask: { kind: 'causal', offset: 3 } },
  { label: 'causal offset −2 (rows 0, 1 see nothing), GQA', sq: 7, sk: 7, heads: 4, kvHeads: 2, d: 3, mask: { kind: 'causal', offset: -2 } },
  { label: 'causal offset −3, Sq > Sk', sq: 9, sk: 4, heads: 2, kvHeads: 2, d: 5, mask: { kind: 'causal', offset: -3 } },
  { label: 'causal offset past Sk (every key visible)', sq: 4, sk: 6, heads: 1, kvHeads: 1, d: 2, mask: { kind: 'causal', offset: 40 } },
  { label: 'documents, random ranges with empty and single-key rows, MQA', sq: 13, sk: 11, heads: 3, kvHeads: 1, d: 5, mask: randomRanges(maskRng, 13, 11) },
  { label: 'documents, random ranges, GQA d = 6', sq: 9, sk: 20, heads: 4, kvHeads: 2, d: 6, mask: randomRanges(maskRng, 9, 20) },
  {
    label: 'documents from cu_seqlens over a 30-token block',
    sq: 30, sk: 30, heads: 2, kvHeads: 1, d: 4, mask: documentMask([0, 4, 5, 17, 30], 0, 30, 0, 30),
  },
  {
    label: 'documents: query rows 5–29 of a 30-token block that starts mid-document',
    sq: 25, sk: 30, heads: 2, kvHeads: 2, d: 3, mask: documentMask([0, 50, 61, 80, 200], 45, 25, 40, 30),
  },
  {
    label: 'documents, every row empty',
    sq: 5, sk: 6, heads: 2, kvHeads: 1, d: 4, mask: { kind: 'documents', keyStart: Int32Array.from([0, 3, 6, 5, 2]), keyEnd: Int32Array.from([0, 3, 6, 1, 0]) },
  },
];

describe('reference attention kernels against float64', () => {
  for (const c of CASES) {
    it(`forward and backward: ${c.label}`, () => {
      const rng = new Rng(17 + c.sq * 31 + c.d);
      const q = rand(rng, [c.sq, c.heads, c.d], 1.5);
      const k = rand(rng, [c.sk, c.kvHeads, c.d], 1.5);
      const v = rand(rng, [c.sk, c.kvHeads, c.d]);
      const dO = rand(rng, [c.sq, c.heads, c.d]);
      const out = Tensor.zeros(arena, [c.sq, c.heads, c.d]);
      const lse = Tensor.zeros(arena, [c.sq, c.heads]);
      const opts: AttentionOptions = { mask: c.mask, scale: 1 / Math.sqrt(c.d) };
      const dims = refDims(c);
      attentionForward(q, k, v, out, lse, opts);
      const ref = refForward(q.data, k.data, v.data, dims);
      assertNoNaN('out', out.data);
      assertClose('out', out.data, ref.out);
      assertClose('lse', lse.data, ref.lse);

      // Gradients accumulate: start from non-zero buffers and expect start + reference.
      const dq = rand(rng, [c.sq, c.heads, c.d]);
      const dk = rand(rng, [c.sk, c.kvHeads, c.d]);
      const dv = rand(rng, [c.sk, c.kvHeads, c.d]);
      const start = [Float64Array.from(dq.data), Float64Array.from(dk.data), Float64Array.from(dv.data)];
      attentionBackward(q, k, v, out, lse, dO, dq, dk, dv, opts);
      const g = refBackward(q.data, k.data, v.data, dO.data, dims);
      const plus = (a: Float64Array, b: Float64Array): Float64Array => a.map((x, i) => x + b[i]!);
      assertClose('dq', dq.data, plus(start[0]!, g.dq));
      assertClose('dk', dk.data, plus(start[1]!, g.dk));
      assertClose('dv', dv.data, plus(start[2]!, g.dv));
      if (ref.lse.every((x) => x === -Infinity)) {
        assert.deepEqual([dq.data, dk.data, dv.data].map((x) => Float64Array.from(x)), start, 'no visible key at all: gradients untouched');
      }
      // Rows that see no key: out exactly 0 and lse −∞ (the reference marks them −∞ too).
      for (let i = 0; i < c.sq * c.heads; i++) {
        if (ref.lse[i] !== -Infinity) continue;
        assert.equal(lse.data[i], -Infinity, `lse[${i}] of a row without visible keys`);
        assert.ok(out.data.subarray(i * c.d, (i + 1) * c.d).every((x) => x === 0), `out row ${i} without visible keys is 0`);
      }
      freeAll(q, k, v, dO, out, lse, dq, dk, dv);
    });
  }

  it('key blocks merged in any order, including an empty block (lse −∞), equal the full attention; block backwards sum to the full gradients', () => {
    const dims: RefDims = { sq: 6, sk: 10, heads: 4, kvHeads: 2, d: 4, causal: false };
    const rng = new Rng(5);
    const q = rand(rng, [6, 4, 4], 2);
    const k = rand(rng, [10, 2, 4], 2);
    const v = rand(rng, [10, 2, 4]);
    const dO = rand(rng, [6, 4, 4]);
    const ref = refForward(q.data, k.data, v.data, dims);
    const grads = refBackward(q.data, k.data, v.data, dO.data, dims);
    const opts: AttentionOptions = { mask: NONE, scale: 0.5 };
    const bounds: Array<[number, number]> = [[4, 4], [0, 3], [3, 4], [4, 10]];
    for (const order of [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]]) {
      const o = Tensor.zeros(arena, [6, 4, 4]);
      const l = Tensor.zeros(arena, [6, 4]);
      l.data.fill(-Infinity);
      const ob = Tensor.zeros(arena, [6, 4, 4]);
      const lb = Tensor.zeros(arena, [6, 4]);
      for (const b of order) {
        const [s, e] = bounds[b]!;
        attentionForward(q, k.rows(s, e), v.rows(s, e), ob, lb, opts);
        if (s === e) {
          assert.ok(lb.data.every((x) => x === -Infinity), 'a block without keys has lse −∞');
          assert.ok(ob.data.every((x) => x === 0), 'a block without keys has output 0');
        }
        mergeAttention(o, l, ob, lb);
      }
      assertClose(`merged out, order ${order}`, o.data, ref.out);
      assertClose(`merged lse, order ${order}`, l.data, ref.lse);

      const dq = Tensor.zeros(arena, [6, 4, 4]);
      const dk = Tensor.zeros(arena, [10, 2, 4]);
      const dv = Tensor.zeros(arena, [10, 2, 4]);
      for (const [s, e] of bounds) {
        attentionBackward(q, k.rows(s, e), v.rows(s, e), o, l, dO, dq, dk.rows(s, e), dv.rows(s, e), opts);
      }
      assertClose('dq from blocks', dq.data, grads.dq);
      assertClose('dk from blocks', dk.data, grads.dk);
      assertClose('dv from blocks', dv.data, grads.dv);
      freeAll(o, l, ob, lb, dq, dk, dv);
    }
    freeAll(q, k, v, dO);
  });

  it('rows with lse −∞ give exact zero gradients and no NaN', () => {
    const rng = new Rng(9);
    const q = rand(rng, [4, 2, 3]);
    const k = rand(rng, [4, 2, 3]);
    const v = rand(rng, [4, 2, 3]);
    const dO = rand(rng, [4, 2, 3]);
    const o = Tensor.zeros(arena, [4, 2, 3]);
    const lse = Tensor.zeros(arena, [4, 2]);
    lse.data.fill(-Infinity);
    const dq = Tensor.zeros(arena, [4, 2, 3]);
    const dk = Tensor.zeros(arena, [4, 2, 3]);
    const dv = Tensor.zeros(arena, [4, 2, 3]);
    const docs: AttentionMask = { kind: 'documents', keyStart: Int32Array.from([0, 1, 2, 3]), keyEnd: Int32Array.from([4, 2, 2, 4]) };
    for (const mask of [CAUSAL, NONE, { kind: 'causal', offset: -1 } as const, docs]) attentionBackward(q, k, v, o, lse, dO, dq, dk, dv, { mask, scale: 1 });
    for (const [name, t] of [['dq', dq], ['dk', dk], ['dv', dv]] as const) {
      assert.ok(t.data.every((x) => x === 0), `${name} is exactly 0`);
    }
    freeAll(q, k, v, dO, o, lse, dq, dk, dv);
  });

  it('key blocks under causal masks with offsets, merged, equal the full causal attention; their backwards sum to the full gradients', () => {
    // Key block [s, e) of a causal sequence: query i sees global key s + j ≤ i, so offset −s.
    const dims: RefDims = { sq: 11, sk: 11, heads: 2, kvHeads: 1, d: 3, causal: true };
    const rng = new Rng(77);
    const q = rand(rng, [11, 2, 3], 1.5);
    const k = rand(rng, [11, 1, 3], 1.5);
    const v = rand(rng, [11, 1, 3]);
    const dO = rand(rng, [11, 2, 3]);
    const ref = refForward(q.data, k.data, v.data, dims);
    const grads = refBackward(q.data, k.data, v.data, dO.data, dims);
    const o = Tensor.zeros(arena, [11, 2, 3]);
    const l = Tensor.zeros(arena, [11, 2]);
    l.data.fill(-Infinity);
    const ob = Tensor.zeros(arena, [11, 2, 3]);
    const lb = Tensor.zeros(arena, [11, 2]);
    const bounds: Array<[number, number]> = [[0, 3], [3, 8], [8, 11]];
    for (const [s, e] of bounds) {
      attentionForward(q, k.rows(s, e), v.rows(s, e), ob, lb, { mask: { kind: 'causal', offset: -s }, scale: 1 / Math.sqrt(3) });
      mergeAttention(o, l, ob, lb);
    }
    assertClose('merged out', o.data, ref.out);
    assertClose('merged lse', l.data, ref.lse);
    const dq = Tensor.zeros(arena, [11, 2, 3]);
    const dk = Tensor.zeros(arena, [11, 1, 3]);
    const dv = Tensor.zeros(arena, [11, 1, 3]);
    for (const [s, e] of bounds) {
      attentionBackward(q, k.rows(s, e), v.rows(s, e), o, l, dO, dq, dk.rows(s, e), dv.rows(s, e), { mask: { kind: 'causal', offset: -s }, scale: 1 / Math.sqrt(3) });
    }
    assertClose('dq from blocks', dq.data, grads.dq);
    assertClose('dk from blocks', dk.data, grads.dk);
    assertClose('dv from blocks', dv.data, grads.dv);
    freeAll(q, k, v, dO, o, l, ob, lb, dq, dk, dv);
  });

  it('invalid masks and mismatched heads are rejected, naming the field or the shapes', () => {
    const q = Tensor.zeros(arena, [3, 2, 4]);
    const k = Tensor.zeros(arena, [5, 2, 4]);
    const k3 = Tensor.zeros(arena, [3, 3, 4]);
    const out = Tensor.zeros(arena, [3, 2, 4]);
    const lse = Tensor.zeros(arena, [3, 2]);
    const docs = (keyStart: number[], keyEnd: number[]): AttentionOptions => ({
      mask: { kind: 'documents', keyStart: Int32Array.from(keyStart), keyEnd: Int32Array.from(keyEnd) },
      scale: 1,
    });
    assert.throws(() => attentionForward(q, k, k, out, lse, docs([0, 0, 0], [1, 6, 2])), /documents mask keyEnd\[1\] = 6 is outside \[0, Sk = 5\]/);
    assert.throws(() => attentionForward(q, k, k, out, lse, docs([0, -1, 0], [1, 1, 2])), /documents mask keyStart\[1\] = -1 is outside \[0, Sk = 5\]/);
    assert.throws(() => attentionForward(q, k, k, out, lse, docs([0, 0], [1, 1, 2])), /documents mask keyStart has 2 entries, expected one per query row \(Sq = 3\)/);
    assert.throws(() => attentionForward(q, k, k, out, lse, docs([0, 0, 0], [1, 1, 2, 2])), /documents mask keyEnd has 4 entries, expected one per query row \(Sq = 3\)/);
    assert.throws(() => attentionForward(q, k, k, out, lse, { mask: { kind: 'causal', offset: 0.5 }, scale: 1 }), /causal mask offset = 0.5 is invalid: it must be an integer/);
    const [dq, dk, dv] = [Tensor.zeros(arena, [3, 2, 4]), Tensor.zeros(arena, [5, 2, 4]), Tensor.zeros(arena, [5, 2, 4])];
    assert.throws(() => attentionBackward(q, k, k, out, lse, q, dq, dk, dv, docs([0, 0, 0], [1, 6, 2])), /documents mask keyEnd\[1\] = 6 is outside/);
    assert.throws(() => attentionBackward(q, k, k, out, lse, q, dq, dk, dv, { mask: { kind: 'causal', offset: Number.NaN }, scale: 1 }), /causal mask offset = NaN is invalid/);
    assert.throws(() => attentionForward(q, k3, k3, out, lse, { mask: NONE, scale: 1 }), /q heads 2 must be a positive multiple of k heads 3/);
    freeAll(q, k, k3, out, lse, dq, dk, dv);
  });

  it('F3: an lse laid out [H, Sq] (the varlen layout of other kernels) is refused by producer and consumer, not read transposed', () => {
    const q = Tensor.zeros(arena, [3, 2, 4]);
    const k = Tensor.zeros(arena, [5, 2, 4]);
    const out = Tensor.zeros(arena, [3, 2, 4]);
    const transposed = Tensor.zeros(arena, [2, 3]);
    const flat = Tensor.zeros(arena, [6]);
    const opts: AttentionOptions = { mask: NONE, scale: 1 };
    for (const lse of [transposed, flat]) {
      assert.throws(() => attentionForward(q, k, k, out, lse, opts), /lse has shape \[(2, 3|6)\], expected \[Sq, H\] = \[3, 2\]/);
      const [dq, dk, dv] = [Tensor.zeros(arena, [3, 2, 4]), Tensor.zeros(arena, [5, 2, 4]), Tensor.zeros(arena, [5, 2, 4])];
      assert.throws(() => attentionBackward(q, k, k, out, lse, q, dq, dk, dv, opts), /lse has shape \[(2, 3|6)\], expected \[Sq, H\] = \[3, 2\]/);
      freeAll(dq, dk, dv);
    }
    freeAll(q, k, out, transposed, flat);
  });
});

describe('mergeAttention (stable form, algorithms.md §5)', () => {
  const rows = 3;
  const heads = 2;
  const d = 4;

  /** Float64 merge by the log-sum-exp definition. */
  function refMerge(o: ArrayLike<number>, l: ArrayLike<number>, ob: ArrayLike<number>, lb: ArrayLike<number>) {
    const out = new Float64Array(o.length);
    const lse = new Float64Array(l.length);
    for (let r = 0; r < l.length; r++) {
      const m = Math.max(l[r]!, lb[r]!);
      if (m === -Infinity) {
        lse[r] = -Infinity;
        continue;
      }
      const wa = Math.exp(l[r]! - m);
      const wb = Math.exp(lb[r]! - m);
      lse[r] = m + Math.log(wa + wb);
      for (let c = 0; c < d; c++) out[r * d + c] = (wa * o[r * d + c]! + wb * ob[r * d + c]!) / (wa + wb);
    }
    return { out, lse };
  }

  function runMerge(lseA: (r: number) => number, lseB: (r: number) => number, seed: number) {
    const rng = new Rng(seed);
    const o = rand(rng, [rows, heads, d]);
    const ob = rand(rng, [rows, heads, d]);
    const l = Tensor.from(arena, [rows, heads], Array.from({ length: rows * heads }, (_, r) => lseA(r)));
    const lb = Tensor.from(arena, [rows, heads], Array.from({ length: rows * heads }, (_, r) => lseB(r)));
    // A −∞ side has no keys: its output is 0 as the kernel writes it.
    for (let r = 0; r < rows * heads; r++) {
      if (l.data[r] === -Infinity) o.data.fill(0, r * d, (r + 1) * d);
      if (lb.data[r] === -Infinity) ob.data.fill(0, r * d, (r + 1) * d);
    }
    const want = refMerge(o.data, l.data, ob.data, lb.data);
    mergeAttention(o, l, ob, lb);
    const got = { out: Float64Array.from(o.data), lse: Float64Array.from(l.data) };
    freeAll(o, ob, l, lb);
    return { got, want };
  }

  for (const gap of [0, 50, 200, 1e4]) {
    for (const sign of [1, -1]) {
      it(`LSE gap ${sign * gap}`, () => {
        const base = (r: number) => 0.3 * r - 1;
        const { got, want } = runMerge(base, (r) => base(r) + sign * gap, gap + sign);
        assertNoNaN('out', got.out);
        assertNoNaN('lse', got.lse);
        assertClose('out', got.out, want.out);
        assertClose('lse', got.lse, want.lse);
        if (gap >= 200) {
          // Past a gap of ~88 the smaller side vanishes in f32: the result is the larger side.
          assert.ok(relError(got.out, want.out) < 1e-7);
        }
      });
    }
  }

  it('−∞ on the running side takes the block; on the block side keeps the running result; on both stays (0, −∞)', () => {
    const cases: Array<[string, (r: number) => number, (r: number) => number]> = [
      ['running −∞', () => -Infinity, (r) => r - 2],
      ['block −∞', (r) => r - 2, () => -Infinity],
      ['both −∞', () => -Infinity, () => -Infinity],
      ['mixed per row', (r) => (r % 2 === 0 ? -Infinity : r), (r) => (r % 3 === 0 ? -Infinity : -r)],
    ];
    for (const [label, a, b] of cases) {
      const { got, want } = runMerge(a, b, 3);
      assertNoNaN(`${label} out`, got.out);
      assertNoNaN(`${label} lse`, got.lse);
      assertClose(`${label} out`, got.out, want.out);
      assert.deepEqual(Array.from(got.lse, (x) => x === -Infinity), Array.from(want.lse, (x) => x === -Infinity), `${label}: −∞ rows`);
      assertClose(`${label} lse`, got.lse, want.lse);
    }
  });
});

describe('LocalAttention', () => {
  it('causal GQA forward and backward match float64 and free everything they allocate', () => {
    const dims: RefDims = { sq: 9, sk: 9, heads: 4, kvHeads: 2, d: 6, causal: true };
    const rng = new Rng(23);
    const q = rand(rng, [9, 4, 6]);
    const k = rand(rng, [9, 2, 6]);
    const v = rand(rng, [9, 2, 6]);
    const dO = rand(rng, [9, 4, 6]);
    const dq = Tensor.zeros(arena, [9, 4, 6]);
    const dk = Tensor.zeros(arena, [9, 2, 6]);
    const dv = Tensor.zeros(arena, [9, 2, 6]);
    const live = arena.stats().liveBytes;
    const attn = new LocalAttention({ kernels, heads: 4, kvHeads: 2, headDim: 6 });
    const layout = localLayout(9);
    const saved = attn.forward(q, k, v, layout);
    const ref = refForward(q.data, k.data, v.data, dims);
    assertClose('out', saved.out.data, ref.out);
    attn.backward(saved, dO, dq, dk, dv, layout);
    assert.equal(arena.stats().liveBytes, live, 'backward frees the saved output and lse');
    const g = refBackward(q.data, k.data, v.data, dO.data, dims);
    assertClose('dq', dq.data, g.dq);
    assertClose('dk', dk.data, g.dk);
    assertClose('dv', dv.data, g.dv);
    assert.throws(() => attn.forward(k, k, v, layout), /q has shape \[9, 2, 6\], expected \[9, 4, 6\]/);
    assert.throws(() => attn.forward(q, k, v, localLayout(8)), /LocalAttention needs a single-rank layout \(hp = cp = 1\) of 9 tokens, got hp = 1, cp = 1, seqLen = 8/);
    assert.throws(() => new LocalAttention({ kernels, heads: 6, kvHeads: 4, headDim: 6 }), /heads = 6 is not a multiple of kvHeads = 4/);
    freeAll(q, k, v, dO, dq, dk, dv);
  });

  it('document masks with tail padding: documents see only themselves, padding rows give 0, lse −∞ and no gradient, never NaN', () => {
    // Documents [0, 4) and [4, 7); tokens 7 and 8 are padding (cu_seqlens ends before S).
    const cu = [0, 4, 7];
    const docOf = (i: number): number => (i < 4 ? 0 : i < 7 ? 1 : -1);
    const dims: RefDims = { sq: 9, sk: 9, heads: 2, kvHeads: 1, d: 4, causal: true, visible: (i, j) => docOf(i) >= 0 && docOf(i) === docOf(j) && j <= i };
    const rng = new Rng(31);
    const q = rand(rng, [9, 2, 4]);
    const k = rand(rng, [9, 1, 4]);
    const v = rand(rng, [9, 1, 4]);
    const dO = rand(rng, [9, 2, 4]);
    const dq = Tensor.zeros(arena, [9, 2, 4]);
    const dk = Tensor.zeros(arena, [9, 1, 4]);
    const dv = Tensor.zeros(arena, [9, 1, 4]);
    const attn = new LocalAttention({ kernels, heads: 2, kvHeads: 1, headDim: 4 });
    const layout = new SequenceLayout({ hp: 1, cp: 1, seqLen: 9, causal: true, cuSeqlens: Int32Array.from(cu) });
    const saved = attn.forward(q, k, v, layout);
    const out = saved.out.data.slice();
    attn.backward(saved, dO, dq, dk, dv, layout);
    const ref = refForward(q.data, k.data, v.data, dims);
    const g = refBackward(q.data, k.data, v.data, dO.data, dims);
    assertClose('out', out, ref.out);
    for (const [name, x, want] of [['dq', dq.data, g.dq], ['dk', dk.data, g.dk], ['dv', dv.data, g.dv]] as const) {
      assertNoNaN(name, x);
      assertClose(name, x, want);
    }
    for (let i = 7 * 2 * 4; i < 9 * 2 * 4; i++) {
      assert.equal(out[i], 0, `padding output ${i}`);
      assert.equal(dq.data[i], 0, `padding dq ${i}`);
    }
    for (let i = 7 * 4; i < 9 * 4; i++) assert.equal(dk.data[i], 0, `padding dk ${i}`);
    freeAll(q, k, v, dO, dq, dk, dv);
  });
});

describe('KV-head replication (algorithms.md §3)', () => {
  it('replica u of head h equals head h, and sumKvReplicas is its adjoint', () => {
    const rng = new Rng(31);
    const x = rand(rng, [3, 2, 5]);
    const rep = Tensor.zeros(arena, [3, 6, 5]);
    replicateKvHeads(x, 3, rep);
    for (let t = 0; t < 3; t++) {
      for (let j = 0; j < 6; j++) {
        const h = Math.floor(j / 3);
        assert.deepEqual(rep.data.subarray((t * 6 + j) * 5, (t * 6 + j + 1) * 5), x.data.subarray((t * 2 + h) * 5, (t * 2 + h + 1) * 5));
      }
    }
    // <replicate(x), y> = <x, sum(y)> for every y.
    const y = rand(rng, [3, 6, 5]);
    const s = Tensor.zeros(arena, [3, 2, 5]);
    sumKvReplicas(y, 3, s);
    let lhs = 0;
    let rhs = 0;
    for (let i = 0; i < y.size; i++) lhs += rep.data[i]! * y.data[i]!;
    for (let i = 0; i < x.size; i++) rhs += x.data[i]! * s.data[i]!;
    assert.ok(Math.abs(lhs - rhs) <= 1e-5 * Math.abs(lhs) + 1e-6, `${lhs} ≠ ${rhs}`);
    freeAll(x, rep, y, s);
  });

  it('F8: an hp that splits the query→KV head grouping is rejected naming heads, kvHeads, hp and the valid hp values', () => {
    assert.throws(() => replicatedKvHeads(6, 3, 2), /hp = 2 does not fit heads = 6 and kvHeads = 3.*valid hp values: 1, 3, 6/);
    assert.equal(replicatedKvHeads(16, 2, 4), 4);
    assert.equal(replicatedKvHeads(8, 4, 2), 4);
  });
});
