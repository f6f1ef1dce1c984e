#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { RankFailedError } from '../comm/launcher.js';
import { ConfigError } from '../errors.js';
import { loadConfig, suggest } from '../train/config.js';
import { benchLayouts, DEFAULT_LAYOUTS, formatBenchTable } from '../train/bench.js';
import { benchAttention, DEFAULT_ATTENTION_OPTIONS, formatAttentionTable } from '../train/bench-attention.js';
import { benchCluster, CLUSTER_BENCH_MODEL, DEFAULT_CLUSTER_BENCH, formatClusterTable } from '../train/bench-cluster.js';
import { benchDocuments, DEFAULT_DOCUMENTS_BENCH, formatDocumentsTable } from '../train/bench-documents.js';
import { benchKernels, DEFAULT_KERNEL_BENCH, formatKernelTable } from '../train/bench-kernels.js';
import { benchPlan, cpuComparisonLayouts, DEFAULT_PLAN_BENCH, formatPlanBenchTable } from '../plan/cpu.js';
import { benchPlanHosts, DEFAULT_HOSTS_PLAN, formatHostsPlanTable, hostsComparisonLayouts } from '../plan/hosts.js';
import { benchMemory, DEFAULT_MEMORY_BENCH, formatMemoryTable } from '../train/bench-memory.js';
import { benchTrain, DEFAULT_TRAIN_BENCH, formatTrainTable, TORCH_PEER } from '../train/bench-train.js';
import { train } from '../train/train.js';
import { evaluateCheckpoint } from '../train/eval.js';
import { exportHf } from '../hf/export.js';
import { importHf } from '../hf/import.js';
import { DEFAULT_MAX_NEW_TOKENS, numberFlag, runGenerate, type GenerateFlags } from './generate.js';
import { benchGenerate, DEFAULT_GENERATE_BENCH, formatGenerateTable } from '../infer/bench-generate.js';
import { DEFAULT_SAMPLING } from '../infer/sampling.js';
import { KERNEL_NAMES } from '../kernels/registry.js';
import { registerPlanCommand } from '../plan/cli.js';

const program = new Command();
program.name('loongtrain').description('Train LLaMA-style models on long sequences with 2D-Attention (LoongTrain, arXiv 2406.18485)').showHelpAfterError();
// dist/src/cli/main.js → the package's package.json.
const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
program.version(version, '-V, --version', 'print the version of loongtrain');

program
  .command('plot')
  .description('draw a run\'s metrics.jsonl as a PNG: loss (and validation loss), learning rate and throughput against the step')
  .argument('<run-dir>', 'the run\'s folder (its run.dir, or log.dir when set apart), which holds metrics.jsonl')
  .option('-o, --out <file>', 'PNG to write (default: <run-dir>/metrics.png)')
  .action(async (dir: string, opts: { out?: string }) => {
    // Loaded here: Vega takes half a second to import, which no other command should wait for.
    const { plotRun } = await import('../train/plot.js');
    const result = await plotRun(dir, opts.out);
    process.stderr.write(`plot: ${result.rows} steps (${result.panels.join(', ')}) drawn to ${result.path} (${result.width}×${result.height})\n`);
  });

program
  .command('train')
  .description('train a model as a TOML config says (docs/config.md): one worker thread per rank, or one process per rank under mpirun or srun')
  .option('-c, --config <file>', 'TOML config file (default: built-in defaults)')
  .option('-s, --set <key=value>', 'override a config key, e.g. --set parallel.cp=4 (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .addOption(new Option('-r, --resume [dir]', 'resume from the newest checkpoint in save.dir, or from the given checkpoint folder'))
  .option('--overwrite', 'on a fresh run, delete the checkpoints already in save.dir instead of refusing to start')
  .option('--stop-at <step>', 'stop after this step and write a checkpoint (resume later with --resume)', positiveInt('--stop-at'))
  .option('--rollback', 'with --resume from an older checkpoint: move the newer checkpoints of save.dir aside (into save.dir/rolled-back-…) instead of refusing')
  .action(async (opts: { config?: string; set: string[]; resume?: string | true; stopAt?: number; overwrite?: boolean; rollback?: boolean }) => {
    if (opts.resume !== undefined && opts.overwrite === true) {
      throw new ConfigError('--overwrite deletes the checkpoints of an earlier run before a fresh one; with --resume it would delete the checkpoint being resumed: use one of them');
    }
    if (opts.rollback === true && opts.resume === undefined) throw new ConfigError('--rollback applies to --resume from an older checkpoint; add --resume DIR');
    const cfg = loadConfig(opts.config, opts.set);
    const resume = opts.resume === true ? cfg.save.dir : opts.resume;
    // On --resume, the schedule keys not set here come from the checkpoint.
    const explicitKeys = new Set(opts.set.map((o) => o.slice(0, Math.max(0, o.indexOf('='))).trim()));
    const result = await train(cfg, {
      overwrite: opts.overwrite ?? false,
      rollback: opts.rollback ?? false,
      explicitKeys,
      ...(resume !== undefined ? { resume } : {}),
      ...(opts.stopAt !== undefined ? { stopAt: opts.stopAt } : {}),
    });
    // SIGUSR1 is a requested pause (exit 0, so mpirun and schedulers see success); else 128 + the signal's number, as a shell reports it.
    // A process that stopped because another rank of an mpi job was signalled stopped cleanly (exit 0, so it finalizes).
    const stopCode = result.stopSignal === undefined || result.stopSignal === 'SIGUSR1' ? 0 : result.stopSignal === 'SIGINT' ? 130 : 143;
    const first = result.steps[0];
    const last = result.steps[result.steps.length - 1];
    if (!result.coordinator) {
      if (result.interrupted) process.exitCode = stopCode;
    } else if (result.interrupted) {
      process.stderr.write(
        `interrupted after step ${last?.step ?? '(none)'}` +
          (result.checkpoint !== undefined ? `; checkpoint ${result.checkpoint}; continue with: ${continueCommand(process.argv.slice(3), result.backend, result.world)}\n` : '\n'),
      );
      process.exitCode = stopCode;
    } else if (first !== undefined && last !== undefined) {
      process.stderr.write(
        `done: steps ${first.step}–${last.step}, loss ${first.loss.toFixed(4)} → ${last.loss.toFixed(4)} in ${result.wallSeconds.toFixed(1)} s` +
          (result.checkpoint !== undefined ? `; checkpoint ${result.checkpoint}` : '') +
          `; metrics in ${cfg.log.dir}/metrics.jsonl\n`,
      );
    }
  });

program
  .command('eval')
  .description('loss and perplexity of a checkpoint on held-out text: --data, or the held-out split of its training source; scored like training (the checkpoint\'s seqLen windows and packing) by the same distributed forward, on one rank unless --set gives a layout')
  .option('--checkpoint <dir>', 'a checkpoint folder (step-NNNNNNNN), or a run folder (its newest checkpoint)')
  .option('--data <path>', 'a .txt file, a .jsonl file (field text) or a folder of them (default: the checkpoint\'s held-out split)')
  .option('--sequences <n>', 'score only the first n sequences (default: all of --data; the run\'s train.evalSequences for the held-out split)', positiveInt('--sequences'))
  .option('-s, --set <key=value>', 'layout and runtime: parallel.*, train.kernels, train.arenaMiB, train.backend, train.commTimeoutMs (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--json', 'print exactly one JSON object { "loss", "perplexity", "tokens" } on stdout')
  .action(async (opts: { checkpoint?: string; data?: string; sequences?: number; set: string[]; json?: boolean }) => {
    if (opts.checkpoint === undefined) throw new ConfigError('eval: --checkpoint is required: give a checkpoint folder (step-NNNNNNNN) or a run folder');
    const r = await evaluateCheckpoint({
      checkpoint: opts.checkpoint,
      set: opts.set,
      ...(opts.data !== undefined ? { data: opts.data } : {}),
      ...(opts.sequences !== undefined ? { sequences: opts.sequences } : {}),
    });
    if (!r.coordinator) return;
    if (opts.json === true) {
      process.stdout.write(JSON.stringify({ loss: r.loss, perplexity: r.perplexity, tokens: r.tokens }) + '\n');
    } else {
      process.stderr.write(`eval: ${r.checkpoint} (step ${r.step}) on ${r.scored}: ${r.sequences} sequence${r.sequences === 1 ? '' : 's'} on ${r.layout}\n`);
      process.stdout.write(`loss ${r.loss.toFixed(4)}  perplexity ${r.perplexity.toFixed(3)}  tokens ${r.tokens}\n`);
    }
  });

interface BenchFlags {
  config?: string;
  set: string[];
  steps?: number;
  warmup?: number;
  reps?: number;
  seqLen?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  rates?: string[];
  ranksPerHost?: number[];
  seqLens?: number[];
  rounds?: number;
  hosts?: boolean;
}

/** The flags of the one-layer suites (attention, documents) over the suite's defaults. */
function layerFlags<T extends { seqLen: number; heads: number; kvHeads: number; headDim: number; warmup: number; reps: number }>(d: T, opts: BenchFlags): T {
  return {
    ...d,
    seqLen: opts.seqLen ?? d.seqLen,
    heads: opts.heads ?? d.heads,
    kvHeads: opts.kvHeads ?? d.kvHeads,
    headDim: opts.headDim ?? d.headDim,
    warmup: opts.warmup ?? d.warmup,
    reps: opts.reps ?? d.reps,
  };
}

const FLAG_NAMES: Record<keyof BenchFlags, string> = {
  config: '--config', set: '--set', steps: '--steps', warmup: '--warmup', reps: '--reps',
  seqLen: '--seq-len', heads: '--heads', kvHeads: '--kv-heads', headDim: '--head-dim',
  rates: '--rates', ranksPerHost: '--ranks-per-host', seqLens: '--seq-lens', rounds: '--rounds', hosts: '--hosts',
};

/** The flags each suite reads; a flag given to a suite that does not read it is an error rather than silently ignored. */
const SUITE_FLAGS = {
  layouts: ['config', 'set', 'steps', 'warmup'],
  attention: ['warmup', 'reps', 'seqLen', 'heads', 'kvHeads', 'headDim'],
  documents: ['warmup', 'reps', 'seqLen', 'heads', 'kvHeads', 'headDim'],
  kernels: ['config', 'set', 'steps', 'warmup', 'reps'],
  memory: ['config', 'set', 'steps', 'warmup', 'seqLen'],
  cluster: ['config', 'set', 'steps', 'warmup', 'rates', 'ranksPerHost'],
  generate: ['warmup', 'reps'],
  train: ['steps', 'seqLens', 'rounds'],
  plan: ['config', 'set', 'steps', 'warmup', 'hosts', 'rates', 'rounds'],
} as const satisfies Record<string, ReadonlyArray<keyof BenchFlags>>;
type Suite = keyof typeof SUITE_FLAGS;

const num = (v: string): number => Number(v);

/** A commander parser for a positive integer flag: a clear error instead of NaN downstream. */
function positiveInt(flag: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${flag} ${JSON.stringify(v)} is invalid: it must be a positive integer`);
    return n;
  };
}

/**
 * The command that continues a stopped run: this one without the flags of a fresh start or of
 * the checkpoint it resumed, plus --resume (the newest checkpoint); under mpirun with its -n.
 */
function continueCommand(args: readonly string[], backend: string, world: number): string {
  const kept: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--overwrite' || a === '--rollback') continue;
    if (a === '--resume' || a === '-r') {
      if (args[i + 1] !== undefined && !args[i + 1]!.startsWith('-')) i++;
      continue;
    }
    if (a.startsWith('--resume=')) continue;
    kept.push(a);
  }
  return `${backend === 'mpi' ? `mpirun -n ${world} ` : ''}npx loongtrain train ${kept.join(' ')} --resume`;
}

/** Failures a user fixes through the config: their message says what to change, so no stack trace. */
const USER_FIXABLE = new Set(['ArenaExhaustedError', 'CheckpointWriteError', 'CommTimeoutError', 'ConfigError', 'MetricsWriteError', 'NonFiniteTensorError', 'SafetensorsError', 'TrainingDivergedError']);

/** The first error along `e`'s cause chain that a user fixes (a callback's error arrives wrapped). */
function userFixable(e: unknown): Error | undefined {
  for (let x = e; x instanceof Error; x = x.cause) if (USER_FIXABLE.has(x.name) && !(x instanceof RankFailedError)) return x;
  return undefined;
}

program
  .command('bench')
  .description('benchmark a suite (docs/bench.md); JSON on stdout, a table on stderr')
  .argument('[suite]', '"layouts": training steps of a config under each layout (1 rank, Ulysses, ring, 2D); "attention": one TwoDAttention layer under the ulysses, ring, usp and loongtrain presets at sp 4 and 8; "documents": one TwoDAttention layer on packed documents (many short, 2 long at the end), zigzag vs balanced sharding, ring (cp 4) and usp (hp 2 × cp 2), with one causal document as reference; "kernels": GEMM, attention block and training-step speed of each kernel backend against the peak (docs/kernels-blas.md); "memory": peak bytes per rank and step time for sp 1, 2, 4, 8 × checkpoint policy, predicted vs measured, and the longest trainable sequence (docs/memory.md); "cluster": the presets and placements on 2 test hosts over Open MPI with the link between them unshaped and shaped (root, iproute2, Open MPI; docs/bench.md); "generate": ms per new token generating 64, 128, 256 tokens with and without the KV cache on a small model; "train": the issue-11 model (dim 256, 4 layers, 8/2 heads, ffn 688, blas) on 2 ranks (hp 2) at seqLen 4096 and 8192, step time broken down into attention, GEMM and elementwise kernels, outside kernels and communication, against the PyTorch peer (chunked and naive attention) alternating; "plan": the planner\'s predicted step time on a CPU profile measured here vs the measured step, ulysses/ring/usp/loongtrain at sp 2 and 4 on the threads backend, or with --hosts on 2 test hosts over Open MPI (1 and 2 ranks per host, link shaped by --rates; root, iproute2, Open MPI) (docs/plan.md)', 'layouts')
  .option('-c, --config <file>', 'layouts, kernels, memory: TOML config file (default: built-in defaults; kernels, memory: configs/demo.toml)')
  .option('-s, --set <key=value>', 'layouts, kernels, memory: override a config key (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--steps <n>', `layouts, kernels, memory, train: training steps per layout, backend or run (default 8; memory ${DEFAULT_MEMORY_BENCH.steps}; train ${DEFAULT_TRAIN_BENCH.steps} per round, the first left out)`, num)
  .option('--warmup <n>', `leading steps (layouts, default 2) or runs (attention, documents, generate, default 1) left out of the medians; kernels: both (default ${DEFAULT_KERNEL_BENCH.warmup})`, num)
  .option('--reps <n>', `attention, documents, kernels, generate: measured runs per preset, case or kernel case (default ${DEFAULT_ATTENTION_OPTIONS.reps}, kernels ${DEFAULT_KERNEL_BENCH.reps}, generate ${DEFAULT_GENERATE_BENCH.reps})`, num)
  .option('--seq-len <n>', `attention, documents, memory: sequence length S (default ${DEFAULT_ATTENTION_OPTIONS.seqLen}, documents ${DEFAULT_DOCUMENTS_BENCH.seqLen}, memory ${DEFAULT_MEMORY_BENCH.seqLen}; a multiple of 16; documents: of ${4 * DEFAULT_DOCUMENTS_BENCH.balanceChunks}, at least 256)`, num)
  .option('--heads <n>', `attention, documents: query heads (default ${DEFAULT_ATTENTION_OPTIONS.heads})`, num)
  .option('--kv-heads <n>', `attention, documents: KV heads (default ${DEFAULT_ATTENTION_OPTIONS.kvHeads}, documents ${DEFAULT_DOCUMENTS_BENCH.kvHeads})`, num)
  .option('--head-dim <n>', `attention, documents: head dimension (default ${DEFAULT_ATTENTION_OPTIONS.headDim}, documents ${DEFAULT_DOCUMENTS_BENCH.headDim})`, num)
  .option('--hosts', `plan: compare on 2 test hosts over Open MPI instead of the threads backend (default link ${DEFAULT_HOSTS_PLAN.rates.join(',')}; root, iproute2, Open MPI)`)
  .option('--rates <list>', `cluster, plan --hosts: link rates between the 2 test hosts, comma-separated tc rates or "unshaped" (default ${DEFAULT_CLUSTER_BENCH.rates.join(',')}; plan --hosts ${DEFAULT_HOSTS_PLAN.rates.join(',')})`, (v: string) => v.split(',').map((x) => x.trim()).filter((x) => x !== ''))
  .option('--ranks-per-host <list>', `cluster: ranks on each of the 2 hosts, comma-separated (default ${DEFAULT_CLUSTER_BENCH.ranksPerHost.join(',')})`, (v: string) => v.split(',').map(Number))
  .option('--seq-lens <list>', `train: sequence lengths, comma-separated (default ${DEFAULT_TRAIN_BENCH.seqLens.join(',')})`, (v: string) => v.split(',').map((x) => Number(x.trim())))
  .option('--rounds <n>', `train: rounds per sequence length of ours → torch chunked → torch naive (default ${DEFAULT_TRAIN_BENCH.rounds}); plan (threads): rounds over the layouts, each layout's rates measured right before its run (default ${DEFAULT_PLAN_BENCH.rounds})`, num)
  .action(async (suite: string, opts: BenchFlags) => {
    if (!Object.hasOwn(SUITE_FLAGS, suite)) {
      throw new ConfigError(`bench suite ${JSON.stringify(suite)} is unknown${suggest(suite, Object.keys(SUITE_FLAGS))}: use ${Object.keys(SUITE_FLAGS).map((n) => `"${n}"`).join(', ')}`);
    }
    const reads: ReadonlyArray<keyof BenchFlags> = SUITE_FLAGS[suite as Suite];
    const stray = (Object.keys(FLAG_NAMES) as Array<keyof BenchFlags>)
      .filter((key) => !reads.includes(key) && (key === 'set' ? opts.set.length > 0 : opts[key] !== undefined))
      .map((key) => FLAG_NAMES[key]);
    if (stray.length > 0) {
      throw new ConfigError(`bench ${suite}: ${stray.join(', ')} ${stray.length === 1 ? 'does' : 'do'} not apply to this suite; it reads ${reads.map((k) => FLAG_NAMES[k]).join(', ')}`);
    }
    if (suite === 'kernels') {
      const d = DEFAULT_KERNEL_BENCH;
      const steps = opts.steps ?? d.steps;
      const warmup = opts.warmup ?? d.warmup;
      const reps = opts.reps ?? d.reps;
      if (![steps, warmup, reps].every(Number.isInteger) || warmup < 0 || reps < 1 || steps <= warmup) {
        throw new ConfigError(`--steps ${steps}, --warmup ${warmup} and --reps ${reps} are invalid: use integers with 0 ≤ warmup < steps and reps ≥ 1`);
      }
      const config = loadConfig(opts.config ?? fileURLToPath(new URL('../../../configs/demo.toml', import.meta.url)), opts.set);
      const report = await benchKernels({ config, steps, warmup, reps });
      process.stderr.write(formatKernelTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    if (suite === 'cluster') {
      const d = DEFAULT_CLUSTER_BENCH;
      const config = loadConfig(opts.config ?? fileURLToPath(new URL('../../../configs/demo.toml', import.meta.url)), [...(opts.config === undefined ? CLUSTER_BENCH_MODEL : []), ...opts.set]);
      const report = await benchCluster({ config, rates: opts.rates ?? d.rates, ranksPerHost: opts.ranksPerHost ?? d.ranksPerHost, steps: opts.steps ?? d.steps, warmup: opts.warmup ?? d.warmup });
      process.stderr.write(formatClusterTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    if (suite === 'memory') {
      const d = DEFAULT_MEMORY_BENCH;
      const steps = opts.steps ?? d.steps;
      const warmup = opts.warmup ?? d.warmup;
      const seqLen = opts.seqLen ?? d.seqLen;
      if (![steps, warmup, seqLen].every(Number.isInteger) || warmup < 0 || steps <= warmup || seqLen < 16 || seqLen % 16 !== 0) {
        throw new ConfigError(`--steps ${steps}, --warmup ${warmup} and --seq-len ${seqLen} are invalid: use integers with 0 ≤ warmup < steps and a sequence length that is a positive multiple of 16 (2 · sp for sp = 8)`);
      }
      const config = loadConfig(opts.config ?? fileURLToPath(new URL('../../../configs/demo.toml', import.meta.url)), opts.set);
      const report = await benchMemory({ config, seqLen, steps, warmup, verifyLimitMs: d.verifyLimitMs });
      process.stderr.write(formatMemoryTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    if (suite === 'plan') {
      const d = DEFAULT_PLAN_BENCH;
      const steps = opts.steps ?? d.steps;
      const warmup = opts.warmup ?? d.warmup;
      if (!Number.isInteger(steps) || !Number.isInteger(warmup) || warmup < 0 || steps <= warmup) throw new ConfigError(`--steps ${steps} and --warmup ${warmup} are invalid: use integers with 0 ≤ warmup < steps`);
      const config = loadConfig(opts.config ?? fileURLToPath(new URL('../../../configs/demo.toml', import.meta.url)), opts.set);
      if (opts.hosts === true) {
        if (opts.rounds !== undefined) throw new ConfigError('bench plan: --rounds applies only without --hosts (the threads comparison)');
        const report = await benchPlanHosts(config, hostsComparisonLayouts(), { rates: opts.rates ?? DEFAULT_HOSTS_PLAN.rates, steps, warmup });
        process.stderr.write(formatHostsPlanTable(report) + '\n');
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        return;
      }
      if (opts.rates !== undefined) throw new ConfigError('bench plan: --rates applies only with --hosts (the link between the 2 test hosts)');
      const report = await benchPlan(config, cpuComparisonLayouts(), steps, warmup, opts.rounds ?? d.rounds);
      process.stderr.write(formatPlanBenchTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    if (suite === 'attention') {
      const d = DEFAULT_ATTENTION_OPTIONS;
      const report = await benchAttention(layerFlags(d, opts));
      process.stderr.write(formatAttentionTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    if (suite === 'generate') {
      const d = DEFAULT_GENERATE_BENCH;
      const warmup = opts.warmup ?? d.warmup;
      const reps = opts.reps ?? d.reps;
      if (!Number.isInteger(warmup) || !Number.isInteger(reps) || warmup < 0 || reps < 1) throw new ConfigError(`--warmup ${warmup} and --reps ${reps} are invalid: use integers with warmup ≥ 0 and reps ≥ 1`);
      const report = benchGenerate({ ...d, warmup, reps });
      process.stderr.write(formatGenerateTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    if (suite === 'train') {
      const d = DEFAULT_TRAIN_BENCH;
      const report = await benchTrain({ ...d, seqLens: opts.seqLens ?? d.seqLens, steps: opts.steps ?? d.steps, rounds: opts.rounds ?? d.rounds, peer: TORCH_PEER });
      process.stderr.write(formatTrainTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    if (suite === 'documents') {
      const d = DEFAULT_DOCUMENTS_BENCH;
      const report = await benchDocuments(layerFlags(d, opts));
      process.stderr.write(formatDocumentsTable(report) + '\n');
      process.stdout.write(JSON.stringify(report, null, 2) + '\n');
      return;
    }
    const steps = opts.steps ?? 8;
    const warmup = opts.warmup ?? 2;
    if (!Number.isInteger(steps) || !Number.isInteger(warmup) || warmup < 0 || steps <= warmup) {
      throw new ConfigError(`--steps ${steps} and --warmup ${warmup} are invalid: use integers with 0 ≤ warmup < steps`);
    }
    const cfg = loadConfig(opts.config, opts.set);
    const report = await benchLayouts(cfg, DEFAULT_LAYOUTS, steps, warmup);
    process.stderr.write(formatBenchTable(report) + '\n');
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  });

program
  .command('export')
  .description('write a checkpoint in another format: --format hf gives a Hugging Face LlamaForCausalLM folder (config.json, model.safetensors, tokenizer files for gpt2; docs/model.md "Hugging Face names and RoPE pairing")')
  .requiredOption('--checkpoint <dir>', 'a checkpoint folder (step-NNNNNNNN), or a run or checkpoint folder (its newest checkpoint)')
  .requiredOption('--out <dir>', 'folder to write')
  .option('--format <format>', 'output format: "hf"', 'hf')
  .option('--dtype <dtype>', 'tensor dtype: "f32" or "bf16" (rounded to nearest even)', 'f32')
  .action((opts: { checkpoint: string; out: string; format: string; dtype: string }) => {
    if (opts.format !== 'hf') throw new ConfigError(`--format ${JSON.stringify(opts.format)} is invalid: use "hf"`);
    const r = exportHf(opts.checkpoint, opts.out, { dtype: opts.dtype });
    process.stderr.write(`exported ${r.checkpoint} → ${r.out} (${r.tensors} tensors, ${r.dtype}): ${r.files.join(', ')}\n`);
    if (r.tokenizerNote !== undefined) process.stderr.write(`note: ${r.tokenizerNote}\n`);
  });

program
  .command('import')
  .description('read a Hugging Face LLaMA folder (model.safetensors or shards with model.safetensors.index.json; F32/F16/BF16) into a step-0 checkpoint for train --resume, generate and eval')
  .requiredOption('--from <dir>', 'the Hugging Face model folder (config.json + safetensors)')
  .requiredOption('--out <dir>', 'checkpoint folder to create (the checkpoint goes to <dir>/step-00000000)')
  .option('--tokenizer <name>', 'our tokenizer for the model: "byte" or "gpt2" (default: config.json\'s loongtrain_tokenizer, written by export)')
  .option('-c, --config <file>', 'the training config the checkpoint will be resumed with (its seqLen, seed, batch, dp, packing are recorded; the model comes from config.json)')
  .option('-s, --set <key=value>', 'override a config key (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .action((opts: { from: string; out: string; tokenizer?: string; config?: string; set: string[] }) => {
    const r = importHf(opts.from, opts.out, { set: opts.set, ...(opts.tokenizer !== undefined ? { tokenizer: opts.tokenizer } : {}), ...(opts.config !== undefined ? { config: opts.config } : {}) });
    process.stderr.write(`imported ${opts.from} → ${r.checkpoint} (tokenizer ${r.tokenizer}, train.seqLen ${r.seqLen}); a config that resumes it needs\n${r.modelToml}\n`);
  });

program
  .command('generate')
  .description('sample text from a trained checkpoint, streamed to stdout as it is sampled (KV cache; greedy at --temperature 0); a tokens/s line on stderr')
  .option('--checkpoint <dir>', 'a checkpoint folder (step-NNNNNNNN), or a run or checkpoint folder (its newest checkpoint); required')
  .option('--prompt <text>', 'text to continue (empty: start a new document from the separator token)', '')
  .option('--max-new-tokens <n>', `tokens to sample at most; generation also stops at the tokenizer's end token and when the context is full`, numberFlag('--max-new-tokens'), DEFAULT_MAX_NEW_TOKENS)
  .option('--temperature <t>', `softmax temperature, ≥ 0; 0 = greedy (the most likely token; top-k and top-p then do nothing) (default ${DEFAULT_SAMPLING.temperature})`, numberFlag('--temperature'))
  .option('--top-k <k>', `sample only among the k most likely tokens; 0 = all (default ${DEFAULT_SAMPLING.topK})`, numberFlag('--top-k'))
  .option('--top-p <p>', `nucleus: sample only among the most likely tokens holding probability p, in (0, 1]; 1 = all (default ${DEFAULT_SAMPLING.topP})`, numberFlag('--top-p'))
  .option('--seed <s>', `seed of the sampling, an integer in [0, 2^32); equal seeds give equal text (default ${DEFAULT_SAMPLING.seed})`, numberFlag('--seed'))
  .option('--context <n>', "tokens the KV cache holds, prompt and generated together (default: the checkpoint's train.seqLen); a longer prompt is an error", numberFlag('--context'))
  .option('--kernels <name>', `kernel backend: ${KERNEL_NAMES.map((n) => `"${n}"`).join(', ')} (auto: blas, else wasm, else reference)`, 'auto')
  .option('--no-echo', 'do not write the prompt before the generated text')
  .action((opts: GenerateFlags) => {
    runGenerate(opts, { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) });
  });

// `loongtrain plan` (docs/plan.md): the layout for a GPU cluster from a calibrated cost model.
registerPlanCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`loongtrain: ${e.message}\n`);
    process.exitCode = 2;
  } else if (!(e instanceof RankFailedError) && userFixable(e) !== undefined) {
    process.stderr.write(`loongtrain: ${userFixable(e)!.message}\n`);
    process.exitCode = 1;
  } else if (e instanceof RankFailedError && e.cause instanceof Error && e.cause.name === 'TrainingDivergedError') {
    // Every rank sees the same global loss: the rank that reported first is no clue.
    process.stderr.write(`loongtrain: ${e.cause.message}\n`);
    process.exitCode = 1;
  } else if (e instanceof RankFailedError) {
    const cause = e.cause instanceof Error ? e.cause : undefined;
    const hint = cause?.name === 'CommTimeoutError' ? '\n  (if the job is only slow, not stuck, raise train.commTimeoutMs)' : '';
    const stack = cause === undefined || USER_FIXABLE.has(cause.name) ? '' : `\nrank ${e.rank} stack:\n${cause.stack ?? '(none)'}`;
    process.stderr.write(`loongtrain: ${e.message}${hint}${stack}\n`);
    process.exitCode = 1;
  } else {
    throw e;
  }
}
