/**
 * The order in which a ring position sees the KV blocks of a (double) ring (algorithms.md §1,
 * §4), and what each hop computes, read from the step's SequenceLayout (the rectangle and mask
 * of every (query block, key block) pair). Pure functions: no communication. Ring positions are
 * cp-group ranks; position p = k·w + u sits in inner ring k (window) at inner index u, and in
 * outer ring u at outer index k (w = innerRingSize, W = cp / w).
 */

import { divisors } from '../parallel/dims.js';
import type { BlockPlan, HopPlan, SequenceLayout } from '../parallel/sequence-layout.js';

export type { HopPlan } from '../parallel/sequence-layout.js';

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

/**
 * The hop plans of `position` in a ring with inner ring size w (default cp: plain ring), in hop
 * order, from the step's layout (its pair masks; DESIGN decision 6).
 * @throws Error when position is outside [0, cp) or w does not divide cp.
 */
export function ringPlans(layout: SequenceLayout, position: number, w: number = layout.cp): HopPlan[] {
  return ringSources(position, layout.cp, w).map((s) => layout.hop(position, s));
}

function maskText(p: HopPlan): string {
  const m = p.mask;
  if (m.kind === 'none') return 'no mask';
  if (m.kind === 'causal') return `causal offset ${m.offset}`;
  return `documents mask over ${m.keyStart.length} rows`;
}

function planText(p: HopPlan): string {
  return `source ${p.source}, queries [${p.queryStart}, ${p.queryEnd}), keys [${p.keyStart}, ${p.keyEnd}), ${p.pairs === 0 ? 'skipped' : maskText(p)}, ${p.pairs} visible pairs`;
}

function sameInts(a: Int32Array, b: Int32Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function samePlan(a: HopPlan, b: HopPlan): boolean {
  if (a === b) return true;
  if (a.source !== b.source || a.blocks.length !== b.blocks.length || !a.blocks.every((x, i) => sameBlock(x, b.blocks[i]!))) return false;
  return sameBlock(a, b);
}

function sameBlock(a: BlockPlan, b: BlockPlan): boolean {
  if (a.queryStart !== b.queryStart || a.queryEnd !== b.queryEnd || a.keyStart !== b.keyStart || a.keyEnd !== b.keyEnd || a.pairs !== b.pairs) return false;
  const [m, n] = [a.mask, b.mask];
  if (m.kind === 'none') return n.kind === 'none';
  if (m.kind === 'causal') return n.kind === 'causal' && m.offset === n.offset;
  return n.kind === 'documents' && sameInts(m.keyStart, n.keyStart) && sameInts(m.keyEnd, n.keyEnd);
}

/**
 * Failure case F2: every backward hop must use the forward hop's source, block shapes and
 * mask (a ring whose inner ring size or layout changed in between fails here too).
 * @throws Error naming the first differing hop and both plans.
 */
export function checkSamePlans(forward: readonly HopPlan[], backward: readonly HopPlan[]): void {
  if (forward.length !== backward.length) {
    throw new Error(`ring backward: ${backward.length} hops planned but the forward ran ${forward.length}; the ring layout changed between forward and backward`);
  }
  forward.forEach((f, i) => {
    const b = backward[i]!;
    if (!samePlan(f, b)) {
      throw new Error(`ring backward hop ${i}: plan (${planText(b)}) differs from the forward's (${planText(f)})`);
    }
  });
}
