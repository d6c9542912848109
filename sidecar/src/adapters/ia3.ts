/**
 * (IA)³ as Hugging Face PEFT 0.21 computes it (`ia3/layer.py`): a learned vector l scales the input
 * of feed-forward modules (`ia3_l` [1, in]) and the output of the others (`ia3_l` [out, 1], bias
 * included). Init ones. A layer scale f acts as l' = 1 + f·(l − 1).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../models/architecture';
import { currentWeight, setMerged, type AdapterCore } from './core';

export interface Ia3Module {
  info: LinearModuleInfo;
  feedForward: boolean;
  /** [1, in] (feed-forward) or [out, 1]; ones when absent. */
  l?: tf.Tensor2D;
}

export const ia3Name = (module: string) => `${module}.ia3_l`;

export function addIa3(core: AdapterCore, modules: Ia3Module[]): void {
  for (const mod of modules) {
    const { module: m, layer, inFeatures, outFeatures } = mod.info;
    const name = ia3Name(m);
    core.addTrainable(name, mod.l ?? tf.ones(mod.feedForward ? [1, inFeatures] : [outFeatures, 1]), layer);
    core.addLinearHook(m, (x, _layer, base, f) => {
      const factor = core.scaleOf(layer);
      if (factor === 0) return base(x);
      let l = tf.reshape(core.get(f, name), [-1]);
      if (factor !== 1) l = tf.add(tf.mul(tf.sub(l, 1), factor), 1);
      return mod.feedForward ? base(tf.mul(x, l) as tf.Tensor2D) : (tf.mul(base(x), l) as tf.Tensor2D);
    });
  }
  /** l (at the layer scale) shaped to scale W's input columns (feed-forward) or output rows, in the stored layout. */
  const scaling = (mod: Ia3Module) => {
    const factor = core.scaleOf(mod.info.layer);
    let l = tf.reshape(core.tensor(ia3Name(mod.info.module)), [-1]);
    if (factor !== 1) l = tf.add(tf.mul(tf.sub(l, 1), factor), 1);
    // Stored [out, in]: output rows → [out, 1], input columns → [1, in]; Conv1D [in, out] the other way round.
    const alongRows = mod.feedForward === mod.info.fanInFanOut;
    return { vec: l, mat: alongRows ? tf.reshape(l, [-1, 1]) : tf.reshape(l, [1, -1]) };
  };
  core.mergeParts.push({
    merge(out) {
      for (const mod of modules) {
        const m = mod.info.module;
        const w = currentWeight(core, out, `${m}.weight`)!;
        setMerged(out, `${m}.weight`, tf.tidy(() => tf.mul(w, scaling(mod).mat)));
        const b = currentWeight(core, out, `${m}.bias`);
        if (!mod.feedForward && b) setMerged(out, `${m}.bias`, tf.tidy(() => tf.mul(b, scaling(mod).vec)));
      }
    },
    unmerge(out) {
      for (const mod of modules) {
        const m = mod.info.module;
        const w = out.get(`${m}.weight`);
        if (w) setMerged(out, `${m}.weight`, tf.tidy(() => tf.div(w, scaling(mod).mat)));
        const b = out.get(`${m}.bias`);
        if (!mod.feedForward && b) setMerged(out, `${m}.bias`, tf.tidy(() => tf.div(b, scaling(mod).vec)));
      }
    },
  });
}
