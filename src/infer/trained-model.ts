import { join } from 'node:path';
import { createTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import type { Kernels } from '../kernels/kernels.js';
import { createKernels, type KernelChoice } from '../kernels/registry.js';
import type { ModelConfig } from '../model/config.js';
import { ModelParams, paramLayout } from '../model/params.js';
import { Arena } from '../tensor/arena.js';
import { readSafetensors } from '../train/safetensors.js';
import { readTrainerState, resolveCheckpoint, type TrainerState } from '../train/checkpoint.js';

/**
 * A trained model loaded for use outside training (generate, eval, export): its parameters in a
 * replicated {@link ModelParams} on one arena, the kernels bound to that arena, the tokenizer
 * it was trained with and the checkpoint's trainer state.
 */
export interface TrainedModel {
  /** The checkpoint folder that was read (step-NNNNNNNN). */
  path: string;
  state: TrainerState;
  config: ModelConfig;
  tokenizer: Tokenizer;
  arena: Arena;
  kernels: Kernels;
  params: ModelParams;
}

export interface LoadOptions {
  /** Kernel backend (default `auto`: blas, else wasm, else reference). */
  kernels?: KernelChoice;
  /** Arena bytes beyond the parameters and gradients, for activations and caches (default 256 MiB). */
  workBytes?: number;
}

/**
 * Load the model of checkpoint `target`: a checkpoint folder, or a run folder / checkpoint
 * directory (its newest checkpoint). Reads model.safetensors only (the optimizer state is not
 * needed), checking every parameter's presence, shape and finiteness.
 * @throws ConfigError naming the folder or file and the problem (no checkpoint, not a trainer
 * state, a missing or mis-shaped tensor, a non-finite value, an unknown tokenizer).
 */
export function loadTrainedModel(target: string, opts: LoadOptions = {}): TrainedModel {
  const path = resolveCheckpoint(target);
  const state = readTrainerState(path);
  const config = state.model;
  const layout = paramLayout(config);
  const file = join(path, 'model.safetensors');
  let tensors;
  try {
    tensors = readSafetensors(file).tensors;
  } catch (e) {
    throw new ConfigError(`checkpoint ${file} cannot be read: ${(e as Error).message}`);
  }
  const paramBytes = 2 * layout.flatSize * 4;
  const arena = new Arena(paramBytes + (opts.workBytes ?? 256 * 2 ** 20));
  const params = new ModelParams(arena, config);
  for (const s of layout.specs) {
    const t = tensors.get(s.name);
    if (t === undefined) throw new ConfigError(`checkpoint ${file} has no tensor "${s.name}"; it is not a checkpoint of this model`);
    if (t.shape.join(',') !== s.shape.join(',')) throw new ConfigError(`checkpoint ${file}: "${s.name}" has shape [${t.shape.join(', ')}], the model needs [${s.shape.join(', ')}]`);
    const bad = t.data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new ConfigError(`checkpoint ${file}: "${s.name}"[${bad}] = ${t.data[bad]} is not finite; use an earlier checkpoint`);
    params.params.data.set(t.data, s.offset);
  }
  return { path, state, config, tokenizer: createTokenizer(state.tokenizer), arena, kernels: createKernels(opts.kernels ?? 'auto', arena), params };
}
