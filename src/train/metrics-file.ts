import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { writeFileAtomic } from './atomic-write.js';

/** A metrics row could not be appended (a full disk, a vanished folder); the file was cut back to its last whole row. */
export class MetricsWriteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetricsWriteError';
  }
}

/**
 * `<log.dir>/metrics.jsonl`, one JSON object per step, never torn: each row is appended with
 * one write of the whole line, and a write that fails part-way is cut back (ftruncate) to the
 * rows before it, so a reader never sees half a row. Non-finite numbers, which JSON cannot hold,
 * are written as null and named in the row's `nonFinite` list.
 */
export class MetricsFile {
  private readonly fd: number;
  private size: number;

  /**
   * @param keepUpTo a resumed run's first step − 1: rows of later steps (run after the checkpoint,
   *   e.g. before a crash) are dropped so each step appears once; undefined starts the file empty.
   * @param warn told about a torn last line dropped from an existing file.
   * @throws MetricsWriteError naming the file when it cannot be opened or rewritten.
   */
  constructor(
    readonly path: string,
    keepUpTo: number | undefined,
    warn: (line: string) => void,
  ) {
    try {
      writeFileAtomic(path, keepUpTo === undefined ? '' : keptRows(path, keepUpTo, warn));
      this.fd = openSync(path, 'a');
      this.size = fstatSync(this.fd).size;
    } catch (e) {
      if (e instanceof MetricsWriteError) throw e;
      throw new MetricsWriteError(`cannot write ${path}: ${(e as Error).message}; check log.dir (free space, permissions)`);
    }
  }

  /** @throws MetricsWriteError naming the file and the system error; the file then ends with the previous row. */
  append(row: object): void {
    const line = Buffer.from(rowJson(row) + '\n', 'utf8');
    try {
      let written = 0;
      while (written < line.length) written += writeSync(this.fd, line, written, line.length - written);
      this.size += line.length;
    } catch (e) {
      try {
        ftruncateSync(this.fd, this.size);
      } catch {
        // The cut can fail too (the folder is gone): the reader's torn-tail check still drops it.
      }
      throw new MetricsWriteError(`cannot append to ${this.path}: ${(e as Error).message}; the file keeps every row up to the previous step; free space in log.dir or choose another one`);
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * Check, without changing it, that a resumed run can continue the metrics file at `path`.
 * @throws MetricsWriteError naming the file and line of a malformed row that is not the last.
 */
export function checkMetricsFile(path: string, keepUpTo: number): void {
  keptRows(path, keepUpTo, () => {});
}

/** JSON of a row with non-finite numbers as null, listed under `nonFinite`. */
function rowJson(row: object): string {
  const nonFinite = Object.entries(row)
    .filter(([, v]) => typeof v === 'number' && !Number.isFinite(v))
    .map(([k]) => k);
  return JSON.stringify(nonFinite.length === 0 ? row : { ...row, nonFinite });
}

/**
 * The rows of an existing metrics file with step ≤ `lastStep`, as text (later rows are dropped
 * with a warning: they belong to steps that will run again). A last line that is not
 * whole JSON (a write cut by a kill or a full disk) is dropped with a warning; a bad line before
 * the last is damage this file did not make, and stops the run naming its line number.
 * @throws MetricsWriteError naming the file and line of a malformed row that is not the last.
 */
function keptRows(path: string, lastStep: number, warn: (line: string) => void): string {
  if (!existsSync(path)) return '';
  const lines = readFileSync(path, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const kept: string[] = [];
  const dropped: number[] = [];
  lines.forEach((line, i) => {
    let step: unknown;
    try {
      step = (JSON.parse(line) as { step?: unknown }).step;
    } catch {
      if (i === lines.length - 1) {
        warn(`metrics: dropped a torn last line of ${path} (${line.length} characters, from an interrupted write)`);
        return;
      }
      throw new MetricsWriteError(`${path} line ${i + 1} is not a JSON metrics row; move the file aside or repair it before --resume`);
    }
    if (typeof step === 'number' && step <= lastStep) kept.push(line + '\n');
    else if (typeof step === 'number') dropped.push(step);
  });
  if (dropped.length > 0) {
    warn(`metrics: dropped the rows of step${dropped.length === 1 ? '' : 's'} ${dropped[0]}${dropped.length === 1 ? '' : `–${dropped[dropped.length - 1]}`} from ${path}: they ran after the checkpoint this run resumes from`);
  }
  return kept.join('');
}
