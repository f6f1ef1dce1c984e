import { ConfigError } from '../errors.js';
import { deriveSeed, Rng } from '../tensor/rng.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * All documents as one token stream: each document's tokens followed by the separator, so
 * every document (the last one too) ends with a separator and the model learns where
 * documents end. Sequences are cut from this stream without regard to document boundaries
 * (standard packing: attention may cross a separator).
 * Length = Σ tokens(doc) + docs.length.
 */
export function buildTokenStream(docs: readonly string[], tokenizer: Tokenizer): Int32Array {
  const encoded = docs.map((d) => tokenizer.encode(d));
  const total = encoded.reduce((n, e) => n + e.length + 1, 0);
  const stream = new Int32Array(total);
  let at = 0;
  for (const e of encoded) {
    stream.set(e, at);
    at += e.length;
    stream[at++] = tokenizer.separatorId;
  }
  return stream;
}

/** One training sequence: `labels[t]` is the token that follows `tokens[t]` in the stream. */
export interface Sequence {
  /** [seqLen] */
  tokens: Int32Array;
  /** [seqLen] */
  labels: Int32Array;
}

/**
 * Training sequences from a token stream. Window k covers stream[k·seqLen, k·seqLen + seqLen]
 * (seqLen + 1 tokens, stride seqLen, so consecutive windows share one token and every stream
 * token but the first is a label exactly once per epoch). The label shift is done here, over
 * the whole sequence, before any sharding (algorithms.md §2).
 *
 * Sequences are consumed in a seeded order: epoch e = ⌊position / count⌋ visits every window
 * once, in the permutation drawn by Rng(deriveSeed(seed, 'epoch' + e)). So the sequence at a
 * run position is a pure function of (stream, seqLen, seed, position), which makes resuming
 * from a checkpoint exact.
 */
export class SequenceSampler {
  /** Number of windows (sequences per epoch). */
  readonly count: number;
  private cachedEpoch = -1;
  private cachedOrder: Int32Array = new Int32Array(0);

  /**
   * @throws ConfigError naming seqLen and the token count when the stream holds fewer than
   * seqLen + 1 tokens, or when seqLen is not a positive integer.
   */
  constructor(
    readonly stream: Int32Array,
    readonly seqLen: number,
    readonly seed: number,
  ) {
    if (!Number.isInteger(seqLen) || seqLen < 1) throw new ConfigError(`train.seqLen = ${seqLen} is invalid: it must be a positive integer`);
    this.count = Math.floor((stream.length - 1) / seqLen);
    if (this.count < 1) {
      throw new ConfigError(
        `the data has ${stream.length} tokens, too few for one sequence of train.seqLen = ${seqLen} (which needs seqLen + 1 = ${seqLen + 1} tokens); add text or lower train.seqLen`,
      );
    }
  }

  /** Window `index` ∈ [0, count) with labels shifted over the whole window. */
  sequence(index: number): Sequence {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) throw new RangeError(`sequence index ${index} outside [0, ${this.count})`);
    const start = index * this.seqLen;
    return {
      tokens: this.stream.slice(start, start + this.seqLen),
      labels: this.stream.slice(start + 1, start + 1 + this.seqLen),
    };
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

/**
 * Run position of the sequence that data-parallel index `dpIndex` uses as batch element
 * `batchIndex` at step `step`: step-major, then dp index, then batch element, so one step
 * consumes dp·batchSize consecutive positions and a resumed run continues at step·dp·batchSize.
 */
export function sequencePosition(step: number, dp: number, batchSize: number, dpIndex: number, batchIndex: number): number {
  return (step * dp + dpIndex) * batchSize + batchIndex;
}
