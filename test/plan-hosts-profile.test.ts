import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { cpuProfile, type CpuRates, type KernelRates } from '../src/plan/cpu.js';
import { fasterRates, hostsCluster, hostsComparisonLayouts } from '../src/plan/hosts.js';
import { ParallelDims } from '../src/parallel/dims.js';
import { checkLinkRates } from '../src/train/test-hosts.js';

/*
 * The pieces of `bench plan --hosts` that need no test hosts (test/plan-hosts.test.ts runs the
 * whole comparison, as root): the layouts, the link-rate check, the profile of the 2 hosts and
 * the merge of two rate measurements.
 */

function kernelRates(busy: number, x: number): KernelRates {
  return { busy, gemmGflops: { 2: 10 * x, 4: 20 * x }, attentionGflops: { '2×1': 3 * x, '1×4': 4 * x }, elementwiseGBps: { 2: x, 4: 2 * x }, zeroFillGBps: 5 * x };
}

function cpuRates(x: number, linkGBps: number, linkLatencyUs: number): CpuRates {
  return { kernels: 'blas', cores: 2, byBusy: { 2: kernelRates(2, x) }, linkGBps, linkLatencyUs };
}

describe('plan --hosts: layouts, rates and the hosts profile', () => {
  it('compares ulysses, ring, usp and loongtrain at sp 2 (1 rank per host) and sp 4 (2 per host), usp at sp 4 in both placements', () => {
    const layouts = hostsComparisonLayouts();
    assert.deepEqual(layouts.map((l) => `${l.name} / ${l.ranksPerHost}`), [
      'ulysses sp 2 / 1', 'ring sp 2 / 1', 'usp sp 2 / 1', 'loongtrain sp 2 / 1',
      'ulysses sp 4 / 2', 'ring sp 4 / 2', 'usp sp 4 head-first / 2', 'usp sp 4 context-first / 2', 'loongtrain sp 4 / 2',
    ]);
    for (const l of layouts) assert.equal(l.request.sp, 2 * l.ranksPerHost, `${l.name}: sp = 2 hosts × ranks per host`);
    const usp = layouts.filter((l) => l.name.startsWith('usp sp 4'));
    assert.deepEqual(usp.map((l) => l.request.placement), ['head-first', 'context-first']);
  });

  it('accepts "unshaped" and tc rates, and refuses anything else before a host is made, naming it', () => {
    checkLinkRates(['unshaped', '1gbit', '200mbit', '50mbps', '1.5Gbit', '1000000']);
    assert.throws(() => checkLinkRates(['1gbit', '1gbitt']), (e: unknown) => e instanceof ConfigError && /"1gbitt" is not a link rate/.test(e.message) && /1gbit, 200mbit/.test(e.message));
    assert.throws(() => checkLinkRates(['fast']), (e: unknown) => e instanceof ConfigError && /"fast"/.test(e.message));
    assert.throws(() => checkLinkRates([]), (e: unknown) => e instanceof ConfigError && /--rates is empty/.test(e.message));
  });

  it('fasterRates keeps each rate the higher of two measurements and the link latency the lower', () => {
    const a = cpuRates(1, 1.0, 30);
    const b = cpuRates(2, 0.5, 20);
    b.byBusy[2]!.gemmGflops[2] = 5; // lower than a's 10 for this one shape
    const m = fasterRates(a, b);
    const k = m.byBusy[2]!;
    assert.deepEqual(k.gemmGflops, { 2: 10, 4: 40 });
    assert.deepEqual(k.attentionGflops, { '2×1': 6, '1×4': 8 });
    assert.deepEqual(k.elementwiseGBps, { 2: 2, 4: 4 });
    assert.equal(k.zeroFillGBps, 10);
    assert.equal(m.linkGBps, 1.0);
    assert.equal(m.linkLatencyUs, 20);
  });

  it('hostsCluster: 2 nodes of ranks-per-host, links from the hosts shared by ranks / cores, the inter-host latency', () => {
    const rates = cpuRates(1, 1.0, 30);
    const links = { intraGBps: 0.8, intraLatencyUs: 9, interGBps: 0.12, interLatencyUs: 15 };
    const dims = new ParallelDims({ dp: 1, hp: 1, cp: 4, innerRingSize: 2, placement: 'head-first' });
    const cluster = hostsCluster(rates, links, 2)(cpuProfile(rates, 1, 4, 2 ** 26), dims);
    // 4 ranks on 2 cores: every link at half its measured rate.
    assert.equal(cluster.gpus, 4);
    assert.equal(cluster.gpusPerNode, 2);
    assert.equal(cluster.nicsPerNode, 1);
    assert.equal(cluster.nicBytesPerSec, 0.06e9);
    assert.equal(cluster.gpu.nvlinkBytesPerSec, 0.4e9);
    assert.equal(cluster.gpu.gpusPerNode, 2);
    assert.equal(cluster.gpu.fit.messageLatencyUs, 15);
    const two = hostsCluster(rates, links, 1)(cpuProfile(rates, 2, 1, 2 ** 26), new ParallelDims({ dp: 1, hp: 2, cp: 1, innerRingSize: 1, placement: 'head-first' }));
    assert.equal(two.nicBytesPerSec, 0.12e9, '2 ranks on 2 cores: not shared');
  });
});
