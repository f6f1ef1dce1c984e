import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../src/errors.js';
import type { ModelConfig } from '../src/model/config.js';
import { paramLayout, type ParamLayout } from '../src/model/params.js';
import type { FullState } from '../src/optim/zero.js';
import {
  checkCheckpointFiles,
  CheckpointWriteError,
  listCheckpoints,
  loadCheckpoint,
  moveAside,
  newerCheckpoints,
  NonFiniteTensorError,
  readTrainerState,
  removeStaleTempDirs,
  saveCheckpoint,
  type TrainerState,
} from '../src/train/checkpoint.js';

const tmp = mkdtempSync(join(tmpdir(), 'loongtrain-ckpt-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let dirCount = 0;
/** A fresh checkpoint folder path (not created). */
const freshDir = (): string => join(tmp, `run-${dirCount++}`);

const MODEL: ModelConfig = { vocabSize: 16, dim: 8, layers: 1, heads: 2, kvHeads: 1, ffnDim: 8, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true, initStd: 0.02 };
const LAYOUT = paramLayout(MODEL);

function trainerState(step: number, model: ModelConfig = MODEL): TrainerState {
  return {
    format: 1, step, optimizerStep: step, dataPosition: step, sequencesPerStep: 1, causal: true, seed: 1234,
    model, tokenizer: 'byte', seqLen: 16, layout: 'dp=1 hp=1 cp=1 innerRingSize=1 head-first', zeroStage: 0, zeroShardGroup: 'world', rngState: 1234,
  };
}

/** Finite model states, distinct per `salt`, zero in the alignment gaps as the trainer's are. */
function fullState(layout: ParamLayout, salt: number): FullState {
  const make = (k: number): Float32Array => {
    const a = new Float32Array(layout.flatSize);
    for (const s of layout.specs) for (let i = 0; i < s.size; i++) a[s.offset + i] = Math.sin(salt + k + i * 0.01);
    return a;
  };
  return { params: make(0), m: make(1), v: make(2).map(Math.abs), step: salt };
}

const offsetOf = (name: string, layout: ParamLayout = LAYOUT): number => layout.specs.find((s) => s.name === name)!.offset;

/** Set element `index` of tensor `name` in safetensors file `file` to `value`, in place. */
function patchFloat(file: string, name: string, index: number, value: number): void {
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  bytes.writeFloatLE(value, 8 + headerLen + header[name]!.data_offsets[0] + 4 * index);
  writeFileSync(file, bytes);
}

/** assert.throws for an error of class `kind` whose message holds every fragment. */
function throwsWith(run: () => unknown, kind: new (message: string) => Error, ...fragments: string[]): void {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof kind, `expected ${kind.name}, got ${String(e)}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

const steps = (dir: string): number[] => listCheckpoints(dir).map((c) => c.step);
const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('non-finite tensors are never saved and never loaded', () => {
  for (const [which, prefix] of [['params', ''], ['m', 'm.'], ['v', 'v.']] as const) {
    test(`a NaN in ${which} is refused at save, naming "${prefix}layers.0.attn.wq", the index, the value and the step; nothing is written`, () => {
      const dir = freshDir();
      const full = fullState(LAYOUT, 1);
      full[which][offsetOf('layers.0.attn.wq') + 3] = NaN;
      throwsWith(() => saveCheckpoint(dir, trainerState(7), LAYOUT, full, 2), NonFiniteTensorError, `tensor "${prefix}layers.0.attn.wq" holds NaN at index 3 ([0, 3] of shape [8, 8])`, 'step 7', 'nothing was written');
      assert.equal(existsSync(dir), false, 'not even the checkpoint folder may be created');
    });
  }

  test('an Infinity is refused in a folder holding an earlier checkpoint, which stays the only entry (no temp folder)', () => {
    const dir = freshDir();
    saveCheckpoint(dir, trainerState(1), LAYOUT, fullState(LAYOUT, 1), 2);
    const full = fullState(LAYOUT, 2);
    full.v[offsetOf('norm')] = -Infinity;
    throwsWith(() => saveCheckpoint(dir, trainerState(2), LAYOUT, full, 2), NonFiniteTensorError, 'tensor "v.norm" holds -Infinity at index 0', 'step 2');
    assert.deepEqual(readdirSync(dir), ['step-00000001']);
  });

  test('a NaN patched into model.safetensors is refused at load naming the file and tensor, and by checkCheckpointFiles as a ConfigError', () => {
    const path = saveCheckpoint(freshDir(), trainerState(1), LAYOUT, fullState(LAYOUT, 1), 2);
    assert.doesNotThrow(() => loadCheckpoint(path, LAYOUT, 1));
    const file = join(path, 'model.safetensors');
    patchFloat(file, 'layers.0.mlp.w2', 5, NaN);
    throwsWith(() => loadCheckpoint(path, LAYOUT, 1), NonFiniteTensorError, file, 'tensor "layers.0.mlp.w2" holds NaN at index 5 ([0, 5] of shape [8, 8])', 'resume from an earlier checkpoint');
    throwsWith(() => checkCheckpointFiles(path, LAYOUT), ConfigError, `cannot resume from ${path}`, 'tensor "layers.0.mlp.w2" holds NaN');
  });

  test('an Infinity patched into optimizer.safetensors is refused at load naming "m.tok_embeddings"', () => {
    const path = saveCheckpoint(freshDir(), trainerState(1), LAYOUT, fullState(LAYOUT, 1), 2);
    const file = join(path, 'optimizer.safetensors');
    patchFloat(file, 'm.tok_embeddings', 17, Infinity);
    throwsWith(() => loadCheckpoint(path, LAYOUT, 1), NonFiniteTensorError, file, 'tensor "m.tok_embeddings" holds Infinity at index 17 ([2, 1] of shape [16, 8])');
  });
});

describe('a full disk (2 MiB tmpfs)', () => {
  const mnt = join(tmp, 'tmpfs');
  let skip: string | false = false;
  before(() => {
    mkdirSync(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { stdio: 'pipe' });
    } catch (e) {
      skip = `mounting a tmpfs needs root: ${(e as Error).message.split('\n')[0]}`;
    }
  });
  after(() => {
    if (skip === false) execFileSync('umount', [mnt]);
  });

  // One checkpoint of this model (3 · 4 bytes per element) fits in 2 MiB, two do not.
  const bigModel: ModelConfig = { ...MODEL, vocabSize: 4096, dim: 32, heads: 4, kvHeads: 2, ffnDim: 32 };
  const big = paramLayout(bigModel);

  test('the checkpoint sizes straddle the tmpfs size', () => {
    const bytes = 12 * big.flatSize;
    assert.ok(bytes < 2 * 2 ** 20 - 2 ** 17 && 2 * bytes > 2 * 2 ** 20, `${bytes} bytes per checkpoint`);
  });

  test('a save that does not fit throws CheckpointWriteError, leaves no temp folder, even on retries, and the earlier checkpoint still loads', (t) => {
    if (skip !== false) return t.skip(skip);
    const dir = join(mnt, 'checkpoints');
    const first = fullState(big, 1);
    const kept = saveCheckpoint(dir, trainerState(1, bigModel), big, first, 3);
    for (let attempt = 0; attempt < 2; attempt++) {
      assert.throws(
        () => saveCheckpoint(dir, trainerState(2, bigModel), big, fullState(big, 2), 3),
        (e: unknown) => {
          assert.ok(e instanceof CheckpointWriteError, `expected CheckpointWriteError, got ${String(e)}`);
          assert.equal(e.name, 'CheckpointWriteError');
          const final = escapeRegExp(join(dir, 'step-00000002'));
          assert.match(e.message, new RegExp(`^cannot save checkpoint ${final}: writing ${final}\\.tmp-${process.pid}/(model|optimizer)\\.safetensors failed with ENOSPC: no space left on device`));
          assert.ok(e.message.includes(`The newest complete checkpoint in ${dir} is step-00000001`), e.message);
          assert.ok(e.message.includes('Free space on that disk or choose another save.dir'), e.message);
          assert.equal((e.cause as NodeJS.ErrnoException).code, 'ENOSPC');
          return true;
        },
      );
      assert.deepEqual(readdirSync(dir), ['step-00000001'], `attempt ${attempt + 1}`);
    }
    assert.deepEqual(loadCheckpoint(kept, big, 1).params, first.params);
  });

  test('replacing a checkpoint of the same step that does not fit keeps the old one whole', (t) => {
    if (skip !== false) return t.skip(skip);
    const dir = join(mnt, 'checkpoints');
    const first = loadCheckpoint(join(dir, 'step-00000001'), big, 1);
    throwsWith(() => saveCheckpoint(dir, trainerState(1, bigModel), big, fullState(big, 9), 3), CheckpointWriteError, 'ENOSPC', 'step-00000001.tmp-');
    assert.deepEqual(readdirSync(dir), ['step-00000001']);
    assert.deepEqual(loadCheckpoint(join(dir, 'step-00000001'), big, 1).params, first.params);
  });
});

describe('saving over a checkpoint of the same step', () => {
  test('the new one replaces the old one and nothing is left beside it', () => {
    const dir = freshDir();
    saveCheckpoint(dir, trainerState(1), LAYOUT, fullState(LAYOUT, 1), 2);
    const second = fullState(LAYOUT, 2);
    const path = saveCheckpoint(dir, trainerState(1), LAYOUT, second, 2);
    assert.deepEqual(readdirSync(dir), ['step-00000001']);
    assert.deepEqual(loadCheckpoint(path, LAYOUT, 2).params, second.params);
  });
});

describe('pruning', () => {
  test('keeps the newest `keep` checkpoints', () => {
    const dir = freshDir();
    for (const step of [1, 2, 3]) saveCheckpoint(dir, trainerState(step), LAYOUT, fullState(LAYOUT, step), 2);
    assert.deepEqual(steps(dir), [2, 3]);
  });

  test('never removes the checkpoint just written when newer ones exist, and prunes only older ones', () => {
    const dir = freshDir();
    for (const step of [2, 4, 6]) saveCheckpoint(dir, trainerState(step), LAYOUT, fullState(LAYOUT, step), 3);
    const path = saveCheckpoint(dir, trainerState(3), LAYOUT, fullState(LAYOUT, 3), 2);
    assert.deepEqual(steps(dir), [2, 3, 4, 6]);
    assert.ok(existsSync(join(path, 'trainer.json')));
    saveCheckpoint(dir, trainerState(5), LAYOUT, fullState(LAYOUT, 5), 2);
    assert.deepEqual(steps(dir), [4, 5, 6]);
  });
});

describe('rolling back: newerCheckpoints and moveAside', () => {
  test('moves the checkpoints after a step into rolled-back-YYYYMMDD-HHMMSS/, out of listCheckpoints and pruning', () => {
    const dir = freshDir();
    for (const step of [1, 2, 3, 4]) saveCheckpoint(dir, trainerState(step), LAYOUT, fullState(LAYOUT, step), 10);
    const newer = newerCheckpoints(dir, 2);
    assert.deepEqual(newer, [3, 4].map((step) => ({ step, path: join(dir, `step-0000000${step}`) })));
    assert.deepEqual(newerCheckpoints(dir, 4), []);
    const aside = moveAside(dir, newer);
    assert.equal(dirname(aside), dir);
    assert.match(aside, /rolled-back-\d{8}-\d{6}$/);
    assert.deepEqual(steps(dir), [1, 2]);
    assert.deepEqual(readdirSync(aside).sort(), ['step-00000003', 'step-00000004']);
    assert.deepEqual(loadCheckpoint(join(aside, 'step-00000004'), LAYOUT, 4).params, fullState(LAYOUT, 4).params);
    saveCheckpoint(dir, trainerState(3), LAYOUT, fullState(LAYOUT, 3), 1);
    assert.deepEqual(steps(dir), [3]);
    assert.deepEqual(readdirSync(aside).sort(), ['step-00000003', 'step-00000004'], 'pruning must not reach into the rolled-back folder');
  });

  test('a second rollback within the same second gets its own folder', () => {
    const dir = freshDir();
    const a = moveAside(dir, []);
    const b = moveAside(dir, []);
    assert.notEqual(a, b);
    assert.ok(existsSync(a) && existsSync(b));
  });
});

describe('removeStaleTempDirs', () => {
  /** The PID of a process that has exited (and been reaped). */
  function deadPid(): number {
    const pid = spawnSync(process.execPath, ['-e', '']).pid!;
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
    return pid;
  }

  test('deletes dead processes\' temp folders, keeps a live one, and settles replaced copies', () => {
    const dir = freshDir();
    const dead = deadPid();
    saveCheckpoint(dir, trainerState(3), LAYOUT, fullState(LAYOUT, 3), 5);
    const folder = (name: string, withState = false): void => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, withState ? 'trainer.json' : 'model.safetensors'), withState ? JSON.stringify(trainerState(4)) : 'x');
    };
    folder(`step-00000001.tmp-${dead}`);
    folder(`step-00000002.tmp-${process.pid}`);
    folder(`step-00000003.old-${dead}`, true);
    folder(`step-00000004.old-${dead}`, true);
    folder(`notes.tmp-${dead}`);
    const removed = removeStaleTempDirs(dir);
    assert.deepEqual(removed.sort(), [`step-00000001.tmp-${dead}`, `step-00000003.old-${dead}`]);
    assert.deepEqual(readdirSync(dir).sort(), [`notes.tmp-${dead}`, `step-00000002.tmp-${process.pid}`, 'step-00000003', 'step-00000004']);
    assert.deepEqual(steps(dir), [3, 4], 'a replaced copy whose replacement never got its name is renamed back');
    assert.deepEqual(removeStaleTempDirs(dir), []);
  });

  test('returns [] for a folder that does not exist', () => {
    assert.deepEqual(removeStaleTempDirs(join(tmp, 'no-such-folder')), []);
  });
});

describe('trainer.json is validated', () => {
  const valid = saveCheckpoint(freshDir(), trainerState(3), LAYOUT, fullState(LAYOUT, 3), 2);
  const file = join(valid, 'trainer.json');
  const good = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;

  /** trainer.json holding `value` is refused as a ConfigError naming the file and every fragment. */
  function refused(value: unknown, ...fragments: string[]): void {
    writeFileSync(file, JSON.stringify(value));
    throwsWith(() => readTrainerState(valid), ConfigError, `checkpoint ${file} is not a LoongTrain.ts trainer state`, ...fragments);
  }
  const without = (...keys: string[]): Record<string, unknown> => Object.fromEntries(Object.entries(good).filter(([k]) => !keys.includes(k)));

  test('a valid one reads back as written, also without the optional fields, and keeps unknown fields', () => {
    assert.deepEqual(readTrainerState(valid), trainerState(3));
    writeFileSync(file, JSON.stringify(without('zeroStage', 'zeroShardGroup')));
    const { zeroStage: _stage, zeroShardGroup: _group, ...older } = trainerState(3);
    assert.deepEqual(readTrainerState(valid), older);
    writeFileSync(file, JSON.stringify({ ...good, later: { x: 1 } }));
    assert.deepEqual(readTrainerState(valid), { ...trainerState(3), later: { x: 1 } });
  });

  test('null, [] and "x" are refused as not an object', () => {
    refused(null, 'it holds null (expected a JSON object of the trainer state');
    refused([], 'it holds [] (expected a JSON object');
    refused('x', 'it holds "x" (expected a JSON object');
  });

  test('a missing step, step -1 and step 1.5 are refused naming step', () => {
    refused(without('step'), 'step is missing (expected an integer ≥ 0)');
    refused({ ...good, step: -1 }, 'step = -1 (expected an integer ≥ 0)');
    refused({ ...good, step: 1.5 }, 'step = 1.5 (expected an integer ≥ 0)');
  });

  test('wrong types are refused naming each field, all at once', () => {
    refused(
      { ...good, causal: 'yes', tokenizer: 3, format: 2, zeroStage: 7, model: { ...(good.model as object), dim: '8' } },
      'causal = "yes" (expected true or false)',
      'tokenizer = 3 (expected a tokenizer name',
      'format = 2 (expected 1',
      'zeroStage = 7 (expected an integer in [0, 3])',
      'model.dim = "8" (expected an integer ≥ 1)',
    );
    refused({ ...good, model: null }, 'model = null (expected the model config object');
    refused(without('rngState'), 'rngState is missing (expected an integer ≥ 0)');
  });

  test('a file that is not JSON is refused naming the file', () => {
    writeFileSync(file, '{"step": ');
    throwsWith(() => readTrainerState(valid), ConfigError, `checkpoint ${file} cannot be read`);
  });
});
