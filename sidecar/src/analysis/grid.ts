/** Layers × module-types tables (the heatmaps of importance, allocation and mask density). */
import type { LayerGrid } from '../../../src/protocol';
import type { ParamInfo } from '../models/architecture';

/** The row of everything outside the transformer blocks: embeddings, final norm, LM head, pooler, classifier. */
export const OUTSIDE_ROW = 'embeddings/head';

export interface GridAxes {
  rows: string[];
  layers: number[];
  columns: string[];
}

/** Rows: "embeddings/head" (layer −1) then "layer 0" … "layer L−1"; columns: the given module types. */
export function gridAxes(numLayers: number, columns: readonly string[], outsideRow = true): GridAxes {
  const layers = [...(outsideRow ? [-1] : []), ...Array.from({ length: numLayers }, (_, i) => i)];
  return { rows: layers.map((l) => (l < 0 ? OUTSIDE_ROW : `layer ${l}`)), layers, columns: [...columns] };
}

/** Module types in the order the architecture lists its parameters. */
export function moduleTypes(params: readonly { type: string }[]): string[] {
  return [...new Set(params.map((p) => p.type))];
}

export function emptyGrid<T>(axes: GridAxes, fill: T): LayerGrid<T> {
  return { rows: [...axes.rows], layers: [...axes.layers], columns: [...axes.columns], values: axes.rows.map(() => axes.columns.map(() => fill)) };
}

/** [row, column] of a (layer, type) cell, or undefined when the grid has no such cell. */
export function cellOf(grid: { layers: number[]; columns: string[] }, layer: number, type: string): [number, number] | undefined {
  const r = grid.layers.indexOf(layer < 0 ? -1 : layer);
  const c = grid.columns.indexOf(type);
  return r < 0 || c < 0 ? undefined : [r, c];
}

/** Sums `value(x)` into the cells of the items (null cells stay null when nothing lands there). */
export function sumGrid<X extends { layer: number; type: string }>(axes: GridAxes, items: readonly X[], value: (x: X) => number): LayerGrid {
  const g = emptyGrid<number | null>(axes, null);
  for (const x of items) {
    const rc = cellOf(g, x.layer, x.type);
    if (!rc) continue;
    const row = g.values[rc[0]]!;
    row[rc[1]] = (row[rc[1]] ?? 0) + value(x);
  }
  return g;
}

/** Cell-wise a / b (null where either is null or b is 0). */
export function divideGrids(a: LayerGrid, b: LayerGrid): LayerGrid {
  return { ...a, values: a.values.map((row, i) => row.map((v, j) => { const d = b.values[i]![j]; return v === null || d === null || d === undefined || d === 0 ? null : v / d; })) };
}

export function mapGrid(a: LayerGrid, f: (v: number) => number): LayerGrid {
  return { ...a, values: a.values.map((row) => row.map((v) => (v === null ? null : f(v)))) };
}

/** The module path → type map of an architecture's parameters (`transformer.h.0.attn.c_attn` → `c_attn`). */
export function moduleTypeMap(params: readonly ParamInfo[]): Map<string, { type: string; layer: number }> {
  const m = new Map<string, { type: string; layer: number }>();
  for (const p of params) {
    const dot = p.name.lastIndexOf('.');
    const module = dot > 0 ? p.name.slice(0, dot) : p.name;
    if (!m.has(module)) m.set(module, { type: p.type, layer: p.layer });
    if (!m.has(p.name)) m.set(p.name, { type: p.type, layer: p.layer });
  }
  return m;
}

/** The type of the base module an adapter tensor attaches to (longest module path prefix), else `adapter`. */
export function typeOfPath(map: ReadonlyMap<string, { type: string; layer: number }>, name: string): string {
  let s = name;
  while (s.length > 0) {
    const hit = map.get(s);
    if (hit) return hit.type;
    const dot = s.lastIndexOf('.');
    if (dot < 0) break;
    s = s.slice(0, dot);
  }
  return 'adapter';
}

/** The transformer block in a parameter path (`….h.3.…`, `….layers.3.…`, `….layer.3.…`), else −1. */
export function layerFromName(name: string): number {
  const m = /(?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}
