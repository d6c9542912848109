/**
 * Layer importance: a layers × module-types heatmap per scoring method (Fisher, gradient
 * magnitude, Taylor, activations, IST over time when the report has it), normalised globally, per
 * layer or per module type; hover for values, click (or Enter) to pin a layer; the same numbers
 * as a table for screen readers and copying.
 */
import './lib/panel.css';
import type { ImportanceMethodView, ImportanceView } from '../../src/protocol/webview';
import { bootstrap, errorLine } from './lib/bootstrap';
import { button, fill, h, labelled } from './lib/dom';
import { settingControls } from './lib/settings';
import { drawColorBar, Heatmap } from './lib/heatmap';
import { formatValue } from './shared/format';
import { frameIndex, normalizeGrid, rankLayers, type Normalization } from './shared/heatmap';

interface UI {
  method: string;
  normalization: Normalization;
  log: boolean;
  pinned: string[];
  /** Timeline step shown (IST); -1: the last. */
  step: number;
}
const panel = bootstrap<UI>('importance', { method: 'fisher', normalization: 'global', log: true, pinned: [], step: -1 });

let view: ImportanceView | undefined;
const app = document.getElementById('app')!;
const title = h('h1', {}, 'Layer importance');
const subtitle = h('p', { class: 'subtitle', id: 'subtitle' });
const errorBox = errorLine(panel);
const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Heatmap options' });
const pins = h('div', { class: 'pins', id: 'pins', 'aria-live': 'polite' });
const heatBox = h('div', { class: 'heatmap-box', id: 'heatmap' });
const colorBar = h('canvas', { class: 'colorbar', 'aria-hidden': 'true' });
const legend = h('div', { class: 'control muted', id: 'legend' }, 'low', colorBar, 'high');
const tableBox = h('div', { class: 'table-scroll' });
// Scores the allocator takes (Fisher, gradient norm, Taylor); IST timelines and activations are views only.
const allocatable = (id: string) => ['fisher', 'grad-norm', 'taylor', 'adalora'].includes(id.split(':')[0]!);
const allocated = h('p', { class: 'notice', id: 'allocate-result', role: 'status', hidden: true });
const allocateButton = button(
  'Allocate a parameter budget…',
  () => {
    const m = currentMethod();
    if (!m) return;
    allocateButton.disabled = true;
    allocated.hidden = true;
    panel.post('importance/allocate', { method: m.id });
  },
  { id: 'allocate', title: 'SPT and rank allocations of trainable parameters per layer from these scores (the budget panel opens)' },
);
const allocateBar = h('div', { class: 'toolbar', hidden: true }, allocateButton, allocated);
fill(
  app,
  title,
  subtitle,
  errorBox,
  toolbar,
  allocateBar,
  h('section', { class: 'card' }, h('h2', {}, 'Layers × module types'), pins, heatBox, legend),
  h('details', { class: 'card', id: 'table-details' }, h('summary', {}, 'Table'), tableBox),
);

const heatmap = new Heatmap(heatBox, panel.theme, {
  label: 'Importance heatmap: layers by module types. Use the arrow keys to move, Enter to pin a layer.',
  onPin: (row) => togglePin(view?.layers[row]),
  isPinned: (row) => !!view && panel.ui.pinned.includes(view.layers[row]!),
});
heatmap.canvas.id = 'heatmap-canvas';
drawColorBar(colorBar, panel.theme);

function currentMethod(): ImportanceMethodView | undefined {
  if (!view) return undefined;
  return view.methods.find((m) => m.id === panel.ui.method) ?? view.methods[0];
}

/** The grid shown: the method's scores, or a timeline frame. */
function currentScores(m: ImportanceMethodView): { scores: (number | null)[][]; step?: number } {
  if (!m.timeline?.length) return { scores: m.scores };
  const i = frameIndex(
    m.timeline.map((f) => f.step),
    panel.ui.step < 0 ? undefined : panel.ui.step,
  );
  return { scores: m.timeline[i]!.scores, step: m.timeline[i]!.step };
}

function togglePin(layer: string | undefined): void {
  if (!layer) return;
  const pinned = panel.ui.pinned.includes(layer) ? panel.ui.pinned.filter((p) => p !== layer) : [...panel.ui.pinned, layer];
  panel.setUI({ pinned });
  render();
}

const settings = settingControls(panel, () => render());
const methodSettings = settingControls(panel, () => {
  renderToolbar();
  render();
});
const NORMALIZATIONS: { value: Normalization; label: string }[] = [
  { value: 'global', label: 'whole grid' },
  { value: 'layer', label: 'per layer' },
  { value: 'module', label: 'per module type' },
];

function renderToolbar(): void {
  if (!view) return;
  const m = currentMethod()!;
  const controls: HTMLElement[] = [
    // A new method may bring a timeline slider: the toolbar is rebuilt too.
    methodSettings.select('Method', view.methods.map((x) => ({ value: x.id, label: x.label })), m.id, (v) => ({ method: v, step: -1 }), 'method'),
    settings.select('Normalise', NORMALIZATIONS, panel.ui.normalization, (v) => ({ normalization: v }), 'normalization'),
    settings.checkbox('Log colour scale', panel.ui.log, (v) => ({ log: v }), 'log'),
  ];
  if (m.timeline?.length) {
    const steps = m.timeline.map((f) => f.step);
    const slider = h('input', { type: 'range', min: 0, max: steps.length - 1, step: 1, id: 'step', 'aria-label': 'Training step' });
    const i = frameIndex(steps, panel.ui.step < 0 ? undefined : panel.ui.step);
    slider.value = String(i);
    const out = h('output', { for: 'step' }, `step ${steps[i]}`);
    slider.addEventListener('input', () => {
      const s = steps[Number(slider.value)]!;
      out.textContent = `step ${s}`;
      panel.setUI({ step: s });
      render();
    });
    controls.push(labelled('Over time', h('span', { class: 'control' }, slider, out)));
  }
  fill(toolbar, ...controls);
}

function render(): void {
  if (!view) return;
  const m = currentMethod()!;
  const { scores, step } = currentScores(m);
  const norm = normalizeGrid(scores, panel.ui.normalization, panel.ui.log);
  const ranks = rankLayers(scores);
  heatmap.setData({
    rows: view.layers,
    cols: view.modules,
    norm,
    text: (i, j) => formatValue(scores[i]?.[j] ?? null, 2),
    tooltip: (i, j) => [
      `${view!.layers[i]} · ${view!.modules[j]}`,
      `${m.label}: ${formatValue(scores[i]?.[j] ?? null)}`,
      `relative: ${formatValue(norm[i]?.[j] ?? null, 3)} (${panel.ui.normalization})`,
      `layer rank: ${ranks[i]?.rank ?? '–'} of ${ranks.length}`,
      panel.ui.pinned.includes(view!.layers[i]!) ? 'pinned (click to unpin)' : 'click to pin this layer',
    ],
  });
  heatmap.canvas.dataset.method = m.id;
  if (step !== undefined) heatmap.canvas.dataset.step = String(step);

  fill(
    pins,
    panel.ui.pinned.length ? h('span', { class: 'muted' }, 'Pinned:') : h('span', { class: 'muted' }, 'Click a cell to pin its layer.'),
    ...panel.ui.pinned.map((p) =>
      h('span', { class: 'chip' }, p, button('✕', () => togglePin(p), { class: 'icon', 'aria-label': `Unpin ${p}`, title: `Unpin ${p}` })),
    ),
  );

  const table = h(
    'table',
    { class: 'data', id: 'importance-table', 'aria-label': `${m.label} by layer and module type` },
    h(
      'thead',
      {},
      h('tr', {}, h('th', { scope: 'col' }, 'Layer'), ...view.modules.map((c) => h('th', { scope: 'col' }, c)), h('th', { scope: 'col' }, 'Total'), h('th', { scope: 'col' }, 'Rank')),
    ),
    h(
      'tbody',
      {},
      ...view.layers.map((layer, i) =>
        h(
          'tr',
          { class: panel.ui.pinned.includes(layer) ? 'pinned' : undefined },
          h('th', { scope: 'row', class: 'text' }, button(layer, () => togglePin(layer), { class: 'link', 'aria-pressed': panel.ui.pinned.includes(layer) ? 'true' : 'false', title: 'Pin or unpin this layer' })),
          ...view!.modules.map((_, j) => h('td', {}, formatValue(scores[i]?.[j] ?? null))),
          h('td', {}, formatValue(ranks[i]?.total)),
          h('td', {}, String(ranks[i]?.rank ?? '–')),
        ),
      ),
    ),
  );
  fill(tableBox, table);
  document.body.dataset.ready = 'true';
}

panel.on('importance/data', (v) => {
  view = v;
  errorBox.clear();
  panel.setSources([v.source]);
  if (!v.methods.some((m) => m.id === panel.ui.method)) panel.setUI({ method: v.methods[0]?.id ?? 'fisher' });
  subtitle.textContent = [v.model ? `model ${v.model}` : '', ...(v.notes ?? []), v.source].filter(Boolean).join(' · ');
  allocateBar.hidden = !v.methods.some((m) => allocatable(m.id));
  renderToolbar();
  render();
});
panel.on('importance/allocated', ({ ok, message }) => {
  allocateButton.disabled = false;
  allocated.textContent = message;
  allocated.className = ok ? 'notice' : 'notice error';
  allocated.hidden = false;
});
panel.onTheme((t) => {
  heatmap.setTheme(t);
  drawColorBar(colorBar, t);
});
panel.ready();
