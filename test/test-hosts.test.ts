import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { GroupKind } from '../src/comm/process-group.js';
import { loadConfig } from '../src/train/config.js';
import { checkTestHosts, hostSentBytes, testHostsDown, testHostsRun, testHostsUp } from '../src/train/test-hosts.js';
import { train } from '../src/train/train.js';
import { assertClose } from './helpers/assert-close.js';
import { writeBrownSample } from './helpers/brown-sample.js';

/*
 * Training over 2 test hosts (network namespaces joined by a bridge, scripts/test-hosts.sh):
 * ranks of one host use Open MPI's shared memory, ranks of two hosts its TCP transport over the
 * hosts' link, which is shaped to 1 Gbit/s here. Needs root, iproute2 and Open MPI (CI has all
 * three); without them the tests fail naming what to install.
 */

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'loongtrain-test-hosts-'));
const text = join(root, 'brown.txt');
let runs = 0;

before(() => {
  checkTestHosts();
  writeBrownSample(text, 200_000);
  testHostsUp(2, { slots: 4, rate: '1gbit' });
});
after(() => {
  testHostsDown();
  rmSync(root, { recursive: true, force: true });
});

function settings(dir: string, overrides: readonly string[]): string[] {
  return [
    'model.dim=32', 'model.layers=2', 'model.heads=4', 'model.kvHeads=2', 'model.ffnDim=64',
    'train.seqLen=128', 'train.steps=10', 'optim.warmupSteps=2', 'optim.lr=1e-2', 'optim.minLr=1e-3',
    'data.source=files', `data.path=${text}`, 'log.progress=none',
    `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`, 'train.commTimeoutMs=30000',
    ...overrides,
  ];
}

interface Row {
  loss: number;
  commBytesByKind: Record<GroupKind, number>;
}

/** `mpirun -n world` with world/2 ranks on each of the 2 hosts; rank 0's metrics rows. */
async function hostsTrain(world: number, overrides: readonly string[]): Promise<Row[]> {
  const dir = join(root, `run-${runs++}`);
  const sets = settings(dir, overrides).flatMap((s) => ['--set', s]);
  const run = await testHostsRun(world, world / 2, [process.execPath, CLI, 'train', ...sets], 300_000);
  assert.equal(run.code, 0, `mpirun over the test hosts failed:\n${run.stderr}`);
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Row);
}

async function threadsLosses(overrides: readonly string[]): Promise<number[]> {
  const dir = join(root, `run-${runs++}`);
  return (await train(loadConfig(undefined, [...settings(dir, overrides), 'train.backend=threads']))).steps.map((s) => s.loss);
}

function total(rows: readonly Row[], kind: GroupKind): number {
  return rows.reduce((sum, r) => sum + r.commBytesByKind[kind], 0);
}

describe('training across 2 test hosts with a 1 Gbit/s link equals the threads backend', () => {
  const layouts: Array<[string, number, string[]]> = [
    ['hp2×cp2 head-first', 4, ['parallel.hp=2', 'parallel.cp=2']],
    ['loongtrain w=2 context-first', 8, ['parallel.preset=loongtrain', 'parallel.sp=8', 'parallel.hp=2', 'parallel.innerRingSize=2', 'parallel.placement=context-first']],
    ['usp', 8, ['parallel.preset=usp', 'parallel.sp=8', 'parallel.hp=2']],
  ];
  for (const [name, world, layout] of layouts) {
    it(`${name}: ${world / 2} ranks per host, losses within 1e-6 relative over 10 steps`, async () => {
      const rows = await hostsTrain(world, layout);
      assertClose(rows.map((r) => r.loss), await threadsLosses(layout), 1e-6, name);
    });
  }

  it('placement decides what crosses the link: head-first sends the cp ring between hosts, context-first the hp all-to-all', async () => {
    // 4 ranks, ranks 0 and 1 on lt-h0: head-first puts hp groups {0,1} {2,3} on one host each and
    // cp groups {0,2} {1,3} across; context-first the reverse. The world all-reduce crosses in both.
    const measure = async (placement: string): Promise<{ hostBytes: number; rows: Row[] }> => {
      const before = hostSentBytes('lt-h0');
      const rows = await hostsTrain(4, ['parallel.hp=2', 'parallel.cp=2', `parallel.placement=${placement}`]);
      return { hostBytes: hostSentBytes('lt-h0') - before, rows };
    };
    const head = await measure('head-first');
    const context = await measure('context-first');
    // lt-h0's ranks send half of every kind's bytes (the layout is symmetric). What crosses is
    // at least that half of the crossing kind; the other kind's half stays on the host.
    const crossing = (m: { rows: Row[] }, kind: GroupKind): number => total(m.rows, kind) / 2;
    assert.ok(head.hostBytes >= crossing(head, 'cp'), `head-first: lt-h0 sent ${head.hostBytes} B on the link, less than its ranks' cp bytes ${crossing(head, 'cp')}`);
    assert.ok(context.hostBytes >= crossing(context, 'hp'), `context-first: lt-h0 sent ${context.hostBytes} B, less than its ranks' hp bytes ${crossing(context, 'hp')}`);
    const hpMinusCp = crossing(head, 'hp') - crossing(head, 'cp');
    assert.ok(hpMinusCp !== 0, 'the layout sends different volumes over hp and cp');
    // Same run otherwise, so the link carries the difference between the two kinds (headers and
    // the runtime's own traffic add a little on both sides).
    const diff = context.hostBytes - head.hostBytes;
    assert.ok(Math.sign(diff) === Math.sign(hpMinusCp) && Math.abs(diff) >= 0.8 * Math.abs(hpMinusCp), `context-first − head-first = ${diff} B on the link; hp − cp bytes of lt-h0's ranks = ${hpMinusCp}`);
  });
});
