/** Fresh models from a config: seeded random init as transformers does (normal(0, 0.02), norms 1 (Gemma's (1 + w) norms: 0), biases 0). */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from './config';
import { architectureOf, Model } from './model';
import { tfSeed } from '../train/rng';

export function randomModel(config: ModelConfig, seed = 0, std = 0.02): Model {
  const params = new Map<string, tf.Tensor>();
  const normInit = 'normOffset' in config && config.normOffset ? tf.zeros : tf.ones;
  architectureOf(config)
    .params(config)
    .forEach((info, i) => {
      const isNormWeight = info.type === 'norm' && info.name.endsWith('.weight');
      const isBias = info.name.endsWith('.bias');
      const t = isNormWeight ? normInit(info.shape) : isBias ? tf.zeros(info.shape) : tf.randomNormal(info.shape, 0, std, 'float32', tensorSeed(seed, i));
      params.set(info.name, tf.keep(t));
    });
  return new Model(config, params);
}

/** The seed of a model's index-th tensor (tfSeed: never TF.js's "no seed" 0). */
export function tensorSeed(seed: number, index: number): number {
  return tfSeed(seed * 100_003 + index);
}
