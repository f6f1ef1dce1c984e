import { ConfigError } from '../errors.js';

/**
 * Activation checkpoint policies (LoongTrain §4.2, "Selective Checkpoint++"), per layer:
 * - `none`: the layer keeps every intermediate its backward needs;
 * - `full`: the layer keeps only its input x and recomputes its whole forward, the attention
 *   core included (so distributed attention and its messages run again), when its backward starts;
 * - `selective++`: the layer keeps its input x and the attention core's {@link AttentionSaved}
 *   (output, LSE and the core's own q/k/v); its backward recomputes the norms, the output
 *   projection and the MLP but never the attention core, so no attention message is sent twice.
 */
export const CHECKPOINT_POLICIES = ['none', 'full', 'selective++'] as const;
export type CheckpointPolicy = (typeof CHECKPOINT_POLICIES)[number];

/** Which layers use which policy: the first `layers` blocks use `policy`, the rest `none`. */
export interface CheckpointOptions {
  policy: CheckpointPolicy;
  /** How many of the first blocks are checkpointed, in [0, model layers]. */
  layers: number;
}

/**
 * Check a policy name.
 * @throws ConfigError naming the value and the valid names (failure case F10).
 */
export function validateCheckpointPolicy(policy: unknown): CheckpointPolicy {
  if (typeof policy !== 'string' || !(CHECKPOINT_POLICIES as readonly string[]).includes(policy)) {
    throw new ConfigError(`checkpoint.policy = ${JSON.stringify(policy)} is invalid: use one of ${CHECKPOINT_POLICIES.map((p) => JSON.stringify(p)).join(', ')}`);
  }
  return policy as CheckpointPolicy;
}

/**
 * Layers a fraction of the model covers: the first ⌈fraction · layers⌉.
 * @throws ConfigError when fraction is not in (0, 1].
 */
export function checkpointedLayers(fraction: number, layers: number): number {
  if (!Number.isFinite(fraction) || fraction <= 0 || fraction > 1) {
    throw new ConfigError(`checkpoint.fraction = ${fraction} is invalid: it must be in (0, 1] (the share of the first layers that use the policy)`);
  }
  return Math.ceil(fraction * layers);
}

/**
 * The policy of every layer, in order.
 * @throws ConfigError for an unknown policy name or a layer count outside [0, layers].
 */
export function layerPolicies(options: CheckpointOptions, layers: number): CheckpointPolicy[] {
  const policy = validateCheckpointPolicy(options.policy);
  const n = options.layers;
  if (!Number.isInteger(n) || n < 0 || n > layers) {
    throw new ConfigError(`checkpoint layers = ${n} is invalid: it must be an integer in [0, ${layers}] (the model's layers)`);
  }
  return Array.from({ length: layers }, (_, l) => (l < n ? policy : 'none'));
}
