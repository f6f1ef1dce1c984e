import { TAG_LIMIT, ZERO_TAG_BASE } from '../comm/tags.js';

/** Segments whose ZeRO tags fit below the tag limit (src/comm/tags.ts). */
export const MAX_ZERO_SEGMENTS = Math.floor((TAG_LIMIT - ZERO_TAG_BASE) / 4);

/**
 * The tag of ZeRO's uneven collectives on `segment`: ZERO_TAG_BASE + 4·segment + op, below
 * TAG_LIMIT (32768, MPI's guaranteed MPI_TAG_UB). Messages match by (group, source, tag) in
 * arrival order, and every member runs a segment's operations in the same order, so a tag may repeat.
 * @throws RangeError when the segment is outside [0, MAX_ZERO_SEGMENTS).
 */
export function zeroTag(segment: number, op: 'gather' | 'reduce' | 'save'): number {
  if (!Number.isInteger(segment) || segment < 0 || segment >= MAX_ZERO_SEGMENTS) throw new RangeError(`zeroTag: segment ${segment} is outside [0, ${MAX_ZERO_SEGMENTS})`);
  return ZERO_TAG_BASE + 4 * segment + (op === 'gather' ? 0 : op === 'reduce' ? 1 : 2);
}
