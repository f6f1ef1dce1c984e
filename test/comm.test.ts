import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../src/errors.js';
import { launchRanks } from '../src/comm/backends.js';
import { RankFailedError, type LaunchOptions } from '../src/comm/launcher.js';
import { GROUP_KINDS, type CommCounters, type GroupKind } from '../src/comm/process-group.js';
import { Rng } from '../src/tensor/rng.js';
import type { CollectiveInputs } from './fixtures/comm-collectives.js';
import { BACKENDS, launchOn } from './helpers/backends.js';

/*
 * The ProcessGroup contract, run over every backend (threads in this process, mpi as mpirun
 * processes); what only one backend can show (shared memory with the test, structured cloning)
 * is said where it is checked.
 */

const entry = (name: string): string => new URL(`./fixtures/${name}.js`, import.meta.url).href;
const base = { timeoutMs: 10_000, arenaBytes: 1 << 16 };

/** Await a launch that must fail; returns its error and how long it took. */
async function failure(run: Promise<unknown>): Promise<{ err: RankFailedError; ms: number }> {
  const t0 = performance.now();
  try {
    await run;
  } catch (err) {
    assert.ok(err instanceof RankFailedError, `expected RankFailedError, got ${String(err)}`);
    return { err, ms: performance.now() - t0 };
  }
  assert.fail('launch resolved but a rank was expected to fail');
}


/** The bytes of a view (results that crossed a process boundary may share one buffer). */
function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function normals(rng: Rng, n: number, scale: number): number[] {
  return Array.from({ length: n }, () => Math.fround(rng.normal() * scale));
}

for (const backend of BACKENDS) {
describe(`ProcessGroup contract on the ${backend} backend`, () => {
  const launch = (name: string, world: number, args: unknown, extra: Partial<LaunchOptions> = {}): Promise<unknown[]> =>
    launchOn(backend, { world, entry: entry(name), args, ...base, ...extra });

  test('launch 1..4 ranks: results in rank order, per-rank arena, reports reach onReport', async () => {
    for (const world of [1, 2, 3, 4]) {
      const reports: Array<[number, unknown]> = [];
      const results = await launch('comm-p2p', world, { scenario: 'identity' }, { arenaBytes: 100_000, onReport: (r, m) => reports.push([r, m]) });
      assert.deepEqual(
        results,
        Array.from({ length: world }, (_, r) => ({ rank: r, world, timeoutMs: base.timeoutMs, arenaLimit: 2 * 65536, arenaRank: r })),
      );
      assert.deepEqual(
        reports.sort((a, b) => a[0] - b[0]),
        Array.from({ length: world }, (_, r) => [r, { hello: r }]),
      );
    }
  });

  test('ring send/recv with every rank sending first completes (world 1, 2: next = previous, 3)', async () => {
    const rounds = 3;
    const length = 5;
    for (const world of [1, 2, 3]) {
      for (const mode of ['blocking', 'isend-first', 'irecv-first']) {
        const results = (await launch('comm-p2p', world, { scenario: 'ring', mode, rounds, length })) as Float32Array[][];
        for (let r = 0; r < world; r++) {
          const prev = (r - 1 + world) % world;
          for (let k = 0; k < rounds; k++) {
            const expected = Array.from({ length }, (_, i) => prev * 1000 + k * 10 + i / 4);
            assert.deepEqual([...results[r]![k]!], expected, `world ${world} ${mode} rank ${r} round ${k}`);
          }
        }
      }
    }
  });

  test('collectives match references on groups in ascending and permuted member order', async () => {
    const c = 3;
    const arLength = 13; // not divisible by 2, 3 or 4: uneven allReduce chunks
    const cases = [
      { order: [0] },
      { order: [0, 1] },
      { order: [1, 2, 0] },
      { order: [2, 0, 3, 1] },
    ];
    for (const { order } of cases) {
      const n = order.length;
      const rng = new Rng(1234 + n);
      // Magnitudes differ per rank so that f32 summation order would show in the low bits.
      const inputs: CollectiveInputs[] = Array.from({ length: n }, (_, r) => ({
        allToAll: normals(rng, n * c, 1),
        allGather: normals(rng, c, 1),
        reduceScatter: normals(rng, n * c, 10 ** (r - 1)),
        allReduce: normals(rng, arLength, 10 ** (r - 1)),
        broadcast: normals(rng, 4, 1),
      }));
      const root = n - 1;
      type Outputs = Record<'a2a' | 'a2aInPlace' | 'ag' | 'rs' | 'ar' | 'bc', Float32Array>;
      type Out = Outputs & { groupRank: number; arena: Outputs; entered: number; left: number };
      const outs = (await launch('comm-collectives', n, { order, inputs, broadcastRoot: root })) as Out[];
      const lastEntered = Math.max(...outs.map((o) => o.entered));
      const inOf = (g: number): CollectiveInputs => inputs[order[g]!]!;

      for (let m = 0; m < n; m++) {
        const out = outs[order[m]!]!;
        const label = `order [${order}] group rank ${m}`;
        assert.equal(out.groupRank, m, label);
        const a2a = Array.from({ length: n * c }, (_, j) => inOf(Math.floor(j / c)).allToAll[m * c + (j % c)]!);
        assert.deepEqual([...out.a2a], a2a, `${label} allToAll`);
        assert.deepEqual([...out.a2aInPlace], a2a, `${label} allToAll in place`);
        assert.deepEqual([...out.ag], Array.from({ length: n * c }, (_, j) => inOf(Math.floor(j / c)).allGather[j % c]!), `${label} allGather`);

        const rsRef = Array.from({ length: c }, (_, i) => order.reduce((s, _g, g) => s + inOf(g).reduceScatter[m * c + i]!, 0));
        const rsF32 = Array.from({ length: c }, (_, i) => {
          let s = inOf(0).reduceScatter[m * c + i]!;
          for (let g = 1; g < n; g++) s = Math.fround(s + inOf(g).reduceScatter[m * c + i]!);
          return s;
        });
        const rsScale = Math.max(...inputs.flatMap((x) => x.reduceScatter.map(Math.abs)));
        out.rs.forEach((v, i) => assert.ok(Math.abs(v - rsRef[i]!) <= 1e-5 * rsScale, `${label} reduceScatter[${i}] ${v} vs ${rsRef[i]}`));
        // Open MPI picks its own reduction order; the threads backend promises ascending group rank.
        if (backend === 'threads') assert.deepEqual([...out.rs], rsF32, `${label} reduceScatter sums in ascending group-rank order`);

        const arRef = Array.from({ length: arLength }, (_, i) => inputs.reduce((s, x) => s + x.allReduce[i]!, 0));
        const arScale = Math.max(...inputs.flatMap((x) => x.allReduce.map(Math.abs)));
        out.ar.forEach((v, i) => assert.ok(Math.abs(v - arRef[i]!) <= 1e-5 * arScale, `${label} allReduce[${i}] ${v} vs ${arRef[i]}`));
        assert.ok(bytes(out.ar).equals(bytes(outs[0]!.ar)), `${label} allReduce bitwise identical to rank 0's`);

        assert.deepEqual([...out.bc], inOf(root).broadcast, `${label} broadcast`);
        for (const key of ['a2a', 'a2aInPlace', 'ag', 'rs', 'ar', 'bc'] as const) {
          assert.ok(bytes(out.arena[key]).equals(bytes(out[key])), `${label} ${key} on arena tensors equals ${key} on heap buffers`);
        }
        // 1 ms of slack for the clocks of different processes.
        assert.ok(out.left >= lastEntered - 1000, `${label} barrier returned ${lastEntered - out.left} µs before the last member entered`);
      }
    }
  });

  test('two groups (hp and cp of a 4-rank grid) used interleaved with the same tags never mix', async () => {
    type Out = { fromHp: number; fromCp: number; pending: number } & Record<'hpGather' | 'cpGather' | 'hpSum' | 'cpSum', Float32Array>;
    const outs = (await launch('comm-groups', 4, {})) as Out[];
    for (let r = 0; r < 4; r++) {
      const hp = r < 2 ? [0, 1] : [2, 3];
      const cp = r % 2 === 0 ? [0, 2] : [1, 3];
      const hpPeer = hp.find((x) => x !== r)!;
      const cpPeer = cp.find((x) => x !== r)!;
      const o = outs[r]!;
      assert.equal(o.fromHp, hpPeer * 100 + 1, `rank ${r} hp message`);
      assert.equal(o.fromCp, cpPeer * 100 + 2, `rank ${r} cp message`);
      assert.equal(o.pending, hpPeer * 100 + 3, `rank ${r} user message pending across collectives`);
      assert.deepEqual([...o.hpGather], hp.map((x) => x * 100 + 4));
      assert.deepEqual([...o.cpGather], cp.map((x) => x * 100 + 5));
      assert.deepEqual([...o.hpSum], [hp.reduce((s, x) => s + x * 100 + 6, 0), hp[0]! + hp[1]!]);
      assert.deepEqual([...o.cpSum], [cp.reduce((s, x) => s + x * 100 + 7, 0), cp[0]! + cp[1]!]);
    }
  });

  test('counters: exact bytes and messages per group kind for a known pattern; waitMs measures blocking', async () => {
    const L = 10;
    const lateMs = 200;
    const outs = (await launch('comm-counters', 4, { allReduceLength: L, lateMs })) as Array<{
      afterReset: Record<GroupKind, CommCounters>;
      after: Record<GroupKind, CommCounters>;
    }>;
    // allReduce chunks of 10 over 4 members: ⌊g·10/4⌋ = 0, 2, 5, 7, 10.
    const arChunk = [2, 3, 2, 3];
    const counts = (c: CommCounters) => ({ bytesSent: c.bytesSent, messagesSent: c.messagesSent, bytesReceived: c.bytesReceived, messagesReceived: c.messagesReceived });
    const zero = { bytesSent: 0, messagesSent: 0, bytesReceived: 0, messagesReceived: 0 };
    for (let r = 0; r < 4; r++) {
      const { afterReset, after } = outs[r]!;
      for (const k of GROUP_KINDS) assert.deepEqual(afterReset[k], { ...zero, waitMs: 0 }, `rank ${r} ${k} after reset`);
      // allReduce = reduceScatter (send L − c, receive 3 chunks of c) + allGather (send 3 × c, receive L − c).
      const arBytes = (L - arChunk[r]! + 3 * arChunk[r]!) * 4;
      const expected: Record<GroupKind, typeof zero> = {
        world: {
          bytesSent: arBytes + (r === 0 ? 3 * 5 * 4 : 0),
          messagesSent: 6 + 3 + (r === 0 ? 3 : 0),
          bytesReceived: arBytes + (r === 0 ? 0 : 5 * 4),
          messagesReceived: 6 + 3 + (r === 0 ? 0 : 1),
        },
        hp: { bytesSent: 64, messagesSent: 1, bytesReceived: 64, messagesReceived: 1 },
        cp: { bytesSent: 16, messagesSent: 1, bytesReceived: 16, messagesReceived: 1 },
        dp: zero,
        sp: zero,
        outer: zero,
        inner: r === 0 ? { ...zero, bytesReceived: 4, messagesReceived: 1 } : r === 1 ? { ...zero, bytesSent: 4, messagesSent: 1 } : zero,
      };
      for (const k of GROUP_KINDS) {
        assert.deepEqual(counts(after[k]), expected[k], `rank ${r} ${k}`);
        assert.ok(Number.isFinite(after[k].waitMs) && after[k].waitMs >= 0, `rank ${r} ${k} waitMs ${after[k].waitMs}`);
      }
      assert.equal(after.dp.waitMs, 0, 'size-1 groups never wait');
    }
    assert.ok(outs[0]!.after.inner.waitMs >= lateMs / 2, `rank 0 waited ${outs[0]!.after.inner.waitMs} ms for a message sent ${lateMs} ms late`);
  });

  test('a recv that never gets its message times out naming rank, op, group, peer, tag and timeout', async () => {
    const { err, ms } = await failure(launch('comm-failures', 2, { scenario: 'recv-timeout' }, { timeoutMs: 300 }));
    assert.equal(err.rank, 1);
    assert.ok(
      err.message.startsWith('rank 1 failed: timed out after 300 ms waiting in recv for a message from rank 0 (group hp [0,1], tag 7)'),
      err.message,
    );
    assert.equal((err.cause as Error).name, 'CommTimeoutError');
    assert.ok(ms < 5000, `took ${ms} ms`);
  });

  test('a collective missing one member times out naming the collective (and, where the transport knows it, the absent peer)', async () => {
    const { err } = await failure(launch('comm-failures', 3, { scenario: 'collective-timeout' }, { timeoutMs: 300 }));
    assert.match(
      err.message,
      backend === 'threads'
        ? /^rank ([01]) failed: timed out after 300 ms waiting in allToAll for a message from rank 2 \(group hp \[0,1,2\], collective #0\)/
        : /^rank ([01]) failed: timed out after 300 ms waiting in allToAll for every member of group hp \[0,1,2\] to join it/,
    );
  });

  test('a rank that throws rejects the launch at once with its stack; ranks blocked in recv are terminated', async () => {
    // Long enough that an mpirun job's start-up fits below it, so the bound shows no rank waited its timeout out.
    const timeoutMs = backend === 'threads' ? 1500 : 20_000;
    // Shared memory with the test exists only within one process.
    const survived = new SharedArrayBuffer(4 * 4);
    const { err, ms } = await failure(launch('comm-failures', 4, { scenario: 'throw', thrower: 2, ...(backend === 'threads' ? { survived } : {}) }, { timeoutMs }));
    assert.equal(err.rank, 2);
    assert.ok(err.message.startsWith('rank 2 failed: boom from rank 2'), err.message);
    const cause = err.cause as Error;
    assert.match(cause.stack ?? '', /throwFromHelper[\s\S]*comm-failures\.js/);
    assert.match(err.stack ?? '', /rank 2 stack: Error: boom from rank 2[\s\S]*throwFromHelper/);
    assert.ok(ms < timeoutMs, `took ${ms} ms: the launcher waited for the blocked ranks' timeout instead of terminating them`);
    if (backend === 'threads') {
      // Had the blocked ranks lived on, their receives would have timed out by now and marked them
      // (the mpi backend ends their processes: test/mpi-train.test.ts checks none is left).
      await new Promise((resolve) => setTimeout(resolve, timeoutMs + 500 - ms));
      assert.deepEqual([...new Int32Array(survived)], [0, 0, 0, 0]);
    }
  });

  test('other rank failures: length mismatch, unexpected worker exit, bad group, missing run export, uncloneable args', async () => {
    let { err } = await failure(launch('comm-failures', 2, { scenario: 'length-mismatch' }));
    assert.ok(
      err.message.startsWith('rank 1 failed: recv in group cp [0,1] received 3 elements (12 bytes) from rank 0 with tag 2, but the receive buffer holds 4 elements (16 bytes)'),
      err.message,
    );
    ({ err } = await failure(launch('comm-failures', 2, { scenario: 'exit' })));
    assert.match(err.message, /^rank 1 failed: its worker exited unexpectedly with code 3/);
    ({ err } = await failure(launch('comm-failures', 2, { scenario: 'not-member' })));
    assert.match(err.message, /^rank (\d) failed: cannot create dp group \[\d\]: rank \1 is not a member/);
    ({ err } = await failure(launch('comm-no-run', 2, {})));
    assert.match(err.message, /^rank \d failed: entry module file:.*comm-no-run\.js does not export a function run\(ctx, args\)/);
    if (backend === 'threads') {
      ({ err } = await failure(launch('comm-p2p', 2, { scenario: 'identity', notCloneable: () => 1 })));
      assert.match(err.message, /^rank 0 failed: could not start its worker \(are launch args structured-cloneable\?\)/);
    }
  });
});
}

test('bad launch options are rejected with errors naming the option, value and valid range', async () => {
  const good: LaunchOptions = { world: 2, entry: entry('comm-p2p'), args: { scenario: 'identity' }, ...base };
  const cases: Array<[Partial<Record<keyof LaunchOptions, unknown>>, RegExp]> = [
    [{ world: 0 }, /world = 0 is invalid: it must be a positive integer/],
    [{ world: 1.5 }, /world = 1\.5 is invalid/],
    [{ world: '2' }, /world = 2 is invalid/],
    [{ entry: 'test/fixtures/comm-p2p.js' }, /entry = "test\/fixtures\/comm-p2p\.js" is invalid: .*not a relative path/],
    [{ entry: entry('comm-missing') }, /entry = .*comm-missing\.js" is invalid: no file at/],
    [{ entry: 42 }, /entry = 42 is invalid/],
    [{ timeoutMs: 0 }, /timeoutMs = 0 is invalid: it must be a positive finite number/],
    [{ timeoutMs: Number.NaN }, /timeoutMs = NaN is invalid/],
    [{ arenaBytes: 0 }, /arenaBytes = 0 is invalid: it must be an integer in \[1, 4294967296\]/],
    [{ arenaBytes: 2 ** 33 }, /arenaBytes = 8589934592 is invalid/],
    [{ onReport: 'log' }, /onReport is invalid: it must be a function/],
  ];
  for (const [override, message] of cases) {
    await assert.rejects(launchRanks({ ...good, ...override } as LaunchOptions), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, message);
      return true;
    });
  }
});
