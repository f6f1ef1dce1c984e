import type { Arena } from '../../tensor/arena.js';
import type { Tensor } from '../../tensor/tensor.js';
import { shapeText } from '../checks.js';

/*
 * Argument checks of the `wasm` backend, done in TypeScript before any address reaches the
 * module (which trusts its inputs), beyond the shared ones of src/kernels/checks.ts: every
 * tensor must live in the arena this backend was instantiated over, attention shapes, and
 * scratch sizes.
 */

/** @throws Error naming the kernel and tensor when `t` is not in `arena`. */
export function checkArena(kernel: string, arena: Arena, tensors: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(tensors)) {
    if (t.arena !== arena) {
      throw new Error(
        `${kernel}: ${name} ${shapeText(t)} lives in rank ${t.arena.rank}'s arena, not in the arena of rank ${arena.rank} that these wasm kernels were created over (createWasmKernels(arena) per rank)`,
      );
    }
  }
}

export interface AttentionDims {
  sq: number;
  sk: number;
  heads: number;
  kvHeads: number;
  d: number;
}

/**
 * Check q [Sq, H, d], k and v [Sk, Hkv, d] (H a multiple of Hkv), outputs shaped like q (or
 * like k for names starting dk/dv) and lse [Sq, H]; causal needs Sq = Sk.
 * @throws Error naming the tensor, its shape and the expected shape.
 */
export function attentionDims(q: Tensor, k: Tensor, v: Tensor, outs: Record<string, Tensor>, lse: Tensor, causal: boolean): AttentionDims {
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
  if (lse.size !== sq * heads) throw new Error(`attention: lse ${shapeText(lse)} must be [Sq, H] = [${sq}, ${heads}]`);
  if (causal && sq !== sk) {
    throw new Error(`attention: causal attention needs Sq = Sk (query i sees keys j ≤ i), got Sq = ${sq}, Sk = ${sk}; use causal: false for a rectangular block`);
  }
  return { sq, sk, heads, kvHeads, d };
}
