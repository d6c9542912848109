/** `evaluation.json` (EvaluateReport, written by `peft-lab evaluate` / "Evaluate on Data…") to the evaluation panel's view (pure). */
import type { EvaluationRunView, EvaluationScoreView, EvaluationView } from '../../../protocol/webview';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
// JSON writes a NaN loss as null; null is also what the view sends for it (JSON has no NaN).
const numOrNull = (v: unknown): number | null => (finite(v) ? v : null);

function score(v: unknown, where: string): EvaluationScoreView {
  if (!isObject(v)) throw new Error(`${where}: expected { loss, ece }`);
  return { loss: numOrNull(v.loss), ...(finite(v.metric) ? { metric: v.metric } : {}), ece: numOrNull(v.ece) };
}

export function evaluationView(raw: unknown, source: string): EvaluationView {
  if (!isObject(raw) || raw.version !== 1 || !Array.isArray(raw.runs)) throw new Error('not a PEFT Lab evaluation report (version 1 with "runs")');
  const runs: EvaluationRunView[] = raw.runs.map((r, i) => {
    if (!isObject(r) || typeof r.name !== 'string') throw new Error(`runs[${i}]: expected { name, base, finetuned }`);
    return {
      name: r.name,
      source: typeof r.source === 'string' ? r.source : '',
      ...(typeof r.metricName === 'string' ? { metricName: r.metricName } : {}),
      base: score(r.base, `runs[${i}].base`),
      finetuned: score(r.finetuned, `runs[${i}].finetuned`),
    };
  });
  return { source, data: typeof raw.data === 'string' ? raw.data : '', rows: finite(raw.rows) ? raw.rows : 0, runs };
}

/** The run folders the panel's links may open: the runs the report scored. */
export function evaluationLinks(view: EvaluationView): string[] {
  return view.runs.map((r) => r.source).filter(Boolean);
}
