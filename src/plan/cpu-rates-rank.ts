/**
 * Rank entry of the CPU rate measurement (src/plan/cpu.ts `measureCpuRates`): every rank
 * measures the kernel rates of the layouts' shapes at the same time, so that the rates are those
 * of a core while the others are busy too, as in a training run.
 */
import type { RankContext } from '../comm/rank-context.js';
import type { ModelConfig } from '../model/config.js';
import { measureKernelRates, type KernelRates } from './cpu.js';

export interface RatesRankArgs {
  model: ModelConfig;
  seqLen: number;
  kernels: string;
  layouts: Array<{ hp: number; cp: number }>;
  busy: number;
}

export function run(ctx: RankContext, a: RatesRankArgs): KernelRates {
  ctx.newGroup('world', Array.from({ length: ctx.world }, (_, i) => i)).barrier();
  return measureKernelRates(a.model, a.seqLen, a.kernels, a.layouts, a.busy);
}
