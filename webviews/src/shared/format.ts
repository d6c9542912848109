/** Number formatting for labels, tooltips and tables (pure). */

/** 1234 → "1.23k", 4_300_000 → "4.3M"; small numbers as they are. */
export function formatCount(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '–';
  const a = Math.abs(n);
  const trim = (x: number) => String(Number(x.toPrecision(3)));
  if (a >= 1e9) return `${trim(n / 1e9)}G`;
  if (a >= 1e6) return `${trim(n / 1e6)}M`;
  if (a >= 1e3) return `${trim(n / 1e3)}k`;
  return String(Math.round(n * 100) / 100);
}

/** A metric value with 4 significant digits, small values in exponent form. */
export function formatValue(n: number | undefined | null, digits = 4): string {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  if (!Number.isFinite(n)) return n > 0 ? '∞' : '-∞';
  if (n === 0) return '0';
  const a = Math.abs(n);
  if (a < 1e-3 || a >= 1e6) return Number(n.toPrecision(digits)).toExponential();
  return String(Number(n.toPrecision(digits)));
}

export function formatPercent(fraction: number | null | undefined, digits = 1): string {
  if (fraction === undefined || fraction === null || !Number.isFinite(fraction)) return '–';
  return `${(fraction * 100).toFixed(digits)}%`;
}

/** On a log axis, label only 1, 2 and 5 × 10^k (the other ticks keep their grid lines). */
export function isNiceLogTick(v: number): boolean {
  if (!Number.isFinite(v) || v <= 0) return false;
  const m = v / 10 ** Math.floor(Math.log10(v) + 1e-9);
  return [1, 2, 5].some((n) => Math.abs(m - n) < 1e-6);
}
