import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Rng } from '../src/tensor/rng.js';
import { listCheckpoints } from '../src/train/checkpoint.js';
import { writeBrownSample } from './helpers/brown-sample.js';

/*
 * Kill -9 at random points of 20 runs that save every step (so kills land during saves and
 * metrics writes too), then run again: every run resumes from its newest complete checkpoint,
 * ends with the losses of an uninterrupted run to the bit, leaves no temp folder, and its
 * metrics.jsonl holds each step once.
 */

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'loongtrain-faults-'));
const text = join(root, 'brown.txt');
const STEPS = 12;
before(() => writeBrownSample(text, 100_000));
after(() => rmSync(root, { recursive: true, force: true }));

function args(dir: string): string[] {
  const sets = [
    'model.dim=32', 'model.layers=2', 'model.heads=2', 'model.kvHeads=2', 'model.ffnDim=64', 'train.seqLen=64', 'optim.warmupSteps=2',
    `train.steps=${STEPS}`, 'save.every=1', 'save.keep=2', 'data.source=files', `data.path=${text}`, `run.dir=${dir}`, 'log.progress=plain', 'log.every=1',
  ];
  return [CLI, 'train', ...sets.flatMap((s) => ['--set', s])];
}

/** Step and loss of every metrics row (each line must be whole JSON). */
function rows(dir: string): Array<{ step: number; loss: number }> {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => {
    const { step, loss } = JSON.parse(l) as { step: number; loss: number };
    return { step, loss };
  });
}

/** Start a run and SIGKILL it once it has logged step `afterStep`, `delayMs` later. */
function killedRun(dir: string, afterStep: number, delayMs: number): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args(dir), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let armed = false;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!armed && new RegExp(`^step ${afterStep} \\|`, 'm').test(stderr)) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.on('exit', () => resolve());
  });
}

it('20 runs killed at random points resume from their newest complete checkpoint with the losses of an uninterrupted run', async () => {
  const reference = join(root, 'reference');
  await run(process.execPath, args(reference));
  const expected = rows(reference);
  assert.equal(expected.length, STEPS);
  const rng = new Rng(2026);
  let resumedRuns = 0;
  for (let i = 0; i < 20; i++) {
    const dir = join(root, `run-${i}`);
    const afterStep = 1 + rng.int(STEPS - 2);
    await killedRun(dir, afterStep, rng.int(40));
    const newest = listCheckpoints(join(dir, 'checkpoints')).pop();
    // A kill that came after the last save found nothing left to do.
    if (newest?.step !== STEPS) {
      const again = newest === undefined ? [...args(dir), '--overwrite'] : [...args(dir), '--resume'];
      const { stderr } = await run(process.execPath, again).catch((e: { stderr: string }) => assert.fail(`run ${i} (killed after step ${afterStep}) did not continue:\n${e.stderr}`));
      if (newest !== undefined) {
        resumedRuns++;
        assert.match(stderr, new RegExp(`resuming from ${newest.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), `run ${i}: resumed from the newest complete checkpoint`);
      }
    }
    assert.deepEqual(readdirSync(join(dir, 'checkpoints')).filter((n) => n.includes('.tmp-')), [], `run ${i}: no temp folder left`);
    assert.deepEqual(rows(dir), expected, `run ${i} (killed after step ${afterStep}): metrics hold each step once, with the uninterrupted losses`);
  }
  assert.ok(resumedRuns >= 15, `${resumedRuns} of 20 runs had a checkpoint to resume from`);
});
