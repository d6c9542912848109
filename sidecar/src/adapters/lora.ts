/**
 * LoRA and DoRA on linear modules, as Hugging Face PEFT 0.21 computes them (`lora/layer.py`,
 * `lora/dora.py`, `lora/variants.py`):
 *
 *   LoRA:  y = base(x) + s · B(A(dropout(x)))                      s = α/r (rsLoRA: α/√r)
 *   DoRA:  y = base(x) + (m/‖W + s·BA‖ − 1) · (W x) + (m/‖W + s·BA‖) · s · B(A(dropout(x)))
 *          with the norm taken over the input dimension per output row and detached.
 *
 * The low-rank branch is computed on the flattened [N, in] input as (x·Aᵀ)·Bᵀ, never forming B·A
 * (DoRA needs B·A for its norm, as PEFT does).
 *
 * On a token embedding (PEFT's lora.Embedding): rows += s · Aᵀ[ids] · Bᵀ with `lora_embedding_A`
 * [r, vocab] (init 0) and `lora_embedding_B` [dim, r] (init N(0, 1)); no dropout, as in PEFT.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor } from '../io/safetensors';
import type { LinearModuleInfo } from '../models/architecture';
import type { LinearHook } from '../models/forward';
import { embedding } from '../models/ops';
import { additiveMergePart, currentWeight, setMerged, type AdapterCore, type MergePart } from './core';
import type { EmbeddingModuleInfo } from './targets';
import { tfSeed } from '../train/rng';

export interface LoraModule {
  info: LinearModuleInfo;
  r: number;
  alpha: number;
  scale: number;
  /** [r, in] */
  A: tf.Tensor2D;
  /** [out, r] */
  B: tf.Tensor2D;
  /** PEFT `lora_bias`: the bias of lora_B, [out]. */
  bias?: tf.Tensor1D;
  /** DoRA magnitude [out]; computed as ‖W + s·BA‖ per output row when absent. */
  magnitude?: tf.Tensor1D;
  /** Replacement of the frozen base weight (stored layout), from a data-aware init. */
  residual?: tf.Tensor2D;
  /** The init's A and B, kept to convert the export to the original base. */
  init?: { A: Float32Array; B: Float32Array };
}

export interface LoraOptions {
  dora: boolean;
  dropout: number;
}

export const loraNames = (module: string) => ({
  A: `${module}.lora_A.weight`,
  B: `${module}.lora_B.weight`,
  bias: `${module}.lora_B.bias`,
  magnitude: `${module}.lora_magnitude_vector`,
});

export interface LoraEmbeddingModule {
  info: EmbeddingModuleInfo;
  r: number;
  alpha: number;
  scale: number;
  /** [r, numEmbeddings] */
  A: tf.Tensor2D;
  /** [dim, r] */
  B: tf.Tensor2D;
}

export const loraEmbeddingNames = (module: string) => ({ A: `${module}.lora_embedding_A`, B: `${module}.lora_embedding_B` });

/** PEFT's init of a LoRA on an embedding: A = 0, B ~ N(0, 1) (for the default and gaussian inits alike). */
export function loraEmbeddingInit(info: EmbeddingModuleInfo, r: number, seed: number): { A: tf.Tensor2D; B: tf.Tensor2D } {
  return { A: tf.zeros([r, info.numEmbeddings]), B: tf.randomNormal([info.dim, r], 0, 1, 'float32', tfSeed(seed)) as tf.Tensor2D };
}

/** Registers LoRA on token embeddings (block −1); takes ownership of A and B. */
export function addLoraEmbeddings(core: AdapterCore, modules: LoraEmbeddingModule[]): void {
  for (const mod of modules) {
    const n = loraEmbeddingNames(mod.info.module);
    core.addTrainable(n.A, mod.A, -1);
    core.addTrainable(n.B, mod.B, -1);
    core.addEmbeddingHook(mod.info.module, (ids, base, paddingIdx, f) => {
      const y = base(ids);
      const s = mod.scale * core.scaleOf(-1);
      if (s === 0) return y;
      // Aᵀ's rows are looked up as the table's are (the padding row gets no gradient, as PEFT's F.embedding).
      const rows = embedding(tf.transpose(core.get(f, n.A)), ids, paddingIdx);
      return tf.add(y, tf.mul(tf.matMul(rows, core.get(f, n.B), false, true), s));
    });
  }
  // W [vocab, dim] += f·s·(B·A)ᵀ
  const fold = additiveMergePart(core, modules, (mod) => {
    const n = loraEmbeddingNames(mod.info.module);
    return tf.mul(tf.matMul(core.tensor(n.A), core.tensor(n.B), true, true), mod.scale * core.scaleOf(-1));
  });
  const tied = modules.map((m) => m.info.module).filter((m) => Object.values(core.model.aliases).includes(`${m}.weight`));
  core.mergeParts.push({
    merge(out) {
      // The adapter leaves the tied output head on the base table (as PEFT's does); a merged table would move it too.
      if (tied.length) throw new Error(`LoRA on the embedding ${tied[0]} cannot be merged: the output head shares its table, and would change with it (train the embedding with modulesToSave to change both)`);
      fold.merge(out);
    },
    unmerge: (out) => fold.unmerge(out),
  });
}

/** Stops gradients (PEFT's `.detach()`). */
const detach = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
  value: tf.clone(args[0] as tf.Tensor),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as (x: tf.Tensor) => tf.Tensor;

/** W as [out, in] whatever its stored layout. */
function outIn(w: tf.Tensor, fanInFanOut: boolean): tf.Tensor2D {
  return (fanInFanOut ? tf.transpose(w) : w) as tf.Tensor2D;
}

/** ‖W + s·B·A‖ over the input dimension, per output row ([out]). */
export function doraNorm(w: tf.Tensor, fanInFanOut: boolean, A: tf.Tensor, B: tf.Tensor, scale: number): tf.Tensor1D {
  return tf.tidy(() => tf.sqrt(tf.sum(tf.square(tf.add(outIn(w, fanInFanOut), tf.mul(tf.matMul(B, A), scale))), 1)) as tf.Tensor1D);
}

/**
 * Registers the modules' tensors, hooks and merge part on `core`. Takes ownership of the tensors
 * in `modules` (they are kept by the core and disposed with it).
 */
export function addLora(core: AdapterCore, modules: LoraModule[], opts: LoraOptions): void {
  modules.forEach((mod, index) => {
    const m = mod.info.module;
    const n = loraNames(m);
    const layer = mod.info.layer;
    if (mod.residual) core.addFrozen(`${m}.weight`, mod.residual, layer);
    core.addTrainable(n.A, mod.A, layer);
    core.addTrainable(n.B, mod.B, layer);
    if (mod.bias) core.addTrainable(n.bias, mod.bias, layer);
    if (opts.dora) {
      const mag =
        mod.magnitude ?? doraNorm(core.baseParam(`${m}.weight`)!, mod.info.fanInFanOut, mod.A, mod.B, mod.scale);
      core.addTrainable(n.magnitude, mag, layer);
    }
    core.addLinearHook(m, loraHook(core, mod, index, opts));
  });
  core.mergeParts.push(loraMergePart(core, modules, opts));
}

function loraHook(core: AdapterCore, mod: LoraModule, index: number, opts: LoraOptions): LinearHook {
  const n = loraNames(mod.info.module);
  const hasBias = mod.bias !== undefined;
  return (x, layer, base, f) => {
    const y = base(x);
    const factor = core.scaleOf(mod.info.layer);
    if (factor === 0 && !opts.dora) return y;
    const A = core.get(f, n.A);
    const B = core.get(f, n.B);
    const drop = f.training && opts.dropout > 0;
    const xd = drop ? (tf.dropout(x, opts.dropout, undefined, core.stepSeed(index)) as tf.Tensor2D) : x;
    if (!opts.dora) {
      const s = mod.scale * factor;
      let h = tf.matMul(xd, A, false, true);
      if (s !== 1) h = tf.mul(h, s);
      let lora = tf.matMul(h, B, false, true);
      if (hasBias) lora = tf.add(lora, s === 1 ? core.get(f, n.bias) : tf.mul(core.get(f, n.bias), s));
      return tf.add(y, lora);
    }
    // DoRA (PEFT's DoraLinearLayer.forward): the norm is detached, the base output reused unless dropout is active.
    // A layer scale multiplies the LoRA scaling s, norm included, as IST's probes scale PEFT's `scaling`.
    const s = mod.scale * factor;
    const W = layer.weight;
    const mag = core.get(f, n.magnitude);
    const norm = detach(doraNorm(W, layer.fanInFanOut, A, B, s));
    const k = tf.div(mag, norm);
    let lora = tf.matMul(tf.matMul(xd, A, false, true), B, false, true);
    if (hasBias) lora = tf.add(lora, core.get(f, n.bias));
    const baseNoBias = drop ? tf.matMul(xd, W, false, !layer.fanInFanOut) : layer.bias ? tf.sub(y, layer.bias) : y;
    const delta = tf.add(tf.mul(tf.sub(k, 1), baseNoBias), tf.mul(tf.mul(lora, k), s));
    return tf.add(y, delta) as tf.Tensor2D;
  };
}

function loraMergePart(core: AdapterCore, modules: LoraModule[], opts: LoraOptions): MergePart {
  /** f·s·B·A in the stored layout (f: the block's layer scale). */
  const delta = (mod: LoraModule, factor: number) => {
    const n = loraNames(mod.info.module);
    const d = tf.mul(tf.matMul(core.tensor(n.B), core.tensor(n.A)), mod.scale * factor);
    return mod.info.fanInFanOut ? tf.transpose(d) : d;
  };
  /** DoRA's per-output factor m / ‖W0 + f·s·BA‖, shaped to broadcast over the stored layout. */
  const doraFactor = (mod: LoraModule, w0: tf.Tensor, factor: number) => {
    const n = loraNames(mod.info.module);
    const k = tf.div(core.tensor(n.magnitude), doraNorm(w0, mod.info.fanInFanOut, core.tensor(n.A), core.tensor(n.B), mod.scale * factor));
    return mod.info.fanInFanOut ? tf.reshape(k, [1, -1]) : tf.reshape(k, [-1, 1]);
  };
  return {
    merge(out) {
      for (const mod of modules) {
        const m = mod.info.module;
        const factor = core.scaleOf(mod.info.layer);
        const w0 = currentWeight(core, out, `${m}.weight`)!;
        const merged = tf.tidy(() => {
          const d = delta(mod, factor);
          if (!opts.dora) return tf.add(w0, d);
          // W' = k ⊙ (W0 + f·ΔW), k = m / ‖W0 + f·ΔW‖.
          return tf.mul(doraFactor(mod, core.baseParam(`${m}.weight`)!, factor), tf.add(w0, d));
        });
        setMerged(out, `${m}.weight`, merged);
        if (mod.bias) {
          const b0 = currentWeight(core, out, `${m}.bias`);
          const bB = core.tensor(loraNames(m).bias);
          setMerged(out, `${m}.bias`, tf.tidy(() => (b0 ? tf.add(b0, tf.mul(bB, mod.scale * factor)) : tf.mul(bB, mod.scale * factor))));
        }
      }
    },
    unmerge(out) {
      for (const mod of modules) {
        const m = mod.info.module;
        const factor = core.scaleOf(mod.info.layer);
        const wm = out.get(`${m}.weight`);
        if (!wm) continue;
        const restored = tf.tidy(() => {
          const d = delta(mod, factor);
          // DoRA: W_eff = k ⊙ (W0 + f·ΔW)  ⇒  W0 = W_eff / k − f·ΔW, k from the base weight's norm.
          let w0 = opts.dora ? tf.sub(tf.div(wm, doraFactor(mod, core.baseParam(`${m}.weight`)!, factor)), d) : tf.sub(wm, d);
          // A data-aware init replaced W by W − s·B₀A₀: add it back to restore the model's weight.
          if (mod.init) {
            const A0 = tf.tensor2d(mod.init.A, [mod.r, mod.info.inFeatures]);
            const B0 = tf.tensor2d(mod.init.B, [mod.info.outFeatures, mod.r]);
            const d0 = tf.mul(tf.matMul(B0, A0), mod.scale);
            w0 = tf.add(w0, mod.info.fanInFanOut ? tf.transpose(d0) : d0);
          }
          return w0;
        });
        setMerged(out, `${m}.weight`, restored);
        if (mod.bias) {
          const bm = out.get(`${m}.bias`);
          if (bm) setMerged(out, `${m}.bias`, tf.tidy(() => tf.sub(bm, tf.mul(core.tensor(loraNames(m).bias), mod.scale * factor))));
        }
      }
    },
  };
}

/** Host copy of a float tensor. */
export async function host(t: tf.Tensor): Promise<HostTensor> {
  const data = await t.data();
  return { dtype: 'F32', shape: [...t.shape], data: data instanceof Float32Array ? Float32Array.from(data) : Float32Array.from(data as ArrayLike<number>) };
}

/**
 * PEFT tensors of LoRA on embeddings; with `rank` above a module's r (an export converted to rank
 * 2r for the other modules), zero-padded to it.
 */
export async function loraEmbeddingExportTensors(core: AdapterCore, modules: LoraEmbeddingModule[], rank?: (mod: LoraEmbeddingModule) => number): Promise<Map<string, HostTensor>> {
  const out = new Map<string, HostTensor>();
  for (const mod of modules) {
    const n = loraEmbeddingNames(mod.info.module);
    const to = rank?.(mod) ?? mod.r;
    const pad = (t: tf.Tensor, axis: 0 | 1) => tf.tidy(() => (to === mod.r ? tf.clone(t) : tf.pad(t, axis === 0 ? [[0, to - mod.r], [0, 0]] : [[0, 0], [0, to - mod.r]])));
    for (const [name, axis] of [[n.A, 0], [n.B, 1]] as const) {
      const t = pad(core.tensor(name), axis);
      out.set(name, await host(t));
      t.dispose();
    }
  }
  return out;
}

/**
 * PEFT tensors of the LoRA modules (keys without `base_model.model.`). With `convert`, modules
 * whose init replaced the base weight become a rank-2r LoRA on the original base:
 * A' = [A; A₀], B' = [B, −B₀]; modules without an init are zero-padded to rank 2r.
 */
export async function loraExportTensors(core: AdapterCore, modules: LoraModule[], opts: LoraOptions, convert: boolean): Promise<Map<string, HostTensor>> {
  const out = new Map<string, HostTensor>();
  for (const mod of modules) {
    const n = loraNames(mod.info.module);
    const A = await host(core.tensor(n.A));
    const B = await host(core.tensor(n.B));
    if (convert) {
      const r = mod.r;
      const inF = mod.info.inFeatures;
      const outF = mod.info.outFeatures;
      const A2 = new Float32Array(2 * r * inF);
      A2.set(A.data as Float32Array, 0);
      if (mod.init) A2.set(mod.init.A, r * inF);
      const B2 = new Float32Array(outF * 2 * r);
      const b = B.data as Float32Array;
      for (let o = 0; o < outF; o++) {
        for (let j = 0; j < r; j++) {
          B2[o * 2 * r + j] = b[o * r + j]!;
          if (mod.init) B2[o * 2 * r + r + j] = -mod.init.B[o * r + j]!;
        }
      }
      out.set(n.A, { dtype: 'F32', shape: [2 * r, inF], data: A2 });
      out.set(n.B, { dtype: 'F32', shape: [outF, 2 * r], data: B2 });
    } else {
      out.set(n.A, A);
      out.set(n.B, B);
    }
    if (mod.bias) out.set(n.bias, await host(core.tensor(n.bias)));
    if (opts.dora) out.set(n.magnitude, await host(core.tensor(n.magnitude)));
  }
  return out;
}
