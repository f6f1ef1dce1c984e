import type { ModelConfig } from '../model/config.js';
import { ModelParams, paramLayout } from '../model/params.js';
import { createKernels, type KernelChoice } from '../kernels/registry.js';
import { Arena } from '../tensor/arena.js';
import { Rng } from '../tensor/rng.js';
import { machineInfo, median, table, type MachineInfo } from '../train/bench-common.js';
import { Decoder, decoderBytes } from './decoder.js';
import { generateTokens } from './generate.js';
import { Sampler } from './sampling.js';

/*
 * `loongtrain bench generate` (docs/bench.md): time to generate N new tokens after a short
 * prompt on a small randomly initialised model, with the KV cache (one step per token: cost
 * linear in N) and without it (the whole sequence recomputed for every token: quadratic),
 * reported as ms per new token. Greedy, no stop token, so every run generates exactly N tokens.
 */

export interface GenerateBenchOptions {
  model: ModelConfig;
  /** Prompt tokens before the new ones. */
  promptTokens: number;
  /** The N of each case. */
  newTokens: readonly number[];
  /** Untimed runs of each case first. */
  warmup: number;
  /** Timed runs of each case; the report gives their median. */
  reps: number;
  kernels: KernelChoice;
}

/** A small byte-vocabulary model (≈ 0.1 M parameters). */
export const GENERATE_BENCH_MODEL: ModelConfig = {
  vocabSize: 257, dim: 64, layers: 2, heads: 4, kvHeads: 2, ffnDim: 176, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true, initStd: 0.02,
};

export const DEFAULT_GENERATE_BENCH = { model: GENERATE_BENCH_MODEL, promptTokens: 16, newTokens: [64, 128, 256], warmup: 1, reps: 3, kernels: 'auto' } as const satisfies GenerateBenchOptions;

export interface GenerateBenchRow {
  newTokens: number;
  cache: boolean;
  /** Median over the reps of the whole generation (prefill included), ms. */
  medianMs: number;
  /** medianMs / newTokens. */
  msPerToken: number;
}

export interface GenerateBenchReport {
  suite: 'generate';
  machine: MachineInfo;
  kernels: string;
  model: ModelConfig;
  promptTokens: number;
  warmup: number;
  reps: number;
  rows: GenerateBenchRow[];
}

/** Run every (N, cache) case `warmup + reps` times; one decoder of capacity prompt + max N. */
export function benchGenerate(opts: GenerateBenchOptions): GenerateBenchReport {
  const { model, promptTokens, newTokens, warmup, reps } = opts;
  const capacity = promptTokens + Math.max(...newTokens);
  // ModelParams allocates the parameters and their gradients.
  const arena = new Arena(2 * 4 * paramLayout(model).flatSize + decoderBytes(model, capacity));
  const kernels = createKernels(opts.kernels, arena);
  const params = new ModelParams(arena, model);
  params.init(1);
  const decoder = new Decoder(kernels, params, { capacity });
  const rng = new Rng(7);
  const prompt = Array.from({ length: promptTokens }, () => rng.int(model.vocabSize));
  const rows: GenerateBenchRow[] = [];
  for (const n of newTokens) {
    for (const cache of [true, false]) {
      const times: number[] = [];
      for (let r = 0; r < warmup + reps; r++) {
        const t0 = performance.now();
        const result = generateTokens(decoder, new Sampler({ temperature: 0 }), prompt, { maxNewTokens: n, stopIds: [], cache });
        const ms = performance.now() - t0;
        if (result.tokens.length !== n) throw new Error(`bench generate: generated ${result.tokens.length} tokens, expected ${n}`);
        if (r >= warmup) times.push(ms);
      }
      const medianMs = median(times);
      rows.push({ newTokens: n, cache, medianMs: round(medianMs), msPerToken: round(medianMs / n, 4) });
    }
  }
  decoder.free();
  return { suite: 'generate', machine: machineInfo(), kernels: kernels.name, model, promptTokens, warmup, reps, rows };
}

const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** ms per new token with and without the cache for each N, and their ratio. */
export function formatGenerateTable(report: GenerateBenchReport): string {
  const m = report.model;
  const byN = new Map<number, { cache?: GenerateBenchRow; recompute?: GenerateBenchRow }>();
  for (const row of report.rows) byN.set(row.newTokens, { ...byN.get(row.newTokens), [row.cache ? 'cache' : 'recompute']: row });
  const lines = [
    `generate: ${m.layers} layers, dim ${m.dim}, heads ${m.heads}/${m.kvHeads}, vocab ${m.vocabSize}; prompt ${report.promptTokens} tokens, greedy; ${report.kernels} kernels; median of ${report.reps} (${report.warmup} warmup); ${report.machine.cpu}`,
    ...table(
      ['new tokens', 'cache ms/token', 'recompute ms/token', 'recompute / cache'],
      [...byN.entries()].map(([n, r]) => [String(n), r.cache!.msPerToken.toFixed(3), r.recompute!.msPerToken.toFixed(3), (r.recompute!.msPerToken / r.cache!.msPerToken).toFixed(1)]),
    ),
  ];
  return lines.join('\n');
}
