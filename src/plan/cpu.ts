import os from 'node:os';
import { launchRanks } from '../comm/backends.js';
import { predictPeakBytes } from '../memory/predict.js';
import { headDim, type ModelConfig } from '../model/config.js';
import type { Kernels, MatmulOptions } from '../kernels/kernels.js';
import { createKernels, resolveKernels } from '../kernels/registry.js';
import { ParallelDims, validateLayout } from '../parallel/dims.js';
import { resolveLayout, type LayoutRequest } from '../parallel/presets.js';
import { ConfigError } from '../errors.js';
import { Arena } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';
import { benchLayouts } from '../train/bench.js';
import { machineInfo, median, table, type MachineInfo } from '../train/bench-common.js';
import { attentionCase, corePeaks, gemmCase, timeMedian } from '../train/bench-kernels.js';
import type { Config } from '../train/config.js';
import { predictStep, type PlanCluster, type PlanLayout, type StepPrediction } from './cost.js';
import { LINK_LAUNCH, linkFromOneWay } from './cpu-link-rank.js';
import type { RatesRankArgs } from './cpu-rates-rank.js';
import type { GpuProfile } from './profiles.js';

/**
 * The planner's cost model (src/plan/cost.ts `predictStep`, unchanged) on a CPU profile of this
 * machine, measured at run time (docs/plan.md, "Our own runs"):
 *
 * - GEMM rate: the kernels bench's `gemmCase` (src/train/bench-kernels.ts) on the trainer's own
 *   kernel backend (train.kernels), at the projection and MLP shapes of one rank's T = S/sp
 *   tokens; the rate is total FLOPs / total time over those shapes.
 * - Attention rate: the kernels bench's `attentionCase` (causal forward + backward, 3.5 × forward
 *   FLOPs) at the shape one rank computes: S/cp query tokens, H/hp heads, head dimension d.
 * - Elementwise rate ("HBM"): a streaming f32 add (12 bytes per element) in JS, as the norms,
 *   RoPE, residuals and SwiGLU run.
 * - Link ("NVLink"): a ping-pong of f32 messages between 2 ranks of the training backend
 *   (threads); α from the small message, bandwidth from the large one.
 * - fp32: 4 bytes per element (PlanRun.bytesPerElement).
 * - Overlap efficiency η = 0: on the threads backend a message is copied by the cores that also
 *   compute, so a transfer is never hidden behind compute.
 * - One rank per core; ranks > cores share them: every rate (GEMM, attention, elementwise, link)
 *   is divided by ranks/cores, i.e. the cores' work is spread evenly over the ranks in time.
 *
 * The measurements run one thread at a time on an otherwise idle machine; a busy machine makes
 * them, and the training runs they predict, slower together.
 */

/** Kernel rates at one rank's shapes, measured while `busy` ranks measure at once (one per core). */
export interface KernelRates {
  busy: number;
  /** GFLOP/s per sp at T = S/sp tokens. */
  gemmGflops: Record<number, number>;
  /** Attention forward + backward GFLOP/s per "hp×cp" block shape. */
  attentionGflops: Record<string, number>;
  /** Elementwise kernels' rate per sp, as the bytes of cost.ts's elementwise formula over their measured time. */
  elementwiseGBps: Record<number, number>;
  /** The arena's zero-fill rate (a CPU-only term: Tensor.zeros allocations are zero-filled). */
  zeroFillGBps: number;
}

export interface CpuRates {
  /** The kernel backend the rates were measured on (the trainer's train.kernels, resolved). */
  kernels: string;
  cores: number;
  /** By the number of cores busy at once, min(ranks, cores). */
  byBusy: Record<number, KernelRates>;
  linkGBps: number;
  linkLatencyUs: number;
}

/**
 * The kernel rates that apply to a layout of `ranks` ranks, those measured with min(ranks, cores)
 * cores busy (undefined when not measured), and `share`, the ranks per core (≥ 1) that divide
 * every rate when the layout oversubscribes the cores.
 */
export function layoutRates(rates: CpuRates, ranks: number): { kernel: KernelRates | undefined; share: number } {
  return { kernel: rates.byBusy[Math.min(ranks, rates.cores)], share: Math.max(1, ranks / rates.cores) };
}

/** A CPU "GPU profile" for one layout: the measured rates, shared by ranks/cores when oversubscribed. */
export function cpuProfile(rates: CpuRates, hp: number, cp: number, arenaBytes: number): GpuProfile {
  const ranks = hp * cp;
  const { kernel: k, share } = layoutRates(rates, ranks);
  const gemm = k?.gemmGflops[ranks];
  const attn = k?.attentionGflops[`${hp}×${cp}`];
  if (gemm === undefined || attn === undefined) throw new Error(`cpuProfile: no rates measured for hp ${hp} × cp ${cp}`);
  const peak = (gemm * 1e9) / share;
  return {
    source: 'cpu (measured)',
    name: `CPU core (${rates.kernels}), ${ranks} rank${ranks === 1 ? '' : 's'} on ${rates.cores} cores`,
    peakFlops: peak,
    hbmBytes: arenaBytes,
    hbmBytesPerSec: (k!.elementwiseGBps[ranks]! * 1e9) / share,
    nvlinkBytesPerSec: (rates.linkGBps * 1e9) / share,
    pcieBytesPerSec: (rates.linkGBps * 1e9) / share,
    reservedBytes: 0,
    gpusPerNode: ranks,
    nicsPerNode: 1,
    nicBytesPerSec: (rates.linkGBps * 1e9) / share,
    fit: {
      gemmFraction: 1,
      attentionFraction: attn / gemm,
      hbmFraction: 1,
      messageLatencyUs: rates.linkLatencyUs,
      overlapEfficiency: 0,
      cpuAdamGElemsPerSec: 1,
    },
  };
}

/** The layouts the planner compares with our runs: `preset` at `sp` as bench.ts names them. */
export interface CpuLayout {
  name: string;
  request: LayoutRequest;
}

/** ulysses, ring, usp and loongtrain at sp 2 and 4, head-first, dp 1 (usp: hp 2; loongtrain: hp 1, w = sp/2). */
export function cpuComparisonLayouts(sps: readonly number[] = [2, 4]): CpuLayout[] {
  const out: CpuLayout[] = [];
  for (const sp of sps) {
    out.push({ name: `ulysses sp ${sp}`, request: { dp: 1, placement: 'head-first', preset: 'ulysses', sp } });
    out.push({ name: `ring sp ${sp}`, request: { dp: 1, placement: 'head-first', preset: 'ring', sp } });
    out.push({ name: `usp sp ${sp}`, request: { dp: 1, placement: 'head-first', preset: 'usp', sp, hp: 2 } });
    out.push({ name: `loongtrain sp ${sp}`, request: { dp: 1, placement: 'head-first', preset: 'loongtrain', sp, hp: 1, innerRingSize: Math.max(1, sp / 2) } });
  }
  return out;
}

/**
 * The elementwise rate, measured on the trainer's kernels at one rank's shape: per layer the
 * forward and backward of 2 RMSNorms [T, D], RoPE on q [T, H, d] and k [T, Hkv, d], SwiGLU
 * [T, F] and 2 residual adds, plus the loss (cross-entropy [T, V]); returned as the bytes
 * cost.ts's elementwise formula counts for them, (3·L·T·(12D + 2Kv + 3F) + 3·T·V)·4, over
 * their measured time, so that the formula reproduces that time.
 */
function elementwiseGBps(kernels: Kernels, arena: Arena, model: ModelConfig, T: number): number {
  const D = model.dim;
  const d = headDim(model);
  const kv = model.kvHeads * d;
  const F = model.ffnDim;
  const V = model.vocabSize;
  const z = (shape: number[]): Tensor => {
    const t = Tensor.zeros(arena, shape);
    for (let i = 0; i < t.size; i++) t.data[i] = Math.sin(i * 0.37);
    return t;
  };
  const x = z([T, D]), out = z([T, D]), dx = z([T, D]), w = z([D]), dw = z([D]), rstd = z([T]);
  const q = z([T, model.heads, d]), k = z([T, model.kvHeads, d]);
  const gate = z([T, F]), up = z([T, F]), h = z([T, F]), dg = z([T, F]), du = z([T, F]);
  const logits = z([T, V]), losses = z([T]);
  const pos = Int32Array.from({ length: T }, (_, i) => i);
  const labels = Int32Array.from({ length: T }, (_, i) => i % V);
  const reps = { warmup: 2, reps: 7 };
  const layerMs = timeMedian(() => {
    for (let i = 0; i < 2; i++) kernels.rmsnormForward(out, rstd, x, w, 1e-5);
    kernels.rope(q, pos, 1e4, false);
    kernels.rope(k, pos, 1e4, false);
    kernels.swigluForward(h, gate, up);
    for (let i = 0; i < 2; i++) kernels.axpy(out, x, 1);
    for (let i = 0; i < 2; i++) kernels.rmsnormBackward(dx, dw, out, x, w, rstd);
    kernels.rope(q, pos, 1e4, true);
    kernels.rope(k, pos, 1e4, true);
    kernels.swigluBackward(dg, du, h, gate, up);
    for (let i = 0; i < 2; i++) kernels.axpy(dx, out, 1);
  }, reps.warmup, reps.reps);
  const headMs = timeMedian(() => kernels.crossEntropy(logits, labels, losses, 1 / T), reps.warmup, reps.reps);
  for (const t of [x, out, dx, w, dw, rstd, q, k, gate, up, h, dg, du, logits, losses]) t.free();
  const bytes = (3 * model.layers * T * (12 * D + 2 * kv + 3 * F) + 3 * T * V) * 4;
  return bytes / (model.layers * layerMs + headMs) / 1e6;
}

/** The arena's zero-fill rate (Tensor.zeros allocations are zero-filled, src/tensor/arena.ts): GB/s over allocations of 256 KiB. */
function zeroFillGBps(arena: Arena): number {
  const bytes = 256 * 1024;
  const ms = timeMedian(() => {
    for (let i = 0; i < 64; i++) arena.freeBytes(arena.allocBytes(bytes, 'scratch'));
  }, 2, 7);
  return (64 * bytes) / ms / 1e6;
}

/** One-way time of a small and a large f32 message between 2 ranks of the threads backend: α and bandwidth. */
export async function measureLink(): Promise<{ linkGBps: number; linkLatencyUs: number }> {
  const ranks = (await launchRanks(LINK_LAUNCH)) as Array<{ oneWayMs: number[] } | null>;
  return linkFromOneWay(ranks[0]!.oneWayMs);
}

/** Measure the kernel rates of the layouts' shapes on this thread (a few seconds). */
export function measureKernelRates(model: ModelConfig, seqLen: number, kernelChoice: string, layouts: ReadonlyArray<{ hp: number; cp: number }>, busy: number): KernelRates {
  const { name } = resolveKernels(kernelChoice);
  const arena = new Arena(256 * 2 ** 20);
  const kernels = createKernels(name, arena);
  const peaks = corePeaks(1);
  const reps = { warmup: 2, reps: 7 };
  const D = model.dim;
  const d = headDim(model);
  const kv = model.kvHeads * d;
  const gemmGflops: Record<number, number> = {};
  const attentionGflops: Record<string, number> = {};
  const ew: Record<number, number> = {};
  for (const { hp, cp } of layouts) {
    const sp = hp * cp;
    if (gemmGflops[sp] === undefined) {
      const T = seqLen / sp;
      // The trainer's linear layers (src/model/linear.ts), out × in weights: forward y = x·wᵀ
      // [T, out, in], backward dx = dy·w [T, in, out] and dw += dyᵀ·x [out, in, T]; per layer
      // wqkv, wo, w1 and w3, w2; then the LM head.
      const linears: Array<[number, number, number]> = [[D + 2 * kv, D, model.layers], [D, D, model.layers], [model.ffnDim, D, 2 * model.layers], [D, model.ffnDim, model.layers], [model.vocabSize, D, 1]];
      let flops = 0;
      let ms = 0;
      for (const [out, inp, count] of linears) {
        const cases: Array<[[number, number, number], MatmulOptions]> = [[[T, out, inp], { transB: true }], [[T, inp, out], {}], [[out, inp, T], { transA: true, accumulate: true }]];
        for (const [shape, mm] of cases) {
          const g = gemmCase(name, kernels, arena, shape, reps, peaks, undefined, mm);
          flops += count * 2 * shape[0] * shape[1] * shape[2];
          ms += count * g.medianMs!;
        }
      }
      gemmGflops[sp] = flops / ms / 1e6;
      ew[sp] = elementwiseGBps(kernels, arena, model, T);
    }
    const key = `${hp}×${cp}`;
    if (attentionGflops[key] === undefined) {
      const heads = model.heads / hp;
      const kvHeads = Math.max(1, model.kvHeads / hp);
      attentionGflops[key] = attentionCase(name, kernels, arena, seqLen / cp, reps, peaks, undefined, { heads, kvHeads, headDim: d }).gflops!;
    }
  }
  return { busy, gemmGflops, attentionGflops, elementwiseGBps: ew, zeroFillGBps: zeroFillGBps(arena) };
}

/**
 * Measure the rates the layouts need on this machine: for each number of busy cores
 * min(ranks, cores) among the layouts, that many ranks of the threads backend measure the
 * kernels at once (cores that share caches, memory bandwidth or a physical core slow each
 * other down, as the ranks of a run do); rank 0's rates are kept. Then the link.
 */
export async function measureCpuRates(model: ModelConfig, seqLen: number, kernelChoice: string, layouts: ReadonlyArray<{ hp: number; cp: number }>): Promise<CpuRates> {
  const cores = os.cpus().length;
  const byBusy: Record<number, KernelRates> = {};
  for (const busy of [...new Set(layouts.map((l) => Math.min(cores, l.hp * l.cp)))].sort()) {
    const shapes = layouts.filter((l) => Math.min(cores, l.hp * l.cp) === busy);
    const args: RatesRankArgs = { model, seqLen, kernels: kernelChoice, layouts: shapes, busy };
    const ranks = (await launchRanks({ world: busy, entry: new URL('./cpu-rates-rank.js', import.meta.url).href, args, timeoutMs: 600_000, arenaBytes: 16 * 2 ** 20 })) as KernelRates[];
    byBusy[busy] = ranks[0]!;
  }
  const link = await measureLink();
  return { kernels: resolveKernels(kernelChoice).name, cores, byBusy, ...link };
}

/** The planner's layout of a resolved [parallel] request on our trainer (fp32, the config's ZeRO and checkpoint). */
export function planLayoutOf(cfg: Config, request: LayoutRequest): { layout: PlanLayout; dims: ParallelDims } {
  const p = resolveLayout(request);
  const dims = new ParallelDims(p);
  validateLayout(dims, { heads: cfg.model.heads, kvHeads: cfg.model.kvHeads, seqLen: cfg.train.seqLen });
  return {
    dims,
    layout: {
      dp: dims.dp, hp: dims.hp, cp: dims.cp, innerRingSize: dims.innerRingSize, placement: p.placement,
      zeroStage: cfg.optim.zeroStage as 0 | 1 | 2 | 3, zeroShardGroup: cfg.optim.zeroShardGroup as PlanLayout['zeroShardGroup'],
      checkpoint: cfg.checkpoint.policy, checkpointFraction: cfg.checkpoint.fraction,
    },
  };
}

/**
 * The step of `request` on our CPU trainer as the planner predicts it, and whether its arena peak fits train.arenaMiB.
 * `place` turns the layout's CPU profile into the cluster it runs on; by default one node of all
 * its ranks (the threads backend); src/plan/hosts.ts places it on 2 test hosts.
 */
export function predictCpuStep(cfg: Config, request: LayoutRequest, rates: CpuRates, place?: (gpu: GpuProfile, dims: ParallelDims) => PlanCluster): { prediction: StepPrediction; peakBytesPerRank: number; arenaBytes: number; fits: boolean; profile: GpuProfile } {
  const { layout, dims } = planLayoutOf(cfg, request);
  const arenaBytes = cfg.train.arenaMiB * 2 ** 20;
  const cpuGpu = cpuProfile(rates, dims.hp, dims.cp, arenaBytes);
  const cluster: PlanCluster = place !== undefined ? place(cpuGpu, dims) : { gpu: cpuGpu, gpus: dims.world, gpusPerNode: dims.world, nicsPerNode: 1, nicBytesPerSec: cpuGpu.nicBytesPerSec };
  const gpu = cluster.gpu;
  const base = predictStep({ model: cfg.model, seqLen: cfg.train.seqLen, batch: cfg.train.batchSize, bytesPerElement: 4 }, layout, cluster);
  const mem = cpuMemory(cfg, layout);
  // CPU-only term: the arena zero-fills Tensor.zeros allocations (src/tensor/arena.ts); the
  // step's allocations are docs/memory.md's replay, per sequence of the batch. The replay does
  // not tell Tensor.empty (outputs their kernel overwrites, not filled) from Tensor.zeros, so
  // this term is an upper bound (a few ms per step at seqLen 1024 here).
  const { kernel, share } = layoutRates(rates, dims.world);
  const fillSeconds = (cfg.train.batchSize * mem.allocatedBytes) / ((kernel!.zeroFillGBps * 1e9) / share);
  const stepSeconds = base.stepSeconds + fillSeconds;
  const prediction: StepPrediction = {
    ...base,
    stepSeconds,
    tgs: (base.tgs * base.stepSeconds) / stepSeconds,
    mfuCausal: (base.mfuCausal * base.stepSeconds) / stepSeconds,
    mfuFull: (base.mfuFull * base.stepSeconds) / stepSeconds,
    exposedCommShare: (base.exposedCommShare * base.stepSeconds) / stepSeconds,
    terms: [...base.terms, { name: 'arena zero-fill (CPU trainer)', kind: 'memory', seconds: fillSeconds, formula: 'm·(bytes allocated per step, docs/memory.md replay) / zero-fill rate' }],
  };
  const peakBytesPerRank = mem.peakBytes;
  return { prediction, peakBytesPerRank, arenaBytes, fits: peakBytesPerRank <= arenaBytes, profile: gpu };
}

/** The arena peak per rank of our f32 trainer and the bytes it allocates per sequence (docs/memory.md's replay, unscaled: the CPU trainer is f32 throughout). */
export function cpuMemory(cfg: Config, layout: PlanLayout): { peakBytes: number; allocatedBytes: number } {
  const dims = new ParallelDims({ dp: layout.dp, hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize, placement: layout.placement });
  const shards = layout.zeroStage === 0 ? 1 : layout.zeroShardGroup === 'world' ? dims.world : layout.zeroShardGroup === 'sp' ? dims.hp * dims.cp : dims.dp;
  const p = predictPeakBytes(cfg.model, cfg.train.seqLen, { hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize }, { policy: layout.checkpoint, fraction: layout.checkpointFraction ?? 1 }, { stage: layout.zeroStage, shards });
  return { peakBytes: p.peakBytes, allocatedBytes: p.allocatedBytes };
}

/** One measurement of a layout: its CPU rates measured right before its training run, the prediction from them and the run. */
export interface PlanBenchRun {
  predictedMs: number;
  measuredMs: number;
  /** predicted / measured. */
  ratio: number;
  /** The prediction's terms, ms. */
  terms: Record<string, number>;
  rates: CpuRates;
}

export interface PlanBenchRow {
  layout: string;
  grid: string;
  ranks: number;
  /** Medians over `runs`. */
  predictedMs: number;
  measuredMs: number;
  /** Median of the runs' predicted / measured. */
  ratio: number;
  /** One per round, in round order. */
  runs: PlanBenchRun[];
}

export interface PlanBenchReport {
  suite: 'plan';
  machine: MachineInfo;
  seqLen: number;
  steps: number;
  warmup: number;
  rounds: number;
  rows: PlanBenchRow[];
}

/** Steps 1–4 are still slow (JIT and WebAssembly tier-up, first-touch of the arenas): leave 5 out. Two rounds over the layouts. */
export const DEFAULT_PLAN_BENCH = { steps: 10, warmup: 5, rounds: 2 } as const;

/**
 * `loongtrain bench plan`: in each of `rounds` rounds, for each layout (in reverse order on odd
 * rounds, so that no layout always runs first), measure this machine's CPU rates at the layout's
 * shapes, then train `steps` steps of it (benchLayouts, the first `warmup` left out, median of
 * the rest) and predict its step from the rates with the planner's cost model. The rates are
 * measured beside each run rather than once for all: on the shared VM they move by up to 2× over
 * the minute a round takes (docs/plan.md, "Our own runs", has the runs). A row's figures are
 * medians over its rounds. Every layout is checked against the model first, so a misfit is
 * reported before any run.
 * @throws ConfigError when rounds is not an integer ≥ 1, or a layout the model does not allow.
 */
export async function benchPlan(cfg: Config, layouts: readonly CpuLayout[], steps: number, warmup: number, rounds: number = DEFAULT_PLAN_BENCH.rounds): Promise<PlanBenchReport> {
  if (!Number.isInteger(rounds) || rounds < 1) throw new ConfigError(`--rounds ${rounds} is invalid: use an integer ≥ 1`);
  const dims = layouts.map((l) => planLayoutOf(cfg, l.request).dims);
  const runs: PlanBenchRun[][] = layouts.map(() => []);
  const shape: Array<{ grid: string; ranks: number }> = [];
  for (let round = 0; round < rounds; round++) {
    const order = layouts.map((_, i) => i);
    if (round % 2 === 1) order.reverse();
    for (const i of order) {
      const l = layouts[i]!;
      const rates = await measureCpuRates(cfg.model, cfg.train.seqLen, cfg.train.kernels, [{ hp: dims[i]!.hp, cp: dims[i]!.cp }]);
      const m = (await benchLayouts(cfg, [l], steps, warmup)).results[0]!;
      const p = predictCpuStep(cfg, l.request, rates).prediction;
      shape[i] = { grid: m.grid, ranks: m.ranks };
      const predictedMs = p.stepSeconds * 1e3;
      runs[i]!.push({ predictedMs, measuredMs: m.median.stepMs, ratio: predictedMs / m.median.stepMs, terms: Object.fromEntries(p.terms.map((t) => [t.name, t.seconds * 1e3])), rates });
    }
  }
  const rows = layouts.map((l, i) => {
    const r = runs[i]!;
    return {
      layout: l.name,
      ...shape[i]!,
      predictedMs: median(r.map((x) => x.predictedMs)),
      measuredMs: median(r.map((x) => x.measuredMs)),
      ratio: median(r.map((x) => x.ratio)),
      runs: r,
    };
  });
  return { suite: 'plan', machine: machineInfo(), seqLen: cfg.train.seqLen, steps, warmup, rounds, rows };
}

export function formatPlanBenchTable(r: PlanBenchReport): string {
  const first = r.rows[0]?.runs[0]?.rates;
  const link = first === undefined ? '' : `; threads link ${first.linkGBps.toFixed(2)} GB/s, α ${first.linkLatencyUs.toFixed(1)} µs (first run)`;
  const rates = (x: PlanBenchRow): string =>
    x.runs
      .map((run) => {
        const k = layoutRates(run.rates, x.ranks).kernel!;
        return `${Object.values(k.gemmGflops)[0]!.toFixed(0)}/${Object.values(k.attentionGflops)[0]!.toFixed(0)}`;
      })
      .join(' ');
  return [
    `${r.machine.cpu}, ${r.machine.cores} cores; seqLen ${r.seqLen}; kernels ${first?.kernels ?? '?'}${link}`,
    `${r.rounds} round${r.rounds === 1 ? '' : 's'}; in each, every layout's rates are measured right before its run; measured: median of steps ${r.warmup + 1}–${r.steps} (the first ${r.warmup} left out); ratio = predicted / measured, median over the rounds`,
    ...table(
      ['layout', 'hp×cp', 'ranks', 'predicted ms', 'measured ms', 'ratio', 'ratio per round', 'GEMM/attention GFLOP/s per round', ''],
      r.rows.map((x) => [x.layout, x.grid, String(x.ranks), x.predictedMs.toFixed(1), x.measuredMs.toFixed(1), x.ratio.toFixed(2), x.runs.map((run) => run.ratio.toFixed(2)).join(' '), rates(x), Math.abs(x.ratio - 1) <= 0.2 ? 'within 20%' : 'OFF']),
    ),
  ].join('\n');
}
