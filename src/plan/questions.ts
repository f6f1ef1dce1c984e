import type { ModelConfig } from '../model/config.js';
import type { PlanCluster, PlanRun } from './cost.js';
import { loadGpuProfile, loadModel } from './profiles.js';
import { planLayouts, type LayoutFixes, type PlannedLayout } from './search.js';

/**
 * The paper's questions answered by the planner (docs/plan.md): each function returns one
 * markdown table computed by planLayouts with the shipped profiles; `loongtrain plan
 * --questions` prints them all.
 */

const K = 1024;
const GiB = 2 ** 30;

function cluster(gpu: string, gpus: number, nics?: number): PlanCluster {
  const g = loadGpuProfile(gpu);
  return { gpu: g, gpus, gpusPerNode: g.gpusPerNode, nicsPerNode: nics ?? g.nicsPerNode, nicBytesPerSec: g.nicBytesPerSec };
}

/** The best layout agreeing with `fixes`, fitting or not (fits says which), or undefined when training rejects every one. */
function best(run: PlanRun, c: PlanCluster, fixes: LayoutFixes, mustFit = true): PlannedLayout | undefined {
  const r = planLayouts(run, c, fixes, 1);
  return r.ranked[0] ?? (mustFit ? undefined : r.refused[0]);
}

const tgs = (p: PlannedLayout | undefined): string => (p === undefined ? '–' : p.fits ? p.tgs.toFixed(0) : `${p.tgs.toFixed(0)} (OOM)`);
const lay = (p: PlannedLayout | undefined): string => (p === undefined ? '–' : `${p.hp}×${p.cp} w${p.innerRingSize} Z${p.zeroStage}${p.zeroStage > 0 ? `/${p.zeroShardGroup}` : ''} ${p.checkpoint}`);
const kTok = (s: number): string => (s >= K * K ? `${s / (K * K)}M` : `${s / K}K`);

function model(name: string): ModelConfig {
  return loadModel(name).model;
}

/** Q1: head-first vs context-first, LLaMA-2-7B on 64 A800 (8 nodes, 4 NICs), dp 1, ZeRO-1 over the world, selective++. */
export function placementTable(): string {
  const rows = ['| S | hp × cp | head-first: best w, TGS, exposed comm | context-first: best w, TGS, exposed comm | better |', '|---|---|---|---|---|'];
  const m = model('llama2-7b');
  for (const S of [128 * K, 512 * K]) {
    for (const hp of [2, 4, 8, 16, 32]) {
      const cp = 64 / hp;
      const fixes: LayoutFixes = { hp, cp, zeroStage: 1, zeroShardGroup: 'world', checkpoint: 'selective++' };
      const hf = best({ model: m, seqLen: S }, cluster('a800', 64), { ...fixes, placement: 'head-first' }, false);
      const cf = best({ model: m, seqLen: S }, cluster('a800', 64), { ...fixes, placement: 'context-first' }, false);
      const cell = (p: PlannedLayout | undefined): string => (p === undefined ? '–' : `w ${p.innerRingSize}, ${tgs(p)}, ${(100 * p.exposedCommShare).toFixed(1)}%`);
      const better = hf === undefined || cf === undefined ? '–' : Math.abs(hf.tgs / cf.tgs - 1) < 0.005 ? 'tie' : hf.tgs > cf.tgs ? `head-first +${(100 * (hf.tgs / cf.tgs - 1)).toFixed(1)}%` : `context-first +${(100 * (cf.tgs / hf.tgs - 1)).toFixed(1)}%`;
      rows.push(`| ${kTok(S)} | ${hp} × ${cp} | ${cell(hf)} | ${cell(cf)} | ${better} |`);
    }
  }
  return rows.join('\n');
}

/** Q2: the best inner ring size against NICs per node and S: LLaMA-2-7B, 64 A800, hp 2 × cp 32 head-first. */
export function innerRingTable(): string {
  const m = model('llama2-7b');
  const rows = ['| NICs per node | S | TGS by w = 1, 2, 4, 8, 16, 32 | best w | gain over one ring (w = 32) |', '|---|---|---|---|---|'];
  for (const nics of [1, 2, 4, 8]) {
    for (const S of [64 * K, 256 * K, 1024 * K]) {
      const by = [1, 2, 4, 8, 16, 32].map((w) => best({ model: m, seqLen: S }, cluster('a800', 64, nics), { hp: 2, cp: 32, innerRingSize: w, placement: 'head-first', zeroStage: 1, zeroShardGroup: 'world', checkpoint: 'selective++' }, false)!);
      const top = by.reduce((a, b) => (b.tgs > a.tgs * 1.0005 ? b : a));
      rows.push(`| ${nics} | ${kTok(S)} | ${by.map((p) => p.tgs.toFixed(0)).join(' / ')} | ${top.innerRingSize} | +${(100 * (top.tgs / by[5]!.tgs - 1)).toFixed(1)}% |`);
    }
  }
  return rows.join('\n');
}

/** Q3: where Ulysses stops scaling: pure head parallelism (cp = 1) vs the best 2D layout as sp grows, dp = 1. */
export function ulyssesTable(): string {
  const rows = ['| model (H / Hkv) | S | sp = GPUs | Ulysses (hp = sp) TGS | best 2D layout | best 2D TGS |', '|---|---|---|---|---|---|'];
  for (const name of ['llama2-7b', 'llama3-8b']) {
    const m = model(name);
    for (const sp of [8, 16, 32, 64, 128]) {
      const S = 512 * K;
      const fixes: LayoutFixes = { dp: 1, zeroStage: 1, zeroShardGroup: 'world', checkpoint: 'selective++' };
      const run = { model: m, seqLen: S };
      const u = sp <= m.heads ? best(run, cluster('a800', sp), { ...fixes, hp: sp, cp: 1 }, false) : undefined;
      const b = best(run, cluster('a800', sp), { ...fixes }, false);
      rows.push(`| ${name} (${m.heads}/${m.kvHeads}) | ${kTok(S)} | ${sp} | ${u === undefined ? `impossible: hp ≤ ${m.heads} heads` : tgs(u)} | ${lay(b)} | ${tgs(b)} |`);
    }
  }
  return rows.join('\n');
}

/** Q4: hybrid ZeRO over sp: LLaMA-2-13B, 64 A800, hp 4 × cp 4 (sp 16, dp 4), selective++. */
export function zeroTable(): string {
  const m = model('llama2-13b');
  const rows = ['| S | ZeRO | shards | GiB per GPU | fits | TGS |', '|---|---|---|---|---|---|'];
  for (const S of [64 * K, 128 * K, 256 * K]) {
    const cases: [0 | 1 | 2 | 3, 'world' | 'sp' | 'dp'][] = [[0, 'world'], [1, 'dp'], [1, 'sp'], [1, 'world'], [2, 'sp'], [3, 'sp'], [3, 'world']];
    for (const [zeroStage, zeroShardGroup] of cases) {
      const p = best({ model: m, seqLen: S }, cluster('a800', 64), { hp: 4, cp: 4, placement: 'head-first', zeroStage, zeroShardGroup, checkpoint: 'selective++' }, false)!;
      rows.push(`| ${kTok(S)} | ${zeroStage === 0 ? '0' : `${zeroStage} over ${zeroShardGroup}`} | ${p.memory.shards} | ${(p.peakBytesPerGpu / GiB).toFixed(1)} | ${p.fits ? 'yes' : 'OOM'} | ${p.tgs.toFixed(0)} |`);
    }
  }
  return rows.join('\n');
}

/** Q5: Selective Checkpoint++ vs full checkpointing (and none) at 128K–1M: LLaMA-2-7B on 64 A800, the best layout per policy. */
export function checkpointTable(): string {
  const m = model('llama2-7b');
  const rows = ['| S | policy | best fitting layout | TGS | MFU causal | GiB per GPU | vs full |', '|---|---|---|---|---|---|---|'];
  for (const S of [128 * K, 256 * K, 512 * K, 1024 * K]) {
    const by = (['none', 'selective++', 'full'] as const).map((checkpoint) => ({ checkpoint, p: best({ model: m, seqLen: S }, cluster('a800', 64), { checkpoint }) }));
    const full = by[2]!.p;
    for (const { checkpoint, p } of by) {
      rows.push(`| ${kTok(S)} | ${checkpoint} | ${p === undefined ? 'none fits' : lay(p)} | ${tgs(p)} | ${p === undefined ? '–' : `${(100 * p.mfuCausal).toFixed(1)}%`} | ${p === undefined ? '–' : (p.peakBytesPerGpu / GiB).toFixed(1)} | ${p === undefined || full === undefined ? '–' : `${p.tgs >= full.tgs ? '+' : ''}${(100 * (p.tgs / full.tgs - 1)).toFixed(1)}%`} |`);
    }
  }
  return rows.join('\n');
}

/** Every table, as docs/plan.md shows them. */
export function allQuestionTables(): string {
  return [
    '### Q1 head-first vs context-first\n',
    placementTable(),
    '\n### Q2 best inner ring size\n',
    innerRingTable(),
    '\n### Q3 where Ulysses stops scaling\n',
    ulyssesTable(),
    '\n### Q4 hybrid ZeRO over sp\n',
    zeroTable(),
    '\n### Q5 Selective Checkpoint++ vs full\n',
    checkpointTable(),
  ].join('\n');
}
