/**
 * The saved-tensor shortcut (backend/saved-tensors.ts): gradients are unchanged, the engine no
 * longer runs Identity for each saved tensor where Identity shares data, and nothing leaks.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import '@tensorflow/tfjs-backend-cpu';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { installSavedTensorShortcut } from '../../sidecar/src/backend/saved-tensors';

type Save = (tensors: tf.Tensor[]) => tf.Tensor[];
const engine = tf.engine() as unknown as { saveTensorsForBackwardMode: Save };
const engineOwn: Save = Object.getPrototypeOf(engine).saveTensorsForBackwardMode;

before(async () => {
  await tf.setBackend('cpu');
  installSavedTensorShortcut();
});

/** A small model's loss gradients (matmul, mul, exp, tanh, softmax, gather: many saved tensors). */
async function grads(): Promise<{ values: Float32Array[]; identities: number }> {
  const w = tf.tensor2d(Array.from({ length: 24 }, (_, i) => Math.sin(i) * 0.5), [4, 6]);
  const e = tf.tensor2d(Array.from({ length: 20 }, (_, i) => Math.cos(i * 0.7)), [5, 4]);
  const ids = tf.tensor1d([0, 3, 1, 4], 'int32');
  const f = (a: tf.Tensor, b: tf.Tensor) => {
    const h = tf.tanh(tf.matMul(tf.gather(b, ids), a));
    return tf.sum(tf.mul(tf.softmax(h), tf.exp(tf.mul(h, 0.3))));
  };
  let out: tf.Tensor[] = [];
  // Awaited before the next profile: the engine keeps one active profile at a time.
  const profile = await tf.profile(() => {
    out = tf.grads(f)([w, e]);
  });
  const values = out.map((g) => g.dataSync() as Float32Array);
  tf.dispose([w, e, ids, ...out]);
  return { values, identities: profile.kernels.filter((k) => k.name === 'Identity').length };
}

test('gradients equal the engine path bitwise, without an Identity kernel per saved tensor, and nothing leaks', async () => {
  const shortcutSave = engine.saveTensorsForBackwardMode;
  assert.notEqual(shortcutSave, engineOwn, 'installed');
  const before = tf.memory().numTensors;
  const shortcut = await grads();
  engine.saveTensorsForBackwardMode = engineOwn;
  let own: Awaited<ReturnType<typeof grads>>;
  try {
    own = await grads();
  } finally {
    engine.saveTensorsForBackwardMode = shortcutSave;
  }
  assert.deepEqual(shortcut.values, own.values);
  // tf.grads clones its result once; the engine path adds one Identity per saved tensor.
  assert.ok(own.identities >= 10, `the engine path clones saved tensors (${own.identities} Identity calls)`);
  assert.equal(shortcut.identities, 1);
  assert.equal(tf.memory().numTensors, before);
});
