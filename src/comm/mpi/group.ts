import { performance } from 'node:perf_hooks';
import { CommTimeoutError } from '../../errors.js';
import { chunkBounds } from '../chunks.js';
import type { CommRequest, GroupKind, ProcessGroup } from '../process-group.js';
import { checkTag } from '../tags.js';
import type { Comm, MpiLibrary, MpiStatus, Request } from './library.js';

/** Memory MPI may keep a pointer into until a request completes (library.ts: SharedArrayBuffer views only). */
function isStable(buf: Float32Array): boolean {
  return buf.buffer instanceof SharedArrayBuffer;
}

function overlaps(a: Float32Array, b: Float32Array): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

function stableCopy(length: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * length));
}

/**
 * How long a rank waits between MPI_Test polls: a few tight polls (a message that is about to
 * land), then sleeps growing to 200 µs, so a waiting rank yields its core to the ranks still
 * computing (several ranks share a core on small machines) while adding at most ~0.2 ms to a
 * wait. Open MPI progresses TCP and shared-memory transfers inside MPI_Test.
 */
const SPIN_POLLS = 64;
const MAX_SLEEP_MS = 0.2;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * A ProcessGroup of the `mpi` backend (docs/comm.md): one MPI communicator over the members,
 * made once per group identity by MPI_Comm_create_group (collective over the members only, so
 * ranks outside the group take no part). Point-to-point calls are MPI_Isend/MPI_Irecv on the
 * caller's memory — arena tensors live in a shared WebAssembly.Memory, which MPI can address
 * until the request completes, so they travel without a copy; any other buffer is staged
 * through a SharedArrayBuffer. Collectives are Open MPI's own nonblocking collectives
 * (MPI_Ialltoall, MPI_Iallgather(v), MPI_Ireduce_scatter, MPI_Ibcast, MPI_Ibarrier), so every
 * wait polls MPI_Test against the rank's timeout instead of blocking in MPI_Wait. allReduce is
 * a reduce-scatter over {@link chunkBounds} then an all-gather: each chunk is summed once, by its
 * owner, so every member holds bitwise the same result (the ProcessGroup contract), which
 * MPI_Allreduce does not promise. Uncounted: the rank context wraps it.
 */
export class MpiGroup implements ProcessGroup {
  readonly size: number;

  /**
   * @param comm the members' communicator; its rank order is `ranks`' order.
   * @param worldRank this process's rank in MPI_COMM_WORLD, for error messages.
   */
  constructor(
    private readonly lib: MpiLibrary,
    private readonly comm: Comm,
    readonly kind: GroupKind,
    readonly ranks: readonly number[],
    readonly rank: number,
    private readonly worldRank: number,
    private readonly timeoutMs: number,
  ) {
    this.size = ranks.length;
  }

  send(buf: Float32Array, peer: number, tag: number): void {
    this.isend(buf, peer, tag).wait();
  }

  recv(buf: Float32Array, peer: number, tag: number): void {
    this.irecv(buf, peer, tag).wait();
  }

  /** A buffer outside a SharedArrayBuffer is copied at the post, so it may change right after. */
  isend(buf: Float32Array, peer: number, tag: number): CommRequest {
    this.checkPointToPoint('isend', buf, peer, tag);
    const data = isStable(buf) ? buf : stableCopy(buf.length);
    if (data !== buf) data.set(buf);
    const req = this.lib.isend(data, peer, tag, this.comm);
    return this.request(req, 'send', peer, tag, () => {});
  }

  irecv(buf: Float32Array, peer: number, tag: number): CommRequest {
    this.checkPointToPoint('irecv', buf, peer, tag);
    const into = isStable(buf) ? buf : stableCopy(buf.length);
    const req = this.lib.irecv(into, peer, tag, this.comm);
    return this.request(req, 'recv', peer, tag, (status) => {
      if (status.bytes !== buf.byteLength) {
        throw new RangeError(
          `rank ${this.worldRank}: recv in ${this.describe()} received ${status.bytes / 4} elements (${status.bytes} bytes) from rank ${this.ranks[peer]} with tag ${tag}, ` +
            `but the receive buffer holds ${buf.length} elements (${buf.byteLength} bytes)`,
        );
      }
      if (into !== buf) buf.set(into);
    });
  }

  /** send and recv: [size·c]; chunk g of send goes to group rank g, chunk g of recv comes from it. In place allowed. */
  allToAll(send: Float32Array, recv: Float32Array): void {
    if (send.length !== recv.length || send.length % this.size !== 0) {
      throw new RangeError(`allToAll in ${this.describe()}: send (${send.length} elements) and recv (${recv.length}) must have equal length divisible by the group size ${this.size}`);
    }
    this.collective('allToAll', [send], recv, (s, r) => this.lib.ialltoall(s[0]!, r, send.length / this.size, this.comm));
  }

  allGather(send: Float32Array, recv: Float32Array): void {
    if (recv.length !== send.length * this.size) {
      throw new RangeError(`allGather in ${this.describe()}: recv holds ${recv.length} elements but must hold size × send = ${this.size} × ${send.length} = ${this.size * send.length}`);
    }
    this.collective('allGather', [send], recv, (s, r) => this.lib.iallgather(s[0]!, r, this.comm));
  }

  reduceScatter(send: Float32Array, recv: Float32Array): void {
    if (send.length !== recv.length * this.size) {
      throw new RangeError(`reduceScatter in ${this.describe()}: send holds ${send.length} elements but must hold size × recv = ${this.size} × ${recv.length} = ${this.size * recv.length}`);
    }
    const counts = new Array<number>(this.size).fill(recv.length);
    this.collective('reduceScatter', [send], recv, (s, r) => this.lib.ireduceScatter(s[0]!, r, counts, this.comm));
  }

  allReduce(buf: Float32Array): void {
    if (this.size === 1) return;
    const bounds = chunkBounds(buf.length, this.size);
    const counts = bounds.slice(1).map((b, g) => b - bounds[g]!);
    const mine = stableCopy(counts[this.rank]!);
    this.collective('allReduce', [buf], mine, (s, r) => this.lib.ireduceScatter(s[0]!, r, counts, this.comm));
    this.collective('allReduce', [mine], buf, (s, r) => this.lib.iallgatherv(s[0]!, r, counts, bounds.slice(0, -1), this.comm));
  }

  broadcast(buf: Float32Array, root: number): void {
    this.checkPeer('broadcast', root, 'root');
    this.collective('broadcast', [], buf, (_, r) => this.lib.ibcast(r, root, this.comm));
  }

  barrier(): void {
    this.wait(this.lib.ibarrier(this.comm), 'barrier', undefined, undefined);
  }

  /**
   * Run one nonblocking collective to completion. Inputs outside a SharedArrayBuffer, or sharing
   * memory with the output (MPI forbids aliased buffers without MPI_IN_PLACE), are copied first;
   * an output outside one is received into a copy and copied back. `recv` is also the buffer
   * of in-place collectives (broadcast).
   */
  private collective(op: string, inputs: Float32Array[], recv: Float32Array, post: (inputs: Float32Array[], recv: Float32Array) => Request): void {
    const staged = inputs.map((x) => {
      if (isStable(x) && !overlaps(x, recv)) return x;
      const copy = stableCopy(x.length);
      copy.set(x);
      return copy;
    });
    const out = isStable(recv) ? recv : stableCopy(recv.length);
    if (out !== recv && inputs.length === 0) out.set(recv);
    this.wait(post(staged, out), op, undefined, undefined);
    if (out !== recv) recv.set(out);
  }

  private request(req: Request, op: 'send' | 'recv', peer: number, tag: number, done: (status: MpiStatus) => void): CommRequest {
    let complete = false;
    return {
      wait: () => {
        if (complete) return;
        done(this.wait(req, op, peer, tag));
        complete = true;
      },
    };
  }

  /**
   * Poll `req` until it completes or the rank's timeout passes.
   * @throws CommTimeoutError naming this rank, the operation, the group, the peer and the tag; the request is cancelled first.
   */
  private wait(req: Request, op: string, peer: number | undefined, tag: number | undefined): MpiStatus {
    const deadline = performance.now() + this.timeoutMs;
    let sleepMs = 0.01;
    for (let polls = 0; ; polls++) {
      const status = this.lib.test(req);
      if (status !== null) return status;
      if (polls < SPIN_POLLS) continue;
      if (performance.now() >= deadline) {
        if (peer !== undefined) this.lib.cancel(req);
        const what =
          peer === undefined
            ? `for every member of ${this.describe()} to join it`
            : `${op === 'send' ? 'for rank' : 'for a message from rank'} ${this.ranks[peer]} (${this.describe()}, tag ${tag})`;
        throw new CommTimeoutError(`rank ${this.worldRank}: timed out after ${this.timeoutMs} ms waiting in ${op} ${what} (mpi backend)`);
      }
      Atomics.wait(sleeper, 0, 0, sleepMs);
      sleepMs = Math.min(MAX_SLEEP_MS, sleepMs * 2);
    }
  }

  private describe(): string {
    return `group ${this.kind} [${this.ranks.join(',')}]`;
  }

  private checkPointToPoint(op: string, buf: Float32Array, peer: number, tag: number): void {
    if (!(buf instanceof Float32Array)) {
      throw new TypeError(`${op} in ${this.describe()}: buf must be a Float32Array, got ${Object.prototype.toString.call(buf)}`);
    }
    this.checkPeer(op, peer, 'peer');
    checkTag(op, this.describe(), tag);
  }

  private checkPeer(op: string, peer: number, field: string): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.size) {
      throw new RangeError(`${op} in ${this.describe()}: ${field} ${String(peer)} is invalid; it is a group rank in [0, ${this.size})`);
    }
  }
}
