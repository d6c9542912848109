/**
 * Smoothing of noisy curves (pure; no DOM). The EMA is TensorBoard's: debiased so that the first
 * points are not pulled towards zero, and it skips non-finite values (a NaN stays a gap).
 */

/**
 * Exponential moving average with weight `w` in [0, 1): 0 leaves the values as they are, 0.99
 * smooths heavily. Non-finite inputs yield NaN at their place and do not disturb the average.
 */
export function emaSmooth(values: readonly number[], w: number): number[] {
  const weight = Math.min(Math.max(Number.isFinite(w) ? w : 0, 0), 0.999);
  if (weight === 0) return values.map((v) => (Number.isFinite(v) ? v : NaN));
  let last = 0;
  let debias = 0;
  const out: number[] = new Array<number>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) {
      out[i] = NaN;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    debias = debias * weight + (1 - weight);
    out[i] = last / debias;
  }
  return out;
}
