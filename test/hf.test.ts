import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LocalAttention } from '../src/attention/local.js';
import { createTokenizer } from '../src/data/tokenizer.js';
import { exportHf } from '../src/hf/export.js';
import { bytesToUnicode, gpt2Vocabulary } from '../src/hf/gpt2-files.js';
import { importHf, readHfModel } from '../src/hf/import.js';
import { hfTensorName, permuteRopeRows } from '../src/hf/llama.js';
import { loadTrainedModel } from '../src/infer/trained-model.js';
import { referenceKernels } from '../src/kernels/reference/index.js';
import type { ModelConfig } from '../src/model/config.js';
import { Transformer } from '../src/model/model.js';
import { paramLayout } from '../src/model/params.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { readTrainerState, saveCheckpoint, type TrainerState } from '../src/train/checkpoint.js';
import { decodeSafetensors, encodeSafetensors, f16BitsToF32, type NamedTensor, readSafetensors, roundToBf16, SafetensorsError } from '../src/train/safetensors.js';
import { loadConfig } from '../src/train/config.js';
import { train } from '../src/train/train.js';
import { configError } from './helpers/config-error.js';
import { localLayout } from './helpers/layouts.js';

const PYTHON = '/usr/bin/python3';
const FORWARD_PY = fileURLToPath(new URL('../../test/fixtures/hf_llama_forward.py', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const root = mkdtempSync(join(tmpdir(), 'loongtrain-hf-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const freshDir = (name: string): string => join(root, `${name}-${dirs++}`);

/** GQA (H 4, Hkv 2, d 8), 2 layers, byte vocabulary; a small θ so that RoPE turns far within 12 tokens. */
const CONFIG: ModelConfig = { vocabSize: 257, dim: 32, layers: 2, heads: 4, kvHeads: 2, ffnDim: 48, ropeTheta: 500, normEps: 1e-5, tiedEmbeddings: false, initStd: 0.02 };

/** Random parameters large enough that every tensor matters: matrices N(0, 0.3²) (embedding 1), norm gains 1 + N(0, 0.2²); gaps 0. */
function randomParams(config: ModelConfig, seed: number): Float32Array {
  const layout = paramLayout(config);
  const flat = new Float32Array(layout.flatSize);
  const rng = new Rng(seed);
  for (const s of layout.specs) {
    const std = s.kind === 'embedding' ? 1 : 0.3;
    for (let i = 0; i < s.size; i++) flat[s.offset + i] = s.kind === 'norm' ? 1 + 0.2 * rng.normal() : std * rng.normal();
  }
  return flat;
}

function state(config: ModelConfig, tokenizer = 'byte', seqLen = 64): TrainerState {
  return { format: 1, step: 7, optimizerStep: 7, dataPosition: 7, sequencesPerStep: 1, causal: true, seed: 1, model: config, tokenizer, seqLen, layout: 'dp=1 hp=1 cp=1', rngState: 1 };
}

/** A checkpoint folder holding `params` for `config`. */
function checkpointOf(config: ModelConfig, params: Float32Array, tokenizer = 'byte'): string {
  const layout = paramLayout(config);
  const zeros = new Float32Array(layout.flatSize);
  return saveCheckpoint(freshDir('ckpt'), state(config, tokenizer), layout, { params, m: zeros, v: zeros, step: 7 }, 1);
}

function assertBitEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const bad = ua.findIndex((x, i) => x !== ub[i]);
  assert.equal(bad, -1, `${what}: element ${bad} differs: ${a[bad]} vs ${b[bad]}`);
}

/** Per-token cross-entropy of our training Transformer (LocalAttention), one forward per token with only its label valid. */
function ourTokenLosses(config: ModelConfig, params: Float32Array, tokens: Int32Array, positions: Int32Array, labels: Int32Array): number[] {
  const arena = new Arena(64 * 2 ** 20);
  const core = new LocalAttention({ kernels: referenceKernels, heads: config.heads, kvHeads: config.kvHeads, headDim: config.dim / config.heads });
  const model = new Transformer(referenceKernels, arena, config, core, { seed: 0 });
  model.params.params.data.set(params);
  const losses: number[] = [];
  for (let t = 0; t < tokens.length; t++) {
    const one = new Int32Array(tokens.length).fill(-1);
    one[t] = labels[t]!;
    model.params.zeroGrads();
    losses.push(model.forward(tokens, positions, one, 1, localLayout(tokens.length)));
    model.backward();
  }
  return losses;
}

/** The independent float64 HF forward: log-softmax [T][V]. Fails (never skips) when python3 or torch is missing. */
function hfLogprobs(dir: string, tokens: Int32Array, positions: Int32Array): number[][] {
  const install = 'install it with: sudo apt-get install python3-torch (Debian/Ubuntu; .ci/run does)';
  assert.ok(existsSync(PYTHON), `${PYTHON} is missing: the HF forward check needs Python 3 with torch; ${install}`);
  const probe = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  assert.equal(probe.status, 0, `${PYTHON} cannot import torch (${probe.stderr.trim().split('\n').pop()}); ${install}`);
  const r = spawnSync(PYTHON, [FORWARD_PY, dir], { input: JSON.stringify({ tokens: [...tokens], positions: [...positions] }), encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, `hf_llama_forward.py failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { logprobs: number[][] }).logprobs;
}

function compareWithHf(config: ModelConfig, params: Float32Array, hfDir: string, seed: number): void {
  const rng = new Rng(seed);
  const T = 12;
  const tokens = Int32Array.from({ length: T }, () => rng.int(config.vocabSize));
  // Positions need not start at 0 (a document inside a packed sequence): RoPE at 5 … 16.
  const positions = Int32Array.from({ length: T }, (_, i) => 5 + i);
  const hf = hfLogprobs(hfDir, tokens, positions);
  for (const labels of [Int32Array.from({ length: T }, (_, i) => tokens[(i + 1) % T]!), Int32Array.from({ length: T }, () => rng.int(config.vocabSize))]) {
    const ours = ourTokenLosses(config, params, tokens, positions, labels);
    for (let t = 0; t < T; t++) {
      const ref = -hf[t]![labels[t]!]!;
      assert.ok(Math.abs(ours[t]! - ref) <= 1e-5 * Math.abs(ref), `token ${t}: our loss ${ours[t]} vs HF forward ${ref} (rel ${Math.abs(ours[t]! - ref) / Math.abs(ref)})`);
    }
  }
}

describe('safetensors dtypes', () => {
  it('F16 bits convert exactly (normal, subnormal, ±0, ±Infinity, NaN); other dtypes are refused naming the ones read', () => {
    assert.equal(f16BitsToF32(0x3c00), 1);
    assert.equal(f16BitsToF32(0xc000), -2);
    assert.equal(f16BitsToF32(0x3555), 0.333251953125);
    assert.equal(f16BitsToF32(0x0001), 2 ** -24);
    assert.equal(f16BitsToF32(0x7bff), 65504);
    assert.ok(Object.is(f16BitsToF32(0x8000), -0));
    assert.equal(f16BitsToF32(0x7c00), Infinity);
    assert.equal(f16BitsToF32(0xfc00), -Infinity);
    assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
    assert.ok(Number.isNaN(roundToBf16(Number.NaN)));
    assert.equal(roundToBf16(3.4e38), Infinity, 'beyond the largest bf16 rounds to Infinity');
    const json = Buffer.from(JSON.stringify({ x: { dtype: 'I8', shape: [2], data_offsets: [0, 2] } }));
    const bytes = new Uint8Array(8 + json.length + 2);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
    bytes.set(json, 8);
    assert.throws(() => decodeSafetensors(bytes, { convert: true }), (e: unknown) => e instanceof SafetensorsError && /dtype "I8" is not supported; "F32", "F16" and "BF16" are/.test(e.message));
    // Checkpoints stay F32-only: without convert a BF16 file is refused.
    const bf16 = encodeSafetensors({ w: { shape: [2], data: Float32Array.of(1, 2) } }, {}, { dtype: 'BF16' });
    assert.throws(() => decodeSafetensors(bf16), /dtype "BF16" is not supported; only "F32"/);
    assert.deepEqual([...decodeSafetensors(bf16, { convert: true }).tensors.get('w')!.data], [1, 2]);
  });
});

describe('RoPE row permutation', () => {
  it('export moves our pair (2i, 2i+1) of each head to HF rows (i, i + d/2); import undoes it', () => {
    // 2 heads, d = 4, 1 column: rows hold their own index.
    const w = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual([...permuteRopeRows(w, 2, 4, 1, true)], [0, 2, 1, 3, 4, 6, 5, 7]);
    const d8 = Float32Array.from({ length: 8 }, (_, i) => i);
    assert.deepEqual([...permuteRopeRows(d8, 1, 8, 1, true)], [0, 2, 4, 6, 1, 3, 5, 7]);
    assert.deepEqual([...permuteRopeRows(permuteRopeRows(d8, 1, 8, 1, true), 1, 8, 1, false)], [...d8]);
  });
});

describe('Hugging Face export', () => {
  it('writes config.json with the LlamaConfig fields and model.safetensors with HF names', () => {
    const params = randomParams(CONFIG, 1);
    const out = freshDir('hf');
    const r = exportHf(checkpointOf(CONFIG, params), out);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(cfg.architectures, ['LlamaForCausalLM']);
    assert.equal(cfg.model_type, 'llama');
    const expect: Record<string, unknown> = {
      hidden_size: 32, intermediate_size: 48, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 2, rms_norm_eps: 1e-5,
      rope_theta: 500, vocab_size: 257, tie_word_embeddings: false, max_position_embeddings: 64, torch_dtype: 'float32', head_dim: 8,
    };
    for (const [k, v] of Object.entries(expect)) assert.equal(cfg[k], v, k);
    const file = readSafetensors(join(out, 'model.safetensors'));
    assert.equal(file.metadata.format, 'pt');
    const names = [...file.tensors.keys()].sort();
    const expected = ['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight'];
    for (let l = 0; l < 2; l++) {
      for (const n of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj', 'input_layernorm', 'post_attention_layernorm']) expected.push(`model.layers.${l}.${n}.weight`);
    }
    assert.deepEqual(names, expected.sort());
    assert.deepEqual(file.tensors.get('model.layers.1.self_attn.k_proj.weight')!.shape, [16, 32]);
    assert.deepEqual(file.tensors.get('model.layers.0.mlp.down_proj.weight')!.shape, [32, 48]);
    assert.match(r.tokenizerNote ?? '', /no Hugging Face tokenizer form/);
    assert.ok(!existsSync(join(out, 'tokenizer.json')));
  });

  it('f32 export → import gives bit-identical parameters (untied and tied), and a checkpoint loadTrainedModel reads', () => {
    for (const tiedEmbeddings of [false, true]) {
      const config = { ...CONFIG, tiedEmbeddings };
      const params = randomParams(config, 2);
      const hf = freshDir('hf');
      exportHf(checkpointOf(config, params), hf);
      assert.equal(readSafetensors(join(hf, 'model.safetensors')).tensors.has('lm_head.weight'), !tiedEmbeddings);
      assertBitEqual(readHfModel(hf).params, params, `tied ${tiedEmbeddings}`);
      const out = freshDir('imported');
      const r = importHf(hf, out);
      assert.equal(r.tokenizer, 'byte');
      const loaded = loadTrainedModel(r.checkpoint, { kernels: 'reference', workBytes: 1 << 16 });
      assertBitEqual(loaded.params.params.data, params, 'loadTrainedModel of the imported checkpoint');
      assert.deepEqual(loaded.config, config);
      const st = readTrainerState(r.checkpoint);
      assert.equal(st.step, 0);
      assert.equal(st.seqLen, 64, 'train.seqLen defaults to max_position_embeddings');
      const optim = readSafetensors(join(r.checkpoint, 'optimizer.safetensors')).tensors;
      assert.ok([...optim.values()].every((t) => t.data.every((x) => x === 0)), 'fresh AdamW state');
    }
  });

  it('bf16 export → import equals the bf16-rounded parameters (nearest, ties to even)', () => {
    assert.equal(roundToBf16(1 + 2 ** -8), 1, 'tie to even (down)');
    assert.equal(roundToBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6, 'tie to even (up)');
    assert.equal(roundToBf16(1 + 2 ** -8 + 2 ** -20), 1 + 2 ** -7, 'above the tie rounds up');
    const params = randomParams(CONFIG, 3);
    const hf = freshDir('hf');
    exportHf(checkpointOf(CONFIG, params), hf, { dtype: 'bf16' });
    assert.equal(JSON.parse(readFileSync(join(hf, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
    const header = readFileSync(join(hf, 'model.safetensors'));
    assert.match(header.subarray(8, 400).toString('utf8'), /"dtype":"BF16"/);
    assertBitEqual(readHfModel(hf).params, params.map(roundToBf16), 'bf16 round trip');
  });

  it('the exported model gives our per-token losses under an independent float64 HF LLaMA forward (Python, rotate-half RoPE), within 1e-5', () => {
    for (const tiedEmbeddings of [false, true]) {
      const config = { ...CONFIG, tiedEmbeddings };
      const params = randomParams(config, 4);
      const hf = freshDir('hf');
      exportHf(checkpointOf(config, params), hf);
      compareWithHf(config, params, hf, 5);
    }
  });

  it('without the q/k permutation, or with its inverse, the HF forward disagrees (the check above can see a wrong pairing)', () => {
    const params = randomParams(CONFIG, 6);
    for (const wrong of ['none', 'inverse'] as const) {
      const hf = freshDir('hf');
      exportHf(checkpointOf(CONFIG, params), hf);
      // Undo the permutation in the file (and for "inverse" apply π⁻¹ instead): HF then pairs the wrong rows.
      const file = readSafetensors(join(hf, 'model.safetensors'));
      const tensors = new Map<string, NamedTensor>();
      for (const [name, t] of file.tensors) {
        const heads = name.endsWith('q_proj.weight') ? 4 : name.endsWith('k_proj.weight') ? 2 : 0;
        const ours = heads === 0 ? t.data : permuteRopeRows(t.data, heads, 8, 32, false);
        tensors.set(name, { shape: t.shape, data: heads === 0 || wrong === 'none' ? ours : permuteRopeRows(ours, heads, 8, 32, false) });
      }
      writeFileSync(join(hf, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
      assert.throws(() => compareWithHf(CONFIG, params, hf, 5), /our loss .* vs HF forward/, wrong);
    }
  });

  it('gpt2: writes tokenizer.json, vocab.json and merges.txt whose byte-level BPE encodes as our gpt2 tokenizer', () => {
    const config = { ...CONFIG, vocabSize: 50257, dim: 16, heads: 2, kvHeads: 1, ffnDim: 16, layers: 1, tiedEmbeddings: true };
    const hf = freshDir('hf');
    const r = exportHf(checkpointOf(config, randomParams(config, 7), 'gpt2'), hf);
    assert.equal(r.tokenizerNote, undefined);
    for (const f of ['tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) assert.ok(existsSync(join(hf, f)), f);
    const vocab = JSON.parse(readFileSync(join(hf, 'vocab.json'), 'utf8')) as Record<string, number>;
    assert.equal(Object.keys(vocab).length, 50257);
    assert.equal(vocab['<|endoftext|>'], 50256);
    const mergeLines = readFileSync(join(hf, 'merges.txt'), 'utf8').trimEnd().split('\n');
    assert.equal(mergeLines[0], '#version: 0.2');
    assert.equal(mergeLines.length - 1, 50000);
    assert.equal(mergeLines[1], 'Ġ t', "GPT-2's first merge");
    const tj = JSON.parse(readFileSync(join(hf, 'tokenizer.json'), 'utf8')) as { model: { type: string; merges: string[] } };
    assert.equal(tj.model.type, 'BPE');
    assert.equal(tj.model.merges.length, 50000);
    // HF's byte-level BPE (GPT-2 pre-tokenizer regex, then lowest-rank merge first) with these files = gpt-tokenizer's encoding.
    const ranks = new Map(gpt2Vocabulary().merges.map((m, i) => [m, i]));
    const u = bytesToUnicode();
    const pattern = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
    const hfEncode = (text: string): number[] => {
      const ids: number[] = [];
      for (const word of text.match(pattern) ?? []) {
        let parts = Array.from(Buffer.from(word, 'utf8'), (b) => u[b]!);
        for (;;) {
          let best = -1;
          let bestRank = Infinity;
          for (let i = 0; i + 1 < parts.length; i++) {
            const rank = ranks.get(`${parts[i]} ${parts[i + 1]}`);
            if (rank !== undefined && rank < bestRank) [best, bestRank] = [i, rank];
          }
          if (best < 0) break;
          parts = [...parts.slice(0, best), parts[best]! + parts[best + 1]!, ...parts.slice(best + 2)];
        }
        for (const p of parts) ids.push(vocab[p]!);
      }
      return ids;
    };
    const text = "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.\n\n  Naïve café — 1234 tokens, ünïcödé & emoji 🎉!";
    assert.deepEqual(hfEncode(text), [...createTokenizer('gpt2').encode(text)]);
  });
});

/** An HF folder written by hand: config.json (`patch` applied to an exported one) and `tensors` (HF names) in one file or shards. */
function handMade(params: Float32Array, opts: { patch?: Record<string, unknown>; edit?: (t: Map<string, NamedTensor>) => void; shards?: number; f16?: boolean } = {}): string {
  const base = freshDir('hf');
  exportHf(checkpointOf(CONFIG, params), base);
  const cfg = { ...(JSON.parse(readFileSync(join(base, 'config.json'), 'utf8')) as Record<string, unknown>), ...opts.patch };
  const tensors = readSafetensors(join(base, 'model.safetensors')).tensors;
  opts.edit?.(tensors);
  const dir = freshDir('hand');
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  const encode = (t: Map<string, NamedTensor>): Uint8Array => (opts.f16 === true ? encodeF16(t) : encodeSafetensors(t, { format: 'pt' }));
  if (opts.shards === undefined) {
    writeFileSync(join(dir, 'model.safetensors'), encode(tensors));
    return dir;
  }
  const names = [...tensors.keys()];
  const weightMap: Record<string, string> = {};
  const m = opts.shards;
  for (let s = 0; s < m; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(m).padStart(5, '0')}.safetensors`;
    const part = new Map(names.filter((_, i) => i % m === s).map((n) => [n, tensors.get(n)!]));
    for (const n of part.keys()) weightMap[n] = file;
    writeFileSync(join(dir, file), encode(part));
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  return dir;
}

/** IEEE half bits of `x`, which must be exactly representable as a normal half or 0. */
function f16Bits(x: number): number {
  if (x === 0) return 0;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  const e = Math.floor(Math.log2(a));
  const frac = (a / 2 ** e - 1) * 1024;
  assert.ok(Number.isInteger(frac) && e >= -14 && e <= 15, `${x} is not a normal half`);
  return sign | ((e + 15) << 10) | frac;
}

/** A safetensors file of F16 tensors (values exactly representable), written by hand. */
function encodeF16(tensors: Map<string, NamedTensor>): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [n, t] of tensors) {
    header[n] = { dtype: 'F16', shape: t.shape, data_offsets: [off, off + 2 * t.data.length] };
    off += 2 * t.data.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + off);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const t of tensors.values()) for (const x of t.data) (view.setUint16(at, f16Bits(x), true), (at += 2));
  return out;
}

describe('Hugging Face import', () => {
  it('reads sharded weights through model.safetensors.index.json', () => {
    const params = randomParams(CONFIG, 8);
    const dir = handMade(params, { shards: 3 });
    assert.equal(readHfModel(dir).files.length, 3);
    assertBitEqual(readHfModel(dir).params, params, 'sharded');
    rmSync(join(dir, 'model.safetensors.index.json'));
    configError(() => readHfModel(dir), 'sharded weights', 'model.safetensors.index.json');
  });

  it('converts F16 tensors on load', () => {
    // Values on a 2^-9 grid below 2 in magnitude are exact halves.
    const params = randomParams(CONFIG, 9).map((x) => Math.max(-1023 / 512, Math.min(1023 / 512, Math.round(x * 512) / 512)) + 0);
    const dir = handMade(params, { f16: true, shards: 2 });
    assert.match(readFileSync(join(dir, 'model-00001-of-00002.safetensors')).subarray(8, 200).toString('utf8'), /"F16"/);
    assertBitEqual(readHfModel(dir).params, params, 'f16');
  });

  it('refuses what we cannot represent, naming the field or tensor', () => {
    const params = randomParams(CONFIG, 10);
    const q0 = 'model.layers.0.self_attn.q_proj';
    configError(() => readHfModel(handMade(params, { edit: (t) => t.set(`${q0}.bias`, { shape: [32], data: new Float32Array(32) }) })), `"${q0}.bias"`, 'bias');
    configError(() => readHfModel(handMade(params, { patch: { attention_bias: true } })), 'attention_bias = true');
    configError(() => readHfModel(handMade(params, { patch: { rope_scaling: { type: 'linear', factor: 2 } } })), 'rope_scaling', '"linear"');
    configError(() => readHfModel(handMade(params, { patch: { rope_scaling: { rope_type: 'yarn', factor: 4 } } })), 'rope_scaling', '"yarn"');
    configError(() => readHfModel(handMade(params, { patch: { model_type: 'mistral' } })), 'model_type = "mistral"');
    configError(() => readHfModel(handMade(params, { patch: { architectures: ['LlamaForSequenceClassification'] } })), 'architectures');
    configError(() => readHfModel(handMade(params, { patch: { head_dim: 16 } })), 'head_dim = 16', 'hidden_size / num_attention_heads');
    configError(() => readHfModel(handMade(params, { patch: { hidden_act: 'gelu' } })), 'hidden_act = "gelu"');
    configError(() => readHfModel(handMade(params, { edit: (t) => t.delete('model.layers.1.mlp.up_proj.weight') })), '"model.layers.1.mlp.up_proj.weight" is missing');
    configError(() => readHfModel(handMade(params, { patch: { intermediate_size: 40 } })), '"model.layers.0.mlp.gate_proj.weight" has shape [48, 32]', 'intermediate_size 40', '[40, 32]');
    configError(() => readHfModel(handMade(params, { edit: (t) => t.set('model.layers.0.self_attn.extra.weight', { shape: [1], data: new Float32Array(1) }) })), '"model.layers.0.self_attn.extra.weight"', 'no place');
    configError(() => readHfModel(handMade(params, { patch: { tie_word_embeddings: true } })), 'tie_word_embeddings = true', '"lm_head.weight" differs');
    configError(() => importHf(handMade(params, { patch: { loongtrain_tokenizer: undefined } }), freshDir('x')), 'loongtrain_tokenizer', '--tokenizer');
    configError(() => importHf(handMade(params), freshDir('x'), { tokenizer: 'gpt2' }), 'vocab_size = 257', 'gpt2');
    configError(() => readHfModel(freshDir('missing')), 'does not exist');
  });

  it('HF names: the documented table', () => {
    assert.equal(hfTensorName('layers.3.mlp.w1', CONFIG).hf, 'model.layers.3.mlp.gate_proj.weight');
    assert.equal(hfTensorName('layers.3.mlp.w3', CONFIG).hf, 'model.layers.3.mlp.up_proj.weight');
    assert.equal(hfTensorName('layers.3.mlp.w2', CONFIG).hf, 'model.layers.3.mlp.down_proj.weight');
    assert.equal(hfTensorName('layers.0.attn_norm', CONFIG).hf, 'model.layers.0.input_layernorm.weight');
    assert.equal(hfTensorName('layers.0.mlp_norm', CONFIG).hf, 'model.layers.0.post_attention_layernorm.weight');
    assert.equal(hfTensorName('layers.0.attn.wq', CONFIG).ropeHeads, 4);
    assert.equal(hfTensorName('layers.0.attn.wk', CONFIG).ropeHeads, 2);
    assert.equal(hfTensorName('layers.0.attn.wv', CONFIG).ropeHeads, undefined);
  });

  it('CLI: loongtrain export --format hf and loongtrain import', () => {
    const params = randomParams(CONFIG, 11);
    const ckpt = checkpointOf(CONFIG, params);
    const hf = freshDir('hf');
    const ex = spawnSync(process.execPath, [CLI, 'export', '--checkpoint', ckpt, '--format', 'hf', '--out', hf, '--dtype', 'f32'], { encoding: 'utf8' });
    assert.equal(ex.status, 0, ex.stderr);
    assert.match(ex.stderr, /exported .*\(21 tensors, f32\)/);
    const out = freshDir('imported');
    const im = spawnSync(process.execPath, [CLI, 'import', '--from', hf, '--out', out, '--set', 'train.seqLen=128'], { encoding: 'utf8' });
    assert.equal(im.status, 0, im.stderr);
    assert.match(im.stderr, /\[model\]\nvocabSize = 257\ndim = 32/);
    assertBitEqual(loadTrainedModel(out, { kernels: 'reference', workBytes: 1 << 16 }).params.params.data, params, 'CLI round trip');
    assert.equal(readTrainerState(join(out, 'step-00000000')).seqLen, 128);
    const bad = spawnSync(process.execPath, [CLI, 'export', '--checkpoint', ckpt, '--out', hf, '--dtype', 'f16'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--dtype "f16" is invalid: use "f32" or "bf16"/);
    const again = spawnSync(process.execPath, [CLI, 'import', '--from', hf, '--out', out], { encoding: 'utf8' });
    assert.equal(again.status, 2);
    assert.match(again.stderr, /already holds 1 checkpoint/);
  });
});

describe('model.init = "hf:DIR"', () => {
  it('a fresh run starts from the imported weights, at a longer train.seqLen with a larger model.ropeTheta; --resume ignores model.init', async () => {
    const params = randomParams(CONFIG, 12);
    const hf = freshDir('hf');
    exportHf(checkpointOf(CONFIG, params), hf);
    const corpus = join(root, 'corpus.txt');
    writeFileSync(corpus, Array.from({ length: 200 }, (_, i) => `Line ${i} of a small corpus for the import test, long enough for sequences.`).join('\n'));
    const run = freshDir('run');
    const sets = [
      'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=48', 'model.tiedEmbeddings=false', 'model.normEps=1e-5',
      `model.init="hf:${hf}"`, 'model.ropeTheta=5000', 'train.seqLen=128', 'train.steps=2', 'optim.lr=1e-12', 'optim.minLr=0', 'optim.warmupSteps=0', 'optim.weightDecay=0',
      'data.source=files', `data.path=${corpus}`, 'log.progress=none', `run.dir=${run}`, 'train.kernels=reference',
    ];
    const lines: string[] = [];
    const first = await train(loadConfig(undefined, sets), { out: (l) => lines.push(l), stopAt: 1 });
    assert.ok(lines.some((l) => l.includes(`initial parameters from ${hf}`)), lines.join('\n'));
    assert.ok(lines.some((l) => l.includes('model.ropeTheta = 5000, the imported model\'s rope_theta = 500')), lines.join('\n'));
    const trained = loadTrainedModel(first.checkpoint!, { kernels: 'reference', workBytes: 1 << 16 });
    assert.equal(trained.state.seqLen, 128);
    assert.equal(trained.config.ropeTheta, 5000);
    const got = trained.params.params.data;
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - params[i]!));
    assert.ok(worst < 1e-6, `one step at lr 1e-12 moved a parameter by ${worst}: not the imported weights`);
    const resumed = await train(loadConfig(undefined, sets), { out: (l) => lines.push(l), resume: first.checkpoint! });
    assert.equal(resumed.steps[resumed.steps.length - 1]!.step, 2);
    assert.ok(lines.some((l) => l.includes('is ignored: the run resumes from')));
  });

  it('refuses a model whose shape differs, naming each field with both names', async () => {
    const hf = freshDir('hf');
    exportHf(checkpointOf(CONFIG, randomParams(CONFIG, 13)), hf);
    const cfg = loadConfig(undefined, ['model.dim=64', 'model.ffnDim=48', 'model.tiedEmbeddings=false', `model.init="hf:${hf}"`, 'log.progress=none', `run.dir=${freshDir('run')}`]);
    await assert.rejects(train(cfg, { out: () => {} }), (e: Error) => /model\.dim = 64, but hidden_size = 32/.test(e.message) && !/ffnDim/.test(e.message));
    const bad = loadConfig(undefined, ['model.init="pt:x"', 'log.progress=none', `run.dir=${freshDir('run')}`]);
    await assert.rejects(train(bad, { out: () => {} }), /model\.init = "pt:x" is invalid: use "hf:DIR"/);
  });
});
