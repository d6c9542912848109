/**
 * Heatmap shaping (pure; no DOM): normalising a layers × modules score grid, laying out cells,
 * hit-testing the pointer, and ranking layers for the table fallback.
 */

export type Grid = readonly (readonly (number | null)[])[];
export type Normalization = 'global' | 'layer' | 'module';

/** Finite cell values only (null, NaN and infinities are holes). */
const finite = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Scales a grid into [0, 1]: over the whole grid, per layer (row) or per module type (column).
 * `log` compresses heavy-tailed scores (Fisher values span decades) with log10(1 + v/min⁺) first.
 * Holes stay null; a constant range maps to 1 where the value is positive, else 0.
 */
export function normalizeGrid(grid: Grid, mode: Normalization = 'global', log = false): (number | null)[][] {
  const rows = grid.length;
  const cols = Math.max(0, ...grid.map((r) => r.length));
  let values: (number | null)[][] = grid.map((r) => Array.from({ length: cols }, (_, j) => (finite(r[j]) ? r[j]! : null)));
  if (log) {
    const positives = values.flat().filter((v): v is number => v !== null && v > 0);
    const floor = positives.length ? Math.min(...positives) : 1;
    values = values.map((r) => r.map((v) => (v === null ? null : Math.log10(1 + Math.max(0, v) / floor))));
  }
  const scale = (cells: { i: number; j: number }[]) => {
    const vs = cells.map(({ i, j }) => values[i]![j]).filter((v): v is number => v !== null);
    if (!vs.length) return;
    const lo = Math.min(...vs);
    const hi = Math.max(...vs);
    for (const { i, j } of cells) {
      const v = values[i]![j];
      if (v === null || v === undefined) continue;
      values[i]![j] = hi > lo ? (v - lo) / (hi - lo) : v > 0 ? 1 : 0;
    }
  };
  const all = (pred: (i: number, j: number) => boolean) => {
    const cells: { i: number; j: number }[] = [];
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (pred(i, j)) cells.push({ i, j });
    return cells;
  };
  if (mode === 'global') scale(all(() => true));
  else if (mode === 'layer') for (let r = 0; r < rows; r++) scale(all((i) => i === r));
  else for (let c = 0; c < cols; c++) scale(all((_, j) => j === c));
  return values;
}

export interface GridLayout {
  /** Left/top of the cell area, in CSS pixels. */
  left: number;
  top: number;
  cellW: number;
  cellH: number;
  rows: number;
  cols: number;
}

/** Cells filling a `width` × `height` area after `left`/`top` label margins (and `right`/`bottom` ones). */
export function gridLayout(
  width: number,
  height: number,
  rows: number,
  cols: number,
  margin: { left: number; top: number; right?: number; bottom?: number },
): GridLayout {
  const w = Math.max(0, width - margin.left - (margin.right ?? 0));
  const h = Math.max(0, height - margin.top - (margin.bottom ?? 0));
  return { left: margin.left, top: margin.top, cellW: cols ? w / cols : 0, cellH: rows ? h / rows : 0, rows, cols };
}

/** The cell under a point, or undefined outside the grid. */
export function cellAt(layout: GridLayout, x: number, y: number): { row: number; col: number } | undefined {
  if (layout.cellW <= 0 || layout.cellH <= 0) return undefined;
  const col = Math.floor((x - layout.left) / layout.cellW);
  const row = Math.floor((y - layout.top) / layout.cellH);
  if (row < 0 || col < 0 || row >= layout.rows || col >= layout.cols) return undefined;
  return { row, col };
}

/** Per layer: the sum of its finite scores and its rank (1 = most important). */
export function rankLayers(grid: Grid): { layer: number; total: number; rank: number }[] {
  const totals = grid.map((r, layer) => ({ layer, total: r.filter(finite).reduce((a, b) => a + b, 0) }));
  const order = [...totals].sort((a, b) => b.total - a.total || a.layer - b.layer);
  const rank = new Map(order.map((t, i) => [t.layer, i + 1]));
  return totals.map((t) => ({ ...t, rank: rank.get(t.layer)! }));
}

/** The timeline frame nearest to `step` (the last frame when `step` is undefined). */
export function frameIndex(steps: readonly number[], step: number | undefined): number {
  if (!steps.length) return -1;
  if (step === undefined) return steps.length - 1;
  let best = 0;
  for (let i = 1; i < steps.length; i++) if (Math.abs(steps[i]! - step) < Math.abs(steps[best]! - step)) best = i;
  return best;
}
