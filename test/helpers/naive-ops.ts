/**
 * Float64 building blocks of the plain re-implementations the parity tests check the models against
 * (one unpadded sequence at a time, no TF.js).
 */

/** Weights by name (float64 ones let a finite difference move them by less than a float32 step). */
export type Weights = (name: string) => Float32Array | Float64Array;
type Vec = Float32Array | Float64Array;

/** Whether `w` has a weight of that name (the reference checks optional biases and norms by it). */
export function hasWeight(w: Weights, name: string): boolean {
  try {
    w(name);
    return true;
  } catch {
    return false;
  }
}

/** x Wᵀ + b for one row x [in], W [out, in] (nn.Linear). */
export const linear = (x: Float64Array, w: Vec, b: Vec | undefined, out: number) => {
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o]! : 0;
    for (let i = 0; i < x.length; i++) s += x[i]! * w[o * x.length + i]!;
    y[o] = s;
  }
  return y;
};
/** nn.LayerNorm over the whole row. */
export const layerNorm = (x: Float64Array, w: Vec, b: Vec, eps: number) => {
  const mean = x.reduce((a, v) => a + v, 0) / x.length;
  const v = x.reduce((a, z) => a + (z - mean) ** 2, 0) / x.length;
  return x.map((z, i) => ((z - mean) / Math.sqrt(v + eps)) * w[i]! + b[i]!);
};
export const erf = (x: number) => {
  // Abramowitz–Stegun 7.1.26 is too coarse; a series / continued fraction to double precision.
  const t = Math.abs(x);
  if (t < 3) {
    let sum = t;
    let term = t;
    for (let n = 1; n < 100; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  let cf = 0;
  for (let n = 60; n >= 1; n--) cf = n / 2 / (t + cf);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + cf));
};
/** Exact (erf) GELU. */
export const gelu = (z: number) => 0.5 * z * (1 + erf(z / Math.SQRT2));

/** GELU's tanh approximation (gelu_new, gelu_pytorch_tanh). */
export const geluTanh = (z: number) => 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z ** 3)));

/** ACT2FN for the activations the reference models use. */
export function activate(kind: string, z: number): number {
  if (kind === 'gelu') return gelu(z);
  if (kind === 'gelu_new' || kind === 'gelu_pytorch_tanh') return geluTanh(z);
  if (kind === 'relu') return Math.max(0, z);
  if (kind === 'silu') return z / (1 + Math.exp(-z));
  throw new Error(`naive ops: no activation ${kind}`);
}

/**
 * Causal multi-head attention of one sequence: per position, queries, keys and values [H·D] (heads
 * side by side); softmax(q·k·scale) over positions up to and including each query's.
 */
export function causalAttention(q: Float64Array[], k: Float64Array[], v: Float64Array[], heads: number, headDim: number, scale: number): Float64Array[] {
  return q.map((qi, i) => {
    const out = new Float64Array(heads * headDim);
    for (let h = 0; h < heads; h++) {
      const scores = Array.from({ length: i + 1 }, (_, j) => {
        let s = 0;
        for (let e = 0; e < headDim; e++) s += qi[h * headDim + e]! * k[j]![h * headDim + e]!;
        return s * scale;
      });
      const max = Math.max(...scores);
      const ex = scores.map((s) => Math.exp(s - max));
      const sum = ex.reduce((a, b) => a + b, 0);
      for (let j = 0; j <= i; j++) for (let e = 0; e < headDim; e++) out[h * headDim + e] += (ex[j]! / sum) * v[j]![h * headDim + e]!;
    }
    return out;
  });
}

/** Rows [T][d] times a head Wᵀ [V, d]: logits, flattened [T·V]. */
export function headLogits(rows: Float64Array[], head: Float32Array | Float64Array, vocab: number): Float64Array {
  const out = new Float64Array(rows.length * vocab);
  rows.forEach((r, t) => out.set(linear(r, head, undefined, vocab), t * vocab));
  return out;
}
