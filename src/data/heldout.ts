import { ConfigError } from '../errors.js';
import { buildTokenStream, type PackingOptions, type Sequence, SequenceSampler, type TokenStream } from './packing.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * The held-out split (data.valFraction, docs/data.md "Held-out split"): whole documents of the
 * training source that training never sees, scored by validation during training and by
 * `loongtrain eval` without --data.
 *
 * Which documents: the k = max(1, round(valFraction · N)) documents (at most N − 1, so one is
 * left to train on) with the smallest 53-bit hash of their TEXT (ties: the earlier document),
 * listed in source order. A content hash rather than "the last ones" because sources are often
 * sorted (the Brown corpus by genre: its last 1% would all be humour), and rather than a hash of
 * the index because it depends on nothing but the text: the same documents give the same split
 * whatever the seed, the file order or the documents added beside them, and duplicates of one
 * text fall on the same side, so a copy of a validation document is never trained on.
 */

/** Default share of the documents held out (data.valFraction). */
export const DEFAULT_VAL_FRACTION = 0.01;

/** cyrb53: a fast, well-mixed 53-bit hash of a string's UTF-16 code units (public domain, bryc). */
export function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/**
 * Indices (ascending) of the documents held out of `docs` for `valFraction` ∈ [0, 1): none when
 * valFraction is 0 or there are fewer than 2 documents (a single document cannot be split
 * without leaving training nothing), else the max(1, round(valFraction · N)) (≤ N − 1)
 * documents with the smallest {@link hash53} of their text.
 * @throws ConfigError naming data.valFraction when it is outside [0, 1).
 */
export function heldOutDocuments(docs: readonly string[], valFraction: number): number[] {
  if (!(valFraction >= 0 && valFraction < 1)) throw new ConfigError(`data.valFraction = ${valFraction} is invalid: it must be in [0, 1)`);
  const n = docs.length;
  if (valFraction === 0 || n < 2) return [];
  const k = Math.min(n - 1, Math.max(1, Math.round(valFraction * n)));
  const keyed = docs.map((d, i) => ({ h: hash53(d), i }));
  keyed.sort((a, b) => a.h - b.h || a.i - b.i);
  return keyed.slice(0, k).map((x) => x.i).sort((a, b) => a - b);
}

/** The training and validation streams of a split source. */
export interface SplitStreams {
  /** The training documents' stream (buildTokenStream of those documents, in source order). */
  train: TokenStream;
  /** The validation documents' stream (empty stream when nothing is held out). */
  val: TokenStream;
  /** Indices of the validation documents in the source (ascending). */
  validation: number[];
  /** Indices of the training documents in the source (ascending): document d of `train` is source document trainDocuments[d]. */
  trainDocuments: number[];
}

/** Split `docs` by {@link heldOutDocuments} and tokenize each side as training packs it. */
export function splitStreams(docs: readonly string[], tokenizer: Tokenizer, valFraction: number): SplitStreams {
  const validation = heldOutDocuments(docs, valFraction);
  const held = new Set(validation);
  const trainDocuments = docs.map((_, i) => i).filter((i) => !held.has(i));
  return {
    train: buildTokenStream(trainDocuments.map((i) => docs[i]!), tokenizer),
    val: buildTokenStream(validation.map((i) => docs[i]!), tokenizer),
    validation,
    trainDocuments,
  };
}

/** FNV-1a (32-bit) over a token stream, as 8 hex digits: recorded with the split so eval notices a changed source. */
export function streamChecksum(stream: Int32Array): string {
  let h = 0x811c9dc5;
  for (const x of stream) {
    for (let b = 0; b < 32; b += 8) {
      h ^= (x >>> b) & 0xff;
      h = Math.imul(h, 0x01000193);
    }
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

/**
 * The sequences that score a token stream (validation during training, `loongtrain eval`), in
 * stream order, each of `seqLen` tokens so every layout that trains seqLen can run it:
 *
 * - the full windows of the stream exactly as {@link SequenceSampler} cuts them (window k =
 *   stream[k·S … k·S + S], labels shifted, packing as given), then
 * - the tail after the last full window, when it holds a label, as one shorter sequence;
 * - a stream with no full window (fewer than S + 1 tokens) is scored as ONE sequence of its
 *   tokens without the final separator: a single short text scores exactly its n tokens, each
 *   predicting the next (n − 1 labels).
 *
 * A shorter sequence of m tokens is padded to S: cuSeqlens ends at m, so the padding is masked
 * out of attention (it sees nothing and nothing sees it; SequenceLayout), its labels are −1 and
 * the last real token's label is −1 (nothing follows it). `limit` keeps only the first ones.
 */
export function scoringSequences(stream: Int32Array, docStarts: Int32Array, seqLen: number, packing: PackingOptions, limit = Infinity): Sequence[] {
  const S = seqLen;
  const out: Sequence[] = [];
  if (stream.length === 0 || limit < 1) return out;
  if (stream.length < S + 1) {
    const m = stream.length - 1;
    if (m < 2) return out;
    out.push(partialSequence(stream, docStarts, 0, m, S, packing));
    return out;
  }
  const sampler = new SequenceSampler(stream, S, 0, { ...packing, docStarts });
  for (let k = 0; k < sampler.count && out.length < limit; k++) out.push(sampler.sequence(k));
  const start = sampler.count * S;
  const m = stream.length - start;
  if (out.length < limit && m >= 2) out.push(partialSequence(stream, docStarts, start, m, S, packing));
  return out;
}

/**
 * stream[start … start + m) as a sequence padded to S (m ≤ S): labels are the next stream token
 * inside the range (−1 for the last one), with data.packing = "documents" also −1 after each
 * document's last token, positions and document segments as SequenceSampler gives them, and
 * cuSeqlens ending at m (the padding [m, S) is no document).
 */
function partialSequence(stream: Int32Array, docStarts: Int32Array, start: number, m: number, S: number, packing: PackingOptions): Sequence {
  if (m > S) throw new RangeError(`partialSequence: ${m} tokens do not fit a sequence of ${S}`);
  const tokens = new Int32Array(S);
  const labels = new Int32Array(S).fill(-1);
  const positions = Int32Array.from({ length: S }, (_, t) => t);
  tokens.set(stream.subarray(start, start + m));
  // Padding repeats the last real token: any valid id does, it is masked out and has no label.
  tokens.fill(stream[start + m - 1]!, m);
  for (let t = 0; t + 1 < m; t++) labels[t] = stream[start + t + 1]!;
  const cu = [0];
  if (packing.packing === 'documents') {
    // The document holding the first token: the last start ≤ start.
    let d = 0;
    while (d + 1 < docStarts.length && docStarts[d + 1]! <= start) d++;
    let docStart = docStarts[d]!;
    let nextStart = d + 1 < docStarts.length ? docStarts[d + 1]! : stream.length;
    for (let t = 0; t < m; t++) {
      const i = start + t;
      if (i === nextStart) {
        d++;
        docStart = nextStart;
        nextStart = d + 1 < docStarts.length ? docStarts[d + 1]! : stream.length;
        cu.push(t);
      }
      if (packing.positions === 'document') positions[t] = i - docStart;
      if (i + 1 === nextStart) labels[t] = -1;
    }
  }
  cu.push(m);
  return { tokens, labels, positions, cuSeqlens: Int32Array.from(cu) };
}

/**
 * What a checkpoint records of its run's held-out split (TrainerState.heldOut), enough for
 * `loongtrain eval` to rebuild the validation sequences: the source as data.* read it, which
 * documents were held out, and the validation stream's length and checksum to notice a change.
 */
export interface HeldOutRecord {
  valFraction: number;
  /** The training source: data.source, data.path (absolute), data.maxFileMiB, data.invalidText. */
  source: { source: 'brown' | 'files'; path?: string; maxFileMiB?: number; invalidText?: 'error' | 'skip' };
  /** Documents of the source. */
  documents: number;
  /** Indices of the held-out documents (ascending). */
  validation: number[];
  /** Tokens of the validation stream (separators included) and its streamChecksum. */
  tokens: number;
  checksum: string;
  /** train.evalSequences: the validation sequences training scores (the first ones of scoringSequences). */
  sequences: number;
}

/**
 * Rebuild the validation stream of a recorded split from the source's documents.
 * @throws ConfigError when the source's document count or the validation stream differs from
 * the record (the data changed since training), naming the source.
 */
export function heldOutStream(record: HeldOutRecord, docs: readonly string[], tokenizer: Tokenizer): TokenStream {
  const where = record.source.source === 'brown' ? 'the Brown corpus' : `data.path ${record.source.path}`;
  if (docs.length !== record.documents) {
    throw new ConfigError(`the held-out split cannot be rebuilt: ${where} now has ${docs.length} documents, the checkpoint's run had ${record.documents}; give the held-out text with --data`);
  }
  const val = buildTokenStream(record.validation.map((i) => docs[i]!), tokenizer);
  if (val.stream.length !== record.tokens || streamChecksum(val.stream) !== record.checksum) {
    throw new ConfigError(`the held-out split cannot be rebuilt: the held-out documents of ${where} changed since training (${val.stream.length} tokens, checksum ${streamChecksum(val.stream)}; recorded ${record.tokens}, ${record.checksum}); give the held-out text with --data`);
  }
  return val;
}
