import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { ConfigError } from '../src/errors.js';
import { calibrate, evaluateCalibration, shippedCalibrationProfiles } from '../src/plan/calibration.js';
import { registerPlanCommand, runPlan, type PlanFlags } from '../src/plan/cli.js';
import { overlapped, predictStep, type PlanCluster, type PlanLayout } from '../src/plan/cost.js';
import { gpuMemory, gpuMemoryLowerBound } from '../src/plan/memory.js';
import { loadGpuProfile, loadModel, shippedNames } from '../src/plan/profiles.js';
import { planLayouts, trainerConfig } from '../src/plan/search.js';
import { parseConfig } from '../src/train/config.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const flags = (over: Partial<PlanFlags>): PlanFlags => ({ model: 'llama2-7b', gpu: 'a800', batch: 1, top: 10, ...over });

function runJson(over: Partial<PlanFlags>): { layouts: Record<string, unknown>[]; [k: string]: unknown } {
  let text = '';
  runPlan(flags({ ...over, json: true }), (t) => (text += t));
  return JSON.parse(text) as { layouts: Record<string, unknown>[] };
}

function clusterOf(gpu: string, gpus: number): PlanCluster {
  const g = loadGpuProfile(gpu);
  return { gpu: g, gpus, gpusPerNode: g.gpusPerNode, nicsPerNode: g.nicsPerNode, nicBytesPerSec: g.nicBytesPerSec };
}

describe('plan: calibration on the published rows (cluster-data.md)', () => {
  it('every calibration row with a published TGS is predicted within 15% by the shipped profiles', () => {
    const r = evaluateCalibration();
    const scored = r.rows.filter((x) => x.error !== undefined);
    assert.equal(scored.length, 21, 'the 5 NeMo rows and the 16 BurstEngine rows with a number');
    for (const x of scored) assert.ok(Math.abs(x.error!) <= 0.15, `${x.row.id}: predicted ${x.prediction.tgs.toFixed(1)} vs published ${x.row.published} (${(100 * x.error!).toFixed(1)}%)`);
  });

  it('refitting from the shipped values is deterministic and keeps every row within 15%', () => {
    const a = calibrate(shippedCalibrationProfiles(), 150);
    const b = calibrate(shippedCalibrationProfiles(), 150);
    assert.deepEqual(a.params, b.params);
    assert.ok(a.maxAbsError <= 0.15, `largest error ${(100 * a.maxAbsError).toFixed(1)}%`);
  });
});

describe('plan: the cost model', () => {
  it('ships the four GPU profiles and four model presets, all loading', () => {
    assert.deepEqual(shippedNames(), { gpus: ['a100', 'a800', 'h100', 'h200'], models: ['llama2-13b', 'llama2-70b', 'llama2-7b', 'llama3-8b'] });
    for (const g of ['a100', 'a800', 'h100', 'h200']) assert.ok(loadGpuProfile(g).fit.attentionFraction > 0);
    const l3 = loadModel('llama3-8b').model;
    assert.deepEqual([l3.heads, l3.kvHeads, l3.vocabSize], [32, 8, 128256]);
    assert.equal(loadGpuProfile('h200').hbmBytes > loadGpuProfile('h100').hbmBytes, true);
  });

  it('overlap: max of the two plus (1 − η) of the smaller', () => {
    assert.equal(overlapped(3, 1, 1), 3);
    assert.equal(overlapped(1, 3, 0.5), 3.5);
  });

  it('a fixed layout is predicted as the cost model says, its terms adding up to the step', () => {
    const out = runJson({ seqLen: 131072, gpus: 32, gpusPerNode: 8, hp: 2, cp: 16, innerRingSize: 4, placement: 'head-first', zeroStage: 1, zeroShardGroup: 'world', checkpoint: 'selective++', explain: true });
    assert.equal(out.layouts.length, 1);
    const l = out.layouts[0]!;
    assert.deepEqual([l.dp, l.hp, l.cp, l.innerRingSize, l.placement, l.zeroStage, l.checkpoint], [1, 2, 16, 4, 'head-first', 1, 'selective++']);
    const { model } = loadModel('llama2-7b');
    const layout: PlanLayout = { dp: 1, hp: 2, cp: 16, innerRingSize: 4, placement: 'head-first', zeroStage: 1, zeroShardGroup: 'world', checkpoint: 'selective++' };
    const p = predictStep({ model, seqLen: 131072 }, layout, clusterOf('a800', 32));
    assert.equal(l.stepSeconds, p.stepSeconds);
    assert.ok(Math.abs((l.tgs as number) - 131072 / 32 / p.stepSeconds) < 1e-9);
    const sum = p.terms.reduce((a, t) => a + t.seconds, 0);
    assert.ok(Math.abs(sum - p.stepSeconds) < 1e-9 * p.stepSeconds, `terms ${sum} vs step ${p.stepSeconds}`);
    assert.ok((l.mfuFull as number) > (l.mfuCausal as number));
  });

  it('placement matters where it should: context-first puts the all-to-all across nodes when hp·cp spans nodes', () => {
    const { model } = loadModel('llama2-7b');
    const base: PlanLayout = { dp: 1, hp: 8, cp: 4, innerRingSize: 4, placement: 'head-first', zeroStage: 1, zeroShardGroup: 'world', checkpoint: 'none' };
    const c = clusterOf('a800', 32);
    const hf = predictStep({ model, seqLen: 131072 }, base, c);
    const cf = predictStep({ model, seqLen: 131072 }, { ...base, placement: 'context-first' }, c);
    assert.ok(hf.tgs > cf.tgs, `head-first ${hf.tgs} vs context-first ${cf.tgs}`);
  });
});

describe('plan: CLI output', () => {
  it('--json gives { layouts: [...] } with every field of the issue, ranked by TGS, all fitting', () => {
    const out = runJson({ seqLen: 131072, gpus: 32, gpusPerNode: 8, top: 5 });
    assert.ok(out.layouts.length > 0 && out.layouts.length <= 5);
    for (const l of out.layouts) {
      for (const k of ['dp', 'hp', 'cp', 'innerRingSize', 'placement', 'zeroStage', 'checkpoint', 'stepSeconds', 'tgs', 'mfuCausal', 'mfuFull', 'peakBytesPerGpu', 'fits']) assert.ok(k in l, `layout lacks ${k}`);
      assert.equal(l.fits, true);
      assert.equal((l.dp as number) * (l.hp as number) * (l.cp as number), 32);
    }
    const tgs = out.layouts.map((l) => l.tgs as number);
    assert.deepEqual(tgs, [...tgs].sort((a, b) => b - a));
  });

  it('--model takes a path to one of our config TOMLs', () => {
    const demo = fileURLToPath(new URL('../../configs/demo.toml', import.meta.url));
    const out = runJson({ model: demo, seqLen: 4096, gpus: 8, top: 3 });
    assert.ok(out.layouts.length > 0);
  });

  it('--help documents every option', () => {
    const help = execFileSync(process.execPath, [MAIN, 'plan', '--help'], { encoding: 'utf8' });
    const program = new Command();
    registerPlanCommand(program);
    const plan = program.commands.find((c) => c.name() === 'plan')!;
    const longs = plan.options.map((o) => o.long!);
    for (const f of ['--model', '--seq-len', '--gpus', '--gpus-per-node', '--gpu', '--hp', '--cp', '--inner-ring-size', '--placement', '--zero-stage', '--checkpoint', '--json', '--explain', '--calibrate']) assert.ok(longs.includes(f), `${f} is an option`);
    for (const o of plan.options) {
      assert.ok(help.includes(o.long!), `--help lists ${o.long}`);
      assert.ok(o.description.length > 10, `${o.long} has a description`);
    }
  });
});

describe('plan: refusals', () => {
  it('never ranks a layout training would reject (the same parseConfig)', () => {
    // S = 1000: sp = 8 needs S divisible by 16, so every sp = 8 candidate is rejected by training.
    const run = { model: loadModel('llama2-7b').model, seqLen: 1000 };
    const r = planLayouts(run, clusterOf('a800', 8), {}, 1000);
    assert.ok(r.rejected.count > 0);
    assert.ok(r.rejected.examples.some((e) => /train\.seqLen = 1000 is invalid for sp = 8/.test(e)), r.rejected.examples.join('; '));
    for (const l of [...r.ranked, ...r.refused]) {
      assert.notEqual(l.hp * l.cp, 8);
      assert.doesNotThrow(() => parseConfig(trainerConfig(run, l)));
    }
  });

  it('a fixed layout training rejects is an error with the trainer\'s message', () => {
    assert.throws(() => runJson({ model: 'llama3-8b', seqLen: 131072, gpus: 48, gpusPerNode: 8, hp: 3, cp: 16 }), (e: unknown) => e instanceof ConfigError && /parallel\.hp = 3 does not fit model\.heads = 32/.test(e.message));
    assert.throws(() => runJson({ seqLen: 131072, gpus: 32, hp: 2, cp: 16, innerRingSize: 3 }), (e: unknown) => e instanceof ConfigError && /no layout/.test(e.message));
  });

  it('a layout that does not fit is refused, naming why', () => {
    const out = runJson({ model: 'llama2-70b', seqLen: 1048576, gpus: 8, hp: 8, cp: 1, zeroStage: 0, checkpoint: 'none' });
    assert.equal(out.layouts.length, 1);
    const l = out.layouts[0]!;
    assert.equal(l.fits, false);
    assert.match(l.reason as string, /needs [\d.]+ GiB per GPU > 80\.0 GiB HBM of A800-SXM4-80GB: model states [\d.]+ GiB \(ZeRO-0, replicated\) \+ activations/);
  });

  it('memory: mixed precision holds 16 bytes per parameter at ZeRO-0 and shrinks with the shards', () => {
    const { model } = loadModel('llama2-7b');
    const gpu = loadGpuProfile('a800');
    const base: PlanLayout = { dp: 1, hp: 8, cp: 1, innerRingSize: 1, placement: 'head-first', zeroStage: 0, zeroShardGroup: 'world', checkpoint: 'full' };
    const z0 = gpuMemory(model, 4096, base, gpu);
    const P = 6738415616;
    assert.ok(Math.abs(z0.modelStateBytes / (16 * P) - 1) < 0.01, `${z0.modelStateBytes / P} bytes per parameter`);
    const z3 = gpuMemory(model, 4096, { ...base, zeroStage: 3 }, gpu);
    assert.ok(z3.modelStateBytes < z0.modelStateBytes / 4);
  });

  it('the lower bound that skips exact replays never exceeds the exact memory', () => {
    const { model } = loadModel('llama3-8b');
    const gpu = loadGpuProfile('h100');
    for (const zeroStage of [0, 1, 2, 3] as const) {
      for (const checkpoint of ['none', 'full', 'selective++'] as const) {
        const l: PlanLayout = { dp: 2, hp: 2, cp: 4, innerRingSize: 2, placement: 'head-first', zeroStage, zeroShardGroup: 'world', checkpoint };
        assert.ok(gpuMemoryLowerBound(model, 32768, l, gpu) <= gpuMemory(model, 32768, l, gpu).peakBytesPerGpu, `stage ${zeroStage} ${checkpoint}`);
      }
    }
  });
});
