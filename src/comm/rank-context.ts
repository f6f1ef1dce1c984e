import type { Arena } from '../tensor/arena.js';
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
}
