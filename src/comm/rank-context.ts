import type { Arena } from '../tensor/arena.js';
import { CommStats, countedGroup } from './counted-group.js';
import { checkGroupSpec } from './group-spec.js';
import type { CommCounters, GroupKind, ProcessGroup } from './process-group.js';
import type { Tracer } from './trace.js';

/** What a rank's entry function `run(ctx, args)` gets: its identity, memory and communication. */
export interface RankContext {
  readonly rank: number;
  readonly world: number;
  /** This rank's tensor memory, created in the rank's worker (DESIGN decision 2). */
  readonly arena: Arena;
  /** Bound in milliseconds on every blocking wait of this rank. */
  readonly timeoutMs: number;
  /**
   * A group over the given global ranks; group rank = index in `ranks` as given. Every member
   * must create it with the same kind and list (that pair is its identity) and call its
   * collectives in the same order. Creating it again yields the same group.
   * @throws RangeError/TypeError if the kind is unknown, a rank is out of range or repeated, or this rank is not a member.
   */
  newGroup(kind: GroupKind, ranks: readonly number[]): ProcessGroup;
  /** Snapshot of this rank's traffic, summed over all groups of a kind. */
  counters(): Record<GroupKind, CommCounters>;
  resetCounters(): void;
  /** This rank's timeline of compute and communication spans (disabled unless the launch asked for a trace). */
  readonly tracer: Tracer;
  /** Post `msg` (structured-cloneable) to the launcher's onReport; never blocks. */
  report(msg: unknown): void;
  /** Whether the launcher was asked to stop (Launcher.requestStop: Ctrl-C, SIGTERM) in this rank's process; ranks must agree on it collectively. */
  stopRequested(): boolean;
}

/** What a backend gives a rank: identity, memory and a way to make raw (uncounted) groups. */
export interface RankTransport {
  readonly rank: number;
  readonly world: number;
  readonly arena: Arena;
  readonly timeoutMs: number;
  readonly tracer: Tracer;
  report(msg: unknown): void;
  stopRequested(): boolean;
  /**
   * The backend's group over `ranks` (already checked by {@link checkGroupSpec}); `id` is its
   * identity and `groupRank` this rank's index. Called once per id.
   */
  rawGroup(kind: GroupKind, ranks: readonly number[], id: string, groupRank: number): ProcessGroup;
}

/**
 * The RankContext of every backend: groups are checked, made once per identity (kind and member
 * list: MPI communicators are costly to create and every member must create them together) and
 * wrapped with counting and tracing (src/comm/counted-group.ts).
 */
export function createRankContext(t: RankTransport): RankContext {
  const stats = new CommStats(t.tracer);
  const groups = new Map<string, ProcessGroup>();
  return {
    rank: t.rank,
    world: t.world,
    arena: t.arena,
    timeoutMs: t.timeoutMs,
    tracer: t.tracer,
    report: (msg) => t.report(msg),
    stopRequested: () => t.stopRequested(),
    newGroup(kind, ranks) {
      const { id, groupRank } = checkGroupSpec(t.rank, t.world, kind, ranks);
      let group = groups.get(id);
      if (group === undefined) {
        group = countedGroup(t.rawGroup(kind, ranks, id, groupRank), stats);
        groups.set(id, group);
      }
      return group;
    },
    counters: () => stats.snapshot(),
    resetCounters: () => stats.reset(),
  };
}
