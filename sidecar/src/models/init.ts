/** Fresh models from a config: seeded random init as transformers does (normal(0, 0.02), norms 1, biases 0). */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from './config';
import { architectureOf, Model } from './model';

export function randomModel(config: ModelConfig, seed = 0, std = 0.02): Model {
  const params = new Map<string, tf.Tensor>();
  architectureOf(config)
    .params(config)
    .forEach((info, i) => {
      const isNormWeight = info.type === 'norm' && info.name.endsWith('.weight');
      const isBias = info.name.endsWith('.bias');
      const t = isNormWeight ? tf.ones(info.shape) : isBias ? tf.zeros(info.shape) : tf.randomNormal(info.shape, 0, std, 'float32', seed * 100_003 + i);
      params.set(info.name, tf.keep(t));
    });
  return new Model(config, params);
}
