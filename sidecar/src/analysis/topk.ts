/**
 * Exact top-k selection over one or several host arrays. The order is by value (descending), ties
 * broken by array order, then by index, so a selection of k entries is always exactly k entries and
 * the same entries every time. NaN counts as −∞.
 */

function clean(a: Float32Array): Float32Array {
  for (let i = 0; i < a.length; i++) if (Number.isNaN(a[i]!)) return a.map((v) => (Number.isNaN(v) ? -Infinity : v));
  return a;
}

/** First index i in ascending `s` with s[i] > t (or ≥ t when `orEqual`). */
function upperBound(s: Float32Array, t: number, orEqual = false): number {
  let lo = 0;
  let hi = s.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (orEqual ? s[mid]! >= t : s[mid]! > t) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export class GlobalRanking {
  private readonly arrays: Float32Array[];
  /** Each array sorted ascending. */
  private readonly sorted: Float32Array[];
  /** All values sorted ascending. */
  private readonly all: Float32Array;
  readonly total: number;

  constructor(arrays: readonly Float32Array[]) {
    this.arrays = arrays.map(clean);
    this.sorted = this.arrays.map((a) => Float32Array.from(a).sort());
    this.total = this.arrays.reduce((n, a) => n + a.length, 0);
    this.all = new Float32Array(this.total);
    let o = 0;
    for (const s of this.sorted) {
      this.all.set(s, o);
      o += s.length;
    }
    this.all.sort();
  }

  /** The k-th largest value, and per array how many entries are above it and how many ties it takes. */
  private split(k: number): { t: number; greater: number[]; ties: number[] } {
    const n = this.arrays.length;
    if (k <= 0) return { t: Infinity, greater: new Array<number>(n).fill(0), ties: new Array<number>(n).fill(0) };
    const kk = Math.min(k, this.total);
    const t = this.all[this.total - kk]!;
    const greater = this.sorted.map((s) => s.length - upperBound(s, t));
    let need = kk - greater.reduce((a, b) => a + b, 0);
    const ties = this.sorted.map((s, i) => {
      const eq = s.length - upperBound(s, t, true) - greater[i]!;
      const take = Math.min(eq, need);
      need -= take;
      return take;
    });
    return { t, greater, ties };
  }

  /** Entries of each array among the global top-k. */
  counts(k: number): number[] {
    const { greater, ties } = this.split(k);
    return greater.map((g, i) => g + ties[i]!);
  }

  /** 0/1 masks of the global top-k. */
  masks(k: number): Uint8Array[] {
    const { t, ties } = this.split(k);
    return this.arrays.map((a, i) => {
      const m = new Uint8Array(a.length);
      let tieLeft = ties[i]!;
      for (let j = 0; j < a.length; j++) {
        const v = a[j]!;
        if (v > t) m[j] = 1;
        else if (v === t && tieLeft > 0) {
          m[j] = 1;
          tieLeft--;
        }
      }
      return m;
    });
  }
}

/** 0/1 mask of the k largest entries of one array. */
export function topKMask(values: Float32Array, k: number): Uint8Array {
  return new GlobalRanking([values]).masks(k)[0]!;
}

/** |x| of every entry. */
export function absolute(x: Float32Array): Float32Array {
  return x.map(Math.abs);
}
