/**
 * Evaluation on a data file: each run beside its base model (loss, task metric, calibration error),
 * the better value of each pair marked, and grouped bars of the loss (or the metric) per run.
 */
import './lib/panel.css';
import { BarController, BarElement, CategoryScale, Legend, LinearScale, Tooltip } from 'chart.js';
import type { EvaluationRunView, EvaluationScoreView, EvaluationView } from '../../src/protocol/webview';
import { bootstrap, errorLine } from './lib/bootstrap';
import { Chart, followTheme, markDrawn, setChartDefaults, themedPlugins, themedScale } from './lib/charts';
import { button, fill, h } from './lib/dom';
import { settingControls } from './lib/settings';
import { withAlpha } from './shared/color';
import { formatValue } from './shared/format';
import { formatMetricValue } from '../../src/protocol';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

type Measure = 'loss' | 'metric' | 'ece';
interface UI {
  measure: Measure;
}
const panel = bootstrap<UI>('evaluation', { measure: 'loss' });
setChartDefaults(panel.theme);

let view: EvaluationView | undefined;
const app = document.getElementById('app')!;
const subtitle = h('p', { class: 'subtitle' });
const errorBox = errorLine(panel);
const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Chart options' });
const tableBox = h('div', { class: 'table-scroll card' });
const canvas = h('canvas', { id: 'evaluation-chart', role: 'img', 'aria-label': 'Each run beside its base' });
fill(app, h('h1', {}, 'Evaluation'), subtitle, errorBox, tableBox, toolbar, h('section', { class: 'card' }, h('div', { class: 'chart-box' }, canvas)));

const chart = new Chart<'bar', (number | null)[], string>(canvas, { type: 'bar', data: { labels: [], datasets: [] }, options: { responsive: true, maintainAspectRatio: false, animation: false } });

const MEASURES: { value: Measure; label: string; better: 'lower' | 'higher' }[] = [
  { value: 'loss', label: 'loss', better: 'lower' },
  { value: 'metric', label: 'task metric', better: 'higher' },
  { value: 'ece', label: 'calibration error (ECE)', better: 'lower' },
];
const valueOf = (s: EvaluationScoreView, m: Measure): number | undefined => {
  const v = m === 'metric' ? s.metric : s[m];
  return v !== undefined && v !== null && Number.isFinite(v) ? v : undefined;
};
const show = (v: number | undefined, m: Measure, metricName?: string) => (v === undefined ? '–' : m === 'metric' ? formatMetricValue(metricName, v) : formatValue(v));

/** The fine-tune's value against its base's, marked when better. */
function pair(r: EvaluationRunView, m: Measure): HTMLElement[] {
  const ft = valueOf(r.finetuned, m);
  const base = valueOf(r.base, m);
  const better = MEASURES.find((x) => x.value === m)!.better;
  const wins = ft !== undefined && base !== undefined && (better === 'lower' ? ft < base : ft > base);
  return [h('td', { class: wins ? 'best' : undefined, title: wins ? 'better than the base' : undefined }, show(ft, m, r.metricName)), h('td', {}, show(base, m, r.metricName))];
}

function renderTable(): void {
  if (!view) return;
  const metricName = view.runs.find((r) => r.metricName)?.metricName;
  const head = ['Loss', 'base', metricName ?? 'Metric', 'base', 'ECE', 'base'];
  fill(
    tableBox,
    h(
      'table',
      { class: 'data', id: 'evaluation-table', 'aria-label': 'Runs and their base on this data' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col', class: 'text' }, 'Run'), ...head.map((x) => h('th', { scope: 'col' }, x)))),
      h(
        'tbody',
        {},
        ...view.runs.map((r) =>
          h(
            'tr',
            { 'data-run': r.name },
            h('th', { scope: 'row', class: 'text' }, r.source ? button(r.name, () => panel.post('panel/open', { path: r.source }), { class: 'link', title: r.source }) : r.name),
            ...pair(r, 'loss'),
            ...pair(r, 'metric'),
            ...pair(r, 'ece'),
          ),
        ),
      ),
    ),
  );
}

function renderChart(): void {
  if (!view) return;
  const t = panel.theme;
  const m = panel.ui.measure;
  const color = t.series[0]!;
  chart.data.labels = view.runs.map((r) => r.name);
  chart.data.datasets = [
    { label: 'fine-tuned', data: view.runs.map((r) => valueOf(r.finetuned, m) ?? null), backgroundColor: color, borderColor: color, borderWidth: 1, maxBarThickness: 56 },
    { label: 'base', data: view.runs.map((r) => valueOf(r.base, m) ?? null), backgroundColor: withAlpha(t.fg, 0.35), borderColor: withAlpha(t.fg, 0.6), borderWidth: 1, maxBarThickness: 56 },
  ];
  chart.options.scales = { x: themedScale(t), y: { beginAtZero: true, ...(m === 'loss' ? {} : { max: 1 }), ...themedScale(t, MEASURES.find((x) => x.value === m)!.label) } };
  chart.options.plugins = {
    ...themedPlugins(t, 'box'),
    tooltip: { ...themedPlugins(t).tooltip, callbacks: { label: (ctx) => `${ctx.dataset.label}: ${show(ctx.parsed.y ?? undefined, m, view!.runs[ctx.dataIndex]?.metricName)}` } },
  };
  chart.update('none');
  markDrawn(chart);
}

const settings = settingControls(panel, () => renderChart());
function renderToolbar(): void {
  if (!view) return;
  const hasMetric = view.runs.some((r) => r.finetuned.metric !== undefined);
  // A regression predicts no probability: no calibration error to chart.
  const hasEce = view.runs.some((r) => valueOf(r.finetuned, 'ece') !== undefined);
  const measures = MEASURES.filter((x) => (x.value !== 'metric' || hasMetric) && (x.value !== 'ece' || hasEce));
  if (!measures.some((x) => x.value === panel.ui.measure)) panel.setUI({ measure: 'loss' });
  fill(toolbar, settings.select('Chart', measures, panel.ui.measure, (v) => ({ measure: v }), 'measure'));
}

panel.on('evaluation/data', (v) => {
  view = v;
  errorBox.clear();
  panel.setSources([v.source]);
  subtitle.textContent = [`${v.rows} rows of ${v.data}`, `${v.runs.length} run${v.runs.length === 1 ? '' : 's'}`, v.source].join(' · ');
  renderToolbar();
  renderTable();
  renderChart();
  document.body.dataset.ready = 'true';
});
followTheme(panel, [chart], renderChart);
panel.ready();
