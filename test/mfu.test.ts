import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { backendCeilingGflops, coreSimd, nativePeak, readCpuInfo } from '../src/kernels/peak.js';
import { modelFlops } from '../src/model/flops.js';
import { benchLayouts } from '../src/train/bench.js';
import { createKernels } from '../src/kernels/registry.js';
import { Arena } from '../src/tensor/arena.js';
import { attentionCase, corePeaks, timeWithinBudget } from '../src/train/bench-kernels.js';
import type { StepMetrics } from '../src/train/metrics.js';
import { train } from '../src/train/train.js';
import { tinyRuns } from './helpers/tiny-run.js';

const config = tinyRuns('mfu', ['train.steps=3', 'optim.warmupSteps=1']);

/** Train `cfg`, returning the first log line and the rows of metrics.jsonl. */
async function run(cfg: ReturnType<typeof config>): Promise<{ first: string; rows: StepMetrics[] }> {
  const lines: string[] = [];
  await train(cfg, { out: (line) => lines.push(line) });
  const rows = readFileSync(join(cfg.log.dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as StepMetrics);
  return { first: lines[0]!, rows };
}

describe('the native peak per core (kernels/peak.ts)', () => {
  const table: Array<[string, { vendor: string; flags: string; arch: string }, { isa: string; lanes: number; fmaUnits: number }]> = [
    ['Intel Sapphire Rapids (AVX-512)', { vendor: 'GenuineIntel', arch: 'x64', flags: 'fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl' }, { isa: 'AVX-512', lanes: 16, fmaUnits: 2 }],
    ['AMD Zen 4 (AVX-512 on 256-bit pipes)', { vendor: 'AuthenticAMD', arch: 'x64', flags: 'fpu sse sse2 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512bw avx512vl' }, { isa: 'AVX-512', lanes: 16, fmaUnits: 1 }],
    ['AMD Zen 3 (AVX2 + FMA)', { vendor: 'AuthenticAMD', arch: 'x64', flags: 'fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2' }, { isa: 'AVX2', lanes: 8, fmaUnits: 2 }],
    ['Intel Sandy Bridge (AVX, no FMA)', { vendor: 'GenuineIntel', arch: 'x64', flags: 'fpu sse sse2 ssse3 sse4_1 sse4_2 avx' }, { isa: 'AVX', lanes: 8, fmaUnits: 1 }],
    ['SSE only', { vendor: 'GenuineIntel', arch: 'x64', flags: 'fpu sse sse2 ssse3 sse4_1 sse4_2' }, { isa: 'SSE', lanes: 4, fmaUnits: 1 }],
    ['arm64 NEON', { vendor: '', arch: 'arm64', flags: 'fp asimd evtstrm aes pmull sha1 sha2 crc32' }, { isa: 'NEON', lanes: 4, fmaUnits: 2 }],
  ];
  for (const [name, cpu, want] of table) {
    it(`${name}: ${want.lanes} lanes × ${want.fmaUnits} FMA units`, () => {
      const got = coreSimd(cpu);
      assert.deepEqual({ isa: got.isa, lanes: got.lanes, fmaUnits: got.fmaUnits }, want);
    });
  }
  it('a flag is matched whole: avx512 extensions without avx512f do not count as AVX-512', () => {
    assert.equal(coreSimd({ vendor: 'GenuineIntel', arch: 'x64', flags: 'sse avx avx2 fma avx512_vnni_like' }).lanes, 8);
  });

  it('this machine: lanes × units × 2 × clock, the clock at least /proc/cpuinfo\'s, the same object on the second call', () => {
    const p = nativePeak();
    const cpu = readCpuInfo();
    assert.equal(p.lanes, coreSimd(cpu).lanes);
    assert.ok(p.clockMHz >= cpu.nominalMHz && p.clockMHz >= p.measuredMHz!, `clock ${p.clockMHz} MHz vs nominal ${cpu.nominalMHz}, measured ${p.measuredMHz}`);
    assert.ok(Math.abs(p.gflopsPerCore - (p.lanes * p.fmaUnits * 2 * p.clockMHz) / 1e3) < 1e-9);
    assert.equal(nativePeak(), p, 'measured once per thread');
  });

  it('backend ceilings: reference 1 lane, wasm 4, blas native; log.peakGflopsPerRank replaces the native peak', () => {
    const p = nativePeak(64);
    assert.equal(p.gflopsPerCore, 64);
    assert.equal(backendCeilingGflops('blas', p), 64);
    assert.equal(backendCeilingGflops('wasm', p), (64 * Math.min(4, p.lanes)) / p.lanes);
    assert.equal(backendCeilingGflops('reference', p), 64 / p.lanes);
    assert.throws(() => backendCeilingGflops('cuda', p), /backend "cuda" is unknown/);
  });

  it('the kernels bench\'s corePeaks keeps its shape and delegates to nativePeak', () => {
    const peaks = corePeaks();
    const p = nativePeak();
    assert.equal(peaks.native.gflops, p.gflopsPerCore);
    assert.equal(peaks.wasmSimd.gflops, backendCeilingGflops('wasm', p));
    assert.equal(peaks.measuredMHz, p.measuredMHz);
  });
});

describe('MFU in the training log', () => {
  it('every row: mfu = model FLOPs / (step seconds × ranks × the native peak the first line states), within 2%', async () => {
    const cfg = config(['parallel.cp=2']);
    const { first, rows } = await run(cfg);
    const m = /; native peak ([\d.]+) GFLOP\/s per rank \((\S+): (\d+) lanes × (\d+) FMA units? × 2 × (\d+) MHz [^)]*\); (\w+) ceiling ([\d.]+)$/.exec(first);
    assert.ok(m !== null, `first line: ${first}`);
    const [peak, lanes, units, mhz, ceiling] = [m[1], m[3], m[4], m[5], m[7]].map(Number) as [number, number, number, number, number];
    assert.ok(Math.abs(peak - (lanes * units * 2 * mhz) / 1e3) < 0.002 * peak, `${peak} GFLOP/s vs ${lanes} × ${units} × 2 × ${mhz} MHz`);
    assert.equal(lanes, coreSimd(readCpuInfo()).lanes);
    const flopsPerStep = 3 * cfg.train.batchSize * modelFlops(cfg.model, cfg.train.seqLen, cfg.train.causal);
    assert.equal(rows.length, 3);
    for (const r of rows) {
      const expected = flopsPerStep / ((r.stepMs / 1000) * 2 * peak * 1e9);
      assert.ok(Math.abs(r.mfu / expected - 1) < 0.02, `step ${r.step}: mfu ${r.mfu} vs ${expected}`);
      const expectedCeiling = flopsPerStep / ((r.stepMs / 1000) * 2 * ceiling * 1e9);
      assert.ok(Math.abs(r.mfuBackendCeiling / expectedCeiling - 1) < 0.02, `step ${r.step}: mfuBackendCeiling ${r.mfuBackendCeiling} vs ${expectedCeiling}`);
    }
  });

  it('log.peakGflopsPerRank overrides the native peak in the first line and the rows', async () => {
    const cfg = config(['train.steps=1', 'log.peakGflopsPerRank=50', 'train.kernels=wasm']);
    const { first, rows } = await run(cfg);
    const m = /; peak 50\.0 GFLOP\/s per rank \(log\.peakGflopsPerRank\); wasm ceiling ([\d.]+)$/.exec(first);
    assert.ok(m !== null, `first line: ${first}`);
    assert.equal(Number(m[1]), Number(((50 * 4) / coreSimd(readCpuInfo()).lanes).toFixed(1)));
    const flopsPerStep = 3 * modelFlops(cfg.model, cfg.train.seqLen, cfg.train.causal);
    assert.ok(Math.abs(rows[0]!.mfu / (flopsPerStep / ((rows[0]!.stepMs / 1000) * 50e9)) - 1) < 1e-9);
  });
});

describe('benches leave the first step and run out', () => {
  it('bench layouts drops the first step even with warmup 0, and refuses a run with nothing left to measure', async () => {
    const cfg = config();
    const report = await benchLayouts(cfg, [{ name: 'single', request: cfg.parallel }], 3, 0);
    assert.equal(report.results[0]!.steps, 2);
    await assert.rejects(benchLayouts(cfg, [{ name: 'single', request: cfg.parallel }], 1, 0), (e: unknown) => e instanceof ConfigError && /steps = 1 with warmup = 0 leaves no step to measure/.test(e.message));
  });

  it('timeWithinBudget: the first run is untimed and sizes the measured runs', () => {
    let calls = 0;
    const fn = (): void => {
      calls++;
    };
    assert.deepEqual({ ...timeWithinBudget(fn, 3, 4, Infinity), medianMs: 0 }, { medianMs: 0, reps: 4 });
    assert.equal(calls, 1 + 2 + 4, 'first run, 2 more warmup runs, 4 measured');
    calls = 0;
    assert.equal(timeWithinBudget(fn, 0, 4, 0).reps, 1);
    assert.equal(calls, 2, 'with no budget: the untimed first run and one measured run');
  });

  it('bench kernels attention rows: GFLOP/s from the causal pairs, % of the native peak and of the GEMM rate measured beside it', () => {
    const arena = new Arena(16 * 2 ** 20);
    const peaks = corePeaks(50);
    // The GEMM rate is measured before each of the 2 timed runs and after the last; their median is the reference.
    const gemmRates = [8, 10, 30];
    const row = attentionCase('wasm', createKernels('wasm', arena), arena, 64, { warmup: 1, reps: 2, budgetMs: Infinity }, peaks, undefined, { heads: 1, kvHeads: 1, headDim: 32 }, () => gemmRates.shift()!);
    assert.equal(gemmRates.length, 0, 'the GEMM reference measured 3 times');
    assert.equal(row.gemmGflops, 10);
    assert.equal(row.reps, 2);
    assert.ok(Math.abs(row.gflops - (3.5 * 4 * 32 * ((64 * 65) / 2)) / row.medianMs / 1e6) < 1e-9 * row.gflops);
    assert.ok(Math.abs(row.pctNativePeak - (100 * row.gflops) / 50) < 1e-9 * row.pctNativePeak);
    assert.ok(Math.abs(row.pctOfGemm! - (100 * row.gflops) / 10) < 1e-9 * row.pctOfGemm!);
  });
});
