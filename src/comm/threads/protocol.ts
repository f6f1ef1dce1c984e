import type { MessagePort } from 'node:worker_threads';
import type { RankThreadInit } from '../rank-entry.js';

/** What the threads launcher hands each rank's worker as `workerData` (ports travel in the transfer list). */
export interface WorkerInit extends RankThreadInit {
  /** ports[p]: this rank's end of the channel to rank p; null at p = rank. */
  ports: (MessagePort | null)[];
  /** SharedArrayBuffer of `world` Int32 doorbell slots, shared by all ranks. */
  doorbell: SharedArrayBuffer;
}
