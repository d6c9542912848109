/**
 * The runs view's shape, without VS Code: runs grouped by the spec they came from, each run's
 * label, description (step/total, loss, eval metric), icon, tooltip and context value.
 */
import { basename, dirname, isAbsolute, relative, sep } from 'node:path';
import type { RunInfo, RunViewState } from './runs';
import { canResume, compareRunsNewestFirst } from './runs';
import { formatMetricValue, metricIsFraction } from '../../protocol';

export interface SpecGroup {
  /** Stable id: the spec path, or '' for runs whose spec is unknown. */
  id: string;
  label: string;
  /** Where the spec is (relative to the workspace when inside it). */
  description: string;
  spec: string | undefined;
  runs: RunInfo[];
}

/** Relative to `root` when inside it (with forward slashes; '' for the root itself), else absolute. */
export function displayPath(p: string, root: string | undefined): string {
  if (root) {
    const rel = relative(root, p);
    if (!rel.startsWith('..') && !isAbsolute(rel)) return rel.split(sep).join('/');
  }
  return p;
}

function specLabel(spec: string): string {
  return basename(spec).replace(/\.peft\.json$/i, '');
}

/** Groups by spec (alphabetical by label, unknown specs last); runs newest first within a group. */
export function groupRuns(runs: readonly RunInfo[], workspaceRoot: string | undefined): SpecGroup[] {
  const bySpec = new Map<string, RunInfo[]>();
  for (const r of runs) {
    const key = r.spec ?? '';
    const list = bySpec.get(key);
    if (list) list.push(r);
    else bySpec.set(key, [r]);
  }
  const groups: SpecGroup[] = [...bySpec].map(([id, list]) => ({
    id,
    label: id ? specLabel(id) : 'Other runs',
    description: id ? displayPath(dirname(id), workspaceRoot) : 'spec unknown',
    spec: id || undefined,
    runs: [...list].sort(compareRunsNewestFirst),
  }));
  // Two specs of the same name in different folders: tell them apart by folder.
  return groups.sort((a, b) => (a.id === '' ? 1 : b.id === '' ? -1 : a.label.localeCompare(b.label) || a.description.localeCompare(b.description)));
}

/** The run's label: its folder name; a comparison's variant, its name first, then which comparison. */
export function runLabel(run: RunInfo): string {
  if (!run.compareFile) return run.name;
  const folder = basename(dirname(run.dir));
  const stamp = /(\d{8}-\d{6}(?:-\d+)?)$/.exec(folder)?.[1];
  return `${run.name} — compare ${stamp ?? folder}`;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return x.toFixed(a >= 100 ? 1 : a >= 10 ? 2 : 3);
}

/** The eval metric to show: the summary's, else the last record's accuracy. */
function evalMetric(run: RunInfo): { name: string; value: number } | undefined {
  const s = run.status?.summary;
  if (s?.evalMetric !== undefined) return { name: s.metricName ?? 'metric', value: s.evalMetric };
  // A record alone does not say what it measured (a regression's r is no accuracy).
  const acc = run.lastMetric?.eval_accuracy;
  if (acc !== undefined) return { name: 'metric', value: acc };
  return undefined;
}

/** An eval metric as people read it: fractions of right answers in percent, anything else as a number. */
export function formatMetric(name: string, value: number): string {
  return metricIsFraction(name) ? `${name} ${formatMetricValue(name, value)}` : `${name} ${fmt(value)}`;
}

const STATE_WORDS: Record<RunViewState, string> = {
  running: 'running',
  done: 'done',
  failed: 'failed',
  cancelled: 'cancelled',
  interrupted: 'interrupted',
  unknown: 'starting',
};

/** e.g. "120/500 · loss 1.234 · accuracy 81.0%", with the state first unless running or done. */
export function describeRun(run: RunInfo): string {
  const parts: string[] = [];
  if (run.state !== 'running' && run.state !== 'done') parts.push(STATE_WORDS[run.state]);
  const st = run.status;
  const step = Math.max(st?.step ?? 0, run.lastMetric?.step ?? 0);
  if (st && st.totalSteps > 0) parts.push(`${step}/${st.totalSteps}`);
  else if (step > 0) parts.push(`step ${step}`);
  const loss = st?.summary?.loss ?? run.lastMetric?.loss;
  if (loss !== undefined) parts.push(`loss ${fmt(loss)}`);
  const evalLoss = st?.summary?.evalLoss ?? run.lastMetric?.eval_loss;
  const metric = evalMetric(run);
  if (metric) parts.push(formatMetric(metric.name, metric.value));
  else if (evalLoss !== undefined) parts.push(`eval ${fmt(evalLoss)}`);
  return parts.join(' · ');
}

/** Codicon id and theme colour id for a state. */
export function runIcon(state: RunViewState): { id: string; color?: string } {
  switch (state) {
    case 'running':
      return { id: 'sync~spin' };
    case 'done':
      return { id: 'pass', color: 'testing.iconPassed' };
    case 'failed':
      return { id: 'error', color: 'testing.iconFailed' };
    case 'cancelled':
      return { id: 'circle-slash' };
    case 'interrupted':
      return { id: 'debug-pause', color: 'list.warningForeground' };
    case 'unknown':
      return { id: 'loading~spin' };
  }
}

/**
 * `run` plus one `:flag` per thing the run offers, matched by the menus' `when` clauses with
 * regular expressions (`viewItem =~ /:cancel\b/`): state, cancel, resume, adapter, compare.
 */
export function runContextValue(run: RunInfo): string {
  const flags = [`run`, `state-${run.state}`];
  if (run.state === 'running') flags.push('cancel');
  if (canResume(run)) flags.push('resume');
  if (run.hasAdapter) flags.push('adapter');
  if (run.compareFile) flags.push('compare');
  if (run.state !== 'running') flags.push('delete');
  return flags.join(':');
}

/** Markdown lines for the tooltip. */
export function runTooltip(run: RunInfo, workspaceRoot: string | undefined): string {
  const st = run.status;
  const lines = [`**${runLabel(run)}** — ${STATE_WORDS[run.state]}`, ''];
  if (st) {
    lines.push(`- adapter: \`${st.adapter}\``);
    if (st.trainableParams !== undefined) lines.push(`- trainable parameters: ${st.trainableParams.toLocaleString('en-US')}`);
    lines.push(`- step ${st.step}${st.totalSteps ? ` of ${st.totalSteps}` : ''}`);
    lines.push(`- started ${st.startedAt}, updated ${st.updatedAt}`);
    if (st.lastCheckpoint) lines.push(`- last checkpoint: \`${st.lastCheckpoint}\``);
    // status.json is read as it is: only a string names a backend.
    const backend = typeof st.backend === 'string' && st.backend ? st.backend : undefined;
    if (st.summary?.tokensPerS !== undefined) lines.push(`- ${fmt(st.summary.tokensPerS)} tokens/s${backend ? ` on ${backend}` : ''}`);
    else if (backend) lines.push(`- on ${backend}`);
    if (st.error) lines.push('', `Error: ${st.error}`);
  }
  if (run.state === 'interrupted') lines.push('', 'The process that ran it has ended; Resume continues from the last checkpoint.');
  lines.push('', `\`${displayPath(run.dir, workspaceRoot)}\``);
  return lines.join('\n');
}
