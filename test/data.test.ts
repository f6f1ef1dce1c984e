import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildTokenStream, SequenceSampler, sequencePosition } from '../src/data/packing.js';
import { shardSequence } from '../src/data/shard.js';
import { detokeniseBrown, loadDocuments } from '../src/data/sources.js';
import { createTokenizer, TOKENIZER_NAMES, TOKENIZER_VOCAB_SIZES } from '../src/data/tokenizer.js';
import { ConfigError } from '../src/errors.js';
import { ParallelDims, type Placement } from '../src/parallel/dims.js';

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

  test('the stream is every document followed by a separator', () => {
    const stream = buildTokenStream(['ab', '', 'c'], tok);
    assert.deepEqual(Array.from(stream), [97, 98, 256, 256, 99, 256]);
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

describe('shardSequence', () => {
  const layouts: { dp: number; hp: number; cp: number; placement: Placement }[] = [
    { dp: 1, hp: 2, cp: 4, placement: 'head-first' },
    { dp: 1, hp: 2, cp: 4, placement: 'context-first' },
    { dp: 2, hp: 2, cp: 2, placement: 'context-first' },
    { dp: 1, hp: 1, cp: 4, placement: 'head-first' },
    { dp: 1, hp: 4, cp: 1, placement: 'head-first' },
    { dp: 1, hp: 1, cp: 1, placement: 'head-first' },
  ];

  for (const layout of layouts) {
    test(`every rank's shard reassembles the sequence: ${JSON.stringify(layout)}`, () => {
      const dims = new ParallelDims(layout);
      const seqLen = 4 * dims.sp * 2;
      const tokens = Int32Array.from({ length: seqLen }, (_, i) => 1000 + i * 3);
      const labels = Int32Array.from({ length: seqLen }, (_, i) => 5000 + i * 11);
      for (let block = 0; block < dims.dp; block++) {
        const seenTok = new Int32Array(seqLen).fill(-1);
        const seenLab = new Int32Array(seqLen).fill(-1);
        for (const rank of dims.spGroup(block * dims.sp)) {
          const shard = shardSequence(dims, rank, tokens, labels);
          assert.equal(shard.tokens.length, seqLen / dims.sp);
          shard.positions.forEach((p, i) => {
            assert.equal(seenTok[p], -1, `position ${p} held twice`);
            seenTok[p] = shard.tokens[i]!;
            seenLab[p] = shard.labels[i]!;
          });
        }
        assert.deepEqual(seenTok, tokens);
        assert.deepEqual(seenLab, labels);
      }
    });
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
        const shard = shardSequence(dims, rank, tokens, tokens);
        assert.deepEqual(Array.from(shard.positions), expected, `${placement} rank ${rank}`);
        assert.deepEqual(Array.from(shard.tokens), expected);
      }
    }
  });

  test('a length that is not a multiple of 2·sp, or mismatched labels, is refused', () => {
    const dims = new ParallelDims({ dp: 1, hp: 2, cp: 2, placement: 'head-first' });
    throwsConfig(() => shardSequence(dims, 0, new Int32Array(12), new Int32Array(12)), 'train.seqLen = 12', '2·sp = 8');
    assert.throws(() => shardSequence(dims, 0, new Int32Array(16), new Int32Array(15)), /16 tokens but 15 labels/);
  });
});
