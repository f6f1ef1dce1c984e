import type { Command } from 'commander';
import { Option } from 'commander';
import { ConfigError } from '../errors.js';
import { CHECKPOINT_POLICIES, type CheckpointPolicy } from '../model/checkpoint.js';
import { PLACEMENTS, type Placement } from '../parallel/dims.js';
import { ZERO_SHARD_GROUPS, type ZeroShardGroup } from '../parallel/rank-groups.js';
import { calibrate, evaluateCalibration, formatCalibration } from './calibration.js';
import type { PlanCluster, PlanRun } from './cost.js';
import { loadGpuProfile, loadModel, shippedNames } from './profiles.js';
import { allQuestionTables } from './questions.js';
import { planLayouts, type LayoutFixes, type PlannedLayout } from './search.js';

/** The flags of `loongtrain plan` as commander gives them. */
export interface PlanFlags {
  model: string;
  seqLen?: number;
  gpus?: number;
  gpusPerNode?: number;
  gpu: string;
  nicsPerNode?: number;
  nicGbps?: number;
  batch: number;
  dp?: number;
  hp?: number;
  cp?: number;
  innerRingSize?: number;
  placement?: Placement;
  zeroStage?: number;
  zeroShardGroup?: ZeroShardGroup;
  checkpoint?: CheckpointPolicy;
  checkpointFraction?: number;
  top: number;
  json?: boolean;
  explain?: boolean;
  calibrate?: boolean;
  fit?: boolean;
  questions?: boolean;
}

function intFlag(flag: string, min = 1): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new ConfigError(`${flag} ${JSON.stringify(v)} is invalid: it must be an integer ≥ ${min}`);
    return n;
  };
}

function numFlag(flag: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${flag} ${JSON.stringify(v)} is invalid: it must be a positive number`);
    return n;
  };
}

/** Register `loongtrain plan` on the CLI program (src/cli/main.ts). */
export function registerPlanCommand(program: Command): void {
  const names = shippedNames();
  program
    .command('plan')
    .description(
      'pick the layout for a GPU cluster: rank dp × hp × cp, inner ring size, placement, ZeRO stage and checkpoint policy by the predicted tokens per GPU per second of a cost model calibrated on published runs (docs/plan.md)',
    )
    .option('--model <name|file>', `model preset (${names.models.join(', ')}) or a path to one of our config TOMLs (its [model] is used)`, 'llama2-7b')
    .option('--seq-len <n>', 'tokens of one sequence S (required unless --calibrate)', intFlag('--seq-len', 2))
    .option('--gpus <n>', 'GPUs in the job = dp·hp·cp (required unless --calibrate)', intFlag('--gpus'))
    .option('--gpus-per-node <n>', "GPUs per node (default: the GPU profile's)", intFlag('--gpus-per-node'))
    .option('--gpu <name|file>', `GPU profile (${names.gpus.join(', ')}) or a path to a profile TOML like configs/plan/a800.toml`, 'a800')
    .option('--nics-per-node <n>', "NICs per node (default: the profile's)", intFlag('--nics-per-node'))
    .option('--nic-gbps <x>', "achievable GB/s of one NIC per direction (default: the profile's)", numFlag('--nic-gbps'))
    .option('--batch <n>', 'sequences each SP group processes per step, gradients accumulated (train.batchSize)', intFlag('--batch'), 1)
    .option('--dp <n>', 'fix the data-parallel size (sp = gpus / dp)', intFlag('--dp'))
    .option('--hp <n>', 'fix the head-parallel (Ulysses) size', intFlag('--hp'))
    .option('--cp <n>', 'fix the context-parallel (ring) size', intFlag('--cp'))
    .option('--inner-ring-size <n>', 'fix the inner ring size w of Double-Ring-Attention (w = cp: one plain ring)', intFlag('--inner-ring-size'))
    .addOption(new Option('--placement <p>', 'fix the placement').choices(PLACEMENTS as string[]))
    .addOption(new Option('--zero-stage <n>', 'fix the ZeRO stage').choices(['0', '1', '2', '3']).argParser(Number))
    .addOption(new Option('--zero-shard-group <g>', 'fix the ZeRO shard group (hybrid ZeRO: sp or dp)').choices(ZERO_SHARD_GROUPS as string[]))
    .addOption(new Option('--checkpoint <policy>', 'fix the activation checkpoint policy').choices(CHECKPOINT_POLICIES as unknown as string[]))
    .option('--checkpoint-fraction <x>', 'share of the first layers that use the checkpoint policy, in (0, 1]', numFlag('--checkpoint-fraction'))
    .option('--top <n>', 'how many layouts to list', intFlag('--top'), 10)
    .option('--json', 'print one JSON object { layouts: [{dp, hp, cp, innerRingSize, placement, zeroStage, checkpoint, stepSeconds, tgs, mfuCausal, mfuFull, peakBytesPerGpu, fits}] } on stdout')
    .option('--explain', "break the best layout's step (or the one the fixing flags give) into the cost model's terms")
    .option('--calibrate', 'predict the calibration rows of cluster-data.md with the shipped profiles and print predicted / published TGS per row')
    .option('--fit', 'with --calibrate: refit the free parameters first (Nelder–Mead, a few seconds) and print them')
    .option('--questions', "print docs/plan.md's tables answering the paper's questions (placement, inner ring size, Ulysses' limit, hybrid ZeRO, checkpointing); takes about 10 s")
    .action((opts: PlanFlags) => {
      runPlan(opts, (t) => process.stdout.write(t));
    });
}

function layoutJson(p: PlannedLayout): Record<string, unknown> {
  return {
    dp: p.dp, hp: p.hp, cp: p.cp, innerRingSize: p.innerRingSize, placement: p.placement, zeroStage: p.zeroStage, zeroShardGroup: p.zeroShardGroup,
    checkpoint: p.checkpoint, checkpointFraction: p.checkpointFraction, stepSeconds: p.stepSeconds, tgs: p.tgs, mfuCausal: p.mfuCausal, mfuFull: p.mfuFull,
    exposedCommShare: p.exposedCommShare, peakBytesPerGpu: p.peakBytesPerGpu, fits: p.fits, ...(p.reason !== undefined ? { reason: p.reason } : {}),
  };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const GiB = 2 ** 30;

function table(rows: PlannedLayout[]): string {
  const head = '| # | dp | hp | cp | w | placement | ZeRO | checkpoint | step s | TGS | MFU causal | MFU full | GiB/GPU | exposed comm |';
  const lines = [head, '|' + '---|'.repeat(14)];
  rows.forEach((p, i) => {
    const zero = p.zeroStage === 0 ? '0' : `${p.zeroStage}/${p.zeroShardGroup}`;
    lines.push(
      `| ${i + 1} | ${p.dp} | ${p.hp} | ${p.cp} | ${p.innerRingSize} | ${p.placement} | ${zero} | ${p.checkpoint}${p.checkpointFraction < 1 ? ` ×${p.checkpointFraction}` : ''} | ${p.stepSeconds.toFixed(2)} | ${p.tgs.toFixed(0)} | ${pct(p.mfuCausal)} | ${pct(p.mfuFull)} | ${(p.peakBytesPerGpu / GiB).toFixed(1)}${p.fits ? '' : ' ✗'} | ${pct(p.exposedCommShare)} |`,
    );
  });
  return lines.join('\n');
}

function explain(p: PlannedLayout): string {
  const lines = [`Step of dp ${p.dp} hp ${p.hp} cp ${p.cp} w ${p.innerRingSize} ${p.placement}, ZeRO-${p.zeroStage}${p.zeroStage > 0 ? `/${p.zeroShardGroup}` : ''}, ${p.checkpoint}: ${p.stepSeconds.toFixed(3)} s`, '', '| term | kind | s per step | share | transfer s | formula |', '|---|---|---|---|---|---|'];
  for (const t of p.prediction.terms) {
    lines.push(`| ${t.name} | ${t.kind} | ${t.seconds.toFixed(4)} | ${pct(t.seconds / p.stepSeconds)} | ${t.transferSeconds !== undefined ? t.transferSeconds.toFixed(4) : ''} | ${t.formula} |`);
  }
  const m = p.memory;
  lines.push('', `memory per GPU: ${(m.peakBytesPerGpu / GiB).toFixed(2)} GiB = model states ${(m.modelStateBytes / GiB).toFixed(2)} + activations ${(m.activationBytes / GiB).toFixed(2)} + reserved ${(m.reservedBytes / GiB).toFixed(2)} of ${(m.hbmBytes / GiB).toFixed(1)} GiB HBM (peak at ${m.phase}; ZeRO shards ${m.shards})`);
  return lines.join('\n');
}

/** `loongtrain plan`: everything but the flag parsing, writing to `out`. @throws ConfigError for bad flags or a layout the trainer rejects. */
export function runPlan(opts: PlanFlags, out: (text: string) => void): void {
  if (opts.calibrate === true) {
    const r = opts.fit === true ? calibrate() : evaluateCalibration();
    if (opts.json === true) {
      out(JSON.stringify({ params: r.params, rmsLogError: r.rmsLogError, maxAbsError: r.maxAbsError, rows: r.rows.map((x) => ({ id: x.row.id, predicted: x.prediction.tgs, published: x.row.published ?? null, error: x.error ?? null, layout: x.layout, memoryGiB: x.memory?.gib ?? null })) }) + '\n');
    } else {
      out(`Calibration rows of cluster-data.md${opts.fit === true ? ' (refitted)' : ' (shipped profiles)'}:\n\n${formatCalibration(r)}\n`);
    }
    return;
  }
  if (opts.questions === true) {
    out(allQuestionTables() + '\n');
    return;
  }
  if (opts.fit === true) throw new ConfigError('--fit applies to --calibrate only');
  if (opts.seqLen === undefined) throw new ConfigError('plan: --seq-len is required (tokens of one sequence), e.g. --seq-len 131072');
  if (opts.gpus === undefined) throw new ConfigError('plan: --gpus is required (GPUs in the job), e.g. --gpus 32');
  const gpu = loadGpuProfile(opts.gpu);
  const { model, source } = loadModel(opts.model);
  const cluster: PlanCluster = {
    gpu,
    gpus: opts.gpus,
    gpusPerNode: opts.gpusPerNode ?? gpu.gpusPerNode,
    nicsPerNode: opts.nicsPerNode ?? gpu.nicsPerNode,
    nicBytesPerSec: opts.nicGbps !== undefined ? opts.nicGbps * 1e9 : gpu.nicBytesPerSec,
  };
  if (cluster.gpus > cluster.gpusPerNode && cluster.gpus % cluster.gpusPerNode !== 0) {
    throw new ConfigError(`--gpus ${cluster.gpus} is not a whole number of nodes of --gpus-per-node ${cluster.gpusPerNode}`);
  }
  const run: PlanRun = { model, seqLen: opts.seqLen, batch: opts.batch };
  const fixes: LayoutFixes = {
    ...(opts.dp !== undefined ? { dp: opts.dp } : {}),
    ...(opts.hp !== undefined ? { hp: opts.hp } : {}),
    ...(opts.cp !== undefined ? { cp: opts.cp } : {}),
    ...(opts.innerRingSize !== undefined ? { innerRingSize: opts.innerRingSize } : {}),
    ...(opts.placement !== undefined ? { placement: opts.placement } : {}),
    ...(opts.zeroStage !== undefined ? { zeroStage: opts.zeroStage as 0 | 1 | 2 | 3 } : {}),
    ...(opts.zeroShardGroup !== undefined ? { zeroShardGroup: opts.zeroShardGroup } : {}),
    ...(opts.checkpoint !== undefined ? { checkpoint: opts.checkpoint } : {}),
    ...(opts.checkpointFraction !== undefined ? { checkpointFraction: opts.checkpointFraction } : {}),
  };
  const r = planLayouts(run, cluster, fixes, opts.top);
  if (r.ranked.length === 0 && r.refused.length === 0) {
    throw new ConfigError(
      `plan: no layout of ${cluster.gpus} GPUs agrees with the fixed flags and passes training's validation (${r.candidates} candidates)` +
        (r.rejected.examples.length > 0 ? `; the trainer says: ${r.rejected.examples.join('; ')}` : ''),
    );
  }
  const listed = [...r.ranked, ...r.refused.slice(0, Math.max(0, opts.top - r.ranked.length))];
  const focus = r.ranked[0] ?? r.refused[0]!;
  if (opts.json === true) {
    out(
      JSON.stringify({
        model: source, seqLen: run.seqLen, gpus: cluster.gpus, gpusPerNode: cluster.gpusPerNode, gpu: gpu.name, batch: opts.batch,
        layouts: listed.map(layoutJson),
        rejectedByTraining: r.rejected.count, candidates: r.candidates,
        ...(opts.explain === true ? { explain: { layout: layoutJson(focus), terms: focus.prediction.terms, memory: focus.memory } } : {}),
      }) + '\n',
    );
    return;
  }
  out(
    `plan: ${source} (${model.layers} layers, D ${model.dim}, ${model.heads}/${model.kvHeads} heads), S = ${run.seqLen}, ${cluster.gpus} × ${gpu.name} in nodes of ${cluster.gpusPerNode} with ${cluster.nicsPerNode} NICs of ${(cluster.nicBytesPerSec / 1e9).toFixed(0)} GB/s; ${opts.batch} sequence${opts.batch === 1 ? '' : 's'} per SP group per step\n` +
      `${r.candidates} candidates, ${r.rejected.count} rejected by training's validation${r.rejected.examples.length > 0 ? ` (e.g. ${r.rejected.examples[0]})` : ''}\n` +
      'MFU causal: attention counted as S(S+1)/2 pairs (algorithms.md §7); MFU full: S² pairs (Megatron/NeMo/InternEvo). TGS = tokens per GPU per second.\n\n',
  );
  if (r.ranked.length > 0) out(`Best layouts by predicted TGS:\n\n${table(r.ranked)}\n`);
  else out('No layout fits in memory.\n');
  if (r.refused.length > 0 && r.ranked.length < opts.top) {
    out(`\n${r.ranked.length === 0 ? 'Best-predicted layouts, none of which fits' : 'Faster layouts refused for memory'} (✗):\n\n${table(r.refused.slice(0, Math.max(1, opts.top - r.ranked.length)))}\n`);
    for (const p of r.refused.slice(0, 3)) out(`  dp ${p.dp} hp ${p.hp} cp ${p.cp} w ${p.innerRingSize} ZeRO-${p.zeroStage} ${p.checkpoint}: ${p.reason}\n`);
  }
  if (opts.explain === true) out(`\n${explain(focus)}\n`);
}
