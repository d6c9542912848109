/**
 * Houlsby bottleneck adapters (Houlsby et al. 2019): after the attention and MLP sub-layers, before
 * the residual add, h ↦ h + W_up σ(W_down h + b_down) + b_up with σ = SiLU (AdapterHub's Houlsby
 * default, "swish"), W_down ~ N(0, 0.02²), W_up = 0 and biases 0, so the adapter starts as the
 * identity. Not mergeable (σ is non-linear).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AdapterCore } from './core';
import type { TapPoint } from './targets';
import { tfSeed } from '../train/rng';

export const bottleneckNames = (point: string) => ({
  downW: `${point}.adapter_down.weight`,
  downB: `${point}.adapter_down.bias`,
  upW: `${point}.adapter_up.weight`,
  upB: `${point}.adapter_up.bias`,
});

export function addBottleneck(core: AdapterCore, taps: TapPoint[], width: number): void {
  const d = core.model.config.hiddenSize;
  taps.forEach((tap, i) => {
    const n = bottleneckNames(tap.point);
    core.addTrainable(n.downW, tf.randomNormal([width, d], 0, 0.02, 'float32', tfSeed(core.seed * 100_003 + 7919 * (i + 1))), tap.layer);
    core.addTrainable(n.downB, tf.zeros([width]), tap.layer);
    core.addTrainable(n.upW, tf.zeros([d, width]), tap.layer);
    core.addTrainable(n.upB, tf.zeros([d]), tap.layer);
    core.addTapHook(tap.point, (x, f) => {
      const factor = core.scaleOf(tap.layer);
      if (factor === 0) return x;
      const shape = x.shape;
      const h = tf.reshape(x, [-1, d]) as tf.Tensor2D;
      const z = tf.add(tf.matMul(h, core.get(f, n.downW), false, true), core.get(f, n.downB));
      const a = tf.mul(z, tf.sigmoid(z));
      let up = tf.add(tf.matMul(a, core.get(f, n.upW), false, true), core.get(f, n.upB));
      if (factor !== 1) up = tf.mul(up, factor);
      return tf.reshape(tf.add(h, up), shape);
    });
  });
  core.mergeParts.push({
    merge() {
      throw new Error('bottleneck adapters cannot be merged into the base weights (the adapter is non-linear)');
    },
    unmerge() {
      throw new Error('bottleneck adapters cannot be merged into the base weights (the adapter is non-linear)');
    },
  });
}
