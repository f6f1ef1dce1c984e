import { PACKING_MODES, POSITION_MODES, type PackingOptions } from '../data/packing.js';
import type { HeldOutRecord } from '../data/heldout.js';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { ParamLayout } from '../model/params.js';
import type { FullState } from '../optim/zero.js';
import { syncDir, writeFileAtomic } from './atomic-write.js';
import type { RunSchedule } from './resume-schedule.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from './safetensors.js';

/**
 * A checkpoint is a folder `step-NNNNNNNN/` holding `model.safetensors` (every parameter by
 * name), `optimizer.safetensors` (AdamW `m.<name>` and `v.<name>`) and `trainer.json`
 * ({@link TrainerState}). The folder is written as `step-NNNNNNNN.tmp-PID/` and renamed, so a
 * checkpoint folder with its final name is always complete; an existing checkpoint of the same
 * step is renamed to `step-NNNNNNNN.old-PID/` until the new one is in place. Tensors are whole
 * (ZeRO shards are gathered before writing and cut again on load, docs/zero.md), so a checkpoint
 * resumes under any parallel layout, ZeRO stage and shard group of the same model. Every tensor
 * is finite: a NaN or ±Infinity is refused at save and at load.
 */
export interface TrainerState {
  format: 1;
  /** Training steps completed. */
  step: number;
  /** AdamW updates taken (fewer than `step` when a step with a non-finite gradient norm was skipped). */
  optimizerStep: number;
  /** Sequences consumed so far (the data sampler's run position). */
  dataPosition: number;
  /** Sequences per step, dp × batchSize: a resumed run must consume data at the same rate. */
  sequencesPerStep: number;
  causal: boolean;
  /** Seed of the run (initialisation and data order). */
  seed: number;
  model: ModelConfig;
  tokenizer: string;
  seqLen: number;
  /** Layout the checkpoint was written under (information: weights are layout-independent). */
  layout: string;
  /** ZeRO stage and shard group it was written under (information; absent in older checkpoints). */
  zeroStage?: number;
  zeroShardGroup?: string;
  /**
   * Randomness consumed by training steps. Nothing in a step draws random numbers yet (no
   * dropout; the data order is a pure function of seed and dataPosition), so this is the seed.
   */
  rngState: number;
  /** Length and learning-rate schedule of the run, continued by --resume (absent in older checkpoints). */
  schedule?: RunSchedule;
  /** data.packing and data.positions of the run (absent in older checkpoints: concat, sequence). */
  packing?: PackingOptions;
  /**
   * The run's held-out split (data.valFraction; data/heldout.ts): the source, the held-out
   * documents and the validation stream's size and checksum, so `loongtrain eval` scores the
   * same validation sequences. Absent in older checkpoints and in runs without a split.
   */
  heldOut?: HeldOutRecord;
}

/**
 * A checkpoint (or a move of checkpoints) that the file system refused: names the checkpoint
 * folder, what was being done to which file, the system error (code and text) and what to do.
 * The unfinished temporary folder is already removed when it is thrown.
 */
export class CheckpointWriteError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CheckpointWriteError';
  }
}

/** A parameter or AdamW moment holding NaN or ±Infinity: names the tensor, the first bad element and its value. */
export class NonFiniteTensorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NonFiniteTensorError';
  }
}

const STEP_DIR = /^step-(\d{8})$/;
/** `step-N.tmp-PID`: a checkpoint that process PID is writing. */
const TEMP_DIR = /^step-\d+\.tmp-(\d+)$/;
/** `step-N.old-PID`: the checkpoint of step N that process PID is replacing with a new one. */
const REPLACED_DIR = /^(step-\d+)\.old-(\d+)$/;

export function checkpointDirName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

/** Complete checkpoints under `dir`, oldest first. */
export function listCheckpoints(dir: string): { step: number; path: string }[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((name) => ({ m: STEP_DIR.exec(name), name }))
    .filter(({ m, name }) => m !== null && existsSync(join(dir, name, 'trainer.json')))
    .map(({ m, name }) => ({ step: Number(m![1]), path: join(dir, name) }))
    .sort((a, b) => a.step - b.step);
}

/** Complete checkpoints under `dir` later than `step`, oldest first (those a rollback to `step` would leave ahead of the run). */
export function newerCheckpoints(dir: string, step: number): { step: number; path: string }[] {
  return listCheckpoints(dir).filter((c) => c.step > step);
}
/**
 * The checkpoint to resume from: `target` itself when it is a checkpoint folder, else the newest
 * checkpoint inside `target`. @throws ConfigError naming the folder when there is none.
 */
export function resolveCheckpoint(target: string): string {
  if (existsSync(join(target, 'trainer.json'))) return target;
  // A run folder (run.dir) holds its checkpoints in checkpoints/.
  const direct = listCheckpoints(target);
  const all = direct.length > 0 ? direct : listCheckpoints(join(target, 'checkpoints'));
  if (all.length === 0) throw new ConfigError(`--resume: no checkpoint in ${target} (expected a step-NNNNNNNN folder holding trainer.json); run without --resume to start fresh`);
  return all[all.length - 1]!.path;
}

/**
 * Before a fresh (not resumed) run: refuse a checkpoint folder that already holds checkpoints,
 * since they would mix with this run's (pruning and --resume pick by step number), or, with
 * `overwrite`, delete them. Returns the names of the deleted checkpoints.
 * @throws ConfigError naming the folder, its newest step and the two ways on.
 */
export function prepareFreshCheckpointDir(dir: string, overwrite: boolean): string[] {
  const existing = listCheckpoints(dir);
  if (existing.length === 0) return [];
  if (!overwrite) {
    throw new ConfigError(
      `save.dir ${dir} already holds ${existing.length} checkpoint(s) of an earlier run (newest: step ${existing[existing.length - 1]!.step}); ` +
        'continue that run with --resume, choose another save.dir, or pass --overwrite to delete them',
    );
  }
  for (const c of existing) rmSync(c.path, { recursive: true, force: true });
  return existing.map((c) => checkpointDirName(c.step));
}

/**
 * Write a checkpoint of the whole model states `full` (flat, laid out by `layout`) into `dir`
 * and return its path. The files go into `step-N.tmp-PID/`, renamed to `step-N/` once complete;
 * an existing `step-N/` is deleted only after the new one is in place. Then checkpoints older
 * than this one are pruned so that the newest `keep` (≥ 1) at or before this step remain, this
 * one always among them; later checkpoints (left by a run resumed from an earlier one) are not
 * touched: pruning by step number alone would delete the checkpoint just written.
 * @throws Error when `full` does not match the layout; NonFiniteTensorError naming the tensor
 * (`<name>`, `m.<name>`, `v.<name>`), the first non-finite element and value and the step, before
 * anything is written; CheckpointWriteError naming the checkpoint, the file being written, the
 * system error and what to do, once the unfinished temporary folder is removed (earlier
 * checkpoints stay intact).
 */
export function saveCheckpoint(dir: string, state: TrainerState, layout: ParamLayout, full: FullState, keep: number): string {
  for (const [what, a] of [['params', full.params], ['m', full.m], ['v', full.v]] as const) {
    if (a.length !== layout.flatSize) throw new Error(`saveCheckpoint: ${what} has ${a.length} elements, the layout ${layout.flatSize}`);
  }
  const final = join(dir, checkpointDirName(state.step));
  const { model, optim } = checkpointTensors(layout, full);
  const bad = findNonFinite(model) ?? findNonFinite(optim);
  if (bad !== undefined) {
    throw new NonFiniteTensorError(
      `cannot save checkpoint ${final} of step ${state.step}: ${bad}; nothing was written and the earlier checkpoints are kept. ` +
        'Training has diverged: resume from an earlier checkpoint, e.g. with a lower optim.lr',
    );
  }
  const tmp = `${final}.tmp-${process.pid}`;
  let replaced: string | undefined;
  try {
    fsStep('creating', dir, () => mkdirSync(dir, { recursive: true }));
    // A leftover of this process's own earlier failed attempt at this step.
    fsStep('removing', tmp, () => rmSync(tmp, { recursive: true, force: true }));
    fsStep('creating', tmp, () => mkdirSync(tmp));
    writeTensorFile(join(tmp, 'model.safetensors'), model, { format: 'loongtrain', step: String(state.step) });
    writeTensorFile(join(tmp, 'optimizer.safetensors'), optim, { optimizer: 'adamw', step: String(full.step) });
    const trainerFile = join(tmp, 'trainer.json');
    fsStep('writing', trainerFile, () => writeFileAtomic(trainerFile, JSON.stringify(state, null, 2) + '\n'));
    replaced = publish(tmp, final);
  } catch (e) {
    const cleanup = removeUnfinished(tmp);
    throw asWriteError(e, `cannot save checkpoint ${final}`, `${cleanup}${newestCheckpointText(dir)}`);
  }
  try {
    if (replaced !== undefined) fsStep('deleting the replaced copy', replaced, () => rmSync(replaced, { recursive: true, force: true }));
    pruneOlder(dir, state.step, keep);
  } catch (e) {
    throw asWriteError(e, `checkpoint ${final} is saved, but an older one cannot be deleted`, '');
  }
  return final;
}

/** The tensors of the two checkpoint files: views into `full` at each parameter's place. */
function checkpointTensors(layout: ParamLayout, full: FullState): { model: Map<string, NamedTensor>; optim: Map<string, NamedTensor> } {
  const model = new Map<string, NamedTensor>();
  const optim = new Map<string, NamedTensor>();
  for (const s of layout.specs) {
    const range = (a: Float32Array): Float32Array => a.subarray(s.offset, s.offset + s.size);
    model.set(s.name, { shape: s.shape, data: range(full.params) });
    optim.set(`m.${s.name}`, { shape: s.shape, data: range(full.m) });
    optim.set(`v.${s.name}`, { shape: s.shape, data: range(full.v) });
  }
  return { model, optim };
}

/** What the first tensor holding NaN or ±Infinity holds where (see describeNonFinite), or undefined when all are finite. */
function findNonFinite(tensors: ReadonlyMap<string, NamedTensor>): string | undefined {
  for (const [name, t] of tensors) {
    const bad = describeNonFinite(name, t);
    if (bad !== undefined) return bad;
  }
  return undefined;
}

/** `tensor "m.norm" holds NaN at index 5 ([0, 5] of shape [4, 4])` for the first non-finite element of `t`, or undefined. */
function describeNonFinite(name: string, t: NamedTensor): string | undefined {
  const { data, shape } = t;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) return `tensor "${name}" holds ${data[i]} at index ${i} ([${unravel(i, shape).join(', ')}] of shape [${shape.join(', ')}])`;
  }
  return undefined;
}

/** The row-major coordinates of flat index `i` in `shape`. */
function unravel(i: number, shape: readonly number[]): number[] {
  const at = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    at[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return at;
}

function writeTensorFile(file: string, tensors: ReadonlyMap<string, NamedTensor>, metadata: Record<string, string>): void {
  fsStep('writing', file, () => writeSafetensors(file, tensors, metadata));
}

/**
 * Give the complete `tmp` its final name. An existing checkpoint of the same step is renamed
 * aside first (a folder cannot be renamed over a non-empty one); returns that aside path, for
 * the caller to delete now that the new name is on disk. So one complete copy exists at every
 * moment (removeStaleTempDirs restores the aside copy of a process killed between the renames).
 */
function publish(tmp: string, final: string): string | undefined {
  const replaced = existsSync(final) ? `${final}.old-${process.pid}` : undefined;
  if (replaced !== undefined) fsStep('moving aside', final, () => renameSync(final, replaced));
  try {
    fsStep('renaming', tmp, () => renameSync(tmp, final));
  } catch (e) {
    if (replaced !== undefined) fsStep('restoring', replaced, () => renameSync(replaced, final));
    throw e;
  }
  // The new name must be durable before an older copy is deleted.
  syncDir(dirname(final));
  return replaced;
}

/** Delete checkpoints before `step` so that the newest `keep` at or before it remain, step's own included; later ones stay. */
function pruneOlder(dir: string, step: number, keep: number): void {
  const older = listCheckpoints(dir).filter((c) => c.step < step);
  for (const old of older.slice(0, Math.max(0, older.length - (keep - 1)))) {
    fsStep('deleting the old checkpoint', old.path, () => rmSync(old.path, { recursive: true, force: true }));
  }
}

/** Remove a failed save's temporary folder; returns a sentence saying so for the error message ('' when there was none). */
function removeUnfinished(tmp: string): string {
  if (!existsSync(tmp)) return '';
  try {
    rmSync(tmp, { recursive: true, force: true });
    return `The unfinished ${basename(tmp)} was removed. `;
  } catch (e) {
    return `The unfinished ${tmp} could not be removed (${(e as Error).message}): delete it by hand. `;
  }
}

/** "The newest complete checkpoint in <dir> is step-N. " for an error message. */
function newestCheckpointText(dir: string): string {
  try {
    const all = listCheckpoints(dir);
    return all.length === 0 ? `There is no complete checkpoint in ${dir} yet. ` : `The newest complete checkpoint in ${dir} is ${basename(all[all.length - 1]!.path)}. `;
  } catch {
    // Only a hint inside another error: a folder that cannot even be listed is named there already.
    return '';
  }
}

/**
 * Move `checkpoints` (e.g. those of {@link newerCheckpoints}, before a rollback) into a new
 * folder `dir/rolled-back-YYYYMMDD-HHMMSS/` (UTC; `-2`, `-3`, … appended when the name is taken)
 * and return its path. listCheckpoints, resume and pruning do not look inside it, so the moved
 * checkpoints are kept out of the run's way until deleted by hand.
 * @throws CheckpointWriteError naming the folder, the checkpoint that could not be moved and the
 * system error; those moved before it stay in the new folder.
 */
export function moveAside(dir: string, checkpoints: readonly { step: number; path: string }[]): string {
  let aside: string | undefined;
  try {
    aside = createRollbackDir(dir);
    for (const c of checkpoints) fsStep('moving', c.path, () => renameSync(c.path, join(aside!, basename(c.path))));
  } catch (e) {
    throw asWriteError(e, `cannot move checkpoints aside${aside === undefined ? ` in ${dir}` : ` into ${aside}`}`, '');
  }
  return aside;
}

/** Create `dir/rolled-back-<UTC time>[-n]/`, taking the first free name (mkdir, not a check first, so two callers cannot both get one). */
function createRollbackDir(dir: string): string {
  fsStep('creating', dir, () => mkdirSync(dir, { recursive: true }));
  // 2026-12-01T09:21:23.456Z → 20261201-092123
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  for (let n = 1; ; n++) {
    const path = join(dir, `rolled-back-${stamp}${n === 1 ? '' : `-${n}`}`);
    const created = fsStep('creating', path, () => {
      try {
        mkdirSync(path);
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw e;
      }
    });
    if (created) return path;
  }
}

/**
 * Clean up after writers killed in the middle of a save: delete every `step-*.tmp-PID` in `dir`
 * whose process PID no longer exists, and settle every such dead process's `step-N.old-PID` (the
 * copy it was replacing): deleted when `step-N` exists, else renamed back to `step-N`, since the
 * process died between its two renames and that copy is the only one with a complete name.
 * Entries of live processes (a run writing into the same folder) are left alone. Returns the
 * names of the deleted entries; [] when `dir` does not exist.
 * @throws CheckpointWriteError naming the entry that could not be deleted or renamed back and the system error.
 */
export function removeStaleTempDirs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  try {
    for (const name of readdirSync(dir)) if (settleStale(dir, name)) removed.push(name);
  } catch (e) {
    throw asWriteError(e, `cannot clean up the stale temporary folders in ${dir}`, '');
  }
  return removed;
}

/** Delete or rename back entry `name` of `dir` when it is a dead process's temporary or replaced folder; returns whether it was deleted. */
function settleStale(dir: string, name: string): boolean {
  const temp = TEMP_DIR.exec(name);
  const replaced = REPLACED_DIR.exec(name);
  const pid = temp?.[1] ?? replaced?.[2];
  if (pid === undefined || processAlive(Number(pid))) return false;
  const path = join(dir, name);
  const original = replaced === null ? undefined : join(dir, replaced[1]!);
  if (original !== undefined && !existsSync(original)) {
    fsStep('renaming back', path, () => renameSync(path, original));
    return false;
  }
  fsStep('deleting', path, () => rmSync(path, { recursive: true, force: true }));
  return true;
}

/** Whether process `pid` exists on this machine. Signal 0 only checks; EPERM means it exists under another user. */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** A file-system step that failed with a system error: what was being done to which path. */
class FailedStep extends Error {
  readonly code: string;
  constructor(action: string, path: string, cause: NodeJS.ErrnoException & { code: string }) {
    // Node's message starts with the code and its text: "ENOSPC: no space left on device, write".
    super(`${action} ${path} failed with ${cause.message}`, { cause });
    this.code = cause.code;
  }
}

/**
 * Run one file-system step; a system error (one from a syscall, with its errno code) comes out as
 * a FailedStep naming `action` and `path`. Other errors (Node's argument errors, a bug) pass unchanged.
 */
function fsStep<T>(action: string, path: string, run: () => T): T {
  try {
    return run();
  } catch (e) {
    const sys = e as NodeJS.ErrnoException;
    if (e instanceof Error && typeof sys.syscall === 'string' && typeof sys.code === 'string') throw new FailedStep(action, path, sys as NodeJS.ErrnoException & { code: string });
    throw e;
  }
}

/** What to do about a failed write, by system error code. */
const WRITE_REMEDIES: Record<string, string> = {
  ENOSPC: 'Free space on that disk or choose another save.dir',
  EDQUOT: 'Free space within your disk quota or choose another save.dir',
  EACCES: 'Make the folder writable for this user or choose another save.dir',
  EPERM: 'Make the folder writable for this user or choose another save.dir',
  EROFS: 'The file system is read-only: choose another save.dir',
};

/** `e` as a CheckpointWriteError "<context>: <action> <path> failed with <code: text>. <details><remedy>" when it is a FailedStep; any other error unchanged (a bug, not the disk). */
function asWriteError(e: unknown, context: string, details: string): unknown {
  if (!(e instanceof FailedStep)) return e;
  const remedy = WRITE_REMEDIES[e.code] ?? 'Check the disk and the folder, or choose another save.dir';
  return new CheckpointWriteError(`${context}: ${e.message}. ${details}${remedy}`, { cause: e.cause });
}

/** "an integer ≥ min" (or in [min, max]): the message of every issue, so that each names what is expected. */
function integer(min: number, max?: number) {
  const error = max === undefined ? `an integer ≥ ${min}` : `an integer in [${min}, ${max}]`;
  const atLeast = z.number({ error }).int({ error }).min(min, { error });
  return max === undefined ? atLeast : atLeast.max(max, { error });
}

const positiveNumber = () => z.number({ error: 'a positive number' }).positive({ error: 'a positive number' });

const modelConfigSchema = z.object(
  {
    vocabSize: integer(1),
    dim: integer(1),
    layers: integer(1),
    heads: integer(1),
    kvHeads: integer(1),
    ffnDim: integer(1),
    ropeTheta: positiveNumber(),
    normEps: positiveNumber(),
    tiedEmbeddings: z.boolean({ error: 'true or false' }),
    initStd: positiveNumber(),
  },
  { error: 'the model config object (vocabSize, dim, layers, …)' },
);

const scheduleSchema = z.object(
  {
    steps: integer(1),
    lr: positiveNumber(),
    minLr: z.number({ error: 'a number ≥ 0' }).min(0, { error: 'a number ≥ 0' }),
    warmupSteps: integer(0),
  },
  { error: 'the run schedule object (steps, lr, minLr, warmupSteps)' },
);

/**
 * trainer.json: {@link TrainerState}. Unknown keys are kept rather than refused or dropped, so a
 * field added by a later version survives being read by this one.
 */
const trainerStateSchema: z.ZodType<TrainerState> = z.looseObject(
  {
    format: z.literal(1, { error: '1, the only trainer.json format' }),
    step: integer(0),
    optimizerStep: integer(0),
    dataPosition: integer(0),
    sequencesPerStep: integer(0),
    causal: z.boolean({ error: 'true or false' }),
    seed: integer(0),
    model: modelConfigSchema,
    tokenizer: z.string({ error: 'a tokenizer name such as "byte"' }),
    seqLen: integer(0),
    layout: z.string({ error: 'the layout it was written under, e.g. "dp=1 hp=2 cp=2 innerRingSize=1 head-first"' }),
    zeroStage: integer(0, 3).optional(),
    zeroShardGroup: z.string({ error: 'a shard group name such as "world"' }).optional(),
    rngState: integer(0),
    schedule: scheduleSchema.optional(),
    packing: z.object({ packing: z.enum(PACKING_MODES), positions: z.enum(POSITION_MODES) }, { error: 'data.packing and data.positions of the run' }).optional(),
    heldOut: z
      .object(
        {
          valFraction: z.number({ error: 'a number in [0, 1)' }).min(0).lt(1),
          source: z.object({
            source: z.enum(['brown', 'files']),
            path: z.string().optional(),
            maxFileMiB: integer(1).optional(),
            invalidText: z.enum(['error', 'skip']).optional(),
          }),
          documents: integer(0),
          validation: z.array(integer(0)),
          tokens: integer(0),
          checksum: z.string(),
          sequences: integer(1),
        },
        { error: 'the held-out split of the run (valFraction, source, documents, validation, tokens, checksum, sequences)' },
      )
      .optional(),
  },
  { error: 'a JSON object of the trainer state (format, step, optimizerStep, …)' },
);

/**
 * Read a checkpoint's trainer.json.
 * @throws ConfigError naming the file when it is missing or not JSON, or naming every bad field
 * with its value and what is expected.
 */
export function readTrainerState(path: string): TrainerState {
  const file = join(path, 'trainer.json');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`checkpoint ${file} cannot be read: ${(e as Error).message}`);
  }
  const parsed = trainerStateSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(`checkpoint ${file} is not a LoongTrain.ts trainer state: ${parsed.error.issues.map((i) => describeStateIssue(i, raw)).join('; ')}`);
  }
  return parsed.data;
}

/** "step = -1 (expected an integer ≥ 0)", "seed is missing (expected …)", or for the whole file "it holds null (expected …)". */
function describeStateIssue(issue: z.core.$ZodIssue, raw: unknown): string {
  let value = raw;
  for (const key of issue.path) value = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[key] : undefined;
  const expected = `(expected ${issue.message})`;
  if (issue.path.length === 0) return `it holds ${showValue(value)} ${expected}`;
  const field = issue.path.map(String).join('.');
  return value === undefined ? `${field} is missing ${expected}` : `${field} = ${showValue(value)} ${expected}`;
}

/** A JSON value for a message, cut to 60 characters. */
function showValue(v: unknown): string {
  const text = JSON.stringify(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** What a resumed run must share with the checkpoint (the parallel layout may differ). */
export interface RunIdentity {
  model: ModelConfig;
  tokenizer: string;
  seqLen: number;
  seed: number;
  sequencesPerStep: number;
  causal: boolean;
  packing: PackingOptions;
}

/**
 * Refuse to resume a checkpoint whose model, tokenizer, sequence length, seed, causal mode,
 * packing or sequences per step (dp × batchSize) differ from the run's: each would change the
 * data, its masks or the model the loss curve continues from.
 * @throws ConfigError listing every field that differs with both values.
 */
export function checkResumable(state: TrainerState, run: RunIdentity, path: string): void {
  const { model, tokenizer, seqLen } = run;
  const diffs: string[] = [];
  for (const key of Object.keys(model) as (keyof ModelConfig)[]) {
    // model.init (the initial parameters of a fresh run, src/hf/init.ts) does not apply to a resume.
    if ((key as string) === 'init') continue;
    if (state.model[key] !== model[key]) diffs.push(`model.${key}: checkpoint ${String(state.model[key])}, config ${String(model[key])}`);
  }
  if (state.tokenizer !== tokenizer) diffs.push(`data.tokenizer: checkpoint ${state.tokenizer}, config ${tokenizer}`);
  if (state.seqLen !== seqLen) diffs.push(`train.seqLen: checkpoint ${state.seqLen}, config ${seqLen}`);
  if (state.seed !== run.seed) diffs.push(`train.seed: checkpoint ${state.seed}, config ${run.seed}`);
  if (state.causal !== run.causal) diffs.push(`train.causal: checkpoint ${state.causal}, config ${run.causal}`);
  const packed = state.packing ?? { packing: 'concat', positions: 'sequence' };
  for (const key of ['packing', 'positions'] as const) {
    if (packed[key] !== run.packing[key]) diffs.push(`data.${key}: checkpoint ${packed[key]}, config ${run.packing[key]}`);
  }
  if (state.sequencesPerStep !== run.sequencesPerStep) {
    diffs.push(`sequences per step (parallel.dp × train.batchSize): checkpoint ${state.sequencesPerStep}, config ${run.sequencesPerStep}`);
  }
  if (diffs.length > 0) throw new ConfigError(`cannot resume from ${path}: the run differs from the checkpoint in\n  ${diffs.join('\n  ')}`);
}

/**
 * The whole model states of checkpoint `path`, laid out flat by `layout` (alignment gaps zero);
 * each rank then keeps its own shard (ZeroOptimizer.loadFullState).
 * @throws SafetensorsError naming the file when it is corrupt or truncated; Error naming a
 * missing or mis-shaped tensor with both shapes; NonFiniteTensorError naming the file, the
 * tensor, the first NaN or ±Infinity element and its value.
 */
export function loadCheckpoint(path: string, layout: ParamLayout, optimizerStep: number): FullState {
  const model = readSafetensors(join(path, 'model.safetensors')).tensors;
  const optim = readSafetensors(join(path, 'optimizer.safetensors')).tensors;
  const n = layout.flatSize;
  const params = new Float32Array(n);
  const m = new Float32Array(n);
  const v = new Float32Array(n);
  const take = (tensors: Map<string, NamedTensor>, name: string, shape: readonly number[], file: string): Float32Array => {
    const t = tensors.get(name);
    if (t === undefined) throw new Error(`checkpoint ${join(path, file)} has no tensor "${name}"`);
    if (t.shape.join(',') !== shape.join(',')) throw new Error(`checkpoint ${join(path, file)}: "${name}" has shape [${t.shape.join(', ')}], the model needs [${shape.join(', ')}]`);
    const bad = describeNonFinite(name, t);
    if (bad !== undefined) throw new NonFiniteTensorError(`checkpoint ${join(path, file)}: ${bad}; training cannot continue from it: resume from an earlier checkpoint`);
    return t.data;
  };
  for (const s of layout.specs) {
    params.set(take(model, s.name, s.shape, 'model.safetensors'), s.offset);
    m.set(take(optim, `m.${s.name}`, s.shape, 'optimizer.safetensors'), s.offset);
    v.set(take(optim, `v.${s.name}`, s.shape, 'optimizer.safetensors'), s.offset);
  }
  return { params, m, v, step: optimizerStep };
}

/**
 * Before any rank starts: read checkpoint `path`'s tensor files in full and check that every
 * parameter, m and v is there with the model's shape and finite (loadCheckpoint's checks), so a
 * corrupt, truncated, foreign or diverged file stops the run at once instead of inside every rank.
 * @throws ConfigError naming the checkpoint and the problem (the file, the tensor, both shapes or
 * the first non-finite element).
 */
export function checkCheckpointFiles(path: string, layout: ParamLayout): void {
  try {
    loadCheckpoint(path, layout, 0);
  } catch (e) {
    throw new ConfigError(`cannot resume from ${path}: ${(e as Error).message}`);
  }
}
