/** WebGPU fused kernels (GELU, LayerNorm, cross-entropy, AdamW, head copies) against the cpu backend's composite ops. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { fusedCrossEntropy, fusedGeluTanh, fusedMergeHeads, fusedSplitHeads, K } from '../../sidecar/src/backend/native/fused';
import { activation, crossEntropy, layerNorm, mergeHeads, splitHeads } from '../../sidecar/src/models/ops';
import { AdamW } from '../../sidecar/src/train/adamw';
import { assertClose, onCpu, useWebGpu, values } from '../helpers/webgpu';

/** Tensors and backend buffers alive (a kernel's unreleased intermediate shows in the second). */
const live = () => [tf.memory().numTensors, tf.engine().backend.numDataIds()];

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

/** [value, ...gradients] of sum(f(...xs) · dy) on the active backend, as plain arrays. */
function withGrads(f: (...xs: tf.Tensor[]) => tf.Tensor, xs: tf.Tensor[], dy: tf.Tensor): Promise<Float32Array[]> {
  // In a tidy, as the model calls them: the fused ops drop their saved outputs (mean, rstd, lse).
  const y = tf.tidy(() => f(...xs));
  const gs = tf.grads((...ts: tf.Tensor[]) => tf.sum(tf.mul(f(...ts), dy)))(xs);
  const out = Promise.all([y, ...gs].map(async (t) => (await t.data()) as Float32Array));
  return out.finally(() => tf.dispose([y, ...gs]));
}

for (const shape of [
  [3, 5, 37],
  [7, 300],
  [2, 768],
]) {
  test(`LayerNorm ${shape.join('×')} and its gradients (x, γ, β) match the composite, no tensors leak`, async () => {
    for (const k of [K.layerNorm, K.layerNormGradX, K.layerNormGradGamma]) assert.ok(tf.getKernel(k, 'webgpu'), `${k} is registered on webgpu`);
    const d = shape[shape.length - 1]!;
    const n = shape.reduce((a, b) => a * b, 1);
    const x = values(n, 3, 2).map((v, i) => v + (i % d) * 0.01 + 0.5); // a mean far from 0
    const gamma = values(d, 4).map((v) => v + 1);
    const beta = values(d, 5);
    const dy = values(n, 6);
    const eps = 1e-5;
    const make = () => [tf.tensor(x, shape), tf.tensor1d(gamma), tf.tensor1d(beta)];
    const f = (xt: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => layerNorm(xt, g, b, eps);
    const ref = await onCpu(() => tf.tidy(() => {
      const [xt, g, b] = make();
      const y = f(xt!, g!, b!);
      const gs = tf.grads((a: tf.Tensor, c: tf.Tensor, e: tf.Tensor) => tf.sum(tf.mul(f(a, c, e), tf.tensor(dy, shape))))([xt!, g!, b!]);
      return [y, ...gs].map((t) => t.dataSync().slice() as Float32Array);
    }));
    const before = live();
    const ts = make();
    const dyt = tf.tensor(dy, shape);
    const got = await withGrads(f as (...xs: tf.Tensor[]) => tf.Tensor, ts, dyt);
    // The saved statistics, straight from the kernel.
    const [y, mean, rstd] = tf.engine().runKernel(K.layerNorm, { x: ts[0]!, gamma: ts[1]!, beta: ts[2]! }, { eps }) as tf.Tensor[];
    const [m, r] = [await mean!.data(), await rstd!.data()];
    tf.dispose([...ts, dyt, y!, mean!, rstd!]);
    assert.deepEqual(live(), before);
    assertClose(got[0]!, ref[0]!, 2e-6, 'y');
    assertClose(got[1]!, ref[1]!, 1e-5, 'dx');
    assertClose(got[2]!, ref[2]!, 1e-5, 'dγ');
    assertClose(got[3]!, ref[3]!, 1e-5, 'dβ');
    const rows = n / d;
    const wantMean = new Float32Array(rows);
    const wantRstd = new Float32Array(rows);
    for (let i = 0; i < rows; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += x[i * d + j]!;
      const mu = s / d;
      let v = 0;
      for (let j = 0; j < d; j++) v += (x[i * d + j]! - mu) ** 2;
      wantMean[i] = mu;
      wantRstd[i] = 1 / Math.sqrt(v / d + eps);
    }
    assertClose(m, wantMean, 1e-6, 'mean');
    assertClose(r, wantRstd, 1e-5, 'rstd');
  });
}

for (const [n, c] of [
  [13, 1000],
  [300, 37],
]) {
  test(`softmax cross-entropy ${n}×${c} (labels −100 and out of range) and its gradient match the composite, no tensors leak`, async () => {
    assert.ok(tf.getKernel(K.xent, 'webgpu') && tf.getKernel(K.xentGrad, 'webgpu'), 'registered on webgpu');
    const logits = values(n * c, 7, 8);
    const labels = Int32Array.from({ length: n }, (_, i) => (i % 5 === 1 ? -100 : i === 2 ? c + 3 : (i * 7919) % c));
    const make = () => tf.tensor2d(logits, [n, c]);
    const ref = await onCpu(() => tf.tidy(() => {
      const lt = tf.tensor1d(labels, 'int32');
      const x = make();
      const { value, grad } = tf.valueAndGrad((t: tf.Tensor) => tf.mul(crossEntropy(t as tf.Tensor2D, lt), 3))(x);
      return [value.dataSync().slice(), grad.dataSync().slice()] as Float32Array[];
    }));
    const before = live();
    const lt = tf.tensor1d(labels, 'int32');
    const x = make();
    const { value, grad } = tf.valueAndGrad((t: tf.Tensor) => tf.mul(fusedCrossEntropy(t as tf.Tensor2D, lt)!, 3))(x);
    const got = [await value.data(), await grad.data()];
    tf.dispose([lt, x, value, grad]);
    assert.deepEqual(live(), before);
    assertClose(got[0]!, ref[0]!, 2e-6, 'loss');
    assertClose(got[1]!, ref[1]!, 2e-6, 'dlogits', 1e-9);
  });
}

test('cross-entropy over only ignored labels is NaN, as the composite', async () => {
  const before = live();
  const x = tf.tensor2d(values(3 * 5, 8), [3, 5]);
  const lt = tf.tensor1d([-100, -100, -100], 'int32');
  const loss = tf.tidy(() => fusedCrossEntropy(x, lt)!);
  assert.ok(Number.isNaN((await loss.data())[0]), 'NaN');
  tf.dispose([x, lt, loss]);
  assert.deepEqual(live(), before);
});

test('AdamW (first step without m, v; then with; decay on some) matches the composite to 1e-6, no tensors leak', async () => {
  assert.ok(tf.getKernel(K.adamw, 'webgpu'), 'registered on webgpu');
  const shapes: Record<string, number[]> = { w: [33, 17], b: [17], s: [1] };
  const names = Object.keys(shapes);
  const init = (seed: number) => new Map(names.map((k, i) => [k, tf.tensor(values(tf.util.sizeFromShape(shapes[k]!), seed + i), shapes[k])]));
  const run = async () => {
    const opt = new AdamW({ lr: 3e-3, weightDecay: 0.1 });
    const params = init(10);
    for (let step = 0; step < 3; step++) {
      const grads = init(20 + step * 5);
      opt.step(params, grads, 3e-3 * (1 + step), (name) => name !== 'b');
      tf.dispose([...grads.values()]);
    }
    const arrays = async (m: Map<string, tf.Tensor>) => Promise.all(names.map(async (k) => (await m.get(k)!.data()) as Float32Array));
    const out = [await arrays(params), await arrays(opt.state.m), await arrays(opt.state.v)];
    tf.dispose([...params.values()]);
    opt.dispose();
    return out;
  };
  const ref = await onCpu(() => run());
  const before = live();
  const got = await run();
  assert.deepEqual(live(), before);
  ['p', 'm', 'v'].forEach((what, i) => names.forEach((k, j) => assertClose(got[i]![j]!, ref[i]![j]!, 1e-6, `${what}(${k})`)));
});

for (const [b, t, h, d] of [
  [2, 5, 3, 7],
  [2, 3, 5, 8],
  [1, 4, 2, 6],
] as const) test(`split/merge heads ${b}×${t}×${h}×${d} match reshape + transpose, gradients included, no tensors leak`, async () => {
  assert.ok(tf.getKernel(K.splitHeads, 'webgpu') && tf.getKernel(K.mergeHeads, 'webgpu'), 'registered on webgpu');
  const x = values(b * t * h * d, 9);
  const dy = values(b * t * h * d, 10);
  const f = (xt: tf.Tensor) => mergeHeads(tf.mul(splitHeads(xt, b, t, h, d), tf.reshape(tf.range(1, b * h * t * d + 1), [b, h, t, d])), b, t, h * d);
  const split = (xt: tf.Tensor) => splitHeads(xt, b, t, h, d);
  const ref = await onCpu(() => tf.tidy(() => {
    const xt = tf.tensor3d(x, [b, t, h * d]);
    const dyt = tf.tensor2d(dy, [b * t, h * d]);
    return [split(xt), f(xt), tf.grad((a: tf.Tensor) => tf.sum(tf.mul(f(a), dyt)))(xt)].map((r) => r.dataSync().slice() as Float32Array);
  }));
  const before = live();
  const xt = tf.tensor3d(x, [b, t, h * d]);
  const dyt = tf.tensor2d(dy, [b * t, h * d]);
  const s = fusedSplitHeads(xt, b, t, h, d)!;
  assert.deepEqual(s.shape, [b, h, t, d]);
  const m = fusedMergeHeads(s, b, t, h * d)!;
  assert.deepEqual(m.shape, [b * t, h * d]);
  const y = tf.tidy(() => f(xt));
  const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(f(a), dyt)))(xt);
  const got = [await s.data(), await y.data(), await g.data(), await m.data()];
  tf.dispose([xt, dyt, s, m, y, g]);
  assert.deepEqual(live(), before);
  assert.deepEqual(got[0], ref[0], 'split');
  assert.deepEqual(got[3], Float32Array.from(x), 'merge(split(x)) = x');
  assertClose(got[1]!, ref[1]!, 0, 'merge(split(x) · r)');
  assertClose(got[2]!, ref[2]!, 0, 'gradient');
});

for (const [shape, axis, keepDims] of [
  [[37, 50], 0, false],
  [[3, 5, 40], [0, 1], false],
  [[3, 5, 40], [1, 0], true],
  [[300, 17], -2, false],
  [[6, 20], 1, false], // an inner axis: TF.js's kernel
  [[500, 4], 0, false], // narrow: TF.js's kernel
] as const) {
  test(`Sum of ${shape.join('×')} over ${JSON.stringify(axis)}${keepDims ? ' (keepDims)' : ''} matches the cpu backend, no tensors leak`, async () => {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = values(n, 9, 3);
    const ref = await onCpu(() => tf.tidy(() => tf.sum(tf.tensor(x, [...shape]), axis as number | number[], keepDims).dataSync().slice()));
    const refShape = await onCpu(() => tf.tidy(() => tf.sum(tf.tensor(x, [...shape]), axis as number | number[], keepDims).shape));
    const before = live();
    const xt = tf.tensor(x, [...shape]);
    const y = tf.sum(xt, axis as number | number[], keepDims);
    assert.deepEqual(y.shape, refShape);
    assertClose(await y.data(), ref, 1e-5, 'sum', 1e-5);
    tf.dispose([xt, y]);
    assert.deepEqual(live(), before);
  });
}

test('the bias gradient of x·W + b is the column sum of dy', async () => {
  const x = values(64 * 24, 3);
  const w = values(24 * 40, 4);
  const b = values(40, 5);
  const grad = async () => {
    const g = tf.tidy(() => tf.grad((bt: tf.Tensor) => tf.sum(tf.square(tf.add(tf.matMul(tf.tensor2d(x, [64, 24]), tf.tensor2d(w, [24, 40])), bt))))(tf.tensor1d(b)));
    const v = await g.data();
    g.dispose();
    return v;
  };
  assert.ok((tf.getKernel('Sum', 'webgpu')?.kernelFunc as { peft?: true } | undefined)?.peft, 'our Sum is registered');
  assertClose(await grad(), await onCpu(grad), 1e-5, 'db');
});
