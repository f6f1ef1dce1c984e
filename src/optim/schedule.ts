import { ConfigError } from '../errors.js';

export interface WarmupCosineOptions {
  /** Peak learning rate, reached at the end of warmup. */
  maxLr: number;
  /** Floor of the cosine decay, 0 ≤ minLr ≤ maxLr. */
  minLr: number;
  /** Steps of linear warmup (0 for none). */
  warmupSteps: number;
  /** Step at which the decay reaches minLr (≥ warmupSteps); later steps stay at minLr. */
  totalSteps: number;
}

/**
 * Linear warmup then cosine decay to minLr (Loshchilov & Hutter 2017, SGDR without restarts),
 * for 1-based optimizer steps s (the step AdamW is about to take):
 * - s ≤ W: lr = maxLr · s / W
 * - W < s ≤ N: lr = minLr + ½(maxLr − minLr)(1 + cos(π · (s − W)/(N − W)))
 * - s > N: lr = minLr
 * with W = warmupSteps, N = totalSteps.
 */
export class WarmupCosineSchedule {
  readonly options: Readonly<WarmupCosineOptions>;

  /** @throws ConfigError naming the field, its value and what is valid. */
  constructor(options: WarmupCosineOptions) {
    const { maxLr, minLr, warmupSteps, totalSteps } = options;
    if (!(maxLr > 0 && Number.isFinite(maxLr))) throw new ConfigError(`schedule.maxLr = ${maxLr} is invalid: it must be a positive finite number`);
    if (!(minLr >= 0 && minLr <= maxLr)) throw new ConfigError(`schedule.minLr = ${minLr} is invalid: it must be in [0, maxLr = ${maxLr}]`);
    if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new ConfigError(`schedule.warmupSteps = ${warmupSteps} is invalid: it must be an integer ≥ 0`);
    if (!Number.isInteger(totalSteps) || totalSteps < warmupSteps) {
      throw new ConfigError(`schedule.totalSteps = ${totalSteps} is invalid: it must be an integer ≥ warmupSteps = ${warmupSteps}`);
    }
    this.options = { ...options };
  }

  /** Learning rate of 1-based step `step`. Pure. @throws Error when step is not a positive integer. */
  lr(step: number): number {
    if (!Number.isInteger(step) || step < 1) throw new Error(`schedule: step = ${step} is invalid: steps are 1-based positive integers`);
    const { maxLr, minLr, warmupSteps: w, totalSteps: n } = this.options;
    if (step <= w) return (maxLr * step) / w;
    if (step > n) return minLr;
    const progress = (step - w) / (n - w);
    return minLr + 0.5 * (maxLr - minLr) * (1 + Math.cos(Math.PI * progress));
  }
}
