import type { CommRequest, ProcessGroup } from './process-group.js';

/*
 * Collectives over pieces of UNEVEN length, which ZeRO needs when a segment of the flat layout
 * does not split evenly over the shards (the ProcessGroup collectives take equal chunks).
 * They are built from isend/irecv so that a gather can be posted early and completed later
 * (stage 3's prefetch of the next unit), which also makes them backend-neutral: they run on any
 * ProcessGroup and are counted as its point-to-point traffic. Bounds are offsets into the full buffer: member g
 * owns [bounds[g], bounds[g + 1]). Empty pieces send no message (every member knows the bounds).
 */

/** A collective that has been posted; wait() completes it (bounded by the group's timeout). */
export interface Pending {
  wait(): void;
}

function checkBounds(op: string, group: ProcessGroup, bounds: readonly number[], full: Float32Array): void {
  if (bounds.length !== group.size + 1 || bounds[0] !== 0 || bounds[group.size] !== full.length) {
    throw new RangeError(`${op}: bounds [${bounds.join(', ')}] must have ${group.size + 1} entries from 0 to the buffer length ${full.length}`);
  }
}

function waitAll(requests: readonly CommRequest[]): void {
  for (const r of requests) r.wait();
}

/**
 * Post an all-gather of uneven pieces: `mine` (length bounds[me+1] − bounds[me]) goes to every
 * other member and lands in full[bounds[me] …] here; the others' pieces arrive in `full` by the
 * time wait() returns. `mine` and `full` must not change until then.
 * @throws RangeError when the bounds or the length of `mine` do not fit.
 */
export function postAllGatherv(group: ProcessGroup, mine: Float32Array, full: Float32Array, bounds: readonly number[], tag: number): Pending {
  checkBounds('allGatherv', group, bounds, full);
  const me = group.rank;
  if (mine.length !== bounds[me + 1]! - bounds[me]!) throw new RangeError(`allGatherv: this member's piece has ${mine.length} elements, bounds give ${bounds[me + 1]! - bounds[me]!}`);
  const sends: CommRequest[] = [];
  const recvs: CommRequest[] = [];
  for (let k = 1; k < group.size; k++) {
    const g = (me + k) % group.size;
    if (mine.length > 0) sends.push(group.isend(mine, g, tag));
    if (bounds[g + 1]! > bounds[g]!) recvs.push(group.irecv(full.subarray(bounds[g]!, bounds[g + 1]!), g, tag));
  }
  if (mine.buffer !== full.buffer || mine.byteOffset !== full.byteOffset + 4 * bounds[me]!) full.set(mine, bounds[me]!);
  return {
    wait: () => {
      waitAll(recvs);
      waitAll(sends);
    },
  };
}

/**
 * Reduce-scatter of uneven pieces: this member's piece of Σ over members of their `full`
 * buffers, added in ascending group-rank order in f32 (the order of ProcessGroup.reduceScatter,
 * so the sum does not depend on arrival order), is written to `out` — or added to it when
 * `accumulate` (gradient accumulation over micro-batches). `full` must not change until it returns.
 * @throws RangeError when the bounds or the length of `out` do not fit.
 */
export function reduceScatterv(group: ProcessGroup, full: Float32Array, bounds: readonly number[], out: Float32Array, tag: number, accumulate: boolean): void {
  checkBounds('reduceScatterv', group, bounds, full);
  const me = group.rank;
  const lo = bounds[me]!;
  const len = bounds[me + 1]! - lo;
  if (out.length !== len) throw new RangeError(`reduceScatterv: out has ${out.length} elements, this member's piece ${len}`);
  const sends: CommRequest[] = [];
  const parts: (Float32Array | undefined)[] = [];
  const recvs: CommRequest[] = [];
  for (let k = 1; k < group.size; k++) {
    const g = (me + k) % group.size;
    if (bounds[g + 1]! > bounds[g]!) sends.push(group.isend(full.subarray(bounds[g]!, bounds[g + 1]!), g, tag));
    if (len > 0) {
      const part = new Float32Array(len);
      parts[g] = part;
      recvs.push(group.irecv(part, g, tag));
    }
  }
  waitAll(recvs);
  waitAll(sends);
  if (len === 0) return;
  parts[me] = full.subarray(lo, lo + len);
  const sum = parts[0]!.slice();
  for (let g = 1; g < group.size; g++) {
    const p = parts[g]!;
    for (let i = 0; i < len; i++) sum[i]! += p[i]!;
  }
  if (!accumulate) out.set(sum);
  else for (let i = 0; i < len; i++) out[i]! += sum[i]!;
}

/**
 * Gather uneven pieces to group rank `root` only: members send `mine` there; on the root, `full`
 * (which may be undefined elsewhere) receives every piece. For writing a checkpoint.
 * @throws RangeError when the root has no buffer or the lengths do not fit.
 */
export function gatherv(group: ProcessGroup, mine: Float32Array, full: Float32Array | undefined, bounds: readonly number[], root: number, tag: number): void {
  const me = group.rank;
  if (mine.length !== bounds[me + 1]! - bounds[me]!) throw new RangeError(`gatherv: this member's piece has ${mine.length} elements, bounds give ${bounds[me + 1]! - bounds[me]!}`);
  if (me !== root) {
    if (mine.length > 0) group.send(mine, root, tag);
    return;
  }
  if (full === undefined) throw new RangeError('gatherv: the root needs a buffer for the gathered pieces');
  checkBounds('gatherv', group, bounds, full);
  full.set(mine, bounds[me]!);
  for (let g = 0; g < group.size; g++) {
    if (g !== me && bounds[g + 1]! > bounds[g]!) group.recv(full.subarray(bounds[g]!, bounds[g + 1]!), g, tag);
  }
}

/**
 * Σ over the group of one float64 per member, identical on every member and exact to ~2⁻⁴⁸
 * relative: each value travels as an f32 pair (hi, lo) with hi + lo = x, and the pairs are added
 * in group-rank order in f64. (An f32 allReduce would round the sum to 2⁻²⁴.)
 */
export function allSumF64(group: ProcessGroup, x: number): number {
  const hi = Math.fround(x);
  const send = new Float32Array([hi, x - hi]);
  const all = new Float32Array(2 * group.size);
  group.allGather(send, all);
  let sum = 0;
  for (let i = 0; i < group.size; i++) sum += all[2 * i]! + all[2 * i + 1]!;
  return sum;
}
