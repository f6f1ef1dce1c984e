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
 * For each query block, the key blocks holding at least one pair some of its rows see, from
 * the per-row ranges [start[i], end[i]): the same for every head, so computed once per call.
 */
function visibleKeyBlocks(start: Int32Array, end: Int32Array, sq: number, sk: number, bq: number, bk: number): number[][] {
  const blocks: number[][] = [];
  for (let i0 = 0; i0 < sq; i0 += bq) {
    const i1 = Math.min(sq, i0 + bq);
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
 * Scratch (two score tiles and per-row statistics, under 0.6 MiB) comes from the arena's
 * `scratch` category for the duration of a call.
 */
export function gemmAttention(sgemm: Sgemm, arena: Arena, tiles: AttentionTiles): Pick<Kernels, 'attentionForward' | 'attentionBackward'> {
  const f32 = (byteOffset: number): Float32Array => arena.floats.subarray(byteOffset >> 2);
  const BQ = BLAS_ATTENTION_BLOCK_Q;
  const BK = BLAS_ATTENTION_BLOCK_K;

  /** Run fn with the call's scratch: two BQ×BK tiles, four [BQ] rows, and the ranges [sq] twice. */
  function withScratch(opts: AttentionOptions, sq: number, sk: number, fn: (s: { tile: number; tile2: number; m: number; l: number; rows: number; ks: number; ke: number; start: Int32Array; end: Int32Array }) => void): void {
    const tileBytes = BQ * BK * 4;
    const rangeBytes = Math.ceil((sq * 4) / 16) * 16;
    const at = arena.allocBytes(2 * tileBytes + 3 * BQ * 4 + 2 * rangeBytes, 'scratch');
    try {
      const { start, end } = keyRanges(opts.mask, sq, sk);
      const ks = at + 2 * tileBytes + 3 * BQ * 4;
      const ke = ks + rangeBytes;
      new Int32Array(arena.buffer, ks, sq).set(start);
      new Int32Array(arena.buffer, ke, sq).set(end);
      fn({ tile: at, tile2: at + tileBytes, m: at + 2 * tileBytes, l: at + 2 * tileBytes + BQ * 4, rows: at + 2 * tileBytes + 2 * BQ * 4, ks, ke, start, end });
    } finally {
      arena.freeBytes(at);
    }
  }

  return {
    attentionForward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, opts: AttentionOptions): void {
      checkArena('attentionForward', arena, { q, k, v, out, lse });
      const { sq, sk, heads, kvHeads, d, group } = attentionDims(q, k, v, { out }, lse, opts);
      if (sq === 0 || heads === 0 || d === 0) return;
      const qs = heads * d;
      const ks = kvHeads * d;
      withScratch(opts, sq, sk, (s) => {
        const blocks = visibleKeyBlocks(s.start, s.end, sq, sk, BQ, BK);
        const S = f32(s.tile);
        for (let b = 0, i0 = 0; i0 < sq; b++, i0 += BQ) {
          const rows = Math.min(BQ, sq - i0);
          for (let h = 0; h < heads; h++) {
            const g = Math.floor(h / group);
            const qAt = q.byteOffset + (i0 * heads + h) * d * 4;
            const oAt = out.byteOffset + (i0 * heads + h) * d * 4;
            const qv = f32(qAt);
            const ov = f32(oAt);
            tiles.tileRowsInit(oAt, qs, d, rows, s.m, s.l);
            for (const j0 of blocks[b]!) {
              const cols = Math.min(BK, sk - j0);
              const kvAt = (j0 * kvHeads + g) * d * 4;
              sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, cols, d, 1, qv, qs, f32(k.byteOffset + kvAt), ks, 0, S, BK);
              tiles.tileSoftmax(s.tile, BK, rows, cols, s.ks + i0 * 4, s.ke + i0 * 4, j0, opts.scale, s.m, s.l, oAt, qs, d);
              sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, rows, d, cols, 1, S, BK, f32(v.byteOffset + kvAt), ks, 1, ov, qs);
            }
            tiles.tileRowsFinish(oAt, qs, d, rows, s.m, s.l, lse.byteOffset + (i0 * heads + h) * 4, heads);
          }
        }
      });
    },

    attentionBackward(q, k, v, o, lse, dO, dq, dk, dv, opts): void {
      checkArena('attentionBackward', arena, { q, k, v, o, lse, dO, dq, dk, dv });
      const { sq, sk, heads, kvHeads, d, group } = attentionDims(q, k, v, { o, dO, dq, dk, dv }, lse, opts);
      if (sq === 0 || sk === 0 || heads === 0 || d === 0) return;
      const qs = heads * d;
      const ks = kvHeads * d;
      withScratch(opts, sq, sk, (s) => {
        const blocks = visibleKeyBlocks(s.start, s.end, sq, sk, BQ, BK);
        const P = f32(s.tile);
        const dP = f32(s.tile2);
        for (let b = 0, i0 = 0; i0 < sq; b++, i0 += BQ) {
          const rows = Math.min(BQ, sq - i0);
          if (blocks[b]!.length === 0) continue;
          for (let h = 0; h < heads; h++) {
            const g = Math.floor(h / group);
            const rowAt = (i0 * heads + h) * d * 4;
            const qv = f32(q.byteOffset + rowAt);
            const dOv = f32(dO.byteOffset + rowAt);
            const dqv = f32(dq.byteOffset + rowAt);
            const lseAt = lse.byteOffset + (i0 * heads + h) * 4;
            // D = rowsum(dO ⊙ O) of the final merged output (algorithms.md §5).
            tiles.tileRowDots(dO.byteOffset + rowAt, o.byteOffset + rowAt, qs, d, rows, s.rows);
            tiles.tileNegRows(s.tile2, BK, rows, s.rows);
            for (const j0 of blocks[b]!) {
              const cols = Math.min(BK, sk - j0);
              const kvAt = (j0 * kvHeads + g) * d * 4;
              const kv = f32(k.byteOffset + kvAt);
              const dkv = f32(dk.byteOffset + kvAt);
              sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, cols, d, 1, qv, qs, kv, ks, 0, P, BK);
              tiles.tileProbs(s.tile, BK, rows, cols, s.ks + i0 * 4, s.ke + i0 * 4, j0, opts.scale, lseAt, heads);
              sgemm(ROW_MAJOR, TRANS, NO_TRANS, cols, d, rows, 1, P, BK, dOv, qs, 1, f32(dv.byteOffset + kvAt), ks);
              // β = 1: the dP tile holds −D (tileNegRows, reset by tileScoreGrads), so this yields dP − D.
              sgemm(ROW_MAJOR, NO_TRANS, TRANS, rows, cols, d, 1, dOv, qs, f32(v.byteOffset + kvAt), ks, 1, dP, BK);
              tiles.tileScoreGrads(s.tile, s.tile2, BK, rows, cols, s.rows, opts.scale);
              sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, rows, d, cols, 1, P, BK, kv, ks, 1, dqv, qs);
              sgemm(ROW_MAJOR, TRANS, NO_TRANS, cols, d, rows, 1, P, BK, qv, qs, 1, dkv, ks);
            }
          }
        }
      });
    },
  };
}
