import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { ATTENTION_KINDS, benchAttention, DEFAULT_ATTENTION_PRESETS, formatAttentionTable, type AttentionBenchOptions } from '../src/train/bench-attention.js';

// kvHeads 2 < hp = 8 exercises KV replication in the all-to-all volume (g = max(Hkv, hp)/H).
const tiny: AttentionBenchOptions = { seqLen: 64, heads: 8, kvHeads: 2, headDim: 4, causal: true, warmup: 1, reps: 2, seed: 7 };

test('attention suite at a tiny size: report structure and the comm volumes of algorithms.md §6', async () => {
  const report = await benchAttention(tiny);
  assert.equal(report.suite, 'attention');
  assert.equal(report.kernels, 'reference');
  assert.equal(report.warmup, 1);
  assert.deepEqual(report.layer, { seqLen: 64, heads: 8, kvHeads: 2, headDim: 4, causal: true });
  const m = report.machine;
  assert.ok(typeof m.cpu === 'string' && m.cpu.length > 0 && Number.isInteger(m.cores) && m.cores >= 1 && m.memoryGiB > 0 && m.node === process.version);
  assert.deepEqual(
    report.results.map((r) => `${r.name} sp${r.sp} ${r.hp}x${r.cp} w${r.innerRingSize}`),
    ['ulysses sp4 4x1 w1', 'ring sp4 1x4 w4', 'usp sp4 2x2 w2', 'loongtrain sp4 2x2 w1', 'ulysses sp8 8x1 w1', 'ring sp8 1x8 w8', 'usp sp8 2x4 w4', 'loongtrain sp8 2x4 w2'],
  );

  const { seqLen: S, heads: H, kvHeads: Hkv, headDim: d } = tiny;
  for (const r of report.results) {
    const what = `${r.name} sp ${r.sp}`;
    assert.equal(r.reps, 2);
    assert.ok(Number.isFinite(r.median.ms) && r.median.ms > 0, `${what}: median ms ${r.median.ms}`);
    assert.ok(r.median.commWaitShare >= 0 && r.median.commWaitShare <= 1, `${what}: wait share ${r.median.commWaitShare}`);
    assert.ok(Number.isFinite(r.timeRatio) && r.timeRatio > 0);
    assert.ok(!r.doubleRing || r.innerRingSize < r.cp, `${what}: a double ring only when innerRingSize < cp`);
    for (const pass of ['forward', 'backward'] as const) assert.deepEqual(Object.keys(r.traffic[pass]), [...ATTENTION_KINDS]);

    // §6: M = (S/sp)·D, g = max(Hkv, hp)/H; the all-to-alls send (hp − 1)/hp · M · (2 + 2g) elements per pass.
    const M = (S / r.sp) * H * d;
    const g = Math.max(Hkv, r.hp) / H;
    const hpBytes = 4 * ((r.hp - 1) / r.hp) * M * (2 + 2 * g);
    for (const pass of ['forward', 'backward'] as const) {
      const hp = r.traffic[pass].hp;
      assert.equal(hp.bytesSent, hpBytes, `${what} ${pass}: hp bytes`);
      assert.equal(hp.messagesSent, 4 * (r.hp - 1), `${what} ${pass}: four all-to-alls of hp − 1 messages`);
    }
    // §6: the forward ring sends cp − 1 KV messages of 2 · (S/cp) · (max(Hkv, hp)/hp) · d elements,
    // split into W − 1 outer and (w − 1)·W inner ones by a double ring.
    const f = r.traffic.forward;
    const kvMessage = 4 * 2 * (S / r.cp) * (Math.max(Hkv, r.hp) / r.hp) * d;
    const w = r.innerRingSize;
    const W = r.cp / w;
    const expected = r.doubleRing ? { cp: 0, inner: (w - 1) * W, outer: W - 1 } : { cp: r.cp - 1, inner: 0, outer: 0 };
    for (const kind of ['cp', 'inner', 'outer'] as const) {
      assert.equal(f[kind].messagesSent, expected[kind], `${what} forward: ${kind} messages`);
      assert.equal(f[kind].bytesSent, expected[kind] * kvMessage, `${what} forward: ${kind} bytes`);
    }
    const ringBackward = r.traffic.backward.cp.messagesSent + r.traffic.backward.inner.messagesSent + r.traffic.backward.outer.messagesSent;
    assert.ok(ringBackward >= r.cp - 1, `${what} backward: the KV blocks travel again (${ringBackward} ring messages)`);
  }
  const table = formatAttentionTable(report).split('\n');
  assert.equal(table.length, 2 + report.results.length, 'a title, a header and one row per preset');
});

test('attention suite rejects a size that does not fit a preset before running any', async () => {
  await assert.rejects(benchAttention({ ...tiny, seqLen: 40 }), (e: unknown) => e instanceof ConfigError && /preset ulysses \(sp 8.*divisible by 2·sp = 16/.test(e.message));
  await assert.rejects(benchAttention({ ...tiny, heads: 4, kvHeads: 4 }), (e: unknown) => e instanceof ConfigError && /preset ulysses \(sp 8.*parallel\.hp = 8/.test(e.message));
  await assert.rejects(benchAttention({ ...tiny, reps: 0 }), (e: unknown) => e instanceof ConfigError && /reps = 0 is invalid/.test(e.message));
  assert.equal(DEFAULT_ATTENTION_PRESETS.length, 8);
});
