/**
 * `importance.json` (ImportanceReport, written by `peft-lab importance`) to the importance panel's
 * view (pure): one selectable heatmap per method and aggregate, all on one set of rows (layers)
 * and columns (module types).
 */
import { IMPORTANCE_METHODS, type ImportanceMethod, type ImportanceReport, type LayerGrid } from '../../../protocol';
import type { ImportanceMethodView, ImportanceView } from '../../../protocol/webview';
import { modelDisplayName } from '../../../../sidecar/src/spec/hub-cache';

export const METHOD_LABELS: Record<ImportanceMethod, string> = { fisher: 'Fisher', 'grad-norm': 'Gradient magnitude', taylor: 'Taylor', adalora: 'AdaLoRA sensitivity' };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A LayerGrid, checked: string rows/columns and a rows × columns table of numbers or nulls. */
export function asLayerGrid(v: unknown, where: string): LayerGrid {
  if (!isObject(v)) throw new Error(`${where}: expected a layer grid object`);
  const { rows, columns, values } = v;
  if (!Array.isArray(rows) || !rows.every((r) => typeof r === 'string')) throw new Error(`${where}.rows: expected a list of strings`);
  if (!Array.isArray(columns) || !columns.every((c) => typeof c === 'string')) throw new Error(`${where}.columns: expected a list of strings`);
  if (!Array.isArray(values) || values.length !== rows.length) throw new Error(`${where}.values: expected ${rows.length} rows`);
  const clean = values.map((row: unknown, i) => {
    if (!Array.isArray(row) || row.length !== columns.length) throw new Error(`${where}.values[${i}]: expected ${columns.length} values`);
    return row.map((x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x : null));
  });
  const layers = Array.isArray(v.layers) ? (v.layers as unknown[]).map((x) => (typeof x === 'number' ? x : NaN)) : rows.map((_, i) => i);
  return { rows: rows as string[], columns: columns as string[], layers, values: clean };
}

/** Re-indexes a grid onto the union axes (cells it lacks are null). */
export function reindex(g: LayerGrid, rows: readonly string[], columns: readonly string[]): (number | null)[][] {
  const ri = new Map(g.rows.map((r, i) => [r, i]));
  const ci = new Map(g.columns.map((c, j) => [c, j]));
  return rows.map((r) => columns.map((c) => {
    const i = ri.get(r);
    const j = ci.get(c);
    return i === undefined || j === undefined ? null : (g.values[i]![j] ?? null);
  }));
}

const union = (lists: readonly (readonly string[])[]): string[] => [...new Set(lists.flat())];

/** Optional IST scores over training (not in every report): `{ ist: [{ step, grid }] }`. */
function istTimeline(report: Record<string, unknown>): { step: number; grid: LayerGrid }[] | undefined {
  const ist = report.ist;
  if (!Array.isArray(ist) || !ist.length) return undefined;
  return ist.map((f: unknown, i) => {
    if (!isObject(f) || typeof f.step !== 'number') throw new Error(`ist[${i}]: expected { step, grid }`);
    return { step: f.step, grid: asLayerGrid(f.grid, `ist[${i}].grid`) };
  });
}

export function importanceView(raw: unknown, source: string): ImportanceView {
  if (!isObject(raw) || raw.version !== 1 || !isObject(raw.grids)) throw new Error('not a PEFT Lab importance report (version 1 with "grids")');
  const report = raw as unknown as ImportanceReport;
  const entries: { id: string; label: string; grid: LayerGrid; timeline?: { step: number; grid: LayerGrid }[] }[] = [];
  for (const m of IMPORTANCE_METHODS) {
    const g = (raw.grids as Record<string, unknown>)[m];
    if (!isObject(g)) continue;
    if (g.mean !== undefined) entries.push({ id: m, label: `${METHOD_LABELS[m]} (mean per parameter)`, grid: asLayerGrid(g.mean, `grids.${m}.mean`) });
    if (g.sum !== undefined) entries.push({ id: `${m}:sum`, label: `${METHOD_LABELS[m]} (sum over the cell)`, grid: asLayerGrid(g.sum, `grids.${m}.sum`) });
  }
  if (raw.gradNormGrid !== undefined) entries.push({ id: 'grad-norm:l2', label: 'Gradient norm ‖Σg‖₂', grid: asLayerGrid(raw.gradNormGrid, 'gradNormGrid') });
  if (isObject(raw.adapterGrids)) {
    for (const m of IMPORTANCE_METHODS) {
      const g = raw.adapterGrids[m];
      if (isObject(g) && g.mean !== undefined) entries.push({ id: `adapter:${m}`, label: `Adapter · ${METHOD_LABELS[m]} (mean)`, grid: asLayerGrid(g.mean, `adapterGrids.${m}.mean`) });
    }
  }
  if (isObject(raw.activations) && raw.activations.grid !== undefined) {
    entries.push({ id: 'activations', label: 'Input activations (mean |x|)', grid: asLayerGrid(raw.activations.grid, 'activations.grid') });
  }
  const ist = istTimeline(raw);
  if (ist) entries.push({ id: 'ist', label: 'IST score over time', grid: ist.at(-1)!.grid, timeline: ist });
  if (!entries.length) throw new Error('the report has no importance grids');

  const grids = entries.flatMap((e) => [e.grid, ...(e.timeline?.map((f) => f.grid) ?? [])]);
  const layers = union(grids.map((g) => g.rows));
  const modules = union(grids.map((g) => g.columns));
  const methods: ImportanceMethodView[] = entries.map((e) => {
    const m: ImportanceMethodView = { id: e.id, label: e.label, scores: reindex(e.grid, layers, modules) };
    if (e.timeline) m.timeline = e.timeline.map((f) => ({ step: f.step, scores: reindex(f.grid, layers, modules) }));
    return m;
  });
  const notes: string[] = [];
  const data = report.data ?? report.inputs;
  if (data) notes.push(`data: ${data}`);
  if (typeof report.batches === 'number') notes.push(`${report.batches} batches, ${report.examples ?? '?'} examples, ${report.tokens ?? '?'} tokens; mean loss ${typeof report.meanLoss === 'number' ? report.meanLoss.toPrecision(4) : '?'}`);
  if (report.adapter) notes.push(`adapter: ${report.adapter}`);
  const view: ImportanceView = { source, layers, modules, methods, notes };
  if (typeof report.model === 'string') view.model = modelDisplayName(report.model);
  return view;
}
