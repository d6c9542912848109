/** Fused ops with saved statistics (LayerNorm's mean/rstd, attention's and cross-entropy's
 * log-sum-exp) leak nothing outside a tidy, and their gradients still work. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../sidecar/src/backend';
import { fusedAttention, fusedCrossEntropy, fusedLayerNorm } from '../../sidecar/src/backend/native/fused';

before(async () => {
  const info = await initBackend('wasm', () => {});
  assert.match(info.device, /native/, 'the native kernels are built (npm run build)');
});

test('no tensors are left behind by the ops, nor by their gradients', async () => {
  const x = tf.randomNormal([6, 8], 0, 1, 'float32', 1);
  const g = tf.ones([8]);
  const b = tf.zeros([8]);
  const q = tf.randomNormal([1, 2, 5, 4], 0, 1, 'float32', 2) as tf.Tensor4D;
  const labels = tf.tensor1d([1, 2, 3, -100, 0, 7], 'int32');
  const start = tf.memory().numTensors;
  const y = fusedLayerNorm(x, g, b, 1e-5)!;
  const o = fusedAttention(q, q, q, 0.5, true)!;
  const loss = fusedCrossEntropy(x as tf.Tensor2D, labels)!;
  assert.equal(tf.memory().numTensors, start + 3, 'one tensor per op');
  tf.dispose([y, o, loss]);
  const [dx] = tf.grads((t: tf.Tensor) => tf.add(fusedCrossEntropy(fusedLayerNorm(t, g, b, 1e-5) as tf.Tensor2D, labels)!, tf.sum(fusedAttention(q, q, q, 0.5, true)!)))([x]);
  assert.ok((await dx!.data()).every(Number.isFinite));
  dx!.dispose();
  assert.equal(tf.memory().numTensors, start);
  tf.dispose([x, g, b, q, labels]);
});
