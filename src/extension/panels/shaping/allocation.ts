/**
 * The allocation report (AllocationReport, written by `peft-lab allocate`) to the budget panel's
 * view (pure), and the run spec that trains with one of its allocations.
 */
import type { AllocationReport, AllocationSpec, RankBudgetResult, SptBudgetResult, SptTensorDecision } from '../../../protocol';
import type { BudgetLayerView, BudgetOptionView, BudgetView } from '../../../protocol/webview';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** A count the view can carry (JSON has no NaN): a figure missing from the report counts 0. */
const count = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) ? n : 0);

function compact(n: number): string {
  const a = Math.abs(n);
  const t = (x: number) => String(Number(x.toPrecision(3)));
  return a >= 1e6 ? `${t(n / 1e6)}M` : a >= 1e3 ? `${t(n / 1e3)}k` : String(Math.round(n));
}

const numel = (t: { shape?: unknown }): number => (Array.isArray(t.shape) ? (t.shape as number[]).reduce((a, b) => a * (Number.isFinite(b) ? b : 0), 1) : 0);
/** The last dotted segment before `.weight`/`.bias`: `transformer.h.0.attn.c_attn.weight` → module `transformer.h.0.attn.c_attn`. */
const moduleOf = (t: SptTensorDecision): string => t.module ?? t.name.replace(/\.(weight|bias)$/, '');

interface LayerAcc {
  lora: number;
  sparse: number;
  total: number;
  ranks: Record<string, number>;
}

function layerLabels(grid: { rows?: unknown; layers?: unknown } | undefined): Map<number, string> {
  const m = new Map<number, string>();
  if (grid && Array.isArray(grid.rows) && Array.isArray(grid.layers)) grid.layers.forEach((l: unknown, i: number) => typeof l === 'number' && m.set(l, String((grid.rows as unknown[])[i])));
  return m;
}
const labelOf = (labels: Map<number, string>, layer: number) => labels.get(layer) ?? (layer < 0 ? 'embeddings/head' : `layer ${layer}`);

/** Parameters of every candidate tensor per layer (from SPT's tensor list, which covers all candidates). */
function layerTotals(report: AllocationReport): Map<number, number> {
  const totals = new Map<number, number>();
  const tensors = report.spt?.find((r) => Array.isArray(r.tensors) && r.tensors.length)?.tensors ?? [];
  for (const t of tensors) totals.set(t.layer, (totals.get(t.layer) ?? 0) + numel(t));
  return totals;
}

function toLayers(acc: Map<number, LayerAcc>, labels: Map<number, string>): BudgetLayerView[] {
  return [...acc.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([layer, a]) => {
      const v: BudgetLayerView = { name: labelOf(labels, layer), lora: count(a.lora), sparse: count(a.sparse), frozen: Math.max(0, count(a.total - a.sparse)) };
      if (Object.keys(a.ranks).length) v.ranks = a.ranks;
      return v;
    });
}

function sptOption(r: SptBudgetResult, totals: Map<number, number>): BudgetOptionView {
  const acc = new Map<number, LayerAcc>();
  for (const [layer, total] of totals) acc.set(layer, { lora: 0, sparse: 0, total, ranks: {} });
  const loraR = r.allocation?.lora;
  for (const t of r.tensors ?? []) {
    const a = acc.get(t.layer) ?? { lora: 0, sparse: 0, total: numel(t), ranks: {} };
    acc.set(t.layer, a);
    if (t.decision === 'lora') {
      a.lora += t.cost;
      const mod = moduleOf(t);
      a.ranks[t.type] = count(loraR?.rankPattern?.[mod] ?? loraR?.r);
    } else if (t.decision === 'sparse' || t.decision === 'full') a.sparse += t.cost;
  }
  return { label: `SPT · ${r.budget} · ${compact(count(r.cost))} trainable`, budget: count(r.target), key: `spt:${r.budget}`, layers: toLayers(acc, layerLabels(r.grid)) };
}

function rankOption(r: RankBudgetResult, totals: Map<number, number>): BudgetOptionView {
  const acc = new Map<number, LayerAcc>();
  for (const [layer, total] of totals) acc.set(layer, { lora: 0, sparse: 0, total, ranks: {} });
  for (const m of r.modules ?? []) {
    const a = acc.get(m.layer) ?? { lora: 0, sparse: 0, total: 0, ranks: {} };
    acc.set(m.layer, a);
    a.lora += m.params;
    if (count(m.rank) > 0) a.ranks[m.type] = m.rank;
  }
  return { label: `LoRA ranks · ${r.budget} · ${compact(count(r.params))} trainable`, budget: count(r.target), key: `rank:${r.budget}`, layers: toLayers(acc, layerLabels(r.grid)) };
}

export function budgetView(raw: unknown, source: string): BudgetView {
  if (!isObject(raw) || raw.version !== 1 || (!Array.isArray(raw.spt) && !Array.isArray(raw.rank))) {
    throw new Error('not a PEFT Lab allocation report (version 1 with "spt" or "rank" results)');
  }
  const report = raw as unknown as AllocationReport;
  const totals = layerTotals(report);
  const options = [...(report.spt ?? []).map((r) => sptOption(r, totals)), ...(report.rank ?? []).map((r) => rankOption(r, totals))];
  if (!options.length) throw new Error('the allocation report has no budgets');
  const view: BudgetView = { source, options };
  if (typeof raw.spec === 'string') view.spec = raw.spec;
  if (typeof report.importance === 'string') view.model = report.importance;
  if (typeof report.method === 'string') view.method = report.method;
  if (Number.isFinite(report.totalParams)) view.totalParams = report.totalParams;
  return view;
}

/** The allocation of the option with this key (`spt:<budget>` / `rank:<budget>`). */
export function allocationFor(raw: unknown, key: string): AllocationSpec | undefined {
  if (!isObject(raw)) return undefined;
  const report = raw as unknown as AllocationReport;
  const [kind, ...rest] = key.split(':');
  const budget = rest.join(':');
  const list: { budget: string; allocation: AllocationSpec }[] = kind === 'spt' ? (report.spt ?? []) : kind === 'rank' ? (report.rank ?? []) : [];
  return list.find((r) => r.budget === budget)?.allocation;
}

/** A file-name-safe slug of a key: `spt:0.5%` → `spt-0.5pct`. */
export function keySlug(key: string): string {
  return key.replace(/%/g, 'pct').replace(/[^A-Za-z0-9.]+/g, '-').replace(/^-+|-+$/g, '');
}

/**
 * The spec that trains with an allocation: the source spec's JSON with `"allocation"` (a path
 * relative to the spec's folder) and a name of its own; `variants` (a comparison) dropped.
 */
export function deriveSpec(sourceSpecText: string, allocationPath: string, slug: string): string {
  const spec = JSON.parse(sourceSpecText) as Record<string, unknown>;
  if (!isObject(spec)) throw new Error('the source spec is not a JSON object');
  const name = typeof spec.name === 'string' ? spec.name : undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(spec)) {
    if (k === 'variants' || k === 'allocation') continue;
    out[k] = v;
    if (k === 'adapter') out.allocation = allocationPath;
  }
  out.allocation = allocationPath;
  if (name) out.name = `${name}-${slug}`.slice(0, 100);
  return `${JSON.stringify(out, null, 2)}\n`;
}
