#!/usr/bin/env node
import { Command, Option } from 'commander';
import { RankFailedError } from '../comm/threads/launch.js';
import { ConfigError } from '../errors.js';
import { loadConfig } from '../train/config.js';
import { benchLayouts, DEFAULT_LAYOUTS, formatBenchTable } from '../train/bench.js';
import { train } from '../train/train.js';

const program = new Command();
program.name('loongtrain').description('Train LLaMA-style models on long sequences with 2D-Attention (LoongTrain, arXiv 2406.18485)').showHelpAfterError();

program
  .command('train')
  .description('train a model as a TOML config says (docs/config.md), one worker thread per rank')
  .option('-c, --config <file>', 'TOML config file (default: built-in defaults)')
  .option('-s, --set <key=value>', 'override a config key, e.g. --set parallel.cp=4 (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .addOption(new Option('-r, --resume [dir]', 'resume from the newest checkpoint in checkpoint.dir, or from the given checkpoint folder'))
  .option('--overwrite', 'on a fresh run, delete the checkpoints already in checkpoint.dir instead of refusing to start')
  .option('--stop-at <step>', 'stop after this step and write a checkpoint (resume later with --resume)', (v: string) => Number(v))
  .action(async (opts: { config?: string; set: string[]; resume?: string | true; stopAt?: number; overwrite?: boolean }) => {
    const cfg = loadConfig(opts.config, opts.set);
    const resume = opts.resume === true ? cfg.checkpoint.dir : opts.resume;
    const result = await train(cfg, { overwrite: opts.overwrite ?? false, ...(resume !== undefined ? { resume } : {}), ...(opts.stopAt !== undefined ? { stopAt: opts.stopAt } : {}) });
    const first = result.steps[0];
    const last = result.steps[result.steps.length - 1];
    if (first !== undefined && last !== undefined) {
      process.stderr.write(
        `done: steps ${first.step}–${last.step}, loss ${first.loss.toFixed(4)} → ${last.loss.toFixed(4)} in ${result.wallSeconds.toFixed(1)} s` +
          (result.checkpoint !== undefined ? `; checkpoint ${result.checkpoint}` : '') +
          `; metrics in ${cfg.log.dir}/metrics.jsonl\n`,
      );
    }
  });

program
  .command('bench')
  .description('benchmark training steps of a config under each layout (1 rank, Ulysses, ring, 2D); JSON on stdout, a table on stderr')
  .argument('[suite]', 'what to benchmark: layouts', 'layouts')
  .option('-c, --config <file>', 'TOML config file (default: built-in defaults)')
  .option('-s, --set <key=value>', 'override a config key (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--steps <n>', 'steps per layout', (v: string) => Number(v), 8)
  .option('--warmup <n>', 'leading steps left out of the medians', (v: string) => Number(v), 2)
  .action(async (suite: string, opts: { config?: string; set: string[]; steps: number; warmup: number }) => {
    if (suite !== 'layouts') throw new ConfigError(`bench suite ${JSON.stringify(suite)} is unknown: use "layouts"`);
    if (!Number.isInteger(opts.steps) || !Number.isInteger(opts.warmup) || opts.warmup < 0 || opts.steps <= opts.warmup) {
      throw new ConfigError(`--steps ${opts.steps} and --warmup ${opts.warmup} are invalid: use integers with 0 ≤ warmup < steps`);
    }
    const cfg = loadConfig(opts.config, opts.set);
    const report = await benchLayouts(cfg, DEFAULT_LAYOUTS, opts.steps, opts.warmup);
    process.stderr.write(formatBenchTable(report) + '\n');
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`loongtrain: ${e.message}\n`);
    process.exitCode = 2;
  } else if (e instanceof RankFailedError) {
    process.stderr.write(`loongtrain: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  } else {
    throw e;
  }
}
