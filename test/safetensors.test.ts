import assert from 'node:assert/strict';
import { readdirSync, readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { writeFileAtomic } from '../src/train/atomic-write.js';
import { encodeSafetensors, readSafetensors, SafetensorsError, writeSafetensors, type NamedTensor } from '../src/train/safetensors.js';

const tmp = mkdtempSync(join(tmpdir(), 'loongtrain-st-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A safetensors file from a raw header object and byte buffer, header not padded (any writer may do that). */
function rawFile(name: string, header: unknown, buffer: Uint8Array = new Uint8Array(0), headerText = JSON.stringify(header)): string {
  const json = Buffer.from(headerText, 'utf8');
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(json.length));
  const p = join(tmp, name);
  writeFileSync(p, Buffer.concat([size, json, buffer]));
  return p;
}

function refused(path: string, ...fragments: string[]): void {
  assert.throws(
    () => readSafetensors(path),
    (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${String(e)}`);
      for (const f of [path, ...fragments]) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
      return true;
    },
  );
}

const f32 = (...xs: number[]): Uint8Array => new Uint8Array(Float32Array.from(xs).buffer);

describe('safetensors', () => {
  test('byte-exact layout against a hand-computed file', () => {
    const bytes = encodeSafetensors(
      new Map<string, NamedTensor>([
        ['a', { shape: [2], data: Float32Array.from([1, -2]) }],
        ['b', { shape: [], data: Float32Array.from([0.5]) }],
      ]),
      { format: 'pt' },
    );
    const json = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[],"data_offsets":[8,12]}}';
    // 138 JSON bytes + 6 spaces = 144, so the data starts at 8 + 144 = 152, a multiple of 8.
    assert.equal(json.length, 138);
    const expected = [
      144, 0, 0, 0, 0, 0, 0, 0,
      ...Buffer.from(json + '      ', 'utf8'),
      0x00, 0x00, 0x80, 0x3f, // 1.0f
      0x00, 0x00, 0x00, 0xc0, // -2.0f
      0x00, 0x00, 0x00, 0x3f, // 0.5f
    ];
    assert.deepEqual(Array.from(bytes), expected);
  });

  test('round trip keeps names, order, shapes, metadata and every bit', () => {
    const special = Float32Array.from([0, -0, Infinity, -Infinity, NaN, 1.401298464324817e-45, 3.4028234663852886e38, Math.PI]);
    const big = Float32Array.from({ length: 3 * 5 * 7 }, (_, i) => Math.sin(i) * 1e3);
    const tensors: Record<string, NamedTensor> = {
      'layers.0.attention.wq': { shape: [3, 5, 7], data: big },
      special: { shape: [8], data: special },
      empty: { shape: [0, 4], data: new Float32Array(0) },
      scalar: { shape: [], data: Float32Array.from([42]) },
    };
    const path = join(tmp, 'nested/dir/model.safetensors');
    writeSafetensors(path, tensors, { step: '12', note: 'ünïcode' });
    const back = readSafetensors(path);
    assert.deepEqual(back.metadata, { step: '12', note: 'ünïcode' });
    assert.deepEqual([...back.tensors.keys()], Object.keys(tensors));
    for (const [name, t] of Object.entries(tensors)) {
      const r = back.tensors.get(name)!;
      assert.deepEqual(r.shape, t.shape);
      assert.deepEqual(new Uint8Array(r.data.buffer, r.data.byteOffset, r.data.byteLength), new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), name);
    }
    const bytes = readFileSync(path);
    assert.equal(Number(bytes.readBigUInt64LE(0)) % 8, 0, 'data must start 8-byte aligned');
  });

  test('a file from another writer (unpadded header, tensors out of order, no metadata) is read', () => {
    const buffer = new Uint8Array([...f32(5, 6), ...f32(7)]);
    const p = rawFile('other.safetensors', { y: { dtype: 'F32', shape: [1], data_offsets: [8, 12] }, x: { dtype: 'F32', shape: [1, 2], data_offsets: [0, 8] } }, buffer);
    const { tensors, metadata } = readSafetensors(p);
    assert.deepEqual(metadata, {});
    assert.deepEqual(Array.from(tensors.get('x')!.data), [5, 6]);
    assert.deepEqual(tensors.get('x')!.shape, [1, 2]);
    assert.deepEqual(Array.from(tensors.get('y')!.data), [7]);
  });

  test('corrupt and truncated files are refused, naming the file and the problem', () => {
    const good = join(tmp, 'good.safetensors');
    writeSafetensors(good, { w: { shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) } });
    const bytes = readFileSync(good);
    const cut = (name: string, n: number): string => {
      const p = join(tmp, name);
      writeFileSync(p, bytes.subarray(0, n));
      return p;
    };
    refused(cut('tiny.safetensors', 5), 'truncated', '5 bytes');
    refused(cut('half-header.safetensors', 20), 'header size', 'exceeds');
    refused(cut('short-data.safetensors', bytes.length - 4), 'data_offsets [0, 16]', 'outside the 12-byte buffer');
    const trailing = join(tmp, 'trailing.safetensors');
    writeFileSync(trailing, Buffer.concat([bytes, Buffer.alloc(4)]));
    refused(trailing, 'cover 16 bytes', 'holds 20', 'trailing data');
    refused(rawFile('bad-json.safetensors', null, new Uint8Array(0), '{"w": {'), 'not valid UTF-8 JSON');
    refused(rawFile('array.safetensors', [1, 2]), 'header must be a JSON object');
    refused(rawFile('f16.safetensors', { h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4)), 'tensor "h"', 'dtype "F16" is not supported', 'only "F32"');
    refused(rawFile('range.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32(1)), 'data_offsets [0, 8]', 'outside the 4-byte buffer');
    refused(rawFile('shape.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(1, 2)), 'shape [3] needs 12 bytes', 'span 8');
    refused(rawFile('bad-shape.safetensors', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1)), 'shape [-1]');
    refused(rawFile('bad-offsets.safetensors', { w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, f32(1)), 'data_offsets [0]');
    refused(
      rawFile('overlap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(1, 2, 3)),
      'overlap',
    );
    refused(rawFile('hole.safetensors', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32(1, 2)), 'hole at [0, 4)');
    refused(rawFile('meta.safetensors', { __metadata__: { step: 3 } }), '__metadata__ "step" must be a string');
    refused(join(tmp, 'absent.safetensors'), 'cannot read');
  });

  test('writing refuses data that does not match its shape, naming the tensor and the file', () => {
    const p = join(tmp, 'w.safetensors');
    assert.throws(() => writeSafetensors(p, { w: { shape: [2, 3], data: new Float32Array(5) } }), /cannot write .*w\.safetensors: tensor "w": shape \[2,3\] holds 6 values but data has 5/);
    assert.throws(() => writeSafetensors(p, { __metadata__: { shape: [1], data: new Float32Array(1) } }), /not allowed/);
    assert.throws(() => readFileSync(p), /ENOENT/);
  });
});

describe('writeFileAtomic', () => {
  test('creates the directory, replaces the file whole and leaves no temporary files', () => {
    const dir = join(tmp, 'atomic/a/b');
    const p = join(dir, 'state.json');
    writeFileAtomic(p, 'first');
    writeFileAtomic(p, new Uint8Array([104, 105]));
    assert.equal(readFileSync(p, 'utf8'), 'hi');
    assert.deepEqual(readdirSync(dir), ['state.json']);
  });
});
