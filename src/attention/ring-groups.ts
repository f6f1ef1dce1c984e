import type { CommRequest, ProcessGroup } from '../comm/process-group.js';
import { Tracer } from '../comm/trace.js';

/**
 * The rings a ring position talks over (algorithms.md §1, DESIGN "Double-Ring-Attention"):
 * the plain ring is the cp group itself; a double ring with inner ring size w < cp uses an
 * inner group (the w consecutive positions of the rank's window) and an outer group (the
 * positions with the rank's inner index), so their traffic is counted under kinds 'inner'
 * and 'outer' (DESIGN decision 7).
 */

/** Tag of K/V block messages on the inner ring (the cp group itself in a plain ring); ring tags are 1…4 of src/comm/tags.ts. */
export const KV_TAG = 1;
/** Tag of dK/dV accumulator messages on the inner ring. */
export const DKV_TAG = 2;
/** Tag of K/V block messages on the outer ring. */
export const OUTER_KV_TAG = 3;
/** Tag of dK/dV running-total messages on the outer ring. */
export const OUTER_DKV_TAG = 4;

export type RingRole = 'inner' | 'outer';
/** K/V blocks travel forward and backward; dK/dV accumulators only in the backward. */
export type RingPayload = 'KV' | 'dKV';

const TAGS: Record<RingRole, Record<RingPayload, number>> = {
  inner: { KV: KV_TAG, dKV: DKV_TAG },
  outer: { KV: OUTER_KV_TAG, dKV: OUTER_DKV_TAG },
};

/** A tracer that records nothing, for cores built without one. */
export const NO_TRACE = new Tracer(false, -1);

/**
 * One ring of this rank: sends go to the next member (group rank + 1), receives come from the
 * previous one (equal when the ring has two members). Every post and every wait is a 'comm'
 * span of the tracer, args { kind: group kind, op, peer: GLOBAL rank, bytes }.
 */
export class RingLink {
  /** Group ranks of the next and previous member. */
  readonly next: number;
  readonly prev: number;

  constructor(
    readonly group: ProcessGroup,
    readonly role: RingRole,
    private readonly tracer: Tracer,
  ) {
    this.next = (group.rank + 1) % group.size;
    this.prev = (group.rank - 1 + group.size) % group.size;
  }

  /** Post the send of `buf` to the next member; `buf` must stay unchanged until the returned wait. */
  send(buf: Float32Array, what: RingPayload): CommRequest {
    return this.post('send', buf, what);
  }

  /** Post the receive of `buf` from the previous member; its contents are valid after the returned wait. */
  recv(buf: Float32Array, what: RingPayload): CommRequest {
    return this.post('recv', buf, what);
  }

  private post(op: 'send' | 'recv', buf: Float32Array, what: RingPayload): CommRequest {
    const peer = op === 'send' ? this.next : this.prev;
    const tag = TAGS[this.role][what];
    const args = { kind: this.group.kind, op, peer: this.group.ranks[peer]!, bytes: buf.byteLength };
    const req = this.tracer.span(`post ${this.role} ${what} ${op}`, 'comm', args, () =>
      op === 'send' ? this.group.isend(buf, peer, tag) : this.group.irecv(buf, peer, tag),
    );
    return { wait: () => this.tracer.span(`wait ${this.role} ${what} ${op}`, 'comm', args, () => req.wait()) };
  }
}

/** Where a rank sits in its (double) ring and the links it uses. */
export interface RingTopology {
  /** Ring position p = cp-group rank (DESIGN decision 6). */
  position: number;
  cp: number;
  /** Inner ring size w and outer ring size W = cp / w. */
  innerSize: number;
  outerSize: number;
  /** The inner ring (the cp group when no inner group is given). */
  inner: RingLink;
  /** The outer ring; undefined when W = 1 (nothing travels on it). */
  outer: RingLink | undefined;
}

/**
 * The topology of a ring over `cpGroup`, double when `innerGroup` and `outerGroup` are given.
 * Those must be the rank's inner ring (positions k·w … k·w + w − 1 of cpGroup, in that order)
 * and outer ring (positions u, u + w, …), as ParallelDims.innerRing/outerRing list them.
 * @throws Error when only one of them is given, or when they do not match cpGroup's positions.
 */
export function ringTopology(cpGroup: ProcessGroup, innerGroup: ProcessGroup | undefined, outerGroup: ProcessGroup | undefined, tracer: Tracer): RingTopology {
  const cp = cpGroup.size;
  const position = cpGroup.rank;
  if (innerGroup === undefined && outerGroup === undefined) {
    return { position, cp, innerSize: cp, outerSize: 1, inner: new RingLink(cpGroup, 'inner', tracer), outer: undefined };
  }
  if (innerGroup === undefined || outerGroup === undefined) {
    throw new Error(`ring: innerGroup and outerGroup must be given together (a double ring), or both omitted (a plain ring over the cp group); got only ${innerGroup === undefined ? 'outerGroup' : 'innerGroup'}`);
  }
  const w = innerGroup.size;
  const outer = outerGroup.size;
  if (w * outer !== cp) {
    throw new Error(`ring: innerGroup size ${w} × outerGroup size ${outer} = ${w * outer} must equal the cp group size ${cp}`);
  }
  const k = Math.floor(position / w);
  const u = position % w;
  const wantInner = cpGroup.ranks.slice(k * w, (k + 1) * w);
  const wantOuter = Array.from({ length: outer }, (_, j) => cpGroup.ranks[j * w + u]!);
  if (innerGroup.rank !== u || outerGroup.rank !== k || !sameRanks(innerGroup.ranks, wantInner) || !sameRanks(outerGroup.ranks, wantOuter)) {
    throw new Error(
      `ring: the rank at position ${position} of cp group [${cpGroup.ranks.join(', ')}] with inner ring size ${w} needs innerGroup [${wantInner.join(', ')}] ` +
        `and outerGroup [${wantOuter.join(', ')}] (algorithms.md §1), got [${innerGroup.ranks.join(', ')}] and [${outerGroup.ranks.join(', ')}]`,
    );
  }
  return {
    position,
    cp,
    innerSize: w,
    outerSize: outer,
    inner: new RingLink(innerGroup, 'inner', tracer),
    outer: outer > 1 ? new RingLink(outerGroup, 'outer', tracer) : undefined,
  };
}

function sameRanks(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i]);
}
