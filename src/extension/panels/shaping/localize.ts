/** `localize.json` (LocalizeReport, written by `peft-lab localize`) to the localization panel's view (pure). */
import type { LocalizeReport } from '../../../protocol';
import type { LocalizationTaskView, LocalizationView } from '../../../protocol/webview';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const numOrNull = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function localizationView(raw: unknown, source: string): LocalizationView {
  if (!isObject(raw) || raw.version !== 1 || !Array.isArray(raw.runs)) throw new Error('not a PEFT Lab localization report (version 1 with "runs")');
  const report = raw as unknown as LocalizeReport;
  const tasks: LocalizationTaskView[] = report.runs.map((r, i) => {
    if (!isObject(r) || typeof r.name !== 'string' || !Array.isArray(r.levels)) throw new Error(`runs[${i}]: expected { name, levels }`);
    const t: LocalizationTaskView = {
      name: r.name,
      source: typeof r.source === 'string' ? r.source : '',
      levels: r.levels
        .map((l) => ({
          sparsity: numOrNull(l.sparsity) ?? NaN,
          fraction: numOrNull(l.fractionOfModel) ?? numOrNull(l.fraction),
          grafted: numOrNull(l.grafted) ?? 0,
          recoveredMetric: numOrNull(l.recovered?.metric),
          recoveredLoss: numOrNull(l.recovered?.loss),
          density: Array.isArray(l.layerDensity) ? l.layerDensity.filter((d) => isObject(d) && Number.isFinite(d.layer)).map((d) => ({ layer: d.layer, density: numOrNull(d.density) ?? 0 })) : [],
        }))
        .filter((l) => Number.isFinite(l.sparsity))
        .sort((a, b) => a.sparsity - b.sparsity),
    };
    if (typeof r.metricName === 'string') t.metricName = r.metricName;
    return t;
  });
  const overlap = overlapMatrices(report, tasks.map((t) => t.name));
  const view: LocalizationView = { source, tasks, overlap };
  if (typeof report.base === 'string') view.base = report.base;
  return view;
}

/** Pairwise Jaccard values into one symmetric matrix per sparsity (diagonal 1). */
export function overlapMatrices(report: Pick<LocalizeReport, 'overlap'>, taskOrder: readonly string[]): LocalizationView['overlap'] {
  const pairs = Array.isArray(report.overlap) ? report.overlap.filter((o) => isObject(o) && typeof o.a === 'string' && typeof o.b === 'string') : [];
  if (!pairs.length) return [];
  const bySparsity = new Map<number | null, typeof pairs>();
  for (const p of pairs) {
    const k = numOrNull(p.sparsity);
    bySparsity.set(k, [...(bySparsity.get(k) ?? []), p]);
  }
  return [...bySparsity.entries()]
    .sort((a, b) => (a[0] ?? -1) - (b[0] ?? -1))
    .map(([sparsity, list]) => {
      const names = [...new Set([...taskOrder.filter((t) => list.some((p) => p.a === t || p.b === t)), ...list.flatMap((p) => [p.a, p.b])])];
      const idx = new Map(names.map((n, i) => [n, i]));
      const matrix: (number | null)[][] = names.map((_, i) => names.map((__, j) => (i === j ? 1 : null)));
      for (const p of list) {
        const i = idx.get(p.a)!;
        const j = idx.get(p.b)!;
        matrix[i]![j] = matrix[j]![i] = numOrNull(p.jaccard);
      }
      return { sparsity, tasks: names, matrix };
    });
}
