import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LocalAttention } from '../src/attention/local.js';
import { launchRanks } from '../src/comm/backends.js';
import { ConfigError } from '../src/errors.js';
import { referenceKernels as kernels } from '../src/kernels/reference/index.js';
import { TransformerBlock } from '../src/model/block.js';
import { type CheckpointPolicy, checkpointedLayers, layerPolicies } from '../src/model/checkpoint.js';
import type { ModelConfig } from '../src/model/config.js';
import { Transformer } from '../src/model/model.js';
import { ModelParams } from '../src/model/params.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { localLayout } from './helpers/layouts.js';
import type { PolicyRun, PolicyTrainArgs } from './fixtures/policy-train.js';

const MODEL: ModelConfig = {
  vocabSize: 48, dim: 32, layers: 4, heads: 4, kvHeads: 2, ffnDim: 40,
  ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: false, initStd: 0.05,
};
const SEQ = 64;
const STEPS = 3;

interface LocalRun {
  policies: CheckpointPolicy[];
  losses: number[];
  grads: Float32Array;
  counters: ReturnType<Transformer['counters']>;
  /** Live 'saved' bytes at the end of each forward, above the pre-forward value. */
  savedAfterForward: number[];
  liveBefore: number[];
  liveAfter: number[];
  activationsBefore: number[];
  activationsAfter: number[];
}

/** Train MODEL on one rank (LocalAttention) for STEPS steps of plain SGD under one policy. */
function trainLocal(policy: CheckpointPolicy, layers: number): LocalRun {
  const arena = new Arena(16 << 20);
  const model = new Transformer(
    kernels,
    arena,
    MODEL,
    () => new LocalAttention({ kernels, heads: MODEL.heads, kvHeads: MODEL.kvHeads, headDim: MODEL.dim / MODEL.heads }),
    { seed: 11, checkpoint: { policy, layers } },
  );
  const rng = new Rng(3);
  const positions = Int32Array.from({ length: SEQ }, (_, i) => i);
  const run: LocalRun = {
    policies: model.policies, losses: [], grads: new Float32Array(0), counters: [], savedAfterForward: [],
    liveBefore: [], liveAfter: [], activationsBefore: [], activationsAfter: [],
  };
  for (let step = 0; step < STEPS; step++) {
    const tokens = Int32Array.from({ length: SEQ }, () => rng.int(MODEL.vocabSize));
    const labels = Int32Array.from({ length: SEQ }, () => rng.int(MODEL.vocabSize));
    model.params.zeroGrads();
    const before = arena.stats();
    run.liveBefore.push(before.liveBytes);
    run.activationsBefore.push(before.liveByCategory.activations);
    run.losses.push(model.forward(tokens, positions, labels, 1 / SEQ, localLayout(SEQ)));
    run.savedAfterForward.push(arena.stats().liveByCategory.saved - before.liveByCategory.saved);
    model.backward();
    const after = arena.stats();
    run.liveAfter.push(after.liveBytes);
    run.activationsAfter.push(after.liveByCategory.activations);
    kernels.axpy(model.params.params, model.params.grads, -0.5);
  }
  run.grads = model.params.grads.data.slice();
  run.counters = model.counters();
  return run;
}

describe('checkpoint policy names and layers (F10)', () => {
  it('unknown policy names raise, naming the value and the valid names', () => {
    for (const bad of ['selective', 'Full', 'selective+', '', 'auto']) {
      assert.throws(
        () => new Transformer(kernels, new Arena(4 << 20), MODEL, new LocalAttention({ kernels, heads: 4, kvHeads: 2, headDim: 8 }), { checkpoint: { policy: bad as CheckpointPolicy, layers: 1 } }),
        (e: unknown) => e instanceof ConfigError && e.message.includes(`checkpoint.policy = ${JSON.stringify(bad)} is invalid`) && e.message.includes('"selective++"'),
      );
    }
    assert.throws(() => layerPolicies({ policy: 'full', layers: 5 }, 4), /checkpoint layers = 5 is invalid: it must be an integer in \[0, 4\]/);
    assert.throws(() => checkpointedLayers(0, 4), /checkpoint\.fraction = 0 is invalid: it must be in \(0, 1\]/);
    assert.throws(() => checkpointedLayers(1.5, 4), /checkpoint\.fraction = 1\.5/);
  });

  it('the fraction picks the first ⌈fraction · layers⌉ layers', () => {
    assert.equal(checkpointedLayers(1, 4), 4);
    assert.equal(checkpointedLayers(0.5, 4), 2);
    assert.equal(checkpointedLayers(0.3, 4), 2);
    assert.equal(checkpointedLayers(0.01, 4), 1);
    assert.deepEqual(layerPolicies({ policy: 'selective++', layers: 2 }, 4), ['selective++', 'selective++', 'none', 'none']);
  });
});

describe('checkpoint policies on one rank', () => {
  const none = trainLocal('none', 0);
  const runs = {
    full: trainLocal('full', 4),
    'selective++': trainLocal('selective++', 4),
    'full, first 2 layers': trainLocal('full', 2),
    'selective++, first 3 layers': trainLocal('selective++', 3),
  };

  it('losses and gradients are bit-identical to no checkpointing after several SGD steps (F9)', () => {
    for (const [name, run] of Object.entries(runs)) {
      assert.deepEqual(run.losses, none.losses, `${name}: losses`);
      assert.ok(run.grads.every((g, i) => Object.is(g, none.grads[i])), `${name}: gradients bit for bit`);
    }
    assert.ok(none.losses[STEPS - 1]! < none.losses[0]!, 'the steps train (loss falls), so later steps see updated weights');
  });

  it('counters: attention forward once per layer per step under selective++, twice under full; only the first layers recompute', () => {
    const full = runs['full, first 2 layers'];
    assert.deepEqual(full.policies, ['full', 'full', 'none', 'none']);
    assert.deepEqual(full.counters.map((c) => c.attentionForwards), [2 * STEPS, 2 * STEPS, STEPS, STEPS]);
    assert.deepEqual(full.counters.map((c) => c.attentionRecomputes), [STEPS, STEPS, 0, 0]);
    assert.deepEqual(full.counters.map((c) => c.recomputes), [STEPS, STEPS, 0, 0]);
    const sel = runs['selective++, first 3 layers'];
    assert.deepEqual(sel.policies, ['selective++', 'selective++', 'selective++', 'none']);
    assert.deepEqual(sel.counters.map((c) => c.attentionForwards), [STEPS, STEPS, STEPS, STEPS]);
    assert.deepEqual(sel.counters.map((c) => c.attentionRecomputes), [0, 0, 0, 0]);
    assert.deepEqual(sel.counters.map((c) => c.attentionKept), [STEPS, STEPS, STEPS, 0], 'attention outputs kept (F10)');
    assert.deepEqual(sel.counters.map((c) => c.recomputes), [STEPS, STEPS, STEPS, 0]);
    assert.deepEqual(none.counters.map((c) => c.recomputes), [0, 0, 0, 0]);
  });

  it('saved bytes after forward: full < selective++ < none; live bytes after backward equal the pre-forward value', () => {
    const saved = (r: LocalRun): number => r.savedAfterForward[0]!;
    assert.ok(saved(runs.full) < saved(runs['selective++']), `full ${saved(runs.full)} < selective++ ${saved(runs['selective++'])}`);
    assert.ok(saved(runs['selective++']) < saved(none), `selective++ ${saved(runs['selective++'])} < none ${saved(none)}`);
    assert.ok(saved(runs['full, first 2 layers']) > saved(runs.full) && saved(runs['full, first 2 layers']) < saved(none));
    for (const [name, run] of Object.entries({ none, ...runs })) {
      assert.deepEqual(run.liveAfter, run.liveBefore, `${name}: live bytes`);
      assert.deepEqual(run.activationsAfter, run.activationsBefore, `${name}: live activation bytes`);
    }
  });

  it('a kept attention output whose shape differs from the recomputed layer is an error naming it', () => {
    const arena = new Arena(4 << 20);
    const params = new ModelParams(arena, MODEL);
    params.init(1);
    const core = new LocalAttention({ kernels, heads: 4, kvHeads: 2, headDim: 8 });
    const block = new TransformerBlock(kernels, params, 0, core, 'selective++');
    const x = Tensor.from(arena, [6, 32], Array.from({ length: 6 * 32 }, (_, i) => Math.sin(i)), 'saved');
    const { saved } = block.forward(x, { positions: Int32Array.from([0, 1, 2, 3, 4, 5]), layout: localLayout(6) });
    assert.equal(saved.policy, 'selective++');
    if (saved.policy !== 'selective++') return;
    const tampered = { ...saved, attn: { ...saved.attn, out: saved.attn.out.reshape([3, 8, 8]) } };
    const dy = Tensor.zeros(arena, [6, 32]);
    assert.throws(() => block.backward(tampered, dy, Tensor.zeros(arena, [6, 32])), /layer 0 recomputation: the kept attention output has shape \[3, 8, 8\] but the recomputed layer needs \[6, 4, 8\]/);
    const short = { ...saved, placement: { ...saved.placement, positions: Int32Array.from([0, 1, 2]) } };
    assert.throws(() => block.backward(short, dy, Tensor.zeros(arena, [6, 32])), /layer 0: positions has 3 entries but the layer input x has shape \[6, 32\]/);
  });
});

const ENTRY = fileURLToPath(new URL('./fixtures/policy-train.js', import.meta.url));

async function trainRanks(hp: number, cp: number, layers: number): Promise<PolicyRun[][]> {
  const args: PolicyTrainArgs = {
    model: { ...MODEL, layers },
    hp,
    cp,
    seq: SEQ,
    steps: STEPS,
    runs: [
      { policy: 'none', layers: 0 },
      { policy: 'full', layers },
      { policy: 'selective++', layers },
    ],
  };
  return (await launchRanks({ world: hp * cp, entry: ENTRY, args, timeoutMs: 20_000, arenaBytes: 32 << 20 })) as PolicyRun[][];
}

for (const [hp, cp, layers] of [[2, 1, 2], [2, 2, 3]] as const) {
  describe(`2D-Attention hp=${hp} cp=${cp}, ${layers} layers, seq ${SEQ}, ${STEPS} steps`, async () => {
    const ranks = await trainRanks(hp, cp, layers);

    it('losses and gradients are bit-identical under none, full and selective++ (F9)', () => {
      for (const [rank, [none, full, sel]] of ranks.entries()) {
        for (const run of [full!, sel!]) {
          assert.deepEqual(run.localLossSums, none!.localLossSums, `rank ${rank} ${run.policy}: loss sums`);
          assert.deepEqual(run.losses, none!.losses, `rank ${rank} ${run.policy}: losses`);
          assert.ok(run.grads.every((g, i) => Object.is(g, none!.grads[i])), `rank ${rank} ${run.policy}: gradients bit for bit`);
          assert.deepEqual(run.liveAfter, run.liveBefore, `rank ${rank} ${run.policy}: live bytes after backward`);
        }
      }
    });

    it('the distributed attention forward runs once per layer per step under selective++, twice under full (counted by the core)', () => {
      for (const [none, full, sel] of ranks) {
        for (const step of none!.coreForwards) assert.deepEqual(step, Array(layers).fill(1));
        for (const step of sel!.coreForwards) assert.deepEqual(step, Array(layers).fill(1));
        for (const step of full!.coreForwards) assert.deepEqual(step, Array(layers).fill(2));
        assert.deepEqual(sel!.counters.map((c) => c.attentionRecomputes), Array(layers).fill(0));
        assert.deepEqual(sel!.counters.map((c) => c.attentionKept), Array(layers).fill(STEPS));
      }
    });

    it('attention messages per step under selective++ equal no checkpointing; full sends the forward again (F11)', () => {
      for (const [rank, [none, full, sel]] of ranks.entries()) {
        assert.deepEqual(sel!.messages, none!.messages, `rank ${rank}: hp and cp traffic per step`);
        const n = none!.messages[0]!;
        const f = full!.messages[0]!;
        assert.ok(n.hp.messagesSent > 0, 'hp all-to-alls are counted');
        if (cp > 1) assert.ok(n.cp.messagesSent > 0, 'ring messages are counted');
        // A forward sends 4 all-to-alls per layer and cp − 1 ring messages; full repeats it.
        assert.equal(f.hp.messagesSent - n.hp.messagesSent, layers * 4 * (hp - 1), `rank ${rank}: extra hp messages under full`);
        assert.equal(f.cp.messagesSent - n.cp.messagesSent, layers * (cp - 1), `rank ${rank}: extra cp messages under full`);
      }
    });
  });
}
