import type { Arena } from '../../tensor/arena.js';
import type { Tensor } from '../../tensor/tensor.js';
import { attentionDims, keyRanges } from '../checks.js';
import type { AttentionOptions, Kernels } from '../kernels.js';
import { checkArena } from '../wasm/checks.js';
import type { AttentionTiles } from '../wasm/tiles.js';
import type { Sgemm } from './library.js';

/*
 * Attention through GEMM tiles, as CPU flash attention is done in PyTorch's
 * aten/src/ATen/native/cpu/FlashAttentionKernel.cpp: for each head and each (query block, key
 * block) pair that has a visible pair, S = Q·Kᵀ and O += P·V (forward), and S, dV += Pᵀ·dO,
 * dP = dO·Vᵀ, dQ += dS·K, dK += dSᵀ·Q (backward, with P recomputed from the LSE) are
 * cblas_sgemm calls on the arena tensors themselves — a head of a [rows, heads, d] tensor is a
 * matrix with row stride heads·d, so nothing is copied — and the online softmax, the masks, the
 * LSE and dS = P ⊙ (dP − D) run in the wasm module's tile kernels (assembly/attention-tiles.ts)
 * on a scratch tile. FlashAttention-2 (Dao 2023), algorithms 1 and 2; algorithms.md §5.
 */

/** Query rows per block. */
export const BLAS_ATTENTION_BLOCK_Q = 256;
/** Keys per block (a multiple of 4: the tile's row stride). */
export const BLAS_ATTENTION_BLOCK_K = 256;

// CBLAS enum values (cblas.h).
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

/**
 * The query rows of one GEMM: `rows` rows of `ld` floats from element `at` of q (and the same
 * rows of out, dO, dq), their LSE at `lseAt` with stride `lseStride`, all attending to KV head
 * `kvHead`, with per-row key ranges `start`/`end`.
 */
interface QueryMatrix {
  at: number;
  rows: number;
  ld: number;
  lseAt: number;
  lseStride: number;
  kvHead: number;
  start: Int32Array;
  end: Int32Array;
}

/**
 * The query matrices of a call. With one KV head (MQA, or GQA once hp has split the KV heads)
 * every head of [Sq, H, d] shares K and V, and the tensor read as [Sq·H, d] (row t·H + h) is
 * one matrix of contiguous rows: one GEMM of H times the height, which matters at small head
 * dims (K = d = 32 runs SGEMM at about half its 1024³ rate). Otherwise one matrix per head,
 * of row stride H·d.
 */
function queryMatrices(sq: number, heads: number, kvHeads: number, d: number, start: Int32Array, end: Int32Array): QueryMatrix[] {
  if (kvHeads === 1 && heads > 1) {
    const rows = sq * heads;
    const s = new Int32Array(rows);
    const e = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      s[r] = start[Math.floor(r / heads)]!;
      e[r] = end[Math.floor(r / heads)]!;
    }
    return [{ at: 0, rows, ld: d, lseAt: 0, lseStride: 1, kvHead: 0, start: s, end: e }];
  }
  const group = heads / kvHeads;
  return Array.from({ length: heads }, (_, h) => ({ at: h * d, rows: sq, ld: heads * d, lseAt: h, lseStride: heads, kvHead: Math.floor(h / group), start, end }));
}

/**
 * For each block of `bq` rows, the key blocks holding at least one pair some of its rows see,
 * from the per-row ranges [start[i], end[i]).
 */
function visibleKeyBlocks(start: Int32Array, end: Int32Array, rows: number, sk: number, bq: number, bk: number): number[][] {
  const blocks: number[][] = [];
  for (let i0 = 0; i0 < rows; i0 += bq) {
    const i1 = Math.min(rows, i0 + bq);
    const list: number[] = [];
    for (let j0 = 0; j0 < sk; j0 += bk) {
      const j1 = Math.min(sk, j0 + bk);
      for (let i = i0; i < i1; i++) {
        if (Math.max(start[i]!, j0) < Math.min(end[i]!, j1)) {
          list.push(j0);
          break;
        }
      }
    }
    blocks.push(list);
  }
  return blocks;
}

/**
 * Kernels.attentionForward and attentionBackward of the `blas` backend (shapes, masks and
 * results as in src/kernels/kernels.ts), over `arena`, whose wasm module provides `tiles`.
 * Scratch (two score tiles, per-row statistics and the key ranges) comes from the arena's
 * `scratch` category for the duration of a call.
 */
export function gemmAttention(sgemm: Sgemm, arena: Arena, tiles: AttentionTiles): Pick<Kernels, 'attentionForward' | 'attentionBackward'> {
  const mem = new Float32Array(arena.buffer);
  const f32 = (byteOffset: number): Float32Array => mem.subarray(byteOffset >> 2);
  const BQ = BLAS_ATTENTION_BLOCK_Q;
  const BK = BLAS_ATTENTION_BLOCK_K;

  interface Scratch {
    tile: number;
    tile2: number;
    m: number;
    l: number;
    rows: number;
    ks: number;
    ke: number;
  }

  /**
   * Run fn for each query matrix with the call's scratch — two BQ×BK tiles, three [BQ] rows,
   * the matrix's ranges — and its visible key blocks.
   */
  function eachMatrix(opts: AttentionOptions, sq: number, sk: number, heads: number, kvHeads: number, d: number, fn: (qm: QueryMatrix, s: Scratch, blocks: number[][]) => void): void {
    const { start, end } = keyRanges(opts.mask, sq, sk);
    const matrices = queryMatrices(sq, heads, kvHeads, d, start, end);
    const tileBytes = BQ * BK * 4;
    const rangeBytes = Math.ceil((matrices[0]!.rows * 4) / 16) * 16;
    const at = arena.allocBytes(2 * tileBytes + 3 * BQ * 4 + 2 * rangeBytes, 'scratch');
    try {
      const ks = at + 2 * tileBytes + 3 * BQ * 4;
      const s: Scratch = { tile: at, tile2: at + tileBytes, m: at + 2 * tileBytes, l: at + 2 * tileBytes + BQ * 4, rows: at + 2 * tileBytes + 2 * BQ * 4, ks, ke: ks + rangeBytes };
      let blocks: number[][] | undefined;
      for (const qm of matrices) {
        // Per-head matrices share one set of ranges: copy and classify once.
        if (blocks === undefined || qm.start !== matrices[0]!.start) {
          new Int32Array(arena.buffer, s.ks, qm.rows).set(qm.start);
          new Int32Array(arena.buffer, s.ke, qm.rows).set(qm.end);
          blocks = visibleKeyBlocks(qm.start, qm.end, qm.rows, sk, BQ, BK);
        }
        fn(qm, s, blocks);
      }
    } finally {
      arena.freeBytes(at);
    }
  }

  return {
    attentionForward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, opts: AttentionOptions): void {
      checkArena('attentionForward', arena, { q, k, v, out, lse });
      const { sq, sk, heads, kvHeads, d } = attentionDims(q, k, v, { out }, lse, opts.mask);
      if (sq === 0 || heads === 0 || d === 0) return;
      const ks = kvHeads * d;
      eachMatrix(opts, sq, sk, heads, kvHeads, d, (qm, s, blocks) => {
        const Sv = f32(s.tile);
        for (let b = 0, i0 = 0; i0 < qm.rows; b++, i0 += BQ) {
          const rows = Math.min(BQ, qm.rows - i0);
          const qAt = q.byteOffset + (qm.at + i0 * qm.ld) * 4;
          const oAt = out.byteOffset + (qm.at + i0 * qm.ld) * 4;
          const qv = f32(qAt);
          const ov = f32(oAt);
          tiles.tileRowsInit(oAt, qm.ld, d, rows, s.m, s.l);
          for (const j0 of blocks[b]!) {
            const cols = Math.min(BK, sk - j0);
            const kvAt = (j0 * kvHeads + qm.kvHead) * d * 4;
            sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, cols, d, 1, qv, qm.ld, f32(k.byteOffset + kvAt), ks, 0, Sv, BK);
            tiles.tileSoftmax(s.tile, BK, rows, cols, s.ks + i0 * 4, s.ke + i0 * 4, j0, opts.scale, s.m, s.l, oAt, qm.ld, d);
            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, rows, d, cols, 1, Sv, BK, f32(v.byteOffset + kvAt), ks, 1, ov, qm.ld);
          }
          tiles.tileRowsFinish(oAt, qm.ld, d, rows, s.m, s.l, lse.byteOffset + (qm.lseAt + i0 * qm.lseStride) * 4, qm.lseStride);
        }
      });
    },

    attentionBackward(q, k, v, o, lse, dO, dq, dk, dv, opts): void {
      checkArena('attentionBackward', arena, { q, k, v, o, lse, dO, dq, dk, dv });
      const { sq, sk, heads, kvHeads, d } = attentionDims(q, k, v, { o, dO, dq, dk, dv }, lse, opts.mask);
      if (sq === 0 || sk === 0 || heads === 0 || d === 0) return;
      const ks = kvHeads * d;
      eachMatrix(opts, sq, sk, heads, kvHeads, d, (qm, s, blocks) => {
        const P = f32(s.tile);
        const dP = f32(s.tile2);
        for (let b = 0, i0 = 0; i0 < qm.rows; b++, i0 += BQ) {
          if (blocks[b]!.length === 0) continue;
          const rows = Math.min(BQ, qm.rows - i0);
          const rowAt = (qm.at + i0 * qm.ld) * 4;
          const qv = f32(q.byteOffset + rowAt);
          const dOv = f32(dO.byteOffset + rowAt);
          const dqv = f32(dq.byteOffset + rowAt);
          const lseAt = lse.byteOffset + (qm.lseAt + i0 * qm.lseStride) * 4;
          // D = rowsum(dO ⊙ O) of the final merged output (algorithms.md §5).
          tiles.tileRowDots(dO.byteOffset + rowAt, o.byteOffset + rowAt, qm.ld, d, rows, s.rows);
          for (const j0 of blocks[b]!) {
            const cols = Math.min(BK, sk - j0);
            const kvAt = (j0 * kvHeads + qm.kvHead) * d * 4;
            const kv = f32(k.byteOffset + kvAt);
            const dkv = f32(dk.byteOffset + kvAt);
            sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, cols, d, 1, qv, qm.ld, kv, ks, 0, P, BK);
            tiles.tileProbs(s.tile, BK, rows, cols, s.ks + i0 * 4, s.ke + i0 * 4, j0, opts.scale, lseAt, qm.lseStride);
            sgemm(ROW_MAJOR, TRANS, NO_TRANS, cols, d, rows, 1, P, BK, dOv, qm.ld, 1, f32(dv.byteOffset + kvAt), ks);
            sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, cols, d, 1, dOv, qm.ld, f32(v.byteOffset + kvAt), ks, 0, dP, BK);
            tiles.tileScoreGrads(s.tile, s.tile2, BK, rows, cols, s.rows, opts.scale);
            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, rows, d, cols, 1, P, BK, kv, ks, 1, dqv, qm.ld);
            sgemm(ROW_MAJOR, TRANS, NO_TRANS, cols, d, rows, 1, P, BK, qv, qm.ld, 1, dkv, ks);
          }
        }
      });
    },
  };
}
