import type { ProcessGroup } from '../comm/process-group.js';
import { validHpValues } from '../parallel/dims.js';
import { Tensor } from '../tensor/tensor.js';

/**
 * The Ulysses all-to-all of 2D-Attention (algorithms.md §3) and the KV-head replication it
 * needs for GQA when hp > kvHeads.
 *
 * {@link scatterHeads}: every rank of the hp group holds [T, Hx, d] (T = S/sp tokens, all
 * heads); head group g (Hx/hp contiguous heads) goes to group rank g, and what arrives is
 * concatenated along tokens in source group rank order → [hp·T, Hx/hp, d] (S/cp tokens).
 * {@link gatherHeads} is its exact inverse. The backward of each is the other one.
 */

function checkSplit(op: string, group: ProcessGroup, tokens: Tensor, heads: Tensor): { t: number; hl: number; d: number } {
  const hp = group.size;
  if (tokens.shape.length !== 3) throw new Error(`${op}: the [T, Hx, d] tensor must have 3 dimensions, got [${tokens.shape.join(', ')}]`);
  const [t, hx, d] = tokens.shape as [number, number, number];
  if (hx % hp !== 0) throw new Error(`${op}: ${hx} heads cannot be split over hp = ${hp} ranks; the head count must be a multiple of hp`);
  const hl = hx / hp;
  const s = heads.shape;
  if (s.length !== 3 || s[0] !== hp * t || s[1] !== hl || s[2] !== d) {
    throw new Error(`${op}: the head-split tensor has shape [${s.join(', ')}], expected [hp·T, Hx/hp, d] = [${hp * t}, ${hl}, ${d}]`);
  }
  return { t, hl, d };
}

/**
 * Sequence → heads all-to-all. x [T, Hx, d] (this rank's tokens, all heads) → out
 * [hp·T, Hx/hp, d] (the hp group's tokens in group rank order, this rank's head group).
 * Sends (hp − 1)/hp of x. Packs the head groups into a contiguous send buffer (category 'comm').
 * @throws Error when Hx is not a multiple of hp or `out` has the wrong shape.
 */
export function scatterHeads(group: ProcessGroup, x: Tensor, out: Tensor): void {
  const { t, hl, d } = checkSplit('scatterHeads', group, x, out);
  const hp = group.size;
  if (hp === 1) {
    out.data.set(x.data);
    return;
  }
  const send = Tensor.empty(x.arena, [hp, t, hl, d], 'comm');
  const rowLen = hl * d;
  // Row moves are copyWithin on the arena's one f32 view (a memmove, more than twice as fast as
  // set(subarray()), which builds a view per row).
  const all = x.arena.floats;
  const xAt = x.byteOffset / 4;
  const sendAt = send.byteOffset / 4;
  for (let g = 0; g < hp; g++) {
    for (let i = 0; i < t; i++) {
      const src = xAt + (i * hp + g) * rowLen;
      all.copyWithin(sendAt + (g * t + i) * rowLen, src, src + rowLen);
    }
  }
  group.allToAll(send.data, out.data);
  send.free();
}

/**
 * Heads → sequence all-to-all, the inverse of {@link scatterHeads}. y [hp·T, Hx/hp, d] → out
 * [T, Hx, d]; with `accumulate` the result is added to `out` instead of overwriting it (used
 * for gradients). Unpacks from a contiguous receive buffer (category 'comm').
 * @throws Error when Hx is not a multiple of hp or `y` has the wrong shape.
 */
export function gatherHeads(group: ProcessGroup, y: Tensor, out: Tensor, accumulate = false): void {
  const { t, hl, d } = checkSplit('gatherHeads', group, out, y);
  const hp = group.size;
  if (hp === 1) {
    // One head group: y is already [T, Hx, d] in token order.
    if (!accumulate) out.data.set(y.data);
    else for (let e = 0; e < out.data.length; e++) out.data[e]! += y.data[e]!;
    return;
  }
  let recv = y;
  if (hp > 1) {
    recv = Tensor.empty(y.arena, [hp * t, hl, d], 'comm');
    group.allToAll(y.data, recv.data);
  }
  // recv chunk g = this rank's tokens for head group g, [T, Hx/hp, d].
  const rowLen = hl * d;
  const all = out.arena.floats;
  const o = out.data;
  const r = recv.data;
  const outAt = out.byteOffset / 4;
  const recvAt = recv.byteOffset / 4;
  for (let g = 0; g < hp; g++) {
    for (let i = 0; i < t; i++) {
      const src = (g * t + i) * rowLen;
      const dst = (i * hp + g) * rowLen;
      if (accumulate) {
        for (let e = 0; e < rowLen; e++) o[dst + e]! += r[src + e]!;
      } else {
        all.copyWithin(outAt + dst, recvAt + src, recvAt + src + rowLen);
      }
    }
  }
  if (recv !== y) recv.free();
}

/**
 * KV heads after replication for an hp group (algorithms.md §3): max(kvHeads, hp).
 * @throws Error naming heads, kvHeads and hp when the split is not legal.
 */
export function replicatedKvHeads(heads: number, kvHeads: number, hp: number): number {
  const valid = validHpValues(heads, kvHeads);
  if (!valid.includes(hp)) {
    throw new Error(
      `attention: hp = ${hp} does not fit heads = ${heads} and kvHeads = ${kvHeads}: hp must divide heads, and divide kvHeads ` +
        `(or be a multiple of it when hp > kvHeads); valid hp values: ${valid.join(', ')}`,
    );
  }
  return Math.max(kvHeads, hp);
}

/**
 * Repeat each KV head `r` times: x [T, Hkv, d] → out [T, Hkv·r, d], head j of out = head ⌊j/r⌋
 * of x, so after the hp split rank g attends with KV head ⌊g·Hkv/hp⌋ (failure case F7).
 */
export function replicateKvHeads(x: Tensor, r: number, out: Tensor): void {
  const [t, hkv, d] = x.shape as [number, number, number];
  if (out.size !== t * hkv * r * d) throw new Error(`replicateKvHeads: out [${out.shape.join(', ')}] must be [${t}, ${hkv * r}, ${d}]`);
  for (let i = 0; i < t; i++) {
    for (let h = 0; h < hkv; h++) {
      const src = (i * hkv + h) * d;
      for (let u = 0; u < r; u++) out.data.set(x.data.subarray(src, src + d), ((i * hkv + h) * r + u) * d);
    }
  }
}

/** Backward of {@link replicateKvHeads}: dx [T, Hkv, d] += the sum of the r replicas in dRep [T, Hkv·r, d]. */
export function sumKvReplicas(dRep: Tensor, r: number, dx: Tensor): void {
  const [t, hkv, d] = dx.shape as [number, number, number];
  if (dRep.size !== t * hkv * r * d) throw new Error(`sumKvReplicas: dRep [${dRep.shape.join(', ')}] must be [${t}, ${hkv * r}, ${d}]`);
  for (let i = 0; i < t; i++) {
    for (let h = 0; h < hkv; h++) {
      const dst = (i * hkv + h) * d;
      for (let u = 0; u < r; u++) {
        const src = ((i * hkv + h) * r + u) * d;
        for (let c = 0; c < d; c++) dx.data[dst + c]! += dRep.data[src + c]!;
      }
    }
  }
}
