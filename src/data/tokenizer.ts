import { createRequire } from 'node:module';
import { ConfigError } from '../errors.js';

/** Text ↔ token ids. Ids lie in [0, vocabSize); `separatorId` ends every packed document. */
export interface Tokenizer {
  readonly name: TokenizerName;
  readonly vocabSize: number;
  readonly separatorId: number;
  /** Token ids of `text`; never contains `separatorId` (special-token text is encoded as plain text). */
  encode(text: string): Int32Array;
  /** Text of `ids`; the separator decodes to "<|endoftext|>". @throws RangeError for an id outside [0, vocabSize). */
  decode(ids: ArrayLike<number>): string;
}

export type TokenizerName = 'byte' | 'gpt2';
export const TOKENIZER_NAMES: readonly TokenizerName[] = ['byte', 'gpt2'];

/** Vocabulary size of each tokenizer, known without loading it (config validation uses this). */
export const TOKENIZER_VOCAB_SIZES: Readonly<Record<TokenizerName, number>> = { byte: 257, gpt2: 50257 };

const SEPARATOR_TEXT = '<|endoftext|>';

/**
 * A tokenizer by name.
 * - "byte": UTF-8 bytes 0–255, separator 256, vocabSize 257.
 * - "gpt2": GPT-2 BPE (r50k_base of the gpt-tokenizer package), separator <|endoftext|> = 50256,
 *   vocabSize 50257.
 * @throws ConfigError naming the value and listing the valid names.
 */
export function createTokenizer(name: string): Tokenizer {
  if (name === 'byte') return byteTokenizer();
  if (name === 'gpt2') return gpt2Tokenizer();
  throw new ConfigError(`data.tokenizer = ${JSON.stringify(name)} is invalid: use one of ${TOKENIZER_NAMES.map((n) => `"${n}"`).join(', ')}`);
}

function checkIds(name: string, ids: ArrayLike<number>, vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new RangeError(`${name} tokenizer: token id ${id} at index ${i} is outside [0, ${vocabSize})`);
    }
  }
}

function byteTokenizer(): Tokenizer {
  const separatorId = 256;
  const vocabSize = 257;
  const encoder = new TextEncoder();
  // Not fatal: a model can emit byte runs that are not valid UTF-8; those decode to U+FFFD.
  const decoder = new TextDecoder('utf-8');
  return {
    name: 'byte',
    vocabSize,
    separatorId,
    encode: (text) => Int32Array.from(encoder.encode(text)),
    decode(ids) {
      checkIds('byte', ids, vocabSize);
      let out = '';
      let run: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        if (id !== separatorId) {
          run.push(id);
          continue;
        }
        out += decoder.decode(Uint8Array.from(run)) + SEPARATOR_TEXT;
        run = [];
      }
      return out + decoder.decode(Uint8Array.from(run));
    },
  };
}

interface Gpt2Module {
  encode(text: string, options: { disallowedSpecial: Set<string> }): number[];
  decode(ids: Iterable<number>): string;
  vocabularySize: number;
}

let gpt2: Gpt2Module | undefined;
/** gpt-tokenizer's one module-wide streaming TextDecoder, which its decode leaves holding an incomplete tail. */
let gpt2Utf8: { decoder: { decode(): string } } | undefined;

function gpt2Tokenizer(): Tokenizer {
  // Loaded on first use: the BPE ranks take ~80 ms to load and byte-tokenizer runs never need them.
  gpt2 ??= createRequire(import.meta.url)('gpt-tokenizer/cjs/encoding/r50k_base') as Gpt2Module;
  gpt2Utf8 ??= createRequire(import.meta.url)('gpt-tokenizer/cjs/BytePairEncodingCore') as { decoder: { decode(): string } };
  const bpe = gpt2;
  const utf8 = gpt2Utf8.decoder;
  const vocabSize = bpe.vocabularySize;
  // An empty disallowed set makes "<|endoftext|>" inside a document plain text, so documents never
  // contain the separator and cannot fake a document boundary.
  const plain = { disallowedSpecial: new Set<string>() };
  return {
    name: 'gpt2',
    vocabSize,
    separatorId: 50256,
    encode: (text) => Int32Array.from(bpe.encode(text, plain)),
    decode(ids) {
      checkIds('gpt2', ids, vocabSize);
      // bpe.decode streams through a shared decoder: bytes of a character cut at the end would
      // otherwise prefix the next call's text. Flushing makes each call stateless, an
      // incomplete tail decoding to U+FFFD as with the byte tokenizer.
      return bpe.decode(Array.from(ids)) + utf8.decode();
    },
  };
}
