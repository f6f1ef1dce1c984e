import type { MessagePort } from 'node:worker_threads';

/** What the threads launcher hands each rank's worker as `workerData` (ports travel in the transfer list). */
export interface WorkerInit {
  rank: number;
  world: number;
  /** ports[p]: this rank's end of the channel to rank p; null at p = rank. */
  ports: (MessagePort | null)[];
  /** SharedArrayBuffer of `world` Int32 doorbell slots, shared by all ranks. */
  doorbell: SharedArrayBuffer;
  /** One Int32, non-zero once the launcher was asked to stop (Launcher.requestStop). */
  stop: SharedArrayBuffer;
  /** file:// URL of the entry module. */
  entry: string;
  args: unknown;
  timeoutMs: number;
  arenaBytes: number;
  /** Enable the rank's tracer (RankContext.tracer). */
  trace: boolean;
}
