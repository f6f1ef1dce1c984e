import { ConfigError } from '../errors.js';

export type Placement = 'head-first' | 'context-first';
export const PLACEMENTS: readonly Placement[] = ['head-first', 'context-first'];

export interface ParallelConfig {
  dp: number;
  hp: number;
  cp: number;
  placement: Placement;
  /** Inner ring size w of Double-Ring-Attention; defaults to cp (one plain ring). */
  innerRingSize?: number;
}

/** Grid coordinates of a rank: SP block (= dp index), head coordinate h and context coordinate c. */
export interface RankCoords {
  block: number;
  h: number;
  c: number;
}

function checkPositiveInt(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ConfigError(`parallel.${field} = ${String(value)} is invalid: it must be a positive integer`);
  }
  return value;
}

/** The positive divisors of a positive integer n, ascending (the valid choices listed in errors). */
export function divisors(n: number): number[] {
  const out: number[] = [];
  for (let i = 1; i <= n; i++) if (n % i === 0) out.push(i);
  return out;
}

/**
 * The hp values a model with `heads` query and `kvHeads` KV heads can be split over, ascending
 * (algorithms.md §3): hp divides heads, and divides kvHeads when hp ≤ kvHeads or is a multiple of
 * kvHeads when hp > kvHeads (KV heads are then replicated hp/kvHeads times).
 */
export function validHpValues(heads: number, kvHeads: number): number[] {
  return divisors(heads).filter((hp) => (hp <= kvHeads ? kvHeads % hp === 0 : hp % kvHeads === 0));
}

/**
 * The rank grid of algorithms.md §1: world = dp × sp, sp = hp × cp, SP blocks contiguous,
 * (h, c) placed head-first (`base + c·hp + h`) or context-first (`base + h·cp + c`).
 */
export class ParallelDims {
  readonly dp: number;
  readonly hp: number;
  readonly cp: number;
  readonly sp: number;
  readonly world: number;
  readonly placement: Placement;
  readonly innerRingSize: number;
  readonly outerRingSize: number;

  /**
   * @throws ConfigError naming the field, its value and the valid choices when a size is not a
   * positive integer, the placement is unknown, innerRingSize does not divide cp, or (when
   * `world` is given) world ≠ dp·hp·cp.
   */
  constructor(cfg: ParallelConfig, world?: number) {
    this.dp = checkPositiveInt('dp', cfg.dp);
    this.hp = checkPositiveInt('hp', cfg.hp);
    this.cp = checkPositiveInt('cp', cfg.cp);
    if (!PLACEMENTS.includes(cfg.placement)) {
      throw new ConfigError(`parallel.placement = ${JSON.stringify(cfg.placement)} is invalid: use one of ${PLACEMENTS.map((p) => `"${p}"`).join(', ')}`);
    }
    this.placement = cfg.placement;
    this.sp = this.hp * this.cp;
    this.world = this.dp * this.sp;
    const w = cfg.innerRingSize ?? this.cp;
    checkPositiveInt('innerRingSize', w);
    if (this.cp % w !== 0) {
      throw new ConfigError(`parallel.innerRingSize = ${w} does not divide parallel.cp = ${this.cp}; valid values: ${divisors(this.cp).join(', ')}`);
    }
    this.innerRingSize = w;
    this.outerRingSize = this.cp / w;
    if (world !== undefined && world !== this.world) {
      throw new ConfigError(`world size ${world} ≠ dp·hp·cp = ${this.dp}·${this.hp}·${this.cp} = ${this.world}; set dp, hp and cp so that their product is ${world}`);
    }
  }

  /** Global rank of grid point (block, h, c). */
  rankOf(block: number, h: number, c: number): number {
    const base = block * this.sp;
    return this.placement === 'head-first' ? base + c * this.hp + h : base + h * this.cp + c;
  }

  coords(rank: number): RankCoords {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.world) throw new RangeError(`rank ${rank} outside world of ${this.world}`);
    const block = Math.floor(rank / this.sp);
    const local = rank - block * this.sp;
    return this.placement === 'head-first'
      ? { block, h: local % this.hp, c: Math.floor(local / this.hp) }
      : { block, h: Math.floor(local / this.cp), c: local % this.cp };
  }

  /** Ranks sharing this rank's SP block and c: the head-parallel (Ulysses all-to-all) group, ascending. */
  hpGroup(rank: number): number[] {
    const { block, c } = this.coords(rank);
    return sorted(range(this.hp).map((h) => this.rankOf(block, h, c)));
  }

  /** Ranks sharing this rank's SP block and h: the context-parallel group, ascending (= ring positions c). */
  cpGroup(rank: number): number[] {
    const { block, h } = this.coords(rank);
    return range(this.cp).map((c) => this.rankOf(block, h, c));
  }

  /** Ranks with the same (h, c) in every SP block: the data-parallel group. */
  dpGroup(rank: number): number[] {
    const { h, c } = this.coords(rank);
    return range(this.dp).map((b) => this.rankOf(b, h, c));
  }

  /** The ranks of this rank's SP block. */
  spGroup(rank: number): number[] {
    const { block } = this.coords(rank);
    return range(this.sp).map((i) => block * this.sp + i);
  }

  /** Inner ring of this rank: cp-group positions {k·w, …, k·w + w − 1} with k = ⌊c / w⌋. */
  innerRing(rank: number): number[] {
    const { block, h, c } = this.coords(rank);
    const k = Math.floor(c / this.innerRingSize);
    return range(this.innerRingSize).map((u) => this.rankOf(block, h, k * this.innerRingSize + u));
  }

  /** Outer ring of this rank: cp-group positions {u, u + w, u + 2w, …} with u = c mod w. */
  outerRing(rank: number): number[] {
    const { block, h, c } = this.coords(rank);
    const u = c % this.innerRingSize;
    return range(this.outerRingSize).map((j) => this.rankOf(block, h, u + j * this.innerRingSize));
  }

  toString(): string {
    return `dp=${this.dp} hp=${this.hp} cp=${this.cp} innerRingSize=${this.innerRingSize} ${this.placement}`;
  }
}

/** Shape facts a layout must agree with. */
export interface LayoutShape {
  heads: number;
  kvHeads: number;
  seqLen: number;
}

/**
 * Check that a model and sequence fit a layout (algorithms.md §2, §3), before any rank starts.
 * @throws ConfigError naming heads, kvHeads, hp or seqLen, the value and the valid choices.
 */
export function validateLayout(dims: ParallelDims, shape: LayoutShape): void {
  const { heads, kvHeads, seqLen } = shape;
  const hp = dims.hp;
  if (heads % kvHeads !== 0) {
    throw new ConfigError(`model.heads = ${heads} is not a multiple of model.kvHeads = ${kvHeads}; kvHeads must divide heads (valid kvHeads: ${divisors(heads).join(', ')})`);
  }
  const validHp = validHpValues(heads, kvHeads);
  if (!validHp.includes(hp)) {
    // Name the condition that failed, and the valid hp values nearest to the one asked for.
    const why =
      heads % hp !== 0
        ? 'hp must divide heads'
        : hp < kvHeads
          ? 'with hp < kvHeads, hp must divide kvHeads (each rank takes whole KV heads)'
          : 'with hp > kvHeads, hp must be a multiple of kvHeads (each KV head is replicated hp / kvHeads times)';
    const nearest = [...validHp].sort((a, b) => Math.abs(a - hp) - Math.abs(b - hp) || a - b).slice(0, 2).sort((a, b) => a - b);
    throw new ConfigError(
      `parallel.hp = ${hp} does not fit model.heads = ${heads}, model.kvHeads = ${kvHeads}: ${why}; the nearest valid hp ${nearest.length === 1 ? 'is' : 'values are'} ${nearest.join(' and ')}`,
    );
  }
  checkSeqLen(dims, seqLen);
}

/**
 * Check that a sequence of `seqLen` tokens can be zigzag-sharded over the SP block
 * (algorithms.md §2: 2·cp chunks, each pair cut into hp pieces, so S must be a positive
 * multiple of 2·sp).
 * @throws ConfigError naming train.seqLen, 2·sp and the nearest valid lengths.
 */
export function checkSeqLen(dims: ParallelDims, seqLen: number): void {
  const unit = 2 * dims.sp;
  if (!Number.isInteger(seqLen) || seqLen < unit || seqLen % unit !== 0) {
    const below = Math.floor(seqLen / unit) * unit;
    const above = Math.max(unit, Math.ceil(seqLen / unit) * unit);
    const near = below >= unit && below !== above ? `${below} or ${above}` : `${above}`;
    throw new ConfigError(`train.seqLen = ${seqLen} is invalid for sp = ${dims.sp}: seq must be divisible by 2·sp = ${unit}; nearest valid lengths: ${near}`);
  }
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function sorted(xs: number[]): number[] {
  return xs.sort((a, b) => a - b);
}
