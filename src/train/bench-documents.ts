import { ConfigError } from '../errors.js';
import { resolveKernels, type BackendName, type KernelChoice } from '../kernels/registry.js';
import { ParallelDims, validateLayout } from '../parallel/dims.js';
import { SequenceLayout, type Sharding } from '../parallel/sequence-layout.js';
import { Rng } from '../tensor/rng.js';
import type { AttentionBenchRankArgs } from './bench-attention-rank.js';
import { runAttentionLayer } from './bench-attention.js';
import { machineInfo, median, table, type MachineInfo } from './bench-common.js';

/**
 * `loongtrain bench documents` (issue "Packed documents with document masks", docs/bench.md):
 * one TwoDAttention layer forward + backward on a sequence of packed documents, under plain
 * zigzag sharding and under `balanced` sharding (SequenceLayout), on 4 ranks in two layouts,
 * with the same layer on one causal document of the same length as the reference.
 *
 * The length distribution ({@link documentLengths}), deterministic from a seed and scaled with
 * S (numbers at S = 8192): 2 long documents of S/8 … S/5 tokens each (1024–1638), uniform, placed
 * at the end of the sequence (as packing that appends long documents last, or sorts by length,
 * leaves them), preceded by short documents of S/128 … S/16 tokens (64–512), uniform, that fill
 * the rest exactly (60–75% of S). No padding. Under zigzag (cp = 4: position c holds chunks c
 * and 7 − c of S/8) the long documents' quadratic work falls on the positions that hold the last
 * chunks, so zigzag is visibly unbalanced; balanced sharding spreads it.
 */

/**
 * A layout of the documents benchmark: `ring` cp = 4 (hp 1) and `usp` hp 2 × cp 2 (one ring) on
 * 4 ranks, and `ring` cp = 2 on 2 ranks, which on a 2-core machine gives every rank a core of its
 * own, so the busiest position, not the total work, sets the time.
 */
export interface DocumentsLayout {
  name: 'ring' | 'usp';
  hp: number;
  cp: number;
}

export const DOCUMENTS_LAYOUTS: readonly DocumentsLayout[] = [
  { name: 'ring', hp: 1, cp: 4 },
  { name: 'usp', hp: 2, cp: 2 },
  { name: 'ring', hp: 1, cp: 2 },
];

export interface DocumentsBenchOptions {
  /** Sequence length S; a multiple of cp·balanceChunks and 2·sp for every layout, ≥ 256. */
  seqLen: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Runs of forward + backward left out of the medians. */
  warmup: number;
  /** Measured runs. */
  reps: number;
  /** Seed of the length distribution and of the random q, k, v, dO. */
  seed: number;
  /** Kernel backend of the ranks (createKernels). */
  kernels: KernelChoice;
  /** Chunks per ring position under balanced sharding. */
  balanceChunks: number;
}

export const DEFAULT_DOCUMENTS_BENCH: DocumentsBenchOptions = { seqLen: 8192, heads: 8, kvHeads: 2, headDim: 64, warmup: 1, reps: 3, seed: 1, kernels: 'wasm', balanceChunks: 8 };

/**
 * Document lengths of the benchmark's sequence (see the module comment): short documents of
 * round(S/128) … round(S/16) tokens filling S minus the long ones exactly, then 2 long documents
 * of round(S/8) … round(S/5) tokens. Deterministic in (seqLen, seed); the lengths sum to seqLen.
 * @throws ConfigError when seqLen is not an integer ≥ 256.
 */
export function documentLengths(seqLen: number, seed: number): number[] {
  if (!Number.isInteger(seqLen) || seqLen < 256) throw new ConfigError(`bench documents: seqLen = ${seqLen} is invalid: it must be an integer ≥ 256`);
  const rng = new Rng(seed);
  const between = (lo: number, hi: number): number => lo + rng.int(hi - lo + 1);
  const long = [0, 1].map(() => between(Math.round(seqLen / 8), Math.round(seqLen / 5)));
  const lo = Math.round(seqLen / 128);
  const hi = Math.round(seqLen / 16);
  const short: number[] = [];
  // Every draw leaves at least `lo` tokens, so the last short document is in [lo, hi] too.
  let rest = seqLen - long[0]! - long[1]!;
  while (rest > hi) {
    const len = between(lo, Math.min(hi, rest - lo));
    short.push(len);
    rest -= len;
  }
  short.push(rest);
  return [...short, ...long];
}

/** cu_seqlens of the lengths: [0, l₀, l₀ + l₁, …]. */
export function cuSeqlensOf(lengths: readonly number[]): number[] {
  const cu = [0];
  for (const l of lengths) cu.push(cu[cu.length - 1]! + l);
  return cu;
}

/** One rank of a run: where it sits and what its ring did in one forward + backward. */
export interface DocumentsRankResult {
  rank: number;
  /** Head-group index h and ring position c. */
  h: number;
  c: number;
  /** Visible (query, key) pairs per head of its ring position. */
  visiblePairs: number;
  computedHops: number;
  skippedHops: number;
  /**
   * Median over the measured runs of its forward + backward ms minus the time it was blocked on
   * messages: its own work, the measured counterpart of visiblePairs (with more ranks than
   * cores it also holds the time the rank waited for a core).
   */
  busyMs: number;
  /** Median over the measured runs of its thread's CPU ms (threadCpuMs); absent where the OS does not tell. */
  cpuMs?: number;
}

export interface DocumentsResult extends DocumentsLayout {
  sp: number;
  /** `documents`: the packed sequence; `single`: one causal document of S tokens (the reference). */
  sequence: 'documents' | 'single';
  sharding: Sharding;
  /** Chunks per position under balanced sharding; absent for zigzag. */
  balanceChunks?: number;
  /** max / mean of the visible pairs per ring position (SequenceLayout.imbalance). */
  imbalance: number;
  /** Visible pairs per head of each ring position c (SequenceLayout.work). */
  pairsPerPosition: number[];
  /** Per rank, ascending. */
  ranks: DocumentsRankResult[];
  /** Hops over all ranks in one forward + backward. */
  hops: { computed: number; skipped: number };
  reps: number;
  /** Medians over the measured runs of the slowest rank's forward + backward ms, and the largest share of it a rank waited for messages. */
  median: { ms: number; commWaitShare: number };
  /** median ms / that of the same layout's documents under zigzag (balanced / zigzag; single / zigzag). */
  vsZigzag: number;
  /**
   * Medians over the measured runs of the busiest rank's CPU ms and of all ranks' together
   * (threadCpuMs), and the busiest over that of the layout's documents under zigzag. With a
   * core per rank the pass takes at least the busiest rank's CPU time, which a machine with
   * fewer cores than ranks cannot show in wall-clock time; absent where the OS does not report
   * thread CPU time.
   */
  cpu?: { maxMs: number; totalMs: number; maxVsZigzag: number };
}

export interface DocumentsBenchReport {
  suite: 'documents';
  machine: MachineInfo;
  layer: { seqLen: number; heads: number; kvHeads: number; headDim: number; causal: true };
  /** The backend the ranks ran on. */
  kernels: BackendName;
  warmup: number;
  reps: number;
  seed: number;
  distribution: {
    documents: number;
    /** Lengths in tokens. */
    length: { min: number; median: number; max: number };
    /** The 2 long documents at the end, and the short ones before them. */
    long: { documents: number; tokens: number };
    short: { documents: number; tokens: number };
    /** Visible pairs per head of the whole sequence: Σ L(L + 1)/2 over the documents. */
    visiblePairs: number;
    cuSeqlens: number[];
  };
  results: DocumentsResult[];
}

function checkOptions(o: DocumentsBenchOptions): void {
  const ints: Array<[string, number, number]> = [
    ['seqLen', o.seqLen, 256], ['heads', o.heads, 1], ['kvHeads', o.kvHeads, 1], ['headDim', o.headDim, 1], ['warmup', o.warmup, 0], ['reps', o.reps, 1], ['seed', o.seed, 0], ['balanceChunks', o.balanceChunks, 1],
  ];
  for (const [field, value, min] of ints) {
    if (!Number.isInteger(value) || value < min) throw new ConfigError(`bench documents: ${field} = ${String(value)} is invalid: it must be an integer ≥ ${min}`);
  }
}

interface RunCase {
  layout: DocumentsLayout;
  sequence: 'documents' | 'single';
  sharding: Sharding;
  seqLayout: SequenceLayout;
}

/**
 * Time one TwoDAttention layer (causal, forward + backward) on the packed documents of
 * {@link documentLengths} under each layout of {@link DOCUMENTS_LAYOUTS} with zigzag and with
 * balanced sharding, plus one causal document per layout under zigzag: per case 4 worker threads
 * run `warmup + reps` passes on seeded random data. Reported per case: the layout's imbalance
 * and visible pairs per position, each rank's computed and skipped hops, and the median over
 * the measured runs of the slowest rank's time.
 * @throws ConfigError for an invalid option, a kernel backend that cannot run here, or a size
 *   that does not fit a layout or sharding (all checked before any runs), naming the layout.
 * @throws RankFailedError when a rank fails (e.g. its arena is exhausted).
 */
export async function benchDocuments(opts: DocumentsBenchOptions): Promise<DocumentsBenchReport> {
  checkOptions(opts);
  const kernels = resolveKernels(opts.kernels).name;
  const lengths = documentLengths(opts.seqLen, opts.seed);
  const cuSeqlens = cuSeqlensOf(lengths);
  const cu = Int32Array.from(cuSeqlens);
  const { seqLen, heads, kvHeads, headDim } = opts;

  const cases: RunCase[] = [];
  for (const layout of DOCUMENTS_LAYOUTS) {
    const where = `bench documents layout ${layout.name} (hp ${layout.hp} × cp ${layout.cp})`;
    try {
      validateLayout(new ParallelDims({ dp: 1, hp: layout.hp, cp: layout.cp, innerRingSize: layout.cp, placement: 'head-first' }), opts);
      const base = { hp: layout.hp, cp: layout.cp, seqLen, causal: true };
      cases.push({ layout, sequence: 'single', sharding: 'zigzag', seqLayout: new SequenceLayout(base) });
      cases.push({ layout, sequence: 'documents', sharding: 'zigzag', seqLayout: new SequenceLayout({ ...base, cuSeqlens: cu }) });
      cases.push({ layout, sequence: 'documents', sharding: 'balanced', seqLayout: new SequenceLayout({ ...base, cuSeqlens: cu, sharding: 'balanced', balanceChunks: opts.balanceChunks }) });
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`${where}: ${e.message}`);
      throw e;
    }
  }

  const results: DocumentsResult[] = [];
  for (const { layout, sequence, sharding, seqLayout } of cases) {
    const sp = layout.hp * layout.cp;
    const args: AttentionBenchRankArgs = {
      seqLen, heads, kvHeads, headDim, causal: true, warmup: opts.warmup, reps: opts.reps, seed: opts.seed,
      hp: layout.hp, cp: layout.cp, innerRingSize: layout.cp, kernels, sharding,
      ...(sequence === 'documents' ? { cuSeqlens } : {}),
      ...(sharding === 'balanced' ? { balanceChunks: opts.balanceChunks } : {}),
    };
    const { ranks, ms, commWaitShare } = await runAttentionLayer(args);
    const perRank: DocumentsRankResult[] = ranks.map((r, rank) => ({
      rank,
      h: r.headGroup,
      c: r.position,
      visiblePairs: r.visiblePairs,
      computedHops: r.ringCounters.computedHops,
      skippedHops: r.ringCounters.skippedHops,
      busyMs: median(r.ms.map((x, i) => x - r.waitMs[i]!)),
      ...(r.cpuMs.length === opts.reps ? { cpuMs: median(r.cpuMs) } : {}),
    }));
    // Per measured run, every rank's CPU ms; absent where the OS does not report them.
    const cpuRuns = ranks.every((r) => r.cpuMs.length === opts.reps) ? Array.from({ length: opts.reps }, (_, i) => ranks.map((r) => r.cpuMs[i]!)) : undefined;
    results.push({
      ...layout,
      sp,
      sequence,
      sharding,
      ...(sharding === 'balanced' ? { balanceChunks: opts.balanceChunks } : {}),
      imbalance: seqLayout.imbalance(),
      pairsPerPosition: seqLayout.work(),
      ranks: perRank,
      hops: { computed: perRank.reduce((n, r) => n + r.computedHops, 0), skipped: perRank.reduce((n, r) => n + r.skippedHops, 0) },
      reps: opts.reps,
      median: { ms, commWaitShare },
      vsZigzag: 1,
      ...(cpuRuns !== undefined
        ? { cpu: { maxMs: median(cpuRuns.map((xs) => Math.max(...xs))), totalMs: median(cpuRuns.map((xs) => xs.reduce((a, b) => a + b, 0))), maxVsZigzag: 1 } }
        : {}),
    });
  }
  for (const r of results) {
    const zigzag = results.find((z) => z.name === r.name && z.hp === r.hp && z.cp === r.cp && z.sequence === 'documents' && z.sharding === 'zigzag')!;
    r.vsZigzag = r.median.ms / zigzag.median.ms;
    if (r.cpu !== undefined && zigzag.cpu !== undefined) r.cpu.maxVsZigzag = r.cpu.maxMs / zigzag.cpu.maxMs;
  }

  const sorted = [...lengths].sort((a, b) => a - b);
  const short = lengths.slice(0, -2);
  const long = lengths.slice(-2);
  const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
  return {
    suite: 'documents',
    machine: machineInfo(),
    layer: { seqLen, heads, kvHeads, headDim, causal: true },
    kernels,
    warmup: opts.warmup,
    reps: opts.reps,
    seed: opts.seed,
    distribution: {
      documents: lengths.length,
      length: { min: sorted[0]!, median: median(sorted), max: sorted[sorted.length - 1]! },
      long: { documents: long.length, tokens: sum(long) },
      short: { documents: short.length, tokens: sum(short) },
      visiblePairs: sum(lengths.map((l) => (l * (l + 1)) / 2)),
      cuSeqlens,
    },
    results,
  };
}

/** Pairs in thousands (k) or millions (M), for the table. */
function pairs(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : `${(n / 1e3).toFixed(0)}k`;
}

/** A fixed-width table of a report, for people. */
export function formatDocumentsTable(report: DocumentsBenchReport): string {
  const head = ['layout', 'hp×cp', 'sequence', 'sharding', 'imbalance', 'pairs/position', 'hops comp/skip', 'fwd+bwd ms', 'vs zigzag', 'comm wait %', 'CPU ms max/all', 'CPU max vs zigzag', 'CPU ms/rank'];
  const rows = report.results.map((r) => [
    r.name,
    `${r.hp}×${r.cp}`,
    r.sequence,
    r.sharding === 'balanced' ? `balanced k=${r.balanceChunks}` : r.sharding,
    r.imbalance.toFixed(3),
    r.pairsPerPosition.map(pairs).join(' '),
    `${r.hops.computed}/${r.hops.skipped}`,
    r.median.ms.toFixed(1),
    r.vsZigzag.toFixed(2),
    (r.median.commWaitShare * 100).toFixed(1),
    r.cpu === undefined ? '–' : `${r.cpu.maxMs.toFixed(0)}/${r.cpu.totalMs.toFixed(0)}`,
    r.cpu === undefined ? '–' : r.cpu.maxVsZigzag.toFixed(2),
    r.cpu === undefined ? '–' : r.ranks.map((x) => x.cpuMs!.toFixed(0)).join(' '),
  ]);
  const { machine: m, layer: l, distribution: d } = report;
  return [
    `${m.cpu}, ${m.cores} cores, node ${m.node}; one TwoDAttention layer S ${l.seqLen}, H ${l.heads}, Hkv ${l.kvHeads}, d ${l.headDim}, causal, kernels ${report.kernels}, ${report.warmup} warmup + ${report.reps} runs`,
    `documents: ${d.documents} (${d.short.documents} short, ${d.short.tokens} tokens; ${d.long.documents} long at the end, ${d.long.tokens} tokens), length min/median/max ${d.length.min}/${d.length.median}/${d.length.max}, visible pairs ${pairs(d.visiblePairs)} per head`,
    ...table(head, rows),
  ].join('\n');
}
