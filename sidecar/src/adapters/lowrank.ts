/**
 * Decomposition-based adapters that train a few numbers of a fixed factorisation of W, written as
 * an additive update on the frozen weight so the base stays untouched:
 *
 *   SVFit:  W = U S Vᵀ; train the top-r singular values s (init S_r):  W' = W + U_r diag(s − S_r) V_rᵀ
 *   LoLDU:  P·W_r = L D U (W_r = top-r SVD part of W when r is given, else W itself; partial pivoting,
 *           L unit lower, U unit upper); train D (init diag of the LU) and a scalar σ (init 1):
 *           W' = W + Pᵀ L diag(σ·d − D₀) U
 *
 * Both are zero at init and merge exactly.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../models/architecture';
import type { LinearHook } from '../models/forward';
import { currentWeight, setMerged, type AdapterCore } from './core';
import { Matrix, outInMatrix, thinSvd } from './inits/linalg';

export const svfitNames = (m: string) => ({ s: `${m}.svfit_s`, s0: `${m}.svfit_s0`, u: `${m}.svfit_u`, vt: `${m}.svfit_vt` });
export const lolduNames = (m: string) => ({ d: `${m}.loldu_d`, scale: `${m}.loldu_scale`, d0: `${m}.loldu_d0`, l: `${m}.loldu_l`, u: `${m}.loldu_u` });

/** A module's update in factored form: left [out, k], right [k, in] and the k-vector between them. */
interface Factored {
  info: LinearModuleInfo;
  left: string;
  right: string;
  /** The diagonal's current offset from its init, as tensors of the forward (or host) values. */
  diag: (get: (name: string) => tf.Tensor) => tf.Tensor;
}

async function outInOf(core: AdapterCore, info: LinearModuleInfo): Promise<Matrix> {
  const w = core.baseParam(`${info.module}.weight`)!;
  return outInMatrix({ data: await w.data(), outFeatures: info.outFeatures, inFeatures: info.inFeatures, fanInFanOut: info.fanInFanOut }, info.module);
}

function toTensor(m: Matrix): tf.Tensor2D {
  const data = new Float32Array(m.rows * m.columns);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.columns; j++) data[i * m.columns + j] = m.get(i, j);
  return tf.tensor2d(data, [m.rows, m.columns]);
}

export async function addSvfit(core: AdapterCore, modules: LinearModuleInfo[], r: number): Promise<void> {
  const parts: Factored[] = [];
  for (const info of modules) {
    const k = Math.min(r, info.inFeatures, info.outFeatures);
    const { U, S, V } = thinSvd(await outInOf(core, info));
    const n = svfitNames(info.module);
    const s0 = Float32Array.from(S.subarray(0, k));
    core.addFrozen(n.u, toTensor(U.subMatrix(0, U.rows - 1, 0, k - 1)), info.layer);
    core.addFrozen(n.vt, toTensor(V.subMatrix(0, V.rows - 1, 0, k - 1).transpose()), info.layer);
    core.addFrozen(n.s0, tf.tensor1d(s0), info.layer);
    core.addTrainable(n.s, tf.tensor1d(s0), info.layer);
    parts.push({ info, left: n.u, right: n.vt, diag: (get) => tf.sub(get(n.s), get(n.s0)) });
  }
  addFactored(core, parts);
}

/** LDU with partial pivoting of an [m, n] matrix over its first k pivots: A = Pᵀ L diag(D) U. */
export function ldu(a: Matrix, k: number): { PtL: Matrix; D: Float64Array; U: Matrix } {
  const m = a.rows;
  const n = a.columns;
  const A = a.to2DArray();
  const L = Array.from({ length: m }, () => new Float64Array(k));
  const perm = Array.from({ length: m }, (_, i) => i);
  let scale = 0;
  for (const row of A) for (const v of row) scale = Math.max(scale, Math.abs(v));
  for (let j = 0; j < k; j++) {
    let p = j;
    for (let i = j + 1; i < m; i++) if (Math.abs(A[i]![j]!) > Math.abs(A[p]![j]!)) p = i;
    if (!(Math.abs(A[p]![j]!) > 1e-12 * scale)) throw new Error(`LDU: pivot ${j} is zero (the matrix has rank < ${k} in its leading columns); use a smaller r`);
    if (p !== j) {
      [A[p], A[j]] = [A[j]!, A[p]!];
      [L[p], L[j]] = [L[j]!, L[p]!];
      [perm[p], perm[j]] = [perm[j]!, perm[p]!];
    }
    const pivotRow = A[j]!;
    for (let i = j + 1; i < m; i++) {
      const row = A[i]!;
      const f = row[j]! / pivotRow[j]!;
      L[i]![j] = f;
      if (f !== 0) for (let c = j; c < n; c++) row[c]! -= f * pivotRow[c]!;
    }
  }
  const D = new Float64Array(k);
  const U = new Matrix(k, n);
  for (let j = 0; j < k; j++) {
    D[j] = A[j]![j]!;
    for (let c = 0; c < n; c++) U.set(j, c, c < j ? 0 : A[j]![c]! / D[j]!);
  }
  const PtL = new Matrix(m, k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) PtL.set(perm[i]!, j, i === j ? 1 : j < i ? L[i]![j]! : 0);
  return { PtL, D, U };
}

export async function addLoldu(core: AdapterCore, modules: LinearModuleInfo[], r: number | undefined): Promise<void> {
  const parts: Factored[] = [];
  for (const info of modules) {
    let W = await outInOf(core, info);
    const full = Math.min(info.inFeatures, info.outFeatures);
    const k = Math.min(r ?? full, full);
    if (r !== undefined) {
      // The top-r part of W: U_r S_r V_rᵀ.
      const { U, S, V } = thinSvd(W);
      const Ur = U.subMatrix(0, U.rows - 1, 0, k - 1);
      for (let j = 0; j < k; j++) for (let i = 0; i < Ur.rows; i++) Ur.set(i, j, Ur.get(i, j) * S[j]!);
      W = Ur.mmul(V.subMatrix(0, V.rows - 1, 0, k - 1).transpose());
    }
    const { PtL, D, U } = ldu(W, k);
    const n = lolduNames(info.module);
    const d0 = Float32Array.from(D);
    core.addFrozen(n.l, toTensor(PtL), info.layer);
    core.addFrozen(n.u, toTensor(U), info.layer);
    core.addFrozen(n.d0, tf.tensor1d(d0), info.layer);
    core.addTrainable(n.d, tf.tensor1d(d0), info.layer);
    core.addTrainable(n.scale, tf.ones([1]), info.layer);
    parts.push({ info, left: n.l, right: n.u, diag: (get) => tf.sub(tf.mul(get(n.d), get(n.scale)), get(n.d0)) });
  }
  addFactored(core, parts);
}

/** Hooks and merge for W' = W + left · diag(δ) · right. */
function addFactored(core: AdapterCore, parts: Factored[]): void {
  for (const p of parts) {
    const hook: LinearHook = (x, _layer, base, f) => {
      const y = base(x);
      const factor = core.scaleOf(p.info.layer);
      if (factor === 0) return y;
      let dg = p.diag((n) => core.get(f, n));
      if (factor !== 1) dg = tf.mul(dg, factor);
      const h = tf.mul(tf.matMul(x, core.get(f, p.right), false, true), dg);
      return tf.add(y, tf.matMul(h, core.get(f, p.left), false, true)) as tf.Tensor2D;
    };
    core.addLinearHook(p.info.module, hook);
  }
  /** The update in the stored layout, at the layer scale. */
  const delta = (p: Factored) => {
    const dg = tf.mul(p.diag((n) => core.tensor(n)), core.scaleOf(p.info.layer));
    const d = tf.matMul(tf.mul(core.tensor(p.left), tf.reshape(dg, [1, -1])), core.tensor(p.right));
    return p.info.fanInFanOut ? tf.transpose(d) : d;
  };
  core.mergeParts.push({
    merge(out) {
      for (const p of parts) {
        const name = `${p.info.module}.weight`;
        const w = currentWeight(core, out, name)!;
        setMerged(out, name, tf.tidy(() => tf.add(w, delta(p))));
      }
    },
    unmerge(out) {
      for (const p of parts) {
        const name = `${p.info.module}.weight`;
        const w = out.get(name);
        if (w) setMerged(out, name, tf.tidy(() => tf.sub(w, delta(p))));
      }
    },
  });
}
