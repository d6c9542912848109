/** `compare.json` (written by `peft-lab compare`) to the comparison panel's view (pure). */
import { dirname } from 'node:path';
import type { ComparisonRowView, ComparisonView } from '../../../protocol/webview';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

function row(v: unknown, i: number): ComparisonRowView {
  if (!isObject(v) || typeof v.name !== 'string') throw new Error(`variants[${i}]: expected an object with a "name"`);
  const adapter = isObject(v.adapter) ? v.adapter : {};
  const curve = Array.isArray(v.curve)
    ? v.curve.flatMap((p: unknown) => {
        if (!isObject(p)) return [];
        const step = num(p.step);
        if (step === undefined) return [];
        // A diverged step (null in the file) stays in the curve, as a gap.
        const point: ComparisonRowView['curve'][number] = { step, loss: num(p.loss) ?? null };
        if (p.eval_loss !== undefined) point.eval_loss = num(p.eval_loss) ?? null;
        return [point];
      })
    : [];
  const r: ComparisonRowView = { name: v.name, kind: str(adapter.kind) ?? '?', state: str(v.state) ?? 'unknown', runDir: str(v.runDir) ?? '', curve };
  const set = <K extends keyof ComparisonRowView>(k: K, x: ComparisonRowView[K] | undefined) => {
    if (x !== undefined) r[k] = x;
  };
  set('trainableParams', num(v.trainableParams));
  set('finalLoss', num(v.finalLoss));
  set('finalEvalLoss', num(v.finalEvalLoss));
  set('finalMetric', num(v.finalMetric));
  set('metricName', str(v.metricName));
  set('forgetting', isObject(v.forgetting) ? num(v.forgetting.delta) : undefined);
  set('tokensPerS', num(v.tokensPerS));
  set('peakRssMb', num(v.peakRssMb));
  set('medianStepMs', num(v.medianStepMs));
  set('error', str(v.error));
  return r;
}

export function comparisonView(raw: unknown, source: string): ComparisonView {
  if (!isObject(raw) || raw.version !== 1 || !Array.isArray(raw.variants)) throw new Error('not a PEFT Lab comparison (version 1 with "variants")');
  const view: ComparisonView = { source, name: str(raw.name) ?? '', model: str(raw.model) ?? '', rows: raw.variants.map(row) };
  if (str(raw.backend)) view.backend = raw.backend as string;
  if (str(raw.createdAt)) view.createdAt = raw.createdAt as string;
  return view;
}

/** The folders the panel's links may open: the compare folder (the variants' run folders are inside it) and each variant's run folder. */
export function comparisonLinks(view: ComparisonView): string[] {
  return [dirname(view.source), ...view.rows.map((r) => r.runDir).filter(Boolean)];
}
