/** WebGPU element-wise fused kernels against the cpu backend's composite ops. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { fusedGeluTanh, K } from '../../sidecar/src/backend/native/fused';
import { activation } from '../../sidecar/src/models/ops';
import { assertClose, onCpu, useWebGpu, values } from '../helpers/webgpu';

before(async () => {
  await useWebGpu();
});

test('GELU (tanh) and its gradient match the composite, no tensors leak', async () => {
  assert.ok(tf.getKernel(K.gelu, 'webgpu'), 'the fused kernel is registered on webgpu');
  const n = 3 * 1000 + 7; // not a multiple of the workgroup
  const x = values(n, 1, 6);
  const dy = values(n, 2);
  const ref = await onCpu(() =>
    tf.tidy(() => {
      const xt = tf.tensor1d(x);
      const [y, g] = [activation('gelu_new', xt), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(activation('gelu_new', t), tf.tensor1d(dy))))(xt)];
      return [y.dataSync().slice(), g.dataSync().slice()];
    }),
  );
  const before = tf.memory().numTensors;
  const xt = tf.tensor1d(x);
  const dyt = tf.tensor1d(dy);
  const y = fusedGeluTanh(xt)!;
  const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(fusedGeluTanh(t)!, dyt)))(xt);
  assertClose(await y.data(), ref[0]!, 2e-6, 'gelu');
  assertClose(await g.data(), ref[1]!, 2e-6, 'gelu grad');
  tf.dispose([xt, dyt, y, g]);
  assert.equal(tf.memory().numTensors, before);
});
