import { launchRanks } from '../comm/backends.js';
import type { GroupKind } from '../comm/process-group.js';
import { ConfigError } from '../errors.js';
import { ParallelDims, validateLayout } from '../parallel/dims.js';
import type { AttentionBenchRankArgs, AttentionBenchRankResult, PassCounters } from './bench-attention-rank.js';
import { machineInfo, median, type MachineInfo } from './bench-common.js';

/**
 * One TwoDAttention layout of the attention benchmark (LoongTrain §5 baselines):
 * `ulysses` hp = sp; `ring` cp = sp, one ring; `usp` hp = 2, cp = sp/2, one ring;
 * `loongtrain` hp = 2, cp = sp/2, Double-Ring-Attention with inner ring size innerRingSize.
 */
export interface AttentionPreset {
  name: 'ulysses' | 'ring' | 'usp' | 'loongtrain';
  sp: number;
  hp: number;
  cp: number;
  innerRingSize: number;
}

/**
 * The presets at sp = 4 and sp = 8. The double ring needs w < cp: at sp = 8 (cp = 4) w = 2;
 * at sp = 4 (cp = 2) the only choice is w = 1 (every hop on the outer ring).
 */
export const DEFAULT_ATTENTION_PRESETS: readonly AttentionPreset[] = [4, 8].flatMap((sp) => [
  { name: 'ulysses' as const, sp, hp: sp, cp: 1, innerRingSize: 1 },
  { name: 'ring' as const, sp, hp: 1, cp: sp, innerRingSize: sp },
  { name: 'usp' as const, sp, hp: 2, cp: sp / 2, innerRingSize: sp / 2 },
  { name: 'loongtrain' as const, sp, hp: 2, cp: sp / 2, innerRingSize: Math.min(2, sp / 4) },
]);

/** Sizes of the benchmarked layer and how often it runs. */
export interface AttentionBenchOptions {
  /** Sequence length S (tokens of the whole sequence); a multiple of 2·sp for every preset. */
  seqLen: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  causal: boolean;
  /** Runs of forward + backward left out of the medians. */
  warmup: number;
  /** Measured runs. */
  reps: number;
  seed: number;
}

export const DEFAULT_ATTENTION_OPTIONS: AttentionBenchOptions = { seqLen: 2048, heads: 8, kvHeads: 8, headDim: 8, causal: true, warmup: 1, reps: 3, seed: 1 };

/** The kinds a TwoDAttention layer sends on: the all-to-all, a plain ring, a double ring's two rings. */
export const ATTENTION_KINDS = ['hp', 'cp', 'inner', 'outer'] as const satisfies readonly GroupKind[];
export type AttentionKind = (typeof ATTENTION_KINDS)[number];

/** Payload bytes and messages sent by one rank in one pass (the busiest rank of the layout). */
export type PassTraffic = Record<AttentionKind, { bytesSent: number; messagesSent: number }>;

export interface AttentionPresetResult extends AttentionPreset {
  /** Whether the ranks ran a double ring (innerRingSize < cp and TwoDAttention given inner and outer groups). */
  doubleRing: boolean;
  /** Measured runs. */
  reps: number;
  /** Medians over the measured runs of: the slowest rank's forward + backward time, and the largest share of it a rank spent waiting for messages. */
  median: { ms: number; commWaitShare: number };
  /** Median time relative to the first preset with the same sp in this run. */
  timeRatio: number;
  /** Per group kind, the largest count over ranks. */
  traffic: { forward: PassTraffic; backward: PassTraffic };
}


export interface AttentionBenchReport {
  suite: 'attention';
  machine: MachineInfo;
  layer: { seqLen: number; heads: number; kvHeads: number; headDim: number; causal: boolean };
  kernels: 'reference';
  warmup: number;
  results: AttentionPresetResult[];
}



function checkOptions(o: AttentionBenchOptions): void {
  const ints: Array<[string, number, number]> = [
    ['seqLen', o.seqLen, 2], ['heads', o.heads, 1], ['kvHeads', o.kvHeads, 1], ['headDim', o.headDim, 1], ['warmup', o.warmup, 0], ['reps', o.reps, 1], ['seed', o.seed, 0],
  ];
  for (const [field, value, min] of ints) {
    if (!Number.isInteger(value) || value < min) throw new ConfigError(`bench attention: ${field} = ${String(value)} is invalid: it must be an integer ≥ ${min}`);
  }
}

function busiest(ranks: readonly PassCounters[]): PassTraffic {
  return Object.fromEntries(
    ATTENTION_KINDS.map((k) => [k, { bytesSent: Math.max(...ranks.map((r) => r[k].bytesSent)), messagesSent: Math.max(...ranks.map((r) => r[k].messagesSent)) }]),
  ) as PassTraffic;
}

/** What {@link runAttentionLayer} measured: every rank's result and the medians over the measured runs. */
export interface AttentionLayerRun {
  ranks: AttentionBenchRankResult[];
  /** Median over the measured runs of the slowest rank's forward + backward ms. */
  ms: number;
  /** Median over the measured runs of the largest share of a run a rank spent waiting for messages. */
  commWaitShare: number;
}

/**
 * Run one TwoDAttention layer on hp · cp worker threads (bench-attention-rank.ts) and take the
 * medians the attention and documents suites report.
 * @throws RankFailedError when a rank fails (e.g. its arena is exhausted).
 */
export async function runAttentionLayer(args: AttentionBenchRankArgs): Promise<AttentionLayerRun> {
  const sp = args.hp * args.cp;
  // Every tensor of the layer is at most a few times one rank's q: [S/sp, H, d] f32.
  const qBytes = (args.seqLen / sp) * args.heads * args.headDim * 4;
  const ranks = (await launchRanks({
    world: sp,
    entry: new URL('./bench-attention-rank.js', import.meta.url).href,
    args,
    timeoutMs: 600_000,
    arenaBytes: 64 * qBytes + 16 * 2 ** 20,
  })) as AttentionBenchRankResult[];
  const runMs = Array.from({ length: args.reps }, (_, i) => Math.max(...ranks.map((r) => r.ms[i]!)));
  const waitShare = runMs.map((ms, i) => Math.max(...ranks.map((r) => r.waitMs[i]!)) / ms);
  return { ranks, ms: median(runMs), commWaitShare: median(waitShare) };
}

/**
 * Time one TwoDAttention layer (forward + backward, reference kernels) under each preset and
 * count its traffic: per preset, `sp` worker threads each run `warmup + reps` passes of seeded
 * random data; reported are medians over the measured runs of the slowest rank's time and of
 * the largest share of it a rank spent blocked on messages, and bytes and messages sent per
 * group kind by the busiest rank (algorithms.md §6 gives the expected volumes).
 * @throws ConfigError for an option that is not a valid integer, or a preset that does not fit
 *   heads, kvHeads or seqLen (every preset is checked before any runs), naming the preset.
 * @throws RankFailedError when a rank fails (e.g. its arena is exhausted).
 */
export async function benchAttention(opts: AttentionBenchOptions, presets: readonly AttentionPreset[] = DEFAULT_ATTENTION_PRESETS): Promise<AttentionBenchReport> {
  checkOptions(opts);
  for (const p of presets) {
    try {
      validateLayout(new ParallelDims({ dp: 1, hp: p.hp, cp: p.cp, innerRingSize: p.innerRingSize, placement: 'head-first' }), opts);
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`bench attention preset ${p.name} (sp ${p.sp}: hp ${p.hp} × cp ${p.cp}, innerRingSize ${p.innerRingSize}): ${e.message}`);
      throw e;
    }
  }
  const results: AttentionPresetResult[] = [];
  for (const p of presets) {
    const { ranks, ms, commWaitShare } = await runAttentionLayer({ ...opts, hp: p.hp, cp: p.cp, innerRingSize: p.innerRingSize });
    const first = results.find((r) => r.sp === p.sp);
    results.push({
      ...p,
      doubleRing: ranks.every((r) => r.doubleRing),
      reps: opts.reps,
      median: { ms, commWaitShare },
      timeRatio: first === undefined ? 1 : ms / first.median.ms,
      traffic: { forward: busiest(ranks.map((r) => r.forward)), backward: busiest(ranks.map((r) => r.backward)) },
    });
  }
  const { seqLen, heads, kvHeads, headDim, causal, warmup } = opts;
  return { suite: 'attention', machine: machineInfo(), layer: { seqLen, heads, kvHeads, headDim, causal }, kernels: 'reference', warmup, results };
}

function kib(bytes: number): string {
  return (bytes / 1024).toFixed(1);
}

/** A fixed-width table of a report, for people: ring = cp + inner + outer traffic; f/b = forward/backward. */
export function formatAttentionTable(report: AttentionBenchReport): string {
  const ring = (t: PassTraffic, field: 'bytesSent' | 'messagesSent'): number => t.cp[field] + t.inner[field] + t.outer[field];
  const head = ['preset', 'sp', 'hp×cp', 'w', 'ring', 'fwd+bwd ms', 'ratio', 'comm wait %', 'hp KiB f/b', 'hp msgs f/b', 'ring KiB f/b', 'ring msgs f/b'];
  const rows = report.results.map((r) => {
    const { forward: f, backward: b } = r.traffic;
    return [
      r.name,
      String(r.sp),
      `${r.hp}×${r.cp}`,
      String(r.innerRingSize),
      r.doubleRing ? 'double' : 'plain',
      r.median.ms.toFixed(1),
      r.timeRatio.toFixed(2),
      (r.median.commWaitShare * 100).toFixed(1),
      `${kib(f.hp.bytesSent)}/${kib(b.hp.bytesSent)}`,
      `${f.hp.messagesSent}/${b.hp.messagesSent}`,
      `${kib(ring(f, 'bytesSent'))}/${kib(ring(b, 'bytesSent'))}`,
      `${ring(f, 'messagesSent')}/${ring(b, 'messagesSent')}`,
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  const { machine: m, layer: l } = report;
  return [
    `${m.cpu}, ${m.cores} cores, node ${m.node}; one TwoDAttention layer S ${l.seqLen}, H ${l.heads}, Hkv ${l.kvHeads}, d ${l.headDim}, ${l.causal ? 'causal' : 'full'}, kernels ${report.kernels}`,
    line(head),
    ...rows.map(line),
  ].join('\n');
}
