import { predictPeakBytes, type MemoryPrediction } from '../memory/predict.js';
import type { ModelConfig } from '../model/config.js';
import { paramLayout } from '../model/params.js';
import { zeroShardCount, type ZeroStage } from '../optim/zero.js';
import { ParallelDims } from '../parallel/dims.js';
import type { MemoryCategory } from '../tensor/arena.js';
import type { PlanLayout } from './cost.js';
import type { GpuProfile } from './profiles.js';

/**
 * Memory per GPU of a planned layout: docs/memory.md's prediction (src/memory/predict.ts
 * `predictPeakBytes`, which replays every allocation of our trainer's step, f32 throughout),
 * reused as is and rescaled per category to mixed precision at the moment of the peak:
 * weights and gradients BF16 (2 of 4 bytes), activations and communication buffers BF16
 * (2 of 4), and `optim` — AdamW m and v, 8 bytes per element in f32 — becomes FP32 master
 * weights + m + v, 12 bytes per element (×1.5); 0 with optimizer offload. Stage 0 thus holds
 * 2 + 2 + 12 = 16 bytes per parameter, ZeRO's 16Ψ. The GPU's `reservedGiB` (CUDA context,
 * NCCL buffers, fragmentation) is added; the layout fits when the total is within HBM.
 */
export const MIXED_PRECISION_SCALE: Record<MemoryCategory, number> = {
  params: 0.5,
  grads: 0.5,
  optim: 1.5,
  saved: 0.5,
  activations: 0.5,
  comm: 0.5,
  scratch: 0.5,
};

export interface GpuMemory {
  peakBytesPerGpu: number;
  /** Model states (params, grads, optim) at the peak, scaled. */
  modelStateBytes: number;
  /** Everything else at the peak (saved, activations, comm, scratch), scaled. */
  activationBytes: number;
  reservedBytes: number;
  hbmBytes: number;
  fits: boolean;
  /** Where the peak happens (predictPeakBytes's phase). */
  phase: string;
  shards: number;
  /** Why it does not fit, when it does not. */
  reason?: string;
}

const cache = new Map<string, MemoryPrediction>();

function predictCached(model: ModelConfig, seqLen: number, layout: PlanLayout, shards: number): MemoryPrediction {
  const key = JSON.stringify([model, seqLen, layout.hp, layout.cp, layout.innerRingSize, layout.checkpoint, layout.checkpointFraction ?? 1, layout.zeroStage, shards]);
  let r = cache.get(key);
  if (r === undefined) {
    r = predictPeakBytes(model, seqLen, { hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize }, { policy: layout.checkpoint, fraction: layout.checkpointFraction ?? 1 }, { stage: layout.zeroStage, shards });
    cache.set(key, r);
  }
  return r;
}

const GiB = 2 ** 30;
const gib = (x: number): string => `${(x / GiB).toFixed(1)} GiB`;

/** Peak bytes per GPU of `layout` and whether it fits `gpu`'s HBM, with the reason when not. @throws ConfigError for a layout the trainer refuses (predictPeakBytes validates it). */
export function gpuMemory(model: ModelConfig, seqLen: number, layout: PlanLayout, gpu: GpuProfile): GpuMemory {
  const dims = new ParallelDims({ dp: layout.dp, hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize, placement: layout.placement });
  const shards = zeroShardCount(dims, layout.zeroStage as ZeroStage, layout.zeroShardGroup);
  const r = predictCached(model, seqLen, layout, shards);
  let states = 0;
  let acts = 0;
  for (const [cat, bytes] of Object.entries(r.atPeak) as [MemoryCategory, number][]) {
    const scale = cat === 'optim' && layout.offload === true ? 0 : MIXED_PRECISION_SCALE[cat];
    if (cat === 'params' || cat === 'grads' || cat === 'optim') states += bytes * scale;
    else acts += bytes * scale;
  }
  const peak = states + acts + gpu.reservedBytes;
  const fits = peak <= gpu.hbmBytes;
  const out: GpuMemory = { peakBytesPerGpu: peak, modelStateBytes: states, activationBytes: acts, reservedBytes: gpu.reservedBytes, hbmBytes: gpu.hbmBytes, fits, phase: r.phase, shards };
  if (!fits) {
    out.reason =
      `needs ${gib(peak)} per GPU > ${gib(gpu.hbmBytes)} HBM of ${gpu.name}: model states ${gib(states)} (ZeRO-${layout.zeroStage}` +
      `${layout.zeroStage > 0 ? ` over ${shards} shards` : ', replicated'}) + activations ${gib(acts)} (${seqLen / (layout.hp * layout.cp)} tokens per GPU, checkpoint ${layout.checkpoint}) + ${gib(gpu.reservedBytes)} reserved, peak at ${r.phase}`;
  }
  return out;
}

/**
 * A cheap lower bound of gpuMemory's peak, to skip the exact replay (slow for many shards) of
 * layouts that cannot fit: the activations at the ZeRO-0 replay's peak (the same at that moment
 * for every stage) plus the model states each stage keeps all step, from the average shard:
 * stage 1 2P + 2P + 12P/n, stage 2 2P + 2P/n + 12P/n, stage 3 16P/n bytes (optim 0 with offload).
 */
export function gpuMemoryLowerBound(model: ModelConfig, seqLen: number, layout: PlanLayout, gpu: GpuProfile): number {
  const dims = new ParallelDims({ dp: layout.dp, hp: layout.hp, cp: layout.cp, innerRingSize: layout.innerRingSize, placement: layout.placement });
  const n = zeroShardCount(dims, layout.zeroStage as ZeroStage, layout.zeroShardGroup);
  const r = predictCached(model, seqLen, { ...layout, zeroStage: 0 }, 1);
  let acts = 0;
  for (const [cat, bytes] of Object.entries(r.atPeak) as [MemoryCategory, number][]) if (cat !== 'params' && cat !== 'grads' && cat !== 'optim') acts += bytes * MIXED_PRECISION_SCALE[cat];
  const P = paramLayout(model).flatSize;
  const optim = layout.offload === true ? 0 : 12;
  const states = layout.zeroStage === 0 ? (4 + optim) * P : layout.zeroStage === 1 ? 4 * P + (optim * P) / n : layout.zeroStage === 2 ? 2 * P + ((2 + optim) * P) / n : ((4 + optim) * P) / n;
  return states + acts + gpu.reservedBytes;
}
