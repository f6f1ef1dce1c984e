import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { ParallelDims, validateLayout } from '../parallel/dims.js';
import { resolveLayout, type LayoutRequest } from '../parallel/presets.js';
import { machineInfo, median, type MachineInfo } from './bench-common.js';
import type { Config } from './config.js';
import { train } from './train.js';

/** A parallel layout to benchmark, by name: a [parallel] request resolved by parallel/presets.ts. */
export interface BenchLayout {
  name: string;
  request: LayoutRequest;
}

/**
 * The default comparison at sp = 4 (LoongTrain §5 baselines): one rank, DeepSpeed-Ulysses,
 * Megatron-style zigzag ring, USP (2D, one ring) in both placements, and LoongTrain (2D with a
 * double ring of inner size 2).
 */
export const DEFAULT_LAYOUTS: readonly BenchLayout[] = [
  { name: 'single', request: { dp: 1, placement: 'head-first' } },
  { name: 'ulysses', request: { dp: 1, placement: 'head-first', preset: 'ulysses', sp: 4 } },
  { name: 'ring', request: { dp: 1, placement: 'head-first', preset: 'ring', sp: 4 } },
  { name: 'usp head-first', request: { dp: 1, placement: 'head-first', preset: 'usp', sp: 4, hp: 2 } },
  { name: 'usp context-first', request: { dp: 1, placement: 'context-first', preset: 'usp', sp: 4, hp: 2 } },
  { name: 'loongtrain w=2', request: { dp: 1, placement: 'head-first', preset: 'loongtrain', sp: 4, hp: 1, innerRingSize: 2 } },
];

export interface LayoutResult {
  layout: string;
  ranks: number;
  /** hp × cp and the inner ring size w, e.g. "1×4 w=2". */
  grid: string;
  steps: number;
  /** Medians over the measured steps (the first max(1, `warmup`) steps are dropped). */
  median: { stepMs: number; tokensPerSec: number; tgs: number; mfu: number; commWaitShare: number; peakBytesPerRank: number };
  /** Median step time relative to the first layout of the run. */
  stepTimeRatio: number;
}

export interface BenchReport {
  suite: 'layouts';
  machine: MachineInfo;
  model: Config['model'];
  seqLen: number;
  kernels: string;
  results: LayoutResult[];
}


/**
 * Train `steps` steps of `cfg` under each layout and report medians of the steps after the
 * first max(1, `warmup`) (step time, tokens/s, TGS, MFU, share of step time spent waiting on
 * communication, peak arena bytes per rank): the first step is never measured, as it pays for
 * compiling and first-touching the arenas. Layouts that do not fit the model or seqLen are
 * rejected by the usual config checks. Ratios are within this one run, on this machine.
 * @throws ConfigError when no step is left to measure (steps ≤ max(1, warmup)).
 */
export async function benchLayouts(cfg: Config, layouts: readonly BenchLayout[], steps: number, warmup: number): Promise<BenchReport> {
  const dropped = Math.max(1, warmup);
  if (!Number.isInteger(steps) || steps <= dropped) {
    throw new ConfigError(`bench: steps = ${steps} with warmup = ${warmup} leaves no step to measure: the first max(1, warmup) = ${dropped} steps are left out, so steps must be at least ${dropped + 1}`);
  }
  // Check every layout first, so a misfit is reported before minutes of earlier layouts run.
  const resolved = layouts.map((l) => {
    const parallel = resolveLayout(l.request);
    validateLayout(new ParallelDims(parallel), { heads: cfg.model.heads, kvHeads: cfg.model.kvHeads, seqLen: cfg.train.seqLen });
    return { name: l.name, parallel };
  });
  const scratch = mkdtempSync(join(os.tmpdir(), 'loongtrain-bench-'));
  const results: LayoutResult[] = [];
  try {
    for (const layout of resolved) {
      const { parallel } = layout;
      const dims = new ParallelDims(parallel);
      const run = await train({
        ...cfg,
        parallel,
        train: { ...cfg.train, steps, batchSize: cfg.train.batchSize },
        optim: { ...cfg.optim, warmupSteps: Math.min(cfg.optim.warmupSteps, steps) },
        save: { ...cfg.save, dir: join(scratch, layout.name, 'checkpoints'), every: 0 },
        log: { ...cfg.log, dir: join(scratch, layout.name), progress: 'none' },
      });
      const measured = run.steps.slice(dropped);
      const stepMs = median(measured.map((s) => s.stepMs));
      results.push({
        layout: layout.name,
        ranks: dims.world,
        grid: `${dims.hp}×${dims.cp} w=${dims.innerRingSize}`,
        steps: measured.length,
        median: {
          stepMs,
          tokensPerSec: median(measured.map((s) => s.tokensPerSec)),
          tgs: median(measured.map((s) => s.tgs)),
          mfu: median(measured.map((s) => s.mfu)),
          commWaitShare: median(measured.map((s) => Math.max(...s.commWaitMs) / s.stepMs)),
          peakBytesPerRank: median(measured.map((s) => Math.max(...s.peakBytes))),
        },
        stepTimeRatio: results.length === 0 ? 1 : stepMs / results[0]!.median.stepMs,
      });
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return {
    suite: 'layouts',
    machine: machineInfo(),
    model: cfg.model,
    seqLen: cfg.train.seqLen,
    kernels: cfg.train.kernels,
    results,
  };
}

/** A fixed-width table of a report, for people. */
export function formatBenchTable(report: BenchReport): string {
  const head = ['layout', 'ranks', 'hp×cp', 'step ms', 'ratio', 'tok/s', 'TGS', 'MFU %', 'comm wait %', 'peak MiB/rank'];
  const rows = report.results.map((r) => [
    r.layout,
    String(r.ranks),
    r.grid,
    r.median.stepMs.toFixed(1),
    r.stepTimeRatio.toFixed(2),
    r.median.tokensPerSec.toFixed(0),
    r.median.tgs.toFixed(0),
    (r.median.mfu * 100).toFixed(3),
    (r.median.commWaitShare * 100).toFixed(1),
    (r.median.peakBytesPerRank / 2 ** 20).toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  return [
    `${report.machine.cpu}, ${report.machine.cores} cores, node ${report.machine.node}; seqLen ${report.seqLen}, kernels ${report.kernels}`,
    line(head),
    ...rows.map(line),
  ].join('\n');
}
