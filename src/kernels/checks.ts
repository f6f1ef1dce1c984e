import type { Tensor } from '../tensor/tensor.js';
import type { AttentionMask, AttentionOptions, MatmulOptions } from './kernels.js';

/*
 * Argument checks shared by the kernel backends (reference, wasm, blas), so that every backend
 * rejects the same bad input with the same message naming the kernel, the tensor or field, the
 * value and what would be valid.
 */

/** `[d0, d1, …]`, a tensor's shape as written in messages. */
export function shapeText(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** @throws Error naming the kernel, the tensor, its size and the expected size. */
export function checkSize(kernel: string, name: string, t: Tensor, expected: number, shapeText: string): void {
  if (t.size !== expected) {
    throw new Error(`${kernel}: ${name} has ${t.size} elements (shape [${t.shape.join(', ')}]), expected ${expected} = ${shapeText}`);
  }
}

/** @throws Error naming the field when a dimension is not a non-negative integer. */
export function checkDims(kernel: string, dims: Record<string, number>): void {
  for (const [field, value] of Object.entries(dims)) {
    if (!Number.isInteger(value) || value < 0) throw new Error(`${kernel}: ${field} = ${value} is invalid: it must be a non-negative integer`);
  }
}

/** Rows of a [rows, width] reading of `x`. @throws Error when x.size is not a multiple of width. */
export function rowsOf(kernel: string, name: string, x: Tensor, width: number): number {
  if (width <= 0 || x.size % width !== 0) {
    throw new Error(`${kernel}: ${name} has ${x.size} elements (shape [${x.shape.join(', ')}]), not a whole number of rows of width ${width}`);
  }
  return x.size / width;
}

/** [V, D] of an embedding table. @throws Error when the table is not 2-D. */
export function tableShape(kernel: string, table: Tensor): [number, number] {
  if (table.shape.length !== 2) throw new Error(`${kernel}: the table has shape ${shapeText(table)}, expected [V, D]`);
  return [table.shape[0]!, table.shape[1]!];
}

/** @throws Error naming the kernel and position of the first id outside [0, limit) (−1 allowed when `ignore`). */
export function checkIds(kernel: string, field: string, ids: Int32Array, limit: number, ignore: boolean): void {
  for (let r = 0; r < ids.length; r++) {
    const id = ids[r]!;
    if ((id < 0 || id >= limit) && !(ignore && id === -1)) {
      throw new Error(`${kernel}: ${field}[${r}] = ${id} is invalid: it must be in [0, ${limit})${ignore ? ' or −1 (ignored)' : ''}`);
    }
  }
}

/**
 * @throws Error when the output overlaps an input in memory (a blocked GEMM reads A and B after
 * it has begun writing C, so an aliased output would corrupt its own inputs).
 */
export function checkNoOverlap(kernel: string, out: [string, Tensor], ins: Record<string, Tensor>): void {
  const [outName, o] = out;
  const oEnd = o.byteOffset + o.size * 4;
  for (const [name, t] of Object.entries(ins)) {
    if (o.size > 0 && t.size > 0 && o.arena === t.arena && o.byteOffset < t.byteOffset + t.size * 4 && t.byteOffset < oEnd) {
      throw new Error(`${kernel}: ${outName} ${shapeText(o)} overlaps ${name} ${shapeText(t)} in memory; the output must be a separate tensor`);
    }
  }
}

export interface AttentionDims {
  sq: number;
  sk: number;
  heads: number;
  kvHeads: number;
  d: number;
  /** Query heads per KV head: query head j uses KV head ⌊j / group⌋ (algorithms.md §3). */
  group: number;
}

/**
 * Check q [Sq, H, d], k and v [Sk, Hkv, d] (H a multiple of Hkv), outputs shaped like q (or
 * like k for names starting dk/dv), lse [Sq, H], the mask ({@link checkMask}) and the score
 * scale: positive and finite as an f32 (the wasm and blas kernels take it as one, and the blas
 * tiles take the row maximum of the unscaled scores, which needs scale > 0; every backend refuses
 * the same values, so they agree).
 * @throws Error naming the tensor, its shape and the expected shape, the mask field, or the scale.
 */
export function attentionDims(q: Tensor, k: Tensor, v: Tensor, outs: Record<string, Tensor>, lse: Tensor, opts: AttentionOptions): AttentionDims {
  const scale = opts.scale;
  if (!(scale > 0 && Number.isFinite(Math.fround(scale)))) throw new Error(`attention: scale = ${scale} is invalid: it must be a positive finite number below 3.4e38, the largest f32 (normally 1/√d)`);
  if (q.shape.length !== 3) throw new Error(`attention: q must be [Sq, H, d], got shape ${shapeText(q)}`);
  if (k.shape.length !== 3) throw new Error(`attention: k must be [Sk, Hkv, d], got shape ${shapeText(k)}`);
  const [sq, heads, d] = q.shape as [number, number, number];
  const [sk, kvHeads, dk] = k.shape as [number, number, number];
  if (dk !== d) throw new Error(`attention: k head dim ${dk} ≠ q head dim ${d} (q ${shapeText(q)}, k ${shapeText(k)})`);
  if (kvHeads < 1 || heads % kvHeads !== 0) {
    throw new Error(`attention: q heads ${heads} must be a positive multiple of k heads ${kvHeads} (q ${shapeText(q)}, k ${shapeText(k)})`);
  }
  if (v.size !== k.size) throw new Error(`attention: v ${shapeText(v)} must have the shape of k ${shapeText(k)}`);
  for (const [name, t] of Object.entries(outs)) {
    const want = name.startsWith('dk') || name.startsWith('dv') ? k.size : q.size;
    if (t.size !== want) throw new Error(`attention: ${name} ${shapeText(t)} must have ${want} elements (the shape of ${want === k.size ? 'k' : 'q'})`);
  }
  // The exact shape, not just the size: an lse laid out [H, Sq] (as varlen kernels elsewhere return it) would be read transposed.
  if (lse.shape.length !== 2 || lse.shape[0] !== sq || lse.shape[1] !== heads) {
    throw new Error(`attention: lse has shape ${shapeText(lse)}, expected [Sq, H] = [${sq}, ${heads}] (one natural-log LSE per query row and head, rows in the block's query order)`);
  }
  checkMask(opts.mask, sq, sk);
  return { sq, sk, heads, kvHeads, d, group: heads / kvHeads };
}

/**
 * Check an attention mask against a block of Sq queries and Sk keys: a causal offset is an
 * integer; document ranges are [Sq] each with 0 ≤ keyStart, keyEnd ≤ Sk.
 * @throws Error naming the mask field, the value and what is valid.
 */
export function checkMask(mask: AttentionMask, sq: number, sk: number): void {
  if (mask.kind === 'none') return;
  if (mask.kind === 'causal') {
    if (!Number.isInteger(mask.offset)) throw new Error(`attention: causal mask offset = ${mask.offset} is invalid: it must be an integer`);
    return;
  }
  if (mask.kind !== 'documents') throw new Error(`attention: mask kind '${(mask as { kind: unknown }).kind}' is unknown; valid kinds: none, causal, documents`);
  for (const [name, a] of [['keyStart', mask.keyStart], ['keyEnd', mask.keyEnd]] as const) {
    if (a.length !== sq) throw new Error(`attention: documents mask ${name} has ${a.length} entries, expected one per query row (Sq = ${sq})`);
    for (let i = 0; i < sq; i++) {
      if (a[i]! < 0 || a[i]! > sk) throw new Error(`attention: documents mask ${name}[${i}] = ${a[i]} is outside [0, Sk = ${sk}]`);
    }
  }
}

/**
 * The visible keys of every query row as ranges [start[i], end[i]) of the block's key rows
 * (empty when start ≥ end): the one form every kernel backend runs on.
 */
export function keyRanges(mask: AttentionMask, sq: number, sk: number): { start: Int32Array; end: Int32Array } {
  if (mask.kind === 'documents') return { start: mask.keyStart, end: mask.keyEnd };
  const start = new Int32Array(sq);
  const end = new Int32Array(sq);
  for (let i = 0; i < sq; i++) end[i] = mask.kind === 'none' ? sk : Math.max(0, Math.min(sk, i + 1 + mask.offset));
  return { start, end };
}

/** Visible (query, key) pairs of a block under `mask` (per head). */
export function maskPairs(mask: AttentionMask, sq: number, sk: number): number {
  const { start, end } = keyRanges(mask, sq, sk);
  let n = 0;
  for (let i = 0; i < sq; i++) n += Math.max(0, end[i]! - start[i]!);
  return n;
}

/**
 * Check a matmul's sizes (Kernels.matmul): A holds M·K, B K·N, C M·N elements, every size a
 * non-negative integer. Returns the transpose flags. @throws Error naming the operand and sizes.
 */
export function checkMatmul(c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number, opts: MatmulOptions): { transA: boolean; transB: boolean } {
  checkDims('matmul', { m, n, k });
  const transA = opts.transA === true;
  const transB = opts.transB === true;
  checkSize('matmul', 'A', a, m * k, transA ? `K·M = ${k}·${m}` : `M·K = ${m}·${k}`);
  checkSize('matmul', 'B', b, k * n, transB ? `N·K = ${n}·${k}` : `K·N = ${k}·${n}`);
  checkSize('matmul', 'C', c, m * n, `M·N = ${m}·${n}`);
  return { transA, transB };
}

/**
 * Check a cross-entropy's sizes (Kernels.crossEntropy): losses [T], logits [T, V]. Returns V,
 * or 0 when there are no rows. @throws Error naming the tensor and sizes.
 */
export function checkCrossEntropy(logits: Tensor, labels: Int32Array, losses: Tensor): number {
  const t = labels.length;
  checkSize('crossEntropy', 'losses', losses, t, `T = labels.length = ${t}`);
  if (t === 0) {
    checkSize('crossEntropy', 'logits', logits, 0, 'T·V with T = 0');
    return 0;
  }
  return rowsOf('crossEntropy', 'logits', logits, t);
}
