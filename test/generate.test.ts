import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LocalAttention } from '../src/attention/local.js';
import { createTokenizer, TOKENIZER_VOCAB_SIZES, type TokenizerName } from '../src/data/tokenizer.js';
import { Decoder } from '../src/infer/decoder.js';
import { generateTokens, promptTokens, TextStream } from '../src/infer/generate.js';
import { argmax, Sampler, validateSampling } from '../src/infer/sampling.js';
import { loadTrainedModel } from '../src/infer/trained-model.js';
import type { Kernels } from '../src/kernels/kernels.js';
import { createKernels, type BackendName, backendStatus } from '../src/kernels/registry.js';
import type { ModelConfig } from '../src/model/config.js';
import { Transformer } from '../src/model/model.js';
import { ModelParams } from '../src/model/params.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { saveCheckpoint, type TrainerState } from '../src/train/checkpoint.js';
import { configError } from './helpers/config-error.js';
import { localLayout } from './helpers/layouts.js';

const tmp = mkdtempSync(join(tmpdir(), 'loongtrain-generate-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** A tiny GQA model; initStd 0.5 makes the logits peaked, so greedy choices are far from ties. */
function tinyModel(tokenizer: TokenizerName, tied = true): ModelConfig {
  return { vocabSize: TOKENIZER_VOCAB_SIZES[tokenizer], dim: 16, layers: 2, heads: 4, kvHeads: 2, ffnDim: 32, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: tied, initStd: 0.5 };
}

/** Randomly initialised parameters, their arena and kernels of `backend` bound to it. */
function setup(config: ModelConfig, backend: BackendName = 'reference', seed = 3): { arena: Arena; kernels: Kernels; params: ModelParams } {
  const arena = new Arena(64 * 2 ** 20);
  const kernels = createKernels(backend, arena);
  const params = new ModelParams(arena, config);
  params.init(seed);
  return { arena, kernels, params };
}

const BACKENDS: BackendName[] = (['reference', 'wasm', 'blas'] as const).filter((b) => backendStatus(b).ok);

describe('decoder with a KV cache', () => {
  for (const tokenizer of ['byte', 'gpt2'] as const) {
    for (const backend of BACKENDS) {
      it(`greedy generation with the cache equals recomputing the prefix every token (${tokenizer}, ${backend})`, () => {
        const config = tinyModel(tokenizer);
        const { arena, kernels, params } = setup(config, backend);
        const tok = createTokenizer(tokenizer);
        const decoder = new Decoder(kernels, params, { capacity: 64, chunk: 4 });
        const live = arena.stats().liveBytes;
        const prompt = tok.encode('The cat sat on the');
        const run = (cache: boolean): number[] => generateTokens(decoder, new Sampler({ temperature: 0 }), prompt, { maxNewTokens: 30, stopIds: [], cache }).tokens;
        const cached = run(true);
        const recomputed = run(false);
        assert.equal(cached.length, 30);
        assert.deepEqual(cached, recomputed);
        assert.ok(new Set(cached).size > 1, 'the model does not repeat a single token');
        assert.equal(arena.stats().liveBytes, live, 'generation frees every temporary');
        decoder.free();
      });
    }
  }

  for (const backend of BACKENDS) {
    for (const tied of [true, false]) {
      it(`the decoder's logits give the training model's loss (${backend}, ${tied ? 'tied' : 'untied'})`, () => {
        const config = { ...tinyModel('byte', tied), initStd: 0.1 };
        const { arena, kernels, params } = setup(config, backend, 11);
        const t = 24;
        const rng = new Rng(5);
        const tokens = Int32Array.from({ length: t }, () => rng.int(config.vocabSize));
        const labels = Int32Array.from({ length: t }, () => rng.int(config.vocabSize));
        const positions = Int32Array.from({ length: t }, (_, i) => i);
        const core = new LocalAttention({ kernels, heads: config.heads, kvHeads: config.kvHeads, headDim: config.dim / config.heads });
        const model = new Transformer(kernels, arena, config, core, { params });
        const expected = model.forward(tokens, positions, labels, 1, localLayout(t));
        model.backward();
        // A chunked prefill of the first 10 tokens (chunks of 4: the mask offsets 0, 4, 8), then one step per token.
        const decoder = new Decoder(kernels, params, { capacity: t, chunk: 4 });
        const v = config.vocabSize;
        const logits = new Float32Array(t * v);
        logits.set(decoder.logitsAll(tokens.subarray(0, 10)), 0);
        for (let i = 10; i < t; i++) logits.set(decoder.step(tokens[i]!), i * v);
        assert.equal(decoder.length, t);
        let loss = 0;
        for (let i = 0; i < t; i++) {
          const row = logits.subarray(i * v, (i + 1) * v);
          const max = row[argmax(row)]!;
          let sum = 0;
          for (const x of row) sum += Math.exp(x - max);
          loss += max + Math.log(sum) - row[labels[i]!]!;
        }
        const rel = Math.abs(loss - expected) / Math.abs(expected);
        assert.ok(rel < 1e-5, `decoder loss ${loss} vs Transformer ${expected}: relative error ${rel}`);
        // prefill's last row equals logitsAll's last row.
        decoder.reset();
        const last = decoder.prefill(tokens);
        const all = logits.subarray((t - 1) * v);
        for (let j = 0; j < v; j++) assert.ok(Math.abs(last[j]! - all[j]!) <= 1e-5 * (1 + Math.abs(all[j]!)), `prefill logit ${j}`);
        decoder.free();
      });
    }
  }

  it('refuses tokens outside the vocabulary and tokens beyond the context', () => {
    const config = tinyModel('byte');
    const { kernels, params } = setup(config);
    const decoder = new Decoder(kernels, params, { capacity: 4 });
    configError(() => decoder.prefill([1, 300]), 'token 300 at index 1', '[0, 257)');
    decoder.prefill([1, 2, 3]);
    decoder.step(4);
    configError(() => decoder.step(5), 'do not fit the context of 4 tokens');
    decoder.reset();
    assert.equal(decoder.length, 0);
    decoder.prefill([1, 2, 3, 4]);
    configError(() => generateTokens(decoder, new Sampler(), [1, 2, 3, 4, 5], { maxNewTokens: 1, stopIds: [] }), 'prompt is 5 tokens', 'context of 4');
    const full = generateTokens(decoder, new Sampler({ temperature: 0 }), [1, 2], { maxNewTokens: 10, stopIds: [] });
    assert.equal(full.stop, 'context-full');
    assert.equal(full.tokens.length, 2);
    decoder.free();
  });
});

describe('sampling', () => {
  const randomLogits = (rng: Rng, v: number): Float32Array => Float32Array.from({ length: v }, () => 3 * rng.normal());

  it('seeded runs are reproducible; another seed gives other draws', () => {
    const rng = new Rng(1);
    const rows = Array.from({ length: 50 }, () => randomLogits(rng, 100));
    const draw = (seed: number): number[] => {
      const s = new Sampler({ temperature: 1, topK: 0, topP: 1, seed });
      return rows.map((r) => s.sample(r));
    };
    assert.deepEqual(draw(7), draw(7));
    assert.notDeepEqual(draw(7), draw(8));
    const config = tinyModel('byte');
    const { kernels, params } = setup(config);
    const decoder = new Decoder(kernels, params, { capacity: 64 });
    const gen = (seed: number): number[] => generateTokens(decoder, new Sampler({ temperature: 1, topK: 20, topP: 0.9, seed }), [65, 66], { maxNewTokens: 20, stopIds: [] }).tokens;
    assert.deepEqual(gen(3), gen(3));
    decoder.free();
  });

  it('temperature 0, top-k 1 and a tiny top-p are greedy (ties: the lowest id)', () => {
    const rng = new Rng(2);
    const samplers = [new Sampler({ temperature: 0 }), new Sampler({ temperature: 1.5, topK: 1, topP: 1, seed: 4 }), new Sampler({ temperature: 1.5, topK: 0, topP: 1e-9, seed: 5 })];
    for (let i = 0; i < 200; i++) {
      const row = randomLogits(rng, 300);
      if (i % 10 === 0) row[17] = row[200] = row[argmax(row)]! + 1; // a tie for the max
      const best = argmax(row);
      if (i % 10 === 0) assert.equal(best, 17);
      for (const s of samplers) assert.equal(s.sample(row), best);
    }
  });

  it('draws follow softmax(logits / T), restricted to the top-k and the nucleus', () => {
    const logits = Float32Array.of(2, 1, 0, -1, Math.log(0.001));
    const counts = (opts: ConstructorParameters<typeof Sampler>[0], n = 20000): number[] => {
      const s = new Sampler(opts);
      const c = new Array<number>(logits.length).fill(0);
      for (let i = 0; i < n; i++) c[s.sample(logits)]!++;
      return c.map((x) => x / n);
    };
    const softmax = (xs: number[]): number[] => {
      const e = xs.map(Math.exp);
      const z = e.reduce((a, b) => a + b, 0);
      return e.map((x) => x / z);
    };
    const near = (got: number[], want: number[]): void => want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) < 0.015, `p[${i}] = ${got[i]} vs ${w}`));
    near(counts({ temperature: 1, topK: 0, topP: 1, seed: 1 }), softmax([...logits]));
    near(counts({ temperature: 2, topK: 0, topP: 1, seed: 2 }), softmax([...logits].map((x) => x / 2)));
    near(counts({ temperature: 1, topK: 2, topP: 1, seed: 3 }), [...softmax([2, 1]), 0, 0, 0]);
    // p ≈ 0.64, 0.24, 0.09, …: top-p 0.8 keeps the first two.
    near(counts({ temperature: 1, topK: 0, topP: 0.8, seed: 4 }), [...softmax([2, 1]), 0, 0, 0]);
  });

  it('invalid options are refused naming the flag, the value and the valid range', () => {
    configError(() => validateSampling({ temperature: -1 }), '--temperature -1', '≥ 0');
    configError(() => new Sampler({ temperature: Number.NaN }), '--temperature NaN');
    configError(() => validateSampling({ topK: 1.5 }), '--top-k 1.5', 'integer ≥ 0');
    configError(() => validateSampling({ topK: -2 }), '--top-k -2');
    configError(() => validateSampling({ topP: 0 }), '--top-p 0', '(0, 1]');
    configError(() => validateSampling({ topP: 1.5 }), '--top-p 1.5');
    configError(() => validateSampling({ seed: -1 }), '--seed -1', '[0, 4294967295]');
    const config = tinyModel('byte');
    const { kernels, params } = setup(config);
    const decoder = new Decoder(kernels, params, { capacity: 8 });
    configError(() => generateTokens(decoder, new Sampler(), [1], { maxNewTokens: 0, stopIds: [] }), '--max-new-tokens 0');
    decoder.free();
  });
});

describe('streamed text', () => {
  it('a character split over tokens is written once whole (byte and gpt2 tokenizers)', () => {
    const text = 'héllo € 😀 ok';
    for (const name of ['byte', 'gpt2'] as const) {
      const tok = createTokenizer(name);
      const stream = new TextStream(tok);
      const pieces = Array.from(tok.encode(text), (id) => stream.push(id));
      pieces.push(stream.flush());
      assert.equal(pieces.join(''), text, name);
      for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `${name}: piece ${JSON.stringify(p)}`);
      if (name === 'byte') assert.ok(pieces.filter((p) => p === '').length >= 6, 'bytes of multi-byte characters are held back');
    }
  });

  it('gpt2 decode is stateless: a token cut inside a character does not leak into the next call', () => {
    const tok = createTokenizer('gpt2');
    const ids = tok.encode('a😀b');
    assert.ok(ids.length >= 3);
    assert.equal(tok.decode(ids.subarray(0, 2)), 'a\uFFFD');
    assert.equal(tok.decode(ids.subarray(ids.length - 1)), 'b');
  });

  it('an empty prompt starts from the separator', () => {
    for (const name of ['byte', 'gpt2'] as const) {
      const tok = createTokenizer(name);
      assert.deepEqual(Array.from(promptTokens(tok, '')), [tok.separatorId]);
      assert.deepEqual(Array.from(promptTokens(tok, 'hi')), Array.from(tok.encode('hi')));
    }
  });
});

describe('loongtrain generate', () => {
  /** A run folder holding one checkpoint of a random tiny model. */
  function checkpoint(tokenizer: TokenizerName): string {
    const config = { ...tinyModel(tokenizer), initStd: 0.3 };
    const { params } = setup(config);
    const run = join(tmp, `run-${tokenizer}`);
    const state: TrainerState = {
      format: 1, step: 1, optimizerStep: 1, dataPosition: 1, sequencesPerStep: 1, causal: true, seed: 1,
      model: config, tokenizer, seqLen: 32, layout: 'dp=1 hp=1 cp=1', rngState: 1,
    };
    const flat = params.params.data.slice();
    saveCheckpoint(join(run, 'checkpoints'), state, params.layout, { params: flat, m: new Float32Array(flat.length), v: new Float32Array(flat.length), step: 1 }, 1);
    return run;
  }
  const runCli = (...args: string[]): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [CLI, 'generate', ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('end to end on a tiny checkpoint, both tokenizers: exit 0, the prompt and generated text on stdout, tokens/s on stderr', () => {
    for (const tokenizer of ['byte', 'gpt2'] as const) {
      const run = checkpoint(tokenizer);
      const r = runCli('--checkpoint', run, '--prompt', 'Hello', '--max-new-tokens', '12', '--seed', '3', '--kernels', 'reference');
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.startsWith('Hello') && r.stdout.length > 'Hello\n'.length, `stdout ${JSON.stringify(r.stdout)}`);
      assert.match(r.stderr, /generated \d+ tokens? in [\d.]+ s: [\d.]+ tokens\/s/);
      // Greedy is deterministic; the run folder resolves to its newest checkpoint, as does the checkpoint folder itself.
      const a = runCli('--checkpoint', run, '--prompt', '', '--temperature', '0', '--max-new-tokens', '8', '--no-echo');
      const b = runCli('--checkpoint', join(run, 'checkpoints', 'step-00000001'), '--temperature', '0', '--max-new-tokens', '8', '--no-echo');
      assert.equal(a.status, 0, a.stderr);
      assert.equal(a.stdout, b.stdout);
    }
  });

  it('clear errors: no checkpoint, bad options, a prompt longer than the context; --help documents every option', () => {
    const run = checkpoint('byte');
    const fails = (fragment: string, ...args: string[]): void => {
      const r = runCli(...args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.stderr.includes(fragment), `stderr ${JSON.stringify(r.stderr)} lacks ${JSON.stringify(fragment)}`);
    };
    fails('--checkpoint DIR is required');
    fails('no such folder', '--checkpoint', join(tmp, 'nowhere'));
    fails('no checkpoint there', '--checkpoint', tmp);
    fails('--top-p 2 is invalid', '--checkpoint', run, '--top-p', '2');
    fails('--temperature "hot" is invalid', '--checkpoint', run, '--temperature', 'hot');
    fails('--max-new-tokens 0 is invalid', '--checkpoint', run, '--max-new-tokens', '0');
    fails('the prompt is 10 tokens', '--checkpoint', run, '--prompt', 'abcdefghij', '--context', '8');
    const help = spawnSync(process.execPath, [CLI, 'generate', '--help'], { encoding: 'utf8' }).stdout;
    for (const flag of ['--checkpoint', '--prompt', '--max-new-tokens', '--temperature', '--top-k', '--top-p', '--seed', '--context', '--kernels', '--no-echo']) assert.ok(help.includes(flag), flag);
  });

  it('loadTrainedModel + Decoder on the saved checkpoint reproduce the in-memory model', () => {
    const run = checkpoint('byte');
    const model = loadTrainedModel(run, { kernels: 'reference', workBytes: 8 * 2 ** 20 });
    const decoder = new Decoder(model.kernels, model.params, { capacity: 16 });
    const config = { ...tinyModel('byte'), initStd: 0.3 };
    const mem = setup(config);
    const ref = new Decoder(mem.kernels, mem.params, { capacity: 16 });
    assert.deepEqual(Array.from(decoder.prefill([72, 105])), Array.from(ref.prefill([72, 105])));
  });
});
