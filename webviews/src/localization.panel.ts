/**
 * Skill localization (model grafting): how much of each task's fine-tuning gain a sparse graft
 * recovers as its sparsity grows, the per-layer density of the graft mask at one sparsity, and the
 * overlap (Jaccard) of the tasks' masks.
 */
import './lib/panel.css';
import { BarController, BarElement, CategoryScale, Legend, LinearScale, LineController, LineElement, LogarithmicScale, PointElement, Tooltip } from 'chart.js';
import type { LocalizationView } from '../../src/protocol/webview';
import { bootstrap, errorLine } from './lib/bootstrap';
import { applyTheme, Chart, markDrawn, setChartDefaults, themedPlugins, themedScale } from './lib/charts';
import { fill, h } from './lib/dom';
import { Heatmap } from './lib/heatmap';
import { settingControls } from './lib/settings';
import { formatPercent, formatValue, isNiceLogTick } from './shared/format';
import type { Point } from './shared/series';

Chart.register(LineController, LineElement, PointElement, BarController, BarElement, CategoryScale, LinearScale, LogarithmicScale, Legend, Tooltip);

interface UI {
  recovered: 'metric' | 'loss';
  /** Sparsity level for density and overlap (index into the sorted union of levels; -1: the largest). */
  level: number;
}
const panel = bootstrap<UI>('localization', { recovered: 'metric', level: -1 });
setChartDefaults(panel.theme);

let view: LocalizationView | undefined;
const app = document.getElementById('app')!;
const subtitle = h('p', { class: 'subtitle' });
const errorBox = errorLine(panel);
const toolbar = h('div', { class: 'toolbar', role: 'toolbar' });
const curveCanvas = h('canvas', { id: 'recovered-chart', role: 'img', 'aria-label': 'Recovered gain against sparsity' });
const densityCanvas = h('canvas', { id: 'density-chart', role: 'img', 'aria-label': 'Mask density per layer' });
const overlapBox = h('div', { class: 'heatmap-box', id: 'overlap' });
const overlapNote = h('p', { class: 'muted' });
const tableBox = h('div', { class: 'table-scroll' });
fill(
  app,
  h('h1', {}, 'Skill localization'),
  subtitle,
  errorBox,
  toolbar,
  h(
    'div',
    { class: 'grid' },
    h('section', { class: 'card wide' }, h('h2', {}, 'Sparsity vs recovered gain'), h('div', { class: 'chart-box' }, curveCanvas)),
    h('section', { class: 'card' }, h('h2', {}, 'Mask density per layer'), h('div', { class: 'chart-box' }, densityCanvas)),
    h('section', { class: 'card' }, h('h2', {}, 'Task overlap (Jaccard)'), overlapNote, overlapBox),
  ),
  h('details', { class: 'card' }, h('summary', {}, 'Table'), tableBox),
);

const curveChart = new Chart<'line', Point[]>(curveCanvas, { type: 'line', data: { datasets: [] }, options: { responsive: true, maintainAspectRatio: false, animation: false, parsing: false } });
const densityChart = new Chart(densityCanvas, { type: 'bar', data: { labels: [] as string[], datasets: [] }, options: { responsive: true, maintainAspectRatio: false, animation: false } });
const overlap = new Heatmap(overlapBox, panel.theme, { label: 'Mask overlap between tasks (Jaccard index)', rowHeight: 30 });
overlap.canvas.id = 'overlap-canvas';

/** Every sparsity level any task has, ascending. */
function levels(): number[] {
  return [...new Set(view?.tasks.flatMap((t) => t.levels.map((l) => l.sparsity)) ?? [])].sort((a, b) => a - b);
}
function currentLevel(): number | undefined {
  const ls = levels();
  if (!ls.length) return undefined;
  return ls[panel.ui.level < 0 || panel.ui.level >= ls.length ? ls.length - 1 : panel.ui.level];
}

const controls = settingControls(panel, () => render());

function renderToolbar(): void {
  const ls = levels();
  const cur = currentLevel();
  fill(
    toolbar,
    controls.select<'metric' | 'loss'>(
      'Recovered by',
      [
        { value: 'metric', label: 'task metric' },
        { value: 'loss', label: 'loss' },
      ],
      panel.ui.recovered,
      (v) => ({ recovered: v }),
      'recovered-by',
    ),
    controls.select(
      'Sparsity for density and overlap',
      ls.map((s, i) => ({ value: String(i), label: formatPercent(s, s < 0.001 ? 3 : 2) })),
      String(cur === undefined ? 0 : ls.indexOf(cur)),
      (v) => ({ level: Number(v) }),
      'level',
    ),
  );
}

function render(): void {
  if (!view) return;
  const t = panel.theme;
  const by = panel.ui.recovered;
  curveChart.data.datasets = view.tasks.map((task, i) => {
    const color = t.series[i % t.series.length]!;
    const data = task.levels
      .map((l) => ({ x: l.sparsity, y: (by === 'metric' ? l.recoveredMetric : l.recoveredLoss) ?? NaN }))
      .filter((p) => p.x > 0 && Number.isFinite(p.y));
    return { label: task.name, data, borderColor: color, backgroundColor: color, borderWidth: t.lineWidth, pointRadius: 4 };
  });
  curveChart.options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    parsing: false,
    scales: {
      x: {
        type: 'logarithmic',
        ...themedScale(t, 'sparsity ρ (share of candidate parameters)'),
        ticks: { color: t.fg, autoSkip: false, maxRotation: 0, callback: (v) => (isNiceLogTick(Number(v)) ? formatPercent(Number(v), Number(v) < 0.001 ? 2 : 1) : '') },
      },
      y: {
        type: 'linear',
        suggestedMin: 0,
        suggestedMax: 1,
        ...themedScale(t, `recovered gain (${by})`),
        ticks: { color: t.fg, callback: (v) => formatPercent(Number(v), 0) },
      },
    },
    plugins: {
      ...themedPlugins(t),
      tooltip: { ...themedPlugins(t).tooltip, callbacks: { label: (c) => `${c.dataset.label}: ${formatPercent(c.parsed.y ?? NaN)} at ρ=${formatValue(c.parsed.x)}` } },
    },
  };
  curveChart.update('none');
  markDrawn(curveChart);

  const level = currentLevel();
  const layerSet = [...new Set(view.tasks.flatMap((task) => task.levels.find((l) => l.sparsity === level)?.density.map((d) => d.layer) ?? []))].sort((a, b) => a - b);
  densityChart.data.labels = layerSet.map((l) => (l < 0 ? 'emb/head' : `layer ${l}`));
  densityChart.data.datasets = view.tasks.map((task, i) => {
    const color = t.series[i % t.series.length]!;
    const lv = task.levels.find((l) => l.sparsity === level);
    return { label: task.name, data: layerSet.map((layer) => lv?.density.find((d) => d.layer === layer)?.density ?? 0), backgroundColor: color, borderColor: color };
  });
  densityChart.options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    scales: { x: themedScale(t), y: { beginAtZero: true, ...themedScale(t, 'mask density'), ticks: { color: t.fg, callback: (v) => formatPercent(Number(v), Number(v) < 0.01 ? 2 : 1) } } },
    plugins: { ...themedPlugins(t, 'box'), tooltip: { ...themedPlugins(t).tooltip, callbacks: { label: (c) => `${c.dataset.label}: ${formatPercent(c.parsed.y ?? NaN, 3)}` } } },
  };
  densityChart.update('none');
  markDrawn(densityChart);

  const m = view.overlap.find((o) => o.sparsity === level) ?? view.overlap.find((o) => o.sparsity === null) ?? view.overlap[0];
  if (m) {
    overlapNote.textContent = m.sparsity === level || m.sparsity === null ? '' : `(overlap reported at ρ=${formatValue(m.sparsity)})`;
    overlapBox.hidden = false;
    overlap.setData({
      rows: m.tasks,
      cols: m.tasks,
      norm: m.matrix,
      text: (i, j) => formatValue(m.matrix[i]?.[j] ?? null, 2),
      tooltip: (i, j) => [`${m.tasks[i]} ∩ ${m.tasks[j]}`, `Jaccard ${formatValue(m.matrix[i]?.[j] ?? null, 3)}`],
    });
  } else {
    overlapNote.textContent = view.tasks.length < 2 ? 'Overlap needs two or more tasks.' : 'The report has no overlap.';
    overlapBox.hidden = true;
  }

  fill(
    tableBox,
    h(
      'table',
      { class: 'data', 'aria-label': 'Graft levels per task' },
      h('thead', {}, h('tr', {}, ...['Task', 'Sparsity ρ', 'Of the model', 'Grafted', 'Recovered (metric)', 'Recovered (loss)'].map((x) => h('th', { scope: 'col' }, x)))),
      h(
        'tbody',
        {},
        ...view.tasks.flatMap((task) =>
          task.levels.map((l) =>
            h(
              'tr',
              {},
              h('th', { scope: 'row', class: 'text' }, task.name),
              h('td', {}, formatValue(l.sparsity)),
              h('td', {}, formatPercent(l.fraction, 3)),
              h('td', {}, String(l.grafted)),
              h('td', {}, l.recoveredMetric === null ? '–' : formatPercent(l.recoveredMetric)),
              h('td', {}, l.recoveredLoss === null ? '–' : formatPercent(l.recoveredLoss)),
            ),
          ),
        ),
      ),
    ),
  );
  document.body.dataset.ready = 'true';
}

panel.on('localization/data', (v) => {
  view = v;
  // Without a task metric (or no gain in it) only the loss can say what a graft recovers.
  if (panel.ui.recovered === 'metric' && !v.tasks.some((t) => t.levels.some((l) => l.recoveredMetric !== null))) panel.setUI({ recovered: 'loss' });
  errorBox.clear();
  panel.setSources([v.source]);
  subtitle.textContent = [v.base ? `base ${v.base}` : '', `${v.tasks.length} task${v.tasks.length === 1 ? '' : 's'}`, v.source].filter(Boolean).join(' · ');
  renderToolbar();
  render();
});
panel.onTheme((t) => {
  applyTheme(curveChart, t);
  applyTheme(densityChart, t);
  overlap.setTheme(t);
  render();
});
panel.ready();
