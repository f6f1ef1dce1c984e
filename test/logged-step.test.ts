import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { awaitLogged, loggedStepCell, markLogged } from '../src/train/logged-step.js';

it('a save waits for its metrics row: returns once the row is marked, from another thread too', async () => {
  const cell = loggedStepCell();
  markLogged(cell, 3);
  awaitLogged(cell, 3, 1);
  awaitLogged(cell, 2, 1);
  // The coordinator marks from its own thread while rank 0 blocks in Atomics.wait.
  const marker = new Worker('const { workerData } = require("node:worker_threads"); setTimeout(() => { Atomics.store(workerData, 0, 4); Atomics.notify(workerData, 0); }, 100);', { eval: true, workerData: cell });
  awaitLogged(cell, 4, 30_000);
  assert.equal(Atomics.load(cell, 0), 4);
  await marker.terminate();
});

it('a row that never comes stops the save with an error naming the step and the timeout', () => {
  const cell = loggedStepCell();
  markLogged(cell, 6);
  assert.throws(() => awaitLogged(cell, 7, 50), /metrics row of step 7 was not written within train\.commTimeoutMs = 50 ms \(the last row written is step 6\)/);
});
