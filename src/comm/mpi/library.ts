import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';

/*
 * A typed binding of Open MPI's C API through koffi, loaded once per thread: every worker_thread
 * loads the library on its own, but the process holds one copy of it and one MPI state, so only
 * the main thread initialises and finalises MPI.
 *
 * Open MPI's C ABI (4.x, soname libmpi.so.40):
 * - Handles (MPI_Comm, MPI_Request, MPI_Group, MPI_Datatype, MPI_Op, MPI_Errhandler) are pointers.
 *   koffi 3 represents pointers as BigInt, so every handle here is a bigint, and the predefined
 *   objects are the addresses of exported globals: `lib.symbol('ompi_mpi_comm_world')` returns
 *   `&ompi_mpi_comm_world` as a bigint, which is exactly what the C macro MPI_COMM_WORLD expands to.
 * - Out-parameters (the MPI_Request written by MPI_Isend, the int of MPI_Comm_rank, MPI_Status) go
 *   to a small per-thread scratch block whose address is computed once; MPI writes them only
 *   during the call, so a Request keeps its handle as a plain bigint and puts it back into the
 *   scratch cell for each MPI_Test. Nothing is allocated on the C heap, so nothing can leak.
 *
 * Zero copy: `koffi.address(view)` and a view passed for a `void *` parameter both resolve to the
 * view's own bytes (napi_get_buffer_info: the backing store's data plus byteOffset). Checked with
 * libc: memchr over a Float32Array subarray returns an address inside that subarray, and memset
 * through it writes bytes the JS view then reads, for plain ArrayBuffers, SharedArrayBuffers and a
 * shared WebAssembly.Memory alike. Nonblocking calls go further than the call itself: MPI keeps
 * the pointer until the request completes. A SharedArrayBuffer's backing store is never moved,
 * detached or resized (a shared WebAssembly.Memory reserves its maximum up front, so `grow` does
 * not move it either), which is why nonblocking calls accept only views of SharedArrayBuffers, and
 * each Request holds its views so that the garbage collector cannot free them while MPI owns them.
 */

/** An MPI communicator handle (MPI_Comm): opaque; a bigint address under koffi 3. */
export type Comm = unknown;
/** A pending nonblocking operation, returned by the i* calls: opaque, test it until complete. */
export type Request = unknown;

/** What MPI reports for a completed receive or a probed message. */
export interface MpiStatus {
  /** Rank of the sender in the communicator (meaningless for sends and collectives). */
  source: number;
  /** Tag of the message (meaningless for sends and collectives). */
  tag: number;
  /**
   * The MPI_ERROR field: 0, since a failed operation throws instead (MPI leaves this field alone
   * in single-completion calls, so it is cleared before each call rather than left stale).
   */
  error: number;
  /** Bytes received, or the size of the probed message in bytes. */
  bytes: number;
}

export interface MpiLibrary {
  /** The file name or path that loaded, e.g. 'libmpi.so.40'. */
  readonly path: string;
  /** MPI_COMM_WORLD. */
  readonly world: Comm;
  /** MPI_THREAD_MULTIPLE (3 in Open MPI): the level init() asks for. */
  readonly THREAD_MULTIPLE: number;
  /**
   * MPI_Init_thread(MPI_THREAD_MULTIPLE) unless MPI is already initialised, then
   * MPI_ERRORS_RETURN on MPI_COMM_WORLD and MPI_COMM_SELF so that failures come back as codes
   * (and as thrown MpiErrors here) instead of aborting the job. Idempotent.
   * @returns the thread level provided; compare with THREAD_MULTIPLE before using MPI from workers.
   * @throws Error when called off the main thread or after finalize(); MpiError if MPI fails.
   */
  init(): number;
  /**
   * MPI_Finalize, once every thread's requests are complete; a no-op when MPI is not running.
   * @throws Error off the main thread; MpiError if MPI fails.
   */
  finalize(): void;
  /** This process's rank in `comm`. @throws MpiError */
  rank(comm: Comm): number;
  /** Number of ranks in `comm`. @throws MpiError */
  size(comm: Comm): number;
  /**
   * A new communicator over `ranks` (ranks of `parent`; new rank = index in the list), built with
   * MPI_Comm_create_group: collective over the listed members only, which must all call it with
   * the same list and `tag` (0 ≤ tag ≤ 32767, the least MPI_TAG_UB).
   * @throws RangeError when this process is not in `ranks`; MpiError for duplicate or out-of-range ranks.
   */
  createGroup(parent: Comm, ranks: readonly number[], tag: number): Comm;
  /** MPI_Comm_dup: collective over `comm`. @throws MpiError */
  dup(comm: Comm): Comm;
  /**
   * Nonblocking send of the view's bytes (MPI_BYTE × byteLength) from the view's own memory.
   * The view must stay unmodified until the request completes.
   * @throws TypeError unless `buf` views a SharedArrayBuffer; RangeError past 2^31−1 bytes; MpiError
   */
  isend(buf: ArrayBufferView, dest: number, tag: number, comm: Comm): Request;
  /**
   * Nonblocking receive of at most byteLength bytes into the view's own memory (no copy: the data
   * is in the view once test() reports completion).
   * @throws TypeError unless `buf` views a SharedArrayBuffer; RangeError past 2^31−1 bytes; MpiError
   */
  irecv(buf: ArrayBufferView, source: number, tag: number, comm: Comm): Request;
  /**
   * MPI_Test: null while pending; the status once complete (MPI then frees the request, and later
   * calls return the same status).
   * @throws Error for a cancelled request; MpiError if the operation failed.
   */
  test(req: Request): MpiStatus | null;
  /**
   * MPI_Cancel + MPI_Request_free of a pending point-to-point request (cleanup after a timeout);
   * a no-op once the request has completed. The buffer may still be written if the message had
   * already matched, so do not reuse it for anything that matters.
   * @throws Error for a collective request (MPI forbids cancelling those: abort instead); MpiError
   */
  cancel(req: Request): void;
  /**
   * MPI_Ialltoall of float32: block j (countPerMember elements) of `send` goes to rank j, block i
   * of `recv` comes from rank i.
   * @throws RangeError when either array is shorter than countPerMember × size; TypeError as isend; MpiError
   */
  ialltoall(send: Float32Array, recv: Float32Array, countPerMember: number, comm: Comm): Request;
  /**
   * MPI_Iallgather of float32: recv[i × send.length …] is rank i's `send`.
   * @throws RangeError when recv is shorter than size × send.length; TypeError as isend; MpiError
   */
  iallgather(send: Float32Array, recv: Float32Array, comm: Comm): Request;
  /**
   * MPI_Iallgatherv of float32: rank i's `send` (counts[i] elements) lands at recv[displs[i] …].
   * @throws RangeError unless counts and displs have one entry per rank, send.length = counts[rank]
   *   and every block fits in recv; TypeError as isend; MpiError
   */
  iallgatherv(send: Float32Array, recv: Float32Array, counts: readonly number[], displs: readonly number[], comm: Comm): Request;
  /**
   * MPI_Ireduce_scatter of float32 with MPI_SUM: the element-wise sum of every rank's `send`
   * (sum(counts) elements), of which rank i receives counts[i] elements, in rank order.
   * @throws RangeError unless counts has one entry per rank, send holds sum(counts) elements and
   *   recv holds counts[rank]; TypeError as isend; MpiError
   */
  ireduceScatter(send: Float32Array, recv: Float32Array, counts: readonly number[], comm: Comm): Request;
  /** MPI_Ibcast of buf.length float32 from `root`; every rank passes the same length. @throws TypeError as isend; MpiError */
  ibcast(buf: Float32Array, root: number, comm: Comm): Request;
  /** MPI_Ibarrier. @throws MpiError */
  ibarrier(comm: Comm): Request;
  /** MPI_Iprobe(MPI_ANY_SOURCE, tag, comm): the status of a waiting message, or null. @throws MpiError */
  iprobe(tag: number, comm: Comm): MpiStatus | null;
  /**
   * Blocking MPI_Recv of exactly `bytes` bytes (MPI_BYTE) into a new Uint8Array: for small control
   * messages that iprobe has already seen. Use it on a communicator that only this thread receives
   * on, or another thread may take the probed message first and this call would block.
   * @throws Error when the message holds fewer bytes; MpiError (MPI_ERR_TRUNCATE when it holds more)
   */
  recvBytes(bytes: number, source: number, tag: number, comm: Comm): Uint8Array;
  /** MPI_Abort(comm, code): ends every process of the job; does not return. @throws MpiError if MPI refuses */
  abort(comm: Comm, code: number): void;
}

/** An MPI call that returned an error code; the message names the function and MPI_Error_string's text. */
export class MpiError extends Error {
  constructor(
    /** The MPI function that failed, e.g. 'MPI_Isend'. */
    readonly call: string,
    /** The error code it returned. */
    readonly code: number,
    text: string,
  ) {
    super(`${call} failed: ${text} (error code ${code})`);
    this.name = 'MpiError';
  }
}

/** Environment variable naming an Open MPI library to load instead of searching. */
const MPI_LIBRARY_ENV = 'LOONGTRAIN_MPI_LIBRARY';

const THREAD_MULTIPLE = 3; // enum { MPI_THREAD_SINGLE, _FUNNELED, _SERIALIZED, _MULTIPLE } in mpi.h
const ANY_SOURCE = -1;
const MAX_ERROR_STRING = 256; // MPI_MAX_ERROR_STRING (OPAL_MAX_ERROR_STRING)
const INT_MAX = 0x7fffffff;

/**
 * Layout of the per-thread scratch block, in bytes. MPI_Status is Open MPI 4.x's
 * `{ int MPI_SOURCE, MPI_TAG, MPI_ERROR, _cancelled; size_t _ucount }` (24 bytes, 8-aligned).
 */
const CELL = 0; // a handle in/out-parameter (MPI_Request, MPI_Comm, MPI_Group, attribute pointer)
const FLAG = 8; // an int out-parameter
const STATUS = 16;
const SCRATCH_BYTES = 40;

function candidates(): string[] {
  const named = process.env[MPI_LIBRARY_ENV];
  if (named !== undefined && named !== '') return [named];
  if (process.platform === 'darwin') return ['libmpi.40.dylib', 'libmpi.dylib'];
  // The unversioned link exists only with libopenmpi-dev, and may point at MPICH instead.
  return ['libmpi.so.40', 'libmpi.so'];
}

function installHint(): string {
  if (process.env[MPI_LIBRARY_ENV]) return `check ${MPI_LIBRARY_ENV}`;
  if (process.platform === 'darwin') return 'brew install open-mpi, or set ' + MPI_LIBRARY_ENV;
  return 'apt-get install openmpi-bin libopenmpi-dev (Debian/Ubuntu) or dnf install openmpi openmpi-devel, or set ' + MPI_LIBRARY_ENV + ' to Open MPI\'s libmpi';
}

let loaded: MpiLibrary | { reason: string } | undefined;

/**
 * Load Open MPI's libmpi.so.40 (or `LOONGTRAIN_MPI_LIBRARY`) with RTLD_GLOBAL, which the plugins
 * Open MPI dlopens need in order to resolve libmpi's symbols. The result (or the failure) is
 * cached for the thread; loading does not initialise MPI (see init()).
 * @returns the binding, or `{ reason }` saying what was tried and how to install Open MPI.
 */
export function loadMpi(): MpiLibrary | { reason: string } {
  if (loaded !== undefined) return loaded;
  loaded = tryLoad();
  return loaded;
}

type Koffi = typeof import('koffi');
type Native = (...args: unknown[]) => number;

function tryLoad(): MpiLibrary | { reason: string } {
  let koffi: Koffi;
  try {
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
  } catch (e) {
    return { reason: `the koffi FFI package did not load (${(e as Error).message.split('\n')[0]}); run npm ci` };
  }
  const tried: string[] = [];
  for (const name of candidates()) {
    let lib: ReturnType<Koffi['load']>;
    try {
      lib = koffi.load(name, { global: true });
    } catch {
      tried.push(`${name} (not found)`);
      continue;
    }
    try {
      return bind(koffi, lib, name);
    } catch (e) {
      // MPICH and its derivatives use integer handles: no ompi_* globals to point at.
      tried.push(`${name} (not Open MPI: ${(e as Error).message.split('\n')[0]})`);
    }
  }
  return { reason: `Open MPI's libmpi not found (tried ${tried.join(', ')}): ${installHint()}` };
}

class MpiRequest {
  status: MpiStatus | null = null;
  /** Why the handle is gone without a status (cancelled, or failed and freed by MPI): thrown by test(). */
  gone: Error | null = null;
  constructor(
    /** The MPI_Request value; stale once complete or cancelled. */
    readonly handle: bigint,
    readonly collective: boolean,
    /** Memory MPI may still read or write: held so that it outlives the operation. */
    public pinned: readonly ArrayBufferView[] | null,
  ) {}
}

function bind(koffi: Koffi, lib: ReturnType<Koffi['load']>, path: string): MpiLibrary {
  const global = (symbol: string): bigint => lib.symbol(symbol) as bigint;
  const f = (prototype: string): Native => lib.func(prototype) as Native;

  const world = global('ompi_mpi_comm_world');
  const commSelf = global('ompi_mpi_comm_self');
  const BYTE = global('ompi_mpi_byte');
  const FLOAT = global('ompi_mpi_float');
  const SUM = global('ompi_mpi_op_sum');
  const ERRORS_RETURN = global('ompi_mpi_errors_return');

  const MPI_Initialized = f('int MPI_Initialized(void *flag)');
  const MPI_Finalized = f('int MPI_Finalized(void *flag)');
  const MPI_Init_thread = f('int MPI_Init_thread(void *argc, void *argv, int required, void *provided)');
  const MPI_Query_thread = f('int MPI_Query_thread(void *provided)');
  const MPI_Finalize = f('int MPI_Finalize()');
  const MPI_Comm_set_errhandler = f('int MPI_Comm_set_errhandler(void *comm, void *errhandler)');
  const MPI_Error_string = f('int MPI_Error_string(int code, void *text, void *length)');
  const MPI_Comm_rank = f('int MPI_Comm_rank(void *comm, void *rank)');
  const MPI_Comm_size = f('int MPI_Comm_size(void *comm, void *size)');
  const MPI_Comm_group = f('int MPI_Comm_group(void *comm, void *group)');
  const MPI_Group_incl = f('int MPI_Group_incl(void *group, int n, void *ranks, void *newgroup)');
  const MPI_Group_free = f('int MPI_Group_free(void *group)');
  const MPI_Comm_create_group = f('int MPI_Comm_create_group(void *comm, void *group, int tag, void *newcomm)');
  const MPI_Comm_dup = f('int MPI_Comm_dup(void *comm, void *newcomm)');
  const MPI_Isend = f('int MPI_Isend(void *buf, int count, void *type, int dest, int tag, void *comm, void *request)');
  const MPI_Irecv = f('int MPI_Irecv(void *buf, int count, void *type, int source, int tag, void *comm, void *request)');
  const MPI_Test = f('int MPI_Test(void *request, void *flag, void *status)');
  const MPI_Cancel = f('int MPI_Cancel(void *request)');
  const MPI_Request_free = f('int MPI_Request_free(void *request)');
  const MPI_Ialltoall = f('int MPI_Ialltoall(void *sendbuf, int sendcount, void *sendtype, void *recvbuf, int recvcount, void *recvtype, void *comm, void *request)');
  const MPI_Iallgather = f('int MPI_Iallgather(void *sendbuf, int sendcount, void *sendtype, void *recvbuf, int recvcount, void *recvtype, void *comm, void *request)');
  const MPI_Iallgatherv = f('int MPI_Iallgatherv(void *sendbuf, int sendcount, void *sendtype, void *recvbuf, void *recvcounts, void *displs, void *recvtype, void *comm, void *request)');
  const MPI_Ireduce_scatter = f('int MPI_Ireduce_scatter(void *sendbuf, void *recvbuf, void *recvcounts, void *type, void *op, void *comm, void *request)');
  const MPI_Ibcast = f('int MPI_Ibcast(void *buf, int count, void *type, int root, void *comm, void *request)');
  const MPI_Ibarrier = f('int MPI_Ibarrier(void *comm, void *request)');
  const MPI_Iprobe = f('int MPI_Iprobe(int source, int tag, void *comm, void *flag, void *status)');
  const MPI_Recv = f('int MPI_Recv(void *buf, int count, void *type, int source, int tag, void *comm, void *status)');
  const MPI_Abort = f('int MPI_Abort(void *comm, int code)');

  // Per thread (this closure exists once per thread), so concurrent threads never share it; a
  // SharedArrayBuffer, so the address taken once here stays valid for every later call.
  const scratch = new SharedArrayBuffer(SCRATCH_BYTES);
  const base = koffi.address(new Uint8Array(scratch));
  const cellAddr = base + BigInt(CELL);
  const flagAddr = base + BigInt(FLAG);
  const statusAddr = base + BigInt(STATUS);
  const handles = new BigUint64Array(scratch);
  const ints = new Int32Array(scratch);
  const words = new Uint32Array(scratch);
  const errorText = Buffer.alloc(MAX_ERROR_STRING);

  let provided: number | undefined;
  let ready = false; // MPI seen initialised from this thread: skips the check on later calls

  function describe(code: number): string {
    if (MPI_Error_string(code, errorText, flagAddr) !== 0) return `unknown MPI error ${code}`;
    return errorText.toString('latin1', 0, ints[FLAG / 4]);
  }

  function check(rc: number, call: string): void {
    if (rc !== 0) throw new MpiError(call, rc, describe(rc));
  }

  function outInt(rc: number, call: string): number {
    check(rc, call);
    return ints[FLAG / 4];
  }

  function outHandle(rc: number, call: string): bigint {
    check(rc, call);
    return handles[CELL / 8];
  }

  function clearStatus(): void {
    ints.fill(0, STATUS / 4, SCRATCH_BYTES / 4);
  }

  function readStatus(): MpiStatus {
    const i = STATUS / 4;
    // _ucount is a size_t: two 32-bit halves, exact up to 2^53 as a double.
    return { source: ints[i], tag: ints[i + 1], error: ints[i + 2], bytes: words[i + 4] + words[i + 5] * 2 ** 32 };
  }

  const isInitialized = (): boolean => outInt(MPI_Initialized(flagAddr), 'MPI_Initialized') !== 0;
  const isFinalized = (): boolean => outInt(MPI_Finalized(flagAddr), 'MPI_Finalized') !== 0;
  const running = (): boolean => isInitialized() && !isFinalized();

  function requireMainThread(what: string): void {
    if (!isMainThread) throw new Error(`MPI ${what}() must be called from the process's main thread, not a worker_thread`);
  }

  // Open MPI aborts the whole process on calls made before MPI_Init, so refuse them here.
  function comm(value: Comm): bigint {
    if (!ready) {
      if (!running()) throw new Error('MPI is not initialised: the main thread must call init() first (or finalize() already ran)');
      ready = true;
    }
    if (typeof value !== 'bigint') throw new TypeError(`expected an MPI communicator (a bigint handle from this library), got ${typeof value}`);
    return value;
  }

  function int(name: string, value: number, min: number): number {
    if (!Number.isInteger(value) || value < min || value > INT_MAX) {
      throw new RangeError(`${name} must be an integer in [${min}, ${INT_MAX}], got ${value}`);
    }
    return value;
  }

  function shared(name: string, view: ArrayBufferView): bigint {
    if (Object.prototype.toString.call(view.buffer) !== '[object SharedArrayBuffer]') {
      throw new TypeError(`${name} must be a view of a SharedArrayBuffer (or a shared WebAssembly.Memory): MPI keeps its address until the request completes, and only shared memory is guaranteed never to move or be detached`);
    }
    return koffi.address(view);
  }

  function byteCount(name: string, view: ArrayBufferView): number {
    if (view.byteLength > INT_MAX) throw new RangeError(`${name} holds ${view.byteLength} bytes: one MPI_BYTE message carries at most ${INT_MAX}`);
    return view.byteLength;
  }

  function counts(name: string, values: readonly number[], members: number): Int32Array {
    if (values.length !== members) throw new RangeError(`${name} has ${values.length} entries, expected one per rank (${members})`);
    const out = new Int32Array(new SharedArrayBuffer(4 * members));
    values.forEach((v, i) => { out[i] = int(`${name}[${i}]`, v, 0); });
    return out;
  }

  function started(rc: number, call: string, collective: boolean, pinned: readonly ArrayBufferView[]): MpiRequest {
    return new MpiRequest(outHandle(rc, call), collective, pinned);
  }

  function request(value: Request): MpiRequest {
    if (!(value instanceof MpiRequest)) throw new TypeError('expected a Request returned by this thread\'s MPI library');
    return value;
  }

  function freeGroup(group: bigint): void {
    handles[CELL / 8] = group;
    check(MPI_Group_free(cellAddr), 'MPI_Group_free');
  }

  const binding: MpiLibrary = {
    path,
    world,
    THREAD_MULTIPLE,

    init(): number {
      requireMainThread('init');
      if (provided !== undefined) return provided;
      if (isFinalized()) throw new Error('MPI was finalized in this process: it cannot be initialised again');
      if (!isInitialized()) check(MPI_Init_thread(null, null, THREAD_MULTIPLE, flagAddr), 'MPI_Init_thread');
      const level = outInt(MPI_Query_thread(flagAddr), 'MPI_Query_thread');
      check(MPI_Comm_set_errhandler(world, ERRORS_RETURN), 'MPI_Comm_set_errhandler');
      check(MPI_Comm_set_errhandler(commSelf, ERRORS_RETURN), 'MPI_Comm_set_errhandler');
      provided = level;
      ready = true;
      return level;
    },

    finalize(): void {
      requireMainThread('finalize');
      if (!running()) return;
      ready = false;
      provided = undefined;
      check(MPI_Finalize(), 'MPI_Finalize');
    },

    rank: (c) => outInt(MPI_Comm_rank(comm(c), flagAddr), 'MPI_Comm_rank'),
    size: (c) => outInt(MPI_Comm_size(comm(c), flagAddr), 'MPI_Comm_size'),

    createGroup(parent, ranks, tag): Comm {
      const p = comm(parent);
      const me = binding.rank(p);
      if (!ranks.includes(me)) {
        throw new RangeError(`createGroup over [${ranks.join(',')}]: this process (rank ${me} of the parent) is not a member, and only members may call it`);
      }
      const list = Int32Array.from(ranks, (r, i) => int(`ranks[${i}]`, r, 0));
      const group = outHandle(MPI_Comm_group(p, cellAddr), 'MPI_Comm_group');
      try {
        const members = outHandle(MPI_Group_incl(group, list.length, list, cellAddr), 'MPI_Group_incl');
        try {
          return outHandle(MPI_Comm_create_group(p, members, int('tag', tag, 0), cellAddr), 'MPI_Comm_create_group');
        } finally {
          freeGroup(members);
        }
      } finally {
        freeGroup(group);
      }
    },

    dup: (c) => outHandle(MPI_Comm_dup(comm(c), cellAddr), 'MPI_Comm_dup'),

    isend(buf, dest, tag, c): Request {
      const h = comm(c);
      const rc = MPI_Isend(shared('isend buffer', buf), byteCount('isend buffer', buf), BYTE, dest, tag, h, cellAddr);
      return started(rc, 'MPI_Isend', false, [buf]);
    },

    irecv(buf, source, tag, c): Request {
      const h = comm(c);
      const rc = MPI_Irecv(shared('irecv buffer', buf), byteCount('irecv buffer', buf), BYTE, source, tag, h, cellAddr);
      return started(rc, 'MPI_Irecv', false, [buf]);
    },

    test(value): MpiStatus | null {
      const req = request(value);
      if (req.status !== null) return req.status;
      if (req.gone !== null) throw req.gone;
      handles[CELL / 8] = req.handle;
      clearStatus();
      const rc = MPI_Test(cellAddr, flagAddr, statusAddr);
      if (rc !== 0) {
        // MPI has completed and freed the failed request: its handle must not be tested again.
        req.gone = new MpiError('MPI_Test', rc, describe(rc));
        req.pinned = null;
        throw req.gone;
      }
      if (ints[FLAG / 4] === 0) return null;
      req.status = readStatus();
      req.pinned = null;
      return req.status;
    },

    cancel(value): void {
      const req = request(value);
      if (req.status !== null || req.gone !== null) return;
      if (req.collective) throw new Error('cannot cancel a nonblocking collective (MPI forbids it): abort the job instead');
      handles[CELL / 8] = req.handle;
      check(MPI_Cancel(cellAddr), 'MPI_Cancel');
      check(MPI_Request_free(cellAddr), 'MPI_Request_free');
      req.gone = new Error('test() of a cancelled MPI request');
      req.pinned = null;
    },

    ialltoall(send, recv, countPerMember, c): Request {
      const h = comm(c);
      const n = binding.size(h);
      const count = int('countPerMember', countPerMember, 0);
      if (send.length < count * n || recv.length < count * n) {
        throw new RangeError(`ialltoall of ${count} per member over ${n} ranks needs ${count * n} elements each way, got send ${send.length}, recv ${recv.length}`);
      }
      const rc = MPI_Ialltoall(shared('ialltoall send', send), count, FLOAT, shared('ialltoall recv', recv), count, FLOAT, h, cellAddr);
      return started(rc, 'MPI_Ialltoall', true, [send, recv]);
    },

    iallgather(send, recv, c): Request {
      const h = comm(c);
      const n = binding.size(h);
      if (recv.length < n * send.length) throw new RangeError(`iallgather of ${send.length} elements over ${n} ranks needs ${n * send.length} in recv, got ${recv.length}`);
      const count = int('iallgather send length', send.length, 0);
      const rc = MPI_Iallgather(shared('iallgather send', send), count, FLOAT, shared('iallgather recv', recv), count, FLOAT, h, cellAddr);
      return started(rc, 'MPI_Iallgather', true, [send, recv]);
    },

    iallgatherv(send, recv, recvCounts, recvDispls, c): Request {
      const h = comm(c);
      const n = binding.size(h);
      const me = binding.rank(h);
      const cs = counts('counts', recvCounts, n);
      const ds = counts('displs', recvDispls, n);
      if (send.length !== cs[me]) throw new RangeError(`iallgatherv: send holds ${send.length} elements but counts[${me}] (this rank) is ${cs[me]}`);
      for (let i = 0; i < n; i++) {
        if (ds[i] + cs[i] > recv.length) throw new RangeError(`iallgatherv: block ${i} [${ds[i]}, ${ds[i] + cs[i]}) does not fit in recv of ${recv.length} elements`);
      }
      const rc = MPI_Iallgatherv(shared('iallgatherv send', send), send.length, FLOAT, shared('iallgatherv recv', recv), cs, ds, FLOAT, h, cellAddr);
      return started(rc, 'MPI_Iallgatherv', true, [send, recv, cs, ds]);
    },

    ireduceScatter(send, recv, recvCounts, c): Request {
      const h = comm(c);
      const n = binding.size(h);
      const me = binding.rank(h);
      const cs = counts('counts', recvCounts, n);
      const total = cs.reduce((a, b) => a + b, 0);
      if (send.length < total) throw new RangeError(`ireduceScatter: send holds ${send.length} elements, counts add up to ${total}`);
      if (recv.length < cs[me]) throw new RangeError(`ireduceScatter: recv holds ${recv.length} elements, counts[${me}] (this rank) is ${cs[me]}`);
      const rc = MPI_Ireduce_scatter(shared('ireduceScatter send', send), shared('ireduceScatter recv', recv), cs, FLOAT, SUM, h, cellAddr);
      return started(rc, 'MPI_Ireduce_scatter', true, [send, recv, cs]);
    },

    ibcast(buf, root, c): Request {
      const h = comm(c);
      const count = int('ibcast length', buf.length, 0);
      return started(MPI_Ibcast(shared('ibcast buffer', buf), count, FLOAT, root, h, cellAddr), 'MPI_Ibcast', true, [buf]);
    },

    ibarrier: (c) => started(MPI_Ibarrier(comm(c), cellAddr), 'MPI_Ibarrier', true, []),

    iprobe(tag, c): MpiStatus | null {
      const h = comm(c);
      clearStatus();
      return outInt(MPI_Iprobe(ANY_SOURCE, tag, h, flagAddr, statusAddr), 'MPI_Iprobe') === 0 ? null : readStatus();
    },

    recvBytes(bytes, source, tag, c): Uint8Array {
      const h = comm(c);
      // Blocking: MPI holds the pointer only during the call, so a plain (unshared) array will do.
      const out = new Uint8Array(int('bytes', bytes, 0));
      clearStatus();
      check(MPI_Recv(out, bytes, BYTE, source, tag, h, statusAddr), 'MPI_Recv');
      const got = readStatus().bytes;
      if (got !== bytes) throw new Error(`recvBytes expected ${bytes} bytes from rank ${source} (tag ${tag}), the message held ${got}`);
      return out;
    },

    abort(c, code): void {
      check(MPI_Abort(comm(c), code), 'MPI_Abort');
    },
  };
  return binding;
}
