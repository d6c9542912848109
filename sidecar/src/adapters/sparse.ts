/**
 * Sparse update (SPT's unstructured part, or any masked fine-tuning): for chosen linear weights and
 * biases, a trainable delta Δ (init 0) and a frozen 0/1 mask M from a safetensors file named like
 * the base tensors: W' = W + M ⊙ Δ. The gradient reaching Δ is masked by construction.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { readSafetensors, toFloat32 } from '../io/safetensors';
import { baseLinear } from '../models/forward';
import { currentWeight, setMerged, type AdapterCore } from './core';
import { hookableLinears } from './targets';

export const sparseNames = (param: string) => {
  const dot = param.lastIndexOf('.');
  const module = param.slice(0, dot);
  const leaf = param.slice(dot + 1);
  return { module, leaf, delta: `${module}.sparse_delta.${leaf}`, mask: `${module}.sparse_mask.${leaf}` };
};

export async function addSparse(core: AdapterCore, maskFile: string): Promise<void> {
  const masks = await readSafetensors(maskFile);
  if (masks.size === 0) throw new InputError(maskFile, '', 'the mask file holds no tensors');
  const linears = new Map(hookableLinears(core.model).map((m) => [m.module, m]));
  const byModule = new Map<string, string[]>();
  for (const [name, t] of masks) {
    const n = sparseNames(name);
    const info = linears.get(n.module);
    if (!info || (n.leaf !== 'weight' && n.leaf !== 'bias'))
      throw new InputError(maskFile, name, 'sparse updates apply to the weights and biases of linear modules; this is not one');
    const base = core.model.params.get(name);
    if (!base) throw new InputError(maskFile, name, 'the model has no such parameter');
    if (t.shape.length !== base.shape.length || t.shape.some((s, i) => s !== base.shape[i]))
      throw new InputError(maskFile, name, `mask shape [${t.shape.join(', ')}] differs from the parameter's [${base.shape.join(', ')}]`);
    const m = toFloat32(t).map((v) => (v !== 0 ? 1 : 0));
    core.addFrozen(n.mask, tf.tensor(m, base.shape), info.layer);
    core.addTrainable(n.delta, tf.zeros(base.shape), info.layer);
    core.countTrainableAs(n.delta, m.reduce((a, v) => a + v, 0)); // the delta is dense; only the mask's entries train
    byModule.set(n.module, [...(byModule.get(n.module) ?? []), n.leaf]);
  }
  for (const [module, leaves] of byModule) {
    const info = linears.get(module)!;
    const upd = (leaf: string) => sparseNames(`${module}.${leaf}`);
    core.addLinearHook(module, (x, layer, base, f) => {
      const factor = core.scaleOf(info.layer);
      if (factor === 0) return base(x);
      const eff = (leaf: string, t: tf.Tensor) => {
        const n = upd(leaf);
        let d = tf.mul(core.get(f, n.mask), core.get(f, n.delta));
        if (factor !== 1) d = tf.mul(d, factor);
        return tf.add(t, d);
      };
      const weight = leaves.includes('weight') ? (eff('weight', layer.weight) as tf.Tensor2D) : layer.weight;
      const bias = leaves.includes('bias') && layer.bias ? (eff('bias', layer.bias) as tf.Tensor1D) : layer.bias;
      return baseLinear(x, { ...layer, weight, ...(bias ? { bias } : {}) });
    });
  }
  const params = [...masks.keys()];
  const delta = (p: string) => {
    const n = sparseNames(p);
    return tf.mul(tf.mul(core.tensor(n.mask), core.tensor(n.delta)), core.scaleOf(core.layerOf(n.delta)));
  };
  core.mergeParts.push({
    merge(out) {
      for (const p of params) {
        const w = currentWeight(core, out, p)!;
        setMerged(out, p, tf.tidy(() => tf.add(w, delta(p))));
      }
    },
    unmerge(out) {
      for (const p of params) {
        const w = out.get(p);
        if (w) setMerged(out, p, tf.tidy(() => tf.sub(w, delta(p))));
      }
    },
  });
}
