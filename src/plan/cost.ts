import type { CheckpointPolicy } from '../model/checkpoint.js';
import { checkpointedLayers } from '../model/checkpoint.js';
import { headDim, type ModelConfig } from '../model/config.js';
import { modelFlops } from '../model/flops.js';
import { ParallelDims, type Placement } from '../parallel/dims.js';
import type { ZeroShardGroup } from '../parallel/rank-groups.js';
import type { GpuProfile } from './profiles.js';

/**
 * The planner's cost model of one training step on a GPU cluster (docs/plan.md, The model): one
 * term per mechanism of LoongTrain (arXiv 2406.18485), each with its formula and source below.
 * Sources: A = ../shared/reference/algorithms.md (§6 communication volumes, §7 FLOPs),
 * C = ../shared/reference/cluster-data.md (hardware, FlashAttention convention), M = docs/memory.md.
 *
 * Notation: S sequence length, sp = hp·cp, T = S/(hp·cp·tp) tokens of one GPU's share of the
 * work, D model width, H / Hkv query / KV heads, d = D/H, F FFN width, V vocabulary, L layers,
 * w inner ring size, W = cp/w outer ring size, b = 2 bytes (BF16 activations, weights and
 * gradients), P parameters, m sequences per SP group per step (micro-batches, accumulated).
 */

/** One layout of a planned run: the trainer's [parallel], [optim] ZeRO and [checkpoint] keys. */
export interface PlanLayout {
  dp: number;
  hp: number;
  cp: number;
  innerRingSize: number;
  placement: Placement;
  zeroStage: 0 | 1 | 2 | 3;
  zeroShardGroup: ZeroShardGroup;
  checkpoint: CheckpointPolicy;
  /** Share of the first layers that use the policy (checkpoint.fraction); default 1. */
  checkpointFraction?: number;
  /** AdamW states and step on the host (BurstEngine's baseline runs); not in our trainer. */
  offload?: boolean;
  /**
   * Megatron tensor parallelism with sequence parallelism, only to model the published NeMo
   * rows during calibration (our trainer has none: the planner never proposes tp > 1). TP
   * ranks are innermost, so they take the head coordinate's place in the rank grid.
   */
  tp?: number;
  /** Precision of the GEMMs: "fp8" only for the NeMo rows (attention stays BF16). */
  precision?: 'bf16' | 'fp8';
}

/** What is trained: model, sequence and sequences per SP group per step. */
export interface PlanRun {
  model: ModelConfig;
  seqLen: number;
  /** Sequences each SP group processes per step, gradients accumulated (train.batchSize); default 1. */
  batch?: number;
  /** Bytes per activation, weight and gradient element: 2 (BF16, the default) or 4 (f32, our CPU trainer; src/plan/cpu.ts). */
  bytesPerElement?: number;
}

/** The cluster: a GPU profile and how many of them, in nodes of gpusPerNode. */
export interface PlanCluster {
  gpu: GpuProfile;
  gpus: number;
  gpusPerNode: number;
  nicsPerNode: number;
  nicBytesPerSec: number;
}

export type TermKind = 'compute' | 'communication' | 'memory' | 'host';

/** One term of the step: seconds per step and, for communication, how much of it is exposed. */
export interface CostTerm {
  name: string;
  kind: TermKind;
  /** Seconds this term adds to the step (exposed part only for overlapped communication). */
  seconds: number;
  /** For overlapped transfers: their own duration, of which `seconds` is not hidden. */
  transferSeconds?: number;
  formula: string;
}

export interface StepPrediction {
  stepSeconds: number;
  /** Tokens per GPU per second: m·S/(hp·cp·tp) / step. */
  tgs: number;
  /** Model FLOPs per second per GPU over the BF16 peak, causal count (A §7: S(S+1)/2 pairs). */
  mfuCausal: number;
  /** Same, full (non-causal) attention count, the Megatron / NeMo / InternEvo convention (C). */
  mfuFull: number;
  /** Exposed communication and host time over the step. */
  exposedCommShare: number;
  terms: CostTerm[];
}

/** max(c, m) + (1 − η)·min(c, m): c seconds of compute overlapped with m seconds of transfer (η = overlap efficiency). */
export function overlapped(c: number, m: number, eta: number): number {
  return Math.max(c, m) + (1 - eta) * Math.min(c, m);
}

/** Per-token forward GEMM FLOPs (A §7 without attention): 2·(L·(D(D + 2·Hkv·d) + D² + 3·D·F) + D·V). */
export function gemmFlopsPerToken(model: ModelConfig): number {
  const D = model.dim;
  const kv = model.kvHeads * headDim(model);
  return 2 * (model.layers * (D * (D + 2 * kv) + D * D + 3 * D * model.ffnDim) + D * model.vocabSize);
}

/** Parameters P (embedding, blocks with their norms, final norm, and `output` when untied). */
export function paramCount(model: ModelConfig): number {
  const D = model.dim;
  const kv = model.kvHeads * headDim(model);
  const block = 2 * D + D * (D + 2 * kv) + D * D + 3 * D * model.ffnDim;
  return model.vocabSize * D + model.layers * block + D + (model.tiedEmbeddings ? 0 : model.vocabSize * D);
}

function nodeOf(rank: number, gpusPerNode: number): number {
  return Math.floor(rank / gpusPerNode);
}

/**
 * Seconds per byte of the slowest edge of each ring class (inner, outer), all rings of the
 * cluster moving in lockstep. An edge inside a node runs at NVLink speed; an edge between nodes
 * gets min(nicBw, nics·nicBw / E) where E is the number of edges of its class leaving (or
 * entering) that node at once: the GPU pairs that share a node's NICs (one GPU's stream cannot
 * be striped over several NICs, C). When inner and outer edges both cross nodes they also share
 * the NICs over time: `nodeEdges` gives, per class, the most crossing edges of one node, from
 * which predictStep bounds an outer step by the node's total NIC capacity.
 */
function ringSecondsPerByte(dims: ParallelDims, c: PlanCluster): { inner: number; outer: number; innerCrossing: boolean; outerCrossing: boolean; nodeEdges: { inner: number; outer: number } } {
  const w = dims.innerRingSize;
  const W = dims.outerRingSize;
  type Cls = 'inner' | 'outer';
  type Edge = { src: number; dst: number; cls: Cls };
  const edges: Edge[] = [];
  for (let r = 0; r < dims.world; r++) {
    const { c: pos } = dims.coords(r);
    if (w > 1) {
      const ring = dims.innerRing(r);
      edges.push({ src: r, dst: ring[(pos % w + 1) % w]!, cls: 'inner' });
    }
    if (W > 1) {
      const ring = dims.outerRing(r);
      const j = Math.floor(pos / w);
      edges.push({ src: r, dst: ring[(j + 1) % W]!, cls: 'outer' });
    }
  }
  const count = { inner: { out: new Map<number, number>(), in: new Map<number, number>() }, outer: { out: new Map<number, number>(), in: new Map<number, number>() } };
  for (const e of edges) {
    const a = nodeOf(e.src, c.gpusPerNode);
    const b = nodeOf(e.dst, c.gpusPerNode);
    if (a === b) continue;
    count[e.cls].out.set(a, (count[e.cls].out.get(a) ?? 0) + 1);
    count[e.cls].in.set(b, (count[e.cls].in.get(b) ?? 0) + 1);
  }
  const worst = { inner: 0, outer: 0, innerCrossing: false, outerCrossing: false, nodeEdges: { inner: 0, outer: 0 } };
  for (const cls of ['inner', 'outer'] as const) {
    worst.nodeEdges[cls] = Math.max(0, ...count[cls].out.values(), ...count[cls].in.values());
  }
  for (const e of edges) {
    const a = nodeOf(e.src, c.gpusPerNode);
    const b = nodeOf(e.dst, c.gpusPerNode);
    let bw = c.gpu.nvlinkBytesPerSec;
    if (a !== b) {
      const share = Math.max(count[e.cls].out.get(a) ?? 1, count[e.cls].in.get(b) ?? 1);
      bw = Math.min(c.nicBytesPerSec, (c.nicsPerNode * c.nicBytesPerSec) / share);
      if (e.cls === 'inner') worst.innerCrossing = true;
      else worst.outerCrossing = true;
    }
    worst[e.cls] = Math.max(worst[e.cls], 1 / bw);
  }
  return worst;
}

/**
 * Seconds per byte an all-to-all member sends within its group, split by link: intra-node
 * peers over NVLink, peers on other nodes over one NIC per GPU, shared by the node's GPUs
 * that talk off-node at the same time (C: an all-to-all cannot be striped over NICs). Returns
 * the worst member's time for one byte of its total send volume.
 */
function allToAllSecondsPerByte(groupOf: (r: number) => number[], world: number, c: PlanCluster): { perByte: number; offNodeShare: number } {
  let worst = 0;
  let worstOff = 0;
  const offTalkers = new Map<number, number>();
  const info: { node: number; off: number }[] = [];
  for (let r = 0; r < world; r++) {
    const g = groupOf(r);
    const node = nodeOf(r, c.gpusPerNode);
    const peers = g.filter((x) => x !== r);
    const off = peers.length === 0 ? 0 : peers.filter((x) => nodeOf(x, c.gpusPerNode) !== node).length / peers.length;
    info.push({ node, off });
    if (off > 0) offTalkers.set(node, (offTalkers.get(node) ?? 0) + 1);
  }
  for (const { node, off } of info) {
    const nic = Math.min(c.nicBytesPerSec, (c.nicsPerNode * c.nicBytesPerSec) / (offTalkers.get(node) ?? 1));
    const t = Math.max((1 - off) / c.gpu.nvlinkBytesPerSec, off / nic);
    if (t > worst) {
      worst = t;
      worstOff = off;
    }
  }
  return { perByte: worst, offNodeShare: worstOff };
}

/**
 * Bus bandwidth of a ring collective over `group` (all groups of its kind running at once):
 * NVLink inside one node; across nodes min(NVLink, nics·nicBw / groups per node, k·nicBw) with
 * k members per node (C: 4 × HDR nodes reach 85–96 of 100 GB/s all-reduce bus bandwidth).
 */
function busBytesPerSec(group: number[], c: PlanCluster): number {
  const nodes = new Set(group.map((r) => nodeOf(r, c.gpusPerNode)));
  if (nodes.size <= 1) return c.gpu.nvlinkBytesPerSec;
  const k = group.length / nodes.size;
  const groupsPerNode = c.gpusPerNode / k;
  return Math.min(c.gpu.nvlinkBytesPerSec, (c.nicsPerNode * c.nicBytesPerSec) / groupsPerNode, k * c.nicBytesPerSec);
}

/**
 * Predict one step of `layout` for `run` on `cluster`. The layout must already be valid (the
 * planner checks it with the trainer's parseConfig first, src/plan/search.ts).
 */
export function predictStep(run: PlanRun, layout: PlanLayout, cluster: PlanCluster): StepPrediction {
  const { model, seqLen: S } = run;
  const fit = cluster.gpu.fit;
  const eta = fit.overlapEfficiency;
  const alpha = fit.messageLatencyUs * 1e-6;
  const b = run.bytesPerElement ?? 2;
  const m = run.batch ?? 1;
  const tp = layout.tp ?? 1;
  const { hp, cp, dp } = layout;
  const w = layout.innerRingSize;
  const W = cp / w;
  const L = model.layers;
  const D = model.dim;
  const H = model.heads;
  const Hkv = model.kvHeads;
  const d = headDim(model);
  const F = model.ffnDim;
  const share = hp * cp * tp;
  const T = S / share;
  const P = paramCount(model);
  // Topology: TP ranks are innermost (Megatron), so they stand in the head coordinate for the placement.
  const topoHp = hp * tp;
  const dims = new ParallelDims({ dp, hp: topoHp, cp, innerRingSize: w, placement: layout.placement });
  const peak = cluster.gpu.peakFlops;
  const fp8 = layout.precision === 'fp8';
  const gemmRate = fp8 ? (cluster.gpu.peakFlopsFp8 ?? 2 * peak) * (fit.gemmFractionFp8 ?? fit.gemmFraction) : peak * fit.gemmFraction;
  const attnRate = peak * fit.attentionFraction;
  const terms: CostTerm[] = [];
  const add = (t: CostTerm): void => {
    terms.push(t);
  };

  // --- GEMMs: 6·(linear params)·T FLOPs per sequence (A §7: fwd 2·params·T, bwd twice that).
  const gemmFwd = (gemmFlopsPerToken(model) * T) / gemmRate;
  add({ name: 'GEMM forward + backward', kind: 'compute', seconds: 3 * gemmFwd * m, formula: `m·3·2·T·(L·(D(D+2·Hkv·d) + D² + 3DF) + DV) / (${fp8 ? 'FP8 peak·gemmFractionFp8' : 'peak·gemmFraction'}), T = S/(hp·cp·tp)` });

  // --- Attention: causal pairs S(S+1)/2 per head, zigzag-balanced over the cp ring positions
  // (every position the same 2c² + c / 2c² pairs per step, A §4) and split over hp·tp heads;
  // FlashAttention fwd = 4·d·H·pairs, fwd + bwd = 3.5 × fwd (C).
  const attnFwdPerLayer = (4 * d * H * ((S * (S + 1)) / 2)) / share / attnRate;
  const hopFwd = attnFwdPerLayer / cp;
  const hopBwd = 2.5 * hopFwd;

  // --- Ring P2P (A §4, §6): one KV message of 2·(S/cp)·(max(Hkv, hp)/hp)·d elements per hop; in
  // backward KV plus dK/dV, twice the bytes. Each inner hop's transfer overlaps that hop's
  // compute; each outer transfer overlaps a whole inner pass of w hops (posted before it,
  // waited after). Per message a start-up α is exposed.
  const heads = hp * tp;
  const kvBytes = 2 * (S / cp) * (Math.max(Hkv, heads) / heads) * d * b;
  const ringBw = cp > 1 ? ringSecondsPerByte(dims, cluster) : { inner: 0, outer: 0, innerCrossing: false, outerCrossing: false, nodeEdges: { inner: 0, outer: 0 } };
  const nodeNic = cluster.nicsPerNode * cluster.nicBytesPerSec;
  const ringPass = (hop: number, bytes: number): number => {
    const mIn = bytes * ringBw.inner;
    const mOut = bytes * ringBw.outer;
    const inner = hop + (w - 1) * (overlapped(hop, mIn, eta) + alpha);
    // An outer step moves (w−1) inner and one outer message over each crossing edge; a node's NICs carry them all.
    const nicBound = ((ringBw.nodeEdges.inner * (w - 1) + ringBw.nodeEdges.outer) * bytes) / nodeNic;
    return W === 1 ? inner : (W - 1) * (Math.max(overlapped(inner, mOut, eta), nicBound) + alpha) + inner;
  };
  const ringFwd = ringPass(hopFwd, kvBytes);
  const ringBwd = ringPass(hopBwd, 2 * kvBytes);
  add({ name: 'attention forward + backward (FlashAttention)', kind: 'compute', seconds: m * L * 3.5 * attnFwdPerLayer, formula: 'm·L·3.5·4·d·H·S(S+1)/2 / (hp·cp·tp) / (peak·attentionFraction)' });
  const ringExposed = m * L * (ringFwd - hopFwd * cp + ringBwd - hopBwd * cp);
  if (cp > 1) {
    add({
      name: `ring P2P (${W === 1 ? `one ring of ${cp}` : `double ring ${w}×${W}`}${ringBw.innerCrossing ? ', inner edges cross nodes' : ''}${ringBw.outerCrossing ? ', outer edges cross nodes' : ''}), exposed`,
      kind: 'communication',
      seconds: ringExposed,
      transferSeconds: m * L * 3 * kvBytes * ((w - 1) * W * ringBw.inner + (W - 1) * ringBw.outer),
      formula: 'per pass: inner = h + (w−1)·(ov(h, msg/bw_in) + α), pass = (W−1)·(max(ov(inner, msg/bw_out), node NIC bytes / (nics·nicBw)) + α) + inner; ov(c,m) = max + (1−η)·min; msg = 2·(S/cp)·max(Hkv,hp)/hp·d·b (×2 backward)',
    });
  }

  // --- Ulysses all-to-all (A §6): (hp−1)/hp·M·(2 + 2g) elements sent per pass, M = (S/sp)·D,
  // g = max(Hkv, hp)/H; forward and backward the same; blocking (not overlapped), 4 calls per pass.
  let a2aPass = 0;
  if (hp > 1) {
    const M = (S / (hp * cp)) * D;
    const g = Math.max(Hkv, hp) / H;
    const bytes = ((hp - 1) / hp) * M * (2 + 2 * g) * b;
    const hpDims = new ParallelDims({ dp, hp, cp, innerRingSize: w, placement: layout.placement });
    const { perByte, offNodeShare } = allToAllSecondsPerByte((r) => hpDims.hpGroup(r), hpDims.world, cluster);
    a2aPass = bytes * perByte + 4 * alpha;
    add({
      name: `Ulysses all-to-all (hp ${hp}, ${offNodeShare > 0 ? `${Math.round(offNodeShare * 100)}% of peers on other nodes` : 'intra-node'})`,
      kind: 'communication',
      seconds: 2 * m * L * a2aPass,
      formula: '2 passes·m·L·((hp−1)/hp·(S/sp)·D·(2+2g)·b / bw + 4α), bw = NVLink or one NIC per GPU shared by the node\'s off-node talkers',
    });
  }

  // --- Tensor parallelism with sequence parallelism (calibration of the NeMo rows only):
  // per layer and pass 2 all-gathers + 2 reduce-scatters of (tp−1)/tp·(S/cp)·D·b bytes, blocking.
  let tpPass = 0;
  if (tp > 1) {
    tpPass = 4 * (((tp - 1) / tp) * (S / cp) * D * b) / cluster.gpu.nvlinkBytesPerSec + 4 * alpha;
    add({ name: `tensor parallel collectives (tp ${tp})`, kind: 'communication', seconds: 2 * m * L * tpPass, formula: '2 passes·m·L·4·((tp−1)/tp·(S/cp)·D·b / NVLink + α)' });
  }

  // --- Recomputation (src/model/block.ts): `full` recomputes QKV, the attention core with its
  // messages, the output projection and w1/w3 of the MLP; `selective++` only the output
  // projection and w1/w3 (LoongTrain §4.2 Selective Checkpoint++).
  const fraction = layout.checkpointFraction ?? 1;
  const ckLayers = layout.checkpoint === 'none' ? 0 : checkpointedLayers(fraction, L);
  const kv = Hkv * d;
  let recompute = 0;
  if (layout.checkpoint === 'full') {
    const gemm = (2 * T * (D * (D + 2 * kv) + D * D + 2 * D * F)) / gemmRate;
    recompute = ckLayers * (gemm + ringFwd + a2aPass + tpPass);
    add({ name: `recomputation (full, ${ckLayers} layers)`, kind: 'compute', seconds: m * recompute, formula: 'm·layers·(2T·(D(D+2Kv) + D² + 2DF)/gemmRate + attention forward with its ring and all-to-all)' });
  } else if (layout.checkpoint === 'selective++') {
    recompute = (ckLayers * (2 * T * (D * D + 2 * D * F))) / gemmRate;
    add({ name: `recomputation (selective++, ${ckLayers} layers)`, kind: 'compute', seconds: m * recompute, formula: 'm·layers·2T·(D² + 2DF)/gemmRate (never the attention core)' });
  }

  // --- Memory-bound elementwise work (norms, RoPE, residual adds, SwiGLU's silu(gate)∘up, the
  // loss softmax), from what src/model/block.ts reads and writes per token and layer in forward:
  // 2 norms 2·2D, RoPE on q and k 2(D + Kv), 2 residual adds 2·3D, SwiGLU 3F elements of b bytes;
  // backward twice that; a recomputed layer once more; the LM head's logits 3 passes of 4·V bytes.
  const ewLayerFwd = (T * (12 * D + 2 * kv + 3 * F) * b) / (cluster.gpu.hbmBytesPerSec * fit.hbmFraction);
  const ewHead = (3 * T * model.vocabSize * 4) / tp / (cluster.gpu.hbmBytesPerSec * fit.hbmFraction);
  const ewRecompute = layout.checkpoint === 'none' ? 0 : ckLayers * ewLayerFwd;
  add({ name: 'elementwise (norms, RoPE, residuals, SwiGLU, loss)', kind: 'memory', seconds: m * (3 * L * ewLayerFwd + ewHead + ewRecompute), formula: 'm·(3·L + recomputed layers)·T·(12D + 2Kv + 3F)·b / (hbm·hbmFraction) + m·3·T·V·4 / (hbm·hbmFraction)' });

  const fwd = gemmFwd + L * (ringFwd + a2aPass + tpPass + ewLayerFwd) + ewHead / 3;
  const bwd = 2 * gemmFwd + L * (ringBwd + a2aPass + tpPass + 2 * ewLayerFwd) + (2 * ewHead) / 3;
  recompute += ewRecompute;

  // --- ZeRO (Rajbhandari et al. 2020; docs/zero.md): gradients are summed over all dp·sp ranks.
  // Stage 0: all-reduce of 2P·... bytes over the world; stage ≥ 1 over shard group n (with
  // replicas r = world/n): reduce-scatter of b·P over n, all-reduce of b·P/n over r, all-gather of
  // b·P over n after the update; stage 2 reduce-scatters every micro-batch, stage 3 also gathers
  // the parameters twice per micro-batch (forward and backward) and needs no final gather.
  // Ring collectives: RS/AG (n−1)/n·bytes/busBw, AR 2(n−1)/n·bytes/busBw. Gradient reduction
  // overlaps the backward, gathers the forward, with overlap efficiency η.
  const world = dims.world;
  const rs = (n: number, bytes: number, bw: number): number => (n <= 1 ? 0 : ((n - 1) / n) * (bytes / bw) + alpha * Math.log2(n));
  const wb = P * b / tp;
  let gradComm = 0;
  let gatherComm = 0;
  let perMbGrad = 0;
  let perMbGather = 0;
  const allRanks = Array.from({ length: world }, (_, i) => i);
  if (layout.zeroStage === 0) {
    gradComm = 2 * rs(world, wb, busBytesPerSec(tp > 1 ? dims.dpGroup(0) : allRanks, cluster));
  } else {
    const shard = layout.zeroShardGroup === 'world' ? allRanks : layout.zeroShardGroup === 'sp' ? dims.spGroup(0) : dims.dpGroup(0);
    // With tp (NeMo rows) the ranks holding the same weights are dp × cp, not the whole SP block.
    const replicas = layout.zeroShardGroup === 'world' ? [0] : layout.zeroShardGroup === 'sp' ? dims.dpGroup(0) : tp > 1 ? dims.cpGroup(0) : dims.spGroup(0);
    const n = shard.length;
    const bwShard = busBytesPerSec(shard, cluster);
    const rsT = rs(n, wb, bwShard);
    const arT = 2 * rs(replicas.length, wb / n, busBytesPerSec(replicas, cluster));
    const agT = rs(n, wb, bwShard);
    if (layout.zeroStage === 1) {
      gradComm = rsT + arT;
      gatherComm = agT;
    } else if (layout.zeroStage === 2) {
      perMbGrad = rsT;
      gradComm = arT;
      gatherComm = agT;
    } else {
      perMbGrad = rsT;
      gradComm = arT;
      perMbGather = 2 * agT;
    }
  }
  // Exposed part of each: overlapped with the pass it belongs to.
  const exposedOver = (compute: number, comm: number): number => (comm === 0 ? 0 : overlapped(compute, comm, eta) - compute);
  const zeroExposed =
    (m - 1) * (exposedOver(bwd, perMbGrad) + exposedOver(fwd + bwd, perMbGather)) +
    exposedOver(bwd, perMbGrad + gradComm) + exposedOver(fwd + bwd, perMbGather) +
    exposedOver(fwd, gatherComm);
  if (zeroExposed > 0 || gradComm + gatherComm + perMbGrad + perMbGather > 0) {
    add({
      name: `ZeRO-${layout.zeroStage} collectives${layout.zeroStage > 0 ? ` (shards over ${layout.zeroShardGroup})` : ''}, exposed`,
      kind: 'communication',
      seconds: zeroExposed,
      transferSeconds: m * (perMbGrad + perMbGather) + gradComm + gatherComm,
      formula: 'stage 0: AR(world, bP); 1: RS(n, bP) + AR(r, bP/n) + AG(n, bP); 2: RS per micro-batch; 3: + 2 AG per micro-batch; RS/AG = (n−1)/n·bytes/busBw + α·log2 n; exposed = ov(pass, comm) − pass',
    });
  }

  // --- Optimizer step: AdamW over this GPU's shard of P/n elements. On the GPU it is memory
  // bound: read/write FP32 master, m, v (24 bytes), read the BF16 gradient and write the BF16
  // weight (4 bytes): 28 bytes per element at hbm·hbmFraction. Offloaded (BurstEngine's
  // baseline): the gradient shard down and the weights up over PCIe (4 bytes per element)
  // plus the host AdamW rate.
  const shards = layout.zeroStage === 0 ? 1 : layout.zeroShardGroup === 'world' ? world : layout.zeroShardGroup === 'sp' ? hp * cp * tp : dp;
  const shardElems = P / tp / shards;
  if (layout.offload === true) {
    add({ name: 'optimizer step (host, offloaded)', kind: 'host', seconds: (4 * shardElems) / cluster.gpu.pcieBytesPerSec + shardElems / (fit.cpuAdamGElemsPerSec * 1e9), formula: '4·P/n / PCIe + (P/n) / cpuAdamRate' });
  } else {
    add({ name: 'optimizer step (GPU)', kind: 'memory', seconds: (28 * shardElems) / (cluster.gpu.hbmBytesPerSec * fit.hbmFraction), formula: '28·P/n / (hbm·hbmFraction)' });
  }

  const optimizer = terms.filter((t) => t.name.startsWith('optimizer')).reduce((a, t) => a + t.seconds, 0);
  const stepSeconds = m * (fwd + bwd + recompute) + zeroExposed + optimizer;
  const exposed = terms.filter((t) => t.kind === 'communication' || t.kind === 'host').reduce((a, t) => a + t.seconds, 0);
  const tokensPerGpu = (m * S) / share;
  const perGpuFlops = (c: boolean): number => (3 * modelFlops(model, S, c) * m) / share / stepSeconds;
  return {
    stepSeconds,
    tgs: tokensPerGpu / stepSeconds,
    mfuCausal: perGpuFlops(true) / peak,
    mfuFull: perGpuFlops(false) / peak,
    exposedCommShare: exposed / stepSeconds,
    terms,
  };
}
