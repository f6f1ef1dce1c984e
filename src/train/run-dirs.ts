import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';

/**
 * Make `dir` (the folder of config key `key`) if needed and prove it takes a file, before any
 * rank starts: a folder that cannot be made or written fails now, not at the first save after
 * the training time is spent.
 * @throws ConfigError naming the key, the folder and the system's reason (a file in the way, no
 * permission, a read-only or full file system).
 */
export function checkWritableDir(key: string, dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new ConfigError(`${key} = ${JSON.stringify(dir)} is a file, not a folder; choose a folder (it is created when missing)`);
  }
  try {
    makeDirs(dir);
  } catch (e) {
    throw new ConfigError(`${key} = ${JSON.stringify(dir)} cannot be created: ${(e as Error).message}; choose a folder you can write`);
  }
  const probe = join(dir, `.loongtrain-write-test-${process.pid}`);
  try {
    writeFileSync(probe, 'ok');
  } catch (e) {
    throw new ConfigError(`${key} = ${JSON.stringify(dir)} is not writable: ${(e as Error).message}; choose a folder you can write, with free space`);
  } finally {
    rmSync(probe, { force: true });
  }
}

/**
 * mkdir -p, one level at a time from the nearest existing folder: Node 20's recursive
 * mkdirSync never returns on paths the kernel will not create (under /proc it loops on ENOENT).
 * @throws the first mkdir's error (ENOENT, EACCES, ENOTDIR, EROFS, …).
 */
function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) missing.unshift(d);
  for (const d of missing) mkdirSync(d);
}

/**
 * Before a fresh run: refuse a log folder that holds another run's metrics (a fresh run would
 * truncate them), or with `overwrite` accept it. A run's metrics are only ever continued by
 * --resume of that run.
 * @throws ConfigError naming the file, how many rows it holds and the ways on.
 */
export function checkFreshLogDir(logDir: string, overwrite: boolean): void {
  if (overwrite || !holdsMetrics(logDir)) return;
  throw new ConfigError(
    `log.dir ${logDir} already holds ${join(logDir, 'metrics.jsonl')} of an earlier run; continue that run with --resume, give this run its own folder (--set run.dir=runs/NAME), or pass --overwrite to replace it`,
  );
}

/** Whether `logDir` holds a run's metrics (a non-empty metrics.jsonl). */
export function holdsMetrics(logDir: string): boolean {
  const metrics = join(logDir, 'metrics.jsonl');
  return existsSync(metrics) && statSync(metrics).size > 0;
}
