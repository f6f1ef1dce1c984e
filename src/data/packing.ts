import { ConfigError } from '../errors.js';
import { deriveSeed, Rng } from '../tensor/rng.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * How sequences treat document boundaries (data.packing, docs/data.md): `concat` cuts windows
 * from the stream regardless of documents (attention crosses separators); `documents` cuts the
 * same windows but marks each document inside them (cuSeqlens), restarts positions at document
 * starts (with positions = "document") and ignores the label after each document's separator.
 */
export const PACKING_MODES = ['concat', 'documents'] as const;
export type PackingMode = (typeof PACKING_MODES)[number];

/** RoPE positions of a sequence (data.positions): the token's offset in its document, or in the sequence. */
export const POSITION_MODES = ['document', 'sequence'] as const;
export type PositionMode = (typeof POSITION_MODES)[number];

/** The resolved data.packing and data.positions. */
export interface PackingOptions {
  packing: PackingMode;
  positions: PositionMode;
}

/**
 * data.packing and data.positions with their defaults applied: packing "concat"; positions
 * "document" with packing "documents", else "sequence".
 * @throws ConfigError naming the key and the valid values for an unknown value, and naming both
 * keys for positions = "document" with packing = "concat" (a concat sequence has no documents).
 */
export function packingOptions(data: { packing?: PackingMode | undefined; positions?: PositionMode | undefined }): PackingOptions {
  const packing = data.packing ?? 'concat';
  if (!PACKING_MODES.includes(packing)) throw new ConfigError(`data.packing = ${JSON.stringify(packing)} is invalid: use one of ${PACKING_MODES.map((m) => JSON.stringify(m)).join(', ')}`);
  const positions = data.positions ?? (packing === 'documents' ? 'document' : 'sequence');
  if (!POSITION_MODES.includes(positions)) throw new ConfigError(`data.positions = ${JSON.stringify(positions)} is invalid: use one of ${POSITION_MODES.map((m) => JSON.stringify(m)).join(', ')}`);
  if (packing === 'concat' && positions === 'document') {
    throw new ConfigError(
      'data.positions = "document" is invalid with data.packing = "concat" (a concat sequence does not keep its documents apart): ' +
        'set data.packing = "documents", or use data.positions = "sequence" (the default with "concat")',
    );
  }
  return { packing, positions };
}

/** The packed stream and where each document starts in it. */
export interface TokenStream {
  /** doc₀ SEP doc₁ SEP … docₙ SEP; length Σ tokens(doc) + docs.length. */
  stream: Int32Array;
  /**
   * [docs.length] offset in `stream` of each document's first token, increasing from 0; document
   * d is stream[docStarts[d], docStarts[d + 1]) (the last one ends at stream.length) and its
   * last token is its separator. An empty document is its separator alone.
   */
  docStarts: Int32Array;
}

/**
 * All documents as one token stream: each document's tokens followed by the separator, so
 * every document (the last one too) ends with a separator and the model learns where
 * documents end, plus where each document starts (for data.packing = "documents").
 */
export function buildTokenStream(docs: readonly string[], tokenizer: Tokenizer): TokenStream {
  const encoded = docs.map((d) => tokenizer.encode(d));
  const total = encoded.reduce((n, e) => n + e.length + 1, 0);
  const stream = new Int32Array(total);
  const docStarts = new Int32Array(encoded.length);
  let at = 0;
  encoded.forEach((e, d) => {
    docStarts[d] = at;
    stream.set(e, at);
    at += e.length;
    stream[at++] = tokenizer.separatorId;
  });
  return { stream, docStarts };
}

/** One training sequence: `labels[t]` is the token that follows `tokens[t]` in the stream (or −1). */
export interface Sequence {
  /** [seqLen] */
  tokens: Int32Array;
  /**
   * [seqLen] the next stream token, or −1 (ignored by the loss) after the last token (the
   * separator) of a document with data.packing = "documents".
   */
  labels: Int32Array;
  /**
   * [seqLen] RoPE positions: 0 … seqLen − 1 with data.positions = "sequence"; with "document"
   * the token's offset inside its document in the stream (a window that starts inside a
   * document continues its positions).
   */
  positions: Int32Array;
  /**
   * [segments + 1] cumulative lengths of the window's document segments (cu_seqlens): 0, each
   * document start inside (0, seqLen), seqLen. A window that starts inside a document begins
   * with that document's tail. With data.packing = "concat": [0, seqLen].
   */
  cuSeqlens: Int32Array;
}

/** What a SequenceSampler needs besides the stream: data.packing, data.positions and the document starts. */
export interface SamplerPacking {
  /** Default "concat". */
  packing?: PackingMode | undefined;
  /** Default: "document" with packing "documents", else "sequence". */
  positions?: PositionMode | undefined;
  /** TokenStream.docStarts of `stream`; required with packing = "documents". */
  docStarts?: Int32Array | undefined;
}

/**
 * Training sequences from a token stream. Window k covers stream[k·seqLen, k·seqLen + seqLen]
 * (seqLen + 1 tokens, stride seqLen, so consecutive windows share one token and every stream
 * token but the first is a label exactly once per epoch). The label shift is done here, over
 * the whole sequence, before any sharding (algorithms.md §2). With packing = "documents" the
 * windows are the same; each sequence also marks its documents (cuSeqlens), gives document
 * positions and ignores the label after every document's separator (docs/data.md).
 *
 * Sequences are consumed in a seeded order: epoch e = ⌊position / count⌋ visits every window
 * once, in the permutation drawn by Rng(deriveSeed(seed, 'epoch' + e)). So the sequence at a
 * run position is a pure function of (stream, docStarts, seqLen, seed, position, packing
 * options), which makes resuming from a checkpoint exact; the order does not depend on the
 * packing options.
 */
export class SequenceSampler {
  /** Number of windows (sequences per epoch). */
  readonly count: number;
  readonly packing: PackingMode;
  readonly positions: PositionMode;
  /** Document starts (empty with packing = "concat", which does not use them). */
  readonly docStarts: Int32Array;
  private cachedEpoch = -1;
  private cachedOrder: Int32Array = new Int32Array(0);

  /**
   * @throws ConfigError naming seqLen and the token count when the stream holds fewer than
   * seqLen + 1 tokens, or when seqLen is not a positive integer; ConfigError for invalid packing
   * options (packingOptions); RangeError when packing = "documents" comes without docStarts or
   * with docStarts that do not start at 0 and increase inside the stream.
   */
  constructor(
    readonly stream: Int32Array,
    readonly seqLen: number,
    readonly seed: number,
    options: SamplerPacking = {},
  ) {
    if (!Number.isInteger(seqLen) || seqLen < 1) throw new ConfigError(`train.seqLen = ${seqLen} is invalid: it must be a positive integer`);
    ({ packing: this.packing, positions: this.positions } = packingOptions(options));
    this.count = Math.floor((stream.length - 1) / seqLen);
    if (this.count < 1) {
      throw new ConfigError(
        `the data has ${stream.length} tokens, too few for one sequence of train.seqLen = ${seqLen} (which needs seqLen + 1 = ${seqLen + 1} tokens); add text or lower train.seqLen`,
      );
    }
    if (this.packing === 'documents') {
      const starts = options.docStarts;
      if (starts === undefined || starts.length === 0) throw new RangeError('SequenceSampler: data.packing = "documents" needs the document starts of the stream (buildTokenStream(...).docStarts)');
      for (let d = 0; d < starts.length; d++) {
        const s = starts[d]!;
        if (d === 0 ? s !== 0 : s <= starts[d - 1]! || s >= stream.length) {
          throw new RangeError(`SequenceSampler: docStarts[${d}] = ${s} is invalid: document starts must begin at 0 and increase strictly inside the stream of ${stream.length} tokens`);
        }
      }
      this.docStarts = starts;
    } else {
      this.docStarts = new Int32Array(0);
    }
  }

  /** Window `index` ∈ [0, count) with labels shifted over the whole window, its positions and document segments. */
  sequence(index: number): Sequence {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) throw new RangeError(`sequence index ${index} outside [0, ${this.count})`);
    const S = this.seqLen;
    const start = index * S;
    const tokens = this.stream.slice(start, start + S);
    const labels = this.stream.slice(start + 1, start + 1 + S);
    const positions = Int32Array.from({ length: S }, (_, t) => t);
    if (this.packing === 'concat') return { tokens, labels, positions, cuSeqlens: Int32Array.of(0, S) };

    const starts = this.docStarts;
    // The document holding the window's first token: the last start ≤ `start`.
    let d = upperBound(starts, start) - 1;
    let docStart = starts[d]!;
    let nextStart = d + 1 < starts.length ? starts[d + 1]! : this.stream.length;
    const cu = [0];
    const byDocument = this.positions === 'document';
    for (let t = 0; t < S; t++) {
      const i = start + t;
      if (i === nextStart) {
        d++;
        docStart = nextStart;
        nextStart = d + 1 < starts.length ? starts[d + 1]! : this.stream.length;
        cu.push(t);
      }
      if (byDocument) positions[t] = i - docStart;
      // Token i is its document's separator: the next token starts an unrelated document.
      if (i + 1 === nextStart) labels[t] = -1;
    }
    cu.push(S);
    return { tokens, labels, positions, cuSeqlens: Int32Array.from(cu) };
  }

  /** Window index consumed at run position `position` (sequences consumed before it, counted over all dp ranks). */
  windowAt(position: number): number {
    if (!Number.isInteger(position) || position < 0) throw new RangeError(`sequence position ${position} must be a non-negative integer`);
    return this.epochOrder(Math.floor(position / this.count))[position % this.count]!;
  }

  /** The sequence consumed at run position `position`. */
  globalSequence(position: number): Sequence {
    return this.sequence(this.windowAt(position));
  }

  /** Order in which epoch `epoch` visits the windows (Fisher–Yates with the epoch's own Rng). */
  private epochOrder(epoch: number): Int32Array {
    if (epoch !== this.cachedEpoch) {
      const order = Int32Array.from({ length: this.count }, (_, i) => i);
      const rng = new Rng(deriveSeed(this.seed, 'epoch' + epoch));
      for (let i = this.count - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = order[i]!;
        order[i] = order[j]!;
        order[j] = t;
      }
      this.cachedEpoch = epoch;
      this.cachedOrder = order;
    }
    return this.cachedOrder;
  }
}

/** Index of the first element of the increasing array `a` greater than `x` (a.length if none). */
function upperBound(a: Int32Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Run position of the sequence that data-parallel index `dpIndex` uses as batch element
 * `batchIndex` at step `step`: step-major, then dp index, then batch element, so one step
 * consumes dp·batchSize consecutive positions and a resumed run continues at step·dp·batchSize.
 */
export function sequencePosition(step: number, dp: number, batchSize: number, dpIndex: number, batchIndex: number): number {
  return (step * dp + dpIndex) * batchSize + batchIndex;
}
