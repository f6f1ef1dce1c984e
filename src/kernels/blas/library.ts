import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/*
 * Finding and loading a CBLAS library through koffi (an FFI package with prebuilt binaries for
 * Node), once per thread. Every worker_thread loads the library on its own, but the process
 * holds one copy of it: OpenBLAS's thread settings are process-wide.
 */

/** `cblas_sgemm` as koffi exposes it; pointer arguments take Float32Array views. */
export type Sgemm = (
  order: number, transA: number, transB: number, m: number, n: number, k: number,
  alpha: number, a: Float32Array, lda: number, b: Float32Array, ldb: number,
  beta: number, c: Float32Array, ldc: number,
) => void;

export interface BlasLibrary {
  /** The file name or path that loaded. */
  library: string;
  /** OpenBLAS's kernel set (openblas_get_corename, e.g. "SkylakeX") and whether this loader chose it; undefined for other libraries. */
  core?: { name: string; chosenBy: 'OpenBLAS' | 'OPENBLAS_CORETYPE' | 'loongtrain' };
  sgemm: Sgemm;
}

export interface BlasAvailability {
  ok: boolean;
  /** The library that loaded, when ok. */
  library?: string;
  /** BlasLibrary.core, when ok and OpenBLAS. */
  core?: BlasLibrary['core'];
  /** Why no library could be used, with the fix, when not ok. */
  reason?: string;
}

/** Environment variable naming a CBLAS library to load instead of searching. */
export const BLAS_LIBRARY_ENV = 'LOONGTRAIN_BLAS_LIBRARY';

/**
 * Where to look, in order. Debian's libopenblas0 ships libopenblas.so.0 (libopenblas-dev adds
 * the unversioned link); libcblas/libblas.so.3 are the generic alternatives (netlib's libblas3
 * also exports the cblas_* symbols). macOS always has Accelerate.
 */
function candidates(): string[] {
  const named = process.env[BLAS_LIBRARY_ENV];
  if (named !== undefined && named !== '') return [named];
  if (process.platform === 'darwin') return ['/System/Library/Frameworks/Accelerate.framework/Accelerate', 'libopenblas.dylib'];
  return ['libopenblas.so.0', 'libopenblas.so', 'libcblas.so.3', 'libcblas.so', 'libblas.so.3', 'libblas.so'];
}

function installHint(): string {
  if (process.env[BLAS_LIBRARY_ENV]) return `check ${BLAS_LIBRARY_ENV}`;
  if (process.platform === 'darwin') return 'Accelerate should always be present on macOS; or brew install openblas and set ' + BLAS_LIBRARY_ENV;
  return 'apt-get install libopenblas-dev (Debian/Ubuntu) or dnf install openblas-devel, or set ' + BLAS_LIBRARY_ENV + ' to a CBLAS library';
}

/**
 * `(name, value)` → set an environment variable unless it is set, both in `process.env` (for
 * child processes) and in the C environment the BLAS library reads when it loads. A worker
 * thread's `process.env` is its own copy that never reaches C, and the first thread to load
 * BLAS may be a worker (a rank measuring kernel rates, say), so the C side goes through libc's
 * setenv (overwrite 0: a value already in the C environment wins).
 */
function cEnvSetter(koffi: typeof import('koffi')): (name: string, value: string) => void {
  let setenv: ((name: string, value: string, overwrite: number) => number) | undefined;
  try {
    const libc = koffi.load(process.platform === 'darwin' ? '/usr/lib/libSystem.B.dylib' : 'libc.so.6');
    setenv = libc.func('int setenv(const char *name, const char *value, int overwrite)') as typeof setenv;
  } catch {
    // no libc by that name: process.env reaches C from the main thread, which is where the launchers load BLAS first
  }
  return (name, value) => {
    if (process.env[name] === undefined) process.env[name] = value;
    setenv?.(name, process.env[name]!, 0);
  };
}

let loaded: BlasLibrary | { reason: string } | undefined;

/**
 * The OpenBLAS kernel set for this CPU's flags (/proc/cpuinfo): SkylakeX (the AVX-512 SGEMM
 * kernels; later Intel and AMD Zen 4 cores use the same ones) with AVX-512 F/BW/DQ/VL, Haswell
 * (the AVX2 + FMA kernels, also what OpenBLAS runs on Zen 1–3) with AVX2 and FMA, else none. A
 * DYNAMIC_ARCH OpenBLAS picks its kernels from the CPU model and falls back to Prescott (SSE3,
 * about 5× slower SGEMM) for a model newer than itself: Debian bookworm's 0.3.21 does so on
 * Sapphire Rapids (measured here: 20 GFLOP/s at 1024³, 101 with SkylakeX; docs/kernels-blas.md).
 */
export function openBlasCoreType(flags: string): string | undefined {
  const has = (f: string): boolean => new RegExp(`(^|\\s)${f}(\\s|$)`).test(flags);
  if (['avx512f', 'avx512bw', 'avx512dq', 'avx512vl'].every(has)) return 'SkylakeX';
  if (has('avx2') && has('fma')) return 'Haswell';
  return undefined;
}

function cpuFlags(): string {
  try {
    return /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    return '';
  }
}

/**
 * Load the first CBLAS library of the search list (or `LOONGTRAIN_BLAS_LIBRARY`) that exports
 * cblas_sgemm, limited to one BLAS thread: every rank is already one thread on its own core.
 * The result (or the failure) is cached for the thread.
 * @returns the library, or `{ reason }` saying what was tried and how to install one.
 */
export function loadBlas(): BlasLibrary | { reason: string } {
  if (loaded !== undefined) return loaded;
  loaded = tryLoad();
  return loaded;
}

function tryLoad(): BlasLibrary | { reason: string } {
  let koffi: typeof import('koffi');
  try {
    koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  } catch (e) {
    return { reason: `the koffi FFI package did not load (${(e as Error).message.split('\n')[0]}); run npm ci` };
  }
  // Read by OpenBLAS (and Accelerate) once, when the library initialises. A user's own values win;
  // the kernel set chosen is named in the backend's detail line.
  const setDefault = cEnvSetter(koffi);
  setDefault('OPENBLAS_NUM_THREADS', '1');
  setDefault('VECLIB_MAXIMUM_THREADS', '1');
  const userCore = process.env.OPENBLAS_CORETYPE;
  const ourCore = userCore === undefined ? openBlasCoreType(cpuFlags()) : undefined;
  if (ourCore !== undefined) setDefault('OPENBLAS_CORETYPE', ourCore);
  const tried: string[] = [];
  for (const name of candidates()) {
    let lib: ReturnType<typeof koffi.load>;
    try {
      lib = koffi.load(name);
    } catch {
      tried.push(`${name} (not found)`);
      continue;
    }
    let sgemm: Sgemm;
    try {
      sgemm = lib.func('void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)') as Sgemm;
    } catch {
      tried.push(`${name} (no cblas_sgemm)`);
      continue;
    }
    let core: BlasLibrary['core'];
    try {
      (lib.func('void openblas_set_num_threads(int n)') as (n: number) => void)(1);
      const coreName = (lib.func('const char *openblas_get_corename()') as () => string)();
      core = { name: coreName, chosenBy: userCore !== undefined ? 'OPENBLAS_CORETYPE' : ourCore !== undefined && coreName.toLowerCase() === ourCore.toLowerCase() ? 'loongtrain' : 'OpenBLAS' };
    } catch {
      // not OpenBLAS: the environment variables above are all there is
    }
    return { library: name, sgemm, ...(core !== undefined ? { core } : {}) };
  }
  return { reason: `no CBLAS library found (tried ${tried.join(', ')}): ${installHint()}` };
}

/** Whether a CBLAS library loads on this machine, which one, or why not (loads it on first call). */
export function blasAvailable(): BlasAvailability {
  const lib = loadBlas();
  return 'reason' in lib ? { ok: false, reason: lib.reason } : { ok: true, library: lib.library, ...(lib.core !== undefined ? { core: lib.core } : {}) };
}
