import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import { parse, View, type Spec } from 'vega';
import { ConfigError } from '../errors.js';
import { writeFileAtomic } from './atomic-write.js';

/** What `loongtrain plot` wrote. */
export interface PlotResult {
  path: string;
  /** PNG size in pixels. */
  width: number;
  height: number;
  /** Metrics rows read (a torn last line is not counted). */
  rows: number;
  /** The panels drawn, top to bottom. */
  panels: string[];
}

/** The fields of a metrics row the plot reads; rows of older files may lack some. */
interface Row {
  step: number;
  loss?: number | null;
  valLoss?: number | null;
  lr?: number | null;
  tokensPerSec?: number | null;
  tgs?: number | null;
}

interface Point {
  step: number;
  series: string;
  value: number;
}

const PANEL_WIDTH = 720;
const PANEL_HEIGHT = 180;
/** Scale of the PNG relative to the SVG's CSS pixels (crisp on high-density screens). */
const PNG_ZOOM = 1.5;

/**
 * The rows of `<dir>/metrics.jsonl`; a last line that is not whole JSON (a run still writing it)
 * is left out.
 * @throws ConfigError naming the folder or file: missing, not a run's folder, empty, or a bad row before the last.
 */
export function readMetricsRows(dir: string): Row[] {
  if (!existsSync(dir)) throw new ConfigError(`plot: ${dir} does not exist; give a run's folder (its run.dir, or log.dir when set apart)`);
  if (!statSync(dir).isDirectory()) throw new ConfigError(`plot: ${dir} is a file; give a run's folder (its run.dir, or log.dir when set apart), which holds metrics.jsonl`);
  const path = join(dir, 'metrics.jsonl');
  if (!existsSync(path)) throw new ConfigError(`plot: ${dir} holds no metrics.jsonl; give a run's folder (its run.dir, or log.dir when set apart)`);
  const lines = readFileSync(path, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const rows: Row[] = [];
  lines.forEach((line, i) => {
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      if (i === lines.length - 1) return; // torn by a write in progress or a kill
      throw new ConfigError(`plot: ${path} line ${i + 1} is not a JSON metrics row`);
    }
    if (typeof row === 'object' && row !== null && typeof (row as Row).step === 'number') rows.push(row as Row);
  });
  if (rows.length === 0) throw new ConfigError(`plot: ${path} holds no steps yet; plot it once the run has logged a step`);
  return rows;
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Points of `field` (finite values only: skipped steps have null). */
function points(rows: Row[], field: keyof Row, series: string): Point[] {
  return rows.flatMap((r) => (finite(r[field]) ? [{ step: r.step, series, value: r[field] }] : []));
}

/** One panel: raw values faint, a moving mean over `smooth` steps either side solid, sparse series as dots and lines. */
function panel(name: string, title: string, values: Point[], steps: [number, number], format: string, smooth: number, sparse: ReadonlySet<string>): object {
  const series = [...new Set(values.map((p) => p.series))];
  const colors = ['#1f77b4', '#d62728', '#2ca02c'];
  const line = (data: string, y: string, opacity: number, width: number): object => ({
    type: 'line',
    from: { data },
    encode: {
      enter: {
        x: { scale: 'x', field: 'step' },
        y: { scale: 'y', field: y },
        stroke: { scale: 'color', field: 'series' },
        strokeOpacity: { value: opacity },
        strokeWidth: { value: width },
      },
    },
  });
  return {
    type: 'group',
    name,
    title: { text: title, anchor: 'start', frame: 'group', fontSize: 13 },
    encode: { enter: { width: { value: PANEL_WIDTH }, height: { value: PANEL_HEIGHT }, stroke: { value: '#ccc' } } },
    data: [
      { name: `${name}-points`, values },
      { name: `${name}-dense`, source: `${name}-points`, transform: [{ type: 'filter', expr: series.filter((s) => sparse.has(s)).map((s) => `datum.series !== ${JSON.stringify(s)}`).join(' && ') || 'true' }] },
      { name: `${name}-sparse`, source: `${name}-points`, transform: [{ type: 'filter', expr: series.filter((s) => sparse.has(s)).map((s) => `datum.series === ${JSON.stringify(s)}`).join(' || ') || 'false' }] },
    ],
    scales: [
      { name: 'x', type: 'linear', domain: steps, range: [0, PANEL_WIDTH], zero: false },
      { name: 'y', type: 'linear', domain: { data: `${name}-points`, field: 'value' }, range: [PANEL_HEIGHT, 0], zero: false, nice: true },
      { name: 'color', type: 'ordinal', domain: series, range: colors.slice(0, series.length) },
    ],
    axes: [
      { orient: 'bottom', scale: 'x', title: 'step', grid: true, gridColor: '#eee', tickCount: 10, format: 'd' },
      { orient: 'left', scale: 'y', grid: true, gridColor: '#eee', tickCount: 5, format },
    ],
    legends: series.length > 1 ? [{ stroke: 'color', orient: 'top-right', symbolType: 'stroke', fillColor: 'white', padding: 6 }] : [],
    marks: [
      {
        type: 'group',
        from: { facet: { name: `${name}-series`, data: `${name}-dense`, groupby: 'series' } },
        data: [
          {
            name: `${name}-smooth`,
            source: `${name}-series`,
            transform: [{ type: 'window', sort: { field: 'step' }, ops: ['mean'], fields: ['value'], as: ['smooth'], frame: [-smooth, smooth] }],
          },
        ],
        marks: smooth > 0 ? [line(`${name}-series`, 'value', 0.3, 1), line(`${name}-smooth`, 'smooth', 1, 1.8)] : [line(`${name}-series`, 'value', 1, 1.5)],
      },
      {
        type: 'group',
        from: { facet: { name: `${name}-sparse-series`, data: `${name}-sparse`, groupby: 'series' } },
        marks: [
          line(`${name}-sparse-series`, 'value', 1, 1.5),
          {
            type: 'symbol',
            from: { data: `${name}-sparse-series` },
            encode: { enter: { x: { scale: 'x', field: 'step' }, y: { scale: 'y', field: 'value' }, fill: { scale: 'color', field: 'series' }, size: { value: 24 } } },
          },
        ],
      },
    ],
  };
}

/**
 * The Vega spec of a run's plot: loss (and validation loss when rows have `valLoss`), learning
 * rate and throughput (tokensPerSec, or TGS in rows without it) against the step.
 */
export function plotSpec(rows: Row[], title: string): { spec: Spec; panels: string[] } {
  const steps: [number, number] = [Math.min(...rows.map((r) => r.step)), Math.max(...rows.map((r) => r.step))];
  if (steps[0] === steps[1]) steps[1] = steps[0] + 1;
  // A moving mean over about 1/50 of the run either side: the trend through step-to-step noise.
  const smooth = rows.length >= 20 ? Math.max(1, Math.round(rows.length / 50)) : 0;
  const loss = [...points(rows, 'loss', 'train'), ...points(rows, 'valLoss', 'validation')];
  const lr = points(rows, 'lr', 'lr');
  const tps = points(rows, 'tokensPerSec', 'tokens/s');
  const throughput = tps.length > 0 ? tps : points(rows, 'tgs', 'TGS');
  const panels: object[] = [];
  const names: string[] = [];
  const add = (name: string, t: string, values: Point[], format: string, s: number): void => {
    if (values.length === 0) return;
    panels.push(panel(name, t, values, steps, format, s, new Set(['validation'])));
    names.push(name);
  };
  add('loss', loss.some((p) => p.series === 'validation') ? 'loss and validation loss (nats per token)' : 'loss (nats per token)', loss, '.2f', smooth);
  add('lr', 'learning rate', lr, '.1e', 0);
  add('throughput', tps.length > 0 ? 'throughput (tokens per second, global batch)' : 'throughput (TGS: tokens per rank per second)', throughput, '~s', smooth);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    background: 'white',
    padding: 16,
    title: { text: title, anchor: 'start', fontSize: 15, offset: 12 },
    config: { font: 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif' },
    layout: { columns: 1, padding: 36, bounds: 'full', align: 'all' },
    marks: panels,
  };
  return { spec: spec as Spec, panels: names };
}

/**
 * `loongtrain plot RUN_DIR [--out FILE.png]`: draw `<dir>/metrics.jsonl` as a PNG (Vega to SVG,
 * resvg to PNG; no browser), by default `<dir>/metrics.png`.
 * @throws ConfigError for a missing or empty metrics file.
 */
export async function plotRun(dir: string, out = join(dir, 'metrics.png')): Promise<PlotResult> {
  const rows = readMetricsRows(dir);
  const first = rows[0]!.step;
  const last = rows[rows.length - 1]!.step;
  const { spec, panels } = plotSpec(rows, `${basename(resolve(dir))}: ${first === last ? `step ${first}` : `steps ${first}–${last}`}`);
  const view = new View(parse(spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const resvg = new Resvg(svg, { fitTo: { mode: 'zoom', value: PNG_ZOOM }, background: 'white', font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } });
  const image = resvg.render();
  writeFileAtomic(out, image.asPng());
  return { path: out, width: image.width, height: image.height, rows: rows.length, panels };
}
