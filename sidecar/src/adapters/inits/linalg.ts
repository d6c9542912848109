/**
 * Dense float64 linear algebra for the data-aware LoRA inits, on ml-matrix. Weights come in and go
 * out in their stored layout ([out, in], or [in, out] for GPT-2's Conv1D); everything in between
 * works on the [out, in] matrix in float64.
 */
import { inverse, Matrix, SingularValueDecomposition } from 'ml-matrix';

export { Matrix };

/** A linear layer's weight as stored: [out, in] row-major, or [in, out] when `fanInFanOut` (GPT-2 Conv1D). */
export interface StoredWeight {
  data: ArrayLike<number>;
  outFeatures: number;
  inFeatures: number;
  fanInFanOut?: boolean;
}

/** Initial adapter of one module: A [r, in] and B [out, r] row-major, residual = W − s·B·A in the stored layout. */
export interface LoraInitResult {
  A: Float32Array;
  B: Float32Array;
  residual: Float32Array;
}

function checkStored(w: StoredWeight, what = 'weight'): void {
  const { outFeatures: o, inFeatures: i } = w;
  if (!Number.isInteger(o) || !Number.isInteger(i) || o <= 0 || i <= 0) throw new RangeError(`${what}: invalid shape out=${o}, in=${i}`);
  if (w.data.length !== o * i) throw new RangeError(`${what}: has ${w.data.length} elements, expected out·in = ${o}·${i} = ${o * i}`);
}

/** The [out, in] float64 matrix of a stored weight (or of a gradient with the same layout). */
export function outInMatrix(w: StoredWeight, what = 'weight'): Matrix {
  checkStored(w, what);
  const { outFeatures: o, inFeatures: n, data } = w;
  const m = new Matrix(o, n);
  if (w.fanInFanOut) {
    for (let i = 0; i < n; i++) for (let j = 0; j < o; j++) m.set(j, i, data[i * o + j]!);
  } else {
    for (let j = 0; j < o; j++) for (let i = 0; i < n; i++) m.set(j, i, data[j * n + i]!);
  }
  return m;
}

/** An [out, in] matrix written back in the stored layout, as float32. */
export function toStored(m: Matrix, fanInFanOut = false): Float32Array {
  const o = m.rows;
  const n = m.columns;
  const out = new Float32Array(o * n);
  if (fanInFanOut) {
    for (let j = 0; j < o; j++) for (let i = 0; i < n; i++) out[i * o + j] = m.get(j, i);
  } else {
    for (let j = 0; j < o; j++) for (let i = 0; i < n; i++) out[j * n + i] = m.get(j, i);
  }
  return out;
}

/** Row-major float32 copy of a matrix. */
export function toFloat32(m: Matrix): Float32Array {
  const out = new Float32Array(m.rows * m.columns);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.columns; j++) out[i * m.columns + j] = m.get(i, j);
  return out;
}

/** A matrix with every entry rounded to float32 (what PEFT stores A and B as). */
export function roundToFloat32(m: Matrix): Matrix {
  const r = new Matrix(m.rows, m.columns);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.columns; j++) r.set(i, j, Math.fround(m.get(i, j)));
  return r;
}

export interface ThinSvd {
  /** [m, k] left singular vectors. */
  U: Matrix;
  /** k singular values, descending. */
  S: Float64Array;
  /** [n, k] right singular vectors (W = U diag(S) Vᵀ). */
  V: Matrix;
}

/**
 * Thin SVD, k = min(m, n), singular values descending. Signs are made deterministic (the entry of
 * largest magnitude of each right singular vector is positive), so results do not depend on the
 * SVD routine's own sign choices.
 */
export function thinSvd(a: Matrix): ThinSvd {
  const k = Math.min(a.rows, a.columns);
  const svd = new SingularValueDecomposition(a, { autoTranspose: true });
  let U = svd.leftSingularVectors;
  let V = svd.rightSingularVectors;
  const s = svd.diagonal;
  if (U.columns > k) U = U.subMatrix(0, U.rows - 1, 0, k - 1);
  if (V.columns > k) V = V.subMatrix(0, V.rows - 1, 0, k - 1);
  // ml-matrix sorts descending already; keep the guarantee explicit (stable order for ties).
  const order = [...Array(k).keys()].sort((x, y) => s[y]! - s[x]! || x - y);
  return normaliseSigns({ U: cols(U, order), S: Float64Array.from(order, (i) => s[i]!), V: cols(V, order) });
}

/**
 * Reduced QR as `torch.linalg.qr(a)` (mode "reduced") returns it: k = min(m, n), Q [m, k] with
 * orthonormal columns, R [k, n] upper triangular, a = Q R.
 */
export function thinQr(a: Matrix): { Q: Matrix; R: Matrix } {
  return qrLeading(a, Math.min(a.rows, a.columns));
}

/**
 * The first r columns of Q and first r rows of R of a's QR decomposition, from the first r
 * Householder reflections only (O(m·n·r)): the same numbers a full QR gives there. LAPACK's sign
 * convention (geqrf): R's diagonal entry has the opposite sign of the pivot column's leading entry.
 */
export function qrLeading(a: Matrix, r: number): { Q: Matrix; R: Matrix } {
  const m = a.rows;
  const n = a.columns;
  if (!Number.isInteger(r) || r < 1 || r > Math.min(m, n)) throw new RangeError(`QR: r=${r} must be in [1, min(${m}, ${n})]`);
  const w = Float64Array.from(a.to1DArray()); // row-major working copy
  const vs: Float64Array[] = [];
  const vtvs: number[] = [];
  for (let k = 0; k < r; k++) {
    let norm = 0;
    for (let i = k; i < m; i++) norm = Math.hypot(norm, w[i * n + k]!);
    const v = new Float64Array(m - k);
    let vtv = 0;
    if (norm !== 0) {
      const alpha = w[k * n + k]!;
      const beta = alpha < 0 ? norm : -norm;
      for (let i = k; i < m; i++) v[i - k] = w[i * n + k]!;
      v[0] = alpha - beta;
      for (let i = 0; i < v.length; i++) vtv += v[i]! * v[i]!;
      // Apply H = I − 2vvᵀ/(vᵀv) to columns k.. (rows k..).
      for (let j = k; j < n; j++) {
        let dot = 0;
        for (let i = k; i < m; i++) dot += v[i - k]! * w[i * n + j]!;
        const f = (2 * dot) / vtv;
        for (let i = k; i < m; i++) w[i * n + j]! -= f * v[i - k]!;
      }
      w[k * n + k] = beta;
    }
    vs.push(v);
    vtvs.push(vtv);
  }
  const R = new Matrix(r, n);
  for (let i = 0; i < r; i++) for (let j = i; j < n; j++) R.set(i, j, w[i * n + j]!);
  // Q[:, :r] = H_0 ⋯ H_{r−1} [I_r; 0]
  const q = new Float64Array(m * r);
  for (let i = 0; i < r; i++) q[i * r + i] = 1;
  for (let k = r - 1; k >= 0; k--) {
    const v = vs[k]!;
    const vtv = vtvs[k]!;
    if (vtv === 0) continue;
    for (let j = 0; j < r; j++) {
      let dot = 0;
      for (let i = k; i < m; i++) dot += v[i - k]! * q[i * r + j]!;
      const f = (2 * dot) / vtv;
      for (let i = k; i < m; i++) q[i * r + j]! -= f * v[i - k]!;
    }
  }
  return { Q: Matrix.from1DArray(m, r, q), R };
}

/** ‖a‖_F. */
export function frobenius(a: Matrix): number {
  let s = 0;
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.columns; j++) s += a.get(i, j) ** 2;
  return Math.sqrt(s);
}

export interface DampedCovariance {
  /** C + damp · mean(diag C) · I */
  Cd: Matrix;
  Cinv: Matrix;
  damp: number;
  /** ‖C_d C_d⁻¹ − I‖_F at the accepted damping. */
  invError: number;
  /** Doublings tried (1 = the first damping was accepted). */
  tries: number;
}

/**
 * CorDA's damping (PEFT `collect_eigens_for_layer`): d = 0.01, doubled until ‖C_d C_d⁻¹ − I‖_F < 0.05,
 * with C_d = C + d·mean(diag C)·I. Throws after `maxTries` doublings (PEFT loops forever) or when
 * mean(diag C) is not positive (an all-zero covariance cannot be damped). The check runs in float64
 * (PEFT's in float32, where a large ill-conditioned C can need more doublings than here).
 */
export function dampCovariance(C: Matrix, opts: { damp?: number; tol?: number; maxTries?: number } = {}): DampedCovariance {
  const n = C.rows;
  if (C.columns !== n) throw new RangeError(`covariance must be square, got [${C.rows}, ${C.columns}]`);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += C.get(i, i);
  mean /= n;
  if (!(mean > 0) || !Number.isFinite(mean)) throw new RangeError(`covariance has mean diagonal ${mean}: the calibration inputs of this layer are all zero or not finite`);
  const tol = opts.tol ?? 0.05;
  const maxTries = opts.maxTries ?? 64;
  let damp = opts.damp ?? 0.01;
  for (let tries = 1; tries <= maxTries; tries++) {
    const Cd = C.clone();
    for (let i = 0; i < n; i++) Cd.set(i, i, C.get(i, i) + mean * damp);
    let Cinv: Matrix | undefined;
    let err = Infinity;
    try {
      Cinv = inverse(Cd);
      const P = Cd.mmul(Cinv);
      for (let i = 0; i < n; i++) P.set(i, i, P.get(i, i) - 1);
      err = frobenius(P);
    } catch {
      err = Infinity; // singular to working precision: damp more
    }
    if (Cinv && err < tol) return { Cd, Cinv, damp, invError: err, tries };
    damp *= 2;
  }
  throw new RangeError(`covariance damping did not converge after ${maxTries} doublings (‖C_d C_d⁻¹ − I‖_F ≥ ${tol})`);
}

/** The listed columns of a matrix, in that order. */
export function cols(a: Matrix, idx: readonly number[]): Matrix {
  const out = new Matrix(a.rows, idx.length);
  idx.forEach((c, j) => {
    for (let i = 0; i < a.rows; i++) out.set(i, j, a.get(i, c));
  });
  return out;
}

export function range(from: number, to: number, step = 1): number[] {
  const out: number[] = [];
  for (let i = from; i < to; i += step) out.push(i);
  return out;
}

/**
 * Randomised truncated SVD as `torch.svd_lowrank(a, q, niter)` computes it (Halko et al. 2009,
 * algorithm 5.1 with `get_approximate_basis`' QR re-orthonormalisation): a wide matrix is handled
 * through its transpose, Q = basis of range(a·R) refined by `niter` subspace iterations, then the
 * exact SVD of Qᵀa. `gaussian` supplies the N(0, 1) entries of R (torch draws them from its global
 * generator, which cannot be reproduced here). Returns q components, sign-normalised like `thinSvd`.
 */
export function svdLowRank(a: Matrix, q: number, niter: number, gaussian: () => number): ThinSvd {
  const wide = a.rows < a.columns;
  const A = wide ? a.transpose() : a;
  const n = A.columns;
  const R = new Matrix(n, q);
  for (let i = 0; i < n; i++) for (let j = 0; j < q; j++) R.set(i, j, gaussian());
  const At = A.transpose();
  let Q = thinQr(A.mmul(R)).Q;
  for (let it = 0; it < niter; it++) {
    Q = thinQr(At.mmul(Q)).Q;
    Q = thinQr(A.mmul(Q)).Q;
  }
  const small = thinSvd(Q.transpose().mmul(A)); // [q, n] = Ub S Vᵀ
  const U = Q.mmul(small.U);
  return wide ? normaliseSigns({ U: small.V, S: small.S, V: U }) : { U, S: small.S, V: small.V };
}

/** Flips each component so the largest-magnitude entry of V's column is positive. */
function normaliseSigns(d: ThinSvd): ThinSvd {
  const U = d.U.clone();
  const V = d.V.clone();
  for (let k = 0; k < V.columns; k++) {
    let big = 0;
    let sign = 1;
    for (let i = 0; i < V.rows; i++) {
      const v = V.get(i, k);
      if (Math.abs(v) > big) {
        big = Math.abs(v);
        sign = v < 0 ? -1 : 1;
      }
    }
    if (sign < 0) {
      for (let i = 0; i < U.rows; i++) U.set(i, k, -U.get(i, k));
      for (let i = 0; i < V.rows; i++) V.set(i, k, -V.get(i, k));
    }
  }
  return { U, S: d.S, V };
}
