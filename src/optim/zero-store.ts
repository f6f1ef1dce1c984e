import type { ProcessGroup } from '../comm/process-group.js';
import type { ModelConfig } from '../model/config.js';
import { type ParamLayout, type ParamPass, type ParamSpec, type ParamStore, type ParamUnit, paramLayout, paramSpecLookup, paramUnits, paramView } from '../model/params.js';
import type { Arena } from '../tensor/arena.js';
import { Tensor } from '../tensor/tensor.js';
import { type Pending, postAllGatherv, reduceScatterv } from '../comm/collectives.js';
import { zeroTag } from './zero-tags.js';
import { type ShardPiece, ShardPlan, type ShardSegment } from './shard-plan.js';

/**
 * One segment per parameter unit (docs/zero.md): the flat elements of the parameters a unit
 * introduces (the embedding, each block, then the final norm and an untied `output`), so
 * gathering or reducing a unit touches whole segments. A unit's segments also include those of
 * parameters it shares with an earlier unit (the tied head uses the embedding's segment).
 * @throws Error when a unit's own parameters are not contiguous in the layout.
 */
export function unitSegments(layout: ParamLayout, units: readonly ParamUnit[]): { segments: ShardSegment[]; ofUnit: number[][]; ofParam: Map<string, number> } {
  const ofParam = new Map<string, number>();
  const starts: number[] = [];
  const order = new Map(layout.specs.map((s, i) => [s.name, i]));
  for (const unit of units) {
    const own = unit.params.filter((n) => !ofParam.has(n));
    if (own.length === 0) continue;
    const idx = own.map((n) => {
      const i = order.get(n);
      if (i === undefined) throw new Error(`unit ${unit.name} lists unknown parameter ${n}`);
      return i;
    });
    const first = Math.min(...idx);
    if (Math.max(...idx) - first + 1 !== idx.length) throw new Error(`unit ${unit.name}: its parameters ${own.join(', ')} are not contiguous in the flat layout`);
    for (const n of own) ofParam.set(n, starts.length);
    starts.push(layout.specs[first]!.offset);
  }
  if (ofParam.size !== layout.specs.length) throw new Error(`the units cover ${ofParam.size} of ${layout.specs.length} parameters; every parameter must belong to a unit`);
  const segments = starts.map((start, i) => ({ start, end: starts[i + 1] ?? layout.flatSize }));
  const ofUnit = units.map((u) => [...new Set(u.params.map((n) => ofParam.get(n)!))]);
  return { segments, ofUnit, ofParam };
}

/** A unit's segment buffer: gathered parameters or its transient gradients. */
interface SegmentBuffer {
  tensor: Tensor;
  /** Acquisitions holding it; a prefetched parameter segment sits at 0 until acquired. */
  refs: number;
  /** The gather still in flight (prefetched, not yet waited for). */
  pending?: Pending;
}

export interface ShardedParamStoreOptions {
  arena: Arena;
  config: ModelConfig;
  /** The shard group (ZeRO's `zeroShardGroup`); this rank holds shard `group.rank`. */
  group: ProcessGroup;
  /** ZeRO stage 3: parameters are sharded too and gathered per unit; otherwise (stage 2) they stay whole. */
  shardParams: boolean;
}

/**
 * The ParamStore of ZeRO stages 2 and 3 (docs/zero.md). Persistently this rank holds only its
 * gradient shard (category 'grads', ≈ P/n elements) and, with `shardParams`, its parameter
 * shard (category 'params'); stage 2 keeps the whole flat parameters.
 *
 * - acquire(unit, pass), stage 3: each of the unit's segments is all-gathered over the shard
 *   group into a fresh [segment] buffer ('params'), then the gather of the NEXT unit in that pass's
 *   order (forward: embedding, blocks 0…L−1, head; backward: the reverse) is posted, so its
 *   pieces travel while this unit computes. release frees the buffers.
 * - acquire(unit, 'backward'): a zeroed [segment] gradient buffer ('grads') per segment, which
 *   the layers accumulate into; release reduce-scatters it over the shard group into the
 *   gradient shard (adding to what earlier micro-batches left) and frees it. So a full-size
 *   gradient never exists: at most one unit's.
 *
 * param(name) and grad(name) are views valid only while their unit is acquired.
 */
export class ShardedParamStore implements ParamStore {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  readonly units: readonly ParamUnit[];
  readonly plan: ShardPlan;
  /** This rank's pieces (shard `group.rank`), in segment order. */
  readonly pieces: readonly ShardPiece[];
  /** Stage 2: every parameter [flatSize] ('params'). */
  readonly fullParams: Tensor | undefined;
  /** Stage 3: this rank's parameter pieces, packed [shardSize] ('params'). */
  readonly paramShard: Tensor | undefined;
  /** This rank's gradient pieces, packed [shardSize] ('grads'). */
  readonly gradShard: Tensor;
  private readonly arena: Arena;
  private readonly group: ProcessGroup;
  private readonly spec: (name: string) => ParamSpec;
  private readonly unitIndex: Map<string, number>;
  private readonly segmentsOfUnit: number[][];
  private readonly segmentOfParam: Map<string, number>;
  private readonly gathered = new Map<number, SegmentBuffer>();
  private readonly gradBuffers = new Map<number, SegmentBuffer>();

  /** Allocates the shards (zero); fill them with {@link loadFlat}. @throws ConfigError for a bad config. */
  constructor(opts: ShardedParamStoreOptions) {
    this.config = opts.config;
    this.layout = paramLayout(opts.config);
    this.units = paramUnits(opts.config);
    this.arena = opts.arena;
    this.group = opts.group;
    this.spec = paramSpecLookup(this.layout);
    const { segments, ofUnit, ofParam } = unitSegments(this.layout, this.units);
    this.plan = new ShardPlan(this.layout.flatSize, segments, opts.group.size);
    this.pieces = this.plan.pieces(opts.group.rank);
    this.unitIndex = new Map(this.units.map((u, i) => [u.name, i]));
    this.segmentsOfUnit = ofUnit;
    this.segmentOfParam = ofParam;
    const shardSize = this.plan.shardSize(opts.group.rank);
    this.fullParams = opts.shardParams ? undefined : Tensor.zeros(opts.arena, [this.layout.flatSize], 'params');
    this.paramShard = opts.shardParams ? Tensor.zeros(opts.arena, [shardSize], 'params') : undefined;
    this.gradShard = Tensor.zeros(opts.arena, [shardSize], 'grads');
  }

  /** Set the parameters from a whole flat array [flatSize] (initialisation, checkpoint): this rank keeps what it holds. */
  loadFlat(flat: Float32Array): void {
    if (flat.length !== this.layout.flatSize) throw new Error(`ShardedParamStore.loadFlat: got ${flat.length} elements, the layout has ${this.layout.flatSize}`);
    if (this.fullParams !== undefined) this.fullParams.data.set(flat);
    for (const p of this.pieces) this.paramShard?.data.set(flat.subarray(p.flatStart, p.flatStart + p.length), p.shardOffset);
  }

  /** This rank's parameter piece `p` (a view of the shard in stage 3, of the whole parameters in stage 2). */
  paramPiece(p: ShardPiece): Tensor {
    return this.paramShard !== undefined ? this.paramShard.rows(p.shardOffset, p.shardOffset + p.length) : this.fullParams!.rows(p.flatStart, p.flatStart + p.length);
  }

  /** This rank's gradient piece `p` (a view of the gradient shard). */
  gradPiece(p: ShardPiece): Tensor {
    return this.gradShard.rows(p.shardOffset, p.shardOffset + p.length);
  }

  acquire(unit: string, pass: ParamPass): void {
    const u = this.unitOf(unit);
    if (this.paramShard !== undefined) {
      for (const s of this.segmentsOfUnit[u]!) {
        const buf = this.startGather(s);
        buf.pending?.wait();
        delete buf.pending;
        buf.refs++;
      }
      const next = pass === 'forward' ? u + 1 : u - 1;
      for (const s of this.segmentsOfUnit[next] ?? []) this.startGather(s);
    }
    if (pass === 'backward') {
      for (const s of this.segmentsOfUnit[u]!) {
        let buf = this.gradBuffers.get(s);
        if (buf === undefined) {
          buf = { tensor: Tensor.zeros(this.arena, [this.segmentLength(s)], 'grads'), refs: 0 };
          this.gradBuffers.set(s, buf);
        }
        buf.refs++;
      }
    }
  }

  release(unit: string, pass: ParamPass): void {
    const u = this.unitOf(unit);
    if (pass === 'backward') {
      for (const s of this.segmentsOfUnit[u]!) {
        const buf = this.held(this.gradBuffers, s, unit, 'gradients');
        if (--buf.refs > 0) continue;
        const piece = this.pieces[s]!;
        const bounds = this.relativeBounds(s);
        reduceScatterv(this.group, buf.tensor.data, bounds, this.gradPiece(piece).data, zeroTag(s, 'reduce'), true);
        buf.tensor.free();
        this.gradBuffers.delete(s);
      }
    }
    if (this.paramShard !== undefined) {
      for (const s of this.segmentsOfUnit[u]!) {
        const buf = this.held(this.gathered, s, unit, 'parameters');
        if (--buf.refs > 0) continue;
        buf.tensor.free();
        this.gathered.delete(s);
      }
    }
  }

  /**
   * Free every gathered and gradient buffer, acquired or prefetched, without communicating.
   * A prefetch's gather is dropped unwaited: a `threads` receive only copies when waited, so its
   * buffer is not written after this; the peers' messages stay queued, which is why a failed
   * step ends the job (DESIGN decision 8) rather than training on.
   */
  abandon(): void {
    for (const map of [this.gathered, this.gradBuffers]) {
      for (const buf of map.values()) buf.tensor.free();
      map.clear();
    }
  }

  param(name: string): Tensor {
    const spec = this.spec(name);
    if (this.fullParams !== undefined) return paramView(this.fullParams, spec);
    const s = this.segmentOfParam.get(name)!;
    const buf = this.gathered.get(s);
    if (buf === undefined || buf.refs === 0) throw new Error(`parameter ${name} is not gathered: with ZeRO stage 3 a parameter is available only between acquire and release of its unit`);
    return paramView(buf.tensor, spec, this.plan.segments[s]!.start);
  }

  grad(name: string): Tensor {
    const spec = this.spec(name);
    const s = this.segmentOfParam.get(name)!;
    const buf = this.gradBuffers.get(s);
    if (buf === undefined) throw new Error(`the gradient of ${name} is not available: with ZeRO stage ≥ 2 a gradient exists only between acquire(unit, 'backward') and release of its unit`);
    return paramView(buf.tensor, spec, this.plan.segments[s]!.start);
  }

  zeroGrads(): void {
    if (this.gradBuffers.size > 0) throw new Error('ShardedParamStore.zeroGrads: a unit is still acquired for backward');
    this.gradShard.data.fill(0);
  }

  /** Boundaries of segment `s`'s pieces relative to the segment start. */
  relativeBounds(s: number): number[] {
    const start = this.plan.segments[s]!.start;
    return this.plan.segmentBounds(s).map((b) => b - start);
  }

  private segmentLength(s: number): number {
    const seg = this.plan.segments[s]!;
    return seg.end - seg.start;
  }

  /** The gathered buffer of segment s, posting its gather when there is none yet. */
  private startGather(s: number): SegmentBuffer {
    let buf = this.gathered.get(s);
    if (buf !== undefined) return buf;
    const tensor = Tensor.zeros(this.arena, [this.segmentLength(s)], 'params');
    const mine = this.paramPiece(this.pieces[s]!).data;
    buf = { tensor, refs: 0, pending: postAllGatherv(this.group, mine, tensor.data, this.relativeBounds(s), zeroTag(s, 'gather')) };
    this.gathered.set(s, buf);
    return buf;
  }

  private held(map: Map<number, SegmentBuffer>, s: number, unit: string, what: string): SegmentBuffer {
    const buf = map.get(s);
    if (buf === undefined || buf.refs === 0) throw new Error(`release(${unit}): its ${what} are not acquired`);
    return buf;
  }

  private unitOf(name: string): number {
    const u = this.unitIndex.get(name);
    if (u === undefined) throw new Error(`unknown parameter unit ${JSON.stringify(name)}; units: ${this.units.map((x) => x.name).join(', ')}`);
    return u;
  }

}
