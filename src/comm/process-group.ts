/**
 * The communication interface every backend implements (DESIGN.md, `src/comm/`). All calls
 * are blocking or return a request whose `wait()` blocks; every wait is bounded by the
 * backend's timeout and throws a CommTimeoutError naming the operation, group and peer.
 * Buffers are plain Float32Array views (usually of arena tensors). Peers are GROUP ranks.
 */

/** What a group is for; counters are kept per kind. */
export type GroupKind = 'world' | 'dp' | 'sp' | 'hp' | 'cp' | 'inner' | 'outer';

export const GROUP_KINDS: readonly GroupKind[] = ['world', 'dp', 'sp', 'hp', 'cp', 'inner', 'outer'];

export interface CommRequest {
  /** Block until the operation has completed (bounded by the timeout). */
  wait(): void;
}

/** Traffic of one group kind as seen by one rank. */
export interface CommCounters {
  bytesSent: number;
  messagesSent: number;
  bytesReceived: number;
  messagesReceived: number;
  /** Milliseconds this rank spent blocked waiting for this kind's messages. */
  waitMs: number;
}

export interface ProcessGroup {
  readonly kind: GroupKind;
  /** Global ranks of the members, ascending (algorithms.md §1: group rank follows global rank) unless a ring order was given. */
  readonly ranks: readonly number[];
  /** This rank's index in `ranks`. */
  readonly rank: number;
  readonly size: number;

  send(buf: Float32Array, peer: number, tag: number): void;
  recv(buf: Float32Array, peer: number, tag: number): void;
  isend(buf: Float32Array, peer: number, tag: number): CommRequest;
  irecv(buf: Float32Array, peer: number, tag: number): CommRequest;

  /** send holds `size` equal chunks; chunk g goes to group rank g; recv chunk g comes from group rank g. */
  allToAll(send: Float32Array, recv: Float32Array): void;
  /** recv = concatenation of every member's send, in group-rank order. */
  allGather(send: Float32Array, recv: Float32Array): void;
  /** recv (length send.length / size) = element-wise sum over members of chunk `rank` of their send. */
  reduceScatter(send: Float32Array, recv: Float32Array): void;
  /** In-place element-wise sum over members; the result is bitwise identical on every member. */
  allReduce(buf: Float32Array): void;
  broadcast(buf: Float32Array, root: number): void;
  barrier(): void;
}
