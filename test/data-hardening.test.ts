import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { after, describe, test } from 'node:test';
import { type DataSourceConfig, findInvalidText, loadDocuments } from '../src/data/sources.js';
import { loadConfig, parseConfig } from '../src/train/config.js';
import { train } from '../src/train/train.js';
import { configError } from './helpers/config-error.js';

const tmp = mkdtempSync(join(tmpdir(), 'loongtrain-data-hardening-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let dirs = 0;

/** A fresh folder under tmp holding `files` (relative path → content). */
function folder(files: Record<string, string | Uint8Array>): string {
  const dir = join(tmp, `case-${dirs++}`);
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(join(dir, rel, '..'), { recursive: true });
    writeFileSync(join(dir, rel), content);
  }
  mkdirSync(dir, { recursive: true });
  return dir;
}


const files = (path: string, extra: Partial<DataSourceConfig> = {}): DataSourceConfig => ({ source: 'files', path, ...extra });

const SOURCES_JS = new URL('../src/data/sources.js', import.meta.url).href;

/**
 * loadDocuments(source) in a child process bounded by a timeout: a loader that blocks on a FIFO
 * or reads /dev/zero without end blocks its whole thread, so only a separate process lets the
 * test fail instead of hanging. Returns the error's name and message.
 */
function loadInChild(source: DataSourceConfig): { name: string; message: string } {
  const script = `
    const { loadDocuments } = await import(${JSON.stringify(SOURCES_JS)});
    try { loadDocuments(${JSON.stringify(source)}); console.log(JSON.stringify({ name: 'none', message: 'loaded' })); }
    catch (e) { console.log(JSON.stringify({ name: e.name, message: e.message })); }`;
  const started = Date.now();
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 15_000, encoding: 'utf8', maxBuffer: 1 << 20 });
  assert.equal(child.error, undefined, `loading ${source.path} did not finish in 15 s (${Date.now() - started} ms): ${String(child.error)}`);
  assert.equal(child.status, 0, `loading ${source.path} crashed (signal ${child.signal}): ${child.stderr.slice(-500)}`);
  return JSON.parse(child.stdout) as { name: string; message: string };
}

describe('only regular files are read', () => {
  test('a FIFO named x.txt is refused at once, given directly or inside a folder, never opened', () => {
    const dir = folder({ 'a.txt': 'Some text.\n' });
    const fifo = join(dir, 'x.txt');
    execFileSync('mkfifo', [fifo]);
    for (const path of [fifo, dir]) {
      const started = Date.now();
      const r = loadInChild(files(path));
      assert.equal(r.name, 'ConfigError', r.message);
      assert.equal(r.message, `data file ${fifo} is a FIFO (named pipe), not a regular file; only regular .txt and .jsonl files are read`);
      assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
    }
  });

  test('a .txt symbolic link to /dev/zero is refused as a character device', () => {
    const dir = folder({ 'a.txt': 'Some text.\n' });
    const zero = join(dir, 'zero.txt');
    symlinkSync('/dev/zero', zero);
    for (const path of [zero, dir]) {
      const r = loadInChild(files(path));
      assert.equal(r.name, 'ConfigError', r.message);
      assert.equal(r.message, `data file ${zero} is a character device (through a symbolic link), not a regular file; only regular .txt and .jsonl files are read`);
    }
  });

  test('a symbolic link named x.txt to a folder, inside the data folder, is refused', () => {
    const target = folder({ 'inner.txt': 'Inner text.\n' });
    const dir = folder({ 'a.txt': 'Some text.\n' });
    symlinkSync(target, join(dir, 'x.txt'));
    configError(() => loadDocuments(files(dir)), `data file ${join(dir, 'x.txt')} is a folder (through a symbolic link), not a regular file`);
  });

  test('data.path may be a symbolic link to a folder; a dangling link is a clear error', () => {
    const target = folder({ 'a.txt': 'Linked folder text.\n' });
    const link = join(tmp, `link-${dirs++}`);
    symlinkSync(target, link);
    assert.deepEqual(loadDocuments(files(link)).documents, ['Linked folder text.\n']);
    const dir = folder({ 'a.txt': 'Some text.\n' });
    symlinkSync(join(dir, 'missing.txt'), join(dir, 'gone.txt'));
    configError(() => loadDocuments(files(dir)), `data file ${join(dir, 'gone.txt')} cannot be read`, 'ENOENT');
  });

  test('a file over data.maxFileMiB is refused before reading, naming the file, its size and the key', () => {
    const MiB = 2 ** 20;
    const dir = folder({ 'big.txt': 'a'.repeat(1.5 * MiB), 'edge.txt': 'b'.repeat(MiB), 'over.txt': 'c'.repeat(MiB + 1) });
    const big = join(dir, 'big.txt');
    configError(() => loadDocuments(files(big, { maxFileMiB: 1 })), `data file ${big} is 1.5 MiB (1572864 bytes), larger than data.maxFileMiB = 1`, '--set data.maxFileMiB=2');
    assert.equal(loadDocuments(files(big, { maxFileMiB: 2 })).documents[0]!.length, 1.5 * MiB);
    // The limit is inclusive: exactly 1 MiB is read, one byte more is not.
    assert.equal(loadDocuments(files(join(dir, 'edge.txt'), { maxFileMiB: 1 })).documents[0]!.length, MiB);
    configError(() => loadDocuments(files(join(dir, 'over.txt'), { maxFileMiB: 1 })), 'over.txt', '(1048577 bytes)', 'data.maxFileMiB = 1');
    // The default limit (1024 MiB) reads all three.
    assert.equal(loadDocuments(files(dir)).documents.length, 3);
  });
});

const bytes = (...parts: (string | number[])[]): Uint8Array => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

describe('text must be UTF-8', () => {
  const cases: [string, Uint8Array, string][] = [
    ['a lone 0xff', bytes('abc', [0xff], 'def'), 'invalid byte 0xff at offset 3'],
    ['a continuation byte after a complete sequence', bytes('€', [0x80]), 'invalid byte 0x80 at offset 3'],
    ['a multi-byte sequence cut off by the end', bytes('héllo', [0xe2, 0x82]), 'truncated sequence 0xe2 0x82 at offset 6'],
    ['a lone lead byte at the end', bytes('ab', [0xf0]), 'truncated sequence 0xf0 at offset 2'],
    ['a two-byte overlong form (C0 AF = "/")', bytes('ab', [0xc0, 0xaf]), 'invalid byte 0xc0 at offset 2'],
    ['a three-byte overlong form', bytes('a', [0xe0, 0x80, 0xaf]), 'invalid sequence 0xe0 0x80 at offset 1'],
    ['a four-byte overlong form', bytes([0xf0, 0x8f, 0xbf, 0xbf]), 'invalid sequence 0xf0 0x8f at offset 0'],
    ['an encoded surrogate (U+D800)', bytes('x', [0xed, 0xa0, 0x80]), 'invalid sequence 0xed 0xa0 at offset 1'],
    ['a code point past U+10FFFF', bytes([0xf4, 0x90, 0x80, 0x80]), 'invalid sequence 0xf4 0x90 at offset 0'],
    ['a sequence broken by ASCII', bytes('ok ', [0xf0, 0x9f, 0x98], 'A'), 'invalid sequence 0xf0 0x9f 0x98 0x41 at offset 3'],
    ['a NUL byte', bytes('ab', [0x00], 'cd'), 'NUL byte 0x00 at offset 2'],
    ['a NUL before an invalid byte', bytes([0x00, 0xff]), 'NUL byte 0x00 at offset 0'],
  ];
  for (const [name, content, where] of cases) {
    test(`refused with the offset: ${name}`, () => {
      const file = join(folder({ 'x.txt': content }), 'x.txt');
      const message = configError(() => loadDocuments(files(file)));
      assert.equal(message, `data file ${file} is not valid UTF-8 text: ${where} (binary file?)`);
    });
  }

  test('the edges of valid UTF-8 are accepted, and a leading byte-order mark is dropped', () => {
    const text = 'A\u0080\u07ff\u0800\ud7ff\ue000\uffff\u{10000}\u{10ffff}😀 café';
    const file = join(folder({ 'x.txt': bytes([0xef, 0xbb, 0xbf], text) }), 'x.txt');
    assert.deepEqual(loadDocuments(files(file)).documents, [text]);
  });

  test('the offset in a .jsonl file counts bytes from the start of the file', () => {
    const file = join(folder({ 'x.jsonl': bytes('{"text": "ok"}\n{"text": "b', [0xff], 'd"}\n') }), 'x.jsonl');
    configError(() => loadDocuments(files(file)), 'invalid byte 0xff at offset 26');
  });

  test('findInvalidText agrees with the fatal TextDecoder on random almost-valid bytes, and the text before the offset is valid', () => {
    const fatal = new TextDecoder('utf-8', { fatal: true });
    const valid = (b: Uint8Array): boolean => {
      try {
        fatal.decode(b);
        return b.indexOf(0) < 0;
      } catch {
        return false;
      }
    };
    // A fixed generator: the same cases each run. Each case is a few characters at the edges of
    // the encoding lengths, often with one byte replaced by a lead, continuation or NUL byte or
    // the last byte cut off, so most invalid cases are almost valid.
    let state = 12345;
    const next = (n: number): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) >>> 8) % n;
    const chars = [0x41, 0x7f, 0x80, 0xe9, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x1f600, 0x10ffff].map((c) => String.fromCodePoint(c));
    const pool = [0x00, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff];
    let invalid = 0;
    for (let n = 0; n < 5000; n++) {
      const b = bytes(Array.from({ length: 1 + next(4) }, () => chars[next(chars.length)]!).join(''));
      const mutation = next(4); // 0: replace a byte, 1: cut the last one, else unchanged
      if (mutation === 0) b[next(b.length)] = pool[next(pool.length)]!;
      const checked = mutation === 1 ? b.subarray(0, b.length - 1) : b;
      const problem = findInvalidText(checked);
      assert.equal(problem === undefined, valid(checked), `bytes ${Buffer.from(checked).toString('hex')}: ${JSON.stringify(problem)}`);
      if (problem === undefined) continue;
      invalid++;
      assert.ok(valid(checked.subarray(0, problem.offset)), `bytes ${Buffer.from(checked).toString('hex')}: the text before offset ${problem.offset} should be valid`);
    }
    assert.ok(invalid > 1000 && invalid < 4000, `${invalid} of 5000 invalid: the generator should give both kinds`);
  });

  test('data.invalidText = "skip" leaves such files out of a folder with a note', () => {
    const dir = folder({ 'a.txt': 'Good text.\n', 'b.txt': bytes('seventeen bytes..', [0xff]), 'sub/c.jsonl': bytes([0x00]) });
    const loaded = loadDocuments(files(dir, { invalidText: 'skip' }));
    assert.deepEqual(loaded.documents, ['Good text.\n']);
    assert.deepEqual(loaded.notes, [`data: skipped 2 files in ${dir}${sep} that are not valid UTF-8 text (data.invalidText = "skip"): b.txt at offset 17, ${join('sub', 'c.jsonl')} at offset 0`]);
  });

  test('by default (data.invalidText = "error") the same folder is an error naming the file and the way out', () => {
    const dir = folder({ 'a.txt': 'Good text.\n', 'b.txt': bytes('seventeen bytes..', [0xff]) });
    for (const source of [files(dir), files(dir, { invalidText: 'error' })]) {
      configError(() => loadDocuments(source), `data file ${join(dir, 'b.txt')} is not valid UTF-8 text: invalid byte 0xff at offset 17`, 'data.invalidText = "skip"');
    }
  });

  test('skipping every data file is an error, and a single invalid file given as data.path always is', () => {
    const dir = folder({ 'b.txt': bytes([0xff]), 'README.md': '# corpus\n' });
    configError(() => loadDocuments(files(dir, { invalidText: 'skip' })), `data.path = ${JSON.stringify(dir)} has no data left`, 'README.md', 'b.txt at offset 0');
    configError(() => loadDocuments(files(join(dir, 'b.txt'), { invalidText: 'skip' })), 'b.txt is not valid UTF-8 text: invalid byte 0xff at offset 0');
  });
});

describe('a folder with files of other types', () => {
  test('README.md and other extensions are skipped with a note listing them', () => {
    const dir = folder({ 'README.md': '# corpus\n', 'a.txt': 'Document a.\n', 'sub/notes.md': 'n', 'sub/b.jsonl': '{"text": "Document b."}\n', '.hidden': 'x' });
    const loaded = loadDocuments(files(dir));
    assert.deepEqual(loaded.documents, ['Document a.\n', 'Document b.']);
    assert.deepEqual(loaded.notes, [`data: skipped 2 files of other types in ${dir}${sep} (README.md, ${join('sub', 'notes.md')})`]);
  });

  test('a note lists at most 10 names', () => {
    const other = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`n${String(i).padStart(2, '0')}.md`, 'x']));
    const loaded = loadDocuments(files(folder({ ...other, 'a.txt': 'Document a.\n' })));
    assert.match(loaded.notes[0]!, /^data: skipped 12 files of other types in .* \(n00\.md, n01\.md, .*, n09\.md and 2 more\)$/);
  });

  test('a folder with only README.md is an error saying its files were skipped', () => {
    const dir = folder({ 'README.md': '# corpus\n' });
    configError(() => loadDocuments(files(dir)), `data.path = ${JSON.stringify(dir)} is a folder with no .txt or .jsonl files: skipped 1 file of other types (README.md)`);
  });

  test('a single file with another extension given as data.path stays an error', () => {
    const file = join(folder({ 'README.md': '# corpus\n' }), 'README.md');
    configError(() => loadDocuments(files(file)), 'README.md', 'unsupported extension ".md"');
  });

  test('a training run logs the notes', async () => {
    const dir = folder({ 'README.md': '# corpus\n', 'a.txt': 'The quick brown fox jumps over the lazy dog. '.repeat(20) });
    const run = join(tmp, `run-${dirs++}`);
    const cfg = loadConfig(undefined, [
      'model.dim=16', 'model.layers=1', 'model.heads=2', 'model.kvHeads=1', 'model.ffnDim=32', 'train.seqLen=32', 'train.steps=1', 'optim.warmupSteps=0',
      'data.source=files', `data.path=${dir}`, 'log.progress=none', `log.dir=${run}`, `save.dir=${join(run, 'checkpoints')}`,
    ]);
    const lines: string[] = [];
    await train(cfg, { out: (line) => lines.push(line) });
    assert.ok(lines.includes(`data: skipped 1 file of other types in ${dir}${sep} (README.md)`), lines.join('\n'));
  });
});

describe('config keys', () => {
  test('data.maxFileMiB must be an integer ≥ 1 and data.invalidText "error" or "skip"', () => {
    configError(() => parseConfig({ data: { maxFileMiB: 0 } }), 'data.maxFileMiB = 0', '≥ 1');
    configError(() => parseConfig({ data: { maxFileMiB: 1.5 } }), 'data.maxFileMiB = 1.5', 'integer');
    configError(() => parseConfig({ data: { invalidText: 'x' } }), 'data.invalidText = "x"', '"error", "skip"');
    const cfg = parseConfig({ data: { source: 'files', path: 'corpus', maxFileMiB: 2, invalidText: 'skip' } });
    assert.equal(cfg.data.maxFileMiB, 2);
    assert.equal(cfg.data.invalidText, 'skip');
  });
});
