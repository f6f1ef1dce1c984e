import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { launchRanks } from '../src/comm/backends.js';
import { ConfigError } from '../src/errors.js';
import { predictPeakBytes, tensorBytes } from '../src/memory/predict.js';
import type { CheckpointPolicy } from '../src/model/checkpoint.js';
import type { ModelConfig } from '../src/model/config.js';
import { paramLayout } from '../src/model/params.js';
import { modelStateBytes, largestShardSize, zeroShardCount, type ZeroStage } from '../src/optim/zero.js';
import { zeroGroups, type ZeroShardGroup } from '../src/parallel/rank-groups.js';
import { ParallelDims } from '../src/parallel/dims.js';
import { MEMORY_CATEGORIES } from '../src/tensor/arena.js';
import { parseConfig } from '../src/train/config.js';
import type { StepMetrics } from '../src/train/metrics.js';
import { train } from '../src/train/train.js';
import type { PolicyMemoryArgs, PolicyMemoryResult } from './fixtures/policy-memory.js';

/** The demo model (configs/demo.toml with the byte tokenizer). */
const DEMO: ModelConfig = {
  vocabSize: 257, dim: 64, layers: 2, heads: 4, kvHeads: 2, ffnDim: 176,
  ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true, initStd: 0.02,
};

const ENTRY = fileURLToPath(new URL('./fixtures/policy-memory.js', import.meta.url));

interface Case {
  dp?: number;
  hp: number;
  cp: number;
  w: number;
  seq: number;
  policy: CheckpointPolicy;
  fraction: number;
  zeroStage?: ZeroStage;
  shardGroup?: ZeroShardGroup;
  model?: Partial<ModelConfig>;
}

const CASES: Case[] = [
  { hp: 1, cp: 1, w: 1, seq: 256, policy: 'none', fraction: 1 },
  { hp: 1, cp: 1, w: 1, seq: 256, policy: 'full', fraction: 1 },
  { hp: 2, cp: 2, w: 2, seq: 256, policy: 'selective++', fraction: 1 },
  { hp: 1, cp: 4, w: 2, seq: 256, policy: 'selective++', fraction: 0.5 },
  // KV heads replicated (hp = 4 > kvHeads = 1) and a double ring with w = 1.
  { hp: 4, cp: 2, w: 1, seq: 256, policy: 'full', fraction: 1, model: { kvHeads: 1, layers: 3 } },
  // Hybrid ZeRO: shard groups world / sp / dp, uneven shards (cp = 3), an untied head, one layer.
  { hp: 2, cp: 2, w: 2, seq: 256, policy: 'none', fraction: 1, zeroStage: 1 },
  { dp: 2, hp: 1, cp: 2, w: 2, seq: 128, policy: 'full', fraction: 1, zeroStage: 2, shardGroup: 'sp' },
  { hp: 2, cp: 2, w: 2, seq: 256, policy: 'selective++', fraction: 1, zeroStage: 3 },
  { hp: 1, cp: 3, w: 3, seq: 252, policy: 'full', fraction: 1, zeroStage: 3, model: { tiedEmbeddings: false, layers: 3 } },
  { dp: 2, hp: 2, cp: 1, w: 1, seq: 128, policy: 'none', fraction: 1, zeroStage: 3, shardGroup: 'dp', model: { layers: 1 } },
];

describe('predicted per-rank peak bytes (docs/memory.md)', () => {
  for (const c of CASES) {
    const stage = c.zeroStage ?? 0;
    const group = c.shardGroup ?? 'world';
    const name = `dp=${c.dp ?? 1} hp=${c.hp} cp=${c.cp} w=${c.w} S=${c.seq} ${c.policy} fraction ${c.fraction}, zeroStage ${stage} over ${group}${c.model ? ' ' + JSON.stringify(c.model) : ''}`;
    it(`equals the measured peak of a training step (reference kernels: no scratch outside the replay): ${name}`, async () => {
      const config = parseConfig({
        model: { ...c.model },
        parallel: { dp: c.dp ?? 1, hp: c.hp, cp: c.cp, innerRingSize: c.w },
        train: { steps: 1, seqLen: c.seq, kernels: 'reference' },
        optim: { warmupSteps: 0, zeroStage: stage, zeroShardGroup: group },
        checkpoint: { policy: c.policy, fraction: c.fraction },
      });
      const dims = new ParallelDims(config.parallel);
      const args: PolicyMemoryArgs = { config };
      const ranks = (await launchRanks({ world: dims.world, entry: ENTRY, args, timeoutMs: 30_000, arenaBytes: 32 << 20 })) as PolicyMemoryResult[];
      const zero = { stage, shards: zeroShardCount(dims, stage, group) };
      const predicted = predictPeakBytes(config.model, c.seq, { hp: c.hp, cp: c.cp, innerRingSize: c.w }, { policy: c.policy, fraction: c.fraction }, zero);
      let exact = 0;
      for (const [rank, measured] of ranks.entries()) {
        // Ranks differ only in their shard's bytes; the prediction is of shard predicted.shardIndex.
        const shard = zeroGroups(dims, rank, stage, group).shard.ranks.indexOf(rank);
        if (shard !== predicted.shardIndex) {
          assert.ok(measured.peakBytes <= predicted.peakBytes, `rank ${rank} (shard ${shard}): measured ${measured.peakBytes} above the largest shard's prediction ${predicted.peakBytes}`);
          continue;
        }
        exact++;
        assert.equal(measured.peakBytes, predicted.peakBytes, `rank ${rank}: peak bytes`);
        for (const cat of MEMORY_CATEGORIES) assert.equal(measured.peakByCategory[cat], predicted.peakByCategory[cat], `rank ${rank}: peak ${cat} bytes`);
      }
      assert.ok(exact >= 1, `some rank holds shard ${predicted.shardIndex}`);
      const sum = MEMORY_CATEGORIES.reduce((a, cat) => a + predicted.atPeak[cat], 0);
      assert.equal(sum, predicted.peakBytes, 'the per-category breakdown at the peak sums to the peak');
    });
  }
});

describe('predictPeakBytes', () => {
  const layout = { hp: 1, cp: 1, innerRingSize: 1 };
  it('model states are 16 bytes per flat parameter element at ZeRO stage 0', () => {
    const p = predictPeakBytes(DEMO, 64, layout, { policy: 'none', fraction: 1 });
    const flat = paramLayout(DEMO).flatSize;
    assert.equal(p.atPeak.params, tensorBytes(flat));
    assert.equal(p.atPeak.grads, tensorBytes(flat));
    assert.equal(p.atPeak.optim, 2 * tensorBytes(flat));
  });

  it('activation memory: full < selective++ < none, and it shrinks about 1/sp as the sequence is split', () => {
    const seq = 8192;
    const act = (policy: CheckpointPolicy, hp: number, cp: number): number => {
      const p = predictPeakBytes(DEMO, seq, { hp, cp, innerRingSize: cp }, { policy, fraction: 1 });
      return p.peakBytes - p.atPeak.params - p.atPeak.grads - p.atPeak.optim;
    };
    assert.ok(act('full', 1, 1) < act('selective++', 1, 1) && act('selective++', 1, 1) < act('none', 1, 1));
    for (const policy of ['none', 'full', 'selective++'] as const) {
      const ratio = act(policy, 2, 4) / act(policy, 1, 1);
      assert.ok(ratio >= 0.999 / 8 && ratio < 1.3 / 8, `${policy}: sp = 8 holds ${ratio.toFixed(3)} of sp = 1's activation bytes`);
    }
  });

  it('ZeRO: the model states between steps are those of docs/zero.md, and the transient units are at most three', () => {
    const flat = paramLayout(DEMO).flatSize;
    const base = predictPeakBytes(DEMO, 1024, { hp: 2, cp: 4, innerRingSize: 4 }, { policy: 'full', fraction: 1 });
    const activation = base.peakBytes - base.atPeak.params - base.atPeak.grads - base.atPeak.optim;
    for (const stage of [1, 2, 3] as const) {
      for (const shards of [2, 3, 8]) {
        const p = predictPeakBytes(DEMO, 1024, { hp: 2, cp: 4, innerRingSize: 4 }, { policy: 'full', fraction: 1 }, { stage, shards });
        const states = modelStateBytes(flat, largestShardSize(DEMO, stage, shards), stage);
        // m and v are one tensor each per non-empty piece (one in stage 1, one per unit in 2, 3), each rounded up to 64 bytes.
        const pieces = stage === 1 ? 1 : DEMO.layers + 2;
        assert.ok(p.atPeak.optim >= states.optim && p.atPeak.optim < states.optim + 128 * pieces, `stage ${stage} n=${shards}: optim ${p.atPeak.optim} vs ${states.optim}`);
        // A block is the largest unit of the demo model: the peak's transient part is ≤ 3 of them (gathered, prefetched, gradients).
        const transient = p.atPeak.params + p.atPeak.grads - states.params - states.grads;
        const unit = 4 * paramLayout(DEMO).specs.filter((s) => s.name.startsWith('layers.0.')).reduce((a, s) => a + Math.ceil(s.size / 16) * 16, 0);
        assert.ok(transient >= 0 && transient <= 3 * unit + 256, `stage ${stage} n=${shards}: transient ${transient} bytes`);
        if (stage === 1) assert.equal(transient, 0, 'stage 1 allocates nothing per unit');
        else assert.ok(transient > 0, `stage ${stage}: per-unit gradient (and stage 3 parameter) buffers`);
        // The activations do not depend on the stage.
        assert.equal(p.peakBytes - p.atPeak.params - p.atPeak.grads - p.atPeak.optim, activation);
      }
    }
  });

  it('ZeRO stage 3 over one shard gathers nothing and predicts what stage 2 does', () => {
    const layout1 = { hp: 1, cp: 1, innerRingSize: 1 };
    const p2 = predictPeakBytes(DEMO, 256, layout1, { policy: 'none', fraction: 1 }, { stage: 2, shards: 1 });
    const p3 = predictPeakBytes(DEMO, 256, layout1, { policy: 'none', fraction: 1 }, { stage: 3, shards: 1 });
    assert.deepEqual(p3, p2);
  });

  it('rejects what the trainer rejects (a sequence that does not split, a bad inner ring, hp not fitting the heads), an unknown policy and bad ZeRO settings', () => {
    const configError = (pattern: RegExp) => (e: unknown) => e instanceof ConfigError && pattern.test(e.message);
    assert.throws(() => predictPeakBytes(DEMO, 100, { hp: 2, cp: 2, innerRingSize: 2 }, { policy: 'none', fraction: 1 }), configError(/train\.seqLen = 100 is invalid for sp = 4: .*2·sp = 8/));
    assert.throws(() => predictPeakBytes(DEMO, 0, layout, { policy: 'none', fraction: 1 }), configError(/train\.seqLen = 0 is invalid/));
    assert.throws(() => predictPeakBytes(DEMO, 64, { hp: 1, cp: 4, innerRingSize: 3 }, { policy: 'none', fraction: 1 }), configError(/parallel\.innerRingSize = 3 does not divide parallel\.cp = 4/));
    // DEMO: heads 4, kvHeads 2; hp = 3 divides neither, hp = 8 exceeds the heads.
    assert.throws(() => predictPeakBytes(DEMO, 96, { hp: 3, cp: 1, innerRingSize: 1 }, { policy: 'none', fraction: 1 }), configError(/parallel\.hp = 3 does not fit model\.heads = 4, model\.kvHeads = 2: hp must divide heads; the nearest valid hp values are 2 and 4/));
    assert.throws(() => predictPeakBytes(DEMO, 64, { hp: 8, cp: 1, innerRingSize: 1 }, { policy: 'none', fraction: 1 }), configError(/parallel\.hp = 8 does not fit/));
    assert.throws(() => predictPeakBytes(DEMO, 64, layout, { policy: 'half' as CheckpointPolicy, fraction: 1 }), ConfigError);
    assert.throws(() => predictPeakBytes(DEMO, 64, layout, { policy: 'full', fraction: 0 }), /checkpoint\.fraction = 0/);
    assert.throws(() => predictPeakBytes(DEMO, 64, layout, { policy: 'none', fraction: 1 }, { stage: 4 as ZeroStage, shards: 2 }), /zeroStage = 4 is invalid: it must be one of 0, 1, 2, 3/);
    assert.throws(() => predictPeakBytes(DEMO, 64, layout, { policy: 'none', fraction: 1 }, { stage: 3, shards: 0 }), /shards = 0 is invalid/);
    assert.throws(() => predictPeakBytes(DEMO, 64, layout, { policy: 'none', fraction: 1 }, { stage: 0, shards: 2 }), /shards = 2 is invalid: .*1 for zeroStage 0/);
  });
});

describe('the trainer with [checkpoint] (metrics.jsonl)', () => {
  it('each step logs peak bytes per category per rank; the policy lowers the peak as predicted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'loongtrain-memory-'));
    try {
      const peaks: Record<string, number> = {};
      for (const policy of ['none', 'selective++', 'full'] as const) {
        const cfg = parseConfig({
          parallel: { hp: 2, cp: 1 },
          train: { steps: 1, seqLen: 128, kernels: 'reference', arenaMiB: 64 },
          optim: { warmupSteps: 0 },
          checkpoint: { policy, fraction: 1 },
          save: { dir: join(dir, policy, 'checkpoints') },
          log: { dir: join(dir, policy), progress: 'none' },
        });
        await train(cfg);
        const [m] = readFileSync(join(dir, policy, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as StepMetrics);
        for (const cat of MEMORY_CATEGORIES) assert.equal(m!.peakBytesByCategory[cat].length, 2, `${policy}: ${cat} for each of the 2 ranks`);
        assert.ok(m!.peakBytesByCategory.saved[0]! > 0 && m!.peakBytesByCategory.params[0]! > 0);
        const predicted = predictPeakBytes(cfg.model, 128, { hp: 2, cp: 1, innerRingSize: 1 }, { policy, fraction: 1 });
        // Stage 0 and reference kernels: every rank's peak is the prediction, to the byte.
        for (const measured of m!.peakBytes) assert.equal(measured, predicted.peakBytes, `${policy}: predicted vs measured peak bytes`);
        peaks[policy] = m!.peakBytes[0]!;
      }
      assert.ok(peaks.full! < peaks['selective++']! && peaks['selective++']! < peaks.none!, `peaks ${JSON.stringify(peaks)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
