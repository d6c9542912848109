/**
 * VeRA (Kopiczko et al., 2024) as Hugging Face PEFT computes it (`vera/layer.py`, `vera/model.py`):
 * one pair of frozen random projections A [r, in_max], B [out_max, r] shared by every targeted
 * module, and per module two trained vectors, λ_d [r] and λ_b [out]:
 *
 *   y = base(x) + λ_b ⊙ (B[:out] · (λ_d ⊙ (A[:, :in] · dropout(x))))
 *
 * Init (PEFT's): A and B Kaiming-uniform with gain √2 (bound √(6 / fan_in)), λ_b = 0, λ_d = 0.1.
 * PEFT draws A and B from torch's generator; PEFT Lab from its own seeded one, and saves them in
 * the adapter file (PEFT's save_projection), which is how PEFT then gets them.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../models/architecture';
import { additiveMergePart, type AdapterCore } from './core';

export const VERA_A = 'vera_A';
export const VERA_B = 'vera_B';
export const VERA_D_INITIAL = 0.1;

export const veraNames = (module: string) => ({ b: `${module}.vera_lambda_b`, d: `${module}.vera_lambda_d` });

export interface VeraModule {
  info: LinearModuleInfo;
  /** [out]; zeros when absent. */
  lambdaB?: tf.Tensor1D;
  /** [r]; VERA_D_INITIAL when absent. */
  lambdaD?: tf.Tensor1D;
}

export interface VeraOptions {
  r: number;
  dropout: number;
}

/** The shared projections' shapes: the largest in and out over the targeted modules (PEFT's _find_dim). */
export function veraProjectionShapes(infos: readonly LinearModuleInfo[], r: number): { A: [number, number]; B: [number, number] } {
  const inMax = Math.max(...infos.map((i) => i.inFeatures));
  const outMax = Math.max(...infos.map((i) => i.outFeatures));
  return { A: [r, inMax], B: [outMax, r] };
}

/** PEFT's `_kaiming_init` (gain √2) for the shared projections, from a seed. */
export function veraProjections(infos: readonly LinearModuleInfo[], r: number, seed: number): { A: tf.Tensor2D; B: tf.Tensor2D } {
  const shapes = veraProjectionShapes(infos, r);
  const uniform = (shape: [number, number], s: number) => {
    const bound = Math.sqrt(6 / shape[1]);
    return tf.randomUniform(shape, -bound, bound, 'float32', s) as tf.Tensor2D;
  };
  return { A: uniform(shapes.A, seed), B: uniform(shapes.B, seed + 1) };
}

/**
 * Registers the projections (frozen), each module's λ vectors (trainable), hooks and merge part on
 * `core`; takes ownership of the tensors.
 */
export function addVera(core: AdapterCore, projections: { A: tf.Tensor2D; B: tf.Tensor2D }, modules: VeraModule[], opts: VeraOptions): void {
  const { r } = opts;
  core.addFrozen(VERA_A, projections.A, -1);
  core.addFrozen(VERA_B, projections.B, -1);
  modules.forEach((mod, index) => {
    const { module: m, layer, inFeatures, outFeatures } = mod.info;
    const n = veraNames(m);
    core.addTrainable(n.b, mod.lambdaB ?? tf.zeros([outFeatures]), layer);
    core.addTrainable(n.d, mod.lambdaD ?? tf.fill([r], VERA_D_INITIAL), layer);
    core.addLinearHook(m, (x, _layer, base, f) => {
      const y = base(x);
      const factor = core.scaleOf(layer);
      if (factor === 0) return y;
      const A = tf.slice(core.get(f, VERA_A), [0, 0], [r, inFeatures]);
      const B = tf.slice(core.get(f, VERA_B), [0, 0], [outFeatures, r]);
      const xd = f.training && opts.dropout > 0 ? (tf.dropout(x, opts.dropout, undefined, core.stepSeed(index)) as tf.Tensor2D) : x;
      const h = tf.mul(tf.matMul(xd, A, false, true), core.get(f, n.d));
      const lambdaB = factor === 1 ? core.get(f, n.b) : tf.mul(core.get(f, n.b), factor);
      return tf.add(y, tf.mul(tf.matMul(h, B, false, true), lambdaB));
    });
  });
  /** f·ΔW = f·(λ_b ⊙ B)·(λ_d ⊙ A) in the module's stored layout. */
  const stored = (mod: VeraModule) => {
    const { module: m, inFeatures, outFeatures, fanInFanOut } = mod.info;
    const n = veraNames(m);
    const B = tf.mul(tf.slice(core.tensor(VERA_B), [0, 0], [outFeatures, r]), tf.reshape(core.tensor(n.b), [-1, 1]));
    const A = tf.mul(tf.slice(core.tensor(VERA_A), [0, 0], [r, inFeatures]), tf.reshape(core.tensor(n.d), [-1, 1]));
    const d = tf.mul(tf.matMul(B, A), core.scaleOf(mod.info.layer));
    return fanInFanOut ? tf.transpose(d) : d;
  };
  core.mergeParts.push(additiveMergePart(core, modules, stored));
}
