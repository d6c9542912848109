/**
 * chart.js glue: theme colours applied to a chart's scales, legend and tooltip, and a data-
 * attribute on the canvas with the number of points drawn (the end-to-end tests read it).
 * Each panel registers only the controllers, elements and scales it uses.
 */
import { Chart, type ChartConfiguration, type ChartType, type DefaultDataPoint } from 'chart.js';
import type { Theme } from './theme';

export { Chart };

/** Global defaults from the theme (new charts pick them up; existing ones get `applyTheme`). */
export function setChartDefaults(theme: Theme): void {
  Chart.defaults.color = theme.fg;
  Chart.defaults.borderColor = theme.grid;
  Chart.defaults.font.family = theme.fontFamily;
  Chart.defaults.font.size = Math.max(11, Math.round(theme.fontSize * 0.92));
}

interface ScaleLike {
  ticks?: { color?: unknown };
  grid?: { color?: unknown };
  border?: { color?: unknown };
  title?: { color?: unknown };
}

/** Re-colours an existing chart for a new theme. */
export function applyTheme(chart: Chart, theme: Theme): void {
  setChartDefaults(theme);
  const o = chart.options;
  for (const scale of Object.values(o.scales ?? {}) as ScaleLike[]) {
    if (scale.ticks) scale.ticks.color = theme.fg;
    if (scale.grid) scale.grid.color = theme.grid;
    if (scale.border) scale.border.color = theme.border;
    if (scale.title) scale.title.color = theme.fg;
  }
  const plugins = o.plugins;
  if (plugins?.legend?.labels) plugins.legend.labels.color = theme.fg;
  if (plugins?.tooltip) {
    plugins.tooltip.backgroundColor = theme.bg;
    plugins.tooltip.titleColor = theme.fg;
    plugins.tooltip.bodyColor = theme.fg;
    plugins.tooltip.borderColor = theme.border;
    plugins.tooltip.borderWidth = 1;
  }
  if (plugins?.title) plugins.title.color = theme.fg;
  chart.update('none');
}

/** Scale options coloured for the theme. */
export function themedScale(
  theme: Theme,
  title?: string,
): { ticks: { color: string }; grid: { color: string }; border: { color: string }; title: { display: boolean; text: string; color: string } } {
  return {
    ticks: { color: theme.fg },
    grid: { color: theme.grid },
    border: { color: theme.border },
    title: { display: title !== undefined, text: title ?? '', color: theme.fg },
  };
}

/** Legend and tooltip coloured for the theme; legend keys are short lines for line charts, squares for bars. */
export function themedPlugins(theme: Theme, key: 'line' | 'box' = 'line') {
  return {
    legend: { labels: { color: theme.fg, boxWidth: key === 'line' ? 14 : 12, boxHeight: key === 'line' ? 2 : 12 } },
    tooltip: { backgroundColor: theme.bg, titleColor: theme.fg, bodyColor: theme.fg, borderColor: theme.border, borderWidth: 1 },
  };
}

export function makeChart<T extends ChartType, D = DefaultDataPoint<T>>(canvas: HTMLCanvasElement, config: ChartConfiguration<T, D>): Chart<T, D> {
  return new Chart(canvas, config);
}

/** A data entry chart.js draws: not a gap (null, or a point whose y is null). */
const isDrawn = (v: unknown): boolean => v !== null && v !== undefined && !(typeof v === 'object' && (v as { y?: unknown }).y === null);

/** Publishes what a chart draws on its canvas: `data-points` (total points, gaps not counted) and `data-series`. */
export function markDrawn(chart: Chart, countDataset: (label: string) => boolean = () => true): void {
  let points = 0;
  let series = 0;
  chart.data.datasets.forEach((d, i) => {
    if (!countDataset(d.label ?? '') || !chart.isDatasetVisible(i)) return;
    series++;
    points += (d.data as unknown[]).filter(isDrawn).length;
  });
  const canvas = chart.canvas;
  canvas.dataset.points = String(points);
  canvas.dataset.series = String(series);
  canvas.dataset.drawn = points > 0 ? 'true' : 'false';
}

/** On a theme change: these charts re-coloured, then `redraw` (what else depends on the theme). */
export function followTheme(panel: { onTheme(handler: (t: Theme) => void): void }, charts: readonly Chart[], redraw: () => void): void {
  panel.onTheme((t) => {
    for (const c of charts) applyTheme(c, t);
    redraw();
  });
}
