import { chunkBounds } from '../chunks.js';
import type { CommRequest, GroupKind, ProcessGroup } from '../process-group.js';
import { checkTag } from '../tags.js';
import { describeGroup, describeTag, type Endpoint, type GroupAddress } from './transport.js';

const EMPTY = new Float32Array(0);
const DONE: CommRequest = { wait() {} };

function equalBounds(chunk: number, size: number): number[] {
  return Array.from({ length: size + 1 }, (_, g) => g * chunk);
}

/**
 * A ProcessGroup of the `threads` backend (src/comm/process-group.ts), uncounted: the rank
 * context wraps it (src/comm/counted-group.ts). Identity is kind + member list, so members agree
 * on it without talking. Collectives post every send before waiting on any receive (no deadlock
 * whatever the order ranks arrive in), use a fresh internal tag each (never mixing with each
 * other or with user tags), and do no messaging in a size-1 group. Every blocking wait is
 * bounded by the rank's timeout (CommTimeoutError).
 */
export class ThreadGroup implements ProcessGroup {
  readonly kind: GroupKind;
  readonly ranks: readonly number[];
  readonly rank: number;
  readonly size: number;

  /** @param address the group's identity and members, checked by checkGroupSpec; `groupRank` is this rank's index in them. */
  constructor(
    private readonly endpoint: Endpoint,
    private readonly address: GroupAddress,
    groupRank: number,
  ) {
    this.kind = address.kind;
    this.ranks = address.ranks;
    this.rank = groupRank;
    this.size = address.ranks.length;
  }

  send(buf: Float32Array, peer: number, tag: number): void {
    this.checkPointToPoint('send', buf, peer, tag);
    this.endpoint.send(this.address, this.ranks[peer]!, tag, buf);
  }

  recv(buf: Float32Array, peer: number, tag: number): void {
    this.checkPointToPoint('recv', buf, peer, tag);
    this.receiveInto('recv', buf, 0, buf.length, peer, tag);
  }

  /** Sends are eager (buffered), so the request is complete on return and `buf` may be reused at once. */
  isend(buf: Float32Array, peer: number, tag: number): CommRequest {
    this.send(buf, peer, tag);
    return DONE;
  }

  /** The returned request's first wait() performs the bounded receive into `buf`; later waits return at once. */
  irecv(buf: Float32Array, peer: number, tag: number): CommRequest {
    this.checkPointToPoint('irecv', buf, peer, tag);
    let done = false;
    return {
      wait: () => {
        if (done) return;
        this.receiveInto('irecv', buf, 0, buf.length, peer, tag);
        done = true;
      },
    };
  }

  /** send and recv: [size·c]; chunk g of send goes to group rank g, chunk g of recv comes from it. In place allowed. */
  allToAll(send: Float32Array, recv: Float32Array): void {
    this.checkBuffer('allToAll', 'send', send);
    this.checkBuffer('allToAll', 'recv', recv);
    if (send.length !== recv.length || send.length % this.size !== 0) {
      throw new RangeError(
        `allToAll in ${describeGroup(this.address)}: send (${send.length} elements) and recv (${recv.length}) must have equal length divisible by the group size ${this.size}`,
      );
    }
    const c = send.length / this.size;
    const me = this.rank;
    const own = send.slice(me * c, (me + 1) * c);
    this.exchange('allToAll', (g) => send.subarray(g * c, (g + 1) * c), equalBounds(c, this.size), recv);
    recv.set(own, me * c);
  }

  /** send: [c], recv: [size·c] = every member's send in group-rank order. */
  allGather(send: Float32Array, recv: Float32Array): void {
    this.checkBuffer('allGather', 'send', send);
    this.checkBuffer('allGather', 'recv', recv);
    if (recv.length !== send.length * this.size) {
      throw new RangeError(
        `allGather in ${describeGroup(this.address)}: recv holds ${recv.length} elements but must hold size × send = ${this.size} × ${send.length} = ${this.size * send.length}`,
      );
    }
    this.allGatherChunks('allGather', send, equalBounds(send.length, this.size), recv);
  }

  /**
   * send: [size·c], recv: [c] = Σ over members of their chunk `rank`, added in ascending
   * group-rank order in f32, so the result does not depend on message arrival order.
   */
  reduceScatter(send: Float32Array, recv: Float32Array): void {
    this.checkBuffer('reduceScatter', 'send', send);
    this.checkBuffer('reduceScatter', 'recv', recv);
    if (send.length !== recv.length * this.size) {
      throw new RangeError(
        `reduceScatter in ${describeGroup(this.address)}: send holds ${send.length} elements but must hold size × recv = ${this.size} × ${recv.length} = ${this.size * recv.length}`,
      );
    }
    this.reduceScatterChunks('reduceScatter', send, equalBounds(recv.length, this.size), recv);
  }

  /**
   * In-place sum over members of buf [n], any n: reduceScatter over chunks of {@link chunkBounds}
   * then allGather. Each chunk is summed once by its owner and copied to the others, so the
   * result is bitwise identical on every member. Messages per member: 2·(size − 1).
   */
  allReduce(buf: Float32Array): void {
    this.checkBuffer('allReduce', 'buf', buf);
    if (this.size === 1) return;
    const bounds = chunkBounds(buf.length, this.size);
    const mine = new Float32Array(bounds[this.rank + 1]! - bounds[this.rank]!);
    this.reduceScatterChunks('allReduce', buf, bounds, mine);
    this.allGatherChunks('allReduce', mine, bounds, buf);
  }

  /** buf on every member := buf of group rank `root`. The root sends size − 1 messages. */
  broadcast(buf: Float32Array, root: number): void {
    this.checkBuffer('broadcast', 'buf', buf);
    this.checkPeer('broadcast', root, 'root');
    if (this.size === 1) return;
    const tag = this.endpoint.nextCollectiveTag(this.address.id);
    if (this.rank === root) {
      for (let g = 0; g < this.size; g++) if (g !== root) this.endpoint.send(this.address, this.ranks[g]!, tag, buf);
    } else {
      this.receiveInto('broadcast', buf, 0, buf.length, root, tag);
    }
  }

  /** Returns once every member has entered: an empty message to and from each other member. */
  barrier(): void {
    this.exchange('barrier', () => EMPTY, equalBounds(0, this.size), EMPTY);
  }

  /**
   * The all-pairs step of every collective: send chunkFor(g) to each other member g, then receive
   * member g's message into recv[bounds[g], bounds[g+1]), checking its length. The own slot is
   * left to the caller.
   */
  private exchange(op: string, chunkFor: (g: number) => Float32Array, bounds: readonly number[], recv: Float32Array): void {
    if (this.size === 1) return;
    const tag = this.endpoint.nextCollectiveTag(this.address.id);
    const n = this.size;
    const me = this.rank;
    for (let k = 1; k < n; k++) {
      const g = (me + k) % n;
      this.endpoint.send(this.address, this.ranks[g]!, tag, chunkFor(g));
    }
    for (let k = 1; k < n; k++) {
      const g = (me - k + n) % n;
      this.receiveInto(op, recv, bounds[g]!, bounds[g + 1]!, g, tag);
    }
  }

  private allGatherChunks(op: string, mine: Float32Array, bounds: readonly number[], recv: Float32Array): void {
    const own = mine.slice();
    this.exchange(op, () => mine, bounds, recv);
    recv.set(own, bounds[this.rank]!);
  }

  private reduceScatterChunks(op: string, send: Float32Array, bounds: readonly number[], recv: Float32Array): void {
    const n = this.size;
    const me = this.rank;
    const lo = bounds[me]!;
    const c = bounds[me + 1]! - lo;
    // Contribution of member g sits at [g·c, (g+1)·c): kept apart so the sum runs in group-rank order.
    const parts = new Float32Array(n * c);
    parts.set(send.subarray(lo, lo + c), me * c);
    this.exchange(op, (g) => send.subarray(bounds[g]!, bounds[g + 1]!), equalBounds(c, n), parts);
    recv.set(parts.subarray(0, c));
    for (let g = 1; g < n; g++) {
      const off = g * c;
      for (let i = 0; i < c; i++) recv[i]! += parts[off + i]!;
    }
  }

  /** Receive from group rank `peer` into buf[lo, hi), requiring the message to be exactly that long. */
  private receiveInto(op: string, buf: Float32Array, lo: number, hi: number, peer: number, tag: number): void {
    const payload = this.endpoint.receive(this.address, this.ranks[peer]!, tag, op);
    if (payload.length !== hi - lo) {
      throw new RangeError(
        `rank ${this.endpoint.rank}: ${op} in ${describeGroup(this.address)} received ${payload.length} elements (${payload.byteLength} bytes) ` +
          `from rank ${this.ranks[peer]} with ${describeTag(tag)}, but the receive buffer holds ${hi - lo} elements (${(hi - lo) * 4} bytes)`,
      );
    }
    buf.set(payload, lo);
  }

  private checkPointToPoint(op: string, buf: Float32Array, peer: number, tag: number): void {
    this.checkBuffer(op, 'buf', buf);
    this.checkPeer(op, peer, 'peer');
    checkTag(op, describeGroup(this.address), tag);
  }

  private checkPeer(op: string, peer: number, field: string): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.size) {
      throw new RangeError(`${op} in ${describeGroup(this.address)}: ${field} ${String(peer)} is invalid; it is a group rank in [0, ${this.size})`);
    }
  }

  private checkBuffer(op: string, field: string, buf: unknown): void {
    if (!(buf instanceof Float32Array)) {
      throw new TypeError(`${op} in ${describeGroup(this.address)}: ${field} must be a Float32Array, got ${Object.prototype.toString.call(buf)}`);
    }
  }
}
