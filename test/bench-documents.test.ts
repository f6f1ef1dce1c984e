import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { wasmAvailable } from '../src/kernels/wasm/index.js';
import { benchDocuments, cuSeqlensOf, DEFAULT_DOCUMENTS_BENCH, documentLengths, formatDocumentsTable, type DocumentsBenchOptions } from '../src/train/bench-documents.js';

const small: DocumentsBenchOptions = {
  ...DEFAULT_DOCUMENTS_BENCH,
  seqLen: 512,
  headDim: 16,
  warmup: 0,
  reps: 1,
  kernels: wasmAvailable().ok ? 'wasm' : 'reference',
};

test('documents distribution: deterministic, sums to S, short documents then 2 long ones at the end', () => {
  for (const seqLen of [256, 512, 8192]) {
    const lengths = documentLengths(seqLen, 1);
    assert.deepEqual(documentLengths(seqLen, 1), lengths, 'same seed, same lengths');
    assert.equal(lengths.reduce((a, b) => a + b, 0), seqLen);
    const short = lengths.slice(0, -2);
    const long = lengths.slice(-2);
    for (const l of short) assert.ok(l >= Math.round(seqLen / 128) && l <= Math.round(seqLen / 16), `S ${seqLen}: short length ${l}`);
    for (const l of long) assert.ok(l >= Math.round(seqLen / 8) && l <= Math.round(seqLen / 5), `S ${seqLen}: long length ${l}`);
    assert.ok(short.length >= 8, `S ${seqLen}: many short documents (${short.length})`);
  }
  assert.deepEqual(cuSeqlensOf([3, 5, 2]), [0, 3, 8, 10]);
  assert.throws(() => documentLengths(200, 1), ConfigError);
});

test('documents suite at a small size: report shape, balanced beats zigzag, pairs add up, short documents skip hops', async () => {
  const report = await benchDocuments(small);
  assert.equal(report.suite, 'documents');
  assert.equal(report.kernels, small.kernels);
  assert.deepEqual(report.layer, { seqLen: 512, heads: 8, kvHeads: 2, headDim: 16, causal: true });
  assert.equal(report.warmup, 0);
  assert.equal(report.reps, 1);
  const m = report.machine;
  assert.ok(typeof m.cpu === 'string' && m.cpu.length > 0 && Number.isInteger(m.cores) && m.cores >= 1 && m.node === process.version);

  // The distribution, recomputed from its cu_seqlens.
  const d = report.distribution;
  const cu = d.cuSeqlens;
  assert.equal(cu[0], 0);
  assert.equal(cu[cu.length - 1], 512);
  assert.equal(d.documents, cu.length - 1);
  const lengths = cu.slice(1).map((x, i) => x - cu[i]!);
  assert.deepEqual(lengths, documentLengths(512, small.seed));
  assert.equal(d.length.min, Math.min(...lengths));
  assert.equal(d.length.max, Math.max(...lengths));
  assert.equal(d.long.documents + d.short.documents, d.documents);
  assert.equal(d.long.tokens + d.short.tokens, 512);
  const totalPairs = lengths.reduce((n, l) => n + (l * (l + 1)) / 2, 0);
  assert.equal(d.visiblePairs, totalPairs);

  assert.deepEqual(
    report.results.map((r) => `${r.name} ${r.hp}x${r.cp} ${r.sequence} ${r.sharding}`),
    [
      'ring 1x4 single zigzag', 'ring 1x4 documents zigzag', 'ring 1x4 documents balanced',
      'usp 2x2 single zigzag', 'usp 2x2 documents zigzag', 'usp 2x2 documents balanced',
      'ring 1x2 single zigzag', 'ring 1x2 documents zigzag', 'ring 1x2 documents balanced',
    ],
  );
  for (const r of report.results) {
    const what = `${r.name} ${r.hp}x${r.cp} ${r.sequence} ${r.sharding}`;
    assert.equal(r.sp, r.hp * r.cp);
    assert.equal(r.reps, 1);
    assert.ok(Number.isFinite(r.median.ms) && r.median.ms > 0, `${what}: median ms ${r.median.ms}`);
    assert.ok(r.median.commWaitShare >= 0 && r.median.commWaitShare <= 1, `${what}: wait share`);
    assert.ok(Number.isFinite(r.vsZigzag) && r.vsZigzag > 0);
    assert.equal(r.pairsPerPosition.length, r.cp);
    assert.equal(r.ranks.length, r.sp);
    assert.ok(r.imbalance >= 1);
    assert.ok(Math.abs(r.imbalance - Math.max(...r.pairsPerPosition) / (r.pairsPerPosition.reduce((a, b) => a + b, 0) / r.cp)) < 1e-12, `${what}: imbalance = max / mean`);

    // Every rank reports its position's pairs; each position's pairs are held by its hp ranks,
    // and the positions together hold every visible pair of the sequence exactly once.
    const expectedPairs = r.sequence === 'single' ? (512 * 513) / 2 : totalPairs;
    assert.equal(r.pairsPerPosition.reduce((a, b) => a + b, 0), expectedPairs, `${what}: positions' pairs`);
    assert.equal(r.ranks.reduce((n, x) => n + x.visiblePairs, 0), r.hp * expectedPairs, `${what}: ranks' pairs = hp × Σ L(L+1)/2`);
    for (const x of r.ranks) assert.equal(x.visiblePairs, r.pairsPerPosition[x.c], `${what}: rank ${x.rank} holds position ${x.c}`);

    // Each rank's ring walks cp hops in the forward and cp in the backward.
    for (const x of r.ranks) assert.equal(x.computedHops + x.skippedHops, 2 * r.cp, `${what}: rank ${x.rank} hops`);
    for (const x of r.ranks) assert.ok(Number.isFinite(x.busyMs) && x.busyMs >= 0, `${what}: rank ${x.rank} busy ms ${x.busyMs}`);
    // Linux (CI and here) reports thread CPU time; the busiest rank's is the max of the ranks'.
    assert.ok(r.cpu !== undefined, `${what}: thread CPU time reported`);
    for (const x of r.ranks) assert.ok(x.cpuMs! > 0 && Number.isFinite(x.cpuMs!), `${what}: rank ${x.rank} CPU ms ${x.cpuMs}`);
    assert.ok(r.cpu.maxMs <= r.cpu.totalMs && r.cpu.maxMs > 0, `${what}: CPU max ${r.cpu.maxMs} ≤ all ${r.cpu.totalMs}`);
    assert.equal(r.hops.computed, r.ranks.reduce((n, x) => n + x.computedHops, 0));
    assert.equal(r.hops.skipped, r.ranks.reduce((n, x) => n + x.skippedHops, 0));
    if (r.sequence === 'single') assert.equal(r.hops.skipped, 0, `${what}: one causal document skips no hop`);
  }
  for (const [name, cp] of [['ring', 4], ['usp', 2], ['ring', 2]] as const) {
    const zigzag = report.results.find((r) => r.name === name && r.cp === cp && r.sequence === 'documents' && r.sharding === 'zigzag')!;
    const balanced = report.results.find((r) => r.name === name && r.cp === cp && r.sequence === 'documents' && r.sharding === 'balanced')!;
    assert.ok(balanced.imbalance < zigzag.imbalance, `${name} cp ${cp}: balanced imbalance ${balanced.imbalance} < zigzag ${zigzag.imbalance}`);
    assert.equal(zigzag.vsZigzag, 1);
    assert.equal(zigzag.cpu!.maxVsZigzag, 1);
    assert.ok(Math.abs(balanced.cpu!.maxVsZigzag - balanced.cpu!.maxMs / zigzag.cpu!.maxMs) < 1e-12);
    assert.equal(balanced.balanceChunks, small.balanceChunks);
  }
  const ringZigzag = report.results.find((r) => r.name === 'ring' && r.cp === 4 && r.sequence === 'documents' && r.sharding === 'zigzag')!;
  assert.ok(ringZigzag.hops.skipped > 0, 'zigzag over short documents skips hops with nothing visible');

  const table = formatDocumentsTable(report).split('\n');
  assert.equal(table.length, 3 + report.results.length, 'two title lines, a header and one row per case');
});

test('documents suite rejects a size that does not fit before running any', async () => {
  await assert.rejects(benchDocuments({ ...small, seqLen: 520 }), (e: unknown) => e instanceof ConfigError && /layout ring \(hp 1 × cp 4\).*multiple of 32/.test(e.message));
  await assert.rejects(benchDocuments({ ...small, reps: 0 }), (e: unknown) => e instanceof ConfigError && /reps = 0 is invalid/.test(e.message));
  await assert.rejects(benchDocuments({ ...small, kvHeads: 3 }), (e: unknown) => e instanceof ConfigError && /layout ring \(hp 1 × cp 4\).*kvHeads = 3/.test(e.message));
  await assert.rejects(benchDocuments({ ...small, kernels: 'nope' as never }), (e: unknown) => e instanceof ConfigError && /train\.kernels = "nope"/.test(e.message));
});
