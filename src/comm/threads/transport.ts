import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { CommTimeoutError } from '../../errors.js';
import type { GroupKind } from '../process-group.js';
import { TAG_LIMIT } from '../tags.js';

/** The group a message travels in: its identity for matching and its names for errors. */
export interface GroupAddress {
  /** `kind:r0,r1,...` — every member derives the same id from kind and ranks, without coordination. */
  readonly id: string;
  readonly kind: GroupKind;
  /** Global ranks of the members. */
  readonly ranks: readonly number[];
}

/** What travels over a MessagePort: group id, tag and the payload bytes (the source is the port). */
interface Envelope {
  g: string;
  t: number;
  d: ArrayBuffer;
}

function matchKey(groupId: string, src: number, tag: number): string {
  return `${groupId}|${src}|${tag}`;
}

/** How a tag reads in an error: user tags as given, collective tags by their sequence number. */
export function describeTag(tag: number): string {
  return tag < TAG_LIMIT ? `tag ${tag}` : `collective #${tag - TAG_LIMIT}`;
}

export function describeGroup(group: GroupAddress): string {
  return `group ${group.kind} [${group.ranks.join(',')}]`;
}

/**
 * One rank's end of the full mesh (docs/comm.md): a MessagePort per peer plus a shared Int32Array
 * doorbell with one slot per rank. Sends are eager — the payload is copied into a fresh
 * ArrayBuffer that is transferred, so the sender's buffer is free as soon as `send` returns —
 * and receives block synchronously with `Atomics.wait` on this rank's doorbell slot, bounded by
 * `timeoutMs` (DESIGN decision 8).
 *
 * DESIGN decision 2 allows peers to copy straight between shared arena buffers; this eager-copy
 * transport is the decided first version: one copy into the message and one out of it.
 *
 * Matching: a receive takes the first message, in arrival order, with the same (group id,
 * source global rank, tag). Messages that arrive for other receives wait in a local queue;
 * messages to self never touch a port. Counting and tracing are not the transport's: they
 * wrap every group (src/comm/counted-group.ts).
 */
export class Endpoint {
  readonly rank: number;
  readonly world: number;
  readonly timeoutMs: number;
  private readonly ports: readonly (MessagePort | null)[];
  private readonly doorbell: Int32Array;
  /** Arrived, not yet received payloads by match key; each queue is in arrival order. */
  private readonly unmatched = new Map<string, Float32Array[]>();
  private readonly collectiveSeq = new Map<string, number>();

  /**
   * @param ports ports[p] is the port to global rank p; ports[rank] is null.
   * @param doorbell Int32Array over a SharedArrayBuffer of `world` slots, shared by all ranks.
   */
  constructor(rank: number, world: number, ports: readonly (MessagePort | null)[], doorbell: Int32Array, timeoutMs: number) {
    this.rank = rank;
    this.world = world;
    this.ports = ports;
    this.doorbell = doorbell;
    this.timeoutMs = timeoutMs;
  }

  /**
   * The tag for a group's next collective. Sequence numbers are kept per group id, so every
   * member (calling collectives in the same order) picks the same tag, and successive
   * collectives never take each other's messages or those of user tags.
   */
  nextCollectiveTag(groupId: string): number {
    const seq = this.collectiveSeq.get(groupId) ?? 0;
    this.collectiveSeq.set(groupId, seq + 1);
    return TAG_LIMIT + seq;
  }

  /** Post a copy of `data` to global rank `dst`; never blocks. */
  send(group: GroupAddress, dst: number, tag: number, data: Float32Array): void {
    const copy = data.slice();
    if (dst === this.rank) {
      this.enqueue(matchKey(group.id, dst, tag), copy);
      return;
    }
    const envelope: Envelope = { g: group.id, t: tag, d: copy.buffer };
    this.ports[dst]!.postMessage(envelope, [copy.buffer]);
    // The message is in the receiver's port queue once postMessage returns, so ringing after it
    // guarantees a receiver that wakes on this ring finds it.
    Atomics.add(this.doorbell, dst, 1);
    Atomics.notify(this.doorbell, dst);
  }

  /**
   * Block until the message (group, global rank `src`, `tag`) has arrived and return its payload.
   * @param op the operation named in a timeout error (`recv`, `allToAll`, ...).
   * @throws CommTimeoutError after `timeoutMs` naming this rank, op, group, peer, tag and timeout.
   */
  receive(group: GroupAddress, src: number, tag: number, op: string): Float32Array {
    const key = matchKey(group.id, src, tag);
    let deadline = -1;
    for (;;) {
      // Read the doorbell before draining: a ring after this read changes the value, so the
      // wait below returns at once instead of sleeping past a message.
      const seen = Atomics.load(this.doorbell, this.rank);
      this.drain();
      const payload = this.take(key);
      if (payload !== undefined) return payload;
      const now = performance.now();
      if (deadline < 0) deadline = now + this.timeoutMs;
      if (now >= deadline) {
        throw new CommTimeoutError(
          `rank ${this.rank}: timed out after ${this.timeoutMs} ms waiting in ${op} for a message from rank ${src} ` +
            `(${describeGroup(group)}, ${describeTag(tag)})${this.describeUnmatched()}`,
        );
      }
      Atomics.wait(this.doorbell, this.rank, seen, deadline - now);
    }
  }

  private drain(): void {
    for (let peer = 0; peer < this.ports.length; peer++) {
      const port = this.ports[peer];
      if (port === null || port === undefined) continue;
      for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
        const env = m.message as Envelope;
        this.enqueue(matchKey(env.g, peer, env.t), new Float32Array(env.d));
      }
    }
  }

  private enqueue(key: string, payload: Float32Array): void {
    const queue = this.unmatched.get(key);
    if (queue === undefined) this.unmatched.set(key, [payload]);
    else queue.push(payload);
  }

  private take(key: string): Float32Array | undefined {
    const queue = this.unmatched.get(key);
    if (queue === undefined) return undefined;
    const payload = queue.shift();
    if (queue.length === 0) this.unmatched.delete(key);
    return payload;
  }

  /** Messages that arrived but match no receive so far: the usual clue when ranks post different message lists. */
  private describeUnmatched(): string {
    if (this.unmatched.size === 0) return '; no unmatched messages had arrived';
    const shown = [...this.unmatched.entries()].slice(0, 5).map(([key, queue]) => {
      const [groupId, src, tag] = key.split('|');
      return `${queue.length} from rank ${src} in group ${groupId} with ${describeTag(Number(tag))}`;
    });
    const more = this.unmatched.size > shown.length ? `, and ${this.unmatched.size - shown.length} more kinds` : '';
    return `; unmatched messages that had arrived: ${shown.join(', ')}${more}`;
  }
}
