import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GROUP_KINDS, type GroupKind } from '../comm/process-group.js';
import { ConfigError } from '../errors.js';
import { ParallelDims, validateLayout } from '../parallel/dims.js';
import { resolveLayout, type LayoutRequest } from '../parallel/presets.js';
import { machineInfo, median, table, type MachineInfo } from './bench-common.js';
import type { Config } from './config.js';
import { checkLinkRates, checkTestHosts, hostSentBytes, testHostsDown, testHostsExec, testHostsUp, trainOnTestHosts } from './test-hosts.js';

/**
 * `npm run bench -- cluster`: the presets on 2 test hosts (scripts/test-hosts.sh) whose link is
 * unshaped or held to a stated rate by tbf, ranks of one host on Open MPI's shared memory.
 * Shows which layout wins when the link between hosts is slow, and by how much, next to the
 * paper's placement and Double-Ring analysis (LoongTrain §3.3–3.4). docs/bench.md.
 */

export interface ClusterBenchOptions {
  config: Config;
  /** tc rates of the inter-host link; "unshaped" leaves it alone. */
  rates: readonly string[];
  /** Ranks per host; sp = 2 × ranksPerHost. */
  ranksPerHost: readonly number[];
  steps: number;
  warmup: number;
}

/** The model of the default run: attention and its messages a visible share of a step on 2 cores (KV as wide as Q: MHA). */
export const CLUSTER_BENCH_MODEL = ['model.dim=128', 'model.heads=8', 'model.kvHeads=8', 'model.layers=2', 'model.ffnDim=344', 'train.seqLen=2048'] as const;

export const DEFAULT_CLUSTER_BENCH = { rates: ['unshaped', '1gbit', '200mbit'], ranksPerHost: [2, 4], steps: 8, warmup: 2 } as const;

/** The layouts compared at sp ranks over 2 hosts: each preset, placements, and the inner ring sizes 1, (2,) cp. */
export function clusterLayouts(sp: number): Array<{ name: string; request: LayoutRequest }> {
  const base = { dp: 1, sp } as const;
  const layouts: Array<{ name: string; request: LayoutRequest }> = [
    { name: 'ulysses', request: { ...base, placement: 'head-first', preset: 'ulysses' } },
    { name: 'ring', request: { ...base, placement: 'head-first', preset: 'ring' } },
  ];
  for (const placement of ['head-first', 'context-first'] as const) {
    layouts.push({ name: `usp ${placement}`, request: { ...base, placement, preset: 'usp', hp: 2 } });
    const cp = sp / 2;
    for (const w of [1, 2].filter((x) => x < cp)) {
      layouts.push({ name: `loongtrain w=${w} ${placement}`, request: { ...base, placement, preset: 'loongtrain', hp: 2, innerRingSize: w } });
    }
  }
  return layouts;
}

export interface LinkProbe {
  /** Bulk TCP throughput between the hosts, GB/s. */
  gbPerSec: number;
  /** Median 1-byte round trip, µs. */
  rttMicros: number;
}

export interface ClusterResult {
  rate: string;
  ranksPerHost: number;
  layout: string;
  /** hp×cp and w, e.g. "2×2 w=1". */
  grid: string;
  placement: string;
  /** Medians over the measured steps. */
  median: { stepMs: number; commWaitMs: number; commWaitShare: number; tgs: number };
  /** Payload bytes per step summed over ranks, per group kind (the last step's; every step sends the same). */
  bytesPerStepByKind: Partial<Record<GroupKind, number>>;
  /** Bytes both hosts put on the link per step (headers and Open MPI's own traffic included; start-up and the final checkpoint spread over the steps). */
  linkBytesPerStep: number;
  /** Median step time relative to the fastest layout at the same rate and ranks per host. */
  vsBest: number;
}

export interface ClusterBenchReport {
  suite: 'cluster';
  machine: MachineInfo;
  model: Config['model'];
  seqLen: number;
  links: Record<string, LinkProbe>;
  results: ClusterResult[];
}

const PROBE = fileURLToPath(new URL('../../../scripts/link-probe.mjs', import.meta.url));

/** Throughput and RTT between lt-h0 and lt-h1 with scripts/link-probe.mjs (bounded: 64 MiB, 60 s). */
async function probeLink(): Promise<LinkProbe> {
  const [scmd, sargs] = testHostsExec('lt-h1', [process.execPath, PROBE, 'server', '--timeout', '60']);
  const server = spawn(scmd, sargs, { stdio: 'ignore' });
  try {
    const [ccmd, cargs] = testHostsExec('lt-h0', [process.execPath, PROBE, 'client', '--host', 'lt-h1', '--bytes', String(64 << 20), '--timeout', '60', '--json']);
    const out = await new Promise<string>((resolve, reject) => {
      const client = spawn(ccmd, cargs, { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      let err = '';
      client.stdout.on('data', (d: Buffer) => (text += d.toString()));
      client.stderr.on('data', (d: Buffer) => (err += d.toString()));
      client.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`link-probe client failed (${code}): ${err}`))));
    });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { GBps: number; rttUs: { median: number } };
    return { gbPerSec: r.GBps, rttMicros: r.rttUs.median };
  } finally {
    server.kill('SIGKILL');
  }
}

/**
 * Run every layout of {@link clusterLayouts} for each ranks-per-host count, at each link rate.
 * The test hosts are made for each rate and removed at the end (also after a failure).
 * @throws ConfigError for bad options or a layout the model does not allow; Error naming what to
 * install when test hosts cannot be made; Error with the job's output when a run fails.
 */
export async function benchCluster(opts: ClusterBenchOptions): Promise<ClusterBenchReport> {
  const { config, steps, warmup } = opts;
  if (!Number.isInteger(steps) || !Number.isInteger(warmup) || warmup < 0 || steps <= warmup) {
    throw new ConfigError(`--steps ${steps} and --warmup ${warmup} are invalid: use integers with 0 ≤ warmup < steps`);
  }
  for (const n of opts.ranksPerHost) {
    if (!Number.isInteger(n) || n < 2 || (n & (n - 1)) !== 0) throw new ConfigError(`--ranks-per-host ${n} is invalid: use powers of two ≥ 2 (sp = 2 × ranks per host)`);
  }
  checkLinkRates(opts.rates);
  const plans = opts.ranksPerHost.map((perHost) => {
    const layouts = clusterLayouts(2 * perHost).map((l) => {
      const parallel = resolveLayout(l.request);
      validateLayout(new ParallelDims(parallel), { heads: config.model.heads, kvHeads: config.model.kvHeads, seqLen: config.train.seqLen });
      return { name: l.name, parallel };
    });
    return { perHost, layouts };
  });
  checkTestHosts();
  const scratch = mkdtempSync(join(os.tmpdir(), 'loongtrain-bench-cluster-'));
  const links: Record<string, LinkProbe> = {};
  const results: ClusterResult[] = [];
  try {
    for (const rate of opts.rates) {
      const slots = Math.max(...opts.ranksPerHost);
      testHostsUp(2, rate === 'unshaped' ? { slots } : { slots, rate });
      links[rate] = await probeLink();
      for (const { perHost, layouts } of plans) {
        const group: ClusterResult[] = [];
        for (const { name, parallel } of layouts) {
          const dir = join(scratch, `${rate}-${perHost}-${name.replace(/\W+/g, '-')}`);
          const before = hostSentBytes('lt-h0') + hostSentBytes('lt-h1');
          const rows = await trainOnTestHosts(config, parallel, { steps, perHost, dir, what: `cluster bench: ${name} at ${rate}`, limitMs: 1_800_000 });
          const linkBytes = hostSentBytes('lt-h0') + hostSentBytes('lt-h1') - before;
          const measured = rows.slice(warmup);
          const last = rows[rows.length - 1]!;
          const dims = new ParallelDims(parallel);
          group.push({
            rate,
            ranksPerHost: perHost,
            layout: name,
            grid: `${dims.hp}×${dims.cp} w=${dims.innerRingSize}`,
            placement: parallel.placement,
            median: {
              stepMs: median(measured.map((s) => s.stepMs)),
              commWaitMs: median(measured.map((s) => Math.max(...s.commWaitMs))),
              commWaitShare: median(measured.map((s) => Math.max(...s.commWaitMs) / s.stepMs)),
              tgs: median(measured.map((s) => s.tgs)),
            },
            bytesPerStepByKind: Object.fromEntries(GROUP_KINDS.filter((k) => last.commBytesByKind[k] > 0).map((k) => [k, last.commBytesByKind[k]])),
            linkBytesPerStep: linkBytes / rows.length,
            vsBest: 1,
          });
        }
        const best = Math.min(...group.map((r) => r.median.stepMs));
        for (const r of group) r.vsBest = r.median.stepMs / best;
        results.push(...group);
      }
    }
  } finally {
    testHostsDown();
    rmSync(scratch, { recursive: true, force: true });
  }
  return { suite: 'cluster', machine: machineInfo(), model: config.model, seqLen: config.train.seqLen, links, results };
}

const MiB = 2 ** 20;

/** A table per rate, for people. */
export function formatClusterTable(report: ClusterBenchReport): string {
  const lines = [`${report.machine.cpu}, ${report.machine.cores} cores; 2 test hosts; seqLen ${report.seqLen}, dim ${report.model.dim}, ${report.model.heads} heads (${report.model.kvHeads} KV), ${report.model.layers} layers`];
  for (const [rate, link] of Object.entries(report.links)) {
    lines.push('', `link ${rate}: ${link.gbPerSec.toFixed(3)} GB/s measured, RTT ${link.rttMicros.toFixed(0)} µs`);
    const rows = report.results
      .filter((r) => r.rate === rate)
      .map((r) => [
        `${2 * r.ranksPerHost}`,
        r.layout,
        r.grid,
        r.median.stepMs.toFixed(0),
        r.vsBest.toFixed(2),
        (r.median.commWaitShare * 100).toFixed(0),
        (r.linkBytesPerStep / MiB).toFixed(1),
        Object.entries(r.bytesPerStepByKind).map(([k, b]) => `${k} ${(b / MiB).toFixed(1)}`).join(', '),
      ]);
    lines.push(...table(['ranks', 'layout', 'hp×cp w', 'step ms', 'vs best', 'wait %', 'link MiB/step', 'MiB/step by group kind (all ranks)'], rows));
  }
  return lines.join('\n');
}
