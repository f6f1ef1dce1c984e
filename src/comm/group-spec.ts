import { GROUP_KINDS, type GroupKind } from './process-group.js';

/**
 * Check a group request of rank `me` in a world of `world` ranks, as every backend takes it
 * (RankContext.newGroup): a known kind, distinct integer ranks in [0, world), `me` among them.
 * @returns the group's identity `kind:r0,r1,...` (members derive it without talking) and this rank's group rank.
 * @throws TypeError/RangeError naming the bad kind or rank list and what would be valid.
 */
export function checkGroupSpec(me: number, world: number, kind: GroupKind, ranks: readonly number[]): { id: string; groupRank: number } {
  if (!GROUP_KINDS.includes(kind)) {
    throw new TypeError(`rank ${me}: group kind ${JSON.stringify(kind)} is invalid; valid kinds: ${GROUP_KINDS.join(', ')}`);
  }
  if (!Array.isArray(ranks) || ranks.length === 0) {
    throw new TypeError(`rank ${me}: ${kind} group ranks must be a non-empty array of global ranks, got ${JSON.stringify(ranks)}`);
  }
  for (const r of ranks) {
    if (!Number.isInteger(r) || r < 0 || r >= world) {
      throw new RangeError(`rank ${me}: ${kind} group [${ranks.join(',')}] holds rank ${String(r)}; ranks must be integers in [0, ${world})`);
    }
  }
  if (new Set(ranks).size !== ranks.length) {
    throw new RangeError(`rank ${me}: ${kind} group [${ranks.join(',')}] lists a rank twice; members must be distinct`);
  }
  const groupRank = ranks.indexOf(me);
  if (groupRank < 0) {
    throw new RangeError(`rank ${me}: cannot create ${kind} group [${ranks.join(',')}]: rank ${me} is not a member`);
  }
  return { id: `${kind}:${ranks.join(',')}`, groupRank };
}
