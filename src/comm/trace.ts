import { performance } from 'node:perf_hooks';

/**
 * One complete event of the Chrome trace event format ("Trace Event Format", ph "X"), as
 * Perfetto and chrome://tracing read it: `ts` and `dur` in microseconds, `pid` = rank.
 */
export interface TraceEvent {
  name: string;
  /** "compute" (kernels), "comm" (sends and blocking waits), "phase" (a pass or layer that contains others). */
  cat: TraceCategory;
  ph: 'X';
  ts: number;
  dur: number;
  pid: number;
  tid: number;
  args?: Record<string, string | number>;
}

export type TraceCategory = 'compute' | 'comm' | 'phase';

/** Microseconds on a clock shared by every worker of the process (performance.timeOrigin differs per worker). */
export function nowMicros(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

/**
 * A rank's timeline of compute and communication spans. Disabled tracers record nothing and
 * cost one branch per span, so instrumentation can stay in hot paths.
 */
export class Tracer {
  private readonly recorded: TraceEvent[] = [];

  constructor(
    readonly enabled: boolean,
    private readonly pid: number,
  ) {}

  /** Run `fn` inside a span named `name`; returns what `fn` returns. */
  span<T>(name: string, cat: TraceCategory, args: Record<string, string | number> | undefined, fn: () => T): T {
    if (!this.enabled) return fn();
    const start = nowMicros();
    try {
      return fn();
    } finally {
      this.record(name, cat, start, args);
    }
  }

  /** Record a span that started at `start` (from {@link nowMicros}) and ends now. */
  record(name: string, cat: TraceCategory, start: number, args?: Record<string, string | number>): void {
    if (!this.enabled) return;
    const event: TraceEvent = { name, cat, ph: 'X', ts: start, dur: nowMicros() - start, pid: this.pid, tid: 0 };
    if (args !== undefined) event.args = args;
    this.recorded.push(event);
  }

  /** The events recorded so far, in the order their spans ended. */
  events(): TraceEvent[] {
    return this.recorded;
  }

  clear(): void {
    this.recorded.length = 0;
  }
}
