import { ConfigError } from '../errors.js';
import { Rng } from '../tensor/rng.js';

/**
 * How the next token is chosen from logits [V]:
 * - `temperature` T ≥ 0: probabilities ∝ exp(logit / T); T = 0 is greedy (the arg max, the
 *   lowest id among equal logits), and top-k / top-p then change nothing.
 * - `topK` ≥ 0: keep only the K most likely tokens (0 = all).
 * - `topP` in (0, 1]: keep the smallest set of most likely tokens whose probability (after
 *   top-k) reaches topP (nucleus sampling, Holtzman et al. 2020; 1 = all). The most likely token
 *   is always kept, so a tiny topP is greedy.
 * - `seed`: the seed of the draws (an integer in [0, 2³²)); equal seeds give equal samples.
 */
export interface SamplingOptions {
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

export const DEFAULT_SAMPLING: Readonly<SamplingOptions> = { temperature: 0.8, topK: 0, topP: 0.95, seed: 0 };

/** The command-line flag of each option, for error messages. */
export const SAMPLING_FLAGS: Readonly<Record<keyof SamplingOptions, string>> = { temperature: '--temperature', topK: '--top-k', topP: '--top-p', seed: '--seed' };

/**
 * `opts` over the defaults, checked.
 * @throws ConfigError naming the flag, the value and the valid range.
 */
export function validateSampling(opts: Partial<SamplingOptions>): SamplingOptions {
  const o = { ...DEFAULT_SAMPLING, ...opts };
  const bad = (key: keyof SamplingOptions, range: string): never => {
    throw new ConfigError(`${SAMPLING_FLAGS[key]} ${String(o[key])} is invalid: it must be ${range}`);
  };
  if (typeof o.temperature !== 'number' || !Number.isFinite(o.temperature) || o.temperature < 0) bad('temperature', 'a finite number ≥ 0 (0 = greedy)');
  if (!Number.isInteger(o.topK) || o.topK < 0) bad('topK', 'an integer ≥ 0 (0 = no top-k cut)');
  if (typeof o.topP !== 'number' || !(o.topP > 0 && o.topP <= 1)) bad('topP', 'a number in (0, 1] (1 = no nucleus cut)');
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) bad('seed', 'an integer in [0, 4294967295]');
  return o;
}

/** Index of the largest logit; the lowest index among equal ones. */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/**
 * Draws token ids from logits under {@link SamplingOptions}, with its own seeded {@link Rng}
 * (one uniform draw per sampled token; greedy draws nothing). O(V) per token plus a sort of
 * the candidates that can be in the nucleus.
 */
export class Sampler {
  readonly options: SamplingOptions;
  private readonly rng: Rng;
  private weights = new Float64Array(0);

  /** @throws ConfigError as {@link validateSampling}. */
  constructor(opts: Partial<SamplingOptions> = {}) {
    this.options = validateSampling(opts);
    this.rng = new Rng(this.options.seed);
  }

  /** The next token id for logits [V] (finite, or −∞ for impossible tokens). */
  sample(logits: ArrayLike<number>): number {
    const { temperature, topK, topP } = this.options;
    const v = logits.length;
    if (v === 0) throw new Error('Sampler: empty logits');
    if (temperature === 0) return argmax(logits);
    if (this.weights.length !== v) this.weights = new Float64Array(v);
    const w = this.weights;
    const best = argmax(logits);
    const max = logits[best]!;
    for (let i = 0; i < v; i++) w[i] = Math.exp((logits[i]! - max) / temperature);
    if (topK > 0 && topK < v) keepTopK(w, logits, topK);
    let total = 0;
    for (let i = 0; i < v; i++) total += w[i]!;
    if (topP < 1) total = keepNucleus(w, total, topP, best);
    let u = this.rng.uniform() * total;
    let last = best;
    for (let i = 0; i < v; i++) {
      const wi = w[i]!;
      if (wi === 0) continue;
      last = i;
      u -= wi;
      if (u < 0) return i;
    }
    return last; // rounding left u ≥ 0 after the last kept token
  }
}

/** Zero the weights of all but the k largest logits (ties at the cut: the lowest ids). O(V) expected. */
function keepTopK(w: Float64Array, logits: ArrayLike<number>, k: number): void {
  const cut = kthLargest(Float32Array.from(logits), k);
  let above = 0;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > cut) above++;
  keepAboveCut(w, logits, cut, k - above);
}

/** Keep the weights whose `key` is above `cut` and the first `ties` (lowest ids) equal to it; zero the rest. */
function keepAboveCut(w: Float64Array, key: ArrayLike<number>, cut: number, ties: number): void {
  for (let i = 0; i < key.length; i++) {
    const x = key[i]!;
    if (x > cut) continue;
    if (x === cut && ties > 0) ties--;
    else w[i] = 0;
  }
}

/** The k-th largest value of `a` (1-based; `a` is reordered): quickselect with middle pivots. */
function kthLargest(a: Float32Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const target = a.length - k; // index of the answer in ascending order
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/**
 * Zero every weight outside the nucleus: the most likely tokens (by weight, then lowest id)
 * until their sum reaches topP · total; the largest weight is always kept. Returns the kept sum.
 * Only the weights at or above a threshold whose set already holds topP of the mass are sorted.
 */
function keepNucleus(w: Float64Array, total: number, topP: number, best: number): number {
  const target = topP * total;
  // Lower the threshold ×1/16 at a time until the tokens at or above it hold the target mass;
  // the nucleus is a prefix of the sorted order, so it lies inside that set.
  let threshold = w[best]!;
  let count = 0;
  for (;;) {
    let mass = 0;
    count = 0;
    for (let i = 0; i < w.length; i++) {
      if (w[i]! >= threshold && w[i]! > 0) {
        mass += w[i]!;
        count++;
      }
    }
    if (mass >= target || threshold === 0) break;
    threshold = threshold < 1e-300 ? 0 : threshold / 16;
  }
  const sorted = new Float64Array(count);
  let n = 0;
  for (let i = 0; i < w.length; i++) if (w[i]! >= threshold && w[i]! > 0) sorted[n++] = w[i]!;
  sorted.sort();
  // Take weights from the largest down until the target is reached: the last one taken is the cut.
  let kept = 0;
  let j = count - 1;
  for (; j >= 0; j--) {
    kept += sorted[j]!;
    if (kept >= target) break;
  }
  j = Math.max(j, 0);
  const cut = sorted[j]!;
  let ties = 0;
  for (let m = j; m < count && sorted[m] === cut; m++) ties++;
  keepAboveCut(w, w.slice(), cut, ties);
  kept = 0;
  for (let i = 0; i < w.length; i++) kept += w[i]!;
  return kept;
}
