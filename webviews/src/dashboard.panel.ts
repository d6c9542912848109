/**
 * Run dashboard: live train/eval loss (EMA smoothing, log scale, step or time axis), learning
 * rate, tokens/s, gradient norm (before clipping), AdaLoRA's rank budget where a run logs one, and
 * progress/ETA of one or more runs, overlaid. The host sends the records it has
 * (`dashboard/runs`) and then what is appended (`dashboard/append`, `dashboard/status`).
 */
import './lib/panel.css';
import { Legend, LinearScale, LineController, LineElement, LogarithmicScale, PointElement, Tooltip, type ChartDataset } from 'chart.js';
import type { DashboardRecord, DashboardRun } from '../../src/protocol/webview';
import { bootstrap, errorLine } from './lib/bootstrap';
import { Chart, followTheme, makeChart, markDrawn, setChartDefaults, themedPlugins, themedScale } from './lib/charts';
import { button, fill, h, labelled } from './lib/dom';
import { settingControls } from './lib/settings';
import type { Theme } from './lib/theme';
import { withAlpha } from './shared/color';
import { formatValue } from './shared/format';
import { drawnCount, fieldPoints, forScale, formatDuration, progressOf, smoothPoints, type Point, type XAxis } from './shared/series';

Chart.register(LineController, LineElement, PointElement, LinearScale, LogarithmicScale, Legend, Tooltip);

interface UI {
  smoothing: number;
  logScale: boolean;
  xAxis: XAxis;
}
const panel = bootstrap<UI>('dashboard', { smoothing: 0.6, logScale: false, xAxis: 'step' });
setChartDefaults(panel.theme);

const runs = new Map<string, DashboardRun>();
const order: string[] = [];
const colorIndex = new Map<string, number>();
const runColor = (id: string, theme: Theme) => theme.series[(colorIndex.get(id) ?? 0) % theme.series.length]!;

// ---- layout -----------------------------------------------------------------------------------------

const app = document.getElementById('app')!;
const smoothingValue = h('output', { id: 'smoothing-value', for: 'smoothing' }, panel.ui.smoothing.toFixed(2));
const smoothing = h('input', { id: 'smoothing', type: 'range', min: 0, max: 0.99, step: 0.01, 'aria-label': 'Smoothing (EMA weight)' });
smoothing.value = String(panel.ui.smoothing);
smoothing.addEventListener('input', () => {
  const v = Number(smoothing.value);
  smoothingValue.textContent = v.toFixed(2);
  panel.setUI({ smoothing: v });
  scheduleRender();
});
// Scale settings rebuild the chart's axes (function declaration below, hoisted).
const scaleSettings = settingControls(panel, () => rebuildScales());
const toolbar = h(
  'div',
  { class: 'toolbar', role: 'toolbar', 'aria-label': 'Chart options' },
  labelled('Smoothing', h('span', { class: 'control' }, smoothing, smoothingValue)),
  scaleSettings.checkbox('Log scale', panel.ui.logScale, (v) => ({ logScale: v }), 'log-scale'),
  scaleSettings.select<XAxis>(
    'X axis',
    [
      { value: 'step', label: 'Step' },
      { value: 'time', label: 'Time (s)' },
    ],
    panel.ui.xAxis,
    (v) => ({ xAxis: v }),
    'x-axis',
  ),
  button('Add runs…', () => panel.post('dashboard/addRuns', {}), { class: 'secondary', id: 'add-runs' }),
);
const progressBody = h('tbody');
const progressTable = h(
  'table',
  { class: 'data', id: 'progress', 'aria-label': 'Run progress' },
  h(
    'thead',
    {},
    h(
      'tr',
      {},
      h('th', { scope: 'col' }, 'Run'),
      h('th', { scope: 'col', class: 'text' }, 'State'),
      h('th', { scope: 'col', class: 'text' }, 'Progress'),
      h('th', { scope: 'col' }, 'Step'),
      h('th', { scope: 'col' }, 'ETA'),
      h('th', { scope: 'col' }, 'Elapsed'),
      h('th', { scope: 'col' }, 'Loss'),
      h('th', { scope: 'col' }, 'Eval loss'),
      h('th', { scope: 'col' }, 'Tokens/s'),
      h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')),
    ),
  ),
  progressBody,
);
const empty = h('p', { class: 'empty', id: 'empty' }, 'Waiting for the run’s first metrics…');
const canvas = (id: string, label: string) => h('canvas', { id, role: 'img', 'aria-label': label });
const lossCanvas = canvas('loss-chart', 'Training and evaluation loss');
const lrCanvas = canvas('lr-chart', 'Learning rate');
const tpsCanvas = canvas('tps-chart', 'Tokens per second');
const gradCanvas = canvas('grad-chart', 'Gradient norm before clipping');
const rankCanvas = canvas('rank-budget-chart', 'AdaLoRA rank budget: ranks kept over all adapted modules');
// Shown once a run logs AdaLoRA's budget (adalora_budget).
const rankSection = h('section', { class: 'card', id: 'rank-budget', hidden: true }, h('h2', {}, 'Rank budget (AdaLoRA)'), h('div', { class: 'chart-box' }, rankCanvas));
const errorBox = errorLine(panel, 'error');

fill(
  app,
  h('h1', {}, 'Run dashboard'),
  h('p', { class: 'subtitle', id: 'subtitle' }),
  errorBox,
  toolbar,
  h('div', { class: 'table-scroll card' }, progressTable),
  empty,
  h(
    'div',
    { class: 'grid', id: 'charts' },
    h('section', { class: 'card wide' }, h('h2', {}, 'Loss'), h('div', { class: 'chart-box tall' }, lossCanvas)),
    h('section', { class: 'card' }, h('h2', {}, 'Learning rate'), h('div', { class: 'chart-box' }, lrCanvas)),
    h('section', { class: 'card' }, h('h2', {}, 'Tokens/s'), h('div', { class: 'chart-box' }, tpsCanvas)),
    h('section', { class: 'card' }, h('h2', {}, 'Gradient norm'), h('div', { class: 'chart-box' }, gradCanvas)),
    rankSection,
  ),
);

// ---- charts -----------------------------------------------------------------------------------------

type LineDs = ChartDataset<'line', Point[]>;
const xTitle = () => (panel.ui.xAxis === 'step' ? 'step' : 'time (s)');
const lineOptions = (theme: Theme, yLog: boolean, yTitle: string) => ({
  responsive: true,
  maintainAspectRatio: false,
  animation: false as const,
  parsing: false as const,
  normalized: true,
  interaction: { mode: 'nearest' as const, axis: 'x' as const, intersect: false },
  scales: {
    x: { type: 'linear' as const, ...themedScale(theme, xTitle()) },
    y: { type: yLog ? ('logarithmic' as const) : ('linear' as const), ...themedScale(theme, yTitle) },
  },
  plugins: {
    ...themedPlugins(theme),
    legend: {
      labels: {
        color: theme.fg,
        boxWidth: 14,
        boxHeight: 2,
        // The faint raw curve under a smoothed one needs no legend entry.
        filter: (item: { text: string }) => !item.text.endsWith(' (raw)'),
      },
    },
    tooltip: {
      ...themedPlugins(theme).tooltip,
      callbacks: { label: (c: { dataset: { label?: string }; parsed: { y: number | null } }) => `${c.dataset.label ?? ''}: ${formatValue(c.parsed.y)}` },
    },
  },
});

const lossChart = makeChart<'line', Point[]>(lossCanvas, { type: 'line', data: { datasets: [] }, options: lineOptions(panel.theme, panel.ui.logScale, 'loss') });
const lrChart = makeChart<'line', Point[]>(lrCanvas, { type: 'line', data: { datasets: [] }, options: lineOptions(panel.theme, false, 'learning rate') });
const tpsChart = makeChart<'line', Point[]>(tpsCanvas, { type: 'line', data: { datasets: [] }, options: lineOptions(panel.theme, false, 'tokens/s') });
const gradChart = makeChart<'line', Point[]>(gradCanvas, { type: 'line', data: { datasets: [] }, options: lineOptions(panel.theme, false, 'gradient norm') });
const rankChart = makeChart<'line', Point[]>(rankCanvas, { type: 'line', data: { datasets: [] }, options: lineOptions(panel.theme, false, 'ranks kept') });
const charts = [lossChart, lrChart, tpsChart, gradChart, rankChart];

function line(label: string, data: Point[], color: string, theme: Theme, extra: Partial<LineDs> = {}): LineDs {
  return {
    label,
    data,
    borderColor: color,
    backgroundColor: color,
    borderWidth: theme.lineWidth,
    pointRadius: data.length < 40 ? 2 : 0,
    pointHoverRadius: 4,
    tension: 0,
    // A null y (a diverged or missing value) breaks the line where it is.
    spanGaps: false,
    ...extra,
  };
}

function buildDatasets(theme: Theme): void {
  const { smoothing: w, logScale, xAxis } = panel.ui;
  const loss: LineDs[] = [];
  const lr: LineDs[] = [];
  const tps: LineDs[] = [];
  const grad: LineDs[] = [];
  const ranks: LineDs[] = [];
  const multi = order.length > 1;
  for (const id of order) {
    const run = runs.get(id)!;
    const color = runColor(id, theme);
    const name = (s: string) => (multi ? `${run.label} · ${s}` : s);
    const train = fieldPoints(run.records, 'loss', xAxis);
    const evals = fieldPoints(run.records, 'eval_loss', xAxis);
    if (w > 0) loss.push(line(name('train (raw)'), forScale(train, logScale), withAlpha(color, 0.28), theme, { borderWidth: 1, pointRadius: 0 }));
    loss.push(line(name('train'), forScale(w > 0 ? smoothPoints(train, w) : train, logScale), color, theme, { pointRadius: 0 }));
    if (evals.length) {
      loss.push(line(name('eval'), forScale(evals, logScale), color, theme, { borderDash: [6, 4], pointRadius: 3, pointStyle: 'rectRot' }));
    }
    lr.push(line(name('lr'), fieldPoints(run.records, 'lr', xAxis), color, theme, { pointRadius: 0 }));
    tps.push(line(name('tokens/s'), smoothPoints(fieldPoints(run.records, 'tokens_per_s', xAxis), Math.min(w, 0.9)), color, theme, { pointRadius: 0 }));
    grad.push(line(name('grad norm'), fieldPoints(run.records, 'grad_norm', xAxis), color, theme, { pointRadius: 0 }));
    const budget = fieldPoints(run.records, 'adalora_budget', xAxis);
    if (budget.length) ranks.push(line(name('ranks kept'), budget, color, theme, { stepped: true }));
  }
  lossChart.data.datasets = loss;
  lrChart.data.datasets = lr;
  tpsChart.data.datasets = tps;
  gradChart.data.datasets = grad;
  rankChart.data.datasets = ranks;
  rankSection.hidden = ranks.length === 0;
}

function rebuildScales(): void {
  const theme = panel.theme;
  lossChart.options = lineOptions(theme, panel.ui.logScale, 'loss');
  lrChart.options = lineOptions(theme, false, 'learning rate');
  tpsChart.options = lineOptions(theme, false, 'tokens/s');
  gradChart.options = lineOptions(theme, false, 'gradient norm');
  rankChart.options = lineOptions(theme, false, 'ranks kept');
  scheduleRender();
}

// ---- progress table ---------------------------------------------------------------------------------

function renderProgress(): void {
  const rows = order.map((id) => {
    const run = runs.get(id)!;
    const p = progressOf(run.records, run.status);
    const state = run.status?.state ?? (run.records.length ? 'running' : 'waiting');
    const prog = h('progress', { max: 1, 'aria-label': `${run.label} progress` });
    prog.value = p.fraction;
    const remove =
      order.length > 1
        ? h('td', {}, button('✕', () => panel.post('dashboard/removeRun', { runId: id }), { class: 'icon', title: `Remove ${run.label}`, 'aria-label': `Remove ${run.label}` }))
        : h('td', {});
    return h(
      'tr',
      { 'data-run': id },
      h(
        'th',
        { scope: 'row', class: 'text' },
        h('span', { class: `swatch c${(colorIndex.get(id) ?? 0) % 6}`, 'aria-hidden': 'true' }),
        button(run.label, () => panel.post('panel/open', { path: id }), { class: 'link', title: id }),
      ),
      h('td', { class: `text state-${state}` }, state + (run.status?.error ? `: ${run.status.error}` : '')),
      h('td', { class: 'text' }, prog, ` ${Math.round(p.fraction * 100)}%`),
      h('td', {}, p.total ? `${p.step} / ${p.total}` : String(p.step)),
      h('td', {}, p.etaS !== undefined ? formatDuration(p.etaS) : state === 'done' ? 'done' : '–'),
      h('td', {}, p.elapsedS !== undefined ? formatDuration(p.elapsedS) : '–'),
      h('td', {}, formatValue(p.loss)),
      h('td', {}, formatValue(p.evalLoss)),
      // Hovering the speed names the backend it was measured on (runs on a GPU and a CPU side by side).
      h('td', run.status?.backend ? { title: `on ${run.status.backend}` } : {}, p.tokensPerS !== undefined ? String(Math.round(p.tokensPerS)) : '–'),
      remove,
    );
  });
  fill(progressBody, ...rows);
}

// ---- rendering --------------------------------------------------------------------------------------

let frame = 0;
function scheduleRender(): void {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    render();
  });
}

function render(): void {
  const theme = panel.theme;
  buildDatasets(theme);
  for (const c of charts) c.update('none');
  markDrawn(lossChart, (label) => label === 'train' || label.endsWith(' · train'));
  lossCanvas.dataset.evalPoints = String(order.reduce((n, id) => n + drawnCount(fieldPoints(runs.get(id)!.records, 'eval_loss', 'step')), 0));
  lossCanvas.dataset.records = String(order.reduce((n, id) => n + runs.get(id)!.records.length, 0));
  markDrawn(lrChart);
  markDrawn(tpsChart);
  markDrawn(gradChart);
  markDrawn(rankChart);
  renderProgress();
  const anyRecords = order.some((id) => runs.get(id)!.records.length > 0);
  empty.hidden = anyRecords || order.length === 0;
  const last = order.map((id) => {
    const r = runs.get(id)!;
    const p = progressOf(r.records, r.status);
    return `${r.label}: step ${p.step}${p.total ? ` of ${p.total}` : ''}, loss ${formatValue(p.loss)}`;
  });
  lossCanvas.setAttribute('aria-label', `Training and evaluation loss. ${last.join('; ')}`);
  document.getElementById('subtitle')!.textContent = order.length === 1 ? order[0]! : `${order.length} runs`;
  document.body.dataset.ready = 'true';
}

// ---- messages ---------------------------------------------------------------------------------------

panel.on('dashboard/runs', ({ runs: list }) => {
  runs.clear();
  order.length = 0;
  for (const r of list) {
    runs.set(r.id, { ...r, records: [...r.records] });
    order.push(r.id);
    if (!colorIndex.has(r.id)) colorIndex.set(r.id, colorIndex.size);
  }
  errorBox.clear();
  panel.setSources(order);
  scheduleRender();
});
panel.on('dashboard/append', ({ runId, records }) => {
  const run = runs.get(runId);
  if (!run) return panel.log('warn', `records for unknown run ${runId}`);
  (run.records as DashboardRecord[]).push(...records);
  scheduleRender();
});
panel.on('dashboard/status', ({ runId, status }) => {
  const run = runs.get(runId);
  if (!run) return;
  run.status = status;
  scheduleRender();
});
followTheme(panel, charts, rebuildScales);
panel.ready();
