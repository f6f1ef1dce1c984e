import { madd, roundUp, transpose4x4 } from './simd';

/*
 * Single-thread SGEMM in the GotoBLAS / BLIS structure: C is computed in NC-column blocks; for
 * each KC-deep slice, op(B) is packed into NR-wide panels and, per MC-row block, op(A) into
 * MR-tall panels; an MR×NR register tile then runs over KC with broadcast-A × vector-B
 * multiply-adds. Packing absorbs the transposes and zero-pads the edges, so the register tile
 * never branches.
 */

/**
 * Register tile: MR rows × NR columns = 8 f32x4 accumulators. Eight independent chains cover a
 * 4-cycle FMA latency on two FMA pipes; a 6×8 tile (12 accumulators) measured 2× slower because
 * V8's register allocator spilled accumulators to the stack in the inner loop.
 */
export const MR: i32 = 4;
export const NR: i32 = 8;
/** Depth of one packed slice: an MR×KC A panel (4 KiB) and a KC×NR B panel (8 KiB) stay in L1. */
const KC: i32 = 256;
/** Rows of op(A) packed at once: MC×KC floats (192 KiB) stay in L2. */
const MC: i32 = 192;
/** Columns of op(B) packed at once: KC×NC floats (2 MiB) live in L3. */
const NC: i32 = 2048;

/**
 * C[MR×NR] (+)= A·B over `kc` steps. At step p, A's MR values are at a + p·acs (contiguous) and
 * B's NR values at b + p·brs (contiguous); C rows are `ldc` bytes apart. `fromC` false starts
 * from zero instead of C.
 */
// @ts-ignore: decorator
@inline export function tile(kc: i32, a: usize, acs: usize, b: usize, brs: usize, c: usize, ldc: usize, fromC: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  if (fromC) {
    c00 = v128.load(c); c01 = v128.load(c, 16);
    c10 = v128.load(c + ldc); c11 = v128.load(c + ldc, 16);
    c20 = v128.load(c + 2 * ldc); c21 = v128.load(c + 2 * ldc, 16);
    c30 = v128.load(c + 3 * ldc); c31 = v128.load(c + 3 * ldc, 16);
  }
  for (let p = 0; p < kc; p++) {
    const b0 = v128.load(b);
    const b1 = v128.load(b, 16);
    let av = v128.load32_splat(a);
    c00 = madd(av, b0, c00); c01 = madd(av, b1, c01);
    av = v128.load32_splat(a, 4);
    c10 = madd(av, b0, c10); c11 = madd(av, b1, c11);
    av = v128.load32_splat(a, 8);
    c20 = madd(av, b0, c20); c21 = madd(av, b1, c21);
    av = v128.load32_splat(a, 12);
    c30 = madd(av, b0, c30); c31 = madd(av, b1, c31);
    a += acs;
    b += brs;
  }
  v128.store(c, c00); v128.store(c, c01, 16);
  v128.store(c + ldc, c10); v128.store(c + ldc, c11, 16);
  v128.store(c + 2 * ldc, c20); v128.store(c + 2 * ldc, c21, 16);
  v128.store(c + 3 * ldc, c30); v128.store(c + 3 * ldc, c31, 16);
}

/** Scratch bytes {@link matmul} needs for these sizes: one packed A block, one packed B block, one edge tile. */
export function matmulScratchBytes(m: i32, n: i32, k: i32): i32 {
  const kc = min(KC, max(k, 1));
  const mc = roundUp(min(MC, max(m, 1)), MR);
  const nc = roundUp(min(NC, max(n, 1)), NR);
  return (mc * kc + kc * nc + MR * NR) * 4;
}

/**
 * Pack rows [i0, i0+mc) × depth [p0, p0+kc) of op(A) into MR-tall panels: panel q holds, for
 * each depth p, the MR values of rows q·MR.. at dst + (q·kc + p)·MR. Rows past mc are zero.
 * A is [M, K] row-major, or [K, M] when transA.
 */
function packA(dst: usize, a: usize, m: i32, k: i32, transA: bool, i0: i32, p0: i32, mc: i32, kc: i32): void {
  for (let q = 0; q < mc; q += MR) {
    const rows = min(MR, mc - q);
    const panel = dst + <usize>(q * kc) * 4;
    if (transA) {
      for (let p = 0; p < kc; p++) {
        const src = a + (<usize>(p0 + p) * m + i0 + q) * 4;
        const out = panel + <usize>(p * MR) * 4;
        if (rows == MR) v128.store(out, v128.load(src));
        else for (let r = 0; r < MR; r++) store<f32>(out + r * 4, r < rows ? load<f32>(src + r * 4) : 0);
      }
    } else {
      const src = a + (<usize>(i0 + q) * k + p0) * 4;
      let p = 0;
      if (rows == MR) {
        for (; p + 4 <= kc; p += 4) transpose4x4(src + <usize>p * 4, <usize>k * 4, panel + <usize>(p * MR) * 4, MR * 4);
      }
      for (; p < kc; p++) {
        for (let r = 0; r < MR; r++) {
          store<f32>(panel + <usize>(p * MR + r) * 4, r < rows ? load<f32>(src + (<usize>r * k + p) * 4) : 0);
        }
      }
    }
  }
}

/**
 * Pack depth [p0, p0+kc) × columns [j0, j0+nc) of op(B) into NR-wide panels: panel q holds, for
 * each depth p, the NR values of columns q·NR.. at dst + (q·kc + p)·NR. Columns past nc are
 * zero. B is [K, N] row-major, or [N, K] when transB.
 */
function packB(dst: usize, b: usize, n: i32, k: i32, transB: bool, p0: i32, j0: i32, kc: i32, nc: i32): void {
  for (let q = 0; q < nc; q += NR) {
    const cols = min(NR, nc - q);
    const panel = dst + <usize>(q * kc) * 4;
    if (transB) {
      const src = b + (<usize>(j0 + q) * k + p0) * 4;
      let p = 0;
      if (cols == NR) {
        for (; p + 4 <= kc; p += 4) {
          transpose4x4(src + <usize>p * 4, <usize>k * 4, panel + <usize>(p * NR) * 4, NR * 4);
          transpose4x4(src + (<usize>4 * k + p) * 4, <usize>k * 4, panel + <usize>(p * NR + 4) * 4, NR * 4);
        }
      }
      for (; p < kc; p++) {
        for (let j = 0; j < NR; j++) {
          store<f32>(panel + <usize>(p * NR + j) * 4, j < cols ? load<f32>(src + (<usize>j * k + p) * 4) : 0);
        }
      }
    } else if (cols == NR) {
      for (let p = 0; p < kc; p++) {
        const src = b + (<usize>(p0 + p) * n + j0 + q) * 4;
        const out = panel + <usize>(p * NR) * 4;
        v128.store(out, v128.load(src));
        v128.store(out, v128.load(src, 16), 16);
      }
    } else {
      for (let p = 0; p < kc; p++) {
        const src = b + (<usize>(p0 + p) * n + j0 + q) * 4;
        const out = panel + <usize>(p * NR) * 4;
        for (let j = 0; j < NR; j++) store<f32>(out + j * 4, j < cols ? load<f32>(src + j * 4) : 0);
      }
    }
  }
}

/**
 * C = op(A)·op(B) (+ C when `accumulate`); A [M, K] ([K, M] when transA), B [K, N] ([N, K]
 * when transB), C [M, N], all row-major f32 at byte addresses in this memory. `scratch` holds
 * matmulScratchBytes(m, n, k) bytes. C must not overlap A or B.
 */
export function matmul(c: usize, a: usize, b: usize, m: i32, n: i32, k: i32, transA: bool, transB: bool, accumulate: bool, scratch: usize): void {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) memory.fill(c, 0, <usize>m * n * 4);
    return;
  }
  const kcMax = min(KC, k);
  const packedA = scratch;
  const packedB = packedA + <usize>(roundUp(min(MC, m), MR) * kcMax) * 4;
  const edge = packedB + <usize>(roundUp(min(NC, n), NR) * kcMax) * 4;
  const ldc = <usize>n * 4;
  for (let j0 = 0; j0 < n; j0 += NC) {
    const nc = min(NC, n - j0);
    for (let p0 = 0; p0 < k; p0 += KC) {
      const kc = min(KC, k - p0);
      const fromC = accumulate || p0 > 0;
      packB(packedB, b, n, k, transB, p0, j0, kc, nc);
      for (let i0 = 0; i0 < m; i0 += MC) {
        const mc = min(MC, m - i0);
        packA(packedA, a, m, k, transA, i0, p0, mc, kc);
        for (let jr = 0; jr < nc; jr += NR) {
          const bp = packedB + <usize>(jr * kc) * 4;
          const cols = min(NR, nc - jr);
          for (let ir = 0; ir < mc; ir += MR) {
            const ap = packedA + <usize>(ir * kc) * 4;
            const cp = c + (<usize>(i0 + ir) * n + j0 + jr) * 4;
            const rows = min(MR, mc - ir);
            if (rows == MR && cols == NR) {
              if (fromC) tile(kc, ap, MR * 4, bp, NR * 4, cp, ldc, true);
              else tile(kc, ap, MR * 4, bp, NR * 4, cp, ldc, false);
            } else {
              tile(kc, ap, MR * 4, bp, NR * 4, edge, NR * 4, false);
              for (let r = 0; r < rows; r++) {
                for (let j = 0; j < cols; j++) {
                  const dst = cp + <usize>r * ldc + <usize>j * 4;
                  const v = load<f32>(edge + <usize>(r * NR + j) * 4);
                  store<f32>(dst, fromC ? load<f32>(dst) + v : v);
                }
              }
            }
          }
        }
      }
    }
  }
}
