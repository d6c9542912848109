/**
 * Incremental parsing of `metrics.jsonl` as it grows (pure). The writer appends whole lines, but a
 * reader can catch one half written: the unterminated tail is kept until its newline arrives.
 * Malformed lines are skipped (and counted); JSON `null` (how NaN is written) becomes NaN.
 */
import type { MetricRecord } from '../../../protocol';

const REQUIRED = ['step', 'loss', 'lr', 'tokens_per_s', 'elapsed_s'] as const;

/** One line to a record, or undefined when it is not a metrics record. */
export function parseMetricLine(line: string): MetricRecord | undefined {
  const t = line.trim();
  if (!t) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (typeof x === 'number') out[k] = x;
    else if (x === null) out[k] = NaN;
  }
  if (typeof out.step !== 'number' || !Number.isFinite(out.step)) return undefined;
  for (const k of REQUIRED) if (typeof out[k] !== 'number') out[k] = NaN;
  return out as MetricRecord;
}

export class MetricsParser {
  private rest = '';
  skipped = 0;

  /** Feeds the next chunk of text; returns the records of the lines it completed. */
  push(chunk: string): MetricRecord[] {
    const text = this.rest + chunk;
    const end = text.lastIndexOf('\n');
    if (end < 0) {
      this.rest = text;
      return [];
    }
    this.rest = text.slice(end + 1);
    const out: MetricRecord[] = [];
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
