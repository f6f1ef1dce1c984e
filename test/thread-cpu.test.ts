import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { threadCpuMs } from '../src/train/thread-cpu.js';

/** Spin for `ms` of wall-clock time on this thread. */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

test('threadCpuMs grows while this thread computes and not while it sleeps in Atomics.wait', () => {
  const a = threadCpuMs()!;
  assert.ok(Number.isFinite(a) && a > 0, `CPU ms so far ${a}`);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 150);
  const b = threadCpuMs()!;
  // Sleeping accrues at most scheduler noise.
  assert.ok(b - a < 50, `slept 150 ms, accrued ${b - a} CPU ms`);
  spin(150);
  const c = threadCpuMs()!;
  assert.ok(c - b > 10, `spun 150 ms, accrued ${c - b} CPU ms`);
  assert.ok(c - b <= 150 + 20, `spun 150 ms, accrued ${c - b} CPU ms: no more than the wall time`);
});

test('threadCpuMs is per thread: a worker spinning does not add to the main thread', async () => {
  const before = threadCpuMs()!;
  const moduleUrl = new URL('../src/train/thread-cpu.js', import.meta.url).href;
  const source = `
    const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(moduleUrl)}).then(({ threadCpuMs }) => {
      const a = threadCpuMs();
      const end = performance.now() + 300;
      while (performance.now() < end);
      parentPort.postMessage(threadCpuMs() - a);
    });`;
  const workerMs = await new Promise<number>((resolve, reject) => {
    const w = new Worker(source, { eval: true });
    w.once('message', resolve);
    w.once('error', reject);
  });
  const mainMs = threadCpuMs()! - before;
  assert.ok(workerMs > 10, `worker spun 300 ms, accrued ${workerMs} CPU ms`);
  assert.ok(mainMs < workerMs, `main thread accrued ${mainMs} CPU ms while the worker accrued ${workerMs}`);
});
