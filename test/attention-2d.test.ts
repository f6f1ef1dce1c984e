import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { ringPlans, ringSources } from '../src/attention/ring-plan.js';
import { SequenceLayout } from '../src/parallel/sequence-layout.js';
import { launchRanks } from '../src/comm/backends.js';
import type { Attention2dArgs, Attention2dResult } from './fixtures/attention-2d.js';
import { assertClose, gatherHeadSplitLse, gatherRows, makeInputs, refBackward, refForward } from './helpers/attention-ref.js';

const ENTRY = fileURLToPath(new URL('./fixtures/attention-2d.js', import.meta.url));

/** A layout and shape to test: the fixture's arguments without the seed and mode. */
type Layout = Omit<Attention2dArgs, 'seed' | 'mode'>;

function launch(l: Layout, mode: Attention2dArgs['mode'] = 'exact'): Promise<unknown[]> {
  const args: Attention2dArgs = { ...l, seed: 1000 + l.seq + 7 * l.hp + l.kvHeads, mode };
  return launchRanks({ world: l.hp * l.cp, entry: ENTRY, args, timeoutMs: 10_000, arenaBytes: 8 << 20 });
}

async function checkExact(l: Layout): Promise<void> {
  const results = (await launch(l)) as Attention2dResult[];
  const dims = { sq: l.seq, sk: l.seq, heads: l.heads, kvHeads: l.kvHeads, d: l.headDim, causal: l.causal };
  const inputs = makeInputs(1000 + l.seq + 7 * l.hp + l.kvHeads, l.seq, l.heads, l.kvHeads, l.headDim);
  const ref = refForward(inputs.q, inputs.k, inputs.v, dims);
  const grads = refBackward(inputs.q, inputs.k, inputs.v, inputs.dO, dims);
  const qRow = l.heads * l.headDim;
  const kvRow = l.kvHeads * l.headDim;
  const rows = (pick: (r: Attention2dResult) => Float32Array, rowLen: number) =>
    gatherRows(results.map((r) => ({ indices: r.indices, rows: pick(r) })), l.seq, rowLen);
  assertClose('out', rows((r) => r.out, qRow), ref.out);
  assertClose('lse', gatherHeadSplitLse(results, l.seq, l.heads, l.hp, l.cp), ref.lse);
  assertClose('dq', rows((r) => r.dq, qRow), grads.dq);
  assertClose('dk', rows((r) => r.dk, kvRow), grads.dk);
  assertClose('dv', rows((r) => r.dv, kvRow), grads.dv);

  // Communication volume (algorithms.md §6), bytes of f32.
  const t = l.seq / (l.hp * l.cp);
  const kvRep = Math.max(l.kvHeads, l.hp);
  const a2aBytes = ((l.hp - 1) / l.hp) * t * l.headDim * (2 * l.heads + 2 * kvRep) * 4;
  const kvMsgBytes = 2 * (l.seq / l.cp) * (kvRep / l.hp) * l.headDim * 4;
  const ringFwd = l.cp - 1;
  const ringBwd = l.cp === 1 ? 0 : 2 * l.cp - 1;
  for (const r of results) {
    assert.equal(r.forward.hp.bytesSent, a2aBytes, `rank ${r.rank}: forward all-to-all bytes`);
    assert.equal(r.backward.hp.bytesSent, a2aBytes, `rank ${r.rank}: backward all-to-all bytes`);
    assert.equal(r.forward.cp.messagesSent, ringFwd, `rank ${r.rank}: forward ring messages`);
    assert.equal(r.forward.cp.bytesSent, ringFwd * kvMsgBytes, `rank ${r.rank}: forward ring bytes`);
    assert.equal(r.backward.cp.messagesSent, ringBwd, `rank ${r.rank}: backward ring messages (cp − 1 K/V + cp dK/dV)`);
    assert.equal(r.backward.cp.bytesSent, ringBwd * kvMsgBytes, `rank ${r.rank}: backward ring bytes`);
    assert.equal(r.leakedBytes, 0, `rank ${r.rank}: every temporary and the saved state are freed`);
  }
}

const base = { headDim: 4, seq: 32, causal: true };
const LAYOUTS: Array<[string, Layout]> = [
  ['hp=2 cp=2 head-first, causal MHA', { ...base, hp: 2, cp: 2, placement: 'head-first', heads: 4, kvHeads: 4 }],
  ['hp=2 cp=2 context-first, causal GQA 4/2, d=6', { ...base, hp: 2, cp: 2, placement: 'context-first', heads: 4, kvHeads: 2, headDim: 6 }],
  ['hp=2 cp=2 head-first, causal MQA (KV replicated ×2)', { ...base, hp: 2, cp: 2, placement: 'head-first', heads: 4, kvHeads: 1 }],
  ['hp=2 cp=2 context-first, non-causal GQA 4/2', { ...base, hp: 2, cp: 2, placement: 'context-first', heads: 4, kvHeads: 2, causal: false }],
  ['hp=4 cp=1 head-first, causal kvHeads=1 (KV replicated ×4)', { ...base, hp: 4, cp: 1, placement: 'head-first', heads: 4, kvHeads: 1 }],
  ['hp=4 cp=1 context-first, causal GQA 8/2 (KV replicated ×2)', { ...base, hp: 4, cp: 1, placement: 'context-first', heads: 8, kvHeads: 2 }],
  ['hp=1 cp=4 head-first, causal GQA 4/2', { ...base, hp: 1, cp: 4, placement: 'head-first', heads: 4, kvHeads: 2, headDim: 8 }],
  ['hp=1 cp=4 context-first, causal MHA', { ...base, hp: 1, cp: 4, placement: 'context-first', heads: 2, kvHeads: 2 }],
  ['F1: cp=2 non-causal seq=8, heads=1', { hp: 1, cp: 2, placement: 'head-first', heads: 1, kvHeads: 1, headDim: 4, seq: 8, causal: false }],
  ['F2/F3/F14: cp=2 zigzag causal seq=16 (next = previous peer)', { hp: 1, cp: 2, placement: 'head-first', heads: 1, kvHeads: 1, headDim: 4, seq: 16, causal: true }],
  ['F14: cp=3 causal ring', { hp: 1, cp: 3, placement: 'head-first', heads: 2, kvHeads: 1, headDim: 4, seq: 24, causal: true }],
  ['F5: cp=2 non-causal seq=128, d=64', { hp: 1, cp: 2, placement: 'context-first', heads: 1, kvHeads: 1, headDim: 64, seq: 128, causal: false }],
  ['F7: hp=4, heads=16, kvHeads=2, seq=64, d=8', { hp: 4, cp: 1, placement: 'head-first', heads: 16, kvHeads: 2, headDim: 8, seq: 64, causal: true }],
];

describe('2D-Attention (Ulysses × zigzag ring) against float64 single-device attention', () => {
  for (const [label, layout] of LAYOUTS) {
    it(`${label}: out, lse, dq, dk, dv, message counts, no leaks`, () => checkExact(layout));
  }

  it('F2: a backward whose hops differ from the forward\'s fails before any message', async () => {
    const l: Layout = { hp: 1, cp: 2, placement: 'head-first', heads: 1, kvHeads: 1, headDim: 4, seq: 16, causal: true };
    await assert.rejects(launch(l, 'tampered-plan'), /ring backward hop 1: plan \(source \d, .*no mask, 32 visible pairs\) differs from the forward's \(source \d, .*causal offset 0, 32 visible pairs\)/);
    await assert.rejects(launch(l, 'other-mask'), /ring backward hop 0: plan \(.*no mask, 64 visible pairs\) differs from the forward's \(.*causal offset 0, 36 visible pairs\)/);
  });
});

describe('zigzag ring block rules (algorithms.md §4), read from the SequenceLayout', () => {
  const layout = (cp: number, c: number, causal = true): SequenceLayout => new SequenceLayout({ hp: 1, cp, seqLen: 2 * c * cp, causal });

  it('own block causal over all 2c tokens, an earlier source all queries × early c keys, a later source late c queries × all keys', () => {
    for (const cp of [2, 3, 4]) {
      for (const c of [1, 2, 3]) {
        const l = layout(cp, c);
        for (let r = 0; r < cp; r++) {
          ringPlans(l, r).forEach((plan, step) => {
            const where = `cp=${cp} c=${c} position ${r} step ${step}`;
            const rect = [plan.queryStart, plan.queryEnd, plan.keyStart, plan.keyEnd];
            if (plan.source === r) {
              assert.deepEqual(rect, [0, 2 * c, 0, 2 * c], where);
              assert.deepEqual(plan.mask, { kind: 'causal', offset: 0 }, where);
              assert.equal(plan.pairs, 2 * c * c + c, where);
            } else {
              assert.deepEqual(rect, plan.source < r ? [0, 2 * c, 0, c] : [c, 2 * c, 0, 2 * c], where);
              assert.deepEqual(plan.mask, { kind: 'none' }, where);
              assert.equal(plan.pairs, 2 * c * c, where);
            }
          });
        }
        assert.equal(l.imbalance(), 1, `cp=${cp} c=${c}: zigzag balances one causal document exactly`);
      }
    }
  });

  it('the hops of all positions cover every causal (query, key) pair exactly once and nothing else', () => {
    const cp = 4;
    const c = 3;
    const s = 2 * c * cp;
    const l = layout(cp, c);
    // Local row i of ring position p is global token zig(p, i): chunk p, then chunk 2cp − 1 − p.
    const zig = (p: number, i: number) => (i < c ? p * c + i : (2 * cp - 1 - p) * c + i - c);
    const count = new Int32Array(s * s);
    for (let r = 0; r < cp; r++) {
      assert.deepEqual(Array.from(l.positionTokens(r)), Array.from({ length: 2 * c }, (_, i) => zig(r, i)));
      for (const plan of ringPlans(l, r)) {
        for (let i = plan.queryStart; i < plan.queryEnd; i++) {
          for (let j = plan.keyStart; j < plan.keyEnd; j++) {
            if (plan.mask.kind === 'causal' && j - plan.keyStart > i - plan.queryStart + plan.mask.offset) continue;
            count[zig(r, i) * s + zig(plan.source, j)]! += 1;
          }
        }
      }
    }
    for (let qi = 0; qi < s; qi++) {
      for (let kj = 0; kj < s; kj++) assert.equal(count[qi * s + kj], kj <= qi ? 1 : 0, `pair (query ${qi}, key ${kj})`);
    }
  });

  it('plain ring sources, non-causal plans and bad positions', () => {
    assert.deepEqual(ringSources(1, 4), [1, 0, 3, 2]);
    const nc = layout(4, 3, false).hop(0, 2);
    assert.deepEqual([nc.queryStart, nc.queryEnd, nc.keyStart, nc.keyEnd, nc.mask.kind, nc.pairs], [0, 6, 0, 6, 'none', 36]);
    assert.throws(() => layout(4, 3).hop(4, 0), /position 4 must be an integer ring position in \[0, 4\)/);
    assert.throws(() => new SequenceLayout({ hp: 1, cp: 4, seqLen: 20, causal: true }), /train\.seqLen = 20 is invalid: it must be a multiple of 8, from 2·sp = 8/);
  });
});
