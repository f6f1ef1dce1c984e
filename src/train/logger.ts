import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { MetricsFile } from './metrics-file.js';
import type { StepMetrics } from './metrics.js';
import { removeEventFiles, TensorBoardWriter } from './tensorboard.js';

export type ProgressMode = 'auto' | 'bar' | 'plain' | 'none';

/**
 * Shows training progress and records metrics: a progress bar on a terminal (`bar`), one plain
 * line per logged step otherwise (`plain`), or no step lines (`none`; the run's own lines — its
 * first line, checkpoints, warnings — still show); `auto` picks `bar` when stderr is a terminal.
 * Every step is appended to `<log.dir>/metrics.jsonl` (src/train/metrics-file.ts).
 */
export class TrainLogger {
  private readonly bar: cliProgress.SingleBar | undefined;
  private readonly mode: Exclude<ProgressMode, 'auto'>;
  private readonly metrics: MetricsFile;
  private readonly every: number;
  private tensorboard: TensorBoardWriter | undefined;

  /**
   * @param every plain lines every this many steps (log.every); undefined: every step on a
   *   terminal, about 100 lines over the run otherwise (a log file, a CI job).
   * @param resumed continue an existing metrics file: rows after `firstStep` (steps run after the
   *   checkpoint the run resumes from, e.g. before a crash) are dropped so each step appears once.
   * @throws MetricsWriteError when the metrics file cannot be written.
   */
  constructor(
    logDir: string,
    mode: ProgressMode,
    every: number | undefined,
    firstStep: number,
    lastStep: number,
    resumed: boolean,
    private readonly out: (line: string) => void = (line) => process.stderr.write(line + '\n'),
  ) {
    this.mode = mode === 'auto' ? (process.stderr.isTTY ? 'bar' : 'plain') : mode;
    this.every = every ?? (process.stderr.isTTY ? 1 : Math.max(1, Math.floor((lastStep - firstStep) / 100)));
    mkdirSync(logDir, { recursive: true });
    this.metrics = new MetricsFile(join(logDir, 'metrics.jsonl'), resumed ? firstStep : undefined, (line) => this.info(line));
    if (this.mode === 'bar') {
      this.bar = new cliProgress.SingleBar(
        { format: 'step {value}/{total} [{bar}] loss {loss} | lr {lr} | {tps} tok/s | TGS {tgs} | MFU {mfu} | eta {eta_formatted}', hideCursor: true, stream: process.stderr },
        cliProgress.Presets.shades_classic,
      );
      this.barTotal = lastStep;
      this.barValue = firstStep;
    }
  }

  /**
   * Also write each step to a TensorBoard event file in `logDir` (log.tensorboard): a new file
   * per run; a fresh run first removes the event files of the run whose metrics it replaces.
   * @param resumedAt the checkpoint step of a resumed run, undefined for a fresh one.
   * @throws MetricsWriteError when the file cannot be created.
   */
  enableTensorBoard(logDir: string, resumedAt: number | undefined): void {
    if (resumedAt === undefined) removeEventFiles(logDir);
    this.tensorboard = new TensorBoardWriter(logDir, resumedAt, (line) => this.info(line));
    this.info(`tensorboard: events in ${this.tensorboard.path} (tensorboard --logdir ${logDir})`);
  }

  /** Print a line (above the bar when one is shown). */
  info(line: string): void {
    if (this.barShown) this.bar!.stop();
    this.out(line);
    if (this.barShown) this.bar!.start(this.barTotal, this.barValue, this.lastPayload);
  }

  // The bar appears with the first step, so lines printed before it are not interleaved with an empty bar.
  private barShown = false;
  private barTotal = 0;
  private barValue = 0;
  private lastPayload: Record<string, string> = {};

  /** Record a step, and show it as the mode says. @throws MetricsWriteError when the row cannot be appended. */
  step(m: StepMetrics, last: boolean): void {
    this.metrics.append(m);
    this.tensorboard?.write(m);
    const payload = {
      loss: m.loss.toFixed(4),
      lr: m.lr.toExponential(2),
      tps: m.tokensPerSec.toFixed(0),
      tgs: m.tgs.toFixed(0),
      mfu: `${(m.mfu * 100).toFixed(2)}%`,
    };
    if (this.bar !== undefined) {
      this.barValue = m.step;
      this.lastPayload = payload;
      if (this.barShown) this.bar.update(m.step, payload);
      else this.bar.start(this.barTotal, m.step, payload);
      if (m.valLoss !== undefined) this.info(`step ${m.step}: validation loss ${m.valLoss.toFixed(4)} (perplexity ${m.valPerplexity!.toFixed(2)})`);
      this.barShown = true;
    } else if (this.mode === 'plain' && (m.step % this.every === 0 || m.step === 1 || last || m.skipped || m.valLoss !== undefined)) {
      const peakMiB = Math.max(...m.peakBytes) / 2 ** 20;
      const catMiB = (c: 'saved' | 'activations'): string => (Math.max(...m.peakBytesByCategory[c]) / 2 ** 20).toFixed(1);
      const wait = Math.max(...m.commWaitMs);
      const skipped = m.skipped ? ' | skipped (not finite: no update)' : '';
      // One rank, or one causal document under zigzag, is balanced by construction: only an imbalance is news.
      const imbalance = m.attentionImbalance > 1.0005 ? ` | attn work max/mean ${m.attentionImbalance.toFixed(2)}` : '';
      this.out(
        `step ${m.step}${skipped} | loss ${payload.loss} | lr ${payload.lr} | grad norm ${m.gradNorm.toFixed(3)} | ${m.stepMs.toFixed(0)} ms | ` +
          `${payload.tps} tok/s | TGS ${payload.tgs} | MFU ${payload.mfu} | peak ${peakMiB.toFixed(1)} MiB/rank (saved ${catMiB('saved')}, activations ${catMiB('activations')}) | comm wait ${wait.toFixed(0)} ms${imbalance}` +
          (m.valLoss !== undefined ? ` | val loss ${m.valLoss.toFixed(4)} (ppl ${m.valPerplexity!.toFixed(2)})` : ''),
      );
    }
  }

  close(): void {
    this.bar?.stop();
    this.metrics.close();
    this.tensorboard?.close();
  }
}
