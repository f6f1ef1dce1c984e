import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors.js';
import type { ParallelDims } from '../parallel/dims.js';
import { resolveLayout, type LayoutRequest } from '../parallel/presets.js';
import { machineInfo, median, table, type MachineInfo } from '../train/bench-common.js';
import type { Config } from '../train/config.js';
import { checkLinkRates, checkTestHosts, testHostsDown, testHostsRun, testHostsUp, trainOnTestHosts } from '../train/test-hosts.js';
import type { PlanCluster } from './cost.js';
import { linkFromOneWay } from './cpu-link-rank.js';
import { cpuComparisonLayouts, layoutRates, measureCpuRates, planLayoutOf, predictCpuStep, type CpuRates } from './cpu.js';
import type { GpuProfile } from './profiles.js';

/**
 * `npm run bench -- plan --hosts`: the planner's cost model (src/plan/cost.ts `predictStep`,
 * unchanged) against training on the 2 test hosts (scripts/test-hosts.sh, src/train/test-hosts.ts):
 * network namespaces on this machine joined by a bridge, the link between them shaped by tc,
 * ranks under Open MPI (shared memory inside a host, TCP between hosts). docs/plan.md, "Our own runs".
 *
 * The profile is src/plan/cpu.ts's, with the cluster of the hosts:
 * - kernel rates (GEMM, attention, elementwise, zero-fill): `measureCpuRates` as for threads —
 *   all namespaces share this machine's cores, so min(ranks, cores) ranks measure at once —
 *   before and after the training runs, each rate the higher of the two (on a shared machine
 *   a disturbed measurement reads low, never high);
 * - 2 nodes of gpusPerNode = ranks per host, one NIC each;
 * - "NVLink" (intra-node): an MPI ping-pong (cpu-link-rank.js on the mpi backend) between 2
 *   ranks on one host (Open MPI's vader shared memory), bandwidth from 16 and 2¹⁸ f32;
 * - NIC bandwidth and α: the same ping-pong between one rank on each host, over the shaped link
 *   (α is the model's one message latency: the inter-host one, the slowest edge of every layout);
 * - oversubscription as cpu.ts: every rate, links included, divided by total ranks / cores.
 */

/** A layout compared over the 2 hosts: `ranksPerHost` ranks on each (sp = 2 × ranksPerHost). */
export interface HostsLayout {
  name: string;
  ranksPerHost: number;
  request: LayoutRequest;
}

/**
 * ulysses, ring, usp (hp 2) and loongtrain (hp 1, w = sp/2, as cpu.ts) at sp 2 (1 rank per host)
 * and sp 4 (2 ranks per host), dp 1; usp at sp 4 head-first and context-first (head-first keeps
 * the hp all-to-all inside a host and sends the cp ring across, context-first the reverse). At
 * sp 2 every group spans both hosts, and at hp 1 the placement changes nothing.
 */
export function hostsComparisonLayouts(ranksPerHost: readonly number[] = [1, 2]): HostsLayout[] {
  return ranksPerHost.flatMap((perHost) =>
    cpuComparisonLayouts([2 * perHost]).flatMap((l): HostsLayout[] => {
      if (l.request.preset !== 'usp' || 2 * perHost < 4) return [{ ...l, ranksPerHost: perHost }];
      return (['head-first', 'context-first'] as const).map((placement) => ({ name: `${l.name} ${placement}`, ranksPerHost: perHost, request: { ...l.request, placement } }));
    }),
  );
}

/** The links measured with MPI ping-pongs: inside one host (shared memory) and between the 2 hosts (the shaped link). */
export interface HostsLinks {
  intraGBps: number;
  intraLatencyUs: number;
  interGBps: number;
  interLatencyUs: number;
}

export interface HostsPlanRow {
  rate: string;
  layout: string;
  grid: string;
  placement: string;
  ranks: number;
  ranksPerHost: number;
  predictedMs: number;
  measuredMs: number;
  /** predicted / measured. */
  ratio: number;
  /** The prediction's terms, ms. */
  terms: Record<string, number>;
}

export interface HostsPlanReport {
  suite: 'plan-hosts';
  machine: MachineInfo;
  seqLen: number;
  steps: number;
  warmup: number;
  rates: CpuRates;
  /** Per link rate ("unshaped" or a tc rate). */
  links: Record<string, HostsLinks>;
  rows: HostsPlanRow[];
}

/** The inter-host link at 1 Gbit/s, as bench cluster and the test-hosts tests shape it; steps and warmup are DEFAULT_PLAN_BENCH's, as for threads. */
export const DEFAULT_HOSTS_PLAN = { rates: ['1gbit'] } as const;

const LINK_MAIN = fileURLToPath(new URL('./hosts-link-main.js', import.meta.url));
/** No core binding: the namespaces' ranks share the cores as the threads backend's do (src/comm/mpi/mpirun.ts localMpirunArgs). */
const MPIRUN_OPTS = ['--bind-to', 'none'];

/** α and bandwidth of a ping-pong between 2 ranks placed `perHost` per host (2: one host; 1: across the link). */
async function measureHostsLink(scratch: string, perHost: 1 | 2): Promise<{ gbps: number; latencyUs: number }> {
  const out = join(scratch, `link-${perHost}.json`);
  const run = await testHostsRun(2, perHost, [...MPIRUN_OPTS, process.execPath, LINK_MAIN, out], 120_000);
  if (run.code !== 0) throw new Error(`plan --hosts: the MPI link ping-pong (${perHost} rank${perHost === 1 ? '' : 's'} per host) failed (exit ${run.code}):\n${run.stderr.slice(-4000)}`);
  const { linkLatencyUs, linkGBps } = linkFromOneWay((JSON.parse(readFileSync(out, 'utf8')) as { oneWayMs: number[] }).oneWayMs);
  return { latencyUs: linkLatencyUs, gbps: linkGBps };
}

/** Each rate the higher of two measurements of the same shapes (before and after the runs). */
export function fasterRates(a: CpuRates, b: CpuRates): CpuRates {
  const hi = <K extends string | number>(x: Record<K, number>, y: Record<K, number>): Record<K, number> =>
    Object.fromEntries(Object.entries(x).map(([k, v]) => [k, Math.max(v as number, (y as Record<string, number>)[k] ?? 0)])) as Record<K, number>;
  const byBusy: CpuRates['byBusy'] = {};
  for (const [busy, k] of Object.entries(a.byBusy)) {
    const l = b.byBusy[Number(busy)] ?? k;
    byBusy[Number(busy)] = { busy: k.busy, gemmGflops: hi(k.gemmGflops, l.gemmGflops), attentionGflops: hi(k.attentionGflops, l.attentionGflops), elementwiseGBps: hi(k.elementwiseGBps, l.elementwiseGBps), zeroFillGBps: Math.max(k.zeroFillGBps, l.zeroFillGBps) };
  }
  return { ...a, byBusy, linkGBps: Math.max(a.linkGBps, b.linkGBps), linkLatencyUs: Math.min(a.linkLatencyUs, b.linkLatencyUs) };
}

/** The cluster of the 2 test hosts for one layout: its CPU profile with the measured links, 2 nodes of `perHost`, shared by ranks/cores. */
export function hostsCluster(rates: CpuRates, links: HostsLinks, perHost: number): (gpu: GpuProfile, dims: ParallelDims) => PlanCluster {
  return (gpu, dims) => {
    const { share } = layoutRates(rates, dims.world);
    const nic = (links.interGBps * 1e9) / share;
    const g: GpuProfile = {
      ...gpu,
      name: `${gpu.name}, 2 test hosts × ${perHost}`,
      nvlinkBytesPerSec: (links.intraGBps * 1e9) / share,
      pcieBytesPerSec: (links.intraGBps * 1e9) / share,
      nicBytesPerSec: nic,
      gpusPerNode: perHost,
      fit: { ...gpu.fit, messageLatencyUs: links.interLatencyUs },
    };
    return { gpu: g, gpus: dims.world, gpusPerNode: perHost, nicsPerNode: 1, nicBytesPerSec: nic };
  };
}

/**
 * Measure the CPU rates, then for each link rate bring up 2 test hosts, measure the links, and
 * train each layout under mpirun on them (`steps` steps, the first max(1, warmup) left out,
 * median of rank 0's step times); measure the CPU rates again, predict each layout with the
 * planner and compare. The hosts are
 * removed at the end, also after a failure.
 * @throws ConfigError for bad options or a layout the model does not allow; Error naming what to
 * install when test hosts cannot be made; Error with the job's output when a run fails.
 */
export async function benchPlanHosts(cfg: Config, layouts: readonly HostsLayout[], opts: { rates: readonly string[]; steps: number; warmup: number }): Promise<HostsPlanReport> {
  const { steps, warmup } = opts;
  const dropped = Math.max(1, warmup);
  if (!Number.isInteger(steps) || !Number.isInteger(warmup) || warmup < 0 || steps <= dropped) {
    throw new ConfigError(`--steps ${steps} and --warmup ${warmup} are invalid: use integers with 0 ≤ warmup and steps > max(1, warmup)`);
  }
  checkLinkRates(opts.rates);
  const plans = layouts.map((l) => ({ ...l, ...planLayoutOf(cfg, l.request), parallel: resolveLayout(l.request) }));
  checkTestHosts();
  const shapes = plans.map((p) => ({ hp: p.dims.hp, cp: p.dims.cp }));
  const before = await measureCpuRates(cfg.model, cfg.train.seqLen, cfg.train.kernels, shapes);
  const slots = Math.max(2, ...layouts.map((l) => l.ranksPerHost));
  const scratch = mkdtempSync(join(os.tmpdir(), 'loongtrain-plan-hosts-'));
  const links: Record<string, HostsLinks> = {};
  const measured: Array<{ rate: string; plan: (typeof plans)[number]; measuredMs: number }> = [];
  try {
    for (const rate of opts.rates) {
      testHostsUp(2, rate === 'unshaped' ? { slots } : { slots, rate });
      const intra = await measureHostsLink(scratch, 2);
      const inter = await measureHostsLink(scratch, 1);
      const link: HostsLinks = { intraGBps: intra.gbps, intraLatencyUs: intra.latencyUs, interGBps: inter.gbps, interLatencyUs: inter.latencyUs };
      links[rate] = link;
      for (const p of plans) {
        const dir = join(scratch, `${rate}-${p.name.replace(/\W+/g, '-')}`);
        const metrics = await trainOnTestHosts(cfg, p.parallel, { steps, perHost: p.ranksPerHost, dir, what: `plan --hosts: ${p.name} at ${rate}`, limitMs: 600_000, mpirunArgs: MPIRUN_OPTS });
        measured.push({ rate, plan: p, measuredMs: median(metrics.slice(dropped).map((s) => s.stepMs)) });
      }
    }
  } finally {
    testHostsDown();
    rmSync(scratch, { recursive: true, force: true });
  }
  // The rates again after the runs: the machine is shared, and a measurement that another
  // process disturbed reads low (never high), so each rate is the higher of the two.
  const rates = fasterRates(before, await measureCpuRates(cfg.model, cfg.train.seqLen, cfg.train.kernels, shapes));
  const rows: HostsPlanRow[] = measured.map(({ rate, plan: p, measuredMs }) => {
    const prediction = predictCpuStep(cfg, p.request, rates, hostsCluster(rates, links[rate]!, p.ranksPerHost)).prediction;
    const predictedMs = prediction.stepSeconds * 1e3;
    return {
      rate,
      layout: p.name,
      grid: `${p.dims.hp}×${p.dims.cp} w=${p.dims.innerRingSize}`,
      placement: p.parallel.placement,
      ranks: p.dims.world,
      ranksPerHost: p.ranksPerHost,
      predictedMs,
      measuredMs,
      ratio: predictedMs / measuredMs,
      terms: Object.fromEntries(prediction.terms.map((t) => [t.name, t.seconds * 1e3])),
    };
  });
  return { suite: 'plan-hosts', machine: machineInfo(), seqLen: cfg.train.seqLen, steps, warmup: dropped, rates, links, rows };
}

export function formatHostsPlanTable(r: HostsPlanReport): string {
  const k = Object.values(r.rates.byBusy);
  const rateLines = k.map((x) => {
    const g = Object.entries(x.gemmGflops).map(([sp, v]) => `sp ${sp} ${v.toFixed(1)}`).join(', ');
    const a = Object.entries(x.attentionGflops).map(([key, v]) => `${key} ${v.toFixed(1)}`).join(', ');
    return `  ${x.busy} core${x.busy === 1 ? '' : 's'} busy: GEMM GFLOP/s ${g}; attention GFLOP/s ${a}`;
  });
  const linkLines = Object.entries(r.links).map(([rate, l]) => `  link ${rate}: inter-host ${l.interGBps.toFixed(3)} GB/s, α ${l.interLatencyUs.toFixed(0)} µs; intra-host (shared memory) ${l.intraGBps.toFixed(2)} GB/s, α ${l.intraLatencyUs.toFixed(0)} µs (MPI ping-pong)`);
  return [
    `${r.machine.cpu}, ${r.machine.cores} cores; 2 test hosts over Open MPI; seqLen ${r.seqLen}; kernels ${r.rates.kernels}; rates per rank:`,
    ...rateLines,
    ...linkLines,
    `measured: median of steps ${r.warmup + 1}–${r.steps} (the first ${r.warmup} left out); ratio = predicted / measured`,
    ...table(['layout', 'hp×cp', 'ranks/host', 'link', 'predicted ms', 'measured ms', 'ratio', ''], r.rows.map((x) => [x.layout, x.grid, String(x.ranksPerHost), x.rate, x.predictedMs.toFixed(1), x.measuredMs.toFixed(1), x.ratio.toFixed(2), Math.abs(x.ratio - 1) <= 0.2 ? 'within 20%' : 'OFF'])),
  ].join('\n');
}
