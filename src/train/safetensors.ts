import { readFileSync } from 'node:fs';
import { writeFileAtomic } from './atomic-write.js';

/**
 * The safetensors format (huggingface/safetensors, "Format" in its README):
 * 8 bytes little-endian u64 N | N bytes UTF-8 JSON header | byte buffer.
 * Header: { "<name>": { "dtype": "F32", "shape": [...], "data_offsets": [begin, end] }, …,
 * "__metadata__": { "<key>": "<string>" } }, offsets relative to the start of the byte buffer,
 * tensors row-major little-endian, the buffer fully covered by the tensors without overlap.
 * Only F32 is written and read here (DESIGN decision 4: fp32 everywhere).
 */

/** One f32 tensor: `data.length` = product of `shape` (1 for shape []). */
export interface NamedTensor {
  shape: readonly number[];
  data: Float32Array;
}

export interface SafetensorsContent {
  tensors: Map<string, NamedTensor>;
  metadata: Record<string, string>;
}

const METADATA_KEY = '__metadata__';
/** The reference implementation refuses headers above 100 MB; so do we. */
const MAX_HEADER_BYTES = 100_000_000;
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Error for a safetensors file that cannot be read or written; names the file and the problem. */
export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

/**
 * The bytes of a safetensors file holding `tensors` in the given order and `metadata`.
 * The header is padded with spaces so the byte buffer starts at a multiple of 8.
 * @throws SafetensorsError for an empty or reserved name, a shape that is not a list of
 * non-negative integers, or data whose length differs from the shape's product.
 */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, NamedTensor> | Readonly<Record<string, NamedTensor>>,
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(`safetensors metadata "${k}" must be a string, got ${typeof v}`);
    }
    header[METADATA_KEY] = { ...metadata };
  }
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === '' || name === METADATA_KEY) throw new SafetensorsError(`safetensors tensor name ${JSON.stringify(name)} is not allowed`);
    const count = shapeProduct(t.shape);
    if (count === undefined) throw new SafetensorsError(`tensor "${name}": shape ${JSON.stringify(t.shape)} must be a list of non-negative integers`);
    if (count !== t.data.length) throw new SafetensorsError(`tensor "${name}": shape ${JSON.stringify(t.shape)} holds ${count} values but data has ${t.data.length}`);
    header[name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + 4 * count] };
    offset += 4 * count;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const headerLen = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = new Uint8Array(8 + headerLen + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  let at = 8 + headerLen;
  for (const [, t] of entries) {
    writeF32(out, at, t.data);
    at += 4 * t.data.length;
  }
  return out;
}

/** Write `tensors` and `metadata` to `path` atomically (see encodeSafetensors, writeFileAtomic). */
export function writeSafetensors(
  path: string,
  tensors: ReadonlyMap<string, NamedTensor> | Readonly<Record<string, NamedTensor>>,
  metadata: Readonly<Record<string, string>> = {},
): void {
  let bytes: Uint8Array;
  try {
    bytes = encodeSafetensors(tensors, metadata);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new SafetensorsError(`cannot write ${path}: ${e.message}`);
    throw e;
  }
  writeFileAtomic(path, bytes);
}

/**
 * Read a safetensors file written by any conforming writer (F32 tensors only).
 * @throws SafetensorsError naming the file and the problem: file shorter than 8 bytes, header
 * size beyond the file, header not UTF-8 JSON or not an object, a tensor entry without a valid
 * dtype / shape / data_offsets, a dtype other than F32, offsets out of range, overlapping or
 * leaving holes in the byte buffer, a byte length that is not 4 × the shape's product, or
 * __metadata__ that is not a string → string map.
 */
export function readSafetensors(path: string): SafetensorsContent {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new SafetensorsError(`cannot read safetensors file ${path}: ${(e as Error).message}`);
  }
  try {
    return decodeSafetensors(bytes);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new SafetensorsError(`safetensors file ${path}: ${e.message}`);
    throw e;
  }
}

/** Decode the bytes of a safetensors file (see readSafetensors for the checks). */
export function decodeSafetensors(bytes: Uint8Array): SafetensorsContent {
  if (bytes.length < 8) throw new SafetensorsError(`truncated: ${bytes.length} bytes, shorter than the 8-byte header size`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(Math.min(MAX_HEADER_BYTES, bytes.length - 8))) {
    throw new SafetensorsError(`header size ${n} bytes exceeds the ${bytes.length - 8} bytes after the size field${n > BigInt(MAX_HEADER_BYTES) ? ` (and the ${MAX_HEADER_BYTES}-byte limit)` : ''}; the file is truncated or not safetensors`);
  }
  const headerLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new SafetensorsError(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new SafetensorsError('header must be a JSON object');
  const dataStart = 8 + headerLen;
  const bufferLen = bytes.length - dataStart;
  const metadata = parseMetadata((header as Record<string, unknown>)[METADATA_KEY]);
  const spans: { name: string; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    spans.push({ name, ...parseEntry(name, entry, bufferLen) });
  }
  const sorted = [...spans].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  for (const s of sorted) {
    if (s.begin < covered) throw new SafetensorsError(`tensor "${s.name}" bytes [${s.begin}, ${s.end}) overlap another tensor's (which ends at ${covered})`);
    if (s.begin > covered) throw new SafetensorsError(`byte buffer has a hole at [${covered}, ${s.begin}) before tensor "${s.name}"`);
    covered = s.end;
  }
  if (covered !== bufferLen) throw new SafetensorsError(`tensors cover ${covered} bytes but the byte buffer holds ${bufferLen}; the file is truncated or has trailing data`);
  const tensors = new Map<string, NamedTensor>();
  for (const s of spans) tensors.set(s.name, { shape: s.shape, data: readF32(bytes, dataStart + s.begin, (s.end - s.begin) / 4) });
  return { tensors, metadata };
}

function parseMetadata(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SafetensorsError('__metadata__ must be an object of string values');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new SafetensorsError(`__metadata__ "${k}" must be a string, got ${JSON.stringify(v)}`);
    out[k] = v;
  }
  return out;
}

function parseEntry(name: string, entry: unknown, bufferLen: number): { shape: number[]; begin: number; end: number } {
  const where = `tensor "${name}"`;
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new SafetensorsError(`${where}: entry must be an object with dtype, shape and data_offsets`);
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (dtype !== 'F32') {
    throw new SafetensorsError(`${where}: dtype ${JSON.stringify(dtype)} is not supported; only "F32" is (convert the file to float32 first)`);
  }
  const count = Array.isArray(shape) ? shapeProduct(shape) : undefined;
  if (count === undefined) throw new SafetensorsError(`${where}: shape ${JSON.stringify(shape)} must be a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new SafetensorsError(`${where}: data_offsets ${JSON.stringify(offsets)} must be [begin, end] with non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > bufferLen) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] lie outside the ${bufferLen}-byte buffer or are reversed`);
  if (end - begin !== 4 * count) {
    throw new SafetensorsError(`${where}: shape ${JSON.stringify(shape)} needs ${4 * count} bytes of F32 but data_offsets span ${end - begin}`);
  }
  return { shape: shape as number[], begin, end };
}

/** Product of a shape's dimensions, or undefined if the shape is not a list of non-negative safe integers. */
function shapeProduct(shape: readonly unknown[]): number | undefined {
  let p = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) return undefined;
    p *= d;
  }
  return Number.isSafeInteger(p) ? p : undefined;
}

function writeF32(out: Uint8Array, at: number, data: Float32Array): void {
  if (LITTLE_ENDIAN_HOST) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    return;
  }
  const view = new DataView(out.buffer, out.byteOffset);
  for (let i = 0; i < data.length; i++) view.setFloat32(at + 4 * i, data[i]!, true);
}

function readF32(bytes: Uint8Array, at: number, count: number): Float32Array {
  const out = new Float32Array(count);
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(out.buffer).set(bytes.subarray(at, at + 4 * count));
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  for (let i = 0; i < count; i++) out[i] = view.getFloat32(at + 4 * i, true);
  return out;
}
