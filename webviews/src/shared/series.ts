/**
 * From metrics.jsonl records to chart series (pure; no DOM): x axis by step or by elapsed time,
 * smoothing, log-scale filtering, progress and ETA.
 */
import type { RunStatus } from '../../../src/protocol';
import type { DashboardRecord } from '../../../src/protocol/webview';
import { emaSmooth } from './smoothing';

export type XAxis = 'step' | 'time';
/** A chart point; y null is a gap in the line (a value that was not finite: a diverged loss). */
export interface Point {
  x: number;
  y: number | null;
}

const finite = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);

/** The x value of a record: its step, or its elapsed seconds (NaN when the record has none). */
export function xOf(r: DashboardRecord, axis: XAxis): number {
  const v = axis === 'step' ? r.step : r.elapsed_s;
  return finite(v) ? v : NaN;
}

/**
 * The points of one field: records without that field (eval_loss exists on eval steps only) or
 * without a finite x are skipped; a record whose value is null (not finite where it was written)
 * is a gap (y null). Sorted by x, one point per x (the last record wins: a resumed run may repeat
 * steps).
 */
export function fieldPoints(records: readonly DashboardRecord[], field: string, axis: XAxis): Point[] {
  const byX = new Map<number, number | null>();
  for (const r of records) {
    const y = r[field];
    const x = xOf(r, axis);
    if (y === undefined || !Number.isFinite(x)) continue;
    byX.set(x, finite(y) ? y : null);
  }
  return [...byX].sort((a, b) => a[0] - b[0]).map(([x, y]) => ({ x, y }));
}

/** How many points are drawn (gaps not counted). */
export function drawnCount(points: readonly Point[]): number {
  return points.reduce((n, p) => n + (p.y === null ? 0 : 1), 0);
}

/** Applies the EMA to the y values of points already in x order. */
export function smoothPoints(points: readonly Point[], weight: number): Point[] {
  const ys = emaSmooth(
    points.map((p) => p.y ?? NaN),
    weight,
  );
  // The EMA keeps a gap a gap (NaN in, NaN out).
  return points.map((p, i) => ({ x: p.x, y: finite(ys[i]) ? ys[i]! : null }));
}

/** On a log scale only positive values can be drawn: the others are dropped (gaps stay). */
export function forScale(points: readonly Point[], log: boolean): Point[] {
  return log ? points.filter((p) => p.y === null || p.y > 0) : [...points];
}

export interface Progress {
  step: number;
  total: number;
  /** 0..1 */
  fraction: number;
  /** Seconds left, from the recent step rate; undefined when unknown or finished. */
  etaS?: number;
  /** Latest tokens/s and loss. */
  tokensPerS?: number;
  loss?: number;
  evalLoss?: number;
  elapsedS?: number;
}

/**
 * Progress of a run from its status (step / totalSteps) and records. The ETA uses the rate over the
 * last `window` records (steps per elapsed second), so a slow start (compilation, warm-up) does not
 * distort it.
 */
export function progressOf(records: readonly DashboardRecord[], status: RunStatus | undefined, window = 20): Progress {
  const last = records.at(-1);
  const step = Math.max(status?.step ?? 0, last?.step ?? 0);
  const total = Math.max(status?.totalSteps ?? 0, step);
  const p: Progress = { step, total, fraction: total > 0 ? Math.min(1, step / total) : 0 };
  if (last) {
    if (finite(last.tokens_per_s)) p.tokensPerS = last.tokens_per_s;
    if (finite(last.loss)) p.loss = last.loss;
    if (finite(last.elapsed_s)) p.elapsedS = last.elapsed_s;
  }
  const lastEval = [...records].reverse().find((r) => finite(r.eval_loss));
  if (lastEval) p.evalLoss = lastEval.eval_loss!;
  const running = !status || status.state === 'running';
  if (running && last && total > step && records.length >= 2) {
    const first = records[Math.max(0, records.length - 1 - window)]!;
    const dSteps = last.step - first.step;
    const dT = finite(last.elapsed_s) && finite(first.elapsed_s) ? last.elapsed_s - first.elapsed_s : NaN;
    if (dSteps > 0 && dT > 0 && Number.isFinite(dT)) p.etaS = ((total - step) * dT) / dSteps;
  }
  return p;
}

/** "1h 02m", "3m 07s", "12s". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}
