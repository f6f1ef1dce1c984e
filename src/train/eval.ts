import { existsSync } from 'node:fs';
import { createLauncher } from '../comm/backends.js';
import type { Launcher } from '../comm/launcher.js';
import { heldOutStream, scoringSequences } from '../data/heldout.js';
import { buildTokenStream, type PackingOptions, type Sequence } from '../data/packing.js';
import { loadDocuments } from '../data/sources.js';
import { createTokenizer } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import { resolveKernels } from '../kernels/registry.js';
import { ParallelDims } from '../parallel/dims.js';
import { readTrainerState, resolveCheckpoint, type TrainerState } from './checkpoint.js';
import { applyOverride, KERNELS_ENV, parseConfig, type Config } from './config.js';
import type { EvalRankArgs } from './eval-rank.js';
import type { EvalLoss } from './evaluate.js';

/** The `--set` keys `loongtrain eval` accepts: where and how the ranks run; the model, data and sequence length come from the checkpoint. */
export const EVAL_SET_KEYS = ['parallel.*', 'train.kernels', 'train.arenaMiB', 'train.backend', 'train.commTimeoutMs'] as const;

export interface EvalOptions {
  /** A checkpoint folder (step-NNNNNNNN), a checkpoint directory or a run folder (its newest checkpoint). */
  checkpoint: string;
  /** Held-out text: a .txt file, a .jsonl file or a folder of them (read as data.source = "files"). Absent: the checkpoint's held-out split. */
  data?: string;
  /** Score only the first this many sequences (default: all of --data; the run's train.evalSequences for the held-out split). */
  sequences?: number;
  /** `section.key=value` overrides of the layout and runtime ({@link EVAL_SET_KEYS}); default one rank. */
  set?: readonly string[];
  /** Where the ranks run (default: createLauncher(train.backend)). */
  launcher?: Launcher;
}

export interface EvalResult {
  /** Mean cross-entropy over every scored label (nats). */
  loss: number;
  /** exp(loss). */
  perplexity: number;
  /** Labels scored. */
  tokens: number;
  /** Sequences scored (each of the checkpoint's seqLen, the last one possibly shorter and padded). */
  sequences: number;
  /** The checkpoint folder read and its step. */
  checkpoint: string;
  step: number;
  /** What was scored: the --data path, or "held-out split of …". */
  scored: string;
  /** The layout the ranks ran under, e.g. "dp=1 hp=2 cp=2 …". */
  layout: string;
  /** Whether this process holds the result (always, except the non-zero ranks of an mpi job). */
  coordinator: boolean;
}

/**
 * Loss and perplexity of a checkpoint's model on held-out text (`loongtrain eval`): the text of
 * `data` (read as data.source = "files" reads it, tokenized with the checkpoint's tokenizer)
 * or, without it, the checkpoint's held-out split of its training source, cut into the
 * checkpoint's seqLen windows as training packs them (data/heldout.ts scoringSequences: the
 * tail and a text shorter than seqLen are scored too), scored by the same distributed forward
 * as training on the layout `set` asks for (one rank by default).
 * @throws ConfigError naming the flag (--checkpoint, --data, --sequences, --set) and the problem.
 */
export async function evaluateCheckpoint(opts: EvalOptions): Promise<EvalResult> {
  const { path, state } = readCheckpoint(opts.checkpoint);
  if (opts.sequences !== undefined && (!Number.isInteger(opts.sequences) || opts.sequences < 1)) {
    throw new ConfigError(`--sequences ${opts.sequences} is invalid: it must be a positive integer`);
  }
  const cfg = evalConfig(state, opts.set ?? []);
  const tokenizer = createTokenizer(state.tokenizer);
  const packing: PackingOptions = state.packing ?? { packing: 'concat', positions: 'sequence' };
  let sequences: Sequence[];
  let scored: string;
  if (opts.data !== undefined) {
    if (opts.data === '') throw new ConfigError('--data is empty: give a .txt file, a .jsonl file or a folder of them');
    if (!existsSync(opts.data)) throw new ConfigError(`--data ${opts.data} does not exist: give a .txt file, a .jsonl file or a folder of them`);
    let docs: string[];
    try {
      docs = loadDocuments({ source: 'files', path: opts.data }).documents;
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`--data ${opts.data}: ${e.message}`);
      throw e;
    }
    const built = buildTokenStream(docs, tokenizer);
    sequences = scoringSequences(built.stream, built.docStarts, state.seqLen, packing, opts.sequences);
    scored = opts.data;
  } else {
    const record = state.heldOut;
    if (record === undefined) {
      throw new ConfigError(
        `--checkpoint ${path} records no held-out split (its run had data.valFraction = 0 or a single document, or it predates held-out splits): give the text to score with --data`,
      );
    }
    const source = { source: record.source.source, ...(record.source.path !== undefined ? { path: record.source.path } : {}), ...(record.source.maxFileMiB !== undefined ? { maxFileMiB: record.source.maxFileMiB } : {}), ...(record.source.invalidText !== undefined ? { invalidText: record.source.invalidText } : {}) };
    let docs: string[];
    try {
      docs = loadDocuments(source).documents;
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`--checkpoint ${path}: its training source cannot be read to rebuild the held-out split (${e.message}); give the held-out text with --data`);
      throw e;
    }
    const val = heldOutStream(record, docs, tokenizer);
    sequences = scoringSequences(val.stream, val.docStarts, state.seqLen, packing, opts.sequences ?? record.sequences);
    scored = `held-out split of ${record.source.source === 'brown' ? 'the Brown corpus' : record.source.path} (${record.validation.length} of ${record.documents} documents)`;
  }
  if (sequences.length === 0) {
    throw new ConfigError(`--data ${opts.data ?? '(held-out split)'}: the text has fewer than 2 tokens, so there is no next token to score`);
  }

  const launcher = opts.launcher ?? (await createLauncher(cfg.train.backend));
  const dims = new ParallelDims(cfg.parallel);
  if (launcher.fixedWorld !== undefined && launcher.fixedWorld !== dims.world) {
    throw new ConfigError(`the ${launcher.backend} launcher started ${launcher.fixedWorld} rank${launcher.fixedWorld === 1 ? '' : 's'} but the layout ${dims} needs ${dims.world}: start it with mpirun -n ${dims.world}, or change --set parallel.*`);
  }
  const backend = resolveKernels(cfg.train.kernels);
  const args: EvalRankArgs = { config: { ...cfg, train: { ...cfg.train, kernels: backend.name } }, checkpoint: path, sequences };
  const results = (await launcher.launch({
    world: dims.world,
    entry: new URL('./eval-rank.js', import.meta.url).href,
    args,
    timeoutMs: cfg.train.commTimeoutMs,
    arenaBytes: cfg.train.arenaMiB * 2 ** 20,
  })) as EvalLoss[];
  const own = results.find((r) => r !== undefined)!;
  return {
    loss: own.loss,
    perplexity: Math.exp(own.loss),
    tokens: own.tokens,
    sequences: sequences.length,
    checkpoint: path,
    step: state.step,
    scored,
    layout: dims.toString(),
    coordinator: launcher.coordinator,
  };
}

/**
 * The checkpoint `target` names and its trainer state.
 * @throws ConfigError naming --checkpoint when it is missing, empty or holds no checkpoint.
 */
function readCheckpoint(target: string): { path: string; state: TrainerState } {
  if (target === '') throw new ConfigError('--checkpoint is empty: give a checkpoint folder (step-NNNNNNNN) or a run folder');
  if (!existsSync(target)) throw new ConfigError(`--checkpoint ${target} does not exist: give a checkpoint folder (step-NNNNNNNN) or a run folder`);
  let path: string;
  try {
    path = resolveCheckpoint(target);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`--checkpoint ${target}: no checkpoint in it (expected a step-NNNNNNNN folder holding trainer.json, or a run folder with checkpoints/)`);
    throw e;
  }
  try {
    return { path, state: readTrainerState(path) };
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`--checkpoint ${target}: ${e.message}`);
    throw e;
  }
}

/**
 * The config the ranks run: the checkpoint's model, tokenizer, packing, seqLen, causal mode and
 * seed, ZeRO stage 0, one rank unless `set` gives a layout.
 * @throws ConfigError naming a --set key eval does not take, or any invalid value or layout.
 */
export function evalConfig(state: TrainerState, set: readonly string[]): Config {
  const packing = state.packing ?? { packing: 'concat', positions: 'sequence' };
  const raw: Record<string, unknown> = {
    model: { ...state.model },
    data: { tokenizer: state.tokenizer, packing: packing.packing, positions: packing.positions },
    train: { seqLen: state.seqLen, causal: state.causal, seed: state.seed },
    optim: { zeroStage: 0 },
    log: { progress: 'none' },
  };
  // As for training: LOONGTRAIN_KERNELS sets train.kernels, a --set still wins.
  const envKernels = process.env[KERNELS_ENV];
  if (envKernels !== undefined && envKernels !== '') applyOverride(raw, `train.kernels=${JSON.stringify(envKernels)}`);
  for (const o of set) {
    const key = o.slice(0, Math.max(0, o.indexOf('='))).trim();
    if (!(key.startsWith('parallel.') || (EVAL_SET_KEYS as readonly string[]).includes(key))) {
      throw new ConfigError(
        `--set ${o}: eval takes ${key === '' ? 'section.key=value' : key} from the checkpoint or does not use it; it accepts ${EVAL_SET_KEYS.join(', ')} (e.g. --set parallel.hp=2 --set parallel.cp=2)`,
      );
    }
    applyOverride(raw, o);
  }
  return parseConfig(raw, `eval of checkpoint${set.length > 0 ? ` with --set ${set.join(' --set ')}` : ''}`);
}
