import { readFileSync } from 'node:fs';
import { writeFileAtomic } from './atomic-write.js';

/**
 * The safetensors format (huggingface/safetensors, "Format" in its README):
 * 8 bytes little-endian u64 N | N bytes UTF-8 JSON header | byte buffer.
 * Header: { "<name>": { "dtype": "F32", "shape": [...], "data_offsets": [begin, end] }, …,
 * "__metadata__": { "<key>": "<string>" } }, offsets relative to the start of the byte buffer,
 * tensors row-major little-endian, the buffer fully covered by the tensors without overlap.
 * Checkpoints are F32 only (DESIGN decision 4: fp32 everywhere). For exchanging weights with
 * other tools (src/hf/), {@link encodeSafetensors} can also write BF16 (rounded to nearest even)
 * and {@link decodeSafetensors} with `{ convert: true }` reads F16, BF16 and F32, converting to f32.
 */

/** The dtypes this module reads with `convert` (and, F32 and BF16, writes). */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';
const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = { F32: 4, F16: 2, BF16: 2 };

export interface DecodeOptions {
  /** Also read F16 and BF16 tensors, converted to f32 (exactly: every F16 and BF16 value is an f32). Default false: F32 only. */
  convert?: boolean;
}

export interface EncodeOptions {
  /** Dtype of every tensor in the file (default F32). BF16 rounds each f32 to nearest, ties to even. */
  dtype?: 'F32' | 'BF16';
}

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
  options: EncodeOptions = {},
): Uint8Array {
  const dtype = options.dtype ?? 'F32';
  const width = DTYPE_BYTES[dtype];
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
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + width * count] };
    offset += width * count;
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
    if (dtype === 'BF16') writeBf16(out, at, t.data);
    else writeF32(out, at, t.data);
    at += width * t.data.length;
  }
  return out;
}

/** Write `tensors` and `metadata` to `path` atomically (see encodeSafetensors, writeFileAtomic). */
export function writeSafetensors(
  path: string,
  tensors: ReadonlyMap<string, NamedTensor> | Readonly<Record<string, NamedTensor>>,
  metadata: Readonly<Record<string, string>> = {},
  options: EncodeOptions = {},
): void {
  let bytes: Uint8Array;
  try {
    bytes = encodeSafetensors(tensors, metadata, options);
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
export function readSafetensors(path: string, options: DecodeOptions = {}): SafetensorsContent {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new SafetensorsError(`cannot read safetensors file ${path}: ${(e as Error).message}`);
  }
  try {
    return decodeSafetensors(bytes, options);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new SafetensorsError(`safetensors file ${path}: ${e.message}`);
    throw e;
  }
}

/** Decode the bytes of a safetensors file (see readSafetensors for the checks). */
export function decodeSafetensors(bytes: Uint8Array, options: DecodeOptions = {}): SafetensorsContent {
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
  const spans: { name: string; shape: number[]; begin: number; end: number; dtype: SafetensorsDtype }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    spans.push({ name, ...parseEntry(name, entry, bufferLen, options.convert === true) });
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
  for (const s of spans) {
    const count = (s.end - s.begin) / DTYPE_BYTES[s.dtype];
    const at = dataStart + s.begin;
    tensors.set(s.name, { shape: s.shape, data: s.dtype === 'F32' ? readF32(bytes, at, count) : readHalf(bytes, at, count, s.dtype) });
  }
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

function parseEntry(name: string, entry: unknown, bufferLen: number, convert: boolean): { shape: number[]; begin: number; end: number; dtype: SafetensorsDtype } {
  const where = `tensor "${name}"`;
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new SafetensorsError(`${where}: entry must be an object with dtype, shape and data_offsets`);
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (dtype !== 'F32' && !(convert && (dtype === 'F16' || dtype === 'BF16'))) {
    throw new SafetensorsError(
      convert
        ? `${where}: dtype ${JSON.stringify(dtype)} is not supported; "F32", "F16" and "BF16" are (convert the file to one of them first)`
        : `${where}: dtype ${JSON.stringify(dtype)} is not supported; only "F32" is (convert the file to float32 first)`,
    );
  }
  const width = DTYPE_BYTES[dtype as SafetensorsDtype];
  const count = Array.isArray(shape) ? shapeProduct(shape) : undefined;
  if (count === undefined) throw new SafetensorsError(`${where}: shape ${JSON.stringify(shape)} must be a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new SafetensorsError(`${where}: data_offsets ${JSON.stringify(offsets)} must be [begin, end] with non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > bufferLen) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] lie outside the ${bufferLen}-byte buffer or are reversed`);
  if (end - begin !== width * count) {
    throw new SafetensorsError(`${where}: shape ${JSON.stringify(shape)} needs ${width * count} bytes of ${String(dtype)} but data_offsets span ${end - begin}`);
  }
  return { shape: shape as number[], begin, end, dtype: dtype as SafetensorsDtype };
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

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** The bf16 bits of `x`: the top 16 bits of its f32 after rounding to nearest, ties to even; NaN stays a (quiet) NaN. */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) return ((bits >>> 16) | 0x0040) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** `x` rounded to the nearest bf16 value (ties to even), as a number. */
export function roundToBf16(x: number): number {
  u32Scratch[0] = f32ToBf16Bits(x) << 16;
  return f32Scratch[0]!;
}

/** The f32 value of IEEE half-precision bits `h` (exact). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function writeBf16(out: Uint8Array, at: number, data: Float32Array): void {
  const view = new DataView(out.buffer, out.byteOffset);
  for (let i = 0; i < data.length; i++) view.setUint16(at + 2 * i, f32ToBf16Bits(data[i]!), true);
}

function readHalf(bytes: Uint8Array, at: number, count: number, dtype: 'F16' | 'BF16'): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  if (dtype === 'BF16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = view.getUint16(at + 2 * i, true) << 16;
  } else {
    for (let i = 0; i < count; i++) out[i] = f16BitsToF32(view.getUint16(at + 2 * i, true));
  }
  return out;
}
