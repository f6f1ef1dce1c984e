import type { ProcessGroup } from '../comm/process-group.js';
import type { RankContext } from '../comm/rank-context.js';
import type { ParallelDims } from './dims.js';

/**
 * Which ranks share one copy of the model states (hybrid ZeRO, LoongTrain paper): "world" = all
 * dp × sp ranks of the model replica; "sp" = the rank's SP block (hp × cp ranks), replicated
 * over dp; "dp" = the ranks with the same (h, c) in every SP block, replicated over sp.
 */
export type ZeroShardGroup = 'world' | 'sp' | 'dp';
export const ZERO_SHARD_GROUPS: readonly ZeroShardGroup[] = ['world', 'sp', 'dp'];

/** A group as ranks create it: kind and global members. */
export interface GroupSpec {
  kind: 'world' | 'sp' | 'dp';
  ranks: number[];
}

/**
 * The ZeRO shard group of `rank` and its replica group: the ranks holding the SAME shard in the
 * other shard groups, across which a sharded gradient is all-reduced (stages 2, 3). Group rank
 * = shard index, and the replica group of shard index i holds index i of every shard group.
 * Stage 0 shards nothing: a shard group of this rank alone.
 */
export function zeroGroups(dims: ParallelDims, rank: number, stage: number, shardGroup: ZeroShardGroup): { shard: GroupSpec; replicas: GroupSpec } {
  const self: GroupSpec = { kind: 'dp', ranks: [rank] };
  if (stage === 0) return { shard: self, replicas: self };
  switch (shardGroup) {
    case 'world':
      return { shard: { kind: 'world', ranks: Array.from({ length: dims.world }, (_, i) => i) }, replicas: self };
    case 'sp':
      return { shard: { kind: 'sp', ranks: dims.spGroup(rank) }, replicas: { kind: 'dp', ranks: dims.dpGroup(rank) } };
    case 'dp':
      return { shard: { kind: 'dp', ranks: dims.dpGroup(rank) }, replicas: { kind: 'sp', ranks: dims.spGroup(rank) } };
  }
}

/** Every group one rank talks over, built once from ParallelDims (DESIGN.md "Next layers"); nothing else builds groups. */
export interface RankGroups {
  /** All dp × hp × cp ranks: gradient and loss sums, checkpoints, stop agreement. */
  world: ProcessGroup;
  /** The head-parallel group (Ulysses all-to-all). */
  hp: ProcessGroup;
  /** The context-parallel group, in ring order (algorithms.md §1). */
  cp: ProcessGroup;
  /** Double-Ring-Attention's inner and outer rings; absent when innerRingSize = cp (one plain ring over cp, counted as 'cp'). */
  inner?: ProcessGroup;
  outer?: ProcessGroup;
  /** ZeRO's shard group and the replicas of this rank's shard. */
  zeroShard: ProcessGroup;
  zeroReplicas: ProcessGroup;
}

/**
 * Create this rank's groups, in the same order on every rank (MPI communicators are created
 * collectively by their members).
 * @param zero ZeRO stage (0–3) and shard group; stage 0 gives size-1 ZeRO groups.
 * @throws Error when a group's size differs from the layout (F15: a layout is never silently shrunk).
 */
export function buildRankGroups(ctx: Pick<RankContext, 'rank' | 'world' | 'newGroup'>, dims: ParallelDims, zero: { stage: number; shardGroup: ZeroShardGroup }): RankGroups {
  const r = ctx.rank;
  const world = ctx.newGroup('world', Array.from({ length: ctx.world }, (_, i) => i));
  const hp = ctx.newGroup('hp', dims.hpGroup(r));
  const cp = ctx.newGroup('cp', dims.cpGroup(r));
  if (hp.size !== dims.hp || cp.size !== dims.cp || world.size !== dims.world) {
    throw new Error(`rank ${r}: effective group sizes hp=${hp.size}, cp=${cp.size}, world=${world.size} differ from the requested layout ${dims}`);
  }
  const rings = dims.innerRingSize === dims.cp ? {} : { inner: ctx.newGroup('inner', dims.innerRing(r)), outer: ctx.newGroup('outer', dims.outerRing(r)) };
  const specs = zeroGroups(dims, r, zero.stage, zero.shardGroup);
  return { world, hp, cp, ...rings, zeroShard: ctx.newGroup(specs.shard.kind, specs.shard.ranks), zeroReplicas: ctx.newGroup(specs.replicas.kind, specs.replicas.ranks) };
}
