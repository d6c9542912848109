/**
 * Incremental parsing of `metrics.jsonl` as it grows (pure). The writer appends whole lines, but a
 * reader can catch one half written: the unterminated tail is kept until its newline arrives.
 * Malformed lines are skipped (and counted). Records come out as the dashboard gets them: JSON
 * `null` (how NaN is written), a number out of range and a missing required field are all null,
 * which survives the JSON trip to the webview (a NaN would arrive as null and fail its schema).
 */
import type { DashboardRecord } from '../../../protocol/webview';

const REQUIRED = ['loss', 'lr', 'tokens_per_s', 'elapsed_s'] as const;

/** One line to a record, or undefined when it is not a metrics record. */
export function parseMetricLine(line: string): DashboardRecord | undefined {
  const t = line.trim();
  if (!t) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Record<string, number | null> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    // 1e999 parses to Infinity: null like a written NaN.
    if (typeof x === 'number') out[k] = Number.isFinite(x) ? x : null;
    else if (x === null) out[k] = null;
  }
  if (typeof out.step !== 'number') return undefined;
  for (const k of REQUIRED) if (out[k] === undefined) out[k] = null;
  return out as DashboardRecord;
}

export class MetricsParser {
  private rest = '';
  skipped = 0;

  /** Feeds the next chunk of text; returns the records of the lines it completed. */
  push(chunk: string): DashboardRecord[] {
    const text = this.rest + chunk;
    const end = text.lastIndexOf('\n');
    if (end < 0) {
      this.rest = text;
      return [];
    }
    this.rest = text.slice(end + 1);
    const out: DashboardRecord[] = [];
    for (const line of text.slice(0, end).split('\n')) {
      if (!line.trim()) continue;
      const r = parseMetricLine(line);
      if (r) out.push(r);
      else this.skipped++;
    }
    return out;
  }

  reset(): void {
    this.rest = '';
    this.skipped = 0;
  }
}
