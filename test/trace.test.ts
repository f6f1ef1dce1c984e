import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { launchRanks } from '../src/comm/backends.js';
import type { TraceEvent } from '../src/comm/trace.js';
import { ConfigError } from '../src/errors.js';
import { loadConfig } from '../src/train/config.js';
import { mergeTraces, writeTraceFile, type ChromeTrace } from '../src/train/trace-file.js';
import { train } from '../src/train/train.js';
import type { TracePatternArgs } from './fixtures/trace-pattern.js';

const root = mkdtempSync(join(tmpdir(), 'loongtrain-trace-'));
after(() => rmSync(root, { recursive: true, force: true }));

const entry = new URL('./fixtures/trace-pattern.js', import.meta.url).href;
const args: TracePatternArgs = { lateMs: 200 };
// Timestamps near 1.7e15 µs carry about 0.25 µs of float64 rounding.
const EPS_US = 1;

async function tracedPattern(trace: boolean): Promise<{ results: unknown[]; traces: Map<number, TraceEvent[]> }> {
  const traces = new Map<number, TraceEvent[]>();
  const results = await launchRanks({ world: 4, entry, args, timeoutMs: 10_000, arenaBytes: 1 << 16, trace, onTrace: (rank, events) => traces.set(rank, events) });
  return { results, traces };
}

/** Parents before children: by start, then longest first. */
function byStart(events: readonly TraceEvent[]): TraceEvent[] {
  return [...events].sort((a, b) => a.ts - b.ts || b.dur - a.dur);
}

/** Every two spans of one rank are disjoint or one contains the other. */
function assertNested(events: readonly TraceEvent[], what: string): void {
  const open: TraceEvent[] = [];
  for (const e of byStart(events)) {
    while (open.length > 0 && open[open.length - 1]!.ts + open[open.length - 1]!.dur <= e.ts + EPS_US) open.pop();
    const parent = open[open.length - 1];
    if (parent !== undefined) {
      assert.ok(e.ts + e.dur <= parent.ts + parent.dur + EPS_US, `${what}: ${e.name} [${e.ts}, +${e.dur}] overlaps ${parent.name} [${parent.ts}, +${parent.dur}] without nesting`);
    }
    open.push(e);
  }
}

test('traced launch: comm spans with the right pids, categories, names and args, properly nested', async () => {
  const { results, traces } = await tracedPattern(true);
  assert.deepEqual([...traces.keys()].sort(), [0, 1, 2, 3]);
  // Collectives are one span each, whatever the backend does inside (src/comm/counted-group.ts).
  const expected: Record<number, Array<[string, string, Record<string, string | number>]>> = {
    0: [
      ['pattern', 'phase', { rank: 0 }],
      ['send', 'comm', { group: 'hp', peer: 1, bytes: 64 }],
      ['allToAll', 'comm', { group: 'cp', bytes: 16 }],
    ],
    1: [
      ['pattern', 'phase', { rank: 1 }],
      ['wait recv', 'comm', { group: 'hp', peer: 0, bytes: 64 }],
      ['allToAll', 'comm', { group: 'cp', bytes: 16 }],
    ],
    2: [
      ['pattern', 'phase', { rank: 2 }],
      ['send', 'comm', { group: 'hp', peer: 3, bytes: 64 }],
      ['allToAll', 'comm', { group: 'cp', bytes: 16 }],
    ],
    3: [
      ['pattern', 'phase', { rank: 3 }],
      ['wait recv', 'comm', { group: 'hp', peer: 2, bytes: 64 }],
      ['allToAll', 'comm', { group: 'cp', bytes: 16 }],
    ],
  };
  for (let rank = 0; rank < 4; rank++) {
    const events = traces.get(rank)!;
    assert.deepEqual(results[rank], { enabled: true, events: events.length }, `rank ${rank}: the rank's own tracer holds what reached onTrace`);
    for (const e of events) {
      assert.equal(e.pid, rank, `rank ${rank}: pid of ${e.name}`);
      assert.equal(e.ph, 'X');
      assert.equal(e.tid, 0);
      assert.ok(Number.isFinite(e.ts) && e.dur >= 0, `rank ${rank}: ${e.name} has ts ${e.ts}, dur ${e.dur}`);
    }
    assert.deepEqual(
      byStart(events).map((e) => [e.name, e.cat, e.args]),
      expected[rank],
      `rank ${rank}: spans in start order`,
    );
    assertNested(events, `rank ${rank}`);
    // Blocking spans last about as long as the peer's sleep; the phase contains them.
    const blocked = events.filter((e) => e.name === 'wait recv' || (e.name === 'allToAll' && rank < 2));
    assert.equal(blocked.length, (rank % 2) + (rank < 2 ? 1 : 0), `rank ${rank}: blocking spans`);
    for (const w of blocked) assert.ok(w.dur >= 0.5 * args.lateMs * 1000, `rank ${rank}: ${w.name} lasted only ${w.dur} µs though the peer slept ${args.lateMs} ms`);
  }
});

test('tracing disabled (the default) records nothing and calls no onTrace', async () => {
  const { results, traces } = await tracedPattern(false);
  assert.equal(traces.size, 0);
  assert.deepEqual(results, [0, 1, 2, 3].map(() => ({ enabled: false, events: 0 })));
});

test('launch option trace is validated', async () => {
  await assert.rejects(
    launchRanks({ world: 1, entry, args, timeoutMs: 1000, arenaBytes: 1024, trace: 'yes' as unknown as boolean }),
    (err: unknown) => err instanceof ConfigError && /trace = yes is invalid/.test(err.message),
  );
});

test('merged trace file: Chrome JSON, one process name per rank, times from the earliest span', async () => {
  const { traces } = await tracedPattern(true);
  const perRank: (TraceEvent[] | undefined)[] = [traces.get(0), traces.get(1), traces.get(2), traces.get(3), undefined];
  const path = join(root, 'merged', 'trace.json');
  const spans = writeTraceFile(path, perRank);
  const file = JSON.parse(readFileSync(path, 'utf8')) as ChromeTrace;
  assert.deepEqual(file, JSON.parse(JSON.stringify(mergeTraces(perRank))));
  assert.equal(file.displayTimeUnit, 'ms');
  const meta = file.traceEvents.filter((e) => e.ph === 'M');
  assert.deepEqual(
    meta.map((e) => [e.name, e.pid, e.args.name]),
    [0, 1, 2, 3, 4].map((r) => ['process_name', r, `rank ${r}`]),
    'one process-name event per rank, also for a rank without events',
  );
  const x = file.traceEvents.filter((e): e is TraceEvent => e.ph === 'X');
  const all = [0, 1, 2, 3].flatMap((r) => traces.get(r)!);
  assert.equal(spans, all.length);
  assert.equal(x.length, all.length);
  const origin = Math.min(...all.map((e) => e.ts));
  assert.equal(Math.min(...x.map((e) => e.ts)), 0);
  for (let i = 1; i < x.length; i++) assert.ok(x[i]!.ts >= x[i - 1]!.ts, 'spans sorted by start');
  // Same spans, shifted: compare as multisets keyed by pid, name and shifted start.
  const key = (e: TraceEvent, shift: number): string => `${e.pid}|${e.name}|${(e.ts - shift).toFixed(3)}|${e.dur.toFixed(3)}`;
  assert.deepEqual(x.map((e) => key(e, 0)).sort(), all.map((e) => key(e, origin)).sort());
});

test('train with log.trace writes <log.dir>/trace.json with every rank and its collectives', async () => {
  const dir = join(root, 'train');
  const lines: string[] = [];
  const cfg = loadConfig(undefined, [
    'model.dim=16', 'model.layers=1', 'model.heads=2', 'model.kvHeads=2', 'model.ffnDim=32',
    'train.seqLen=16', 'train.steps=1', 'optim.warmupSteps=1', 'parallel.hp=2',
    'log.progress=plain', 'log.trace=true', `log.dir=${dir}`, `save.dir=${join(dir, 'checkpoints')}`,
  ]);
  await train(cfg, { out: (line) => lines.push(line) });
  const path = join(dir, 'trace.json');
  assert.ok(lines.some((l) => l.includes(path)), `the log names ${path}: ${lines.join('\n')}`);
  const file = JSON.parse(readFileSync(path, 'utf8')) as ChromeTrace;
  assert.deepEqual(file.traceEvents.filter((e) => e.ph === 'M').map((e) => e.pid), [0, 1]);
  for (const pid of [0, 1]) {
    const names = new Set(file.traceEvents.filter((e) => e.ph === 'X' && e.pid === pid).map((e) => `${e.name} ${(e as TraceEvent).args?.group}`));
    for (const n of ['allToAll hp', 'allReduce world', 'allGather world']) assert.ok(names.has(n), `rank ${pid} traced ${n}: ${[...names].join(', ')}`);
  }
});
