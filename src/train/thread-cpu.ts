import { readFileSync } from 'node:fs';

/**
 * CPU time of the calling thread (main or worker), in milliseconds since the thread started:
 * the first field of Linux's /proc/thread-self/schedstat (nanoseconds on a CPU). It counts only
 * the time the thread ran, so a rank that time-shares a core with others, or sleeps in
 * Atomics.wait for a message, does not accrue it; the benchmarks use it for each rank's own work
 * on machines with more ranks than cores. Sync fs calls run on the calling thread, which is what
 * makes `thread-self` this thread.
 * @returns undefined where the file does not exist (not Linux, or /proc not mounted).
 */
export function threadCpuMs(): number | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/thread-self/schedstat', 'utf8');
  } catch {
    return undefined;
  }
  const ns = Number(text.split(' ')[0]);
  return Number.isFinite(ns) ? ns / 1e6 : undefined;
}
