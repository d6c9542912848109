/** Sortable tables (pure): stable sort with missing values last in either direction, best-value marks. */

export type SortDir = 'asc' | 'desc';
export type Cell = number | string | undefined | null;

const missing = (v: Cell): boolean => v === undefined || v === null || (typeof v === 'number' && Number.isNaN(v));

/** Compares two cells; numbers numerically, strings with `localeCompare` (numeric collation). */
export function compareCells(a: Cell, b: Cell): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: 'base' });
}

/**
 * Rows sorted by `key(row)`, stable (ties keep their order), missing values (undefined, null, NaN)
 * always last, whatever the direction.
 */
export function sortRows<R>(rows: readonly R[], key: (r: R) => Cell, dir: SortDir): R[] {
  const sign = dir === 'asc' ? 1 : -1;
  return rows
    .map((row, index) => ({ row, index, k: key(row) }))
    .sort((x, y) => {
      const mx = missing(x.k);
      const my = missing(y.k);
      if (mx || my) return mx === my ? x.index - y.index : mx ? 1 : -1;
      return sign * compareCells(x.k, y.k) || x.index - y.index;
    })
    .map((e) => e.row);
}

/** Index of the best row for a numeric column (`lower` or `higher` is better); -1 when no row has a value or all values tie. */
export function bestIndex<R>(rows: readonly R[], key: (r: R) => number | undefined, better: 'lower' | 'higher'): number {
  const values = rows.map(key).filter((v): v is number => v !== undefined && Number.isFinite(v));
  if (values.length < 2 || values.every((v) => v === values[0])) return values.length === 1 ? rows.findIndex((r) => key(r) === values[0]) : -1;
  let best = -1;
  rows.forEach((r, i) => {
    const v = key(r);
    if (v === undefined || !Number.isFinite(v)) return;
    const b = best < 0 ? undefined : key(rows[best]!);
    if (b === undefined || (better === 'lower' ? v < b : v > b)) best = i;
  });
  return best;
}

/** The next sort state after a click on a column header: a new column starts with `initial`, the same one flips. */
export function nextSort<K extends string>(current: { key: K; dir: SortDir } | undefined, key: K, initial: SortDir = 'asc'): { key: K; dir: SortDir } {
  if (current?.key !== key) return { key, dir: initial };
  return { key, dir: current.dir === 'asc' ? 'desc' : 'asc' };
}
