import { allSumF64 } from '../comm/collectives.js';
import type { Sequence } from '../data/packing.js';
import { shardSequence } from '../data/shard.js';
import { countValidLabels } from '../model/model.js';
import type { RankSetup } from './rank.js';

/** Loss of a set of sequences: Σ token losses / Σ valid labels, and the count of valid labels. */
export interface EvalLoss {
  /** Mean cross-entropy over every valid label (nats). */
  loss: number;
  /** Valid labels scored (every label but −1). */
  tokens: number;
}

/**
 * Forward-only evaluation of `sequences` by every rank of the run's layout (the same
 * distributed forward as training: each sequence sharded and masked by its SequenceLayout):
 * sequence i goes to data-parallel block i mod dp, every rank scores its shard with
 * Transformer.evaluate (no activations kept, no gradient touched), and the loss sums are added
 * exactly over the world. Returns Σ token losses / Σ valid labels over ALL sequences, identical
 * on every rank. Every rank must call it with the same sequences.
 * @throws Error when the sequences hold no valid label.
 */
export function evaluateSequences(setup: Pick<RankSetup, 'model' | 'dims' | 'world' | 'layoutOf'>, rank: number, sequences: readonly Sequence[]): EvalLoss {
  const { model, dims, world } = setup;
  let tokens = 0;
  for (const seq of sequences) tokens += countValidLabels(seq.labels);
  if (tokens === 0) throw new Error('evaluation: the sequences hold no label to score');
  const { block, h, c } = dims.coords(rank);
  let lossSum = 0;
  for (let i = block; i < sequences.length; i += dims.dp) {
    const seq = sequences[i]!;
    const layout = setup.layoutOf(seq);
    const shard = shardSequence(layout, h, c, seq);
    lossSum += model.evaluate(shard.tokens, shard.positions, shard.labels, layout);
  }
  return { loss: allSumF64(world, lossSum) / tokens, tokens };
}
