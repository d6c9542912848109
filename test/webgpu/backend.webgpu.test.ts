/** The WebGPU rung on a software adapter: usable by name (for these tests), never picked by 'auto'. */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { initBackend, WEBGPU_SUBMIT_BATCH } from '../../sidecar/src/backend';
import { K } from '../../sidecar/src/backend/native/fused';
import { setAttentionBackwardTiles } from '../../sidecar/src/backend/webgpu/attention';
import { applyTuning } from '../../sidecar/src/backend/webgpu/kernels';
import { describePlan, forceMatMulConfig, forceMatMulSplitK } from '../../sidecar/src/backend/webgpu/matmul';
import { useWebGpu } from '../helpers/webgpu';

test("'auto' refuses a software adapter even when Dawn offers one", async () => {
  process.env.EGL_PLATFORM ??= 'surfaceless';
  process.env.PEFT_LAB_DAWN_FLAGS = 'backend=opengl';
  const logs: string[] = [];
  const info = await initBackend('auto', (m) => void logs.push(m));
  if (info.name === 'webgpu') return assert.doesNotMatch(info.device, /software/); // a machine with a GPU
  const webgpu = info.skipped.find((s) => s.name === 'webgpu');
  assert.match(webgpu?.reason ?? '', /^only a software adapter \(.*llvmpipe.*\), slower than the CPU backend$/);
  assert.equal((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu, undefined, 'no navigator.gpu shim left behind');
});

test("'webgpu' by name takes it, with the fused kernels registered, and computes", async () => {
  const device = await useWebGpu();
  assert.match(device, /^GPU \(WebGPU: .+\)$/);
  assert.equal(tf.getBackend(), 'webgpu');
  assert.ok(tf.getKernel(K.gelu, 'webgpu'));
  assert.equal(tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE'), WEBGPU_SUBMIT_BATCH, 'fewer queue submits than the TF.js default');
  const y = tf.matMul(tf.tensor2d([[1, 2]]), tf.tensor2d([[3], [4]]));
  assert.deepEqual(await y.array(), [[11]]);
});

test('PEFT_LAB_WEBGPU_TUNE items are applied, unknown ones are refused', async () => {
  assert.deepEqual(applyTuning(''), []);
  assert.throws(() => applyTuning('warp=9'), /unknown item 'warp=9'/);
  assert.throws(() => applyTuning('matmul=toString'), /unknown item 'matmul=toString'/);
  const call = { M: 512, N: 512, K: 512, batch: 1, ta: false, tb: false, bias: false };
  try {
    assert.deepEqual(applyTuning('splitk=1, attn=16x8, matmul=wide'), ['splitk=1', 'attn=16x8', 'matmul=wide']);
    assert.equal(describePlan(call), 'wide');
    const y = tf.matMul(tf.tensor2d([[1, 2]]), tf.tensor2d([[3], [4]]));
    assert.deepEqual(await y.array(), [[11]]);
  } finally {
    forceMatMulConfig(undefined);
    forceMatMulSplitK(undefined);
    setAttentionBackwardTiles(undefined);
  }
  assert.equal(describePlan(call), 'mid4', 'the heuristic again');
});
