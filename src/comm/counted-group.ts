import { performance } from 'node:perf_hooks';
import { chunkBounds } from './chunks.js';
import { copyCountersByKind, zeroCountersByKind } from './counters.js';
import type { CommCounters, CommRequest, GroupKind, ProcessGroup } from './process-group.js';
import { nowMicros, type Tracer } from './trace.js';

/**
 * One rank's traffic record and timeline, shared by every group of the rank. Backends are only
 * transport: {@link countedGroup} wraps each of their groups so that every backend is counted
 * and traced the same way (DESIGN decision 7, docs/comm.md "Counters" and "Tracing").
 */
export class CommStats {
  private counters = zeroCountersByKind();

  constructor(readonly tracer: Tracer) {}

  /** A deep copy of the counters, so callers can keep a snapshot while counting goes on. */
  snapshot(): Record<GroupKind, CommCounters> {
    return copyCountersByKind(this.counters);
  }

  reset(): void {
    this.counters = zeroCountersByKind();
  }

  /** The live record of one kind (read on every use: reset() replaces it). */
  of(kind: GroupKind): CommCounters {
    return this.counters[kind];
  }
}

/**
 * Messages and payload bytes one member sends and receives in one operation, as the all-pairs
 * algorithms of docs/comm.md define them (so counts do not depend on the algorithm a backend
 * picks, e.g. Open MPI's tree or ring collectives): every member-to-member transfer is one
 * message, empty chunks included; transfers to oneself are not counted.
 */
interface Volume {
  messagesSent: number;
  bytesSent: number;
  messagesReceived: number;
  bytesReceived: number;
}

function volume(messagesSent: number, bytesSent: number, messagesReceived: number, bytesReceived: number): Volume {
  return { messagesSent, bytesSent, messagesReceived, bytesReceived };
}

/**
 * `raw` with counting and tracing: point-to-point calls count one message each (sends when
 * posted, receives when posted), collectives count their all-pairs volume, and the time spent in
 * every call that can block (recv, a request's wait, every collective) is added to `waitMs`.
 * With the tracer enabled, sends are "send" spans, blocking receives and waits "wait <op>"
 * spans, and each collective one span named after it, all of category "comm" with args
 * { group: kind, peer?: GLOBAL rank, bytes: payload bytes }. Size-1 groups move no message and
 * leave no trace. Argument errors are the raw group's.
 */
export function countedGroup(raw: ProcessGroup, stats: CommStats): ProcessGroup {
  return new CountedGroup(raw, stats);
}

class CountedGroup implements ProcessGroup {
  readonly kind: GroupKind;
  readonly ranks: readonly number[];
  readonly rank: number;
  readonly size: number;

  constructor(
    private readonly raw: ProcessGroup,
    private readonly stats: CommStats,
  ) {
    this.kind = raw.kind;
    this.ranks = raw.ranks;
    this.rank = raw.rank;
    this.size = raw.size;
  }

  send(buf: Float32Array, peer: number, tag: number): void {
    this.sendSpan(peer, buf, true, () => this.raw.send(buf, peer, tag));
  }

  recv(buf: Float32Array, peer: number, tag: number): void {
    this.blocking('wait recv', peer, buf.byteLength, () => this.raw.recv(buf, peer, tag));
    this.count(peer, volume(0, 0, 1, buf.byteLength));
  }

  isend(buf: Float32Array, peer: number, tag: number): CommRequest {
    const req = this.sendSpan(peer, buf, false, () => this.raw.isend(buf, peer, tag));
    return { wait: () => this.blocking('wait isend', peer, buf.byteLength, () => req.wait()) };
  }

  irecv(buf: Float32Array, peer: number, tag: number): CommRequest {
    const req = this.raw.irecv(buf, peer, tag);
    this.count(peer, volume(0, 0, 1, buf.byteLength));
    return { wait: () => this.blocking('wait irecv', peer, buf.byteLength, () => req.wait()) };
  }

  allToAll(send: Float32Array, recv: Float32Array): void {
    const others = this.size - 1;
    const chunkBytes = send.byteLength / this.size;
    this.collective('allToAll', volume(others, others * chunkBytes, others, others * chunkBytes), () => this.raw.allToAll(send, recv));
  }

  allGather(send: Float32Array, recv: Float32Array): void {
    const others = this.size - 1;
    this.collective('allGather', volume(others, others * send.byteLength, others, others * send.byteLength), () => this.raw.allGather(send, recv));
  }

  reduceScatter(send: Float32Array, recv: Float32Array): void {
    const others = this.size - 1;
    this.collective('reduceScatter', volume(others, others * recv.byteLength, others, others * recv.byteLength), () => this.raw.reduceScatter(send, recv));
  }

  /** Counted as reduceScatter + allGather over {@link chunkBounds} (docs/comm.md), whatever the backend runs. */
  allReduce(buf: Float32Array): void {
    const others = this.size - 1;
    const bounds = chunkBounds(buf.length, this.size);
    const mine = 4 * (bounds[this.rank + 1]! - bounds[this.rank]!);
    const rest = buf.byteLength - mine;
    this.collective('allReduce', volume(2 * others, rest + others * mine, 2 * others, others * mine + rest), () => this.raw.allReduce(buf));
  }

  broadcast(buf: Float32Array, root: number): void {
    const others = this.size - 1;
    const v = this.rank === root ? volume(others, others * buf.byteLength, 0, 0) : volume(0, 0, 1, buf.byteLength);
    this.collective('broadcast', v, () => this.raw.broadcast(buf, root));
  }

  barrier(): void {
    const others = this.size - 1;
    this.collective('barrier', volume(others, 0, others, 0), () => this.raw.barrier());
  }

  private count(peer: number, v: Volume): void {
    if (peer !== this.rank) this.add(v);
  }

  private add(v: Volume): void {
    const c = this.stats.of(this.kind);
    c.messagesSent += v.messagesSent;
    c.bytesSent += v.bytesSent;
    c.messagesReceived += v.messagesReceived;
    c.bytesReceived += v.bytesReceived;
  }

  /** `blocking`: a send may block until the receiver takes it (rendezvous protocols), so its time is a wait; posting an isend is not. */
  private sendSpan<T>(peer: number, buf: Float32Array, blocking: boolean, body: () => T): T {
    const tracer = this.stats.tracer;
    const start = tracer.enabled ? nowMicros() : 0;
    const t0 = performance.now();
    const result = body();
    if (blocking && this.size > 1) this.stats.of(this.kind).waitMs += performance.now() - t0;
    this.count(peer, volume(1, buf.byteLength, 0, 0));
    if (tracer.enabled && peer !== this.rank) tracer.record('send', 'comm', start, { group: this.kind, peer: this.ranks[peer]!, bytes: buf.byteLength });
    return result;
  }

  private blocking(name: string, peer: number, bytes: number, body: () => void): void {
    this.waited(name, { group: this.kind, peer: this.ranks[peer]!, bytes }, body);
  }

  private collective(op: string, v: Volume, body: () => void): void {
    if (this.waited(op, { group: this.kind, bytes: v.bytesSent }, body)) this.add(v);
  }

  /**
   * Run `body`, a call that can block, adding its time to waitMs and recording it as a span
   * `name` with `args`. Size-1 groups move no message: nothing is counted or traced.
   * @returns whether it was counted.
   */
  private waited(name: string, args: Record<string, string | number>, body: () => void): boolean {
    if (this.size === 1) {
      body();
      return false;
    }
    const tracer = this.stats.tracer;
    const start = tracer.enabled ? nowMicros() : 0;
    const t0 = performance.now();
    try {
      body();
    } finally {
      this.stats.of(this.kind).waitMs += performance.now() - t0;
    }
    if (tracer.enabled) tracer.record(name, 'comm', start, args);
    return true;
  }
}
