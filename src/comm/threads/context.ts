import type { Arena } from '../../tensor/arena.js';
import { copyCountersByKind } from '../counters.js';
import type { RankContext } from '../rank-context.js';
import { ThreadGroup } from './group.js';
import type { Endpoint } from './transport.js';

export type { RankContext };

export function createRankContext(endpoint: Endpoint, arena: Arena, report: (msg: unknown) => void): RankContext {
  return {
    rank: endpoint.rank,
    world: endpoint.world,
    arena,
    timeoutMs: endpoint.timeoutMs,
    newGroup: (kind, ranks) => new ThreadGroup(endpoint, kind, ranks),
    counters: () => copyCountersByKind(endpoint.countersByKind),
    resetCounters: () => endpoint.resetCounters(),
    tracer: endpoint.tracer,
    report,
  };
}
