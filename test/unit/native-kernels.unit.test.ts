/**
 * The native kernels (native/peft_kernels.cc over the wasm heap) against the pure-JS cpu backend:
 * GEMM in every transpose × batch-broadcast combination and odd sizes, Sum, the fused training ops
 * (layer norm, tanh-GELU, attention, softmax cross-entropy) forward and backward, AdamW (bitwise),
 * the wasm kernel fixes that ride along (Slice, SplitV, GatherV2), leaks (tensors and wasm data
 * ids), heap growth between calls, thread-count independence, and whole GPT-2 training steps.
 *
 * Skipped only when the addon is absent (not built for this platform, or switched off) or the CPU
 * lacks AVX2/FMA; an addon that is present but fails to load is a failure.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { loraFactory } from '../../sidecar/src/adapters/bench-lora';
import { currentBackend, initBackend } from '../../sidecar/src/backend';
import { loadNativeAddon } from '../../sidecar/src/backend/native/addon';
import { K } from '../../sidecar/src/backend/native/fused';
import { benchConfig } from '../../sidecar/src/bench/bench';
import { randomModel } from '../../sidecar/src/models/init';
import { baseLinear } from '../../sidecar/src/models/forward';
import { activation, attention, attentionQkv, causalLmLoss, causalMask, crossEntropy, layerNorm, mergeHeads, splitHeads } from '../../sidecar/src/models/ops';
import { AdamW } from '../../sidecar/src/train/adamw';
import { assertNoLeakOnWasm, compare, ints, randn, runOn, type Backend } from '../helpers/cpu-vs-wasm';
import { relMaxError } from '../helpers/numeric';

const load = loadNativeAddon();
const skip = load.addon ? false : load.kind === 'error' ? false : `native addon not built: ${load.reason}`;

/** The function's output followed by its gradients with respect to every float input (of
 * sum(f · w) for a fixed random w, so every output element matters). */
const withGrads =
  (f: (...t: tf.Tensor[]) => tf.Tensor, seed = 99) =>
  (...ts: tf.Tensor[]): tf.Tensor[] => {
    const xs = ts.filter((t) => t.dtype === 'float32');
    const y = f(...ts);
    // A fixed random upstream gradient, so every output element matters.
    const w = tf.tensor(randn(y.shape, seed).values, y.shape);
    const { grads } = tf.valueAndGrads((...args: tf.Tensor[]) => {
      let i = 0;
      const full = ts.map((t) => (t.dtype === 'float32' ? args[i++] : t));
      return tf.sum(tf.mul(f(...full), w));
    })(xs);
    return [y, ...grads];
  };

describe('native kernels', { skip }, () => {
  before(async () => {
    if (!load.addon) assert.fail(`the native addon is present but does not load: ${load.reason}`);
    const info = await initBackend('wasm', () => undefined);
    assert.match(info.device, /native AVX2/);
    assert.ok(tf.getKernel(K.layerNorm, 'wasm'), 'fused kernels registered');
    assert.equal(currentBackend()?.name, 'wasm');
  });

  test('matMul: transposes, batch broadcast, odd sizes', async () => {
    const sizes = [1, 7, 33, 257];
    let seed = 1;
    for (const [m, k, n] of [
      [7, 33, 257],
      [257, 7, 33],
      [33, 257, 7],
      [1, 33, 7],
      [7, 1, 33],
      [33, 7, 1],
      [64, 256, 48],
    ])
      for (const ta of [false, true])
        for (const tb of [false, true]) {
          const a = randn(ta ? [k, m] : [m, k], seed++);
          const b = randn(tb ? [n, k] : [k, n], seed++);
          await compare(`matMul ${m}x${k}x${n} ta=${ta} tb=${tb}`, [a, b], (x, y) => tf.matMul(x, y, ta, tb));
        }
    // Batched: equal batches, one side unbatched (folded or strided), two-way broadcast, rank 4.
    const batched: [number[], number[]][] = [
      [[3, 7, 33], [3, 33, 5]],
      [[3, 7, 33], [33, 5]],
      [[7, 33], [3, 33, 5]],
      [[2, 1, 7, 33], [1, 3, 33, 5]],
      [[2, 3, 7, 33], [3, 33, 5]],
      [[2, 4, 17, 9], [2, 4, 9, 17]],
    ];
    for (const [sa, sb] of batched)
      for (const ta of [false, true])
        for (const tb of [false, true]) {
          const swap = (s: number[], t: boolean) => (t ? [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]] : s);
          // The cpu backend gets two-way batch broadcasts wrong: its reference tiles both sides first.
          const outBatch = tf.backend_util.assertAndGetBroadcastShape(sa.slice(0, -2), sb.slice(0, -2));
          const full = (t: tf.Tensor) => tf.broadcastTo(t, [...outBatch, ...t.shape.slice(-2)]);
          await compare(`matMul [${sa}]x[${sb}] ta=${ta} tb=${tb}`, [randn(swap(sa, ta), seed++), randn(swap(sb, tb), seed++)], (x, y) => tf.matMul(x, y, ta, tb), 1e-5, (x, y) =>
            tf.matMul(full(x), full(y), ta, tb),
          );
        }
    for (const s of sizes) await compare(`matMul ${s}^3`, [randn([s, s], seed++), randn([s, s], seed++)], (x, y) => tf.matMul(x, y));
    // K = 0 gives zeros; an empty output is fine.
    await compare('matMul K=0', [randn([3, 0], 1), randn([0, 4], 2)], (x, y) => tf.matMul(x, y), 0);
    await compare('matMul M=0', [randn([0, 3], 1), randn([3, 4], 2)], (x, y) => tf.matMul(x, y), 0);
    // Gradients go through transposed matmuls.
    await compare('matMul grads', [randn([2, 7, 33], 5), randn([2, 33, 9], 6)], withGrads((x, y) => tf.matMul(x, y)));
    await compare('matMul grads, transposed', [randn([33, 7], 5), randn([9, 33], 6)], withGrads((x, y) => tf.matMul(x, y, true, true)));
  });

  test('fused matMul with bias', async () => {
    for (const [ta, tb] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ])
      await compare(`fused ta=${ta} tb=${tb}`, [randn(ta ? [33, 7] : [7, 33], 1), randn(tb ? [9, 33] : [33, 9], 2), randn([9], 3)], (a, b, bias) =>
        tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeA: ta, transposeB: tb }),
      );
    // K past one K block (the bias joins on the last block) and a short K (row-panel order).
    for (const k of [300, 20])
      await compare(`fused K=${k} + bias`, [randn([50, k], 7), randn([40, k], 8), randn([40], 9)], (a, b, bias) =>
        tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeB: true }),
      );
    await compare('fused batched + bias', [randn([3, 7, 33], 4), randn([33, 9], 5), randn([9], 6)], (a, b, bias) => tf.fused.matMul({ a: a as tf.Tensor3D, b: b as tf.Tensor3D, bias }));
    await compare('fused relu (falls back)', [randn([7, 33], 4), randn([33, 9], 5), randn([9], 6)], (a, b, bias) =>
      tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, activation: 'relu' }),
    );
  });

  test('Add, Sub, Multiply: full, bias-row, scalar and other broadcasts', async () => {
    const pairs: [number[], number[]][] = [
      [[7, 33], [7, 33]],
      [[7, 33], [33]],
      [[33], [7, 33]],
      [[2, 7, 33], [1, 33]],
      [[2, 7, 33], [7, 33]],
      [[7, 33], []],
      [[], [7, 33]],
      [[7, 1], [7, 33]],
      [[2, 1, 5], [1, 3, 5]],
      [[1], [1]],
    ];
    let seed = 1;
    for (const [sa, sb] of pairs)
      for (const [name, f] of [
        ['add', tf.add],
        ['sub', tf.sub],
        ['mul', tf.mul],
      ] as const)
        await compare(`${name} [${sa}] [${sb}]`, [randn(sa, seed++), randn(sb, seed++)], withGrads((a, b) => f(a, b)));
    await compare('add int32 (falls back)', [ints([1, 2]), ints([3, 4])], (a, b) => tf.add(a, b), 0);
  });

  test('Sum over leading and trailing axes', async () => {
    const x = randn([5, 7, 33], 11);
    for (const axis of [0, [0, 1], 2, [1, 2], [0, 1, 2], 1, [0, 2], -1])
      for (const keepDims of [false, true]) await compare(`sum axis=${axis} keepDims=${keepDims}`, [x], (t) => tf.sum(t, axis, keepDims));
    await compare('sum int32 (falls back)', [ints([1, 2, 3, 4], [2, 2])], (t) => tf.sum(t, 0), 0);
  });

  test('layer norm: forward and gradients (x, γ, β)', async () => {
    for (const [shape, seed] of [
      [[7, 33], 1],
      [[2, 9, 128], 2],
      [[1, 1], 3],
      [[257, 7], 4],
    ] as [number[], number][]) {
      const d = shape[shape.length - 1];
      const inputs = [randn(shape, seed, 3), randn([d], seed + 10), randn([d], seed + 20)];
      await compare(`layerNorm [${shape}]`, inputs, withGrads((x, g, b) => layerNorm(x, g, b, 1e-5)));
    }
  });

  test('tanh-GELU: forward and gradient', async () => {
    for (const n of [1, 7, 33, 1000]) await compare(`gelu_new [${n}]`, [randn([n], n, 3)], withGrads((x) => activation('gelu_new', x)));
    // Saturation and zero.
    await compare('gelu extremes', [{ values: Float32Array.from([-30, -9, -1e-7, 0, 1e-7, 9, 30]), shape: [7], dtype: 'float32' }], withGrads((x) => activation('gelu_pytorch_tanh', x)));
  });

  test('attention: causal and unmasked, forward and gradients', async () => {
    for (const [b, h, t, d] of [
      [2, 3, 7, 5],
      [1, 2, 33, 32],
      [2, 1, 1, 8],
      [1, 1, 65, 16],
    ]) {
      const shape = [b, h, t, d];
      const inputs = [randn(shape, t, 1.5), randn(shape, t + 1, 1.5), randn(shape, t + 2)];
      await compare(`causal attention [${shape}]`, inputs, withGrads((q, k, v) => attention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, 1 / Math.sqrt(d), causalMask(t))));
      await compare(`attention [${shape}]`, inputs, withGrads((q, k, v) => attention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, 0.3)));
    }
    // Another mask takes the composite path and still agrees.
    await compare('attention, padding mask', [randn([2, 2, 5, 4], 1), randn([2, 2, 5, 4], 2), randn([2, 2, 5, 4], 3), randn([2, 1, 1, 5], 4)], (q, k, v, m) =>
      attention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, 0.5, m),
    );
  });

  test('attention from a fused qkv projection (PeftAttentionQkv): forward and gradients', async () => {
    for (const [b, h, t, d] of [
      [2, 3, 7, 5],
      [1, 2, 33, 32],
      [2, 1, 1, 8],
      [3, 4, 65, 16],
    ]) {
      const qkv = [randn([b * t, 3 * h * d], t + h, 1.5)];
      const f = (mask?: tf.Tensor) => (x: tf.Tensor) => attentionQkv(x as tf.Tensor2D, b, t, h, d, 1 / Math.sqrt(d), mask);
      // The cpu reference runs the composite (split, splitHeads, attention, mergeHeads).
      await compare(`causal attentionQkv [${b},${h},${t},${d}]`, qkv, withGrads((x) => f(causalMask(t))(x)));
      await compare(`attentionQkv [${b},${h},${t},${d}]`, qkv, withGrads((x) => f()(x)));
    }
    await tf.setBackend('wasm');
    const kernels = await tf.profile(() => tf.tidy(() => attentionQkv(tf.ones([8, 12]) as tf.Tensor2D, 2, 4, 2, 2, 0.5, causalMask(4))));
    assert.deepEqual(kernels.kernelNames.filter((k) => k.startsWith('Peft')), [K.attentionQkv], 'one fused op');
    await assertNoLeakOnWasm('attentionQkv + grads', [randn([18, 12], 3)], withGrads((x) => attentionQkv(x as tf.Tensor2D, 2, 9, 2, 2, 0.5, causalMask(9))));
  });

  test('linear with bias (PeftLinear): forward and gradients, both weight layouts', async () => {
    for (const fanInFanOut of [false, true])
      for (const [n, i, o] of [
        [7, 33, 9],
        [64, 300, 40],
        [50, 20, 17],
      ]) {
        const w = randn(fanInFanOut ? [i, o] : [o, i], n + i);
        await compare(`linear ${n}x${i}→${o} fanInFanOut=${fanInFanOut}`, [randn([n, i], o), w, randn([o], 5)], withGrads((x, wt, bias) =>
          baseLinear(x as tf.Tensor2D, { module: 'm', weight: wt as tf.Tensor2D, bias: bias as tf.Tensor1D, fanInFanOut }),
        ));
      }
    await tf.setBackend('wasm');
    const kernels = await tf.profile(() => tf.tidy(() => baseLinear(tf.ones([3, 4]) as tf.Tensor2D, { module: 'm', weight: tf.ones([5, 4]) as tf.Tensor2D, bias: tf.ones([5]) as tf.Tensor1D, fanInFanOut: false })));
    assert.deepEqual(kernels.kernelNames, [K.linear], 'one fused op');
    await assertNoLeakOnWasm('linear + grads', [randn([5, 6], 1), randn([6, 4], 2), randn([4], 3)], withGrads((x, wt, bias) =>
      baseLinear(x as tf.Tensor2D, { module: 'm', weight: wt as tf.Tensor2D, bias: bias as tf.Tensor1D, fanInFanOut: true }),
    ));
  });

  test('softmax cross-entropy: forward and gradient, ignored labels', async () => {
    const n = 33;
    const c = 257;
    const labels = Array.from({ length: n }, (_, i) => (i % 5 === 0 ? -100 : (i * 37) % c));
    await compare('crossEntropy', [randn([n, c], 1, 4), ints(labels)], withGrads((x, y) => crossEntropy(x as tf.Tensor2D, y as tf.Tensor1D)));
    await compare('causalLmLoss', [randn([3, 9, 7], 2, 2), ints(Array.from({ length: 27 }, (_, i) => i % 7), [3, 9])], withGrads((x, y) => causalLmLoss(x as tf.Tensor3D, y as tf.Tensor2D)));
    // Every label ignored: NaN, as PyTorch.
    const [nan] = await runOn('wasm', [randn([2, 3], 3), ints([-100, -100])], (x, y) => crossEntropy(x as tf.Tensor2D, y as tf.Tensor1D));
    assert.ok(Number.isNaN(nan.values[0]));
  });

  test('AdamW: bitwise equal to the composite on the cpu backend', async () => {
    const run = async (backend: Backend) => {
      await tf.setBackend(backend);
      const params = new Map<string, tf.Tensor>([
        ['w', tf.tensor(randn([33, 7], 1).values, [33, 7])],
        ['b', tf.tensor(randn([7], 2).values, [7])],
      ]);
      const opt = new AdamW({ lr: 1e-2, weightDecay: 0.1 });
      for (let step = 0; step < 3; step++) {
        const grads = new Map([...params].map(([k, p]) => [k, tf.tensor(randn(p.shape, 10 * step + k.length).values, p.shape)]));
        opt.step(params, grads, 1e-2, (name) => name !== 'b');
        tf.dispose([...grads.values()]);
      }
      const out = [...params.values(), ...opt.state.m.values(), ...opt.state.v.values()].map((t) => t.dataSync() as Float32Array);
      tf.dispose([...params.values()]);
      opt.dispose();
      return out;
    };
    const want = await run('cpu');
    const got = await run('wasm');
    got.forEach((g, i) => assert.deepEqual(Array.from(g), Array.from(want[i]), `AdamW output ${i}`));
  });

  test('Transpose, Slice, SplitV, Concat and GatherV2 on wasm', async () => {
    const x = randn([4, 5, 6], 3);
    for (const perm of [
      [0, 1, 2],
      [0, 2, 1],
      [2, 0, 1],
      [1, 0, 2],
      [2, 1, 0],
    ])
      await compare(`transpose ${perm}`, [x], (t) => tf.transpose(t, perm), 0);
    await compare('transpose heads', [randn([2, 7, 3, 5], 4)], (t) => tf.transpose(t, [0, 2, 1, 3]), 0);
    await compare('splitHeads + grad', [randn([14, 15], 4)], withGrads((t) => splitHeads(t, 2, 7, 3, 5)));
    await compare('splitHeads 3-D', [randn([2, 7, 15], 4)], (t) => splitHeads(t, 2, 7, 3, 5), 0);
    await compare('mergeHeads + grad', [randn([2, 3, 7, 5], 4)], withGrads((t) => mergeHeads(t, 2, 7, 15)));
    await compare('transpose int32', [ints([1, 2, 3, 4, 5, 6], [2, 3])], (t) => tf.transpose(t), 0);
    await compare('transpose 1-D', [randn([7], 4)], (t) => tf.transpose(t), 0);
    await compare('concat axis 0', [x, randn([2, 5, 6], 4)], (a, b) => tf.concat([a, b], 0), 0);
    await compare('concat axis 2', [x, randn([4, 5, 1], 4), randn([4, 5, 3], 5)], (a, b, c) => tf.concat([a, b, c], 2), 0);
    await compare('concat with empty', [x, randn([4, 0, 6], 4)], (a, b) => tf.concat([a, b], 1), 0);
    await compare('concat int32', [ints([1, 2], [1, 2]), ints([3, 4, 5, 6], [2, 2])], (a, b) => tf.concat([a, b], 0), 0);
    await compare('slice int32', [ints([1, 2, 3, 4, 5, 6], [2, 3])], (t) => tf.slice(t, [1, 1], [1, 2]), 0);
    await compare('slice middle', [x], (t) => tf.slice(t, [1, 2, 1], [2, 2, 4]), 0);
    await compare('slice rows', [x], (t) => tf.slice(t, [1, 0, 0], [2, 5, 6]), 0);
    await compare('slice last axis', [x], (t) => tf.slice(t, [0, 0, 5], [4, 5, 1]), 0);
    await compare('split', [x], (t) => tf.split(t, [1, 2, 3], 2), 0);
    await compare('split axis 0', [x], (t) => tf.split(t, 2, 0), 0);
    await compare('gather', [x, ints([3, 0, 0, 2])], (t, i) => tf.gather(t, i), 0);
    await compare('gather axis 1 (falls back)', [x, ints([4, 1])], (t, i) => tf.gather(t, i, 1), 0);
    await compare('gather grad', [randn([5, 3], 4), ints([1, 1, 4, 0])], withGrads((t, i) => tf.gather(t, i)));
    await tf.setBackend('wasm');
    assert.throws(() => tf.tidy(() => tf.gather(tf.ones([3, 2]), tf.tensor1d([3], 'int32'))), /index value 3 is not in \[0, 2\]/);
  });

  test('no leaked tensors or wasm data ids', async () => {
    const q = randn([2, 2, 9, 4], 1);
    await assertNoLeakOnWasm('matMul + grads', [randn([3, 7, 5], 1), randn([3, 5, 4], 2)], withGrads((a, b) => tf.matMul(a, b)));
    await assertNoLeakOnWasm('matMul transposed', [randn([3, 5, 7], 1), randn([4, 5], 2)], (a, b) => tf.matMul(a, b, true, true));
    await assertNoLeakOnWasm('layerNorm + grads', [randn([7, 16], 1), randn([16], 2), randn([16], 3)], withGrads((x, g, b) => layerNorm(x, g, b, 1e-5)));
    await assertNoLeakOnWasm('gelu + grads', [randn([64], 1)], withGrads((x) => activation('gelu_new', x)));
    await assertNoLeakOnWasm('attention + grads', [q, q, q], withGrads((a, b, c) => attention(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D, 0.5, causalMask(9))));
    await assertNoLeakOnWasm('crossEntropy + grads', [randn([5, 7], 1), ints([1, 2, -100, 6, 0])], withGrads((x, y) => crossEntropy(x as tf.Tensor2D, y as tf.Tensor1D)));
    await assertNoLeakOnWasm('sum', [randn([5, 7], 1)], (x) => [tf.sum(x, 0), tf.sum(x, 1)]);
    await assertNoLeakOnWasm('split + gather', [randn([5, 6], 1), ints([0, 4])], (x, i) => [...tf.split(x, 3, 1), tf.gather(x, i)]);
    await assertNoLeakOnWasm('split/merge heads + grads', [randn([14, 15], 1)], withGrads((t) => mergeHeads(tf.mul(splitHeads(t, 2, 7, 3, 5), 2), 2, 7, 15)));
    await assertNoLeakOnWasm('transpose + concat + grads', [randn([5, 6], 1), randn([5, 2], 2)], withGrads((a, b) => tf.transpose(tf.concat([a, b], 1))));
    // With IS_TEST the engine also checks that each kernel adds exactly its outputs' data ids.
    tf.env().set('IS_TEST', true);
    try {
      await tf.setBackend('wasm');
      tf.tidy(() => {
        const a = tf.tensor(randn([7, 16], 1).values, [7, 16]);
        layerNorm(a, tf.ones([16]), tf.zeros([16]), 1e-5);
        activation('gelu_new', a);
        tf.matMul(a, a, false, true);
        tf.sum(a, 0);
      });
    } finally {
      tf.env().set('IS_TEST', false);
    }
  });

  test('a grown wasm heap (detached ArrayBuffer) between calls', async () => {
    await tf.setBackend('wasm');
    const heap = () => (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer.byteLength;
    const a = tf.tensor(randn([33, 17], 1).values, [33, 17]);
    const before = tf.tidy(() => tf.matMul(a, a, true, false).dataSync().slice());
    const size0 = heap();
    // Enough to force memory.grow.
    const big = tf.zeros([Math.ceil(size0 / 4) + (1 << 20)]);
    assert.ok(heap() > size0, 'the heap grew');
    const after = tf.tidy(() => tf.matMul(a, a, true, false).dataSync().slice());
    tf.dispose([a, big]);
    assert.deepEqual(Array.from(after), Array.from(before));
  });

  test('results do not depend on the thread count', async () => {
    const addon = load.addon!;
    await tf.setBackend('wasm');
    const inputs = [randn([4, 2, 65, 16], 1), randn([4, 2, 65, 16], 2), randn([4, 2, 65, 16], 3), randn([300, 200], 4), randn([200, 170], 5)];
    const f = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => [
      ...withGrads((x, y, z) => attention(x as tf.Tensor4D, y as tf.Tensor4D, z as tf.Tensor4D, 0.25, causalMask(65)))(q, k, v),
      tf.matMul(a, b),
      tf.matMul(a, a, true, false),
      tf.sum(a, 0),
      activation('gelu_new', a),
    ];
    const threads = addon.info().threads;
    try {
      addon.setThreads(1);
      const one = await runOn('wasm', inputs, f as (...t: tf.Tensor[]) => tf.Tensor[]);
      addon.setThreads(3);
      const three = await runOn('wasm', inputs, f as (...t: tf.Tensor[]) => tf.Tensor[]);
      one.forEach((o, i) => assert.deepEqual(Array.from(three[i].values), Array.from(o.values), `output ${i}`));
    } finally {
      addon.setThreads(threads);
    }
  });

  test('GPT-2 training steps (full and LoRA) match the cpu backend', async () => {
    const cfg = benchConfig({ case: 't', d: 32, layers: 2, heads: 4, seq: 10, batch: 3, vocab: 40, rank: 4 });
    const run = async (backend: Backend, lora: boolean) => {
      await tf.setBackend(backend);
      const model = randomModel(cfg, 3);
      const ids = tf.tensor2d(Int32Array.from({ length: 27 }, (_, i) => (i * 7 + 3) % 40), [3, 9], 'int32');
      const adapter = lora ? loraFactory()(model, 4, 8, ['c_attn']) : undefined;
      const trainable = adapter ? adapter.trainable : model.params;
      const names = [...trainable.keys()];
      const opt = new AdamW({ lr: 1e-3 });
      const losses: number[] = [];
      let grads: Float32Array[] = [];
      for (let step = 0; step < 3; step++) {
        const r = model.lossAndGrads(names, { inputIds: ids }, ids, { hooks: adapter?.hooks, extra: adapter?.trainable, training: true });
        losses.push(r.loss.dataSync()[0]);
        grads = names.map((n) => r.grads.get(n)!.dataSync() as Float32Array);
        opt.step(trainable, r.grads);
        tf.dispose([r.loss, ...r.grads.values()]);
      }
      const params = names.map((n) => trainable.get(n)!.dataSync() as Float32Array);
      opt.dispose();
      adapter?.dispose();
      model.dispose();
      ids.dispose();
      return { losses, grads, params };
    };
    for (const lora of [false, true]) {
      const want = await run('cpu', lora);
      const got = await run('wasm', lora);
      const mode = lora ? 'LoRA' : 'full';
      got.losses.forEach((l, i) => assert.ok(Math.abs(l - want.losses[i]) <= 1e-5 * Math.abs(want.losses[i]), `${mode} loss ${i}: ${l} vs ${want.losses[i]}`));
      got.grads.forEach((g, i) => {
        const err = relMaxError(g, want.grads[i]);
        assert.ok(err <= 1e-4, `${mode} gradient ${i}: ${err.toExponential(3)}`);
      });
      // (Parameters are not compared element-wise: AdamW's first updates are ±lr·sign(g), so an
      // entry whose gradient is at rounding level may flip; the losses above cover the updates.)
      assert.equal(got.params.length, want.params.length);
    }
  });
});
