/** WebGPU fused attention (forward and gradients, on [B, H, T, D] tensors and on GPT-2's fused qkv)
 * against the cpu backend's composite attention. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { fusedAttention, fusedAttentionQkv, K } from '../../sidecar/src/backend/native/fused';
import { setAttentionBackwardTiles, type BackwardTiles } from '../../sidecar/src/backend/webgpu/attention';
import { attention, attentionQkv, causalMask } from '../../sidecar/src/models/ops';
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

test('more than 65535 workgroups (TF.js folds the dispatch into a square; the extra workgroups write nothing)', async () => {
  // 66000 heads × one row block: 66000 forward and 132000 backward workgroups.
  await check([1, 66000, 2, 4], false);
  await check([1, 66000, 2, 4], true);
});

test('D = 6 (padded to vec4s), peaked scores', async () => {
  await check([1, 3, 21, 6], true, 4);
  await check([1, 3, 21, 6], false, 4);
});

/** Runs `body` under each backward tile shape, the default restored after each. */
async function underBackwardTiles(shapes: BackwardTiles[], body: () => Promise<void>): Promise<void> {
  for (const tiles of shapes) {
    setAttentionBackwardTiles(tiles);
    try {
      await body();
    } finally {
      setAttentionBackwardTiles(undefined);
    }
  }
}

test('backward tile shapes other than the default (separate q, k, v)', async () => {
  await underBackwardTiles(
    [
      { rows: 32, tile: 16 },
      { rows: 8, tile: 4 },
      { rows: 4, tile: 8 },
      { rows: 1, tile: 1 },
    ],
    async () => {
      await check([1, 2, 37, 8], true);
      await check([1, 1, 19, 12], false);
    },
  );
});

interface QkvCase {
  batch: number;
  seq: number;
  heads: number;
  headDim: number;
  causal: boolean;
}

/** o and d(sum(o ∘ w))/d qkv through the composite (split, splitHeads, attention, mergeHeads) on cpu,
 * as GPT-2 runs it on a backend without PeftAttentionQkv. */
function qkvReference(c: QkvCase, scale: number, qkvData: Float32Array, wData: Float32Array): Promise<Float32Array[]> {
  const width = c.heads * c.headDim;
  return onCpu(() =>
    tf.tidy(() => {
      const qkv = tf.tensor2d(qkvData, [c.batch * c.seq, 3 * width]);
      const w = tf.tensor2d(wData, [c.batch * c.seq, width]);
      const mask = c.causal ? causalMask(c.seq) : undefined;
      const f = (x: tf.Tensor) => attentionQkv(x as tf.Tensor2D, c.batch, c.seq, c.heads, c.headDim, scale, mask);
      const o = f(qkv);
      const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(f(x), w)))(qkv);
      return [o, g].map((t) => t.dataSync() as Float32Array);
    }),
  );
}

async function checkQkv(c: QkvCase, spread = 1): Promise<void> {
  const width = c.heads * c.headDim;
  const rows = c.batch * c.seq;
  const scale = 1 / Math.sqrt(c.headDim);
  const qkvData = values(rows * 3 * width, 13, spread);
  const wData = values(rows * width, 29);
  const [oRef, gRef] = await qkvReference(c, scale, qkvData, wData);
  const what = `qkv B=${c.batch} T=${c.seq} H=${c.heads} D=${c.headDim} ${c.causal ? 'causal' : 'full'}`;

  const before = tf.memory().numTensors;
  const qkv = tf.tensor2d(qkvData, [rows, 3 * width]);
  const w = tf.tensor2d(wData, [rows, width]);
  const o = fusedAttentionQkv(qkv, c.batch, c.seq, c.heads, c.headDim, scale, c.causal);
  assert.ok(o, 'fusedAttentionQkv runs on webgpu');
  assert.deepEqual(o.shape, [rows, width]);
  const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(fusedAttentionQkv(x as tf.Tensor2D, c.batch, c.seq, c.heads, c.headDim, scale, c.causal)!, w)))(qkv);
  assert.deepEqual(g.shape, [rows, 3 * width]);
  assertClose(await o.data(), oRef!, 1e-5, `${what} o`);
  assertClose(await g.data(), gRef!, 1e-5, `${what} dqkv`);
  tf.dispose([qkv, w, o, g]);
  assert.equal(tf.memory().numTensors, before, `${what}: tensors leak`);
}

test('the qkv attention kernels are registered on webgpu', () => {
  assert.ok(tf.getKernel(K.attentionQkv, 'webgpu'));
  assert.ok(tf.getKernel(K.attentionQkvGrad, 'webgpu'));
});

test('qkv: lse output is [B·H, T], the log-sum-exp of the scaled scores', async () => {
  const [b, t, h, d] = [2, 5, 3, 4];
  const width = h * d;
  const data = values(b * t * 3 * width, 17);
  const qkv = tf.tensor2d(data, [b * t, 3 * width]);
  const [o, lse] = tf.engine().runKernel(K.attentionQkv, { qkv }, { batch: b, seq: t, heads: h, headDim: d, scale: 0.7, causal: false }) as tf.Tensor[];
  assert.deepEqual(lse!.shape, [b * h, t]);
  const want = new Float32Array(b * h * t);
  const at = (bi: number, ti: number, col: number) => data[(bi * t + ti) * 3 * width + col]!;
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++)
      for (let i = 0; i < t; i++) {
        let sum = 0;
        for (let j = 0; j < t; j++) {
          let s = 0;
          for (let e = 0; e < d; e++) s += at(bi, i, hi * d + e) * at(bi, j, width + hi * d + e);
          sum += Math.exp(0.7 * s);
        }
        want[(bi * h + hi) * t + i] = Math.log(sum);
      }
  assertClose(await lse!.data(), want, 1e-5, 'qkv lse');
  tf.dispose([qkv, o!, lse!]);
});

test('qkv: D = 8, odd T, several heads and batches: full and causal', async () => {
  await checkQkv({ batch: 2, seq: 37, heads: 3, headDim: 8, causal: false });
  await checkQkv({ batch: 2, seq: 37, heads: 3, headDim: 8, causal: true });
});

test('qkv: D = 64, T = 70 (partial blocks and tiles): full and causal', async () => {
  await checkQkv({ batch: 2, seq: 70, heads: 2, headDim: 64, causal: false });
  await checkQkv({ batch: 2, seq: 70, heads: 2, headDim: 64, causal: true });
});

test('qkv: D = 6 (padded to vec4s), T = 1 and peaked scores', async () => {
  await checkQkv({ batch: 3, seq: 1, heads: 2, headDim: 6, causal: true });
  await checkQkv({ batch: 1, seq: 21, heads: 2, headDim: 6, causal: true }, 4);
});

test('qkv: other backward tile shapes', async () => {
  await underBackwardTiles(
    [
      { rows: 32, tile: 16 },
      { rows: 8, tile: 8 },
      { rows: 2, tile: 4 },
    ],
    async () => {
      await checkQkv({ batch: 2, seq: 23, heads: 2, headDim: 8, causal: true });
      await checkQkv({ batch: 1, seq: 23, heads: 3, headDim: 12, causal: false });
    },
  );
});
