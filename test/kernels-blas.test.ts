import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it, type TestContext } from 'node:test';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { blasAvailable, createBlasKernels } from '../src/kernels/blas/index.js';
import { openBlasCoreType } from '../src/kernels/blas/library.js';
import { BLAS_ATTENTION_BLOCK_K, BLAS_ATTENTION_BLOCK_Q } from '../src/kernels/blas/attention.js';
import { createKernels } from '../src/kernels/registry.js';
import { attentionKernelTests, farRanges } from './helpers/attention-kernel-tests.js';
import { CAUSAL, documentMask, NONE, randomRanges } from './helpers/masks.js';
import { referenceKernels } from '../src/kernels/reference/index.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { randomArray, relError } from './helpers/attention-ref.js';
import { matmulRef } from './helpers/model-ref.js';

const TOL = 1e-5;
const blas = blasAvailable();
const arena = new Arena(16 << 20);
const rng = new Rng(41);

/** Skip (saying why) on a machine without a CBLAS library; true when the test may run. */
function needsBlas(t: TestContext): boolean {
  if (!blas.ok) t.skip(`no CBLAS library: ${blas.reason}`);
  return blas.ok;
}

function rand(n: number): [Tensor, Float64Array] {
  const t = Tensor.from(arena, [n], randomArray(rng, n));
  return [t, Float64Array.from(t.data)];
}

describe('blas backend', () => {
  it('picks the OpenBLAS kernel set from the CPU flags, widest first', () => {
    assert.equal(openBlasCoreType(' fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl'), 'SkylakeX');
    assert.equal(openBlasCoreType(' fpu sse2 avx avx2 fma avx512f'), 'Haswell', 'AVX-512 F alone (Knights Landing) lacks the BW/DQ/VL the SkylakeX kernels use');
    assert.equal(openBlasCoreType(' fpu sse2 avx avx2 fma'), 'Haswell');
    assert.equal(openBlasCoreType(' fpu sse2 avx'), undefined);
    assert.equal(openBlasCoreType(' fpu sse2 avx2 fma4'), undefined, 'a flag is matched whole, not as a prefix');
  });

  it('a worker thread that loads BLAS first still gets the kernel set (the C environment is set through libc)', (t) => {
    if (!needsBlas(t) || blas.core === undefined) return;
    const library = new URL('../src/kernels/blas/library.js', import.meta.url).href;
    // A fresh process whose first BLAS load is in a worker, as when ranks measure kernel rates.
    const script = `import { Worker } from 'node:worker_threads'; new Worker(${JSON.stringify(`import(${JSON.stringify(library)}).then((m) => console.log(JSON.stringify(m.blasAvailable().core)))`)}, { eval: true });`;
    const env = { ...process.env };
    delete env.OPENBLAS_CORETYPE;
    const core = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' }).trim()) as { name: string };
    assert.equal(core.name, blas.core.name, 'the same kernel set as a main-thread load');
  });

  it('OpenBLAS runs the kernels of the widest SIMD this CPU has, not its SSE3 fallback', (t) => {
    if (!needsBlas(t) || blas.core === undefined) return;
    let flags = '';
    try {
      flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    } catch {
      // not Linux: OpenBLAS's own choice is all there is to check
    }
    const wanted = process.env.OPENBLAS_CORETYPE ?? openBlasCoreType(flags);
    if (wanted !== undefined) assert.equal(blas.core.name.toLowerCase(), wanted.toLowerCase(), `OpenBLAS runs ${blas.core.name} (chosen by ${blas.core.chosenBy})`);
    assert.notEqual(blas.core.name, flags === '' ? '' : /avx2/.test(flags) ? 'Prescott' : '', 'an AVX2 machine must not run the Prescott kernels');
  });

  it(`reports whether a CBLAS library loads (${blas.ok ? blas.library : blas.reason})`, () => {
    assert.equal(typeof blas.ok, 'boolean');
    if (blas.ok) assert.match(blas.library!, /blas|Accelerate/i);
    else assert.match(blas.reason!, /no CBLAS library found|koffi/);
  });

  it('hands BLAS a pointer into the arena, not a copy (SharedArrayBuffer views go by address)', (t) => {
    if (!needsBlas(t)) return;
    if (process.platform !== 'linux') return t.skip('uses glibc memcpy to read the pointer back');
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    // memcpy(dest, src, 0) returns dest as C received it: compare it with the arena's own address.
    const memcpy = koffi.load('libc.so.6').func('void *memcpy(void *dest, const void *src, size_t n)') as (d: Float32Array, s: Float32Array, n: number) => unknown;
    const base = koffi.address(new Uint8Array(arena.buffer, 0, 1));
    const far = Tensor.zeros(arena, [1 << 20]);
    const got = koffi.address(memcpy(far.data, far.data, 0));
    assert.equal(got, base + BigInt(far.byteOffset));
    far.free();
  });

  it('takes every kernel but matmul from the backend it is given', (t) => {
    if (!needsBlas(t)) return;
    const k = createBlasKernels(referenceKernels);
    assert.equal(k.name, 'blas');
    assert.notEqual(k.matmul, referenceKernels.matmul);
    for (const name of ['attentionForward', 'rmsnormForward', 'rope', 'crossEntropy', 'adamw', 'sumSquares'] as const) assert.equal(k[name], referenceKernels[name], name);
  });

  // Awkward sizes: single rows and columns, odd sizes around SIMD widths and BLAS block edges, K = 0 and empty C.
  const SIZES: Array<[number, number, number]> = [[1, 1, 1], [1, 7, 5], [3, 1, 9], [17, 13, 33], [64, 65, 31], [130, 67, 129], [5, 3, 0], [0, 4, 3], [4, 0, 3]];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (const accumulate of [false, true]) {
        it(`matmul matches a float64 reference: transA ${transA}, transB ${transB}, accumulate ${accumulate}`, (t) => {
          if (!needsBlas(t)) return;
          const k = createBlasKernels(referenceKernels);
          for (const [m, n, kk] of SIZES) {
            const [a, a64] = rand(m * kk);
            const [b, b64] = rand(kk * n);
            const [c, c64] = rand(m * n);
            // Without accumulate C is output only: NaN there must not leak through (BLAS β = 0).
            if (!accumulate) c.data.fill(NaN);
            const want = matmulRef(a64, b64, m, n, kk, transA, transB);
            if (accumulate) for (let i = 0; i < want.length; i++) want[i]! += c64[i]!;
            k.matmul(c, a, b, m, n, kk, { transA, transB, accumulate });
            const err = relError(c.data, want);
            assert.ok(err <= TOL, `M ${m} N ${n} K ${kk}: relative error ${err} > ${TOL}`);
            for (const x of [a, b, c]) x.free();
          }
        });
      }
    }
  }

  it('matmul on row views writes only the viewed rows', (t) => {
    if (!needsBlas(t)) return;
    const k = createBlasKernels(referenceKernels);
    const [a, a64] = rand(6 * 4);
    const [b, b64] = rand(4 * 3);
    const [c, c64] = rand(9 * 3);
    const c2 = c.reshape([9, 3]);
    k.matmul(c2.rows(2, 8), a, b, 6, 3, 4);
    const want = Float64Array.from(c64);
    want.set(matmulRef(a64, b64, 6, 3, 4), 2 * 3);
    assert.ok(relError(c.data, want) <= TOL);
    for (const x of [a, b, c]) x.free();
  });

  it('matmul refuses sizes that do not match M, N, K, naming them', (t) => {
    if (!needsBlas(t)) return;
    const k = createBlasKernels(referenceKernels);
    const a = Tensor.zeros(arena, [2, 3]);
    const b = Tensor.zeros(arena, [3, 4]);
    const c = Tensor.zeros(arena, [2, 4]);
    assert.throws(() => k.matmul(c, a, b, 2, 4, 2), /matmul: A has 6 elements \(shape \[2, 3\]\), expected 4 = M·K = 2·2/);
    assert.throws(() => k.matmul(c, a, b, 2, 5, 3), /matmul: B has 12 elements \(shape \[3, 4\]\), expected 15 = K·N = 3·5/);
    assert.throws(() => k.matmul(c, a, b, 2.5, 4, 3), /matmul: m = 2.5 is invalid/);
    for (const x of [a, b, c]) x.free();
  });

  it('matmul refuses an output that overlaps A or B, as the wasm backend does; adjacent rows are fine', (t) => {
    if (!needsBlas(t)) return;
    const k = createBlasKernels(referenceKernels);
    const m = Tensor.from(arena, [6, 4], randomArray(rng, 24));
    const b = Tensor.from(arena, [4, 4], randomArray(rng, 16));
    // Rows 2–4 as C against rows 0–2 as A: one row shared.
    assert.throws(() => k.matmul(m.rows(2, 5), m.rows(0, 3), b, 3, 4, 4), /matmul: C \[3, 4\] overlaps A \[3, 4\] in memory; the output must be a separate tensor/);
    assert.throws(() => k.matmul(b, m.rows(0, 4), b, 4, 4, 4), /matmul: C \[4, 4\] overlaps B \[4, 4\]/);
    const a64 = Float64Array.from(m.data.subarray(0, 12));
    const b64 = Float64Array.from(b.data);
    k.matmul(m.rows(3, 6), m.rows(0, 3), b, 3, 4, 4);
    assert.ok(relError(m.data.subarray(12, 24), matmulRef(a64, b64, 3, 4, 4)) <= TOL);
    for (const x of [m, b]) x.free();
  });
});

describe('blas attention (GEMM tiles) against the reference', () => {
  if (!blas.ok) {
    it('needs a CBLAS library', (t) => {
      needsBlas(t);
    });
    return;
  }
  const own = new Arena(64 << 20, 4);
  const r = new Rng(7);
  const [bq, bk] = [BLAS_ATTENTION_BLOCK_Q, BLAS_ATTENTION_BLOCK_K];
  // Sizes past the GEMM blocks (bq × bk), so tiles are cut at every edge and per-row masks cross tile borders.
  attentionKernelTests('blas', createKernels('blas', own), own, (a) => createKernels('blas', a), r, [
    { label: `causal over 3 query blocks, GQA 4:2, d = 64 (S = ${2 * bq + 37})`, sq: 2 * bq + 37, sk: 2 * bq + 37, heads: 4, kvHeads: 2, d: 64, mask: CAUSAL },
    { label: `non-causal ${bq + 1} × ${2 * bk + 1}, d = 128`, sq: bq + 1, sk: 2 * bk + 1, heads: 1, kvHeads: 1, d: 128, mask: NONE },
    // A last key tile of 36 columns, every row unmasked: the softmax's four-wide maximum loop runs twice, then its 4-lane tail.
    { label: `non-causal 70 × ${bk + 36}, d = 64`, sq: 70, sk: bk + 36, heads: 2, kvHeads: 1, d: 64, mask: NONE },
    { label: 'causal offset +300 (a later key block of a ring), Sq = 300 < Sk = 600, d = 32', sq: 300, sk: 600, heads: 2, kvHeads: 1, d: 32, mask: { kind: 'causal', offset: 300 } },
    { label: 'causal offset −260, Sq = Sk = 520 (rows 0–259 see nothing), d = 3', sq: 520, sk: 520, heads: 2, kvHeads: 2, d: 3, mask: { kind: 'causal', offset: -260 } },
    { label: 'documents from cu_seqlens, short and long, MQA 4:1, d = 32, S = 700', sq: 700, sk: 700, heads: 4, kvHeads: 1, d: 32, mask: documentMask([0, 5, 260, 261, 300, 517, 700], 0, 700, 0, 700) },
    { label: 'documents: two far-apart key ranges, interior key blocks seen by no row, d = 16', sq: 300, sk: 3 * bk + 50, heads: 2, kvHeads: 1, d: 16, mask: farRanges(300, 3 * bk + 50, 150) },
    { label: 'documents, random ranges, Sq = 270, Sk = 530, d = 1', sq: 270, sk: 530, heads: 2, kvHeads: 1, d: 1, mask: randomRanges(r, 270, 530) },
  ]);
});
