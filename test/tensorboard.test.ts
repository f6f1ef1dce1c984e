import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { crc32c } from '@node-rs/crc32';
import protobuf from 'protobufjs';
import { listEventFiles, TensorBoardWriter } from '../src/train/tensorboard.js';
import { train } from '../src/train/train.js';
import { tinyRuns } from './helpers/tiny-run.js';

// The reader is not ours: protobufjs decodes the records with TensorBoard's message definitions
// (tensorboard/compat/proto/event.proto and summary.proto, the fields an event file of scalars
// uses, numbers as there), and @node-rs/crc32 computes the CRC-32C the framing is checked with.
const EVENT_PROTO = `
syntax = "proto3";
package tensorboard;
message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    bytes graph_def = 4;
    Summary summary = 5;
    SessionLog session_log = 7;
    bytes meta_graph_def = 9;
  }
}
message SessionLog {
  enum SessionStatus { STATUS_UNSPECIFIED = 0; START = 1; STOP = 2; CHECKPOINT = 3; }
  SessionStatus status = 1;
  string checkpoint_path = 2;
  string msg = 3;
}
message Summary {
  message Value {
    string node_name = 7;
    string tag = 1;
    oneof value {
      float simple_value = 2;
      bytes obsolete_old_style_histogram = 3;
    }
  }
  repeated Value value = 1;
}
`;
const Event = protobuf.parse(EVENT_PROTO).root.lookupType('tensorboard.Event');

interface DecodedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  sessionLog?: { status?: string };
  summary?: { value: Array<{ tag: string; simpleValue: number }> };
}

/** TFRecord's masked CRC over the library's CRC-32C (the mask is the format's, 2 lines of spec). */
function masked(data: Buffer): number {
  const crc = crc32c(data) >>> 0;
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** Every record of an event file, each CRC checked, decoded with protobufjs. */
function readEvents(path: string): DecodedEvent[] {
  const file = readFileSync(path);
  const events: DecodedEvent[] = [];
  let at = 0;
  while (at < file.length) {
    assert.ok(at + 12 <= file.length, `${path}: truncated record header at byte ${at}`);
    const header = file.subarray(at, at + 8);
    const length = Number(header.readBigUInt64LE(0));
    assert.equal(file.readUInt32LE(at + 8), masked(header), `${path}: length CRC of the record at byte ${at}`);
    const data = file.subarray(at + 12, at + 12 + length);
    assert.equal(data.length, length, `${path}: truncated record at byte ${at}`);
    assert.equal(file.readUInt32LE(at + 12 + length), masked(data), `${path}: data CRC of the record at byte ${at}`);
    events.push(Event.toObject(Event.decode(data), { longs: Number, enums: String }) as DecodedEvent);
    at += 12 + length + 4;
  }
  return events;
}

const root = mkdtempSync(join(tmpdir(), 'loongtrain-tensorboard-'));
after(() => rmSync(root, { recursive: true, force: true }));
const config = tinyRuns('tensorboard', ['train.steps=6', 'optim.warmupSteps=2', 'log.tensorboard=true']);

type Row = Record<string, unknown> & { step: number };
const metricsRows = (dir: string): Row[] => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Row);
const SCALARS = ['loss', 'lr', 'gradNorm', 'tgs', 'mfu', 'tokensPerSec'];

/** The scalar events of `events` equal `rows`: one event per row at its step and time, every tag the row's value as a float. */
function assertEventsMatch(events: DecodedEvent[], rows: Row[], extraTags: string[] = []): void {
  const scalars = events.filter((e) => e.summary !== undefined);
  assert.deepEqual(scalars.map((e) => e.step), rows.map((r) => r.step), 'one summary event per metrics row, at its step');
  scalars.forEach((e, i) => {
    const row = rows[i]!;
    assert.equal(e.wallTime, row.time, `step ${row.step}: wall_time is the row's time`);
    const values = Object.fromEntries(e.summary!.value.map((v) => [v.tag, v.simpleValue]));
    assert.deepEqual(Object.keys(values).sort(), [...SCALARS, ...extraTags].sort(), `step ${row.step}: tags`);
    for (const tag of [...SCALARS, ...extraTags]) assert.equal(values[tag], Math.fround(row[tag] as number), `step ${row.step} ${tag}`);
  });
}

describe('TensorBoard event files (log.tensorboard)', () => {
  it('a run writes events.out.tfevents.<unix>.<host> whose records a protobuf reader decodes to metrics.jsonl', async () => {
    const cfg = config();
    const before = Math.floor(Date.now() / 1000);
    await train(cfg);
    const files = listEventFiles(cfg.log.dir);
    assert.equal(files.length, 1);
    const m = /^events\.out\.tfevents\.(\d+)\.(.+)$/.exec(basename(files[0]!));
    assert.ok(m !== null, basename(files[0]!));
    assert.ok(Number(m[1]) >= before && Number(m[1]) <= Date.now() / 1000, 'the name holds the unix time the file was created');
    const events = readEvents(files[0]!);
    assert.equal(events[0]!.fileVersion, 'brain.Event:2', 'the first record names the file version');
    assert.equal(events[0]!.summary, undefined);
    const rows = metricsRows(cfg.log.dir);
    assert.equal(rows.length, 6);
    // No row has valLoss here, so no event has it.
    assertEventsMatch(events, rows);
    // Every row has time and tokens.
    rows.forEach((r) => {
      assert.equal(r.tokens, r.step * 64, `step ${r.step}: tokens of the global batch so far`);
      assert.ok(typeof r.time === 'number' && r.time >= before && r.time <= Date.now() / 1000, `step ${r.step}: time ${r.time}`);
    });
    assert.ok(rows.every((r, i) => i === 0 || (r.time as number) >= (rows[i - 1]!.time as number)), 'times increase');
  });

  it('a resumed run appends a second file, leaving the first unchanged, and tokens count the steps before the checkpoint', async () => {
    const cfg = config();
    await train(cfg, { stopAt: 3 });
    const [first] = listEventFiles(cfg.log.dir);
    const firstBytes = readFileSync(first!);
    await train(cfg, { resume: cfg.save.dir });
    const files = listEventFiles(cfg.log.dir);
    assert.equal(files.length, 2, files.join(', '));
    assert.equal(files[0], first, 'the earlier file sorts first, as TensorBoard reads them');
    assert.ok(readFileSync(first!).equals(firstBytes), 'the first file is not touched by the resumed run');
    const rows = metricsRows(cfg.log.dir);
    assert.deepEqual(rows.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(rows.map((r) => r.tokens), [64, 128, 192, 256, 320, 384]);
    const earlier = readEvents(files[0]!);
    const later = readEvents(files[1]!);
    assert.equal(earlier[0]!.fileVersion, 'brain.Event:2');
    assert.equal(later[0]!.fileVersion, 'brain.Event:2', 'the second file starts with its own file version');
    assert.deepEqual(later[1]!.sessionLog, { status: 'START' }, 'a SessionLog START marks the restart');
    assert.equal(later[1]!.step, 4);
    assertEventsMatch(earlier, rows.slice(0, 3));
    assertEventsMatch(later, rows.slice(3));
    // --overwrite replaces the run: its event files go with its metrics.
    await train(cfg, { overwrite: true });
    assert.equal(listEventFiles(cfg.log.dir).length, 1);
    assertEventsMatch(readEvents(listEventFiles(cfg.log.dir)[0]!), metricsRows(cfg.log.dir));
  });

  it('a metrics file from before rows had time and tokens resumes; its rows stay as they were', async () => {
    const cfg = config(['log.tensorboard=false']);
    await train(cfg, { stopAt: 3 });
    const path = join(cfg.log.dir, 'metrics.jsonl');
    const old = metricsRows(cfg.log.dir).map(({ time: _t, tokens: _k, ...rest }) => rest);
    writeFileSync(path, old.map((r) => JSON.stringify(r) + '\n').join(''));
    await train(cfg, { resume: cfg.save.dir });
    const rows = metricsRows(cfg.log.dir);
    assert.deepEqual(rows.slice(0, 3), old);
    assert.deepEqual(rows.slice(3).map((r) => r.tokens), [256, 320, 384]);
    assert.equal(listEventFiles(cfg.log.dir).length, 0, 'no event file unless log.tensorboard');
  });

  it('valLoss is written when a row has it, and only then', () => {
    const dir = join(root, 'writer');
    rmSync(dir, { recursive: true, force: true });
    const rows: Row[] = [1, 2, 3, 4].map((step) => ({ step, time: 1700000000.5 + step, loss: 5 - step / 10, lr: 1e-3, gradNorm: 0.5, tgs: 100, mfu: 0.01, tokensPerSec: 400, ...(step % 2 === 0 ? { valLoss: 4.5 - step / 10 } : {}) }));
    mkdirSync(dir, { recursive: true });
    const w = new TensorBoardWriter(dir, undefined, (line) => assert.fail(line), 1700000000.25);
    for (const r of rows) w.write(r as Parameters<TensorBoardWriter['write']>[0]);
    w.close();
    assert.equal(basename(w.path).startsWith('events.out.tfevents.1700000000.'), true);
    const events = readEvents(w.path);
    assert.equal(events[0]!.wallTime, 1700000000.25);
    assertEventsMatch(events.filter((e) => e.summary !== undefined && e.step % 2 === 1), rows.filter((r) => r.step % 2 === 1));
    assertEventsMatch(events.filter((e) => e.summary !== undefined && e.step % 2 === 0), rows.filter((r) => r.step % 2 === 0), ['valLoss']);
    // A second writer in the same second never reopens the first file.
    const again = new TensorBoardWriter(dir, 4, () => {}, 1700000000.75);
    again.close();
    assert.notEqual(again.path, w.path);
    assert.equal(readEvents(w.path).length, 5);
    assert.deepEqual(listEventFiles(dir), [w.path, again.path]);
  });
});
