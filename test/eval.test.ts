import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { LocalAttention } from '../src/attention/local.js';
import { createLauncher } from '../src/comm/backends.js';
import type { Launcher } from '../src/comm/launcher.js';
import { heldOutDocuments, scoringSequences, splitStreams } from '../src/data/heldout.js';
import { buildTokenStream, SequenceSampler } from '../src/data/packing.js';
import { loadDocuments } from '../src/data/sources.js';
import { createTokenizer } from '../src/data/tokenizer.js';
import { referenceKernels } from '../src/kernels/reference/index.js';
import { Transformer } from '../src/model/model.js';
import { ModelParams, paramLayout } from '../src/model/params.js';
import { loadTrainedModel } from '../src/infer/trained-model.js';
import { SequenceLayout } from '../src/parallel/sequence-layout.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { readTrainerState } from '../src/train/checkpoint.js';
import { loadConfig } from '../src/train/config.js';
import { evaluateCheckpoint } from '../src/train/eval.js';
import type { RankTrainArgs } from '../src/train/rank.js';
import { train } from '../src/train/train.js';
import { localLayout } from './helpers/layouts.js';
import { type RefParams, refModelLoss } from './helpers/model-ref.js';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'loongtrain-eval-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** 40 documents of Brown text (350–650 characters each), one per .jsonl line. */
const corpus = join(root, 'corpus.jsonl');
const docs = loadDocuments({ source: 'brown' }).documents.slice(0, 40).map((d, i) => d.slice(0, 350 + ((i * 37) % 300)));
writeFileSync(corpus, docs.map((text) => JSON.stringify({ text })).join('\n') + '\n');
const shortText = join(root, 'short.txt');
const SHORT = 'A short held-out line.';
writeFileSync(shortText, SHORT);

const rel = (a: number, b: number): number => Math.abs(a - b) / Math.abs(b);

function config(dir: string, overrides: string[] = []) {
  return loadConfig(undefined, [
    'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64',
    'train.seqLen=64', 'train.steps=4', 'optim.warmupSteps=1', 'optim.lr=1e-2', 'optim.minLr=1e-3',
    'data.source=files', `data.path=${corpus}`, 'data.valFraction=0.1', 'train.evalEvery=2', 'train.evalSequences=4',
    'log.progress=plain', `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`,
    ...overrides,
  ]);
}

/** A threads launcher that keeps the arguments the ranks got. */
async function capturing(): Promise<{ launcher: Launcher; args: () => RankTrainArgs }> {
  const inner = await createLauncher('threads');
  let captured: RankTrainArgs | undefined;
  const launcher: Launcher = {
    backend: inner.backend,
    fixedWorld: inner.fixedWorld,
    coordinator: inner.coordinator,
    describe: (w) => inner.describe(w),
    launch: (o) => {
      captured = o.args as RankTrainArgs;
      return inner.launch(o);
    },
    requestStop: () => inner.requestStop(),
  };
  return { launcher, args: () => captured! };
}

describe('validation during training and loongtrain eval', () => {
  const dir = join(root, 'run-2x2');
  const lines: string[] = [];
  let rows: Array<Record<string, unknown>> = [];
  let checkpoint = '';
  let rankArgs: RankTrainArgs;
  before(async () => {
    const cap = await capturing();
    const result = await train(config(dir, ['parallel.hp=2', 'parallel.cp=2', 'optim.zeroStage=3']), { out: (l) => lines.push(l), launcher: cap.launcher });
    rankArgs = cap.args();
    checkpoint = result.checkpoint!;
    rows = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  });

  it('logs valLoss and valPerplexity every train.evalEvery steps, in metrics.jsonl and the progress line; the first line states the split', () => {
    assert.deepEqual(rows.map((r) => r.valLoss !== undefined), [false, true, false, true]);
    for (const r of rows.filter((x) => x.valLoss !== undefined)) {
      assert.ok(Number.isFinite(r.valLoss) && (r.valLoss as number) > 0);
      assert.ok(rel(r.valPerplexity as number, Math.exp(r.valLoss as number)) < 1e-12);
    }
    assert.match(lines[0]!, /40 documents, 4 held out for validation \(data\.valFraction = 0\.1, the lowest text hashes; \d+ tokens training never sees; validation loss every 2 steps on 4 sequences\)/);
    assert.ok(lines.some((l) => /^step 2 .*\| val loss \d+\.\d{4} \(ppl \d+\.\d+\)$/.test(l)), lines.join('\n'));
  });

  it('eval of the checkpoint on its held-out split (one rank) equals exp(validation loss) logged at that step', async () => {
    const r = await evaluateCheckpoint({ checkpoint });
    const logged = rows[3]!;
    assert.equal(r.step, 4);
    assert.ok(rel(r.perplexity, Math.exp(logged.valLoss as number)) < 1e-6, `eval ${r.perplexity} vs logged ${Math.exp(logged.valLoss as number)}`);
    assert.ok(rel(r.loss, logged.valLoss as number) < 1e-6);
    assert.equal(r.sequences, 4);
    assert.equal(r.tokens, 4 * 64, 'four full windows of 64 labels (concat packing)');
    // The run folder resolves to its newest checkpoint.
    assert.equal((await evaluateCheckpoint({ checkpoint: dir })).loss, r.loss);
  });

  it('eval on one rank equals eval on hp=2 × cp=2 (held-out split, a padded short text) and dp=2 × cp=2 (--data)', async () => {
    for (const [base, set] of [
      [{ checkpoint }, ['parallel.hp=2', 'parallel.cp=2']],
      [{ checkpoint, data: shortText }, ['parallel.hp=2', 'parallel.cp=2']],
      [{ checkpoint, data: corpus, sequences: 3 }, ['parallel.dp=2', 'parallel.cp=2']],
    ] as const) {
      const one = await evaluateCheckpoint(base);
      const grid = await evaluateCheckpoint({ ...base, set });
      assert.match(grid.layout, set[0] === 'parallel.hp=2' ? /hp=2 cp=2/ : /dp=2 hp=1 cp=2/);
      assert.equal(grid.tokens, one.tokens);
      assert.ok(rel(grid.loss, one.loss) < 1e-6, `${set.join(' ')}: ${grid.loss} vs one rank ${one.loss}`);
    }
  });

  it('a text shorter than seqLen is scored as one sequence of exactly its tokens (n − 1 labels)', async () => {
    const r = await evaluateCheckpoint({ checkpoint, data: shortText, set: ['train.kernels=reference'] });
    const tokens = createTokenizer('byte').encode(SHORT);
    const n = tokens.length;
    assert.equal(r.tokens, n - 1);
    assert.equal(r.sequences, 1);
    // Independently: the training model's forward over exactly those n tokens on one rank.
    const m = loadTrainedModel(checkpoint, { kernels: 'reference' });
    const c = m.config;
    const model = new Transformer(referenceKernels, m.arena, c, new LocalAttention({ kernels: referenceKernels, heads: c.heads, kvHeads: c.kvHeads, headDim: c.dim / c.heads }), { params: m.params });
    const labels = Int32Array.from({ length: n }, (_, t) => (t + 1 < n ? tokens[t + 1]! : -1));
    const positions = Int32Array.from({ length: n }, (_, t) => t);
    const sum = model.forward(Int32Array.from(tokens), positions, labels, 1, new SequenceLayout({ hp: 1, cp: 1, seqLen: n, causal: true }));
    assert.ok(rel(r.loss, sum / (n - 1)) < 1e-6, `eval ${r.loss} vs forward ${sum / (n - 1)}`);
    // And against the float64 reference model of test/helpers.
    const ref: RefParams = new Map(paramLayout(c).specs.map((s) => [s.name, Float64Array.from(m.params.params.data.subarray(s.offset, s.offset + s.size))]));
    const refLoss = refModelLoss(c, ref, tokens, positions, labels) / (n - 1);
    assert.ok(rel(r.loss, refLoss) < 1e-5, `eval ${r.loss} vs float64 reference ${refLoss}`);
  });

  it('loongtrain eval --json prints exactly one JSON object with loss, perplexity and tokens', async () => {
    const { stdout } = await run(process.execPath, [cli, 'eval', '--checkpoint', checkpoint, '--data', shortText, '--json']);
    assert.equal(stdout.trim().split('\n').length, 1, stdout);
    const out = JSON.parse(stdout) as Record<string, number>;
    assert.deepEqual(Object.keys(out).sort(), ['loss', 'perplexity', 'tokens']);
    assert.equal(out.tokens, SHORT.length - 1);
    assert.ok(rel(out.perplexity!, Math.exp(out.loss!)) < 1e-12);
    const direct = await evaluateCheckpoint({ checkpoint, data: shortText });
    assert.ok(rel(out.loss!, direct.loss) < 1e-12);
  });

  it('the split is deterministic, recorded in the checkpoint, and training never sees a validation document', () => {
    const validation = heldOutDocuments(docs, 0.1);
    assert.equal(validation.length, 4);
    assert.deepEqual(heldOutDocuments(docs, 0.1), validation, 'the same documents give the same split');
    // Chosen by the text alone: the same texts are held out when the documents come in another order.
    const reversed = [...docs].reverse();
    assert.deepEqual(heldOutDocuments(reversed, 0.1).map((i) => reversed[i]).sort(), validation.map((i) => docs[i]).sort());
    const state = readTrainerState(checkpoint);
    assert.deepEqual(state.heldOut?.validation, validation);
    assert.equal(state.heldOut?.documents, 40);
    assert.equal(state.heldOut?.sequences, 4);

    // The ranks' training stream is the training documents' stream, nothing else.
    const tokenizer = createTokenizer('byte');
    const split = splitStreams(docs, tokenizer, 0.1);
    assert.deepEqual(Array.from(rankArgs.stream), Array.from(split.train.stream));
    assert.deepEqual(Array.from(rankArgs.valStream!), Array.from(split.val.stream));
    // Every token position of every training window belongs to a training document.
    const sampler = new SequenceSampler(rankArgs.stream, 64, 1234, { docStarts: rankArgs.docStarts });
    const held = new Set(validation);
    const starts = rankArgs.docStarts;
    for (let k = 0; k < sampler.count; k++) {
      for (const at of [k * 64, k * 64 + 64]) {
        let d = 0;
        while (d + 1 < starts.length && starts[d + 1]! <= at) d++;
        assert.ok(!held.has(split.trainDocuments[d]!), `window ${k} holds stream position ${at} of validation document ${split.trainDocuments[d]}`);
      }
    }
    // No validation document's tokens occur in the training stream at all.
    const text = String.fromCharCode(...rankArgs.stream);
    for (const i of validation) assert.equal(text.indexOf(String.fromCharCode(...tokenizer.encode(docs[i]!))), -1, `validation document ${i} is in the training stream`);
    // The validation sequences are the first windows of the validation stream.
    const seqs = scoringSequences(split.val.stream, split.val.docStarts, 64, { packing: 'concat', positions: 'sequence' }, 4);
    assert.deepEqual(Array.from(seqs[0]!.tokens), Array.from(split.val.stream.subarray(0, 64)));
  });
});

describe('held-out split edge cases', () => {
  it('data.valFraction = 0 disables the split: all documents train, no record, eval needs --data', async () => {
    const dir = join(root, 'run-nosplit');
    const lines: string[] = [];
    const cap = await capturing();
    const result = await train(config(dir, ['data.valFraction=0', 'train.steps=1', 'log.progress=none']), { out: (l) => lines.push(l), launcher: cap.launcher });
    assert.match(lines[0]!, /no held-out split \(data\.valFraction = 0, so train\.evalEvery = 2 has nothing to score\)/);
    assert.deepEqual(Array.from(cap.args().stream), Array.from(buildTokenStream(docs, createTokenizer('byte')).stream));
    assert.equal(readTrainerState(result.checkpoint!).heldOut, undefined);
    await assert.rejects(evaluateCheckpoint({ checkpoint: result.checkpoint! }), /records no held-out split.*--data/);
  });

  it('one document or a fraction of 0 holds nothing out; otherwise at least one and never all', () => {
    assert.deepEqual(heldOutDocuments(['only'], 0.5), []);
    assert.deepEqual(heldOutDocuments(['a', 'b', 'c'], 0), []);
    assert.equal(heldOutDocuments(['a', 'b', 'c'], 0.01).length, 1);
    assert.equal(heldOutDocuments(['a', 'b', 'c'], 0.99).length, 2);
  });

  it('scoring sequences: full windows, then the tail; a short text without its separator', () => {
    const stream = Int32Array.from({ length: 20 }, (_, i) => i % 7);
    const seqs = scoringSequences(stream, Int32Array.of(0), 8, { packing: 'concat', positions: 'sequence' });
    // ⌊19 / 8⌋ = 2 full windows, then stream[16 … 20) as a padded sequence with 3 labels.
    assert.equal(seqs.length, 3);
    assert.deepEqual(Array.from(seqs[2]!.labels), [stream[17], stream[18], stream[19], -1, -1, -1, -1, -1]);
    assert.deepEqual(Array.from(seqs[2]!.cuSeqlens), [0, 4]);
    const labels = seqs.reduce((n, s) => n + s.labels.filter((l) => l !== -1).length, 0);
    assert.equal(labels, 19, 'every stream token but the first is a label once');
    const short = scoringSequences(Int32Array.of(5, 6, 7, 256), Int32Array.of(0), 8, { packing: 'documents', positions: 'document' });
    assert.deepEqual(Array.from(short[0]!.labels), [6, 7, -1, -1, -1, -1, -1, -1]);
  });

  it('Transformer.evaluate equals the forward loss, keeps nothing and leaves the gradients alone', () => {
    const c = { vocabSize: 40, dim: 16, layers: 2, heads: 4, kvHeads: 2, ffnDim: 24, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false, initStd: 0.2 };
    const arena = new Arena(16 * 2 ** 20);
    const model = new Transformer(referenceKernels, arena, c, new LocalAttention({ kernels: referenceKernels, heads: 4, kvHeads: 2, headDim: 4 }), { seed: 3 });
    const rng = new Rng(9);
    const T = 12;
    const tokens = Int32Array.from({ length: T }, () => rng.int(40));
    const labels = Int32Array.from({ length: T }, (_, t) => (t === 5 ? -1 : rng.int(40)));
    const positions = Int32Array.from({ length: T }, (_, t) => t);
    const layout = localLayout(T);
    (model.params as ModelParams).grads.data.fill(0.5);
    const live = arena.stats().liveBytes;
    const loss = model.evaluate(tokens, positions, labels, layout);
    assert.equal(arena.stats().liveBytes, live, 'every activation is freed');
    assert.ok((model.params as ModelParams).grads.data.every((g) => g === 0.5), 'no gradient changed');
    assert.equal(model.forward(tokens, positions, labels, 1, layout), loss);
    model.backward();
  });

  it('a resume must keep the checkpoint\'s split', async () => {
    const dir = join(root, 'run-2x2');
    const cfg = config(dir, ['parallel.hp=2', 'parallel.cp=2', 'data.valFraction=0', 'train.steps=6']);
    await assert.rejects(train(cfg, { resume: join(dir, 'checkpoints') }), /held-out split differs \(checkpoint: 4 documents \[.*\], this run: none\).*data\.valFraction/);
  });

  it('invalid flags and inputs name the flag', async () => {
    const dir = join(root, 'run-2x2');
    await assert.rejects(evaluateCheckpoint({ checkpoint: join(root, 'missing') }), /--checkpoint .*missing does not exist/);
    await assert.rejects(evaluateCheckpoint({ checkpoint: root }), /--checkpoint .*: no checkpoint in it/);
    await assert.rejects(evaluateCheckpoint({ checkpoint: dir, data: join(root, 'nope.txt') }), /--data .*nope\.txt does not exist/);
    const bad = join(root, 'bad.csv');
    writeFileSync(bad, 'x');
    await assert.rejects(evaluateCheckpoint({ checkpoint: dir, data: bad }), /--data .*bad\.csv/);
    await assert.rejects(evaluateCheckpoint({ checkpoint: dir, sequences: 0 }), /--sequences 0 is invalid/);
    await assert.rejects(evaluateCheckpoint({ checkpoint: dir, set: ['model.dim=8'] }), /--set model\.dim=8: eval takes model\.dim from the checkpoint/);
    await assert.rejects(evaluateCheckpoint({ checkpoint: dir, set: ['parallel.hp=3'] }), /parallel\.hp|hp = 3/);
    const noFlag = await run(process.execPath, [cli, 'eval', '--json']).then(() => undefined, (e: { code: number; stderr: string; stdout: string }) => e);
    assert.equal(noFlag?.code, 2, noFlag?.stderr);
    assert.match(noFlag!.stderr, /--checkpoint is required/);
    assert.equal(noFlag!.stdout, '');
    const unknown = await run(process.execPath, [cli, 'eval', '--checkpoint', dir, '--dataset', corpus]).then(() => undefined, (e: { stderr: string }) => e);
    assert.match(unknown!.stderr, /--dataset/);
    const zero = await run(process.execPath, [cli, 'eval', '--checkpoint', dir, '--sequences', '0']).then(() => undefined, (e: { stderr: string }) => e);
    assert.match(zero!.stderr, /--sequences "0" is invalid/);
  });
});
