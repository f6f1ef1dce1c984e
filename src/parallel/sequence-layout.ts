import { ConfigError } from '../errors.js';
import type { AttentionMask } from '../kernels/kernels.js';
import { zigzagPositionIndices } from './sharding.js';

/**
 * Which tokens of one sequence every ring position holds, and what every (query block, key
 * block) pair the ring visits may see (DESIGN "Next layers", decision 6). Sharding, the ring's
 * hop plans and the kernels' masks are all read from one object, so token ownership and masking
 * cannot disagree.
 *
 * A sequence of S tokens holds documents given as cu_seqlens (the field's cumulative lengths:
 * document i is tokens [cu[i], cu[i+1]); tokens from the last entry to S are padding, which sees
 * nothing and is seen by nothing). A query sees a key when both are in the same document and,
 * when causal, the key does not come after it. Without cu_seqlens the sequence is one document.
 *
 * Ring position c holds `positionTokens(c)` (S/cp indices, ascending); rank (h, c) of the
 * hp × cp block holds piece h of them (`rankTokens`, S/sp), and the Ulysses all-to-all gives
 * position c back its whole set in that order, so the ring's blocks are ascending runs of the
 * sequence and a query's visible keys are one contiguous run of a block's rows.
 */

/** How the sequence's tokens are assigned to ring positions. */
export type Sharding = 'zigzag' | 'balanced';
export const SHARDINGS: readonly Sharding[] = ['zigzag', 'balanced'];
/** parallel.sharding and parallel.balanceChunks when not given. */
export const DEFAULT_SHARDING: Sharding = 'zigzag';
export const DEFAULT_BALANCE_CHUNKS = 8;

export interface SequenceLayoutOptions {
  /** Head-parallel size. */
  hp: number;
  /** Context-parallel size (ring positions). */
  cp: number;
  /** Tokens in the sequence. */
  seqLen: number;
  /** Whether a query sees only keys at or before it. */
  causal: boolean;
  /**
   * cu_seqlens [documents + 1]: 0 = cu[0] < cu[1] < … ≤ seqLen. Omitted: one document [0, seqLen].
   */
  cuSeqlens?: Int32Array;
  /**
   * `zigzag` (default; algorithms.md §2): 2·cp chunks, position c holds chunks c and 2cp − 1 − c.
   * `balanced`: cp·balanceChunks equal chunks, each given to the position with the least
   * attention work so far among those with room (longest-processing-time first), so every
   * position holds balanceChunks chunks and the visible pairs per position are close to equal.
   */
  sharding?: Sharding;
  /** Chunks per ring position under `balanced` (default 8). */
  balanceChunks?: number;
}

/** One kernel call of a hop: a rectangle of query rows against key rows of the held block, and its mask. */
export interface BlockPlan {
  /** Query rows [start, end) of the position's S/cp tokens. */
  queryStart: number;
  queryEnd: number;
  /** Key rows [start, end) of the held KV block. */
  keyStart: number;
  keyEnd: number;
  /** Visible keys of each query row, in the rectangle's own coordinates. */
  mask: AttentionMask;
  /** Visible (query, key) pairs per head in the rectangle. */
  pairs: number;
}

/**
 * What one ring hop computes: the bounding rectangle of all its visible pairs (with its mask),
 * and the kernel calls that cover them. One call over the rectangle, unless the position's
 * chunks are scattered (balanced sharding) so that the visible pairs sit in separate chunk
 * rectangles covering at most half of the bounding one: then one call per chunk of query rows.
 */
export interface HopPlan extends BlockPlan {
  /** Ring position the held KV block started at. */
  source: number;
  /** Visible (query, key) pairs per head; 0: the hop computes nothing (skipped). */
  pairs: number;
  /** The kernel calls, in query-row order (the rectangle itself when it is not split); none when skipped. */
  blocks: readonly BlockPlan[];
}

/** Number of `values` (ascending) that are < x. */
function lowerBound(values: Int32Array, x: number): number {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (values[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Check cu_seqlens against a sequence of `seqLen` tokens.
 * @throws ConfigError naming the entry, its value and what is valid.
 */
export function checkCuSeqlens(cuSeqlens: Int32Array, seqLen: number): void {
  if (cuSeqlens.length < 1 || cuSeqlens[0] !== 0) throw new ConfigError(`cu_seqlens must start with 0, got [${Array.from(cuSeqlens.slice(0, 4)).join(', ')}${cuSeqlens.length > 4 ? ', …' : ''}]`);
  for (let i = 1; i < cuSeqlens.length; i++) {
    const x = cuSeqlens[i]!;
    if (!(x > cuSeqlens[i - 1]!) || x > seqLen) {
      throw new ConfigError(`cu_seqlens[${i}] = ${x} is invalid: entries must increase strictly (previous ${cuSeqlens[i - 1]}) and be ≤ seqLen = ${seqLen}`);
    }
  }
}

export class SequenceLayout {
  readonly hp: number;
  readonly cp: number;
  readonly seqLen: number;
  readonly causal: boolean;
  readonly sharding: Sharding;
  /** cu_seqlens [documents + 1]. */
  readonly cuSeqlens: Int32Array;
  /** Document of every token [seqLen]; −1 for padding. */
  private readonly docOf: Int32Array;
  private readonly positions: Int32Array[];
  private readonly hopCache = new Map<number, HopPlan>();

  /** @throws ConfigError naming the field when seqLen does not fit the sharding, or cu_seqlens is invalid. */
  constructor(opts: SequenceLayoutOptions) {
    const { hp, cp, seqLen } = opts;
    for (const [field, v] of [['hp', hp], ['cp', cp]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new ConfigError(`sequence layout: ${field} = ${v} is invalid: it must be a positive integer`);
    }
    this.hp = hp;
    this.cp = cp;
    this.seqLen = seqLen;
    this.causal = opts.causal;
    this.sharding = opts.sharding ?? DEFAULT_SHARDING;
    this.cuSeqlens = opts.cuSeqlens ?? Int32Array.of(0, seqLen);
    checkCuSeqlens(this.cuSeqlens, seqLen);
    this.docOf = new Int32Array(seqLen).fill(-1);
    for (let d = 0; d + 1 < this.cuSeqlens.length; d++) this.docOf.fill(d, this.cuSeqlens[d]!, this.cuSeqlens[d + 1]!);
    if (cp === 1) {
      // One ring position holds the whole sequence in order, whatever the sharding.
      checkShardable(seqLen, hp, `hp = ${hp}`);
      this.positions = [Int32Array.from({ length: seqLen }, (_, i) => i)];
    } else if (this.sharding === 'zigzag') {
      checkShardable(seqLen, 2 * cp * hp, `2·sp = ${2 * cp * hp} (parallel.sharding = "zigzag")`);
      this.positions = Array.from({ length: cp }, (_, c) => zigzagPositionIndices(cp, seqLen, c));
    } else if (this.sharding === 'balanced') {
      const k = opts.balanceChunks ?? DEFAULT_BALANCE_CHUNKS;
      if (!Number.isInteger(k) || k < 1) throw new ConfigError(`parallel.balanceChunks = ${k} is invalid: it must be a positive integer`);
      checkShardable(seqLen, lcm(cp * k, cp * hp), `cp·balanceChunks = ${cp * k} and sp = ${cp * hp} (parallel.sharding = "balanced")`);
      this.positions = this.balancedPositions(k);
    } else {
      throw new ConfigError(`parallel.sharding = ${JSON.stringify(this.sharding)} is invalid; valid values: ${SHARDINGS.join(', ')}`);
    }
  }

  /** Number of documents (padding excluded). */
  get documents(): number {
    return this.cuSeqlens.length - 1;
  }

  /** Document of token `index`, −1 for padding. */
  documentOf(index: number): number {
    return this.docOf[index]!;
  }

  /** Sequence indices held by ring position c after the all-to-all: S/cp, ascending. */
  positionTokens(c: number): Int32Array {
    return this.positions[c]!;
  }

  /** Sequence indices held by rank (h, c): piece h of {@link positionTokens}(c), S/sp ascending. */
  rankTokens(h: number, c: number): Int32Array {
    const piece = this.seqLen / (this.hp * this.cp);
    return this.positions[c]!.subarray(h * piece, (h + 1) * piece);
  }

  /** Keys visible to query `index` over the whole sequence (0 for padding). */
  visibleKeys(index: number): number {
    const d = this.docOf[index]!;
    if (d < 0) return 0;
    const start = this.cuSeqlens[d]!;
    return this.causal ? index - start + 1 : this.cuSeqlens[d + 1]! - start;
  }

  /**
   * The plan of the hop in which ring position `position` holds the KV block of `source`:
   * the bounding rectangle of the visible pairs and the mask inside it, classified as `none`
   * (every pair visible), `causal` with its diagonal offset, or `documents` (per-row ranges).
   * No visible pair: an empty rectangle with pairs 0. Cached.
   * @throws RangeError when a position is outside [0, cp).
   */
  hop(position: number, source: number): HopPlan {
    for (const [name, p] of [['position', position], ['source', source]] as const) {
      if (!Number.isInteger(p) || p < 0 || p >= this.cp) throw new RangeError(`ring: ${name} ${p} must be an integer ring position in [0, ${this.cp})`);
    }
    const key = position * this.cp + source;
    let plan = this.hopCache.get(key);
    if (plan === undefined) {
      plan = this.pairPlan(source, this.positions[position]!, this.positions[source]!);
      this.hopCache.set(key, plan);
    }
    return plan;
  }

  /** Visible (query, key) pairs per head of each ring position's queries (its attention work). */
  work(): number[] {
    return this.positions.map((tokens) => {
      let n = 0;
      for (const g of tokens) n += this.visibleKeys(g);
      return n;
    });
  }

  /** max / mean of {@link work} over the ring positions (1 = balanced; 1 when nothing is visible). */
  imbalance(): number {
    const w = this.work();
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    return mean === 0 ? 1 : Math.max(...w) / mean;
  }

  /** Longest-processing-time assignment of cp·k equal chunks, k per position (see SequenceLayoutOptions.sharding). */
  private balancedPositions(k: number): Int32Array[] {
    const cp = this.cp;
    const size = this.seqLen / (cp * k);
    const chunkWork = Array.from({ length: cp * k }, (_, i) => {
      let n = 0;
      for (let g = i * size; g < (i + 1) * size; g++) n += this.visibleKeys(g);
      return n;
    });
    const order = chunkWork.map((w, i) => [w, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    const load = new Array<number>(cp).fill(0);
    const owned: number[][] = Array.from({ length: cp }, () => []);
    for (const [w, chunk] of order) {
      let best = -1;
      for (let p = 0; p < cp; p++) if (owned[p]!.length < k && (best < 0 || load[p]! < load[best]!)) best = p;
      owned[best]!.push(chunk);
      load[best]! += w;
    }
    return owned.map((chunks) => {
      chunks.sort((a, b) => a - b);
      const out = new Int32Array(k * size);
      chunks.forEach((chunk, j) => {
        for (let i = 0; i < size; i++) out[j * size + i] = chunk * size + i;
      });
      return out;
    });
  }

  private pairPlan(source: number, queries: Int32Array, keys: Int32Array): HopPlan {
    const n = queries.length;
    const start = new Int32Array(n);
    const end = new Int32Array(n);
    let qs = -1;
    let qe = 0;
    let ks = keys.length;
    let ke = 0;
    let pairs = 0;
    for (let r = 0; r < n; r++) {
      const g = queries[r]!;
      const d = this.docOf[g]!;
      if (d < 0) continue;
      const last = this.causal ? g : this.cuSeqlens[d + 1]! - 1;
      start[r] = lowerBound(keys, this.cuSeqlens[d]!);
      end[r] = lowerBound(keys, last + 1);
      if (end[r]! <= start[r]!) continue;
      pairs += end[r]! - start[r]!;
      if (qs < 0) qs = r;
      qe = r + 1;
      ks = Math.min(ks, start[r]!);
      ke = Math.max(ke, end[r]!);
    }
    if (pairs === 0) return { source, queryStart: 0, queryEnd: 0, keyStart: 0, keyEnd: 0, mask: { kind: 'none' }, pairs: 0, blocks: [] };
    const whole: BlockPlan = { queryStart: qs, queryEnd: qe, keyStart: ks, keyEnd: ke, mask: classify(start, end, qs, qe, ks, ke), pairs };
    const runs = chunkBlocks(queries, start, end, qs, qe);
    const area = (b: { queryStart: number; queryEnd: number; keyStart: number; keyEnd: number }): number => (b.queryEnd - b.queryStart) * (b.keyEnd - b.keyStart);
    const split = runs.length > 1 && 2 * runs.reduce((n, b) => n + area(b), 0) <= area(whole);
    return { source, ...whole, blocks: split ? runs : [whole] };
  }
}

/**
 * One block per run of query rows [qs, qe) holding consecutive sequence indices (a chunk, or
 * chunks that follow each other), each the bounding rectangle of that run's visible pairs;
 * runs with nothing visible are left out.
 */
function chunkBlocks(queries: Int32Array, start: Int32Array, end: Int32Array, qs: number, qe: number): BlockPlan[] {
  const blocks: BlockPlan[] = [];
  let r0 = qs;
  for (let r = qs + 1; r <= qe; r++) {
    if (r < qe && queries[r] === queries[r - 1]! + 1) continue;
    let bs = -1;
    let be = 0;
    let ks = Number.MAX_SAFE_INTEGER;
    let ke = 0;
    let pairs = 0;
    for (let i = r0; i < r; i++) {
      if (end[i]! <= start[i]!) continue;
      if (bs < 0) bs = i;
      be = i + 1;
      ks = Math.min(ks, start[i]!);
      ke = Math.max(ke, end[i]!);
      pairs += end[i]! - start[i]!;
    }
    if (pairs > 0) blocks.push({ queryStart: bs, queryEnd: be, keyStart: ks, keyEnd: ke, mask: classify(start, end, bs, be, ks, ke), pairs });
    r0 = r;
  }
  return blocks;
}

/**
 * The simplest mask that gives rows [qs, qe) exactly the key ranges start/end, in rectangle
 * coordinates (keys shifted by ks): `none`, `causal` with one diagonal offset, else `documents`.
 */
function classify(start: Int32Array, end: Int32Array, qs: number, qe: number, ks: number, ke: number): AttentionMask {
  const nk = ke - ks;
  let full = true;
  let offset: number | undefined;
  let causal = true;
  for (let r = qs; r < qe; r++) {
    const s = start[r]! - ks;
    const e = end[r]! - ks;
    if (s !== 0 || e !== nk) full = false;
    if (s !== 0) causal = false;
    // Row i sees keys j ≤ i + offset: e = clamp(i + 1 + offset, 0, nk). Only rows with 0 < e < nk pin the offset.
    const i = r - qs;
    if (causal && e > 0 && e < nk) {
      if (offset === undefined) offset = e - 1 - i;
      else if (offset !== e - 1 - i) causal = false;
    }
  }
  if (full) return { kind: 'none' };
  if (causal && offset !== undefined) {
    let ok = true;
    for (let r = qs; r < qe && ok; r++) ok = end[r]! - ks === Math.max(0, Math.min(nk, r - qs + 1 + offset));
    if (ok) return { kind: 'causal', offset };
  }
  const keyStart = new Int32Array(qe - qs);
  const keyEnd = new Int32Array(qe - qs);
  for (let r = qs; r < qe; r++) {
    keyStart[r - qs] = Math.max(0, start[r]! - ks);
    keyEnd[r - qs] = Math.max(keyStart[r - qs]!, end[r]! - ks);
  }
  return { kind: 'documents', keyStart, keyEnd };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

/** @throws ConfigError naming train.seqLen, the unit and the nearest valid lengths. */
function checkShardable(seqLen: number, unit: number, what: string): void {
  if (!Number.isInteger(seqLen) || seqLen < unit || seqLen % unit !== 0) {
    const below = Math.floor(seqLen / unit) * unit;
    const above = Math.max(unit, Math.ceil(seqLen / unit) * unit);
    const near = below >= unit && below !== above ? `${below} or ${above}` : `${above}`;
    throw new ConfigError(`train.seqLen = ${seqLen} is invalid: it must be a multiple of ${unit}, from ${what}; nearest valid lengths: ${near}`);
  }
}
