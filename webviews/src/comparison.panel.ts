/**
 * Adapter comparison: a sortable table of the variants of `peft-lab compare` (trainable
 * parameters, final loss and metric, forgetting, tokens/s, peak memory, step time) with the best
 * value of each column marked, and their loss curves overlaid.
 */
import './lib/panel.css';
import { Legend, LinearScale, LineController, LineElement, LogarithmicScale, PointElement, Tooltip, type ChartDataset } from 'chart.js';
import type { ComparisonRowView, ComparisonView } from '../../src/protocol/webview';
import { bootstrap, errorLine } from './lib/bootstrap';
import { Chart, followTheme, markDrawn, setChartDefaults, themedPlugins, themedScale } from './lib/charts';
import { button, fill, h, labelled } from './lib/dom';
import { settingControls } from './lib/settings';
import { withAlpha } from './shared/color';
import { formatCount, formatValue } from './shared/format';
import { formatMetricValue } from '../../src/protocol';
import { forScale, smoothPoints, type Point } from './shared/series';
import { bestIndex, nextSort, sortRows, type Cell, type SortDir } from './shared/table';

Chart.register(LineController, LineElement, PointElement, LinearScale, LogarithmicScale, Legend, Tooltip);

type Key = 'name' | 'kind' | 'trainableParams' | 'finalLoss' | 'finalEvalLoss' | 'finalMetric' | 'forgetting' | 'tokensPerS' | 'peakRssMb' | 'medianStepMs' | 'state';
interface Column {
  key: Key;
  label: string;
  better?: 'lower' | 'higher';
  format: (r: ComparisonRowView) => string;
  value: (r: ComparisonRowView) => Cell;
}
const COLUMNS: Column[] = [
  { key: 'name', label: 'Variant', format: (r) => r.name, value: (r) => r.name },
  { key: 'kind', label: 'Adapter', format: (r) => r.kind, value: (r) => r.kind },
  { key: 'trainableParams', label: 'Trainable', better: 'lower', format: (r) => formatCount(r.trainableParams), value: (r) => r.trainableParams },
  { key: 'finalLoss', label: 'Final loss', better: 'lower', format: (r) => formatValue(r.finalLoss), value: (r) => r.finalLoss },
  { key: 'finalEvalLoss', label: 'Eval loss', better: 'lower', format: (r) => formatValue(r.finalEvalLoss), value: (r) => r.finalEvalLoss },
  {
    key: 'finalMetric',
    label: 'Metric',
    better: 'higher',
    format: (r) => (r.finalMetric === undefined ? '–' : `${formatMetricValue(r.metricName, r.finalMetric)}${r.metricName ? ` ${r.metricName}` : ''}`),
    value: (r) => r.finalMetric,
  },
  { key: 'forgetting', label: 'Forgetting Δ', better: 'lower', format: (r) => (r.forgetting === undefined ? '–' : `${r.forgetting >= 0 ? '+' : ''}${formatValue(r.forgetting)}`), value: (r) => r.forgetting },
  { key: 'tokensPerS', label: 'Tokens/s', better: 'higher', format: (r) => (r.tokensPerS === undefined ? '–' : String(Math.round(r.tokensPerS))), value: (r) => r.tokensPerS },
  { key: 'peakRssMb', label: 'Peak RSS (MB)', better: 'lower', format: (r) => (r.peakRssMb === undefined ? '–' : String(Math.round(r.peakRssMb))), value: (r) => r.peakRssMb },
  { key: 'medianStepMs', label: 'Step (ms)', better: 'lower', format: (r) => formatValue(r.medianStepMs, 3), value: (r) => r.medianStepMs },
  { key: 'state', label: 'State', format: (r) => r.state + (r.error ? `: ${r.error}` : ''), value: (r) => r.state },
];

interface UI {
  sortKey: string;
  sortDir: SortDir;
  smoothing: number;
  logScale: boolean;
}
const panel = bootstrap<UI>('comparison', { sortKey: 'finalEvalLoss', sortDir: 'asc', smoothing: 0.3, logScale: false });
setChartDefaults(panel.theme);

let view: ComparisonView | undefined;
const app = document.getElementById('app')!;
const subtitle = h('p', { class: 'subtitle' });
const errorBox = errorLine(panel);
const tableBox = h('div', { class: 'table-scroll card' });
const smoothing = h('input', { type: 'range', min: 0, max: 0.99, step: 0.01, id: 'smoothing', 'aria-label': 'Smoothing (EMA weight)' });
smoothing.value = String(panel.ui.smoothing);
const smoothingOut = h('output', { for: 'smoothing' }, panel.ui.smoothing.toFixed(2));
smoothing.addEventListener('input', () => {
  panel.setUI({ smoothing: Number(smoothing.value) });
  smoothingOut.textContent = Number(smoothing.value).toFixed(2);
  renderChart();
});
const canvas = h('canvas', { id: 'comparison-chart', role: 'img', 'aria-label': 'Loss curves of the variants' });
fill(
  app,
  h('h1', {}, 'Adapter comparison'),
  subtitle,
  errorBox,
  tableBox,
  h(
    'div',
    { class: 'toolbar', role: 'toolbar' },
    labelled('Smoothing', h('span', { class: 'control' }, smoothing, smoothingOut)),
    settingControls(panel, () => renderChart()).checkbox('Log scale', panel.ui.logScale, (v) => ({ logScale: v }), 'log-scale'),
  ),
  h('section', { class: 'card' }, h('h2', {}, 'Loss'), h('div', { class: 'chart-box tall' }, canvas)),
);

const chart = new Chart<'line', Point[]>(canvas, { type: 'line', data: { datasets: [] }, options: { responsive: true, maintainAspectRatio: false, animation: false, parsing: false } });

function renderTable(): void {
  if (!view) return;
  const col = COLUMNS.find((c) => c.key === panel.ui.sortKey) ?? COLUMNS[0]!;
  const rows = sortRows(view.rows, col.value, panel.ui.sortDir);
  const best = new Map(COLUMNS.filter((c) => c.better).map((c) => [c.key, bestIndex(rows, (r) => c.value(r) as number | undefined, c.better!)]));
  const colorOf = new Map(view.rows.map((r, i) => [r.name, i % 6]));
  fill(
    tableBox,
    h(
      'table',
      { class: 'data', id: 'comparison-table', 'aria-label': 'Variants' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...COLUMNS.map((c) =>
            h(
              'th',
              { scope: 'col', class: c.key === 'name' || c.key === 'kind' || c.key === 'state' ? 'text' : undefined, 'aria-sort': c.key === col.key ? (panel.ui.sortDir === 'asc' ? 'ascending' : 'descending') : 'none' },
              button(`${c.label}${c.key === col.key ? (panel.ui.sortDir === 'asc' ? ' ▲' : ' ▼') : ''}`, () => {
                const s = nextSort({ key: col.key, dir: panel.ui.sortDir }, c.key, c.better === 'higher' ? 'desc' : 'asc');
                panel.setUI({ sortKey: s.key, sortDir: s.dir });
                renderTable();
              }, { class: 'sort', 'data-key': c.key }),
            ),
          ),
        ),
      ),
      h(
        'tbody',
        {},
        ...rows.map((r, i) =>
          h(
            'tr',
            { 'data-variant': r.name },
            ...COLUMNS.map((c) => {
              if (c.key === 'name')
                return h(
                  'th',
                  { scope: 'row', class: 'text' },
                  h('span', { class: `swatch c${colorOf.get(r.name) ?? 0}`, 'aria-hidden': 'true' }),
                  r.runDir ? button(r.name, () => panel.post('panel/open', { path: r.runDir }), { class: 'link', title: r.runDir }) : r.name,
                );
              const isBest = best.get(c.key) === i && rows.length > 1;
              return h('td', { class: [c.key === 'kind' || c.key === 'state' ? 'text' : '', isBest ? 'best' : ''].join(' ').trim() || undefined, title: isBest ? 'best' : undefined }, c.format(r));
            }),
          ),
        ),
      ),
    ),
  );
}

function renderChart(): void {
  if (!view) return;
  const t = panel.theme;
  const w = panel.ui.smoothing;
  const log = panel.ui.logScale;
  const datasets: ChartDataset<'line', Point[]>[] = [];
  view.rows.forEach((r, i) => {
    const color = t.series[i % t.series.length]!;
    // null (a diverged step) stays as a gap in the line.
    const train: Point[] = r.curve.map((p) => ({ x: p.step, y: p.loss }));
    const evals: Point[] = r.curve.flatMap((p) => (p.eval_loss === undefined ? [] : [{ x: p.step, y: p.eval_loss }]));
    if (w > 0) datasets.push({ label: `${r.name} (raw)`, data: forScale(train, log), borderColor: withAlpha(color, 0.25), backgroundColor: withAlpha(color, 0.25), borderWidth: 1, pointRadius: 0 });
    datasets.push({ label: r.name, data: forScale(w > 0 ? smoothPoints(train, w) : train, log), borderColor: color, backgroundColor: color, borderWidth: t.lineWidth, pointRadius: 0 });
    if (evals.some((p) => p.y !== null)) datasets.push({ label: `${r.name} eval`, data: forScale(evals, log), borderColor: color, backgroundColor: color, borderDash: [6, 4], borderWidth: t.lineWidth, pointRadius: 3, pointStyle: 'rectRot' });
  });
  chart.data.datasets = datasets;
  chart.options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    parsing: false,
    interaction: { mode: 'nearest', axis: 'x', intersect: false },
    scales: { x: { type: 'linear', ...themedScale(t, 'step') }, y: { type: log ? 'logarithmic' : 'linear', ...themedScale(t, 'loss') } },
    plugins: { ...themedPlugins(t), legend: { labels: { color: t.fg, boxWidth: 14, boxHeight: 2, filter: (item) => !item.text.endsWith(' (raw)') } } },
  };
  chart.update('none');
  markDrawn(chart, (l) => !l.endsWith(' (raw)') && !l.endsWith(' eval'));
}

panel.on('comparison/data', (v) => {
  view = v;
  errorBox.clear();
  panel.setSources([v.source]);
  subtitle.textContent = [v.name, v.model ? `model ${v.model}` : '', v.backend ? `backend ${v.backend}` : '', v.createdAt ? new Date(v.createdAt).toLocaleString() : '', v.source].filter(Boolean).join(' · ');
  renderTable();
  renderChart();
  document.body.dataset.ready = 'true';
});
followTheme(panel, [chart], renderChart);
panel.ready();
