/**
 * Chunk boundaries for splitting `length` elements over `size` members, as even as possible:
 * chunk g is [bounds[g], bounds[g+1]) with bounds[g] = ⌊g·length/size⌋ (lengths differ by at
 * most 1). Backend-neutral: collectives of any backend and ZeRO's shard plan cut by this rule.
 */
export function chunkBounds(length: number, size: number): number[] {
  const bounds: number[] = [];
  for (let g = 0; g <= size; g++) bounds.push(Math.floor((g * length) / size));
  return bounds;
}
