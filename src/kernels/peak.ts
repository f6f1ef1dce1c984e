import { readFileSync } from 'node:fs';
import os from 'node:os';

/*
 * The native f32 FLOP rate of one core: the MFU denominator of training (train/metrics.ts) and
 * the "% of native peak" of the benches. It is the same figure whatever kernel backend runs, so
 * a backend that cannot use the core's full vector width shows a lower MFU (docs/model.md,
 * "FLOPs and MFU").
 */

/** What the vector units of one core can do, from its CPU flags. */
export interface CoreSimd {
  /** The widest f32 vector instruction set: "AVX-512", "AVX2", "AVX", "SSE", "NEON". */
  isa: string;
  /** f32 lanes of one vector register of that set. */
  lanes: number;
  /**
   * Vector FMA instructions the core issues per cycle at that width. Cores without FMA
   * (AVX without FMA3, SSE) issue one multiply and one add per cycle, counted here as one unit
   * (the same two FLOPs per lane and cycle).
   */
  fmaUnits: number;
  /** Why these numbers: the table row that applied. */
  basis: string;
}

/** One core's native peak and how it was obtained. */
export interface NativePeak extends CoreSimd {
  /** lanes × fmaUnits × 2 (an FMA is two FLOPs) × clockMHz / 1000, GFLOP/s. */
  gflopsPerCore: number;
  /** The clock the peak uses: the higher of nominalMHz and measuredMHz, MHz. */
  clockMHz: number;
  /** The highest clock /proc/cpuinfo (or os.cpus()) reports, MHz; 0 when none is reported. */
  nominalMHz: number;
  /** The clock {@link measureClockMHz} measured, MHz; null when the peak was configured. */
  measuredMHz: number | null;
  /** A sentence saying how the figure was obtained, for logs and bench headers. */
  source: string;
}

/**
 * The vector width and FMA issue rate of one core from its vendor, architecture and flags
 * (/proc/cpuinfo's `flags` on x86, `Features` on arm64):
 *
 * | CPU | flags | lanes × FMA units | source |
 * |---|---|---|---|
 * | Intel Xeon Skylake-SP and later (Cascade Lake, Ice Lake-SP, Sapphire Rapids) | avx512f | 16 × 2 | Intel 64 and IA-32 Architectures Optimization Reference Manual, microarchitecture chapters (two 512-bit FMA ports, p0+p1 fused and p5, on Xeon Gold/Platinum) |
 * | AMD Zen 4 | AuthenticAMD, avx512f | 16 × 1 | AMD Software Optimization Guide for Family 19h (AVX-512 executed as two 256-bit halves on the 256-bit FMA pipes: 32 FLOPs per cycle, as AVX2) |
 * | Intel Haswell and later, AMD Zen 2 and later | avx2, fma | 8 × 2 | the same guides: two 256-bit FMA pipes |
 * | Intel Sandy/Ivy Bridge | avx, no fma | 8 × 1 | one 256-bit multiply and one add port |
 * | older x86 | SSE only | 4 × 1 | one 128-bit multiply and one add port |
 * | arm64 (Cortex-A7x, Neoverse N1/N2) | NEON | 4 × 2 | Arm software optimization guides: two 128-bit FP/ASIMD pipes |
 *
 * Known understatements and overstatements, accepted because flags cannot tell the parts apart:
 * Xeon Bronze/Silver and Ice Lake client parts have one 512-bit FMA port (the peak is then 2×
 * theirs); AMD Zen 1 splits 256-bit FMAs into 128-bit halves (2× theirs); Zen 5 desktop parts
 * have full-width 512-bit pipes, and Neoverse V1/V2 and Apple cores have four 128-bit FMA pipes
 * (half theirs). SVE's width is not in the flags, so arm64 is counted at NEON's 128 bits.
 */
export function coreSimd(cpu: { vendor: string; flags: string; arch: string }): CoreSimd {
  const flags = new Set(cpu.flags.split(/\s+/).filter((f) => f !== ''));
  if (cpu.arch === 'arm64') return { isa: 'NEON', lanes: 4, fmaUnits: 2, basis: 'arm64 NEON: 4 lanes, 2 FMA pipes' };
  if (flags.has('avx512f')) {
    if (cpu.vendor === 'AuthenticAMD') return { isa: 'AVX-512', lanes: 16, fmaUnits: 1, basis: 'AMD AVX-512 (Zen 4) runs as two 256-bit halves: 16 lanes at 1 FMA per cycle' };
    return { isa: 'AVX-512', lanes: 16, fmaUnits: 2, basis: 'AVX-512: 16 lanes, 2 FMA ports' };
  }
  if (flags.has('avx2') && flags.has('fma')) return { isa: 'AVX2', lanes: 8, fmaUnits: 2, basis: 'AVX2 + FMA3: 8 lanes, 2 FMA ports' };
  if (flags.has('avx')) return { isa: 'AVX', lanes: 8, fmaUnits: 1, basis: 'AVX without FMA: 8 lanes, one multiply and one add port' };
  return { isa: 'SSE', lanes: 4, fmaUnits: 1, basis: cpu.flags === '' ? 'CPU flags unknown: assumed 128-bit SSE, one multiply and one add port' : 'SSE only: 4 lanes, one multiply and one add port' };
}

/** This machine's vendor, flags and highest reported clock (/proc/cpuinfo; os.cpus() elsewhere). */
export function readCpuInfo(): { vendor: string; flags: string; arch: string; nominalMHz: number } {
  let text = '';
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // not Linux: flags unknown, clock from os.cpus()
  }
  const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(text)?.[1] ?? '';
  const flags = (/^(?:flags|Features)\s*:(.*)$/m.exec(text)?.[1] ?? '').trim();
  let mhz = 0;
  for (const m of text.matchAll(/^cpu MHz\s*:\s*([\d.]+)/gm)) mhz = Math.max(mhz, Number(m[1]));
  if (mhz <= 0) mhz = Math.max(0, ...os.cpus().map((c) => c.speed));
  return { vendor, flags, arch: os.arch(), nominalMHz: mhz };
}

/**
 * The clock a busy core actually runs at, in MHz: the best of 100 timings of a chain of 8·10⁶
 * dependent one-cycle integer operations (add, xor), one per cycle on any out-of-order core
 * (about 0.3 s in all). Short chains, many times, because on a shared machine a long one is
 * rarely left alone: with load average 8 on 2 cores, 10 chains of 8·10⁷ gave 1520–1737 MHz
 * where 100 of 8·10⁶ gave 2679–2953. Virtual machines often report only the nominal clock in /proc/cpuinfo while
 * the cores boost above it; without this, BLAS would show more than 100% of "peak". Cores that
 * lower their clock for wide vectors (AVX-512 licences) make this an upper bound of the
 * vector clock, so MFU errs low.
 */
export function measureClockMHz(): number {
  const chain = (n: number, y: number, z: number): number => {
    let x = 1;
    for (let i = 0; i < n; i++) {
      x = (x + y) | 0; x ^= z; x = (x + y) | 0; x ^= z;
      x = (x + y) | 0; x ^= z; x = (x + y) | 0; x ^= z;
    }
    return x;
  };
  const n = 1e6;
  let best = 0;
  for (let r = 0; r < 100; r++) {
    const t0 = performance.now();
    clockSink ^= chain(n, r + 3, r + 7);
    best = Math.max(best, (8 * n) / ((performance.now() - t0) * 1e3));
  }
  return best;
}
/** Where the clock chains' results go, so that they cannot be optimised away. */
let clockSink = 0;

let measured: NativePeak | undefined;

/**
 * One core's native f32 peak: lanes × FMA units ({@link coreSimd}) × 2 FLOPs per FMA × the
 * clock, the higher of /proc/cpuinfo's and the measured one ({@link measureClockMHz}; measured
 * once per thread, then cached). With `configuredGflops` (log.peakGflopsPerRank) that figure
 * replaces the product and nothing is measured; the ISA fields still describe the core, so
 * {@link backendCeilingGflops} scales from it.
 */
export function nativePeak(configuredGflops?: number): NativePeak {
  if (configuredGflops !== undefined) {
    const cpu = readCpuInfo();
    const simd = coreSimd(cpu);
    return { ...simd, gflopsPerCore: configuredGflops, clockMHz: (configuredGflops * 1e3) / (simd.lanes * simd.fmaUnits * 2), nominalMHz: cpu.nominalMHz, measuredMHz: null, source: 'log.peakGflopsPerRank' };
  }
  if (measured !== undefined) return measured;
  const cpu = readCpuInfo();
  const simd = coreSimd(cpu);
  const measuredMHz = measureClockMHz();
  const clockMHz = Math.max(cpu.nominalMHz, measuredMHz);
  const clock = measuredMHz >= cpu.nominalMHz ? `${clockMHz.toFixed(0)} MHz measured` : `${clockMHz.toFixed(0)} MHz from /proc/cpuinfo, above the measured ${measuredMHz.toFixed(0)}`;
  const units = simd.fmaUnits === 1 ? '1 FMA unit' : `${simd.fmaUnits} FMA units`;
  measured = {
    ...simd,
    gflopsPerCore: (simd.lanes * simd.fmaUnits * 2 * clockMHz) / 1e3,
    clockMHz,
    nominalMHz: cpu.nominalMHz,
    measuredMHz,
    source: `${simd.isa}: ${simd.lanes} lanes × ${units} × 2 × ${clock}`,
  };
  return measured;
}

/**
 * The f32 lanes each kernel backend's code uses: reference is plain TypeScript, which V8 does
 * not vectorise; wasm is WebAssembly's 128-bit SIMD; the BLAS library's kernels use the core's
 * full width (blas/library.ts picks them by the flags).
 */
const BACKEND_LANES: Record<string, number | 'native'> = { reference: 1, wasm: 4, blas: 'native' };

/**
 * The highest f32 rate a kernel backend's code can reach on one core, GFLOP/s: the native peak
 * scaled to the backend's vector width (reference 1 lane, wasm 4, blas native). On cores with
 * FMA units the plain-SIMD wasm build, which multiplies and adds separately, reaches half of
 * wasm's figure.
 * @throws Error naming the backend when it is not reference, wasm or blas.
 */
export function backendCeilingGflops(backend: string, peak: NativePeak): number {
  const lanes = Object.hasOwn(BACKEND_LANES, backend) ? BACKEND_LANES[backend]! : undefined;
  if (lanes === undefined) throw new Error(`backendCeilingGflops: backend ${JSON.stringify(backend)} is unknown: use "reference", "wasm" or "blas"`);
  return lanes === 'native' ? peak.gflopsPerCore : (peak.gflopsPerCore * Math.min(lanes, peak.lanes)) / peak.lanes;
}
