import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { launchRanks } from '../src/comm/backends.js';
import { divisors, validHpValues, type Placement } from '../src/parallel/dims.js';
import { SequenceLayout, type Sharding } from '../src/parallel/sequence-layout.js';
import { caseLayout, type DoubleRingArgs, type RingCase, type RingCaseResult } from './fixtures/attention-double-ring.js';
import { assertClose, gatherHeadSplitLse, gatherRows, makeInputs, refBackward, refForward, type RefDims, type RefForward, type RefGrads } from './helpers/attention-ref.js';

/*
 * Packed documents with document masks through every 2D-Attention layout of sp ≤ 8 (each
 * hp × cp, each inner ring size w, both placements; each with MHA, GQA and MQA under zigzag,
 * one head kind under balanced sharding, and one whole-sequence document) against a float64
 * single-device reference whose mask is written from cu_seqlens directly. All cases run in one
 * launch of 8 ranks (test/fixtures/attention-double-ring.ts).
 */

const ENTRY = fileURLToPath(new URL('./fixtures/attention-double-ring.js', import.meta.url));
const SEQ = 48;
/**
 * Documents of 7, 1, 2, 14, 4, 11 and 6 tokens, then 3 tokens of tail padding. No length
 * divides a chunk (3, 4, 6, 8, 12 or 24 tokens at cp 8 … 1) except by chance, several are
 * shorter than a chunk, and the chunks [21, 24) (cp 8), [18, 24) (cp 4) and [12, 24) (cp 2) hold
 * only the tail of the 14-token document.
 */
const DOCS = [0, 7, 8, 10, 24, 28, 39, 45];
const HEADS = [
  { name: 'MHA', heads: 8, kvHeads: 8 },
  { name: 'GQA', heads: 8, kvHeads: 2 },
  { name: 'MQA', heads: 8, kvHeads: 1 },
];

interface DocCase extends RingCase {
  label: string;
}

/** Whether query i sees key j: same document (padding sees nothing) and, when causal, j ≤ i. */
function visibleIn(cu: readonly number[], causal: boolean): (i: number, j: number) => boolean {
  const doc = (x: number): number => {
    for (let d = 0; d + 1 < cu.length; d++) if (x >= cu[d]! && x < cu[d + 1]!) return d;
    return -1;
  };
  return (i, j) => doc(i) >= 0 && doc(i) === doc(j) && (!causal || j <= i);
}

function buildCases(): DocCase[] {
  const cases: DocCase[] = [];
  let n = 0;
  for (const cp of [1, 2, 3, 4, 6, 8]) {
    for (const hp of [1, 2, 4, 8]) {
      if (hp * cp > 8) continue;
      const placements: Placement[] = hp > 1 && cp > 1 ? ['head-first', 'context-first'] : ['head-first'];
      const heads = HEADS.filter((hc) => validHpValues(hc.heads, hc.kvHeads).includes(hp));
      for (const w of divisors(cp)) {
        for (const placement of placements) {
          const layout = `hp=${hp} cp=${cp} w=${w} ${placement}`;
          const add = (label: string, hc: (typeof HEADS)[number], sharding: Sharding, cuSeqlens = DOCS): void => {
            n++;
            cases.push({
              label: `${layout} ${hc.name} ${label}`,
              dp: 1, hp, cp, w, placement, heads: hc.heads, kvHeads: hc.kvHeads, headDim: 4, seq: SEQ,
              // One seed per head kind and documents: every layout solves the same problem, and its reference is computed once.
              causal: true, seed: 7000 + 2 * HEADS.indexOf(hc) + (cuSeqlens === DOCS ? 0 : 1), trace: false, cuSeqlens, sharding, balanceChunks: 2,
            });
          };
          // Every head kind under zigzag (KV heads replicated ×hp/kvHeads where hp > kvHeads), and one
          // document spanning the whole sequence. Balanced sharding runs one head kind per layout,
          // dealt out in turn: crossing it with the head kinds too took the file from ~2 s to ~4.3 s
          // (this: ~3.7 s), for little more coverage (its token assignment does not depend on the heads).
          for (const hc of heads) add('zigzag', hc, 'zigzag');
          add('balanced', heads[n % heads.length]!, 'balanced');
          add('zigzag, one document [0, S]', heads[n % heads.length]!, 'zigzag', [0, SEQ]);
        }
      }
    }
  }
  const extra = (label: string, c: Partial<DocCase>): void => {
    cases.push({
      label, dp: 1, hp: 2, cp: 4, w: 2, placement: 'head-first', heads: 8, kvHeads: 2, headDim: 4, seq: SEQ,
      causal: true, seed: 9000 + cases.length, trace: false, cuSeqlens: DOCS, ...c,
    });
  };
  extra('one document = the whole sequence, balanced', { cuSeqlens: [0, SEQ], sharding: 'balanced', balanceChunks: 2 });
  extra('non-causal documents, zigzag', { causal: false });
  extra('non-causal documents, balanced, cp=8', { causal: false, hp: 1, cp: 8, w: 4, sharding: 'balanced', balanceChunks: 2 });
  extra('documents of one token each (all rows see only themselves)', { cuSeqlens: Array.from({ length: SEQ + 1 }, (_, i) => i), hp: 1, cp: 8, w: 8 });
  extra('only padding after a 5-token document', { cuSeqlens: [0, 5], hp: 2, cp: 4, w: 4 });
  // F3 end to end: a 7-token document, then 9 tokens; 7 is a multiple of no chunk size (4 tokens at cp 2, 2 at cp 4),
  // so at cp 2 the first document is split over both ring positions and ends inside a chunk.
  for (const [hp, cp, w] of [[1, 2, 2], [2, 2, 1], [1, 4, 4], [1, 4, 2], [2, 4, 2]] as const) {
    for (const sharding of ['zigzag', 'balanced'] as const) {
      extra(`a 7-token document, then 9 tokens: hp=${hp} cp=${cp} w=${w} ${sharding}`, { seq: 16, cuSeqlens: [0, 7, 16], hp, cp, w, sharding, balanceChunks: 2 });
    }
  }
  return cases;
}

const CASES = buildCases();

const references = new Map<string, { ref: RefForward; grads: RefGrads }>();
/** The float64 single-device forward and backward of a case's inputs and documents (cached: layouts share them). */
function reference(c: DocCase): { ref: RefForward; grads: RefGrads } {
  const key = JSON.stringify([c.seed, c.seq, c.heads, c.kvHeads, c.headDim, c.causal, c.cuSeqlens]);
  let r = references.get(key);
  if (r === undefined) {
    const inputs = makeInputs(c.seed, c.seq, c.heads, c.kvHeads, c.headDim);
    const dims: RefDims = { sq: c.seq, sk: c.seq, heads: c.heads, kvHeads: c.kvHeads, d: c.headDim, causal: c.causal, visible: visibleIn(c.cuSeqlens!, c.causal) };
    r = { ref: refForward(inputs.q, inputs.k, inputs.v, dims), grads: refBackward(inputs.q, inputs.k, inputs.v, inputs.dO, dims) };
    references.set(key, r);
  }
  return r;
}
let results: Array<Array<RingCaseResult | null>> = [];

describe('document masks on every sp ≤ 8 layout against float64 single-device attention', () => {
  before(async () => {
    const args: DoubleRingArgs = { cases: CASES };
    results = (await launchRanks({ world: 8, entry: ENTRY, args, timeoutMs: 120_000, arenaBytes: 16 << 20 })) as Array<Array<RingCaseResult | null>>;
  });

  it(`${CASES.length} cases: out, lse, dq, dk, dv within 1e-5; padding and empty rows 0 / −∞, never NaN; nothing leaked`, () => {
    CASES.forEach((c, index) => {
      const rs = results.map((perRank) => perRank[index]).filter((r): r is RingCaseResult => r !== null);
      assert.equal(rs.length, c.hp * c.cp, `${c.label}: every rank of the SP block reports`);
      const { ref, grads } = reference(c);
      const qRow = c.heads * c.headDim;
      const kvRow = c.kvHeads * c.headDim;
      const rows = (pick: (r: RingCaseResult) => Float32Array, rowLen: number) => gatherRows(rs.map((r) => ({ indices: r.indices, rows: pick(r) })), c.seq, rowLen);
      const out = rows((r) => r.out, qRow);
      assertClose(`${c.label}: out`, out, ref.out);
      assertClose(`${c.label}: lse`, gatherHeadSplitLse(rs, c.seq, c.heads, c.hp, c.cp), ref.lse);
      assertClose(`${c.label}: dq`, rows((r) => r.dq, qRow), grads.dq);
      assertClose(`${c.label}: dk`, rows((r) => r.dk, kvRow), grads.dk);
      assertClose(`${c.label}: dv`, rows((r) => r.dv, kvRow), grads.dv);
      const last = c.cuSeqlens![c.cuSeqlens!.length - 1]!;
      for (let i = last * qRow; i < c.seq * qRow; i++) assert.equal(out[i], 0, `${c.label}: padding output element ${i}`);
      for (const r of rs) assert.equal(r.leakedBytes, 0, `${c.label} rank ${r.rank}: nothing leaked`);
    });
  });

  it('hops with no visible pair are skipped, exactly those the layout plans as empty, forward and backward', () => {
    let skipped = 0;
    CASES.forEach((c, index) => {
      const layout = caseLayout(c);
      for (const r of results.map((perRank) => perRank[index]).filter((x): x is RingCaseResult => x !== null)) {
        let empty = 0;
        for (let s = 0; s < c.cp; s++) if (layout.hop(r.c, s).pairs === 0) empty++;
        assert.equal(r.skippedHops, 2 * empty, `${c.label} rank ${r.rank}: skipped hops`);
        assert.equal(r.computedHops, 2 * (c.cp - empty), `${c.label} rank ${r.rank}: computed hops`);
        skipped += r.skippedHops;
      }
    });
    assert.ok(skipped > 0, 'the short documents leave some hops with nothing to compute');
    // The exactness test above covers hops split into one kernel call per chunk of query rows.
    const split = CASES.filter((c) => { const l = caseLayout(c); return Array.from({ length: c.cp }, (_, r) => Array.from({ length: c.cp }, (_, s) => l.hop(r, s).blocks.length)).flat().some((n) => n > 1); });
    assert.ok(split.some((c) => c.sharding === 'balanced') && split.some((c) => c.sharding !== 'balanced'), `hops split into chunk blocks in ${split.length} cases, under both shardings`);
  });
});

describe('SequenceLayout: token ownership and masks from one place', () => {
  it('F3: boundaries never come from integer division — a 7-token document at cp 2 keeps its last token, every token is held once', () => {
    for (const sharding of ['zigzag', 'balanced'] as const) {
      for (const cp of [2, 4]) {
        const l = new SequenceLayout({ hp: 1, cp, seqLen: 16, causal: true, cuSeqlens: Int32Array.of(0, 7, 16), sharding, balanceChunks: 2 });
        const held = new Array<number>(16).fill(0);
        const perDoc = [0, 0];
        for (let c = 0; c < cp; c++) {
          for (const g of l.positionTokens(c)) {
            held[g]! += 1;
            perDoc[l.documentOf(g)]! += 1;
          }
          const tokens = Array.from(l.positionTokens(c));
          assert.deepEqual(tokens, [...tokens].sort((a, b) => a - b), `${sharding} cp=${cp} position ${c}: tokens ascend`);
        }
        assert.deepEqual(held, new Array<number>(16).fill(1), `${sharding} cp=${cp}: every token held exactly once`);
        assert.deepEqual(perDoc, [7, 9], `${sharding} cp=${cp}: documents keep all their tokens`);
        assert.equal(l.visibleKeys(6), 7, 'the 7th token of the first document sees all 7');
        assert.equal(l.visibleKeys(7), 1, 'the first token of the second document sees only itself');
      }
    }
  });

  it('F3: tail padding is not "no padding" — tokens past the last cu_seqlens entry see nothing and are seen by nothing', () => {
    const padded = new SequenceLayout({ hp: 1, cp: 2, seqLen: 16, causal: true, cuSeqlens: Int32Array.of(0, 5, 12) });
    const whole = new SequenceLayout({ hp: 1, cp: 2, seqLen: 16, causal: true, cuSeqlens: Int32Array.of(0, 5, 16) });
    for (let g = 12; g < 16; g++) {
      assert.equal(padded.documentOf(g), -1, `token ${g} is padding`);
      assert.equal(padded.visibleKeys(g), 0, `padding token ${g} sees nothing`);
      assert.equal(whole.visibleKeys(g), g - 5 + 1, `token ${g} of a document running to the end`);
    }
    const pairs = (l: SequenceLayout): number => l.work().reduce((a, b) => a + b, 0);
    assert.equal(pairs(padded), 15 + 28, 'visible pairs of documents of 5 and 7 tokens');
    assert.equal(pairs(whole), 15 + 66, 'visible pairs of documents of 5 and 11 tokens');
  });

  it('a hop with no visible pair has an empty rectangle; masks are relative to the rectangle', () => {
    // cp 2, 16 tokens, chunks of 4: position 0 holds [0, 4) and [12, 16); position 1 holds [4, 12).
    const l = new SequenceLayout({ hp: 1, cp: 2, seqLen: 16, causal: true, cuSeqlens: Int32Array.of(0, 4, 12, 16) });
    const empty = l.hop(1, 0);
    assert.deepEqual([empty.queryStart, empty.queryEnd, empty.keyStart, empty.keyEnd, empty.pairs], [0, 0, 0, 0, 0]);
    const own = l.hop(0, 0);
    // Queries [0,4) see their own causal triangle; queries [12,16) theirs: key rows [4, 8) of the block.
    assert.equal(own.mask.kind, 'documents');
    if (own.mask.kind !== 'documents') return;
    assert.deepEqual(Array.from(own.mask.keyStart), [0, 0, 0, 0, 4, 4, 4, 4]);
    assert.deepEqual(Array.from(own.mask.keyEnd), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(own.pairs, 20);
  });

  it('balanced sharding lowers the attention imbalance of short documents below zigzag, and keeps it at 1 for one causal document', () => {
    const seqLen = 512;
    // Many short documents and one long one at the end: zigzag gives the last chunks' owners most of the work.
    const cu = [0];
    while (cu[cu.length - 1]! < 320) cu.push(cu[cu.length - 1]! + 16);
    cu.push(seqLen);
    const make = (sharding: Sharding, docs?: number[]) =>
      new SequenceLayout({ hp: 1, cp: 4, seqLen, causal: true, sharding, balanceChunks: 8, ...(docs ? { cuSeqlens: Int32Array.from(docs) } : {}) });
    const zig = make('zigzag', cu).imbalance();
    const bal = make('balanced', cu).imbalance();
    assert.ok(zig > 1.2, `zigzag imbalance ${zig} with short documents`);
    assert.ok(bal < zig && bal < 1.1, `balanced imbalance ${bal} < zigzag ${zig}`);
    assert.equal(make('zigzag').imbalance(), 1);
    assert.ok(make('balanced').imbalance() < 1.01);
  });

  it('invalid cu_seqlens and sharding name the field, the value and what is valid', () => {
    const l = (cu: number[], more: object = {}) => () => new SequenceLayout({ hp: 1, cp: 2, seqLen: 16, causal: true, cuSeqlens: Int32Array.from(cu), ...more });
    assert.throws(l([1, 16]), /cu_seqlens must start with 0/);
    assert.throws(l([0, 8, 8, 16]), /cu_seqlens\[2\] = 8 is invalid: entries must increase strictly \(previous 8\) and be ≤ seqLen = 16/);
    assert.throws(l([0, 17]), /cu_seqlens\[1\] = 17 is invalid/);
    assert.throws(l([0, 16], { sharding: 'random' }), /parallel\.sharding = "random" is invalid; valid values: zigzag, balanced/);
    assert.throws(l([0, 16], { sharding: 'balanced', balanceChunks: 3 }), /train\.seqLen = 16 is invalid: it must be a multiple of 6, from cp·balanceChunks = 6/);
  });
});
