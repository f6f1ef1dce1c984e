import type { Arena } from '../../tensor/arena.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { AdamWOptions, AttentionOptions, Kernels, MatmulOptions } from '../kernels.js';
import { attentionDims, checkCrossEntropy, checkIds, checkMatmul, checkNoOverlap, checkSize, keyRanges, rowsOf, shapeText, tableShape } from '../checks.js';
import { checkArena, checkScratchBytes } from './checks.js';
import { instantiate, wasmModule, type WasmExports, type WasmSimd } from './loader.js';
import type { AttentionTiles } from './tiles.js';

/** Options of {@link createWasmKernels}. */
export interface WasmKernelOptions {
  /** Which build to run (default `auto`: relaxed SIMD when the engine has it, else plain SIMD). */
  simd?: WasmSimd;
}

/** The `wasm` backend bound to one arena, and which build it runs. */
export interface WasmKernels extends Kernels {
  /** True when the fused multiply-add (relaxed SIMD) build runs. */
  readonly relaxedSimd: boolean;
  /** The same module's elementwise kernels of GEMM-tiled attention, on this arena (the `blas` backend's attention). */
  readonly attentionTiles: AttentionTiles;
}

const instances = new WeakMap<Arena, Map<WasmSimd, WasmKernels>>();

/**
 * The `wasm` kernel backend over one rank's arena (DESIGN decision 2; docs/kernels.md): a
 * WebAssembly module compiled from assembly/ and instantiated with `arena.memory` as its memory,
 * so kernels read and write the tensors in place. Every tensor passed in must live in `arena`.
 * Kernels that need scratch (GEMM packing, attention tiles) take it from the arena under the
 * `scratch` category for the duration of the call. One instance per (arena, build) is cached.
 * @throws Error when the module is not built or this engine cannot run it (see wasmAvailable()).
 */
export function createWasmKernels(arena: Arena, options: WasmKernelOptions = {}): WasmKernels {
  const simd = options.simd ?? 'auto';
  let perArena = instances.get(arena);
  if (perArena === undefined) instances.set(arena, (perArena = new Map()));
  let kernels = perArena.get(simd);
  if (kernels === undefined) {
    const { module, relaxed } = wasmModule(simd);
    kernels = bind(arena, instantiate(module, arena.memory), relaxed);
    perArena.set(simd, kernels);
  }
  return kernels;
}

function bind(arena: Arena, w: WasmExports, relaxedSimd: boolean): WasmKernels {
  /**
   * Run fn with `bytes` of arena scratch, returned afterwards even when fn throws.
   * @throws RangeError from {@link checkScratchBytes} for a size no arena can give.
   */
  function withScratch<R>(kernel: string, bytes: number, fn: (at: number) => R): R {
    const at = arena.allocBytes(checkScratchBytes(kernel, bytes), 'scratch');
    try {
      return fn(at);
    } finally {
      arena.freeBytes(at);
    }
  }

  /** Copy an Int32Array (positions, labels, ids: not arena tensors) into scratch at `at`. */
  function putInts(at: number, values: Int32Array): void {
    new Int32Array(arena.buffer, at, values.length).set(values);
  }

  /**
   * Run an attention kernel with `bytes` of module scratch after the mask's per-row key ranges
   * (keyRanges: i32 [sq] start, then end, each block 16-byte aligned) copied into scratch.
   */
  function withRanges(kernel: string, bytes: number, opts: AttentionOptions, sq: number, sk: number, fn: (start: number, end: number, scratch: number) => void): void {
    const rangeBytes = Math.ceil((sq * 4) / 16) * 16;
    withScratch(kernel, 2 * rangeBytes + bytes, (at) => {
      const { start, end } = keyRanges(opts.mask, sq, sk);
      putInts(at, start);
      putInts(at + rangeBytes, end);
      fn(at, at + rangeBytes, at + 2 * rangeBytes);
    });
  }

  return {
    name: 'wasm',
    relaxedSimd,
    attentionTiles: w as unknown as AttentionTiles,

    matmul(c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number, opts: MatmulOptions = {}): void {
      checkArena('matmul', arena, { C: c, A: a, B: b });
      const { transA, transB } = checkMatmul(c, a, b, m, n, k, opts);
      checkNoOverlap('matmul', ['C', c], { A: a, B: b });
      if (m === 0 || n === 0) return;
      withScratch('matmul', w.matmulScratchBytes(m, n, k), (s) =>
        w.matmul(c.byteOffset, a.byteOffset, b.byteOffset, m, n, k, +transA, +transB, +(opts.accumulate === true), s),
      );
    },

    attentionForward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, opts: AttentionOptions): void {
      checkArena('attentionForward', arena, { q, k, v, out, lse });
      const { sq, sk, heads, kvHeads, d } = attentionDims(q, k, v, { out }, lse, opts);
      if (sq === 0 || heads === 0 || d === 0) return;
      withRanges('attentionForward', w.attentionForwardScratchBytes(sq, sk, d), opts, sq, sk, (start, end, s) =>
        w.attentionForward(q.byteOffset, k.byteOffset, v.byteOffset, out.byteOffset, lse.byteOffset, sq, sk, heads, kvHeads, d, start, end, opts.scale, s),
      );
    },

    attentionBackward(q, k, v, o, lse, dO, dq, dk, dv, opts): void {
      checkArena('attentionBackward', arena, { q, k, v, o, lse, dO, dq, dk, dv });
      const { sq, sk, heads, kvHeads, d } = attentionDims(q, k, v, { o, dO, dq, dk, dv }, lse, opts);
      if (sq === 0 || sk === 0 || heads === 0 || d === 0) return;
      withRanges('attentionBackward', w.attentionBackwardScratchBytes(sq, sk, d), opts, sq, sk, (start, end, s) =>
        w.attentionBackward(
          q.byteOffset, k.byteOffset, v.byteOffset, o.byteOffset, lse.byteOffset, dO.byteOffset,
          dq.byteOffset, dk.byteOffset, dv.byteOffset, sq, sk, heads, kvHeads, d, start, end, opts.scale, s,
        ),
      );
    },

    mergeAttention(o: Tensor, lse: Tensor, ob: Tensor, lseb: Tensor): void {
      checkArena('mergeAttention', arena, { o, lse, ob, lseb });
      if (ob.size !== o.size || lseb.size !== lse.size || lse.size === 0 || o.size % lse.size !== 0) {
        throw new Error(
          `mergeAttention: o ${shapeText(o)} and ob ${shapeText(ob)} must be equal [rows, H, d], lse ${shapeText(lse)} and lseb ${shapeText(lseb)} equal [rows, H]`,
        );
      }
      w.mergeAttention(o.byteOffset, lse.byteOffset, ob.byteOffset, lseb.byteOffset, lse.size, o.size / lse.size);
    },

    rmsnormForward(out: Tensor, rstd: Tensor, x: Tensor, wt: Tensor, eps: number): void {
      checkArena('rmsnormForward', arena, { out, rstd, x, w: wt });
      const d = wt.size;
      const t = rowsOf('rmsnormForward', 'x', x, d);
      checkSize('rmsnormForward', 'out', out, t * d, `T·D = ${t}·${d}`);
      checkSize('rmsnormForward', 'rstd', rstd, t, `T = ${t}`);
      w.rmsnormForward(out.byteOffset, rstd.byteOffset, x.byteOffset, wt.byteOffset, t, d, eps);
    },

    rmsnormBackward(dx: Tensor, dw: Tensor, dout: Tensor, x: Tensor, wt: Tensor, rstd: Tensor): void {
      checkArena('rmsnormBackward', arena, { dx, dw, dout, x, w: wt, rstd });
      const d = wt.size;
      const t = rowsOf('rmsnormBackward', 'x', x, d);
      checkSize('rmsnormBackward', 'dx', dx, t * d, `T·D = ${t}·${d}`);
      checkSize('rmsnormBackward', 'dout', dout, t * d, `T·D = ${t}·${d}`);
      checkSize('rmsnormBackward', 'dw', dw, d, `D = ${d}`);
      checkSize('rmsnormBackward', 'rstd', rstd, t, `T = ${t}`);
      withScratch('rmsnormBackward', w.rmsnormBackwardScratchBytes(d), (s) =>
        w.rmsnormBackward(dx.byteOffset, dw.byteOffset, dout.byteOffset, x.byteOffset, wt.byteOffset, rstd.byteOffset, t, d, s),
      );
    },

    rope(x: Tensor, positions: Int32Array, theta: number, inverse: boolean): void {
      checkArena('rope', arena, { x });
      const s = x.shape;
      if (s.length !== 3 || s[0] !== positions.length || s[2]! % 2 !== 0) {
        throw new Error(`rope: x has shape [${s.join(', ')}], expected [T, H, d] with T = positions.length = ${positions.length} and d even`);
      }
      if (!(theta > 0) || !Number.isFinite(theta)) throw new Error(`rope: theta = ${theta} is invalid: it must be a positive finite number`);
      const [t, h, d] = s as [number, number, number];
      if (x.size === 0) return;
      const half = d / 2;
      // Positions (i32) first, then θ^(−2i/d) as f64 (8-byte aligned: the arena aligns to 64).
      const freqAt = Math.ceil((t * 4) / 8) * 8;
      withScratch('rope', freqAt + half * 8, (at) => {
        putInts(at, positions);
        const invFreq = new Float64Array(arena.buffer, at + freqAt, half);
        for (let i = 0; i < half; i++) invFreq[i] = Math.pow(theta, (-2 * i) / d);
        w.rope(x.byteOffset, at, at + freqAt, t, h, d, inverse ? -1 : 1);
      });
    },

    swigluForward(out: Tensor, gate: Tensor, up: Tensor): void {
      checkArena('swigluForward', arena, { out, gate, up });
      checkSize('swigluForward', 'up', up, gate.size, `gate's size`);
      checkSize('swigluForward', 'out', out, gate.size, `gate's size`);
      w.swigluForward(out.byteOffset, gate.byteOffset, up.byteOffset, gate.size);
    },

    swigluBackward(dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor): void {
      checkArena('swigluBackward', arena, { dgate, dup, dout, gate, up });
      for (const [name, t] of [['up', up], ['dout', dout], ['dgate', dgate], ['dup', dup]] as const) {
        checkSize('swigluBackward', name, t, gate.size, `gate's size`);
      }
      w.swigluBackward(dgate.byteOffset, dup.byteOffset, dout.byteOffset, gate.byteOffset, up.byteOffset, gate.size);
    },

    crossEntropy(logits: Tensor, labels: Int32Array, losses: Tensor, gradScale: number): number {
      checkArena('crossEntropy', arena, { logits, losses });
      const t = labels.length;
      const v = checkCrossEntropy(logits, labels, losses);
      if (t === 0) return 0;
      checkIds('crossEntropy', 'labels', labels, v, true);
      return withScratch('crossEntropy', t * 4, (at) => {
        putInts(at, labels);
        return w.crossEntropy(logits.byteOffset, at, losses.byteOffset, t, v, gradScale);
      });
    },

    embeddingForward(out: Tensor, table: Tensor, ids: Int32Array): void {
      checkArena('embeddingForward', arena, { out, table });
      const [v, d] = tableShape('embeddingForward', table);
      checkSize('embeddingForward', 'out', out, ids.length * d, `T·D = ${ids.length}·${d}`);
      checkIds('embeddingForward', 'ids', ids, v, false);
      if (ids.length === 0) return;
      withScratch('embeddingForward', ids.length * 4, (at) => {
        putInts(at, ids);
        w.embeddingForward(out.byteOffset, table.byteOffset, at, ids.length, d);
      });
    },

    embeddingBackward(dtable: Tensor, dout: Tensor, ids: Int32Array): void {
      checkArena('embeddingBackward', arena, { dtable, dout });
      const [v, d] = tableShape('embeddingBackward', dtable);
      checkSize('embeddingBackward', 'dout', dout, ids.length * d, `T·D = ${ids.length}·${d}`);
      checkIds('embeddingBackward', 'ids', ids, v, false);
      if (ids.length === 0) return;
      withScratch('embeddingBackward', ids.length * 4, (at) => {
        putInts(at, ids);
        w.embeddingBackward(dtable.byteOffset, dout.byteOffset, at, ids.length, d);
      });
    },

    adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamWOptions): void {
      checkArena('adamw', arena, { param, grad, m, v });
      for (const [name, t] of [['grad', grad], ['m', m], ['v', v]] as const) checkSize('adamw', name, t, param.size, `param's size`);
      if (!Number.isInteger(opts.step) || opts.step < 1) throw new Error(`adamw: step = ${opts.step} is invalid: it must be a positive integer (1-based)`);
      const { lr, beta1, beta2, eps, weightDecay, step } = opts;
      w.adamw(
        param.byteOffset, grad.byteOffset, m.byteOffset, v.byteOffset, param.size,
        lr, beta1, beta2, eps, 1 - Math.pow(beta1, step), 1 - Math.pow(beta2, step), 1 - lr * weightDecay,
      );
    },

    axpy(y: Tensor, x: Tensor, alpha: number): void {
      checkArena('axpy', arena, { y, x });
      checkSize('axpy', 'x', x, y.size, `y's size`);
      w.axpy(y.byteOffset, x.byteOffset, alpha, y.size);
    },

    scale(x: Tensor, alpha: number): void {
      checkArena('scale', arena, { x });
      w.scale(x.byteOffset, alpha, x.size);
    },

    sumSquares(x: Tensor): number {
      checkArena('sumSquares', arena, { x });
      return w.sumSquares(x.byteOffset, x.size);
    },
  };
}
