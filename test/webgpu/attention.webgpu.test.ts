/** WebGPU fused attention (forward and gradients) against the cpu backend's composite attention. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { fusedAttention, K } from '../../sidecar/src/backend/native/fused';
import { attention, causalMask } from '../../sidecar/src/models/ops';
import { assertClose, onCpu, useWebGpu, values } from '../helpers/webgpu';

before(async () => {
  await useWebGpu();
});

type Shape = [number, number, number, number];

/** o and d(sum(o ∘ w))/d{q, k, v} through the composite on cpu. */
function reference(shape: Shape, scale: number, causal: boolean, arrays: Float32Array[]): Promise<Float32Array[]> {
  return onCpu(() =>
    tf.tidy(() => {
      const [q, k, v, w] = arrays.map((a) => tf.tensor4d(a, shape));
      const mask = causal ? causalMask(shape[2]) : undefined;
      const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => attention(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D, scale, mask);
      const o = f(q!, k!, v!);
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(f(a, b, c), w!)))([q!, k!, v!]);
      return [o, ...g].map((t) => t.dataSync() as Float32Array);
    }),
  );
}

async function check(shape: Shape, causal: boolean, spread = 1): Promise<void> {
  const n = shape.reduce((a, b) => a * b, 1);
  const scale = 1 / Math.sqrt(shape[3]);
  const arrays = [values(n, 11, spread), values(n, 23, spread), values(n, 37), values(n, 41)];
  const ref = await reference(shape, scale, causal, arrays);
  const what = `[${shape.join(',')}] ${causal ? 'causal' : 'full'}`;

  const before = tf.memory().numTensors;
  const [q, k, v, w] = arrays.map((a) => tf.tensor4d(a, shape));
  const o = tf.tidy(() => fusedAttention(q!, k!, v!, scale, causal)!);
  const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(fusedAttention(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D, scale, causal)!, w!)))([q!, k!, v!]);
  assertClose(await o.data(), ref[0]!, 1e-5, `${what} o`);
  for (const [i, name] of ['dq', 'dk', 'dv'].entries()) assertClose(await grads[i]!.data(), ref[i + 1]!, 1e-5, `${what} ${name}`);
  tf.dispose([q!, k!, v!, w!, o, ...grads]);
  assert.equal(tf.memory().numTensors, before, `${what}: tensors leak`);
}

test('the fused attention kernels are registered on webgpu', () => {
  assert.ok(tf.getKernel(K.attention, 'webgpu'));
  assert.ok(tf.getKernel(K.attentionGrad, 'webgpu'));
});

test('lse is the log-sum-exp of the scaled, masked scores', async () => {
  const shape: Shape = [1, 2, 9, 8];
  const n = 2 * 9 * 8;
  const [qa, ka, va] = [values(n, 3), values(n, 5), values(n, 7)];
  const [q, k, v] = [qa, ka, va].map((a) => tf.tensor4d(a, shape));
  const [o, lse] = tf.engine().runKernel(K.attention, { q: q!, k: k!, v: v! }, { scale: 0.5, causal: true }) as tf.Tensor[];
  const want = new Float32Array(2 * 9);
  for (let h = 0; h < 2; h++)
    for (let i = 0; i < 9; i++) {
      let sum = 0;
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let d = 0; d < 8; d++) s += qa[(h * 9 + i) * 8 + d]! * ka[(h * 9 + j) * 8 + d]!;
        sum += Math.exp(0.5 * s);
      }
      want[h * 9 + i] = Math.log(sum);
    }
  assert.deepEqual(lse!.shape, [2, 9]);
  assertClose(await lse!.data(), want, 1e-5, 'lse');
  tf.dispose([q!, k!, v!, o!, lse!]);
});

test('D = 8, T = 37: full and causal', async () => {
  await check([1, 2, 37, 8], false);
  await check([1, 2, 37, 8], true);
});

test('D = 64, T = 70 (two row blocks, partial tiles): full and causal', async () => {
  await check([2, 1, 70, 64], false);
  await check([2, 1, 70, 64], true);
});

test('D = 6 (padded to vec4s), peaked scores', async () => {
  await check([1, 3, 21, 6], true, 4);
  await check([1, 3, 21, 6], false, 4);
});
