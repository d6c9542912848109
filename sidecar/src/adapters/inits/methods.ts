/**
 * LoRA initialisations, one target module at a time, as Hugging Face PEFT 0.21 computes them
 * (`LoraLayer.pissa_init`, `olora_init`, `corda_init`, `lora_ga_init`, `reset_lora_parameters`), in
 * float64. Each returns A [r, in], B [out, r] (float32, row-major) and the residual W − s·B·A that
 * replaces the frozen base weight, in the weight's stored layout. As in PEFT, the residual is taken
 * with A and B already rounded to float32, so residual + s·B·A reproduces W to float32 rounding.
 */
import {
  cols,
  dampCovariance,
  Matrix,
  outInMatrix,
  qrLeading,
  range,
  roundToFloat32,
  svdLowRank,
  thinSvd,
  toFloat32,
  toStored,
  type DampedCovariance,
  type LoraInitResult,
  type StoredWeight,
} from './linalg';
import { mulberry32 } from '../../train/rng';

export { mulberry32 };

export type { LoraInitResult, StoredWeight } from './linalg';

function checkRank(w: StoredWeight, r: number, method: string, factor = 1): void {
  if (!Number.isInteger(r) || r <= 0) throw new RangeError(`${method}: rank r must be a positive integer, got ${r}`);
  const k = Math.min(w.outFeatures, w.inFeatures);
  if (factor * r > k)
    throw new RangeError(
      factor === 1
        ? `${method}: rank r=${r} exceeds min(out, in) = min(${w.outFeatures}, ${w.inFeatures}) = ${k}`
        : `${method}: needs ${factor}·r = ${factor * r} singular components but min(out, in) = min(${w.outFeatures}, ${w.inFeatures}) = ${k}; use r ≤ ${Math.floor(k / factor)}`,
    );
}

function checkScale(scale: number, method: string): void {
  if (!Number.isFinite(scale) || scale === 0) throw new RangeError(`${method}: scale s = α/r must be finite and non-zero, got ${scale}`);
}

/** Packs A, B (rounded to float32) and the residual W − s·B·A in the stored layout. */
function finish(W: Matrix, A: Matrix, B: Matrix, scale: number, fanInFanOut: boolean | undefined): LoraInitResult {
  const A32 = roundToFloat32(A);
  const B32 = roundToFloat32(B);
  const residual = W.clone().sub(B32.mmul(A32).mul(scale));
  return { A: toFloat32(A32), B: toFloat32(B32), residual: toStored(residual, fanInFanOut) };
}

/** diag(d) · M (scales rows). */
function scaleRows(m: Matrix, d: ArrayLike<number>): Matrix {
  const out = m.clone();
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.columns; j++) out.set(i, j, m.get(i, j) * d[i]!);
  return out;
}

/** M · diag(d) (scales columns). */
function scaleCols(m: Matrix, d: ArrayLike<number>): Matrix {
  const out = m.clone();
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.columns; j++) out.set(i, j, m.get(i, j) * d[j]!);
  return out;
}

/**
 * PiSSA (`init_lora_weights="pissa"`, exact SVD): W = U S Vᵀ, S_r /= s, A = √S_r V_rᵀ, B = U_r √S_r,
 * so s·B·A = U_r S_r V_rᵀ; residual W − s·B·A.
 */
export function pissaInit(w: StoredWeight, r: number, scale: number): LoraInitResult {
  checkRank(w, r, 'PiSSA');
  checkScale(scale, 'PiSSA');
  const W = outInMatrix(w);
  const { U, S, V } = thinSvd(W);
  const idx = range(0, r);
  const sqrtS = idx.map((i) => Math.sqrt(S[i]! / scale));
  const A = scaleRows(cols(V, idx).transpose(), sqrtS);
  const B = scaleCols(cols(U, idx), sqrtS);
  return finish(W, A, B, scale, w.fanInFanOut);
}

/**
 * OLoRA: reduced QR W = Q R; B = Q[:, :r], A = R[:r] unscaled (PEFT does not divide by s), residual
 * W − s·B·A. The QR is taken of the [out, in] matrix. For a GPT-2 Conv1D PEFT factorises the
 * stored [in, out] matrix instead, which yields A [r, out] and B [in, r] (wrong shapes for the
 * layer); we do not reproduce that.
 */
export function oloraInit(w: StoredWeight, r: number, scale: number): LoraInitResult {
  checkRank(w, r, 'OLoRA');
  checkScale(scale, 'OLoRA');
  const W = outInMatrix(w);
  const { Q: B, R: A } = qrLeading(W, r); // Q[:, :r], R[:r]
  return finish(W, A, B, scale, w.fanInFanOut);
}

export type CordaMode = 'ipm' | 'kpm';

export interface CordaDecomposition extends DampedCovariance {
  /** [out, k] */
  U: Matrix;
  /** k values, descending: singular values of W·C_d. */
  S: Float64Array;
  /** [in, k]: V̂ = (Vh C_d⁻¹)ᵀ, so W = U diag(S) V̂ᵀ. */
  V: Matrix;
}

/**
 * CorDA's context-oriented decomposition (PEFT `collect_eigens_for_layer`): damp C, SVD of W·C_d,
 * V̂ = (Vh·C_d⁻¹)ᵀ. `covariance` is [in, in] row-major.
 */
export function cordaDecompose(w: StoredWeight, covariance: ArrayLike<number>): CordaDecomposition {
  const n = w.inFeatures;
  if (covariance.length !== n * n) throw new RangeError(`CorDA: covariance has ${covariance.length} elements, expected in² = ${n * n}`);
  const W = outInMatrix(w);
  const C = Matrix.from1DArray(n, n, Array.from(covariance));
  const damped = dampCovariance(C);
  const { U, S, V } = thinSvd(W.mmul(damped.Cd));
  // V̂ = (Vh C_d⁻¹)ᵀ = C_d⁻ᵀ V
  const Vhat = damped.Cinv.transpose().mmul(V);
  return { ...damped, U, S, V: Vhat };
}

/**
 * CorDA: IPM keeps the first r components of W = U S V̂ᵀ (and trains them), KPM the last r.
 * S /= s, A = √S V̂_rᵀ, B = U_r √S, residual W − s·B·A.
 */
export function cordaInit(w: StoredWeight, r: number, scale: number, mode: CordaMode, covariance: ArrayLike<number>): LoraInitResult {
  const method = `CorDA-${mode.toUpperCase()}`;
  if (mode !== 'ipm' && mode !== 'kpm') throw new RangeError(`CorDA: mode must be 'ipm' or 'kpm', got '${String(mode)}'`);
  checkRank(w, r, method);
  checkScale(scale, method);
  const { U, S, V } = cordaDecompose(w, covariance);
  const k = S.length;
  const idx = mode === 'ipm' ? range(0, r) : range(k - r, k);
  for (const i of idx) if (!Number.isFinite(S[i]!)) throw new RangeError(`${method}: non-finite singular value`);
  const sqrtS = idx.map((i) => Math.sqrt(S[i]! / scale));
  const A = scaleRows(cols(V, idx).transpose(), sqrtS);
  const B = scaleCols(cols(U, idx), sqrtS);
  return finish(outInMatrix(w), A, B, scale, w.fanInFanOut);
}

export type LoraGaDirection = 'ArBr' | 'A2rBr' | 'ArB2r' | 'random';
export type LoraGaScale = 'stable' | 'weight_svd' | 'gd_scale' | 'unit';

/** PEFT's `LoraGAConfig`. */
export interface LoraGaOptions {
  direction?: LoraGaDirection;
  scale?: LoraGaScale;
  stableGamma?: number;
  /**
   * "lowrank" (default): PEFT's `torch.svd_lowrank(G, q=min(4r, min(G.shape)), niter=4)`, with our
   * own seeded Gaussian test matrix; "exact": the full SVD (what the randomised one converges to).
   */
  svd?: 'lowrank' | 'exact';
  /** Seeds the randomised SVD and direction "random" (PEFT uses torch's global generator). */
  seed?: number;
}

export const LORA_GA_DEFAULTS = { direction: 'ArB2r', scale: 'stable', stableGamma: 16 } as const;

/**
 * LoRA-GA (PEFT `lora_ga_init`): G = the weight's gradient (stored layout, like the weight),
 * U S Vᵀ = svd(G) truncated to 2r components. "ArB2r": A = Vᵀ[:r], B = U[:, r:2r]·diag(S[r:2r]).
 * Scale "stable": B *= d^{1/4}/√γ with d = the weight's first stored dimension (out for Linear;
 * PEFT reads `weight.shape[0]`, which is `in` for a Conv1D). Residual W − s·B·A.
 * The SVD is PEFT's randomised `svd_lowrank` (q = min(4r, min(out, in)), 4 subspace iterations) on a
 * seeded test matrix, or the exact SVD with `svd: 'exact'`. Where the gradient's spectrum decays
 * slowly the randomised components differ from the exact ones (and between random streams).
 */
export function loraGaInit(w: StoredWeight, grad: ArrayLike<number>, r: number, scale: number, opts: LoraGaOptions = {}): LoraInitResult {
  checkRank(w, r, 'LoRA-GA', 2);
  checkScale(scale, 'LoRA-GA');
  const direction = opts.direction ?? LORA_GA_DEFAULTS.direction;
  const how = opts.scale ?? LORA_GA_DEFAULTS.scale;
  const gamma = opts.stableGamma ?? LORA_GA_DEFAULTS.stableGamma;
  const G = outInMatrix({ ...w, data: grad }, 'LoRA-GA gradient');
  for (let i = 0; i < G.rows; i++) for (let j = 0; j < G.columns; j++) if (!Number.isFinite(G.get(i, j))) throw new RangeError('LoRA-GA: the gradient has non-finite entries');
  const rand = mulberry32(opts.seed ?? 0);
  const q = Math.min(4 * r, G.rows, G.columns);
  const { U, S, V } = (opts.svd ?? 'lowrank') === 'exact' ? thinSvd(G) : svdLowRank(G, q, 4, () => gaussian(rand));
  let aIdx: number[];
  let bIdx: number[];
  switch (direction) {
    case 'ArBr':
      aIdx = range(1, 2 * r, 2);
      bIdx = range(0, 2 * r, 2);
      break;
    case 'A2rBr':
      aIdx = range(r, 2 * r);
      bIdx = range(0, r);
      break;
    case 'ArB2r':
      aIdx = range(0, r);
      bIdx = range(r, 2 * r);
      break;
    case 'random': {
      const perm = permutation(2 * r, rand).slice(0, r);
      aIdx = perm;
      bIdx = perm;
      break;
    }
    default:
      throw new RangeError(`LoRA-GA: unknown direction '${String(direction)}' (ArBr, A2rBr, ArB2r, random)`);
  }
  const sB = bIdx.map((i) => S[i]!);
  let A = cols(V, aIdx).transpose();
  let B = scaleCols(cols(U, bIdx), sB);
  switch (how) {
    case 'stable': {
      if (!(gamma > 0)) throw new RangeError(`LoRA-GA: stable_gamma must be positive, got ${gamma}`);
      const storedRows = w.fanInFanOut ? w.inFeatures : w.outFeatures; // PEFT: weight.shape[0]
      B = B.mul(storedRows ** 0.25 / Math.sqrt(gamma));
      break;
    }
    case 'weight_svd': {
      const top = thinSvd(outInMatrix(w)).S[0]!;
      if (sB[0]! > 0) B = B.mul(top / sB[0]!);
      break;
    }
    case 'gd_scale':
      A = A.div(scale);
      B = B.div(scale);
      break;
    case 'unit':
      break;
    default:
      throw new RangeError(`LoRA-GA: unknown scale '${String(how)}' (stable, weight_svd, gd_scale, unit)`);
  }
  return finish(outInMatrix(w), A, B, scale, w.fanInFanOut);
}

/**
 * PEFT's default LoRA init (`init_lora_weights=True`): A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in),
 * B = 0; "gaussian": A ~ N(0, (1/r)²), B = 0. The base weight is unchanged (residual = W). The random
 * numbers come from a seeded generator of our own (PEFT draws from torch's).
 */
export function randomInit(w: StoredWeight, r: number, kind: 'default' | 'gaussian', seed = 0): LoraInitResult {
  if (!Number.isInteger(r) || r <= 0) throw new RangeError(`LoRA: rank r must be a positive integer, got ${r}`);
  const n = w.inFeatures;
  const rand = mulberry32(seed);
  const A = new Float32Array(r * n);
  if (kind === 'gaussian') {
    const std = 1 / r;
    for (let i = 0; i < A.length; i++) A[i] = std * gaussian(rand);
  } else {
    const bound = 1 / Math.sqrt(n);
    for (let i = 0; i < A.length; i++) A[i] = (2 * rand() - 1) * bound;
  }
  return { A, B: new Float32Array(w.outFeatures * r), residual: Float32Array.from(w.data) };
}

function gaussian(rand: () => number): number {
  let u = 0;
  while (u === 0) u = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

function permutation(n: number, rand: () => number): number[] {
  const p = range(0, n);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}
