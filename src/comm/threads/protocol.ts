import type { MessagePort } from 'node:worker_threads';
import type { TraceEvent } from '../trace.js';

/** What the launcher hands each rank's worker as `workerData` (ports travel in the transfer list). */
export interface WorkerInit {
  rank: number;
  world: number;
  /** ports[p]: this rank's end of the channel to rank p; null at p = rank. */
  ports: (MessagePort | null)[];
  /** SharedArrayBuffer of `world` Int32 doorbell slots, shared by all ranks. */
  doorbell: SharedArrayBuffer;
  /** file:// URL of the entry module. */
  entry: string;
  args: unknown;
  timeoutMs: number;
  arenaBytes: number;
  /** Enable the rank's tracer (RankContext.tracer). */
  trace: boolean;
}

/** A rank's failure as it crosses to the launcher: plain fields, since Error subclasses lose their class in cloning. */
export interface RankErrorInfo {
  name: string;
  message: string;
  stack: string;
}

/** Messages from a rank's worker to the launcher, in the order the rank produced them. */
export type WorkerMessage =
  | { type: 'report'; msg: unknown }
  | { type: 'done'; value: unknown; /** The rank's trace events, when tracing was on. */ trace?: TraceEvent[] }
  | { type: 'error'; error: RankErrorInfo };

export function errorInfo(err: unknown): RankErrorInfo {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack ?? `${err.name}: ${err.message}` };
  const text = `non-Error value thrown: ${String(err)}`;
  return { name: 'Error', message: text, stack: text };
}
