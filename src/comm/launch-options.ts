import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError } from '../errors.js';
import { MAX_ARENA_BYTES } from '../tensor/arena.js';
import type { LaunchOptions } from './launcher.js';

function entryUrl(entry: unknown): string {
  if (typeof entry !== 'string' || entry === '') {
    throw new ConfigError(`launch option entry = ${JSON.stringify(entry)} is invalid: it must be an absolute path or a file:// URL of a compiled ESM module`);
  }
  let url: URL;
  if (entry.startsWith('file:')) url = new URL(entry);
  else if (isAbsolute(entry)) url = pathToFileURL(entry);
  else throw new ConfigError(`launch option entry = ${JSON.stringify(entry)} is invalid: it must be an absolute path or a file:// URL, not a relative path`);
  if (!existsSync(fileURLToPath(url))) {
    throw new ConfigError(`launch option entry = ${JSON.stringify(entry)} is invalid: no file at ${fileURLToPath(url)} (tests and the CLI run the compiled .js under dist/)`);
  }
  return url.href;
}

/**
 * Check launch options as every backend takes them.
 * @returns the entry module's file:// URL.
 * @throws ConfigError naming the option, the value and the valid range.
 */
export function checkLaunchOptions(opts: LaunchOptions): string {
  if (typeof opts !== 'object' || opts === null) throw new ConfigError(`launch options must be an object, got ${String(opts)}`);
  const { world, timeoutMs, arenaBytes, onReport, trace, onTrace, onStop } = opts;
  if (!Number.isInteger(world) || world < 1) {
    throw new ConfigError(`launch option world = ${String(world)} is invalid: it must be a positive integer (the number of ranks)`);
  }
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new ConfigError(`launch option timeoutMs = ${String(timeoutMs)} is invalid: it must be a positive finite number of milliseconds`);
  }
  if (!Number.isInteger(arenaBytes) || arenaBytes < 1 || arenaBytes > MAX_ARENA_BYTES) {
    throw new ConfigError(`launch option arenaBytes = ${String(arenaBytes)} is invalid: it must be an integer in [1, ${MAX_ARENA_BYTES}] (4 GiB)`);
  }
  if (onReport !== undefined && typeof onReport !== 'function') {
    throw new ConfigError(`launch option onReport is invalid: it must be a function (rank, msg) => void or absent, got ${typeof onReport}`);
  }
  if (trace !== undefined && typeof trace !== 'boolean') {
    throw new ConfigError(`launch option trace = ${String(trace)} is invalid: it must be true, false or absent`);
  }
  if (onTrace !== undefined && typeof onTrace !== 'function') {
    throw new ConfigError(`launch option onTrace is invalid: it must be a function (rank, events) => void or absent, got ${typeof onTrace}`);
  }
  if (onStop !== undefined && typeof onStop !== 'function') {
    throw new ConfigError(`launch option onStop is invalid: it must be a function (signal) => void or absent, got ${typeof onStop}`);
  }
  return entryUrl(opts.entry);
}
