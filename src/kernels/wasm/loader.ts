import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';

/*
 * Finds, compiles and instantiates the `wasm` backend's module (built from assembly/ by
 * scripts/build-wasm.mjs into dist/wasm/). Two builds exist: `relaxed` (fused multiply-add
 * through relaxed SIMD) and `simd` (plain 128-bit SIMD). Node 20's V8 (11.3) validates relaxed
 * SIMD only behind the flag --experimental-wasm-relaxed-simd. Worker threads reject V8 flags in
 * `execArgv` (ERR_WORKER_INVALID_EXEC_ARGV), but V8 flags are process-wide, so the loader sets it
 * with v8.setFlagsFromString() from whichever thread gets here first; if the engine still does
 * not validate the relaxed module, the plain build is used and wasmAvailable() says why.
 *
 * The same way, the loader switches off V8's baseline compiler (--no-liftoff) before the first
 * module is compiled in any thread: V8 otherwise runs every function as Liftoff code until it
 * is hot enough for TurboFan, which made the first training step 2–3× slower than the second
 * (docs/kernels.md, "Compiler tier"). Lazy compilation stays on, so each function is compiled
 * by TurboFan on its first call.
 */

/** The parts of the WebAssembly JS API used here (this project's tsconfig has no "dom" lib to type them). */
interface WebAssemblyApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => CompiledModule;
  Instance: new (module: CompiledModule, imports: object) => { exports: object };
}
/** A compiled WebAssembly.Module, opaque here. */
export interface CompiledModule {
  readonly __brand: 'WebAssembly.Module';
}
const WA = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

/** Which build of the module to run: `auto` takes `relaxed` when the engine supports it. */
export type WasmSimd = 'auto' | 'relaxed' | 'plain';

/** Exports of the compiled module (assembly/index.ts). Addresses are byte offsets into the arena. */
export interface WasmExports {
  matmul(c: number, a: number, b: number, m: number, n: number, k: number, transA: number, transB: number, accumulate: number, scratch: number): void;
  matmulScratchBytes(m: number, n: number, k: number): number;
  /** keyStart, keyEnd: i32 [sq] each, the visible key range [keyStart[i], keyEnd[i]) of query i. */
  attentionForward(
    q: number, k: number, v: number, out: number, lse: number,
    sq: number, sk: number, heads: number, kvHeads: number, d: number, keyStart: number, keyEnd: number, scale: number, scratch: number,
  ): void;
  attentionForwardScratchBytes(sq: number, sk: number, d: number): number;
  attentionBackward(
    q: number, k: number, v: number, o: number, lse: number, dO: number, dq: number, dk: number, dv: number,
    sq: number, sk: number, heads: number, kvHeads: number, d: number, keyStart: number, keyEnd: number, scale: number, scratch: number,
  ): void;
  attentionBackwardScratchBytes(sq: number, sk: number, d: number): number;
  mergeAttention(o: number, lse: number, ob: number, lseb: number, rows: number, d: number): void;
  rmsnormForward(out: number, rstd: number, x: number, w: number, t: number, d: number, eps: number): void;
  rmsnormBackward(dx: number, dw: number, dout: number, x: number, w: number, rstd: number, t: number, d: number, scratch: number): void;
  rmsnormBackwardScratchBytes(d: number): number;
  rope(x: number, positions: number, invFreq: number, t: number, h: number, d: number, sign: number): void;
  swigluForward(out: number, gate: number, up: number, n: number): void;
  swigluBackward(dgate: number, dup: number, dout: number, gate: number, up: number, n: number): void;
  crossEntropy(logits: number, labels: number, losses: number, t: number, v: number, gradScale: number): number;
  embeddingForward(out: number, table: number, ids: number, t: number, d: number): void;
  embeddingBackward(dtable: number, dout: number, ids: number, t: number, d: number): void;
  adamw(param: number, grad: number, m: number, v: number, n: number, lr: number, b1: number, b2: number, eps: number, bc1: number, bc2: number, decay: number): void;
  axpy(y: number, x: number, alpha: number, n: number): void;
  scale(x: number, alpha: number, n: number): void;
  sumSquares(x: number, n: number): number;
}

/** What this process can run. */
export interface WasmAvailability {
  /** The plain SIMD module is built and this engine compiles it. */
  ok: boolean;
  /** Why not, when !ok: the missing file and the command that builds it, or the engine's error. */
  reason?: string;
  /** The relaxed-SIMD (fused multiply-add) module runs here. */
  relaxedSimd: boolean;
  /** How relaxed SIMD was obtained, or why the plain build is used instead. */
  note: string;
}

const BUILD_HINT = 'run `npm run build:wasm` (or `npm run build`) to compile assembly/ with AssemblyScript';
const RELAXED_FLAG = '--experimental-wasm-relaxed-simd';
const OPTIMISING_TIER_FLAG = '--no-liftoff';

/** dist/wasm/kernels-<build>.wasm, next to dist/src/kernels/wasm/ where this file is compiled to. */
function wasmPath(build: 'relaxed' | 'simd'): string {
  return fileURLToPath(new URL(`../../../wasm/kernels-${build}.wasm`, import.meta.url));
}

let availability: WasmAvailability | undefined;
const modules = new Map<'relaxed' | 'simd', CompiledModule>();

function readBuild(build: 'relaxed' | 'simd'): Uint8Array | string {
  const file = wasmPath(build);
  if (!existsSync(file)) return `${file} does not exist: ${BUILD_HINT}`;
  return readFileSync(file);
}

/** Detect (once per thread) which builds run here; may switch on V8's relaxed-SIMD flag. */
export function wasmAvailable(): WasmAvailability {
  if (availability !== undefined) return availability;
  const simd = readBuild('simd');
  if (typeof simd === 'string') return (availability = { ok: false, reason: simd, relaxedSimd: false, note: simd });
  if (!WA.validate(simd)) {
    const reason = `this JavaScript engine (Node ${process.version}) does not validate ${wasmPath('simd')}: it needs WebAssembly 128-bit SIMD and threads (shared memory)`;
    return (availability = { ok: false, reason, relaxedSimd: false, note: reason });
  }
  const relaxed = readBuild('relaxed');
  if (typeof relaxed === 'string') return (availability = { ok: true, relaxedSimd: false, note: `plain SIMD build: ${relaxed}` });
  if (WA.validate(relaxed)) return (availability = { ok: true, relaxedSimd: true, note: 'relaxed SIMD supported natively' });
  try {
    v8.setFlagsFromString(RELAXED_FLAG);
  } catch {
    // An engine without the flag simply keeps failing validation below.
  }
  if (WA.validate(relaxed)) {
    return (availability = { ok: true, relaxedSimd: true, note: `relaxed SIMD switched on at run time with the V8 flag ${RELAXED_FLAG}` });
  }
  return (availability = {
    ok: true,
    relaxedSimd: false,
    note: `this engine (Node ${process.version}) does not support relaxed SIMD even with ${RELAXED_FLAG}: using the plain SIMD build (multiply then add, no fused multiply-add)`,
  });
}

/**
 * The compiled module for `simd` (cached per thread).
 * @throws Error when the module is not built or not supported, or `relaxed` is asked for and unavailable.
 */
export function wasmModule(simd: WasmSimd): { module: CompiledModule; relaxed: boolean } {
  const av = wasmAvailable();
  if (!av.ok) throw new Error(`wasm kernels unavailable: ${av.reason}`);
  if (simd === 'relaxed' && !av.relaxedSimd) throw new Error(`wasm kernels: relaxed SIMD was asked for but is unavailable: ${av.note}`);
  const build = simd === 'plain' || !av.relaxedSimd ? 'simd' : 'relaxed';
  let module = modules.get(build);
  if (module === undefined) {
    // Set before this thread's first compile, since V8 shares compiled code between threads by
    // module bytes: a module compiled with Liftoff anywhere earlier would be reused as it is.
    v8.setFlagsFromString(OPTIMISING_TIER_FLAG);
    module = new WA.Module(readFileSync(wasmPath(build)));
    modules.set(build, module);
  }
  return { module, relaxed: build === 'relaxed' };
}

/** Instantiate `module` over `memory` (a rank's arena): the module's only import. */
export function instantiate(module: CompiledModule, memory: WebAssembly.Memory): WasmExports {
  return new WA.Instance(module, { env: { memory } }).exports as unknown as WasmExports;
}
