/**
 * HRA (Householder reflection adaptation; Yuan et al., 2024) as Hugging Face PEFT computes it
 * (`hra/layer.py`): a linear module's weight is multiplied on its input side by r Householder
 * reflections of the trained columns uᵢ of `hra_u` [in, r] (normalised),
 *
 *   W' = W · H,   H = (I − 2u₀u₀ᵀ)(I − 2u₁u₁ᵀ)…(I − 2u_{r−1}u_{r−1}ᵀ)
 *
 * or, with apply_GS, H = I − 2UUᵀ for U the Gram–Schmidt orthonormalisation of the columns. PEFT
 * forms H (in × in); here x·Hᵀ is applied one reflection at a time (N·in per reflection). PEFT's
 * init repeats each of r/2 Kaiming-uniform columns twice, so the reflections cancel (H = I; not
 * with Gram–Schmidt: see hraInit).
 * A layer scale f uses the reflections I − 2f·uuᵀ (0: the identity), inverted exactly to unmerge.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../models/architecture';
import { currentWeight, setMerged, type AdapterCore, type MergePart } from './core';
import { kaimingUniform } from './lycoris';

export const hraName = (module: string) => `${module}.hra_u`;

export interface HraModule {
  info: LinearModuleInfo;
  r: number;
  /** Gram–Schmidt (PEFT's apply_GS). */
  gs: boolean;
  /** [in, r]; PEFT's init when absent. */
  u?: tf.Tensor2D;
}

/**
 * PEFT's init: r/2 Kaiming-uniform columns, each twice (H = I); an odd r: r independent columns. With
 * Gram–Schmidt, independent columns too: a repeated column has no direction left after the
 * orthogonalisation (PEFT's then comes from rounding noise), and H = I − 2UUᵀ is never I anyway.
 */
export function hraInit(inFeatures: number, r: number, seed: number, gs = false): tf.Tensor2D {
  if (r % 2 !== 0 || gs) return kaimingUniform([inFeatures, r], seed);
  return tf.tidy(() => {
    const half = kaimingUniform([inFeatures, r / 2], seed);
    return tf.reshape(tf.stack([half, half], 2), [inFeatures, r]) as tf.Tensor2D;
  });
}

/** The unit vectors the reflections use: the normalised columns, or their Gram–Schmidt basis. Rows [r, in]. */
function directions(u: tf.Tensor2D, gs: boolean): tf.Tensor2D {
  return tf.tidy(() => {
    const cols = tf.transpose(u) as tf.Tensor2D; // [r, in]
    if (!gs) return tf.div(cols, tf.norm(cols, 'euclidean', 1, true)) as tf.Tensor2D;
    const basis: tf.Tensor2D[] = [];
    for (let i = 0; i < cols.shape[0]; i++) {
      let v = tf.slice(cols, [i, 0], [1, -1]) as tf.Tensor2D;
      for (const b of basis) v = tf.sub(v, tf.mul(tf.sum(tf.mul(b, v)), b));
      basis.push(tf.div(v, tf.norm(v)) as tf.Tensor2D);
    }
    return tf.concat(basis, 0) as tf.Tensor2D;
  });
}

/**
 * rows · M for M = H, Hᵀ or H⁻¹, rows [N, in], with the reflection strength c = 2f. Each factor
 * I − c·uuᵀ is symmetric: H = H₀…H_{r−1} applies them in order to a row, Hᵀ in the reverse order,
 * and H⁻¹ in the reverse order with (I − c·uuᵀ)⁻¹ = I + c/(1 − c)·uuᵀ (u a unit vector). With
 * Gram–Schmidt, H = I − c·UUᵀ for orthonormal U, inverted the same way.
 */
function times(rows: tf.Tensor2D, dirs: tf.Tensor2D, gs: boolean, c: number, m: 'H' | 'Ht' | 'Hinv'): tf.Tensor2D {
  if (m === 'Hinv' && Math.abs(1 - c) < 1e-6) throw new Error('HRA cannot be unmerged at a layer scale of 0.5: its scaled reflections are singular there');
  const k = m === 'Hinv' ? -c / (1 - c) : c;
  if (gs) return tf.sub(rows, tf.mul(tf.matMul(tf.matMul(rows, dirs, false, true), dirs), k)) as tf.Tensor2D;
  const r = dirs.shape[0];
  let out = rows;
  for (let t = 0; t < r; t++) {
    const d = tf.slice(dirs, [m === 'H' ? t : r - 1 - t, 0], [1, -1]);
    out = tf.sub(out, tf.mul(tf.matMul(tf.matMul(out, d, false, true), d), k)) as tf.Tensor2D;
  }
  return out;
}

/** Registers the modules' `hra_u` (trainable), hooks and merge part on `core`; takes ownership of the tensors. */
export function addHra(core: AdapterCore, modules: HraModule[], seed: number): void {
  modules.forEach((mod, i) => {
    const { module: m, layer, inFeatures } = mod.info;
    const name = hraName(m);
    core.addTrainable(name, mod.u ?? hraInit(inFeatures, mod.r, seed + 2 * i, mod.gs), layer);
    core.addLinearHook(m, (x, _layer, base, f) => {
      const factor = core.scaleOf(layer);
      if (factor === 0) return base(x);
      // y = x·(W·H)ᵀ + b = base(x·Hᵀ)
      return base(times(x, directions(core.get(f, name) as tf.Tensor2D, mod.gs), mod.gs, 2 * factor, 'Ht'));
    });
  });
  /** W' = W·H (unmerging: W = W'·H⁻¹), for W [out, in] (Conv1D stores Wᵀ). */
  const fold = (w: tf.Tensor, mod: HraModule, inverse: boolean) =>
    tf.tidy(() => {
      const dirs = directions(core.tensor(hraName(mod.info.module)) as tf.Tensor2D, mod.gs);
      const outIn = (mod.info.fanInFanOut ? tf.transpose(w) : w) as tf.Tensor2D;
      const turned = times(outIn, dirs, mod.gs, 2 * core.scaleOf(mod.info.layer), inverse ? 'Hinv' : 'H');
      return mod.info.fanInFanOut ? tf.transpose(turned) : turned;
    });
  const part: MergePart = {
    merge(out) {
      for (const mod of modules) {
        const name = `${mod.info.module}.weight`;
        setMerged(out, name, fold(currentWeight(core, out, name)!, mod, false));
      }
    },
    unmerge(out) {
      for (const mod of modules) {
        const name = `${mod.info.module}.weight`;
        const w = out.get(name);
        if (w) setMerged(out, name, fold(w, mod, true));
      }
    },
  };
  core.mergeParts.push(part);
}
