import { chunkBounds } from '../comm/chunks.js';

/** A run [start, end) of the flat parameter layout that is sharded, gathered and reduced as one. */
export interface ShardSegment {
  readonly start: number;
  readonly end: number;
}

/** The part of one segment that one shard holds: flat elements [flatStart, flatStart + length). */
export interface ShardPiece {
  readonly segment: number;
  readonly flatStart: number;
  readonly length: number;
  /** Where the piece starts inside its shard's packed storage (the shard is its pieces, in segment order). */
  readonly shardOffset: number;
}

/**
 * How the flat parameter layout is cut over `shards` ZeRO shards (Rajbhandari et al. 2020,
 * "ZeRO", §5). Each segment is split on its own, as evenly as possible: shard g holds
 * segment elements [⌊g·L/n⌋, ⌊(g+1)·L/n⌋) (comm/chunks.ts `chunkBounds`, the rule of the collectives' chunks),
 * so a segment whose length L is not a multiple of n gives pieces differing by one element, and
 * a segment shorter than n leaves some shards an empty piece. A shard stores its pieces packed
 * one after another.
 *
 * One segment covering the whole layout is the plain flat split (ZeRO stages 1 and 2 without
 * per-layer machinery); one segment per parameter unit (the embedding, each block, the head)
 * lets stage 3 gather one unit at a time.
 */
export class ShardPlan {
  readonly segments: readonly ShardSegment[];
  /** Elements of the flat layout. */
  readonly flatSize: number;
  readonly shards: number;
  private readonly bounds: number[][];

  /**
   * @param segments ascending, non-overlapping and together covering [0, flatSize).
   * @throws Error when the segments do not tile the layout or `shards` is not a positive integer.
   */
  constructor(flatSize: number, segments: readonly ShardSegment[], shards: number) {
    if (!Number.isInteger(shards) || shards < 1) throw new Error(`ShardPlan: shards = ${shards} is invalid: it must be a positive integer`);
    let at = 0;
    for (const [i, s] of segments.entries()) {
      if (s.start !== at || !(s.end > s.start)) {
        throw new Error(`ShardPlan: segment ${i} is [${s.start}, ${s.end}); segments must be non-empty and tile [0, ${flatSize}) in order (expected it to start at ${at})`);
      }
      at = s.end;
    }
    if (at !== flatSize) throw new Error(`ShardPlan: the segments end at ${at}, the flat layout at ${flatSize}; they must cover it`);
    this.segments = segments;
    this.flatSize = flatSize;
    this.shards = shards;
    this.bounds = segments.map((s) => chunkBounds(s.end - s.start, shards).map((b) => s.start + b));
  }

  /** Flat boundaries of segment `segment`'s pieces: shard g holds [b[g], b[g + 1]). */
  segmentBounds(segment: number): readonly number[] {
    const b = this.bounds[segment];
    if (b === undefined) throw new RangeError(`ShardPlan: segment ${segment} does not exist (there are ${this.segments.length})`);
    return b;
  }

  /** The pieces shard `shard` holds, in segment order, with their offsets in its packed storage. */
  pieces(shard: number): ShardPiece[] {
    if (!Number.isInteger(shard) || shard < 0 || shard >= this.shards) throw new RangeError(`ShardPlan: shard ${shard} is outside [0, ${this.shards})`);
    let shardOffset = 0;
    return this.bounds.map((b, segment) => {
      const piece = { segment, flatStart: b[shard]!, length: b[shard + 1]! - b[shard]!, shardOffset };
      shardOffset += piece.length;
      return piece;
    });
  }

  /** Elements shard `shard` holds (Σ of its piece lengths; ⌊P/n⌋ or ⌈P/n⌉ per segment). */
  shardSize(shard: number): number {
    return this.pieces(shard).reduce((n, p) => n + p.length, 0);
  }
}
