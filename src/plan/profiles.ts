import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { loadConfig, suggest } from '../train/config.js';

/**
 * GPU profiles and model presets of the planner (docs/plan.md). Both are TOML files users copy
 * and edit: `configs/plan/<gpu>.toml` (sections [gpu], [node], [fit]) and
 * `configs/plan/<model>.toml` (an ordinary training config of ours whose [model] section is the
 * preset; any config file of ours works as a model). Hardware facts come from
 * ../shared/reference/cluster-data.md; the [fit] values from `loongtrain plan --calibrate`.
 */

/** Where the shipped profiles and presets live (dist/src/plan → configs/plan). */
export const PLAN_CONFIG_DIR = fileURLToPath(new URL('../../../configs/plan/', import.meta.url));

const pos = () => z.number().positive();
const frac = () => z.number().gt(0).max(1);

const gpuSchema = z.strictObject({
  gpu: z.strictObject({
    name: z.string().min(1),
    /** Dense BF16 peak, TFLOP/s (the MFU denominator). */
    peakTflops: pos(),
    /** Dense FP8 peak, TFLOP/s; absent when the GPU has no FP8 tensor cores. */
    peakTflopsFp8: pos().optional(),
    hbmGiB: pos(),
    hbmTBps: pos(),
    /** Achievable NVLink bandwidth per direction per GPU, GB/s (also the bus bandwidth of intra-node collectives). */
    nvlinkGBps: pos(),
    /** Host link per GPU, GB/s (optimizer offload). */
    pcieGBps: pos(),
    /** HBM the framework cannot use (CUDA context, NCCL buffers, allocator fragmentation), GiB. */
    reservedGiB: z.number().min(0),
  }),
  node: z.strictObject({
    gpusPerNode: z.number().int().min(1),
    nicsPerNode: z.number().int().min(1),
    /** Achievable bandwidth of one NIC per direction, GB/s. */
    nicGBps: pos(),
  }),
  fit: z.strictObject({
    /** Achieved share of peakTflops of the dense GEMMs (projections, MLP, LM head), BF16. */
    gemmFraction: frac(),
    /** Achieved share of peakTflopsFp8 of the GEMMs in FP8 runs. */
    gemmFractionFp8: frac().optional(),
    /** Achieved share of peakTflops of FlashAttention-style fwd + bwd, counted as 3.5 × the causal forward. */
    attentionFraction: frac(),
    /** Achieved share of hbmTBps of the memory-bound optimizer step. */
    hbmFraction: frac(),
    /** Start-up cost of one message or collective call, µs. */
    messageLatencyUs: z.number().min(0),
    /** Overlap efficiency η: overlapping c seconds of compute with m of transfer takes max(c, m) + (1 − η)·min(c, m). */
    overlapEfficiency: z.number().min(0).max(1),
    /** Host AdamW rate per GPU process with optimizer offload, 10⁹ elements/s. */
    cpuAdamGElemsPerSec: pos(),
  }),
});

export type GpuProfileFile = z.infer<typeof gpuSchema>;

/** A GPU and the node it sits in, with the fitted free parameters of the cost model. */
export interface GpuProfile {
  /** Profile name (file stem) or path it was read from. */
  source: string;
  name: string;
  peakFlops: number;
  peakFlopsFp8?: number;
  hbmBytes: number;
  hbmBytesPerSec: number;
  nvlinkBytesPerSec: number;
  pcieBytesPerSec: number;
  reservedBytes: number;
  gpusPerNode: number;
  nicsPerNode: number;
  nicBytesPerSec: number;
  fit: FitParams;
}

/** The free parameters fitted to the published rows (src/plan/calibration.ts). */
export interface FitParams {
  gemmFraction: number;
  gemmFractionFp8?: number;
  attentionFraction: number;
  hbmFraction: number;
  messageLatencyUs: number;
  overlapEfficiency: number;
  cpuAdamGElemsPerSec: number;
}

/** The names of the shipped profiles and presets (configs/plan/*.toml), split by kind. */
export function shippedNames(): { gpus: string[]; models: string[] } {
  const files = existsSync(PLAN_CONFIG_DIR) ? readdirSync(PLAN_CONFIG_DIR).filter((f) => f.endsWith('.toml')) : [];
  const gpus: string[] = [];
  const models: string[] = [];
  for (const f of files.sort()) {
    const raw = parseToml(readFileSync(PLAN_CONFIG_DIR + f, 'utf8'));
    (raw.gpu !== undefined ? gpus : models).push(f.slice(0, -5));
  }
  return { gpus, models };
}

function resolvePath(nameOrPath: string, kind: 'gpus' | 'models', flag: string): string {
  if (nameOrPath.endsWith('.toml') || nameOrPath.includes('/')) {
    if (!existsSync(nameOrPath)) throw new ConfigError(`${flag} ${nameOrPath}: file does not exist`);
    return nameOrPath;
  }
  const names = shippedNames()[kind];
  const key = nameOrPath.toLowerCase();
  if (!names.includes(key)) {
    throw new ConfigError(`${flag} ${JSON.stringify(nameOrPath)} is unknown${suggest(key, names)}: use one of ${names.join(', ')} or a path to a .toml file`);
  }
  return `${PLAN_CONFIG_DIR}${key}.toml`;
}

/** Parse a GPU profile object (as read from TOML). @throws ConfigError listing every problem. */
export function parseGpuProfile(raw: unknown, source: string): GpuProfile {
  const r = gpuSchema.safeParse(raw);
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`GPU profile ${source}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
  const { gpu, node, fit } = r.data;
  return {
    source,
    name: gpu.name,
    peakFlops: gpu.peakTflops * 1e12,
    ...(gpu.peakTflopsFp8 !== undefined ? { peakFlopsFp8: gpu.peakTflopsFp8 * 1e12 } : {}),
    hbmBytes: gpu.hbmGiB * 2 ** 30,
    hbmBytesPerSec: gpu.hbmTBps * 1e12,
    nvlinkBytesPerSec: gpu.nvlinkGBps * 1e9,
    pcieBytesPerSec: gpu.pcieGBps * 1e9,
    reservedBytes: gpu.reservedGiB * 2 ** 30,
    gpusPerNode: node.gpusPerNode,
    nicsPerNode: node.nicsPerNode,
    nicBytesPerSec: node.nicGBps * 1e9,
    fit: { ...fit },
  };
}

/** A GPU profile by shipped name (a100, a800, h100, h200) or path. @throws ConfigError */
export function loadGpuProfile(nameOrPath: string): GpuProfile {
  const path = resolvePath(nameOrPath, 'gpus', '--gpu');
  let raw: unknown;
  try {
    raw = parseToml(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`--gpu ${path} is not valid TOML: ${(e as Error).message}`);
  }
  return parseGpuProfile(raw, path.startsWith(PLAN_CONFIG_DIR) ? nameOrPath.toLowerCase() : path);
}

/** A model: a shipped preset name (llama2-7b, llama3-8b, llama2-13b, llama2-70b) or any config TOML of ours, read by the trainer's own loadConfig. */
export function loadModel(nameOrPath: string): { model: ModelConfig; source: string } {
  const path = resolvePath(nameOrPath, 'models', '--model');
  const cfg = loadConfig(path);
  const m = cfg.model;
  const model: ModelConfig = {
    vocabSize: m.vocabSize, dim: m.dim, layers: m.layers, heads: m.heads, kvHeads: m.kvHeads, ffnDim: m.ffnDim,
    ropeTheta: m.ropeTheta, normEps: m.normEps, tiedEmbeddings: m.tiedEmbeddings, initStd: m.initStd,
  };
  return { model, source: path.startsWith(PLAN_CONFIG_DIR) ? nameOrPath.toLowerCase() : path };
}
