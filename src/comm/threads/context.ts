import type { Arena } from '../../tensor/arena.js';
import { createRankContext, type RankContext } from '../rank-context.js';
import type { Tracer } from '../trace.js';
import { ThreadGroup } from './group.js';
import type { Endpoint } from './transport.js';

/** A threads rank's context: groups over the rank's mesh endpoint. */
export function threadRankContext(endpoint: Endpoint, arena: Arena, tracer: Tracer, report: (msg: unknown) => void, stopRequested: () => boolean): RankContext {
  return createRankContext({
    rank: endpoint.rank,
    world: endpoint.world,
    arena,
    timeoutMs: endpoint.timeoutMs,
    tracer,
    report,
    stopRequested,
    rawGroup: (kind, ranks, id, groupRank) => new ThreadGroup(endpoint, { id, kind, ranks: Object.freeze([...ranks]) }, groupRank),
  });
}
