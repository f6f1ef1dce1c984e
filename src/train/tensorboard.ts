import { closeSync, ftruncateSync, openSync, readdirSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { MetricsWriteError } from './metrics-file.js';

/**
 * TensorBoard event files (`log.tensorboard`), written from the format's specification, no
 * TensorFlow: a file is a sequence of TFRecords
 *
 *   uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data
 *
 * whose data are serialized `tensorboard.Event` protobufs (tensorboard/compat/proto/event.proto):
 * wall_time (1, double), step (2, int64), and one of file_version (3, string; the first record,
 * "brain.Event:2"), summary (5: Summary.value (1, repeated) → Value{tag (1), simple_value (2, float)})
 * or session_log (7: SessionLog.status (1), START = 1).
 */

/** The scalars of a metrics row written as TensorBoard tags of the same name (valLoss when the row has it). */
export const TENSORBOARD_SCALARS = ['loss', 'lr', 'gradNorm', 'tgs', 'mfu', 'tokensPerSec', 'valLoss'] as const;

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1; // Castagnoli, reflected
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli) of `data`. */
export function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC32C_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits and add 0xa282ead8 (mod 2³²). */
export function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c(data);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord framing `data`. */
export function tfRecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length + 4);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return out;
}

/** The few protobuf wire types an Event needs (https://protobuf.dev/programming-guides/encoding/). */
class ProtoWriter {
  private readonly parts: Buffer[] = [];

  private varint(value: bigint | number): void {
    let v = BigInt.asUintN(64, BigInt(value));
    const bytes: number[] = [];
    while (v >= 0x80n) {
      bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    bytes.push(Number(v));
    this.parts.push(Buffer.from(bytes));
  }

  private key(field: number, wireType: 0 | 1 | 2 | 5): void {
    this.varint((field << 3) | wireType);
  }

  /** int64 / enum (wire type 0). */
  int(field: number, value: number): this {
    this.key(field, 0);
    this.varint(value);
    return this;
  }

  /** double (wire type 1, little-endian). */
  double(field: number, value: number): this {
    this.key(field, 1);
    const b = Buffer.alloc(8);
    b.writeDoubleLE(value);
    this.parts.push(b);
    return this;
  }

  /** float (wire type 5, little-endian). */
  float(field: number, value: number): this {
    this.key(field, 5);
    const b = Buffer.alloc(4);
    b.writeFloatLE(value);
    this.parts.push(b);
    return this;
  }

  /** string, bytes or an embedded message (wire type 2). */
  bytes(field: number, value: string | Uint8Array): this {
    const b = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    this.key(field, 2);
    this.varint(b.length);
    this.parts.push(Buffer.from(b));
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** A serialized Event holding a Summary of simple_value scalars. */
export function scalarEvent(wallTime: number, step: number, scalars: ReadonlyArray<readonly [string, number]>): Buffer {
  const summary = new ProtoWriter();
  for (const [tag, value] of scalars) summary.bytes(1, new ProtoWriter().bytes(1, tag).float(2, value).finish());
  return new ProtoWriter().double(1, wallTime).int(2, step).bytes(5, summary.finish()).finish();
}

/** `events.out.tfevents.<unix seconds>.<host>` (TensorBoard reads files whose name holds "tfevents"). */
export function eventFileName(unixSeconds: number, host = os.hostname()): string {
  return `events.out.tfevents.${Math.floor(unixSeconds)}.${host.replace(/[/\\]/g, '_')}`;
}

/** The TensorBoard event files in `dir`, sorted by name (the order TensorBoard reads them in). */
export function listEventFiles(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((n) => n.startsWith('events.out.tfevents.'))
      .sort()
      .map((n) => join(dir, n));
  } catch {
    return [];
  }
}

/**
 * Remove the event files of an earlier run from `dir` (a fresh run after checkFreshLogDir, which
 * replaces that run's metrics.jsonl too). @returns their names.
 */
export function removeEventFiles(dir: string): string[] {
  const files = listEventFiles(dir);
  for (const f of files) rmSync(f, { force: true });
  return files;
}

/**
 * Writes one event file per run (a resumed run starts a new one, which TensorBoard reads after
 * the earlier files: they are never opened again). Each metrics row is one record, written with
 * one write call when the row is logged (the launcher's thread, not the ranks': a few hundred
 * bytes, microseconds). A write that fails is cut back to the last whole record and ends the
 * event file with a warning; metrics.jsonl stays the run's record.
 */
export class TensorBoardWriter {
  readonly path: string;
  private fd: number | undefined;
  private size = 0;

  /**
   * @param resumedAt the checkpoint step a resumed run continues from: a SessionLog START at the
   *   next step tells TensorBoard to drop the earlier files' events of that step and later (they
   *   ran after the checkpoint, e.g. before a crash), as metrics.jsonl drops their rows.
   * @throws MetricsWriteError naming the file when it cannot be created.
   */
  constructor(
    dir: string,
    resumedAt: number | undefined,
    private readonly warn: (line: string) => void,
    now = Date.now() / 1000,
  ) {
    const base = join(dir, eventFileName(now));
    // Never open an existing file (a run resumed within the same second): the earlier one stays whole.
    let path = base;
    for (let n = 1; ; n++) {
      try {
        this.fd = openSync(path, 'wx');
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new MetricsWriteError(`tensorboard: cannot create ${path}: ${(e as Error).message}; check log.dir (free space, permissions) or set log.tensorboard = false`);
        path = `${base}.${n}`;
      }
    }
    this.path = path;
    const first = new ProtoWriter().double(1, now).int(2, 0).bytes(3, 'brain.Event:2').finish();
    let records = tfRecord(first);
    if (resumedAt !== undefined) {
      const start = new ProtoWriter().double(1, now).int(2, resumedAt + 1).bytes(7, new ProtoWriter().int(1, 1).finish()).finish();
      records = Buffer.concat([records, tfRecord(start)]);
    }
    this.append(records);
  }

  /** Write the row's scalars (the finite and non-finite numbers among TENSORBOARD_SCALARS) as one event at its step. */
  write(row: { step: number; time?: number } & Partial<Record<(typeof TENSORBOARD_SCALARS)[number], unknown>>): void {
    if (this.fd === undefined) return;
    const scalars = TENSORBOARD_SCALARS.flatMap((tag) => (typeof row[tag] === 'number' ? [[tag, row[tag] as number] as const] : []));
    this.append(tfRecord(scalarEvent(row.time ?? Date.now() / 1000, row.step, scalars)));
  }

  private append(bytes: Buffer): void {
    const fd = this.fd!;
    try {
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
      this.size += bytes.length;
    } catch (e) {
      try {
        ftruncateSync(fd, this.size);
      } catch {
        // TensorBoard stops at a torn last record anyway.
      }
      this.close();
      this.warn(`tensorboard: cannot append to ${this.path}: ${(e as Error).message}; no more events are written this run (metrics.jsonl still gets every step)`);
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}
