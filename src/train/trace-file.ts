import type { TraceEvent } from '../comm/trace.js';
import { writeFileAtomic } from './atomic-write.js';

/** A metadata event ("ph": "M") of the Chrome trace event format naming one process (= rank). */
export interface ProcessNameEvent {
  name: 'process_name';
  ph: 'M';
  pid: number;
  tid: number;
  args: { name: string };
}

/** The JSON object format of the Chrome trace event format, as Perfetto and chrome://tracing load it. */
export interface ChromeTrace {
  traceEvents: (ProcessNameEvent | TraceEvent)[];
  displayTimeUnit: 'ms';
}

/**
 * One timeline of every rank: a "rank N" process-name event per rank, then all spans sorted by
 * start, with `ts` made relative to the earliest span (µs), so the file opens at time 0.
 * @param perRank perRank[r] = rank r's events (as a launch's onTrace delivered them); a rank
 *   with no entry still gets its name, so every rank shows up even when it recorded nothing.
 */
export function mergeTraces(perRank: readonly (readonly TraceEvent[] | undefined)[]): ChromeTrace {
  const names: ProcessNameEvent[] = [];
  for (let rank = 0; rank < perRank.length; rank++) {
    names.push({ name: 'process_name', ph: 'M', pid: rank, tid: 0, args: { name: `rank ${rank}` } });
  }
  const spans = perRank.flatMap((events) => events ?? []);
  const origin = spans.reduce((min, e) => Math.min(min, e.ts), Infinity);
  const shifted = spans.map((e) => ({ ...e, ts: e.ts - origin })).sort((a, b) => a.ts - b.ts);
  return { traceEvents: [...names, ...shifted], displayTimeUnit: 'ms' };
}

/**
 * Write {@link mergeTraces} of `perRank` to `path` as JSON (atomically: temp file + rename).
 * @returns the number of spans written.
 * @throws the underlying fs error when the file cannot be written.
 */
export function writeTraceFile(path: string, perRank: readonly (readonly TraceEvent[] | undefined)[]): number {
  const trace = mergeTraces(perRank);
  writeFileAtomic(path, JSON.stringify(trace));
  return trace.traceEvents.length - perRank.length;
}
