import { join } from 'node:path';
import type { RankContext } from '../comm/rank-context.js';
import type { Sequence } from '../data/packing.js';
import { paramLayout } from '../model/params.js';
import type { Config } from './config.js';
import { type EvalLoss, evaluateSequences } from './evaluate.js';
import { buildRank } from './rank.js';
import { readSafetensors } from './safetensors.js';

/** What `loongtrain eval` hands every rank (structured-cloneable). */
export interface EvalRankArgs {
  /** The run config of the evaluation: the checkpoint's model, seqLen, causal and packing, the layout asked for, optim.zeroStage 0. */
  config: Config;
  /** Checkpoint folder (step-NNNNNNNN) whose model.safetensors is evaluated. */
  checkpoint: string;
  sequences: Sequence[];
}

/**
 * One rank of `loongtrain eval`: build the rank as training does (layout, groups, kernels,
 * 2D-Attention), load the checkpoint's parameters, and score the sequences with
 * {@link evaluateSequences}.
 */
export function run(ctx: RankContext, args: EvalRankArgs): EvalLoss {
  const setup = buildRank(ctx, args.config);
  const layout = paramLayout(args.config.model);
  const file = join(args.checkpoint, 'model.safetensors');
  const { tensors } = readSafetensors(file);
  const params = new Float32Array(layout.flatSize);
  for (const s of layout.specs) {
    const t = tensors.get(s.name);
    if (t === undefined) throw new Error(`checkpoint ${file} has no tensor "${s.name}"`);
    if (t.shape.join(',') !== s.shape.join(',')) throw new Error(`checkpoint ${file}: "${s.name}" has shape [${t.shape.join(', ')}], the model needs [${s.shape.join(', ')}]`);
    params.set(t.data, s.offset);
  }
  // The optimizer state is not needed: zero moments, no AdamW step is taken.
  setup.zero.loadFullState({ params, m: new Float32Array(layout.flatSize), v: new Float32Array(layout.flatSize), step: 0 });
  return evaluateSequences(setup, ctx.rank, args.sequences);
}
