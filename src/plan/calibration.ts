import type { ModelConfig } from '../model/config.js';
import { divisors, validHpValues } from '../parallel/dims.js';
import { predictStep, type PlanCluster, type PlanLayout, type StepPrediction } from './cost.js';
import { gpuMemory } from './memory.js';
import { loadGpuProfile, loadModel, type FitParams, type GpuProfile } from './profiles.js';

/**
 * Calibration of the cost model's free parameters on the end-to-end rows of
 * ../shared/reference/cluster-data.md ("End-to-end rows for calibration"): NeMo's context
 * parallelism on DGX-H100 (FP8, LLaMA-2-7B, global batch 4M tokens; TGS derived from the
 * published full-count TFLOPS) and BurstEngine's committed measurements on one node of 8 × A800
 * (InternEvo baseline: ZeRO-1 over all ranks, full checkpointing, optimizer offload,
 * head-first). The fit is deterministic: Nelder–Mead from fixed starting values on
 * Σ log²(predicted / published).
 */

export interface CalibrationRow {
  id: string;
  source: 'NeMo' | 'BurstEngine';
  gpu: 'h100' | 'a800';
  gpus: number;
  seqLen: number;
  /** Sequences per SP group per step (micro-batches). */
  batch: number;
  /** A fixed layout, or "best-2d": the best 2D layout (any hp × cp = sp, any inner ring) as LoongTrain tunes it. */
  layout: PlanLayout | { best2d: number; base: Omit<PlanLayout, 'hp' | 'cp' | 'innerRingSize'> };
  /** Published TGS; undefined for a published OOM. */
  published?: number;
  note: string;
}

const K = 1024;
const NEMO: [number, number, number, number, number][] = [
  // S, GPUs, TP, CP, TGS (I)
  [16 * K, 16, 2, 1, 10090],
  [32 * K, 32, 2, 2, 6690],
  [64 * K, 64, 4, 2, 4022],
  [128 * K, 128, 4, 4, 2258],
  [256 * K, 256, 4, 8, 1215],
];

const BURST: Record<'ulysses' | 'megatron-cp' | 'loongtrain', Record<number, (number | undefined)[]>> = {
  ulysses: { [64 * K]: [1315.4, 1323.8, 1252.2], [128 * K]: [881.6, 844.5, 830.4] },
  'megatron-cp': { [64 * K]: [undefined, 1394.6, 1252.6], [128 * K]: [undefined, 865.7, 813.6] },
  loongtrain: { [64 * K]: [1479.2, 1403.8, 1258.7], [128 * K]: [952.4, 927.0, 876.5] },
};

/** The calibration rows, in the order of cluster-data.md. */
export function calibrationRows(): CalibrationRow[] {
  const rows: CalibrationRow[] = [];
  for (const [S, gpus, tp, cp, tgs] of NEMO) {
    const dp = 8;
    rows.push({
      id: `nemo-${S / K}k`,
      source: 'NeMo',
      gpu: 'h100',
      gpus,
      seqLen: S,
      batch: (4 * 2 ** 20) / (S * dp),
      layout: { dp, hp: 1, cp, innerRingSize: cp, placement: 'head-first', zeroStage: 1, zeroShardGroup: 'dp', checkpoint: 'none', tp, precision: 'fp8' },
      published: tgs,
      note: `TP${tp}/PP1/DP${dp}/CP${cp}, FP8, distributed optimizer over dp`,
    });
  }
  for (const method of ['ulysses', 'megatron-cp', 'loongtrain'] as const) {
    for (const S of [64 * K, 128 * K]) {
      [2, 4, 8].forEach((sp, i) => {
        const base = { dp: 8 / sp, placement: 'head-first' as const, zeroStage: 1 as const, zeroShardGroup: 'world' as const, checkpoint: 'full' as const, offload: true };
        const layout: CalibrationRow['layout'] =
          method === 'ulysses'
            ? { ...base, hp: sp, cp: 1, innerRingSize: 1 }
            : method === 'megatron-cp'
              ? { ...base, hp: 1, cp: sp, innerRingSize: sp }
              : { best2d: sp, base };
        const published = BURST[method][S]![i];
        rows.push({
          id: `burst-${method}-${S / K}k-sp${sp}`,
          source: 'BurstEngine',
          gpu: 'a800',
          gpus: 8,
          seqLen: S,
          batch: 1,
          layout,
          ...(published !== undefined ? { published } : {}),
          note: `${method}, sp ${sp}, dp ${8 / sp}, ZeRO-1 over 8, full checkpointing, offload`,
        });
      });
    }
  }
  return rows;
}

export interface RowResult {
  row: CalibrationRow;
  layout: PlanLayout;
  prediction: StepPrediction;
  /** predicted / published − 1 (undefined for an OOM row). */
  error?: number;
  /** Our memory prediction for the BurstEngine rows (GiB per GPU, fits). */
  memory?: { gib: number; fits: boolean };
}

function clusterOf(gpu: GpuProfile, gpus: number): PlanCluster {
  return { gpu, gpus, gpusPerNode: gpu.gpusPerNode, nicsPerNode: gpu.nicsPerNode, nicBytesPerSec: gpu.nicBytesPerSec };
}

/** The best 2D layout with hp × cp = sp (valid hp for the model's heads, any inner ring size w | cp). */
function best2d(model: ModelConfig, seqLen: number, batch: number, sp: number, base: Omit<PlanLayout, 'hp' | 'cp' | 'innerRingSize'>, cluster: PlanCluster): { layout: PlanLayout; prediction: StepPrediction } {
  let best: { layout: PlanLayout; prediction: StepPrediction } | undefined;
  for (const hp of validHpValues(model.heads, model.kvHeads).filter((h) => sp % h === 0)) {
    const cp = sp / hp;
    for (const w of divisors(cp).reverse()) {
      const layout: PlanLayout = { ...base, hp, cp, innerRingSize: w };
      const prediction = predictStep({ model, seqLen, batch }, layout, cluster);
      if (best === undefined || prediction.tgs > best.prediction.tgs) best = { layout, prediction };
    }
  }
  return best!;
}

/** Predict every calibration row with the given profiles. */
export function predictRows(profiles: Record<'h100' | 'a800', GpuProfile>, withMemory = false): RowResult[] {
  const { model } = loadModel('llama2-7b');
  return calibrationRows().map((row) => {
    const cluster = clusterOf(profiles[row.gpu], row.gpus);
    const { layout, prediction } =
      'best2d' in row.layout
        ? best2d(model, row.seqLen, row.batch, row.layout.best2d, row.layout.base, cluster)
        : { layout: row.layout, prediction: predictStep({ model, seqLen: row.seqLen, batch: row.batch }, row.layout, cluster) };
    const out: RowResult = { row, layout, prediction };
    if (row.published !== undefined) out.error = prediction.tgs / row.published - 1;
    if (withMemory && row.source === 'BurstEngine') {
      const mem = gpuMemory(model, row.seqLen, layout, profiles[row.gpu]);
      out.memory = { gib: mem.peakBytesPerGpu / 2 ** 30, fits: mem.fits };
    }
    return out;
  });
}

/** The fitted parameters, by name; which profile each belongs to. */
export const FIT_PARAMS = [
  { key: 'a800.gemmFraction', lo: 0.05, hi: 0.95 },
  { key: 'a800.attentionFraction', lo: 0.05, hi: 0.95 },
  { key: 'a800.cpuAdamGElemsPerSec', lo: 0.05, hi: 20 },
  { key: 'h100.gemmFractionFp8', lo: 0.05, hi: 0.95 },
  { key: 'h100.attentionFraction', lo: 0.05, hi: 0.95 },
  { key: 'a800.hbmFraction', lo: 0.05, hi: 1 },
  { key: 'h100.hbmFraction', lo: 0.05, hi: 1 },
  { key: 'shared.messageLatencyUs', lo: 1, hi: 100 },
  { key: 'shared.overlapEfficiency', lo: 0.05, hi: 1 },
] as const;

function withParams(base: Record<'h100' | 'a800', GpuProfile>, x: number[]): Record<'h100' | 'a800', GpuProfile> {
  const out = { h100: { ...base.h100, fit: { ...base.h100.fit } }, a800: { ...base.a800, fit: { ...base.a800.fit } } };
  FIT_PARAMS.forEach((p, i) => {
    const [who, name] = p.key.split('.') as [string, keyof FitParams];
    const targets = who === 'shared' ? [out.h100, out.a800] : [out[who as 'h100' | 'a800']];
    for (const t of targets) (t.fit as unknown as Record<string, number>)[name] = x[i]!;
  });
  return out;
}

function current(base: Record<'h100' | 'a800', GpuProfile>): number[] {
  return FIT_PARAMS.map((p) => {
    const [who, name] = p.key.split('.') as [string, keyof FitParams];
    const prof = who === 'shared' ? base.a800 : base[who as 'h100' | 'a800'];
    return (prof.fit[name] as number | undefined) ?? (p.lo + p.hi) / 2;
  });
}

/** Bounded parameter ↔ unbounded coordinate (logistic between lo and hi). */
const toU = (x: number, lo: number, hi: number): number => {
  const t = Math.min(1 - 1e-9, Math.max(1e-9, (x - lo) / (hi - lo)));
  return Math.log(t / (1 - t));
};
const fromU = (u: number, lo: number, hi: number): number => lo + (hi - lo) / (1 + Math.exp(-u));

/** Nelder–Mead minimisation (deterministic: fixed simplex, fixed iteration budget). */
export function nelderMead(f: (u: number[]) => number, start: number[], iterations = 1500, step = 0.5): { u: number[]; v: number } {
  const n = start.length;
  let simplex = [start, ...start.map((_, i) => start.map((v, j) => (j === i ? v + step : v)))].map((u) => ({ u, v: f(u) }));
  for (let it = 0; it < iterations; it++) {
    simplex.sort((a, b) => a.v - b.v);
    const best = simplex[0]!;
    const worst = simplex[n]!;
    const centroid = start.map((_, j) => simplex.slice(0, n).reduce((a, s) => a + s.u[j]!, 0) / n);
    const at = (t: number): number[] => centroid.map((c, j) => c + t * (worst.u[j]! - c));
    const r = { u: at(-1), v: 0 };
    r.v = f(r.u);
    if (r.v < best.v) {
      const e = { u: at(-2), v: 0 };
      e.v = f(e.u);
      simplex[n] = e.v < r.v ? e : r;
    } else if (r.v < simplex[n - 1]!.v) {
      simplex[n] = r;
    } else {
      const c = { u: at(r.v < worst.v ? -0.5 : 0.5), v: 0 };
      c.v = f(c.u);
      if (c.v < Math.min(r.v, worst.v)) simplex[n] = c;
      else simplex = simplex.map((s, i) => (i === 0 ? s : { u: s.u.map((x, j) => best.u[j]! + 0.5 * (x - best.u[j]!)), v: 0 })).map((s, i) => (i === 0 ? s : { u: s.u, v: f(s.u) }));
    }
    if (Math.abs(simplex[n]!.v - simplex[0]!.v) < 1e-12 && it > 200) break;
  }
  simplex.sort((a, b) => a.v - b.v);
  return simplex[0]!;
}

export interface CalibrationResult {
  params: Record<string, number>;
  profiles: Record<'h100' | 'a800', GpuProfile>;
  rows: RowResult[];
  rmsLogError: number;
  maxAbsError: number;
}

/** The shipped H100 and A800 profiles (configs/plan). */
export function shippedCalibrationProfiles(): Record<'h100' | 'a800', GpuProfile> {
  return { h100: loadGpuProfile('h100'), a800: loadGpuProfile('a800') };
}

function summarize(profiles: Record<'h100' | 'a800', GpuProfile>, x: number[]): CalibrationResult {
  const rows = predictRows(profiles, true);
  const errs = rows.filter((r) => r.error !== undefined).map((r) => r.error!);
  const rms = Math.sqrt(errs.reduce((a, e) => a + Math.log(1 + e) ** 2, 0) / errs.length);
  return { params: Object.fromEntries(FIT_PARAMS.map((p, i) => [p.key, x[i]!])), profiles, rows, rmsLogError: rms, maxAbsError: Math.max(...errs.map(Math.abs)) };
}

/** The rows as the shipped profiles predict them (no fitting). */
export function evaluateCalibration(base = shippedCalibrationProfiles()): CalibrationResult {
  return summarize(base, current(base));
}

/**
 * Fit the free parameters, starting from the profiles' current values, on the rows `fitOn`
 * accepts (default all: a held-out check fits on some and reads the others' errors).
 */
export function calibrate(base = shippedCalibrationProfiles(), iterations = 1500, fitOn: (row: CalibrationRow) => boolean = () => true): CalibrationResult {
  const start = current(base).map((x, i) => toU(x, FIT_PARAMS[i]!.lo, FIT_PARAMS[i]!.hi));
  const xOf = (u: number[]): number[] => u.map((v, i) => fromU(v, FIT_PARAMS[i]!.lo, FIT_PARAMS[i]!.hi));
  const objective = (u: number[]): number => {
    const rows = predictRows(withParams(base, xOf(u)));
    return rows.reduce((a, r) => (r.error === undefined || !fitOn(r.row) ? a : a + Math.log(1 + r.error) ** 2), 0);
  };
  const { u } = nelderMead(objective, start, iterations);
  const x = xOf(u);
  return summarize(withParams(base, x), x);
}

/** The calibration as a table: row, layout, predicted / published TGS and the error. */
export function formatCalibration(r: CalibrationResult): string {
  const lines = [
    '| row | layout | predicted TGS | published TGS | error | pred. GiB/GPU |',
    '|---|---|---|---|---|---|',
  ];
  for (const x of r.rows) {
    const l = x.layout;
    const lay = `${l.tp !== undefined && l.tp > 1 ? `tp ${l.tp} ` : ''}dp ${l.dp} hp ${l.hp} cp ${l.cp}${l.cp > 1 ? ` w ${l.innerRingSize}` : ''}`;
    const pub = x.row.published === undefined ? 'OOM' : x.row.published.toFixed(1);
    const err = x.error === undefined ? '–' : `${x.error >= 0 ? '+' : ''}${(100 * x.error).toFixed(1)}%`;
    const mem = x.memory === undefined ? '–' : `${x.memory.gib.toFixed(1)}${x.memory.fits ? '' : ' (OOM)'}`;
    lines.push(`| ${x.row.id} | ${lay} | ${x.prediction.tgs.toFixed(1)} | ${pub} | ${err} | ${mem} |`);
  }
  lines.push('', `RMS log error ${(100 * r.rmsLogError).toFixed(1)}%, largest |error| ${(100 * r.maxAbsError).toFixed(1)}%`, '', 'Parameters (the [fit] values of configs/plan/a800.toml and h100.toml, or the refit with --fit):');
  for (const [k, v] of Object.entries(r.params)) lines.push(`  ${k} = ${Number(v.toPrecision(4))}`);
  return lines.join('\n');
}
