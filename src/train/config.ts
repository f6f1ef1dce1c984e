import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { z } from 'zod';
import { BACKEND_CHOICES } from '../comm/backends.js';
import { PACKING_MODES, packingOptions, POSITION_MODES } from '../data/packing.js';
import { DATA_SOURCES } from '../data/sources.js';
import { TOKENIZER_NAMES, TOKENIZER_VOCAB_SIZES } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import { KERNEL_NAMES } from '../kernels/registry.js';
import { CHECKPOINT_POLICIES } from '../model/checkpoint.js';
import { validateModelConfig } from '../model/config.js';
import { ZERO_SHARD_GROUPS, type ZeroShardGroup } from '../parallel/rank-groups.js';
import { PLACEMENTS, ParallelDims, validateLayout } from '../parallel/dims.js';
import { PRESETS, resolveLayout, type Preset, type ResolvedLayout } from '../parallel/presets.js';
import { DEFAULT_BALANCE_CHUNKS, DEFAULT_SHARDING, SequenceLayout, SHARDINGS, type Sharding } from '../parallel/sequence-layout.js';

/**
 * The run's configuration: a TOML file (docs/config.md lists every key) plus `--set
 * section.key=value` overrides, validated with zod. Every key has a default, so an empty file is
 * a valid config (the Brown corpus, byte tokenizer, one rank).
 */

export const PROGRESS_MODES = ['auto', 'bar', 'plain', 'none'] as const;

const int = (min: number) => z.number().int().min(min);
const positive = () => z.number().positive();
/** [0, 1): Adam's moment decay rates. */
const decayRate = () => z.number().min(0).lt(1);

const modelSchema = z.strictObject({
  vocabSize: int(2).optional(),
  dim: int(1).default(64),
  layers: int(1).default(2),
  heads: int(1).default(4),
  kvHeads: int(1).default(2),
  ffnDim: int(1).default(176),
  ropeTheta: positive().default(10000),
  normEps: positive().default(1e-5),
  tiedEmbeddings: z.boolean().default(true),
  initStd: positive().default(0.02),
  // Initial parameters of a fresh run: "hf:DIR" reads a Hugging Face LLaMA folder (src/hf/init.ts); absent: drawn from train.seed. Ignored on --resume.
  init: z.string().min(1).optional(),
});

const dataSchema = z.strictObject({
  source: z.enum(DATA_SOURCES as ['brown', 'files']).default('brown'),
  path: z.string().min(1).optional(),
  tokenizer: z.enum(TOKENIZER_NAMES as ['byte', 'gpt2']).default('byte'),
  // Optional, not defaulted here: data/sources.ts applies the defaults (1024 MiB, "error"), so
  // a config that leaves them out prints and compares as before.
  maxFileMiB: int(1).optional(),
  invalidText: z.enum(['error', 'skip']).optional(),
  // Also optional for the same reason: data/packing.ts packingOptions applies the defaults
  // ("concat"; positions "document" with "documents", else "sequence").
  packing: z.enum(PACKING_MODES).optional(),
  positions: z.enum(POSITION_MODES).optional(),
  // The held-out split (data/heldout.ts): share of the documents training never sees. Optional,
  // default applied by evalOptions (0.01), so a config that leaves it out prints as before.
  valFraction: z.number().min(0).lt(1).optional(),
});

const parallelSchema = z.strictObject({
  dp: int(1).default(1),
  // hp, cp and innerRingSize may be implied by preset and sp; parallel/presets.ts resolves them.
  preset: z.enum(PRESETS as [Preset, ...Preset[]]).optional(),
  sp: int(1).optional(),
  hp: int(1).optional(),
  cp: int(1).optional(),
  placement: z.enum(PLACEMENTS as ['head-first', 'context-first']).default('head-first'),
  innerRingSize: int(1).optional(),
  // How a sequence's tokens go to the ring positions (parallel/sequence-layout.ts). Optional, defaults
  // applied by shardingOptions ("zigzag", 8), so a config that leaves them out prints as before.
  sharding: z.enum(SHARDINGS as [Sharding, ...Sharding[]]).optional(),
  balanceChunks: int(1).optional(),
});

const optimSchema = z.strictObject({
  lr: positive().default(3e-3),
  minLr: z.number().min(0).default(3e-4),
  warmupSteps: int(0).default(10),
  beta1: decayRate().default(0.9),
  beta2: decayRate().default(0.95),
  eps: positive().default(1e-8),
  weightDecay: z.number().min(0).default(0.1),
  gradClip: z.number().min(0).default(1.0),
  // Hybrid ZeRO (docs/zero.md): 0 replicates everything; 1 shards AdamW state, 2 also gradients, 3 also parameters.
  zeroStage: int(0).max(3).default(0),
  zeroShardGroup: z.enum(ZERO_SHARD_GROUPS as [ZeroShardGroup, ...ZeroShardGroup[]]).default('world'),
});

const trainSchema = z.strictObject({
  steps: int(1).default(100),
  seqLen: int(2).default(256),
  batchSize: int(1).default(1),
  seed: int(0).max(0xffffffff).default(1234),
  // The arena is one WebAssembly.Memory: at most 4 GiB (DESIGN decision 2).
  arenaMiB: int(1).max(4096).default(512),
  commTimeoutMs: int(1).default(60000),
  // Which kernel backend (kernels/registry.ts); "auto" takes the fastest one available. Env override: LOONGTRAIN_KERNELS.
  kernels: z.enum(KERNEL_NAMES).default('auto'),
  // Where ranks run (comm/backends.ts): "auto" takes mpi under mpirun or srun, else threads.
  backend: z.enum(BACKEND_CHOICES as ['auto', 'threads', 'mpi']).default('auto'),
  causal: z.boolean().default(true),
  // Steps whose loss or gradient norm is not finite that are skipped (no update) before the run stops.
  maxNonFiniteSteps: int(0).default(0),
  // Validation on the held-out split every N steps (0: off) over the first evalSequences of its
  // sequences. Optional, defaults applied by evalOptions (0, 8).
  evalEvery: int(0).optional(),
  evalSequences: int(1).optional(),
});

// Activation checkpointing (docs/memory.md): the first ⌈fraction · layers⌉ layers use the policy.
const checkpointSchema = z.strictObject({
  policy: z.enum(CHECKPOINT_POLICIES).default('none'),
  fraction: z.number().gt(0).max(1).default(1),
});

// One folder per run: checkpoints, metrics and the effective config, unless save.dir or log.dir set them apart.
const runSchema = z.strictObject({
  dir: z.string().min(1).default('runs/default'),
});

const saveSchema = z.strictObject({
  // Default: <run.dir>/checkpoints.
  dir: z.string().min(1).optional(),
  every: int(0).default(0),
  keep: int(1).default(2),
});

const logSchema = z.strictObject({
  // Default: run.dir.
  dir: z.string().min(1).optional(),
  // Plain lines every this many steps; default: every step on a terminal, about 100 lines per run otherwise.
  every: int(1).optional(),
  progress: z.enum(PROGRESS_MODES).default('auto'),
  // The MFU denominator, GFLOP/s of one rank; default: the core's native peak (src/kernels/peak.ts, docs/model.md "FLOPs and MFU").
  peakGflopsPerRank: positive().optional(),
  // A Chrome trace of every rank's communication spans (docs/comm.md, Tracing) in <dir>/trace.json.
  trace: z.boolean().default(false),
  // TensorBoard event file <dir>/events.out.tfevents.<unix>.<host> with each step's scalars (src/train/tensorboard.ts).
  tensorboard: z.boolean().default(false),
  // Time every kernel call per category (attention, gemm, elementwise; kernels/timed.ts) and log
  // each rank's kernelMs with the step; off unless true (two clock reads per call). Optional,
  // not defaulted, so a config that leaves it out prints as before.
  kernelTimes: z.boolean().optional(),
});

const SECTIONS = {
  model: modelSchema,
  data: dataSchema,
  parallel: parallelSchema,
  optim: optimSchema,
  train: trainSchema,
  checkpoint: checkpointSchema,
  run: runSchema,
  save: saveSchema,
  log: logSchema,
};

// prefault (not default): an absent section is parsed as {}, so its keys get their defaults.
const configSchema = z.strictObject({
  model: modelSchema.prefault({}),
  data: dataSchema.prefault({}),
  parallel: parallelSchema.prefault({}),
  optim: optimSchema.prefault({}),
  train: trainSchema.prefault({}),
  checkpoint: checkpointSchema.prefault({}),
  run: runSchema.prefault({}),
  save: saveSchema.prefault({}),
  log: logSchema.prefault({}),
});

type ParsedConfig = z.infer<typeof configSchema>;

/**
 * The validated configuration: `model.vocabSize` is resolved (the tokenizer's when not given) and
 * `parallel` holds every size (dp, hp, cp, innerRingSize) after preset and sp are applied.
 */
export type Config = Omit<ParsedConfig, 'model' | 'parallel' | 'save' | 'log'> & {
  model: ParsedConfig['model'] & { vocabSize: number };
  parallel: ResolvedLayout & { preset?: Preset; sharding?: Sharding; balanceChunks?: number };
  save: ParsedConfig['save'] & { dir: string };
  log: ParsedConfig['log'] & { dir: string };
};

/** Environment variable that sets train.kernels over the config file (a --set still wins). */
export const KERNELS_ENV = 'LOONGTRAIN_KERNELS';

/**
 * Read `path` (TOML; undefined = no file, all defaults), apply the LOONGTRAIN_KERNELS environment
 * variable and then `overrides` in order, validate.
 * Relative paths inside the config (data.path, save.dir, log.dir) stay relative to the
 * working directory.
 * @throws ConfigError: missing file, TOML syntax error (with line and column), malformed
 * override, or every validation problem at once (see parseConfig).
 */
export function loadConfig(path: string | undefined, overrides: readonly string[] = []): Config {
  let raw: Record<string, unknown> = {};
  if (path !== undefined) {
    if (!existsSync(path)) throw new ConfigError(`config file ${path} does not exist`);
    if (statSync(path).isDirectory()) throw new ConfigError(`config file ${path} is a directory; give a .toml file such as configs/demo.toml`);
    try {
      raw = parseToml(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new ConfigError(`config file ${path} is not valid TOML: ${(e as Error).message}`);
    }
  }
  const envKernels = process.env[KERNELS_ENV];
  if (envKernels !== undefined && envKernels !== '') applyOverride(raw, `train.kernels=${JSON.stringify(envKernels)}`);
  for (const o of overrides) applyOverride(raw, o);
  const sources = [path ?? 'the default config'];
  if (envKernels !== undefined && envKernels !== '') sources.push(`${KERNELS_ENV}=${envKernels} (environment, sets train.kernels)`);
  if (overrides.length > 0) sources.push(`--set ${overrides.join(' --set ')}`);
  return parseConfig(raw, sources.join(' + '));
}

/**
 * Apply one `section.key=value` override to a raw config object. The value is read as a TOML
 * value (`50`, `3e-4`, `true`, `"x"`, `[1, 2]`); anything that is not valid TOML is taken as a
 * bare string (`context-first`, `data/books`).
 * @throws ConfigError for a missing "=", a key that is not exactly `section.key`, or a section
 * that is not a table.
 */
export function applyOverride(raw: Record<string, unknown>, override: string): void {
  const eq = override.indexOf('=');
  const keyPath = eq < 0 ? '' : override.slice(0, eq).trim();
  const parts = keyPath.split('.');
  if (eq < 0 || parts.length !== 2 || parts.some((p) => p.length === 0)) {
    throw new ConfigError(`--set ${JSON.stringify(override)} is invalid: expected section.key=value, e.g. --set train.steps=50`);
  }
  const [section, key] = parts as [string, string];
  const current = raw[section];
  if (current !== undefined && !isTable(current)) {
    throw new ConfigError(`--set ${keyPath}: ${section} is not a table in the config file (it is ${JSON.stringify(current)})`);
  }
  const table = current ?? {};
  table[key] = parseOverrideValue(override.slice(eq + 1).trim());
  raw[section] = table;
}

function parseOverrideValue(text: string): unknown {
  try {
    const doc = parseToml(`v = ${text}`);
    if (Object.keys(doc).length === 1) return doc.v;
  } catch {
    // not a TOML value: a bare word
  }
  return text;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/**
 * Validate a raw config object (as parsed from TOML) and fill in defaults.
 * Checks each key's type and range, unknown sections and keys (listing the allowed ones), and
 * the cross-field rules that need no model or data: data.path given for source "files",
 * data.positions = "document" only with data.packing = "documents", minLr ≤ lr, vocabSize ≥ the tokenizer's, heads divisible into an even
 * headDim, and the parallel layout (innerRingSize | cp, hp vs heads/kvHeads, seqLen a multiple
 * of 2·sp: parallel/dims.ts validateLayout).
 * @throws ConfigError listing every problem found, each naming the key, the value and what is allowed.
 */
export function parseConfig(raw: unknown, origin = 'config'): Config {
  const parsed = configSchema.safeParse(raw);
  const { config, problems } = parsed.success ? resolveConfig(parsed.data) : { config: undefined, problems: parsed.error.issues.flatMap((i) => describeIssue(i, raw)) };
  if (problems.length > 0 || config === undefined) {
    throw new ConfigError(`${origin}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
  return config;
}

/**
 * Check a config object made in code (not by loadConfig) as a file is checked: unknown sections
 * and keys, types and ranges.
 * @throws ConfigError listing every problem, each naming the key.
 */
export function checkConfigObject(cfg: unknown): void {
  const parsed = configSchema.safeParse(cfg);
  if (parsed.success) return;
  const problems = parsed.error.issues.flatMap((i) => describeIssue(i, cfg));
  throw new ConfigError(`config object: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
}

/** Apply the derived values (vocabSize, the parallel sizes) and collect every cross-field problem. */
function resolveConfig(cfg: ParsedConfig): { config?: Config; problems: string[] } {
  const out: string[] = [];
  const { data, optim, train } = cfg;
  if (data.source === 'files' && data.path === undefined) {
    out.push('data.path is required when data.source = "files": give a .txt file, a .jsonl file or a folder of them');
  }
  if (optim.minLr > optim.lr) out.push(`optim.minLr = ${optim.minLr} is larger than optim.lr = ${optim.lr}; it must be ≤ lr`);
  if (data.source === 'brown' && data.path !== undefined) {
    out.push(`data.path = ${JSON.stringify(data.path)} is set but data.source = "brown" ignores it; set data.source = "files" to train on it, or remove data.path`);
  }
  const tokVocab = TOKENIZER_VOCAB_SIZES[data.tokenizer];
  if (cfg.model.vocabSize !== undefined && cfg.model.vocabSize < tokVocab) {
    out.push(`model.vocabSize = ${cfg.model.vocabSize} is smaller than the ${data.tokenizer} tokenizer's ${tokVocab} tokens; use ≥ ${tokVocab} or omit it`);
  }
  const model = { ...cfg.model, vocabSize: cfg.model.vocabSize ?? tokVocab };
  const collect = <T>(check: () => T): T | undefined => {
    try {
      return check();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      out.push(...e.message.split('\n'));
      return undefined;
    }
  };
  collect(() => validateModelConfig(model));
  collect(() => packingOptions(data));
  const parallel = collect(() => resolveLayout(cfg.parallel));
  if (parallel !== undefined) collect(() => validateLayout(new ParallelDims(parallel), { heads: model.heads, kvHeads: model.kvHeads, seqLen: train.seqLen }));
  // The layout of one whole-sequence document checks the sharding's own seqLen rule (balanced: cp · balanceChunks) before any rank starts.
  if (parallel !== undefined && out.length === 0) {
    collect(() => new SequenceLayout({ hp: parallel.hp, cp: parallel.cp, seqLen: train.seqLen, causal: train.causal, ...shardingOptions(cfg.parallel) }));
  }
  if (out.length > 0 || parallel === undefined) return { problems: out };
  const save = { ...cfg.save, dir: cfg.save.dir ?? join(cfg.run.dir, 'checkpoints') };
  const log = { ...cfg.log, dir: cfg.log.dir ?? cfg.run.dir };
  const { preset, sharding, balanceChunks } = cfg.parallel;
  const resolved: Config['parallel'] = {
    ...parallel,
    ...(preset !== undefined ? { preset } : {}),
    ...(sharding !== undefined ? { sharding } : {}),
    ...(balanceChunks !== undefined ? { balanceChunks } : {}),
  };
  return { config: { ...cfg, model, save, log, parallel: resolved }, problems: [] };
}

/** data.valFraction, train.evalEvery and train.evalSequences with their defaults (0.01, 0 = off, 8) applied. */
export function evalOptions(cfg: { data: { valFraction?: number | undefined }; train: { evalEvery?: number | undefined; evalSequences?: number | undefined } }): { valFraction: number; evalEvery: number; evalSequences: number } {
  return { valFraction: cfg.data.valFraction ?? 0.01, evalEvery: cfg.train.evalEvery ?? 0, evalSequences: cfg.train.evalSequences ?? 8 };
}

/** parallel.sharding and parallel.balanceChunks with their defaults ("zigzag", 8) applied. */
export function shardingOptions(parallel: { sharding?: Sharding | undefined; balanceChunks?: number | undefined }): { sharding: Sharding; balanceChunks: number } {
  return { sharding: parallel.sharding ?? DEFAULT_SHARDING, balanceChunks: parallel.balanceChunks ?? DEFAULT_BALANCE_CHUNKS };
}

type Issue = z.core.$ZodIssue;

function describeIssue(issue: Issue, raw: unknown): string[] {
  const path = issue.path.map(String);
  const key = path.join('.');
  if (issue.code === 'unrecognized_keys') {
    if (path.length === 0) {
      const allowed = Object.keys(SECTIONS);
      return issue.keys.map((k) =>
        isTable((raw as Record<string, unknown>)[k])
          ? `unknown section [${k}]${suggest(k, allowed)}; allowed sections: ${allowed.join(', ')}`
          : `key ${k} stands outside any section; put it under its section (e.g. [train] steps = 20); sections: ${allowed.join(', ')}`,
      );
    }
    const allowed = Object.keys(SECTIONS[path[0] as keyof typeof SECTIONS].shape);
    return issue.keys.map((k) => `unknown key ${key}.${k}${suggest(k, allowed)}; allowed keys of [${key}]: ${allowed.join(', ')}`);
  }
  const value = valueAt(raw, path);
  const subject = path.length === 1 ? `[${key}] = ${show(value)}` : `${key} = ${show(value)}`;
  switch (issue.code) {
    case 'invalid_type':
      return [`${subject} is invalid: expected ${expectedText(issue.expected, path)}`];
    case 'invalid_value':
      return [`${subject} is invalid: use one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`];
    case 'too_small':
      return [`${subject} is invalid: ${issue.origin === 'string' ? 'it must not be empty' : `it must be ${issue.inclusive ? '≥' : '>'} ${String(issue.minimum)}`}`];
    case 'too_big':
      return [`${subject} is invalid: it must be ${issue.inclusive ? '≤' : '<'} ${String(issue.maximum)}`];
    default:
      return [`${subject} is invalid: ${issue.message}`];
  }
}

function expectedText(expected: string, path: string[]): string {
  switch (expected) {
    case 'int':
      return 'an integer';
    case 'number':
      return isIntKey(path) ? 'an integer' : 'a number';
    case 'string':
      return 'a string (quote it: key="2024")';
    case 'boolean':
      return 'true or false';
    case 'object':
      return path.length === 1 ? `a table ([${path[0]}] with key = value lines)` : 'a table';
    default:
      return expected;
  }
}

/** Whether the key at `path` (section.key) holds an integer; zod reports a string given for one as "expected number". */
function isIntKey(path: string[]): boolean {
  const section = SECTIONS[path[0] as keyof typeof SECTIONS] as z.ZodObject | undefined;
  let schema: unknown = section?.shape[path[1] ?? ''];
  while (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) schema = schema.unwrap();
  return schema instanceof z.ZodNumber && schema.isInt;
}

function valueAt(raw: unknown, path: string[]): unknown {
  let v = raw;
  for (const p of path) v = isTable(v) ? v[p] : undefined;
  return v;
}

function show(v: unknown): string {
  if (v === undefined) return '(missing)';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v instanceof Date) return v.toISOString();
  return JSON.stringify(v) ?? String(v);
}

/** " (did you mean x?)" for the allowed name nearest to `name`, if it is close (edit distance ≤ 2 or case only). */
export function suggest(name: string, allowed: string[]): string {
  let best = '';
  let bestDist = Infinity;
  for (const a of allowed) {
    const d = a.toLowerCase() === name.toLowerCase() ? 0 : editDistance(a, name);
    if (d < bestDist) [best, bestDist] = [a, d];
  }
  return bestDist <= 2 ? ` (did you mean ${best}?)` : '';
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The effective config as TOML (optional keys that are unset are left out), for logs and checkpoints. */
export function configToToml(cfg: Config): string {
  return stringifyToml(JSON.parse(JSON.stringify(cfg)) as Record<string, unknown>);
}
