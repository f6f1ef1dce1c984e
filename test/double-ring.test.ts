import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { ringTopology } from '../src/attention/ring-groups.js';
import { checkSamePlans, ringPlans, ringSources } from '../src/attention/ring-plan.js';
import { SequenceLayout } from '../src/parallel/sequence-layout.js';
import { GROUP_KINDS, type GroupKind, type ProcessGroup } from '../src/comm/process-group.js';
import { launchRanks } from '../src/comm/backends.js';
import { Tracer, type TraceEvent } from '../src/comm/trace.js';
import { divisors, ParallelDims, PLACEMENTS, type Placement } from '../src/parallel/dims.js';
import { caseLayout, type AttentionOutputs, type DoubleRingArgs, type RingCase, type RingCaseResult } from './fixtures/attention-double-ring.js';
import { assertClose, gatherHeadSplitLse, gatherRows, makeInputs, refBackward, refForward, relError } from './helpers/attention-ref.js';

const ENTRY = fileURLToPath(new URL('./fixtures/attention-double-ring.js', import.meta.url));
const WORLD = 8;
const HEAD_CONFIGS = [
  { name: 'MHA', heads: 8, kvHeads: 8 },
  { name: 'GQA', heads: 8, kvHeads: 2 },
  { name: 'MQA', heads: 8, kvHeads: 1 },
] as const;

interface Layout {
  dp: number;
  hp: number;
  cp: number;
  w: number;
  placement: Placement;
}

function layoutName(l: Layout): string {
  return `sp=${l.hp * l.cp} hp=${l.hp} cp=${l.cp} w=${l.w} ${l.placement} dp=${l.dp}`;
}

/** Every sp ∈ {1,2,4,8}, hp·cp = sp, w | cp, both placements, dp ∈ {1,2} with dp·sp ≤ 8. */
function matrixLayouts(): Layout[] {
  const out: Layout[] = [];
  for (const sp of [1, 2, 4, 8]) {
    for (const hp of divisors(sp)) {
      const cp = sp / hp;
      for (const w of divisors(cp)) {
        for (const placement of PLACEMENTS) {
          for (const dp of [1, 2]) if (dp * sp <= WORLD) out.push({ dp, hp, cp, w, placement });
        }
      }
    }
  }
  return out;
}

/** F14 extras outside the power-of-two matrix: cp = 3 (plain and w = 1) and cp = 6 double rings. */
const F14_LAYOUTS: Layout[] = [
  { dp: 1, hp: 1, cp: 3, w: 3, placement: 'head-first' },
  { dp: 1, hp: 1, cp: 3, w: 1, placement: 'head-first' },
  { dp: 2, hp: 1, cp: 3, w: 3, placement: 'context-first' },
  { dp: 1, hp: 2, cp: 3, w: 3, placement: 'head-first' },
  { dp: 1, hp: 1, cp: 6, w: 2, placement: 'context-first' },
  { dp: 1, hp: 1, cp: 6, w: 3, placement: 'head-first' },
];

interface Case extends RingCase {
  layout: Layout;
  headName: string;
}

/**
 * Tiny shapes: seq = 4·sp (two tokens per zigzag chunk), d = 4; inputs depend on (sp, head
 * config, causal) only. MHA causal cases of dp = 1 with cp > 1 are traced.
 */
function buildCases(layouts: Layout[], firstSeed: number): Case[] {
  const cases: Case[] = [];
  for (const layout of layouts) {
    const sp = layout.hp * layout.cp;
    for (const [hcIndex, hc] of HEAD_CONFIGS.entries()) {
      for (const causal of [true, false]) {
        cases.push({
          ...layout,
          layout,
          headName: hc.name,
          heads: hc.heads,
          kvHeads: hc.kvHeads,
          headDim: 4,
          seq: 4 * sp,
          causal,
          // Same inputs for every layout of one sp, so layouts can be compared with each other.
          seed: firstSeed + 1000 * sp + 10 * hcIndex + (causal ? 0 : 5),
          trace: hc.name === 'MHA' && causal && layout.dp === 1 && layout.cp > 1,
        });
      }
    }
  }
  return cases;
}

const MATRIX = matrixLayouts();
const CASES = [...buildCases(MATRIX, 1), ...buildCases(F14_LAYOUTS, 100_001)];
let results: Array<Array<RingCaseResult | null>> = [];
let launchMs = 0;

/** The participating ranks' results of case `index`. */
function caseResults(index: number): RingCaseResult[] {
  const c = CASES[index]!;
  const world = c.dp * c.hp * c.cp;
  const rs = results.map((perRank) => perRank[index]);
  rs.forEach((r, rank) => assert.equal(r === null, rank >= world, `rank ${rank} takes part in the case iff rank < ${world}`));
  return rs.filter((r): r is RingCaseResult => r !== null);
}

/** out, lse, dq, dk, dv of every SP block against float64 single-device attention of its sequence. */
function checkExact(c: Case, rs: RingCaseResult[]): void {
  for (let b = 0; b < c.dp; b++) {
    const mine = rs.filter((r) => r.block === b);
    assert.equal(mine.length, c.hp * c.cp);
    const inputs = makeInputs(c.seed + b, c.seq, c.heads, c.kvHeads, c.headDim);
    const dims = { sq: c.seq, sk: c.seq, heads: c.heads, kvHeads: c.kvHeads, d: c.headDim, causal: c.causal };
    const ref = refForward(inputs.q, inputs.k, inputs.v, dims);
    const grads = refBackward(inputs.q, inputs.k, inputs.v, inputs.dO, dims);
    const qRow = c.heads * c.headDim;
    const kvRow = c.kvHeads * c.headDim;
    const rows = (pick: (r: RingCaseResult) => Float32Array, rowLen: number) =>
      gatherRows(mine.map((r) => ({ indices: r.indices, rows: pick(r) })), c.seq, rowLen);
    assertClose(`block ${b} out`, rows((r) => r.out, qRow), ref.out);
    assertClose(`block ${b} lse`, gatherHeadSplitLse(mine, c.seq, c.heads, c.hp, c.cp), ref.lse);
    assertClose(`block ${b} dq`, rows((r) => r.dq, qRow), grads.dq);
    assertClose(`block ${b} dk`, rows((r) => r.dk, kvRow), grads.dk);
    assertClose(`block ${b} dv`, rows((r) => r.dv, kvRow), grads.dv);
  }
}

/** Messages and bytes one rank sends (and receives) per group kind. */
type Volume = Partial<Record<GroupKind, { messages: number; bytes: number }>>;

/**
 * algorithms.md §6 and the schedule of docs/attention.md, per rank: all-to-all under 'hp'
 * (4 per direction, (hp − 1)/hp · T·d·(2H + 2·max(Hkv, hp)) elements); ring messages of
 * 2·(S/cp)·(max(Hkv, hp)/hp)·d elements under 'cp' when w = cp, else 'inner' and 'outer'.
 */
function expectedVolume(c: RingCase): { forward: Volume; backward: Volume; kvMessageBytes: number } {
  const sp = c.hp * c.cp;
  const t = c.seq / sp;
  const kvRep = Math.max(c.kvHeads, c.hp);
  const a2a = { messages: 4 * (c.hp - 1), bytes: ((c.hp - 1) * t * c.headDim * (2 * c.heads + 2 * kvRep) * 4) / c.hp };
  const msg = (2 * (c.seq / c.cp) * (kvRep / c.hp) * c.headDim) * 4;
  const W = c.cp / c.w;
  const ring = (n: number) => ({ messages: n, bytes: n * msg });
  const innerKv = (c.w - 1) * W;
  const innerDkv = c.w > 1 ? c.w * W : 0;
  const outerKv = W - 1;
  const outerDkv = W > 1 ? W : 0;
  if (c.w === c.cp) {
    return { forward: { hp: a2a, cp: ring(innerKv) }, backward: { hp: a2a, cp: ring(innerKv + innerDkv) }, kvMessageBytes: msg };
  }
  return {
    forward: { hp: a2a, inner: ring(innerKv), outer: ring(outerKv) },
    backward: { hp: a2a, inner: ring(innerKv + innerDkv), outer: ring(outerKv + outerDkv) },
    kvMessageBytes: msg,
  };
}

function checkVolume(c: Case, rs: RingCaseResult[]): void {
  const want = expectedVolume(c);
  for (const r of rs) {
    for (const dir of ['forward', 'backward'] as const) {
      for (const kind of GROUP_KINDS) {
        const got = r[dir][kind];
        const exp = want[dir][kind] ?? { messages: 0, bytes: 0 };
        const where = `rank ${r.rank} ${dir} '${kind}'`;
        assert.equal(got.messagesSent, exp.messages, `${where} messages sent`);
        assert.equal(got.bytesSent, exp.bytes, `${where} bytes sent`);
        assert.equal(got.messagesReceived, exp.messages, `${where} messages received`);
        assert.equal(got.bytesReceived, exp.bytes, `${where} bytes received`);
      }
    }
    assert.equal(r.leakedBytes, 0, `rank ${r.rank}: every temporary and the saved state are freed`);
  }
}

function bitwiseEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return ua.every((x, i) => x === ub[i]);
}

function assertBitwise(name: string, got: Float32Array, want: Float32Array): void {
  assert.ok(bitwiseEqual(got, want), `${name}: not bitwise identical (relative difference ${relError(got, want)})`);
}

const FIELDS = ['out', 'lse', 'dq', 'dk', 'dv'] as const;

function caseIndex(pred: (c: Case) => boolean): number {
  const i = CASES.findIndex(pred);
  assert.ok(i >= 0, 'case exists');
  return i;
}

const sameLayout = (a: Layout, b: Layout) => a.dp === b.dp && a.hp === b.hp && a.cp === b.cp && a.w === b.w && a.placement === b.placement;

describe('Double-Ring-Attention: exhaustive layouts in one launch of 8 ranks against float64 attention', () => {
  before(async () => {
    const t0 = performance.now();
    const args: DoubleRingArgs = { cases: CASES.map(({ layout: _l, headName: _h, ...c }) => c) };
    results = (await launchRanks({ world: WORLD, entry: ENTRY, args, timeoutMs: 10_000, arenaBytes: 4 << 20 })) as Array<Array<RingCaseResult | null>>;
    launchMs = performance.now() - t0;
  });

  it(`ran ${CASES.length} cases (${MATRIX.length} matrix layouts + ${F14_LAYOUTS.length} F14 layouts × MHA/GQA/MQA × causal/non-causal)`, (t) => {
    assert.equal(results.length, WORLD);
    for (const perRank of results) assert.equal(perRank.length, CASES.length);
    t.diagnostic(`one launch of ${WORLD} ranks ran all cases in ${launchMs.toFixed(0)} ms`);
  });

  for (const layout of [...MATRIX, ...F14_LAYOUTS]) {
    const f14 = F14_LAYOUTS.includes(layout) ? 'F14 completes: ' : '';
    it(`${f14}${layoutName(layout)}: MHA 8/8, GQA 8/2, MQA 8/1 × causal, non-causal — out, lse, dq, dk, dv; comm volume per kind fwd/bwd; no leaks`, () => {
      CASES.forEach((c, i) => {
        if (c.layout !== layout) return;
        const rs = caseResults(i);
        const label = `${layoutName(layout)} ${c.headName} ${c.causal ? 'causal' : 'non-causal'}`;
        try {
          checkExact(c, rs);
          checkVolume(c, rs);
        } catch (e) {
          (e as Error).message = `${label}: ${(e as Error).message}`;
          throw e;
        }
      });
    });
  }

  it('w = 1 vs w = cp (every cp > 1 layout, head config, causal mode): out, lse, dq bitwise identical (same merge order); dk, dv within 1e-5 (running totals add per outer step)', () => {
    let compared = 0;
    CASES.forEach((c, i) => {
      if (c.cp === 1 || c.w !== 1) return;
      const j = caseIndex((o) => sameLayout(o.layout, { ...c.layout, w: c.cp }) && o.headName === c.headName && o.causal === c.causal);
      const one = caseResults(i);
      const full = caseResults(j);
      one.forEach((r, k) => {
        const p = full[k]!;
        const label = `${layoutName(c.layout)} ${c.headName} causal=${c.causal} rank ${r.rank}`;
        for (const f of ['out', 'lse', 'dq'] as const) assertBitwise(`${label} ${f}`, r[f], p[f]);
        for (const f of ['dk', 'dv'] as const) assertClose(`${label} ${f}`, r[f], p[f]);
      });
      compared++;
    });
    assert.ok(compared >= 40, `compared ${compared} case pairs`);
  });

  it('cp = 1 (every hp, placement, dp, head config, causal mode) is bitwise identical to Ulysses-only: out, lse, dq, dk, dv', () => {
    let compared = 0;
    CASES.forEach((c, i) => {
      if (c.cp !== 1) return;
      for (const r of caseResults(i)) {
        const u = r.ulysses as AttentionOutputs;
        for (const f of FIELDS) assertBitwise(`${layoutName(c.layout)} ${c.headName} causal=${c.causal} rank ${r.rank} ${f}`, r[f], u[f]);
      }
      compared++;
    });
    assert.equal(compared, (3 * 2 * 2 + 1 * 2 * 1) * 3 * 2, 'cp = 1 cases: (sp ∈ {1,2,4} × placements × dp ∈ {1,2} + sp = 8 × placements) × head configs × causal modes');
  });

  it('trace (MHA causal, dp = 1, every cp > 1 layout): ring phases, zigzag balance, inner posts before compute, outer waits after inner passes, peers and kinds', () => {
    let traced = 0;
    CASES.forEach((c, i) => {
      if (!c.trace) return;
      for (const r of caseResults(i)) checkTrace(c, r);
      traced++;
    });
    assert.equal(traced, MATRIX.filter((l) => l.dp === 1 && l.cp > 1).length + F14_LAYOUTS.filter((l) => l.dp === 1).length);
  });
});

/** The spans of `events` that lie inside `p` (single-thread spans nest: start no earlier, end no later). */
function inside(events: TraceEvent[], p: TraceEvent): TraceEvent[] {
  const pi = events.indexOf(p);
  return events.filter((e, i) => i < pi && e.ts >= p.ts);
}

/** a lies wholly before b: it starts earlier and ends earlier (so, nesting, it ends before b starts). */
function precedes(events: TraceEvent[], a: TraceEvent, b: TraceEvent): boolean {
  return a.ts < b.ts && events.indexOf(a) < events.indexOf(b);
}

function byName(events: TraceEvent[], name: string): TraceEvent[] {
  return events.filter((e) => e.name === name).sort((a, b) => a.ts - b.ts);
}

/**
 * One rank's ring trace (events in the order spans ended). Forward and backward each: one
 * 'ring …' phase holding W inner passes of w compute spans whose sources are ringSources and
 * whose rectangles are the zigzag hop plans (2c² + c pairs at the own block, 2c² elsewhere);
 * each inner K/V send/receive is posted between the previous block's compute and the current
 * one's; outer K/V posts lie before the pass, outer waits after it and never inside any pass.
 */
function checkTrace(c: RingCase, r: RingCaseResult): void {
  const events = r.trace!;
  const dims = new ParallelDims({ dp: c.dp, hp: c.hp, cp: c.cp, placement: c.placement, innerRingSize: c.w });
  const W = c.cp / c.w;
  const p = dims.coords(r.rank).c;
  const tokens = c.seq / c.cp;
  const half = tokens / 2;
  const innerRing = dims.innerRing(r.rank);
  const outerRing = dims.outerRing(r.rank);
  const u = p % c.w;
  const k = Math.floor(p / c.w);
  const label = `${layoutName({ ...c })} rank ${r.rank}`;
  const msgBytes = expectedVolume(c).kvMessageBytes;
  const innerKind = c.w === c.cp ? 'cp' : 'inner';

  for (const e of events.filter((x) => x.cat === 'comm')) {
    const outer = e.name.includes('outer');
    const send = e.args!.op === 'send';
    const ring = outer ? outerRing : innerRing;
    const me = outer ? k : u;
    const size = outer ? W : c.w;
    assert.equal(e.args!.kind, outer ? 'outer' : innerKind, `${label} ${e.name}: group kind`);
    assert.equal(e.args!.peer, ring[(me + (send ? 1 : -1) + size) % size], `${label} ${e.name}: peer is the ${send ? 'next' : 'previous'} ring member`);
    assert.equal(e.args!.bytes, msgBytes, `${label} ${e.name}: bytes`);
  }

  const allPasses = byName(events, 'ring forward').concat(byName(events, 'ring backward'));
  assert.equal(allPasses.length, 2, `${label}: one forward and one backward ring phase`);
  const sources = ringSources(p, c.cp, c.w);
  for (const [dir, ringSpan] of [['forward', allPasses[0]!], ['backward', allPasses[1]!]] as const) {
    const within = inside(events, ringSpan);
    const passes = within.filter((e) => e.cat === 'phase' && e.name.startsWith('inner pass')).sort((a, b) => a.ts - b.ts);
    assert.deepEqual(passes.map((e) => [e.name, e.args!.outerStep]), Array.from({ length: W }, (_, j) => [`inner pass ${j}`, j]), `${label} ${dir}: inner passes`);
    const count = (name: string) => within.filter((e) => e.name === name).length;
    const dkv = dir === 'backward';
    assert.equal(count('post inner KV send'), (c.w - 1) * W, `${label} ${dir}: inner K/V messages`);
    assert.equal(count('post outer KV send'), W - 1, `${label} ${dir}: outer K/V messages`);
    assert.equal(count('post inner dKV send'), dkv && c.w > 1 ? c.w * W : 0, `${label} ${dir}: inner dK/dV messages`);
    assert.equal(count('post outer dKV send'), dkv && W > 1 ? W : 0, `${label} ${dir}: outer dK/dV messages`);
    const outerWaits = within.filter((e) => e.name.startsWith('wait outer'));
    for (const w of outerWaits) {
      for (const pass of passes) assert.ok(!inside(events, pass).includes(w), `${label} ${dir}: ${w.name} lies inside ${pass.name}`);
    }
    passes.forEach((pass, j) => {
      const inPass = inside(events, pass);
      const computes = inPass.filter((e) => e.cat === 'compute').sort((a, b) => a.ts - b.ts);
      assert.deepEqual(computes.map((e) => e.args!.source), sources.slice(j * c.w, (j + 1) * c.w), `${label} ${dir} pass ${j}: block sources`);
      for (const e of computes) {
        const plan = caseLayout(c).hop(p, e.args!.source as number);
        const got = { source: e.args!.source, queryStart: e.args!.queryStart, queryEnd: e.args!.queryEnd, keyStart: e.args!.keyStart, keyEnd: e.args!.keyEnd, mask: e.args!.mask, pairs: e.args!.pairs };
        const want = { source: plan.source, queryStart: plan.queryStart, queryEnd: plan.queryEnd, keyStart: plan.keyStart, keyEnd: plan.keyEnd, mask: plan.mask.kind, pairs: plan.pairs };
        assert.deepEqual(got, want, `${label} ${dir} pass ${j}: block rectangle`);
        if (c.causal) assert.equal(plan.pairs, plan.source === p ? 2 * half * half + half : 2 * half * half, `${label}: zigzag balance`);
      }
      const sends = inPass.filter((e) => e.name === 'post inner KV send').sort((a, b) => a.ts - b.ts);
      const recvWaits = inPass.filter((e) => e.name === 'wait inner KV recv').sort((a, b) => a.ts - b.ts);
      assert.equal(sends.length, c.w - 1);
      sends.forEach((s, i) => {
        assert.ok(precedes(events, s, computes[i]!), `${label} ${dir} pass ${j}: inner send ${i} posted before block ${i}'s compute`);
        if (i > 0) assert.ok(precedes(events, computes[i - 1]!, s), `${label} ${dir} pass ${j}: inner send ${i} posted after block ${i - 1}'s compute`);
        assert.ok(precedes(events, computes[i]!, recvWaits[i]!), `${label} ${dir} pass ${j}: inner wait ${i} after block ${i}'s compute`);
      });
      if (j < W - 1) {
        const post = outerKv(within, 'post outer KV send', j);
        const wait = outerKv(within, 'wait outer KV recv', j);
        assert.ok(precedes(events, post, pass), `${label} ${dir}: outer send of step ${j} posted before inner pass ${j}`);
        if (j > 0) assert.ok(precedes(events, passes[j - 1]!, post), `${label} ${dir}: outer send of step ${j} posted after inner pass ${j - 1}`);
        assert.ok(precedes(events, pass, wait), `${label} ${dir}: outer wait of step ${j} after inner pass ${j}`);
        if (j + 1 < W) assert.ok(precedes(events, wait, passes[j + 1]!), `${label} ${dir}: outer wait of step ${j} before inner pass ${j + 1}`);
      }
    });
  }
}

/** The j-th (by start) span named `name`. */
function outerKv(events: TraceEvent[], name: string, j: number): TraceEvent {
  const e = byName(events, name)[j];
  assert.ok(e !== undefined, `${name} #${j} recorded`);
  return e;
}

describe('double ring plans (algorithms.md §1, §4)', () => {
  it('sources: hop (j, i) of position k·w + u holds the block of ((k − j) mod W)·w + ((u − i) mod w); w = cp and w = 1 are the plain ring', () => {
    assert.deepEqual(ringSources(5, 8, 2), [5, 4, 3, 2, 1, 0, 7, 6]);
    assert.deepEqual(ringSources(0, 8, 4), [0, 3, 2, 1, 4, 7, 6, 5]);
    assert.deepEqual(ringSources(4, 6, 3), [4, 3, 5, 1, 0, 2]);
    assert.deepEqual(ringSources(4, 6, 2), [4, 5, 2, 3, 0, 1]);
    for (const cp of [1, 2, 3, 4, 6, 8]) {
      for (let p = 0; p < cp; p++) {
        const plain = Array.from({ length: cp }, (_, i) => (p - i + cp) % cp);
        assert.deepEqual(ringSources(p, cp), plain, `cp=${cp} p=${p}: default w = cp`);
        assert.deepEqual(ringSources(p, cp, 1), plain, `cp=${cp} p=${p}: w = 1`);
        for (const w of divisors(cp)) assert.deepEqual([...ringSources(p, cp, w)].sort((a, b) => a - b), Array.from({ length: cp }, (_, i) => i), `cp=${cp} w=${w} p=${p}: every block once`);
      }
    }
    assert.throws(() => ringSources(0, 6, 4), /innerRingSize = 4 must divide cp = 6; valid values: 1, 2, 3, 6/);
  });

  it('zigzag balance per rank per hop (2c² + c at the own block, 2c² elsewhere) and every causal pair exactly once, for every cp ≤ 8 and w | cp', () => {
    for (let cp = 1; cp <= 8; cp++) {
      for (const w of divisors(cp)) {
        for (const c of [1, 2]) {
          const s = 2 * c * cp;
          const zig = (p: number, i: number) => (i < c ? p * c + i : (2 * cp - 1 - p) * c + i - c);
          const count = new Int32Array(s * s);
          for (let p = 0; p < cp; p++) {
            ringPlans(new SequenceLayout({ hp: 1, cp, seqLen: s, causal: true }), p, w).forEach((plan, hop) => {
              assert.equal(plan.pairs, plan.source === p ? 2 * c * c + c : 2 * c * c, `cp=${cp} w=${w} c=${c} p=${p} hop ${hop}`);
              for (let i = plan.queryStart; i < plan.queryEnd; i++) {
                for (let j = plan.keyStart; j < plan.keyEnd; j++) {
                  if (plan.mask.kind === 'causal' && j - plan.keyStart > i - plan.queryStart + plan.mask.offset) continue;
                  count[zig(p, i) * s + zig(plan.source, j)]! += 1;
                }
              }
            });
          }
          for (let qi = 0; qi < s; qi++) {
            for (let kj = 0; kj < s; kj++) assert.equal(count[qi * s + kj], kj <= qi ? 1 : 0, `cp=${cp} w=${w} c=${c} pair (${qi}, ${kj})`);
          }
        }
      }
    }
  });

  it('F2: a backward planned with another inner ring size fails naming the hop', () => {
    assert.deepEqual(ringSources(0, 4, 2), [0, 1, 2, 3]);
    const l = new SequenceLayout({ hp: 1, cp: 4, seqLen: 16, causal: true });
    assert.throws(() => checkSamePlans(ringPlans(l, 0, 2), ringPlans(l, 0)), /ring backward hop 1: plan \(source 3, .*\) differs from the forward's \(source 1, /);
  });

  it('inner/outer groups must be given together and be the rank\'s rings of the cp group', () => {
    const group = (kind: GroupKind, ranks: number[], me: number): ProcessGroup => ({ kind, ranks, rank: ranks.indexOf(me), size: ranks.length }) as unknown as ProcessGroup;
    const tracer = new Tracer(false, 0);
    const dims = new ParallelDims({ dp: 1, hp: 2, cp: 4, placement: 'head-first', innerRingSize: 2 });
    const rank = 6; // c = 3: inner ring {4, 6}, outer ring {2, 6}
    const cpGroup = group('cp', dims.cpGroup(rank), rank);
    const topo = ringTopology(cpGroup, group('inner', dims.innerRing(rank), rank), group('outer', dims.outerRing(rank), rank), tracer);
    assert.deepEqual([topo.position, topo.innerSize, topo.outerSize, topo.inner.group.kind, topo.outer?.group.kind], [3, 2, 2, 'inner', 'outer']);
    assert.equal(ringTopology(cpGroup, undefined, undefined, tracer).inner.group, cpGroup);
    assert.throws(() => ringTopology(cpGroup, group('inner', [4, 6], rank), undefined, tracer), /innerGroup and outerGroup must be given together .* got only innerGroup/);
    assert.throws(() => ringTopology(cpGroup, group('inner', [6, 4], rank), group('outer', [2, 6], rank), tracer), /needs innerGroup \[4, 6\] and outerGroup \[2, 6\] .* got \[6, 4\] and \[2, 6\]/);
    assert.throws(() => ringTopology(cpGroup, group('inner', [6], rank), group('outer', [2, 6], rank), tracer), /innerGroup size 1 × outerGroup size 2 = 2 must equal the cp group size 4/);
  });
});
