/**
 * What each hop of a (double) ring computes: the order in which a ring position sees the KV
 * blocks (algorithms.md §1, §4) and the zigzag block rules. Pure functions: no communication.
 * Ring positions are cp-group ranks; position p = k·w + u sits in inner ring k (window) at
 * inner index u, and in outer ring u at outer index k (w = innerRingSize, W = cp / w).
 */

import { divisors } from '../parallel/dims.js';

/** What one ring hop computes: a rectangle of the rank's queries against the held KV block. */
export interface HopPlan {
  /** Ring position the held KV block started at. */
  source: number;
  /** Query rows [start, end) of the rank's 2c local tokens. */
  queryStart: number;
  queryEnd: number;
  /** Key rows [start, end) of the held KV block. */
  keyStart: number;
  keyEnd: number;
  /** Causal mask inside the rectangle (only the own block, which is square). */
  causal: boolean;
}

/**
 * The plan of one hop (algorithms.md §4). `tokens` = 2c local tokens per position. It depends
 * only on (position, source), never on the step, so a plain and a double ring share it
 * (DESIGN decision 6). Causal: own block → causal over all 2c tokens; source before me → all
 * 2c queries × EARLY c keys, no mask; source after me → LATE c queries × all 2c keys, no mask.
 * Non-causal: all × all.
 * @throws Error when a position is outside [0, cp) or tokens is odd under causal zigzag.
 */
export function hopPlan(position: number, source: number, cp: number, tokens: number, causal: boolean): HopPlan {
  for (const [name, p] of [['position', position], ['source', source]] as const) {
    if (!Number.isInteger(p) || p < 0 || p >= cp) throw new Error(`ring: ${name} ${p} must be an integer ring position in [0, ${cp})`);
  }
  const all = { source, queryStart: 0, queryEnd: tokens, keyStart: 0, keyEnd: tokens, causal: false };
  if (!causal) return all;
  if (tokens % 2 !== 0) throw new Error(`ring: causal zigzag needs an even number of local tokens (two chunks of c), got ${tokens}`);
  const c = tokens / 2;
  if (source === position) return { ...all, causal: true };
  if (source < position) return { ...all, keyEnd: c };
  return { ...all, queryStart: c };
}

/** Query–key score pairs a hop computes (per head): the work balanced by zigzag sharding. */
export function hopScorePairs(plan: HopPlan): number {
  const nq = plan.queryEnd - plan.queryStart;
  const nk = plan.keyEnd - plan.keyStart;
  return plan.causal ? (nq * (nq + 1)) / 2 : nq * nk;
}

/**
 * Source positions of the blocks `position` holds, in hop order (outer step j, then inner
 * step i): ((k − j) mod W)·w + ((u − i) mod w). With w = cp (the default) this is the plain
 * ring (p − i) mod cp; with w = 1 it is the plain ring over the outer links.
 * @throws Error when position is outside [0, cp) or w does not divide cp.
 */
export function ringSources(position: number, cp: number, w: number = cp): number[] {
  if (!Number.isInteger(cp) || cp < 1) throw new Error(`ring: cp = ${cp} must be a positive integer`);
  if (!Number.isInteger(w) || w < 1 || cp % w !== 0) {
    throw new Error(`ring: innerRingSize = ${w} must divide cp = ${cp}; valid values: ${divisors(cp).join(', ')}`);
  }
  if (!Number.isInteger(position) || position < 0 || position >= cp) throw new Error(`ring: position ${position} must be an integer ring position in [0, ${cp})`);
  const outer = cp / w;
  const k = Math.floor(position / w);
  const u = position % w;
  const sources: number[] = [];
  for (let j = 0; j < outer; j++) {
    for (let i = 0; i < w; i++) sources.push(((k - j + outer) % outer) * w + ((u - i + w) % w));
  }
  return sources;
}

/** The hop plans of `position` in a ring with inner ring size w (default cp: plain ring), in hop order. */
export function ringPlans(position: number, cp: number, tokens: number, causal: boolean, w: number = cp): HopPlan[] {
  return ringSources(position, cp, w).map((s) => hopPlan(position, s, cp, tokens, causal));
}

function planText(p: HopPlan): string {
  return `source ${p.source}, queries [${p.queryStart}, ${p.queryEnd}), keys [${p.keyStart}, ${p.keyEnd}), ${p.causal ? 'causal' : 'no mask'}`;
}

/**
 * Failure case F2: every backward hop must use the forward hop's source, block shapes and
 * causal mode (a ring whose inner ring size changed in between fails here too).
 * @throws Error naming the first differing hop and both plans.
 */
export function checkSamePlans(forward: readonly HopPlan[], backward: readonly HopPlan[]): void {
  if (forward.length !== backward.length) {
    throw new Error(`ring backward: ${backward.length} hops planned but the forward ran ${forward.length}; the ring layout changed between forward and backward`);
  }
  forward.forEach((f, i) => {
    const b = backward[i]!;
    if (planText(f) !== planText(b)) {
      throw new Error(`ring backward hop ${i}: plan (${planText(b)}) differs from the forward's (${planText(f)})`);
    }
  });
}
