/**
 * Parameter budget: for one allocation (selector over the report's budgets and methods), per-layer
 * stacked bars of LoRA parameters, sparse entries and frozen parameters, the totals, and a
 * "Train with this allocation" button that has the host write a spec using it.
 */
import './lib/panel.css';
import { BarController, BarElement, CategoryScale, Legend, LinearScale, Tooltip } from 'chart.js';
import type { BudgetView } from '../../src/protocol/webview';
import { bootstrap, errorLine } from './lib/bootstrap';
import { Chart, followTheme, markDrawn, setChartDefaults, themedPlugins, themedScale } from './lib/charts';
import { button, fill, h } from './lib/dom';
import { settingControls } from './lib/settings';
import type { Theme } from './lib/theme';
import { budgetBars, budgetTotals, type BudgetScale } from './shared/budget';
import { formatCount, formatPercent } from './shared/format';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

interface UI {
  key: string;
  scale: BudgetScale;
  frozen: boolean;
}
const panel = bootstrap<UI>('budget', { key: '', scale: 'absolute', frozen: false });
setChartDefaults(panel.theme);

let view: BudgetView | undefined;
const app = document.getElementById('app')!;
const subtitle = h('p', { class: 'subtitle' });
const errorBox = errorLine(panel);
const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Budget options' });
const totals = h('div', { class: 'totals', id: 'totals', 'aria-live': 'polite' });
const canvas = h('canvas', { id: 'budget-chart', role: 'img', 'aria-label': 'Parameters per layer' });
const result = h('p', { class: 'notice', id: 'train-result', role: 'status', hidden: true });
const trainButton = button('Train with this allocation', () => {
  if (!view) return;
  trainButton.disabled = true;
  result.hidden = true;
  panel.post('budget/train', { key: panel.ui.key });
}, { id: 'train' });
const tableBox = h('div', { class: 'table-scroll' });
fill(
  app,
  h('h1', {}, 'Parameter budget'),
  subtitle,
  errorBox,
  toolbar,
  totals,
  h('div', { class: 'toolbar' }, trainButton, result),
  h('section', { class: 'card' }, h('h2', {}, 'Per layer'), h('div', { class: 'chart-box tall' }, canvas)),
  h('details', { class: 'card' }, h('summary', {}, 'Table'), tableBox),
);

const colors = (t: Theme) => ({ lora: t.series[0]!, sparse: t.series[1]!, frozen: t.muted });
const chart = new Chart(canvas, {
  type: 'bar',
  data: { labels: [] as string[], datasets: [] },
  options: {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    scales: { x: { stacked: true, ...themedScale(panel.theme) }, y: { stacked: true, beginAtZero: true, ...themedScale(panel.theme, 'parameters') } },
    plugins: themedPlugins(panel.theme, 'box'),
  },
});

function option() {
  return view?.options.find((o) => o.key === panel.ui.key) ?? view?.options[0];
}

const controls = settingControls(panel, () => render());

function renderToolbar(): void {
  if (!view) return;
  fill(
    toolbar,
    controls.select('Allocation', view.options.map((o) => ({ value: o.key, label: o.label })), option()!.key, (v) => ({ key: v }), 'budget-select'),
    controls.select<BudgetScale>(
      'Bars',
      [
        { value: 'absolute', label: 'parameters' },
        { value: 'share', label: 'share of the layer' },
      ],
      panel.ui.scale,
      (v) => ({ scale: v }),
      'scale',
    ),
    controls.checkbox('Show frozen', panel.ui.frozen, (v) => ({ frozen: v }), 'show-frozen'),
  );
}

function figure(label: string, value: string, id: string): HTMLElement {
  return h('div', { class: 'figure', id }, h('span', { class: 'muted' }, label), h('span', { class: 'value' }, value));
}

function render(): void {
  const o = option();
  if (!o) return;
  const t = panel.theme;
  const c = colors(t);
  const share = panel.ui.scale === 'share';
  const bars = budgetBars(o.layers, panel.ui.scale, panel.ui.frozen);
  chart.data.labels = bars.labels;
  chart.data.datasets = [
    { label: 'LoRA', data: bars.lora, backgroundColor: c.lora, borderColor: c.lora, borderWidth: 1 },
    { label: 'Sparse / full', data: bars.sparse, backgroundColor: c.sparse, borderColor: c.sparse, borderWidth: 1 },
    ...(panel.ui.frozen ? [{ label: 'Frozen', data: bars.frozen, backgroundColor: c.frozen, borderColor: c.frozen, borderWidth: 1 }] : []),
  ];
  chart.options.scales = {
    x: { stacked: true, ...themedScale(t) },
    y: { stacked: true, beginAtZero: true, ...(share ? { max: panel.ui.frozen ? 1 : undefined } : {}), ...themedScale(t, share ? 'share of the layer' : 'parameters') },
  };
  chart.options.plugins = {
    ...themedPlugins(t, 'box'),
    tooltip: {
      ...themedPlugins(t).tooltip,
      callbacks: {
        label: (ctx) => `${ctx.dataset.label}: ${share ? formatPercent(ctx.parsed.y ?? 0, 2) : formatCount(ctx.parsed.y ?? 0)}`,
        afterBody: (items) => {
          const ranks = o.layers[items[0]?.dataIndex ?? -1]?.ranks;
          return ranks ? [`ranks: ${Object.entries(ranks).map(([k, v]) => `${k} r=${v}`).join(', ')}`] : [];
        },
      },
    },
  };
  chart.update('none');
  markDrawn(chart);

  const tot = budgetTotals(o);
  fill(
    totals,
    figure('Budget', formatCount(o.budget), 'total-budget'),
    figure('Trainable', `${formatCount(tot.trainable)} (${formatPercent(tot.budgetUse, 0)} of budget)`, 'total-trainable'),
    figure('LoRA', formatCount(tot.lora), 'total-lora'),
    figure('Sparse / full', formatCount(tot.sparse), 'total-sparse'),
    figure('Frozen', formatCount(tot.frozen), 'total-frozen'),
    figure('Of the model', formatPercent(view?.totalParams ? tot.trainable / view.totalParams : tot.trainableFraction, 3), 'total-fraction'),
  );
  fill(
    tableBox,
    h(
      'table',
      { class: 'data', 'aria-label': 'Parameters per layer' },
      h('thead', {}, h('tr', {}, ...['Layer', 'LoRA', 'Sparse / full', 'Frozen', 'Ranks'].map((x, i) => h('th', { scope: 'col', class: i === 4 ? 'text' : undefined }, x)))),
      h(
        'tbody',
        {},
        ...o.layers.map((l) =>
          h(
            'tr',
            {},
            h('th', { scope: 'row', class: 'text' }, l.name),
            h('td', {}, formatCount(l.lora)),
            h('td', {}, formatCount(l.sparse)),
            h('td', {}, formatCount(l.frozen)),
            h('td', { class: 'text' }, l.ranks ? Object.entries(l.ranks).map(([k, v]) => `${k}: ${v}`).join(', ') : '–'),
          ),
        ),
      ),
    ),
  );
  document.body.dataset.ready = 'true';
}

panel.on('budget/data', (v) => {
  view = v;
  errorBox.clear();
  panel.setSources([v.source]);
  if (!v.options.some((o) => o.key === panel.ui.key)) panel.setUI({ key: v.options[0]?.key ?? '' });
  subtitle.textContent = [v.method ? `scores: ${v.method}` : '', v.totalParams ? `model: ${formatCount(v.totalParams)} parameters` : '', v.source].filter(Boolean).join(' · ');
  renderToolbar();
  render();
});
panel.on('budget/trained', ({ ok, message }) => {
  trainButton.disabled = false;
  result.textContent = message;
  result.className = ok ? 'notice' : 'notice error';
  result.hidden = false;
});
followTheme(panel, [chart], render);
panel.ready();
