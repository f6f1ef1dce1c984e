import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { hopPlan, hopScorePairs, ringPlans, ringSources } from '../src/attention/ring-plan.js';
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
    await assert.rejects(launch(l, 'tampered-plan'), /ring backward hop 1: plan \(source \d, .*no mask\) differs from the forward's \(source \d, .*causal\)/);
    await assert.rejects(launch(l, 'other-mask'), /ring backward hop 0: plan \(.*no mask\) differs from the forward's \(.*causal\)/);
  });
});

describe('zigzag ring block rules (algorithms.md §4)', () => {
  it('every position computes 2c² + c score pairs at its own block and 2c² at every other step', () => {
    for (const cp of [1, 2, 3, 4]) {
      for (const c of [1, 2, 3]) {
        let total = 0;
        for (let r = 0; r < cp; r++) {
          ringPlans(r, cp, 2 * c, true).forEach((plan, step) => {
            const pairs = hopScorePairs(plan);
            assert.equal(pairs, step === 0 ? 2 * c * c + c : 2 * c * c, `cp=${cp} c=${c} position ${r} step ${step}`);
            total += pairs;
          });
        }
        const s = 2 * c * cp;
        assert.equal(total, (s * (s + 1)) / 2, `cp=${cp} c=${c}: the ring covers S(S+1)/2 pairs`);
      }
    }
  });

  it('the hops of all positions cover every causal (query, key) pair exactly once and nothing else', () => {
    const cp = 4;
    const c = 3;
    const s = 2 * c * cp;
    // Local row i of ring position p is global token zig(p, i): chunk p, then chunk 2cp − 1 − p.
    const zig = (p: number, i: number) => (i < c ? p * c + i : (2 * cp - 1 - p) * c + i - c);
    const count = new Int32Array(s * s);
    for (let r = 0; r < cp; r++) {
      for (const plan of ringPlans(r, cp, 2 * c, true)) {
        for (let i = plan.queryStart; i < plan.queryEnd; i++) {
          for (let j = plan.keyStart; j < plan.keyEnd; j++) {
            if (plan.causal && j - plan.keyStart > i - plan.queryStart) continue;
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
    const nc = hopPlan(0, 2, 4, 6, false);
    assert.deepEqual([nc.queryStart, nc.queryEnd, nc.keyStart, nc.keyEnd, nc.causal], [0, 6, 0, 6, false]);
    assert.throws(() => hopPlan(4, 0, 4, 6, true), /position 4 must be an integer ring position in \[0, 4\)/);
    assert.throws(() => hopPlan(0, 1, 4, 5, true), /even number of local tokens/);
  });
});
