/** Adapter test helpers: adapters moved off their init, and their merge checked against their hooks. */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import type { AdapterInstance } from '../../sidecar/src/adapters/types';
import type { ModelInputs } from '../../sidecar/src/models/architecture';
import type { Model } from '../../sidecar/src/models/model';
import { assertClose, relMaxError } from './numeric';

/** Adds N(0, std) noise (seeded) to each trainable tensor `which` accepts: an adapter off its init (LoRA's B ≠ 0, SSF ≠ identity). */
export function perturb(adapter: AdapterInstance, std: number, seed: number, which: (name: string) => boolean = () => true): void {
  for (const [n, t] of [...adapter.trainable]) {
    if (!which(n)) continue;
    adapter.trainable.set(n, tf.keep(tf.add(t, tf.randomNormal(t.shape, 0, std, 'float32', seed))));
    t.dispose();
  }
}

/** The adapter changes the model's outputs, and its merged weights give what its hooks give (1e-4). */
export function assertMergeReproduces(model: Model, adapter: AdapterInstance, inputs: ModelInputs): void {
  const run = (opts: Parameters<Model['forward']>[1]) => tf.tidy(() => model.forward(inputs, opts).dataSync() as Float32Array);
  const adapted = run({ hooks: adapter.hooks, overrides: adapter.overrides() });
  assert.ok(relMaxError(adapted, run({})) > 1e-3, 'the adapter changes the outputs');
  const merged = adapter.merged();
  try {
    assertClose('merged outputs', run({ overrides: merged }), adapted, 1e-4);
  } finally {
    tf.dispose([...merged.values()]);
  }
}
