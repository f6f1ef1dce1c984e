import { ConfigError } from '../errors.js';
import { divisors, type Placement } from './dims.js';

/**
 * Named layouts of the systems LoongTrain is compared with, mapped onto one machinery
 * (LoongTrain §5 baselines):
 * - `ulysses`: DeepSpeed-Ulysses, head parallelism only (hp = sp, cp = 1);
 * - `ring`: Megatron-style zigzag context parallelism, one ring (hp = 1, cp = sp, w = cp);
 * - `usp`: 2D-Attention with a single ring (hp × cp = sp, w = cp);
 * - `loongtrain`: 2D-Attention with Double-Ring-Attention (hp × cp = sp, w < cp dividing cp).
 */
export type Preset = 'ulysses' | 'ring' | 'usp' | 'loongtrain';
export const PRESETS: readonly Preset[] = ['ulysses', 'ring', 'usp', 'loongtrain'];

/** The [parallel] settings as written: sizes may be left out when a preset or sp implies them. */
export interface LayoutRequest {
  dp: number;
  placement: Placement;
  preset?: Preset | undefined;
  sp?: number | undefined;
  hp?: number | undefined;
  cp?: number | undefined;
  innerRingSize?: number | undefined;
}

/** Every size resolved. */
export interface ResolvedLayout {
  dp: number;
  hp: number;
  cp: number;
  innerRingSize: number;
  placement: Placement;
}

/**
 * Resolve a requested layout into dp, hp, cp and innerRingSize, never silently shrinking it
 * (failure case F15): sp without hp and cp, sizes that contradict the preset or each other, and
 * a `loongtrain` preset without an inner ring size are errors that name what is missing and the
 * valid values.
 * @throws ConfigError listing every problem.
 */
export function resolveLayout(req: LayoutRequest): ResolvedLayout {
  const problems: string[] = [];
  let { hp, cp } = req;
  const { sp, preset } = req;
  if (sp !== undefined && hp === undefined && cp === undefined && (preset === undefined || preset === 'usp' || preset === 'loongtrain')) {
    problems.push(
      `parallel.sp = ${sp} needs its split into head and context parallel sizes: set parallel.hp and parallel.cp with hp × cp = ${sp} ` +
        `(hp ∈ {${divisors(sp).join(', ')}}), or use preset "ulysses" (hp = sp) or "ring" (cp = sp)`,
    );
  }
  if (preset === 'ulysses' || preset === 'ring') {
    const size = sp ?? (preset === 'ulysses' ? hp : cp);
    if (size === undefined) {
      problems.push(`parallel.preset = "${preset}" needs parallel.sp (the number of ranks that split each sequence)`);
    } else {
      const want = preset === 'ulysses' ? { hp: size, cp: 1 } : { hp: 1, cp: size };
      for (const key of ['hp', 'cp'] as const) {
        const given = req[key];
        if (given !== undefined && given !== want[key]) problems.push(`parallel.${key} = ${given} contradicts parallel.preset = "${preset}", which sets ${key} = ${want[key]}`);
      }
      hp = want.hp;
      cp = want.cp;
    }
  } else if (sp !== undefined) {
    const choices = `{${divisors(sp).join(', ')}}`;
    if (hp !== undefined && cp === undefined) {
      if (sp % hp === 0) cp = sp / hp;
      else problems.push(`parallel.hp = ${hp} does not divide parallel.sp = ${sp}; choose hp ∈ ${choices}`);
    } else if (cp !== undefined && hp === undefined) {
      if (sp % cp === 0) hp = sp / cp;
      else problems.push(`parallel.cp = ${cp} does not divide parallel.sp = ${sp}; choose cp ∈ ${choices}`);
    } else if (hp !== undefined && cp !== undefined && hp * cp !== sp) {
      problems.push(`parallel.hp × parallel.cp = ${hp} × ${cp} = ${hp * cp} ≠ parallel.sp = ${sp}; choose hp ∈ ${choices} and cp = sp / hp`);
    }
  }
  hp ??= 1;
  cp ??= 1;
  let w = req.innerRingSize;
  if (preset === 'ring' || preset === 'usp') {
    if (w !== undefined && w !== cp) problems.push(`parallel.innerRingSize = ${w} contradicts parallel.preset = "${preset}" (one ring: innerRingSize = cp = ${cp}); use preset "loongtrain" for a double ring`);
    w = cp;
  }
  if (preset === 'loongtrain') {
    const valid = divisors(cp).filter((d) => d < cp);
    if (w === undefined || w >= cp || cp % w !== 0) {
      problems.push(
        `parallel.preset = "loongtrain" needs parallel.innerRingSize, a divisor of cp = ${cp} smaller than cp` +
          (valid.length > 0 ? ` (one of ${valid.join(', ')})` : `; cp = ${cp} has none, so raise cp or use preset "usp"`) +
          (w === undefined ? '' : `, got ${w}`),
      );
    }
  }
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
  return { dp: req.dp, hp, cp, innerRingSize: w ?? cp, placement: req.placement };
}
