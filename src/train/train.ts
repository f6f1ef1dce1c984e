import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { createLauncher } from '../comm/backends.js';
import type { Launcher } from '../comm/launcher.js';
import type { TraceEvent } from '../comm/trace.js';
import { packingOptions, SequenceSampler } from '../data/packing.js';
import { loadDocuments } from '../data/sources.js';
import { createTokenizer } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import { resolveKernels } from '../kernels/registry.js';
import { modelFlops } from '../model/flops.js';
import { validateModelConfig } from '../model/config.js';
import { paramLayout } from '../model/params.js';
import { largestShardSize, modelStateBytes, zeroShardCount, type ZeroStage } from '../optim/zero.js';
import type { ZeroShardGroup } from '../parallel/rank-groups.js';
import { ParallelDims, validateLayout } from '../parallel/dims.js';
import { checkCheckpointFiles, checkResumable, listCheckpoints, moveAside, newerCheckpoints, prepareFreshCheckpointDir, readTrainerState, removeStaleTempDirs, resolveCheckpoint } from './checkpoint.js';
import { checkConfigObject, configToToml, evalOptions, type Config } from './config.js';
import { splitStreams, streamChecksum, type HeldOutRecord, type SplitStreams } from '../data/heldout.js';
import { TrainLogger } from './logger.js';
import { checkMetricsFile } from './metrics-file.js';
import { loggedStepCell, markLogged } from './logged-step.js';
import { combineStep, peakFlopsPerRank, type RankStepReport, type StepMetrics } from './metrics.js';
import type { CheckpointReport, RankTrainArgs, RankTrainResult } from './rank.js';
import { resumeSchedule } from './resume-schedule.js';
import { checkFreshLogDir, checkWritableDir, holdsMetrics } from './run-dirs.js';
import { writeTraceFile } from './trace-file.js';
import { hfInitParams } from '../hf/init.js';

export interface TrainOptions {
  /** Resume from this checkpoint folder, or the newest checkpoint inside it. */
  resume?: string;
  /** On a fresh run, delete checkpoints already in save.dir instead of refusing to start. */
  overwrite?: boolean;
  /** Stop after this step (writing a checkpoint there) instead of config.train.steps. */
  stopAt?: number;
  /** Where progress lines go (default: stderr). */
  out?: (line: string) => void;
  /** Where the ranks run (default: createLauncher(config.train.backend)). */
  launcher?: Launcher;
  /**
   * The keys this command set explicitly (the CLI's --set): on --resume the schedule keys not
   * among them come from the checkpoint (resume-schedule.ts). Absent: the config is taken as given.
   */
  explicitKeys?: ReadonlySet<string>;
  /** On --resume from an older step: move the newer checkpoints of save.dir aside instead of refusing. */
  rollback?: boolean;
}

export interface TrainResult {
  /** Metrics of every step this run took. */
  steps: StepMetrics[];
  /** Last checkpoint written. */
  checkpoint?: string;
  /** The run stopped early on Ctrl-C or another stop signal (after saving a checkpoint). */
  interrupted: boolean;
  /** The signal that stopped it, when one did in this process. */
  stopSignal?: NodeJS.Signals;
  /** Whether this process logged the run and wrote its files (always, except in the non-zero ranks of an mpi job). */
  coordinator: boolean;
  /** Where the ranks ran, for the command that continues the run. */
  backend: Launcher['backend'];
  world: number;
  wallSeconds: number;
}

/**
 * Train as the config says: validate everything and prepare the data in every process (it is
 * deterministic), then run the ranks through the launcher (threads or mpi) and, in the
 * coordinator process, log each step's combined metrics and write the run's files; other
 * processes of an mpi job return no steps.
 * @throws ConfigError for any invalid setting, before any rank starts; RankFailedError when a
 * rank fails (the others are stopped).
 */
export async function train(config: Config, opts: TrainOptions = {}): Promise<TrainResult> {
  const started = performance.now();
  // A config object from code gets the checks of a config file: unknown keys, types, ranges.
  checkConfigObject(config);
  const launcher = opts.launcher ?? (await createLauncher(config.train.backend));
  const { coordinator } = launcher;
  const dims = new ParallelDims(config.parallel);
  if (launcher.fixedWorld !== undefined && launcher.fixedWorld !== dims.world) {
    throw new ConfigError(
      `the ${launcher.backend} launcher started ${launcher.fixedWorld} rank${launcher.fixedWorld === 1 ? '' : 's'} but the layout ${dims} needs dp·hp·cp = ${dims.world}: ` +
        `start it with mpirun -n ${dims.world} (or srun -n ${dims.world}), or change parallel.*` +
        (launcher.fixedWorld === 1 && launcher.backend === 'mpi' ? ' (this process was not started by mpirun or srun)' : ''),
    );
  }
  validateModelConfig(config.model);
  validateLayout(dims, { heads: config.model.heads, kvHeads: config.model.kvHeads, seqLen: config.train.seqLen });
  const notes: string[] = [];
  const tokenizer = createTokenizer(config.data.tokenizer);
  const resumeFrom = opts.resume === undefined ? undefined : resolveCheckpoint(opts.resume);
  let cfg = config;
  let firstStep = 0;
  if (resumeFrom !== undefined) {
    const state = withEarlierCheckpoints(resumeFrom, () => readTrainerState(resumeFrom));
    const resumed = resumeSchedule(config, state.schedule, opts.explicitKeys);
    cfg = resumed.cfg;
    notes.push(...resumed.notes);
    if (cfg.optim.minLr > cfg.optim.lr) {
      throw new ConfigError(`--resume: optim.minLr = ${cfg.optim.minLr} would exceed optim.lr = ${cfg.optim.lr} (one from the checkpoint, one from --set); set both with --set`);
    }
    const sequencesPerStep = dims.dp * cfg.train.batchSize;
    checkResumable(state, { model: cfg.model, tokenizer: tokenizer.name, seqLen: cfg.train.seqLen, seed: cfg.train.seed, sequencesPerStep, causal: cfg.train.causal, packing: packingOptions(cfg.data) }, resumeFrom);
    withEarlierCheckpoints(resumeFrom, () => checkCheckpointFiles(resumeFrom, paramLayout(cfg.model)));
    firstStep = state.step;
  } else if (coordinator) {
    checkFreshLogDir(cfg.log.dir, opts.overwrite ?? false);
  }
  // model.init = "hf:DIR": a fresh run starts from imported weights (src/hf/init.ts), read once here and shared with the ranks.
  let initParams: Float32Array | undefined;
  if (cfg.model.init !== undefined && resumeFrom !== undefined) notes.push(`model.init = ${JSON.stringify(cfg.model.init)} is ignored: the run resumes from ${resumeFrom}`);
  if (cfg.model.init !== undefined && resumeFrom === undefined) {
    const init = hfInitParams(cfg.model, cfg.model.init, tokenizer.name);
    initParams = new Float32Array(new SharedArrayBuffer(init.params.byteLength));
    initParams.set(init.params);
    notes.push(...init.notes);
  }
  const stopAt = opts.stopAt ?? cfg.train.steps;
  if (!Number.isInteger(stopAt) || stopAt < 1 || stopAt > cfg.train.steps) {
    throw new ConfigError(`--stop-at ${stopAt} is invalid: it must be an integer in [1, train.steps = ${cfg.train.steps}]`);
  }
  checkArenaFitsModelStates(cfg, dims);
  // An unavailable backend is a ConfigError here, before any rank starts; ranks get the resolved name.
  const backend = resolveKernels(cfg.train.kernels);
  if (firstStep >= stopAt) {
    throw new ConfigError(
      opts.stopAt !== undefined && opts.stopAt < cfg.train.steps
        ? `--stop-at ${stopAt} is at or before step ${firstStep} of the checkpoint ${resumeFrom}; give a later --stop-at`
        : `--resume: checkpoint ${resumeFrom} is at step ${firstStep}, already at or past the last step ${stopAt}; raise train.steps (--set train.steps=…) to continue`,
    );
  }
  if (coordinator) {
    // Made here (a refused run may leave them empty), but nothing in them changes before every check has passed.
    checkWritableDir('save.dir', cfg.save.dir);
    checkWritableDir('log.dir', cfg.log.dir);
  }
  if (cfg.optim.warmupSteps > cfg.train.steps) notes.push(`optim.warmupSteps = ${cfg.optim.warmupSteps} is longer than the run: the learning rate warms up over all ${plural(cfg.train.steps, 'step')}`);

  const rankCfg: Config = { ...cfg, train: { ...cfg.train, kernels: backend.name } };
  const { documents: docs, notes: dataNotes } = loadDocuments(cfg.data);
  // The held-out split (data.valFraction, data/heldout.ts): training sees only the other documents.
  const evalOpts = evalOptions(cfg);
  const split = splitStreams(docs, tokenizer, evalOpts.valFraction);
  if (resumeFrom !== undefined) checkResumeSplit(readTrainerState(resumeFrom).heldOut?.validation ?? [], split.validation, resumeFrom);
  const built = split.train;
  // Shared, not copied, with every rank of this process (the launcher hands them over).
  const stream = sharedCopy(built.stream);
  const docStarts = sharedCopy(built.docStarts);
  const sampler = withSplitHint(split.validation.length, () => new SequenceSampler(stream, cfg.train.seqLen, cfg.train.seed, { ...packingOptions(cfg.data), docStarts }));
  const heldOut = heldOutRecordOf(cfg, split, docs.length, evalOpts.evalSequences);

  const metricsPath = join(cfg.log.dir, 'metrics.jsonl');
  const newer = resumeFrom !== undefined && coordinator ? checkResumeTarget(resumeFrom, cfg, firstStep, opts.rollback ?? false) : [];
  if (resumeFrom !== undefined && coordinator) checkMetricsFile(metricsPath, firstStep);

  // Every check has passed: now the run's folders change.
  if (newer.length > 0) notes.push(rollBack(cfg.save.dir, newer, metricsPath));
  if (coordinator) {
    const removed = removeStaleTempDirs(cfg.save.dir);
    if (removed.length > 0) notes.push(`save.dir: removed ${removed.length} incomplete checkpoint folder${removed.length === 1 ? '' : 's'} left by an interrupted save (${removed.join(', ')})`);
  }
  const deleted = resumeFrom === undefined && coordinator ? prepareFreshCheckpointDir(cfg.save.dir, opts.overwrite ?? false) : [];
  const logger = coordinator ? new TrainLogger(cfg.log.dir, cfg.log.progress, cfg.log.every, firstStep, stopAt, resumeFrom !== undefined, opts.out) : undefined;
  if (coordinator) {
    mkdirSync(cfg.log.dir, { recursive: true });
    // The config as asked for ("auto" stays auto, so the file is reusable on another machine); the log names the backend chosen.
    writeFileSync(join(cfg.log.dir, 'config.toml'), configToToml(cfg));
  }
  const peak = peakFlopsPerRank(backend.name, cfg.log.peakGflopsPerRank);
  const sequencesPerStep = dims.dp * cfg.train.batchSize;
  const tokensPerStep = sequencesPerStep * cfg.train.seqLen;
  const flopsPerStep = 3 * sequencesPerStep * modelFlops(cfg.model, cfg.train.seqLen, cfg.train.causal);
  logger?.info(
    `loongtrain: ${plural(dims.world, 'rank')} (${dims}; ${launcher.describe(dims.world)}), ${describeZero(cfg, dims)}, kernels ${backend.name} (${backend.detail}${cfg.train.kernels === 'auto' ? ', chosen by auto' : ''}), ${plural(docs.length, 'document')}${describeSplit(split, docs.length, evalOpts)}, ` +
      `${stream.length} ${tokenizer.name} tokens (${sampler.count} sequences of ${cfg.train.seqLen}), ${firstStep + 1 === stopAt ? `step ${stopAt}` : `steps ${firstStep + 1}–${stopAt}`}` +
      (resumeFrom !== undefined ? `, resuming from ${resumeFrom}` : '') +
      `; ${peak.description}`,
  );
  if (deleted.length > 0) logger?.info(`--overwrite: deleted ${deleted.length} earlier checkpoint${deleted.length === 1 ? '' : 's'} in ${cfg.save.dir} (${deleted.join(', ')})`);
  for (const note of [...notes, ...dataNotes]) logger?.info(note);
  if (cfg.log.tensorboard) logger?.enableTensorBoard(cfg.log.dir, resumeFrom !== undefined ? firstStep : undefined);

  const pending = new Map<number, RankStepReport[]>();
  const loggedStep = loggedStepCell();
  const steps: StepMetrics[] = [];
  const onReport = (_rank: number, msg: unknown): void => {
    const m = msg as RankStepReport | CheckpointReport;
    if (m.kind === 'checkpoint') {
      logger?.info(`checkpoint: step ${m.step} saved to ${m.path}`);
      return;
    }
    const list = pending.get(m.step) ?? [];
    list[_rank] = m;
    pending.set(m.step, list);
    if (list.filter((r) => r !== undefined).length === dims.world) {
      pending.delete(m.step);
      const metrics = combineStep(list, tokensPerStep, flopsPerStep, peak);
      steps.push(metrics);
      logger?.step(metrics, metrics.step === stopAt);
      markLogged(loggedStep, metrics.step);
    }
  };
  let stopSignal: NodeJS.Signals | undefined;
  const args: RankTrainArgs = {
    config: rankCfg, tokenizer: tokenizer.name, stream, docStarts, stopAt, ...(resumeFrom !== undefined ? { resumeFrom } : {}), ...(initParams !== undefined ? { initParams } : {}),
    ...(coordinator ? { loggedStep } : {}),
    ...(heldOut !== undefined ? { heldOut, valStream: sharedCopy(split.val.stream), valDocStarts: sharedCopy(split.val.docStarts) } : {}),
  };
  let results: RankTrainResult[];
  const traces: TraceEvent[][] = [];
  try {
    results = (await launcher.launch({
      world: dims.world,
      entry: new URL('./rank.js', import.meta.url).href,
      args,
      timeoutMs: cfg.train.commTimeoutMs,
      arenaBytes: cfg.train.arenaMiB * 2 ** 20,
      onReport,
      trace: cfg.log.trace,
      onTrace: (rank, events) => (traces[rank] = events),
      // Ctrl-C, SIGTERM (schedulers), mpirun's stop signals: every rank stops after its step and saves.
      onStop: (signal) => {
        stopSignal = signal;
        const what = signal === 'SIGCONT' ? 'SIGCONT (mpirun got Ctrl-C or SIGTERM and is ending the job)' : signal;
        logger?.info(`${what}: stopping after the current step and saving a checkpoint${launcher.backend === 'threads' ? ' (send it again to quit at once)' : ''}`);
      },
    })) as RankTrainResult[];
    if (cfg.log.trace && coordinator) {
      const path = join(cfg.log.dir, 'trace.json');
      const spans = writeTraceFile(path, traces);
      logger?.info(`trace: ${spans} spans of ${dims.world} rank${dims.world === 1 ? '' : 's'} written to ${path} (open in https://ui.perfetto.dev)`);
    }
  } finally {
    logger?.close();
  }
  const wallSeconds = (performance.now() - started) / 1000;
  const checkpoint = results[0]?.checkpoint;
  // Ranks end before stopAt only on a stop request; every process knows its own rank's result.
  const own = results.find((r) => r !== undefined);
  const interrupted = own !== undefined && firstStep + own.losses.length < stopAt;
  return { steps, wallSeconds, interrupted, coordinator, backend: launcher.backend, world: dims.world, ...(checkpoint !== undefined ? { checkpoint } : {}), ...(stopSignal !== undefined ? { stopSignal } : {}) };
}

/**
 * Run `check` of checkpoint `path`; when it finds the checkpoint damaged, say which earlier
 * checkpoints of its folder a run can continue from instead.
 * @throws the ConfigError of `check`, with that way on added.
 */
function withEarlierCheckpoints<T>(path: string, check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const earlier = listCheckpoints(dirname(path)).filter((c) => c.path !== path);
    if (earlier.length === 0) throw e;
    const last = earlier[earlier.length - 1]!;
    throw new ConfigError(`${e.message}\n  earlier checkpoints: ${earlier.map((c) => basename(c.path)).join(', ')}; continue from one with --resume ${last.path} --rollback (which moves the newer ones aside)`);
  }
}

/**
 * Where a resumed run goes on, checked before anything changes: a checkpoint from another
 * folder may start a new branch only in folders that hold no other run (else its metrics would
 * be cut and its checkpoints mixed with these); a resume from step `step` while save.dir holds
 * newer checkpoints forks the run, and pruning and a later --resume would pick the abandoned
 * ones, so it needs `rollback`.
 * @returns the newer checkpoints to move aside (empty unless `rollback`).
 * @throws ConfigError naming the folders or the newer steps and the ways on.
 */
function checkResumeTarget(resumeFrom: string, cfg: Config, step: number, rollback: boolean): Array<{ step: number; path: string }> {
  const saveDir = cfg.save.dir;
  if (resolve(dirname(resumeFrom)) !== resolve(saveDir)) {
    if (listCheckpoints(saveDir).length > 0 || holdsMetrics(cfg.log.dir)) {
      throw new ConfigError(
        `--resume ${resumeFrom} is a checkpoint of another folder than save.dir ${saveDir}, which (or log.dir ${cfg.log.dir}) already holds another run; ` +
          `continue that checkpoint's run in its own folder (--set run.dir=${dirname(dirname(resumeFrom))}), or branch into an empty run.dir`,
      );
    }
    return [];
  }
  const newer = newerCheckpoints(saveDir, step);
  if (newer.length > 0 && !rollback) {
    throw new ConfigError(
      `--resume from step ${step}: save.dir ${saveDir} holds newer checkpoints (step ${newer.map((c) => c.step).join(', ')}) that this run would fork from; ` +
        'resume from the newest (--resume alone), or pass --rollback to move the newer ones aside and continue from step ' + step,
    );
  }
  return newer;
}

/** --rollback: move the newer checkpoints, with a copy of the metrics they belong to, where --resume does not look. */
function rollBack(saveDir: string, newer: Array<{ step: number; path: string }>, metricsPath: string): string {
  const aside = moveAside(saveDir, newer);
  if (existsSync(metricsPath)) copyFileSync(metricsPath, join(aside, 'metrics.jsonl'));
  return `--rollback: moved checkpoint${newer.length === 1 ? '' : 's'} of step ${newer.map((c) => c.step).join(', ')} (and a copy of metrics.jsonl) to ${aside}`;
}

/** The ZeRO setting as the first log line names it, e.g. "zeroStage 3 over world (4 shards)". */
function describeZero(cfg: Config, dims: ParallelDims): string {
  const stage = cfg.optim.zeroStage as ZeroStage;
  if (stage === 0) return 'zeroStage 0 (model states replicated)';
  const group = cfg.optim.zeroShardGroup as ZeroShardGroup;
  return `zeroStage ${stage} over ${group} (${plural(zeroShardCount(dims, stage, group), 'shard')})`;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/**
 * Parameters, gradients and AdamW m and v take 16 bytes per element of the flat layout per rank
 * at ZeRO stage 0, less as optim.zeroStage shards them (docs/zero.md). Refuse an arena that
 * cannot even hold the largest shard's.
 * @throws ConfigError naming train.arenaMiB, the bytes needed and a size that fits.
 */
function checkArenaFitsModelStates(cfg: Config, dims: ParallelDims): void {
  const stage = cfg.optim.zeroStage as ZeroStage;
  const shards = zeroShardCount(dims, stage, cfg.optim.zeroShardGroup as ZeroShardGroup);
  const states = modelStateBytes(paramLayout(cfg.model).flatSize, largestShardSize(cfg.model, stage, shards), stage);
  const bytes = states.params + states.grads + states.optim;
  const arenaBytes = cfg.train.arenaMiB * 2 ** 20;
  if (bytes >= arenaBytes) {
    throw new ConfigError(
      `train.arenaMiB = ${cfg.train.arenaMiB} is too small: the model states alone (parameters, gradients, AdamW m and v) need ${(bytes / 2 ** 20).toFixed(1)} MiB per rank; ` +
        `use at least ${Math.ceil((2 * bytes) / 2 ** 20)} (leaving room for activations) or a smaller model`,
    );
  }
}

/** ", 5 of 500 held out for validation (…)" for the first log line: the split, how it was chosen, and when it is scored. */
function describeSplit(split: SplitStreams, documents: number, opts: ReturnType<typeof evalOptions>): string {
  if (split.validation.length === 0) {
    const why = opts.valFraction === 0 ? 'data.valFraction = 0' : `${plural(documents, 'document')}: data.valFraction needs at least 2`;
    return `, no held-out split (${why}${opts.evalEvery > 0 ? `, so train.evalEvery = ${opts.evalEvery} has nothing to score` : ''})`;
  }
  const when = opts.evalEvery > 0 ? `validation loss every ${plural(opts.evalEvery, 'step')} on ${plural(opts.evalSequences, 'sequence')}` : 'no validation during training (train.evalEvery = 0)';
  return `, ${split.validation.length} held out for validation (data.valFraction = ${opts.valFraction}, the lowest text hashes; ${split.val.stream.length} tokens training never sees; ${when})`;
}

/** The split as checkpoints record it (TrainerState.heldOut), or undefined when nothing is held out. */
function heldOutRecordOf(cfg: Config, split: SplitStreams, documents: number, sequences: number): HeldOutRecord | undefined {
  if (split.validation.length === 0) return undefined;
  const { source, path, maxFileMiB, invalidText } = cfg.data;
  return {
    valFraction: evalOptions(cfg).valFraction,
    source: { source, ...(path !== undefined ? { path: resolve(path) } : {}), ...(maxFileMiB !== undefined ? { maxFileMiB } : {}), ...(invalidText !== undefined ? { invalidText } : {}) },
    documents,
    validation: split.validation,
    tokens: split.val.stream.length,
    checksum: streamChecksum(split.val.stream),
    sequences,
  };
}

/**
 * A resumed run must train on the documents the checkpoint's run trained on: the same held-out split.
 * @throws ConfigError naming data.valFraction and both splits when they differ.
 */
function checkResumeSplit(recorded: readonly number[], now: readonly number[], path: string): void {
  if (recorded.length === now.length && recorded.every((d, i) => d === now[i])) return;
  const show = (v: readonly number[]): string => (v.length === 0 ? 'none' : `${plural(v.length, 'document')} [${v.slice(0, 8).join(', ')}${v.length > 8 ? ', …' : ''}]`);
  throw new ConfigError(
    `cannot resume from ${path}: the held-out split differs (checkpoint: ${show(recorded)}, this run: ${show(now)}), so training would see other documents; ` +
      'set data.valFraction to the checkpoint run\'s value (0 for a checkpoint written before held-out splits) and keep data.* unchanged',
  );
}

/** Run `make`; a ConfigError it throws (too few tokens for one sequence) says how much the split held out. */
function withSplitHint<T>(heldOut: number, make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (!(e instanceof ConfigError) || heldOut === 0) throw e;
    throw new ConfigError(`${e.message} (after holding out ${plural(heldOut, 'document')} for validation: lower data.valFraction, or set it to 0)`);
  }
}

/** `a` copied into a SharedArrayBuffer, so the ranks of this process read it without a copy each. */
function sharedCopy(a: Int32Array): Int32Array {
  const shared = new Int32Array(new SharedArrayBuffer(a.byteLength));
  shared.set(a);
  return shared;
}
