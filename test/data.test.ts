import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildTokenStream, packingOptions, type PackingOptions, type Sequence, SequenceSampler, sequencePosition } from '../src/data/packing.js';
import { sequenceLayoutOf, shardSequence } from '../src/data/shard.js';
import { detokeniseBrown, loadDocuments } from '../src/data/sources.js';
import { createTokenizer, TOKENIZER_NAMES, TOKENIZER_VOCAB_SIZES } from '../src/data/tokenizer.js';
import { ConfigError } from '../src/errors.js';
import { ParallelDims, type Placement } from '../src/parallel/dims.js';
import { SHARDINGS, type Sharding } from '../src/parallel/sequence-layout.js';
import { Rng } from '../src/tensor/rng.js';

// Compiled to dist/test/, the fixtures stay in test/fixtures/.
const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/data');
const fx = (p: string): string => join(FIXTURES, p);

const tmp = mkdtempSync(join(tmpdir(), 'loongtrain-data-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Assert `fn` throws a ConfigError whose message contains every fragment. */
function throwsConfig(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

describe('Brown corpus source', () => {
  const docs = loadDocuments({ source: 'brown' }).documents;

  test('one document per corpus file (500), in file-name order', () => {
    assert.equal(docs.length, 500);
    assert.ok(docs[0]!.startsWith('The Fulton County Grand Jury said Friday an investigation'), docs[0]!.slice(0, 80));
  });

  test('tags are gone and the text reads like English', () => {
    const sample = docs.filter((_, i) => i % 25 === 0).join('\n\n');
    // Tags are lower-case words after a slash (at, nn-tl, vbd, np$ ...); dates like 1/2 may remain.
    assert.equal(/[A-Za-z.,'"]\/[a-z.,*'`(:-]/.test(sample), false, 'a word/tag pair survived');
    assert.equal(sample.includes('``'), false);
    assert.equal(sample.includes("''"), false);
    assert.equal(/ [,.;:?!]/.test(sample), false, 'space before punctuation');
    assert.ok(sample.includes('\n\n'), 'paragraph breaks kept');
    const words = sample.toLowerCase().match(/[a-z]+/g) ?? [];
    const counts = new Map<string, number>();
    for (const w of words) counts.set(w, (counts.get(w) ?? 0) + 1);
    const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([w]) => w);
    assert.ok(top.includes('the') && top.includes('of'), `most frequent words: ${top.join(' ')}`);
  });

  test('detokeniser: tags, quotes, punctuation, headlines and paragraphs', () => {
    const tagged = [
      '',
      '\tThe/at 1/2/cd share/nn ,/, he/pps said/vbd ,/, ``/`` was/bedz (/( not/* )/) fair/jj \'\'/\'\' ./.',
      'Is/bez it/pps Jr./np ./.',
      '',
      '',
      'Big/jj-hl News/nn-hl',
      'Then/rb ;/. ;/. done/vbn !/.',
      '',
    ].join('\n');
    assert.equal(detokeniseBrown(tagged), 'The 1/2 share, he said, "was (not) fair". Is it Jr.\n\nBig News\n\nThen; done!');
  });
});

describe('files source', () => {
  test('a .txt file is one document', () => {
    assert.deepEqual(loadDocuments({ source: 'files', path: fx('single.txt') }).documents, ['The quick brown fox jumps over the lazy dog.\nIt was not amused.\n']);
  });

  test('a .jsonl file gives one document per non-blank line', () => {
    assert.deepEqual(loadDocuments({ source: 'files', path: fx('docs.jsonl') }).documents, [
      'First document.',
      'Second document, with "quotes" and a newline\nhere.',
      'Third: café.',
    ]);
  });

  test('a folder is read recursively in sorted path order', () => {
    assert.deepEqual(loadDocuments({ source: 'files', path: fx('folder') }).documents, [
      'Folder document a.\n',
      'Folder document c.\n',
      'Folder jsonl line one.',
      'Folder jsonl line two.',
    ]);
  });

  test('errors name the file, the line and what is expected', () => {
    throwsConfig(() => loadDocuments({ source: 'files' }), 'data.path is required');
    const missing = join(tmp, 'nope.txt');
    throwsConfig(() => loadDocuments({ source: 'files', path: missing }), missing, 'does not exist');
    throwsConfig(() => loadDocuments({ source: 'files', path: fx('bad/not-json.jsonl') }), 'not-json.jsonl line 2', 'not valid JSON', '{"text": "..."}');
    throwsConfig(() => loadDocuments({ source: 'files', path: fx('bad/no-text.jsonl') }), 'no-text.jsonl line 3', 'no string field "text"');
    throwsConfig(() => loadDocuments({ source: 'files', path: fx('bad/number-text.jsonl') }), 'number-text.jsonl line 1', 'got number');
    throwsConfig(() => loadDocuments({ source: 'files', path: fx('bad/empty.txt') }), 'empty.txt is empty');
    throwsConfig(() => loadDocuments({ source: 'files', path: fx('bad/table.csv') }), 'table.csv', 'unsupported extension ".csv"', '.txt, .jsonl');
    // A folder reports its first bad file.
    throwsConfig(() => loadDocuments({ source: 'files', path: fx('bad') }), 'empty.txt is empty');
    const emptyDir = join(tmp, 'empty-dir');
    mkdirSync(emptyDir);
    throwsConfig(() => loadDocuments({ source: 'files', path: emptyDir }), emptyDir, 'no files');
    const emptyJsonl = join(tmp, 'blank.jsonl');
    writeFileSync(emptyJsonl, '\n\n');
    throwsConfig(() => loadDocuments({ source: 'files', path: emptyJsonl }), 'blank.jsonl is empty', '"text"');
    throwsConfig(() => loadDocuments({ source: 'web' as 'files' }), 'data.source = "web"', '"brown", "files"');
  });
});

describe('tokenizers', () => {
  const text = 'Hello, world! Grüße — 日本語 🙂 <|endoftext|> done.';

  test('byte: UTF-8 bytes, separator 256, exact round trip', () => {
    const tok = createTokenizer('byte');
    assert.equal(tok.vocabSize, 257);
    assert.equal(tok.separatorId, 256);
    const ids = tok.encode(text);
    assert.deepEqual(Array.from(ids), Array.from(Buffer.from(text, 'utf8')));
    assert.equal(tok.decode(ids), text);
    assert.equal(tok.decode([104, 105, 256, 104]), 'hi<|endoftext|>h');
    assert.throws(() => tok.decode([65, 257]), /token id 257 at index 1 is outside \[0, 257\)/);
  });

  test('gpt2: GPT-2 BPE ids, separator 50256, round trip, separator never produced by text', () => {
    const tok = createTokenizer('gpt2');
    assert.equal(tok.vocabSize, 50257);
    assert.equal(tok.separatorId, 50256);
    // GPT-2's published ids for "Hello world".
    assert.deepEqual(Array.from(tok.encode('Hello world')), [15496, 995]);
    const ids = tok.encode(text);
    assert.equal(ids.includes(50256), false);
    assert.equal(tok.decode(ids), text);
    assert.equal(tok.decode([15496, 50256]), 'Hello<|endoftext|>');
    assert.throws(() => tok.decode([50257]), /outside \[0, 50257\)/);
  });

  test('declared vocabulary sizes match the tokenizers; unknown names list the valid ones', () => {
    for (const name of TOKENIZER_NAMES) assert.equal(createTokenizer(name).vocabSize, TOKENIZER_VOCAB_SIZES[name]);
    throwsConfig(() => createTokenizer('sentencepiece'), 'data.tokenizer = "sentencepiece"', '"byte", "gpt2"');
  });
});

describe('packing and sampling', () => {
  const tok = createTokenizer('byte');

  test('the stream is every document followed by a separator; docStarts says where each starts', () => {
    const { stream, docStarts } = buildTokenStream(['ab', '', 'c'], tok);
    assert.deepEqual(Array.from(stream), [97, 98, 256, 256, 99, 256]);
    assert.deepEqual(Array.from(docStarts), [0, 3, 4]);
  });

  test('windows of seqLen+1 at stride seqLen; labels shifted over the whole window', () => {
    const stream = Int32Array.from({ length: 103 }, (_, i) => (i * 7) % 251);
    const seqLen = 10;
    const s = new SequenceSampler(stream, seqLen, 1);
    assert.equal(s.count, 10); // floor((103 − 1) / 10)
    for (let k = 0; k < s.count; k++) {
      const { tokens, labels } = s.sequence(k);
      assert.equal(tokens.length, seqLen);
      assert.equal(labels.length, seqLen);
      for (let t = 0; t < seqLen; t++) {
        assert.equal(tokens[t], stream[k * seqLen + t]);
        assert.equal(labels[t], stream[k * seqLen + t + 1]);
      }
    }
    // The last label of a window is the first token of the next one.
    assert.equal(s.sequence(3).labels[seqLen - 1], s.sequence(4).tokens[0]);
    assert.throws(() => s.sequence(10), RangeError);
  });

  test('too little text is a clear error naming seqLen and the token count', () => {
    throwsConfig(() => new SequenceSampler(new Int32Array(64), 64, 1), 'train.seqLen = 64', '64 tokens', '65');
    assert.equal(new SequenceSampler(new Int32Array(65), 64, 1).count, 1);
  });

  test('each epoch is a seeded permutation; positions are a pure function of the seed', () => {
    const stream = Int32Array.from({ length: 8 * 50 + 1 }, (_, i) => i);
    const a = new SequenceSampler(stream, 8, 42);
    const epochs = [0, 1, 2].map((e) => Array.from({ length: a.count }, (_, i) => a.windowAt(e * a.count + i)));
    for (const order of epochs) assert.deepEqual([...order].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
    assert.notDeepEqual(epochs[0], epochs[1]);
    assert.notDeepEqual(epochs[0], Array.from({ length: 50 }, (_, i) => i));
    // A fresh sampler (a resumed run) jumping straight to a position agrees with one that walked there.
    const resumed = new SequenceSampler(stream, 8, 42);
    for (const pos of [137, 3, 99, 149, 0]) {
      assert.deepEqual(resumed.globalSequence(pos), a.globalSequence(pos));
      assert.deepEqual(a.globalSequence(pos).tokens[0], a.windowAt(pos) * 8);
    }
    const other = new SequenceSampler(stream, 8, 43);
    assert.notDeepEqual(
      Array.from({ length: 50 }, (_, i) => other.windowAt(i)),
      epochs[0],
    );
  });

  test('sequencePosition: step-major, then dp index, then batch element', () => {
    const dp = 3;
    const batch = 2;
    const seen: number[] = [];
    for (let step = 0; step < 4; step++) for (let r = 0; r < dp; r++) for (let b = 0; b < batch; b++) seen.push(sequencePosition(step, dp, batch, r, b));
    assert.deepEqual(seen, Array.from({ length: 24 }, (_, i) => i));
  });
});

describe('document packing', () => {
  const tok = createTokenizer('byte');
  const SEP = tok.separatorId;
  const DOCS: PackingOptions = { packing: 'documents', positions: 'document' };

  /**
   * What every stream index holds, worked out from the documents' texts alone (ASCII text: one
   * byte token per character, then the separator), not from docStarts or the sampler.
   */
  function layout(texts: readonly string[]): { token: number[]; doc: number[]; offset: number[] } {
    const token: number[] = [];
    const doc: number[] = [];
    const offset: number[] = [];
    texts.forEach((text, d) => {
      for (let o = 0; o <= text.length; o++) {
        token.push(o === text.length ? SEP : text.charCodeAt(o));
        doc.push(d);
        offset.push(o);
      }
    });
    return { token, doc, offset };
  }

  /** Seeded ASCII documents: many shorter than a chunk (some empty), some longer than seqLen. */
  function corpus(n: number, seed: number): string[] {
    const rng = new Rng(seed);
    return Array.from({ length: n }, () => {
      const kind = rng.int(4);
      const len = kind === 0 ? rng.int(4) : kind === 3 ? 17 + rng.int(24) : 4 + rng.int(9);
      return Array.from({ length: len }, () => String.fromCharCode(97 + rng.int(26))).join('');
    });
  }

  function sampler(texts: readonly string[], seqLen: number, seed: number, options?: PackingOptions): SequenceSampler {
    const { stream, docStarts } = buildTokenStream(texts, tok);
    return new SequenceSampler(stream, seqLen, seed, options === undefined ? undefined : { ...options, docStarts });
  }

  const arr = (a: Int32Array): number[] => Array.from(a);
  const chars = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));

  test('the worked example of docs/data.md: documents of 5, 3 and 9 characters, seqLen 8', () => {
    // Stream: a b c d e | f g h | i j k l m n o p q | (| = separator), documents at 0, 6, 10.
    const s = sampler(['abcde', 'fgh', 'ijklmnopq'], 8, 1, DOCS);
    assert.equal(s.count, 2); // ⌊(20 − 1) / 8⌋
    const w0 = s.sequence(0);
    assert.deepEqual(arr(w0.tokens), [...chars('abcde'), SEP, ...chars('fg')]);
    assert.deepEqual(arr(w0.labels), [...chars('bcde'), SEP, -1, ...chars('gh')]);
    assert.deepEqual(arr(w0.positions), [0, 1, 2, 3, 4, 5, 0, 1]);
    assert.deepEqual(arr(w0.cuSeqlens), [0, 6, 8]);
    // Window 1 starts inside "fgh": its first segment is that document's tail, positions continue.
    const w1 = s.sequence(1);
    assert.deepEqual(arr(w1.tokens), [...chars('h'), SEP, ...chars('ijklmn')]);
    assert.deepEqual(arr(w1.labels), [SEP, -1, ...chars('jklmno')], 'the last label ("o") stays: it is in the same document');
    assert.deepEqual(arr(w1.positions), [2, 3, 0, 1, 2, 3, 4, 5]);
    assert.deepEqual(arr(w1.cuSeqlens), [0, 2, 8]);
  });

  for (const seqLen of [8, 5, 16]) {
    test(`every window agrees with the documents' texts (seqLen ${seqLen}): tokens, labels, positions, cu_seqlens`, () => {
      const texts = corpus(60, 7);
      const { token, doc, offset } = layout(texts);
      const s = sampler(texts, seqLen, 3, DOCS);
      assert.equal(s.count, Math.floor((token.length - 1) / seqLen));
      let midStarts = 0;
      let manySegments = 0;
      for (let k = 0; k < s.count; k++) {
        const { tokens, labels, positions, cuSeqlens } = s.sequence(k);
        const at = (t: number): number => k * seqLen + t;
        const cu = [0];
        for (let t = 1; t < seqLen; t++) if (offset[at(t)] === 0) cu.push(t);
        cu.push(seqLen);
        assert.deepEqual(arr(tokens), Array.from({ length: seqLen }, (_, t) => token[at(t)]), `window ${k} tokens`);
        assert.deepEqual(arr(positions), Array.from({ length: seqLen }, (_, t) => offset[at(t)]), `window ${k} positions`);
        assert.deepEqual(arr(cuSeqlens), cu, `window ${k} cu_seqlens`);
        assert.deepEqual(arr(labels), Array.from({ length: seqLen }, (_, t) => (doc[at(t) + 1] === doc[at(t)] ? token[at(t) + 1] : -1)), `window ${k} labels`);
        if (offset[at(0)]! > 0) midStarts++;
        if (cu.length > 3) manySegments++;
      }
      assert.ok(midStarts > 0 && manySegments > 0, `the corpus must exercise windows that start inside a document (${midStarts}) and windows of several short documents (${manySegments})`);
    });
  }

  test('a document longer than seqLen is split over 3 windows with its positions continuing', () => {
    // Stream: "ab|" at 0–2, 20 × "x" and its separator at 3–23, "cd|" at 24–26; seqLen 8 gives 3 windows.
    const long = 'x'.repeat(20);
    const s = sampler(['ab', long, 'cd'], 8, 5, DOCS);
    assert.equal(s.count, 3);
    const [w0, w1, w2] = [0, 1, 2].map((k) => s.sequence(k)) as [Sequence, Sequence, Sequence];
    assert.deepEqual(arr(w0.cuSeqlens), [0, 3, 8]);
    assert.deepEqual(arr(w0.positions), [0, 1, 2, 0, 1, 2, 3, 4]);
    // Windows 1 and 2 hold only the long document's middle and tail: one segment, positions not from 0.
    assert.deepEqual(arr(w1.cuSeqlens), [0, 8]);
    assert.deepEqual(arr(w1.positions), [5, 6, 7, 8, 9, 10, 11, 12]);
    assert.deepEqual(arr(w2.cuSeqlens), [0, 8]);
    assert.deepEqual(arr(w2.positions), [13, 14, 15, 16, 17, 18, 19, 20]);
    assert.equal(w1.positions[0], w0.positions[7]! + 1);
    assert.equal(w2.positions[0], w1.positions[7]! + 1);
    // Inside the long document every label is the next "x" (or its separator); after its separator (offset 20) the label is ignored.
    assert.deepEqual(arr(w1.labels), Array(8).fill(120));
    assert.deepEqual(arr(w2.labels), [...Array(6).fill(120), SEP, -1]);
    assert.deepEqual(arr(w0.labels), [98, SEP, -1, ...Array(5).fill(120)]);
  });

  test('labels are ignored exactly after each document end and nowhere else', () => {
    const texts = corpus(80, 11);
    const seqLen = 8;
    const docs = sampler(texts, seqLen, 9, DOCS);
    const concat = sampler(texts, seqLen, 9);
    let ignored = 0;
    for (let k = 0; k < docs.count; k++) {
      const d = docs.sequence(k);
      const c = concat.sequence(k);
      for (let t = 0; t < seqLen; t++) {
        // The byte tokenizer never encodes text as the separator, so a separator token is a document end.
        const atEnd = d.tokens[t] === SEP;
        assert.equal(d.labels[t] === -1, atEnd, `window ${k} token ${t}`);
        if (!atEnd) assert.equal(d.labels[t], c.labels[t]);
        if (atEnd) ignored++;
      }
    }
    assert.ok(ignored > 0);
    assert.ok(arr(concat.sequence(0).labels).every((l) => l >= 0), 'concat ignores no label');
  });

  test('concat mode is unchanged: stream slices, cu_seqlens [0, S], positions 0 … S − 1', () => {
    const texts = corpus(40, 13);
    const { token } = layout(texts);
    const seqLen = 8;
    const plain = sampler(texts, seqLen, 21);
    const explicit = sampler(texts, seqLen, 21, { packing: 'concat', positions: 'sequence' });
    const docs = sampler(texts, seqLen, 21, DOCS);
    for (let k = 0; k < plain.count; k++) {
      const seq = plain.sequence(k);
      assert.deepEqual(arr(seq.tokens), token.slice(k * seqLen, k * seqLen + seqLen));
      assert.deepEqual(arr(seq.labels), token.slice(k * seqLen + 1, k * seqLen + seqLen + 1));
      assert.deepEqual(arr(seq.cuSeqlens), [0, seqLen]);
      assert.deepEqual(arr(seq.positions), Array.from({ length: seqLen }, (_, t) => t));
      assert.deepEqual(explicit.sequence(k), seq);
      assert.deepEqual(docs.sequence(k).tokens, seq.tokens, 'the same windows with documents');
    }
    // The same window order in every mode (the order depends only on the window count and seed).
    for (let pos = 0; pos < 3 * plain.count; pos++) assert.equal(docs.windowAt(pos), plain.windowAt(pos));
  });

  test('positions = "sequence" with documents: positions 0 … S − 1, document segments and ignored labels kept', () => {
    const texts = corpus(40, 17);
    const seqLen = 8;
    const byDoc = sampler(texts, seqLen, 2, DOCS);
    const bySeq = sampler(texts, seqLen, 2, { packing: 'documents', positions: 'sequence' });
    for (let k = 0; k < byDoc.count; k++) {
      const d = byDoc.sequence(k);
      const s = bySeq.sequence(k);
      assert.deepEqual(arr(s.positions), Array.from({ length: seqLen }, (_, t) => t));
      assert.deepEqual(s.cuSeqlens, d.cuSeqlens);
      assert.deepEqual(s.labels, d.labels);
      assert.deepEqual(s.tokens, d.tokens);
    }
  });

  test('the sampler is a pure function of stream, docStarts, seqLen, seed, position and options', () => {
    const texts = corpus(50, 19);
    const { stream, docStarts } = buildTokenStream(texts, tok);
    const shared = (a: Int32Array): Int32Array => {
      const s = new Int32Array(new SharedArrayBuffer(a.byteLength));
      s.set(a);
      return s;
    };
    const walked = new SequenceSampler(stream, 8, 42, { ...DOCS, docStarts });
    const seen = Array.from({ length: 3 * walked.count }, (_, pos) => walked.globalSequence(pos));
    // A resumed run: a fresh sampler (here over the ranks' shared buffers) jumping straight to a position.
    const resumed = new SequenceSampler(shared(stream), 8, 42, { ...DOCS, docStarts: shared(docStarts) });
    for (const pos of [2 * walked.count + 5, 3, walked.count, 0, walked.count - 1]) assert.deepEqual(resumed.globalSequence(pos), seen[pos]);
    const other = new SequenceSampler(stream, 8, 43, { ...DOCS, docStarts });
    assert.notDeepEqual(
      Array.from({ length: walked.count }, (_, i) => other.windowAt(i)),
      Array.from({ length: walked.count }, (_, i) => walked.windowAt(i)),
    );
  });

  test('packing options: defaults, and errors naming the keys and the valid values', () => {
    assert.deepEqual(packingOptions({}), { packing: 'concat', positions: 'sequence' });
    assert.deepEqual(packingOptions({ packing: 'documents' }), { packing: 'documents', positions: 'document' });
    assert.deepEqual(packingOptions({ packing: 'documents', positions: 'sequence' }), { packing: 'documents', positions: 'sequence' });
    const both = ['data.positions = "document"', 'data.packing = "concat"', 'data.packing = "documents"', 'data.positions = "sequence"'];
    throwsConfig(() => packingOptions({ positions: 'document' }), ...both);
    throwsConfig(() => packingOptions({ packing: 'concat', positions: 'document' }), ...both);
    const { stream, docStarts } = buildTokenStream(['abcdefghij'], tok);
    throwsConfig(() => new SequenceSampler(stream, 4, 1, { positions: 'document', docStarts }), ...both);
    throwsConfig(() => packingOptions({ packing: 'packed' as 'concat' }), 'data.packing = "packed"', '"concat", "documents"');
    throwsConfig(() => packingOptions({ packing: 'documents', positions: 'token' as 'sequence' }), 'data.positions = "token"', '"document", "sequence"');
    assert.throws(() => new SequenceSampler(stream, 4, 1, { packing: 'documents' }), /needs the document starts/);
    assert.throws(() => new SequenceSampler(stream, 4, 1, { packing: 'documents', docStarts: Int32Array.of(1) }), /docStarts\[0\] = 1/);
    assert.throws(() => new SequenceSampler(stream, 4, 1, { packing: 'documents', docStarts: Int32Array.of(0, 5, 5) }), /docStarts\[2\] = 5/);
    assert.throws(() => new SequenceSampler(stream, 4, 1, { packing: 'documents', docStarts: Int32Array.of(0, 11) }), /docStarts\[1\] = 11/);
  });
});

describe('shardSequence', () => {
  const layouts: { dp: number; hp: number; cp: number; placement: Placement }[] = [
    { dp: 1, hp: 2, cp: 4, placement: 'head-first' },
    { dp: 1, hp: 2, cp: 4, placement: 'context-first' },
    { dp: 2, hp: 2, cp: 2, placement: 'context-first' },
    { dp: 1, hp: 1, cp: 4, placement: 'head-first' },
    { dp: 1, hp: 4, cp: 1, placement: 'head-first' },
    { dp: 1, hp: 1, cp: 1, placement: 'head-first' },
  ];
  const shardOf = (dims: ParallelDims, rank: number, seq: Sequence, sharding: Sharding = 'zigzag') => {
    const { h, c } = dims.coords(rank);
    return shardSequence(sequenceLayoutOf(dims, seq, { causal: true, sharding, balanceChunks: 4 }), h, c, seq);
  };

  for (const layout of layouts) {
    for (const sharding of SHARDINGS) {
      test(`every rank's shard reassembles the sequence (${sharding}): ${JSON.stringify(layout)}`, () => {
        const dims = new ParallelDims(layout);
        const seqLen = 4 * dims.sp * 2;
        const tokens = Int32Array.from({ length: seqLen }, (_, i) => 1000 + i * 3);
        const labels = Int32Array.from({ length: seqLen }, (_, i) => 5000 + i * 11);
        // RoPE positions that are not the sequence index, so the test sees which array each shard reads.
        const positions = Int32Array.from({ length: seqLen }, (_, i) => i % 5);
        const seq: Sequence = { tokens, labels, positions, cuSeqlens: Int32Array.of(0, 3, seqLen - 1, seqLen) };
        for (let block = 0; block < dims.dp; block++) {
          const seenTok = new Int32Array(seqLen).fill(-1);
          const seenLab = new Int32Array(seqLen).fill(-1);
          const seenPos = new Int32Array(seqLen).fill(-1);
          for (const rank of dims.spGroup(block * dims.sp)) {
            const shard = shardOf(dims, rank, seq, sharding);
            assert.equal(shard.tokens.length, seqLen / dims.sp);
            shard.tokens.forEach((t, i) => {
              const g = (t - 1000) / 3;
              assert.equal(seenTok[g], -1, `token ${g} held twice`);
              seenTok[g] = t;
              seenLab[g] = shard.labels[i]!;
              seenPos[g] = shard.positions[i]!;
            });
          }
          assert.deepEqual(seenTok, tokens);
          assert.deepEqual(seenLab, labels);
          assert.deepEqual(seenPos, positions);
        }
      });
    }
  }

  test('hp=2, cp=4 matches the table of algorithms.md §2 for both placements', () => {
    // Units of S/16 held by each global rank (algorithms.md §2 example).
    const table: Record<Placement, number[]> = {
      'head-first': [0, 14, 2, 12, 4, 10, 6, 8],
      'context-first': [0, 2, 4, 6, 14, 12, 10, 8],
    };
    const seqLen = 64;
    const unit = seqLen / 16;
    const tokens = Int32Array.from({ length: seqLen }, (_, i) => i);
    for (const placement of ['head-first', 'context-first'] as const) {
      const dims = new ParallelDims({ dp: 1, hp: 2, cp: 4, placement });
      for (let rank = 0; rank < 8; rank++) {
        const first = table[placement][rank]! * unit;
        const expected = Array.from({ length: 2 * unit }, (_, i) => first + i);
        const shard = shardOf(dims, rank, { tokens, labels: tokens, positions: tokens, cuSeqlens: Int32Array.of(0, seqLen) });
        assert.deepEqual(Array.from(shard.positions), expected, `${placement} rank ${rank}`);
        assert.deepEqual(Array.from(shard.tokens), expected);
      }
    }
  });

  test('a length that is not a multiple of 2·sp, or mismatched labels, is refused', () => {
    const dims = new ParallelDims({ dp: 1, hp: 2, cp: 2, placement: 'head-first' });
    const seq = (n: number, labels = n): Sequence => ({ tokens: new Int32Array(n), labels: new Int32Array(labels), positions: new Int32Array(n), cuSeqlens: Int32Array.of(0, n) });
    throwsConfig(() => shardOf(dims, 0, seq(12)), 'train.seqLen = 12', '2·sp = 8');
    assert.throws(() => shardOf(dims, 0, seq(16, 15)), /16 tokens but 15 labels/);
  });
});
