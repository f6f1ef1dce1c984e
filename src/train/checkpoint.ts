import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { ParamLayout } from '../model/params.js';
import type { FullState } from '../optim/zero.js';
import { writeFileAtomic } from './atomic-write.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from './safetensors.js';

/**
 * A checkpoint is a folder `step-NNNNNNNN/` holding `model.safetensors` (every parameter by
 * name), `optimizer.safetensors` (AdamW `m.<name>` and `v.<name>`) and `trainer.json`
 * ({@link TrainerState}). The folder is written under a temporary name and renamed, so a
 * checkpoint folder with its final name is always complete. Tensors are whole (ZeRO shards are
 * gathered before writing and cut again on load, docs/zero.md), so a checkpoint resumes under
 * any parallel layout, ZeRO stage and shard group of the same model.
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
}

const STEP_DIR = /^step-(\d{8})$/;

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

/**
 * The checkpoint to resume from: `target` itself when it is a checkpoint folder, else the newest
 * checkpoint inside `target`. @throws ConfigError naming the folder when there is none.
 */
export function resolveCheckpoint(target: string): string {
  if (existsSync(join(target, 'trainer.json'))) return target;
  const all = listCheckpoints(target);
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
 * and keep the newest `keep`. Returns its path.
 * @throws Error when `full` does not match the layout.
 */
export function saveCheckpoint(dir: string, state: TrainerState, layout: ParamLayout, full: FullState, keep: number): string {
  for (const [what, a] of [['params', full.params], ['m', full.m], ['v', full.v]] as const) {
    if (a.length !== layout.flatSize) throw new Error(`saveCheckpoint: ${what} has ${a.length} elements, the layout ${layout.flatSize}`);
  }
  mkdirSync(dir, { recursive: true });
  const final = join(dir, checkpointDirName(state.step));
  const tmp = `${final}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  const model = new Map<string, NamedTensor>();
  const optim = new Map<string, NamedTensor>();
  const range = (a: Float32Array, s: ParamLayout['specs'][number]): Float32Array => a.subarray(s.offset, s.offset + s.size);
  for (const s of layout.specs) {
    model.set(s.name, { shape: s.shape, data: range(full.params, s) });
    optim.set(`m.${s.name}`, { shape: s.shape, data: range(full.m, s) });
    optim.set(`v.${s.name}`, { shape: s.shape, data: range(full.v, s) });
  }
  writeSafetensors(join(tmp, 'model.safetensors'), model, { format: 'loongtrain', step: String(state.step) });
  writeSafetensors(join(tmp, 'optimizer.safetensors'), optim, { optimizer: 'adamw', step: String(full.step) });
  writeFileAtomic(join(tmp, 'trainer.json'), JSON.stringify(state, null, 2) + '\n');
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  const all = listCheckpoints(dir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(old.path, { recursive: true, force: true });
  return final;
}

/** Read a checkpoint's trainer.json. @throws ConfigError naming the file when it is missing or malformed. */
export function readTrainerState(path: string): TrainerState {
  const file = join(path, 'trainer.json');
  let state: TrainerState;
  try {
    state = JSON.parse(readFileSync(file, 'utf8')) as TrainerState;
  } catch (e) {
    throw new ConfigError(`checkpoint ${file} cannot be read: ${(e as Error).message}`);
  }
  const problems: string[] = [];
  if (state.format !== 1) problems.push(`format ${String(state.format)} (expected 1)`);
  for (const key of ['step', 'optimizerStep', 'dataPosition', 'sequencesPerStep', 'seed', 'seqLen'] as const) {
    if (!Number.isInteger(state[key]) || state[key] < 0) problems.push(`${key} = ${String(state[key])} (expected an integer ≥ 0)`);
  }
  if (typeof state.model !== 'object' || state.model === null) problems.push('model missing (expected the model config object)');
  if (typeof state.tokenizer !== 'string') problems.push('tokenizer missing (expected a name)');
  if (typeof state.causal !== 'boolean') problems.push('causal missing (expected true or false)');
  if (problems.length > 0) throw new ConfigError(`checkpoint ${file} is not a LoongTrain.ts trainer state: ${problems.join('; ')}`);
  return state;
}

/** What a resumed run must share with the checkpoint (the parallel layout may differ). */
export interface RunIdentity {
  model: ModelConfig;
  tokenizer: string;
  seqLen: number;
  seed: number;
  sequencesPerStep: number;
  causal: boolean;
}

/**
 * Refuse to resume a checkpoint whose model, tokenizer, sequence length, seed, causal mode or
 * sequences per step (dp × batchSize) differ from the run's: each would change the data or the
 * model the loss curve continues from.
 * @throws ConfigError listing every field that differs with both values.
 */
export function checkResumable(state: TrainerState, run: RunIdentity, path: string): void {
  const { model, tokenizer, seqLen } = run;
  const diffs: string[] = [];
  for (const key of Object.keys(model) as (keyof ModelConfig)[]) {
    if (state.model[key] !== model[key]) diffs.push(`model.${key}: checkpoint ${String(state.model[key])}, config ${String(model[key])}`);
  }
  if (state.tokenizer !== tokenizer) diffs.push(`data.tokenizer: checkpoint ${state.tokenizer}, config ${tokenizer}`);
  if (state.seqLen !== seqLen) diffs.push(`train.seqLen: checkpoint ${state.seqLen}, config ${seqLen}`);
  if (state.seed !== run.seed) diffs.push(`train.seed: checkpoint ${state.seed}, config ${run.seed}`);
  if (state.causal !== run.causal) diffs.push(`train.causal: checkpoint ${state.causal}, config ${run.causal}`);
  if (state.sequencesPerStep !== run.sequencesPerStep) {
    diffs.push(`sequences per step (parallel.dp × train.batchSize): checkpoint ${state.sequencesPerStep}, config ${run.sequencesPerStep}`);
  }
  if (diffs.length > 0) throw new ConfigError(`cannot resume from ${path}: the run differs from the checkpoint in\n  ${diffs.join('\n  ')}`);
}

/**
 * The whole model states of checkpoint `path`, laid out flat by `layout` (alignment gaps zero);
 * each rank then keeps its own shard (ZeroOptimizer.loadFullState).
 * @throws SafetensorsError naming the file when it is corrupt or truncated; Error naming a
 * missing or mis-shaped tensor with both shapes.
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
 * parameter, m and v is there with the model's shape (loadCheckpoint's checks), so a corrupt,
 * truncated or foreign file stops the run at once instead of inside every rank.
 * @throws ConfigError naming the checkpoint and the problem (the file, the tensor, both shapes).
 */
export function checkCheckpointFiles(path: string, layout: ParamLayout): void {
  try {
    loadCheckpoint(path, layout, 0);
  } catch (e) {
    throw new ConfigError(`cannot resume from ${path}: ${(e as Error).message}`);
  }
}
