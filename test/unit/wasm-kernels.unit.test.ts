/**
 * The wasm kernel fixes against the pure-JS cpu backend: UnsortedSegmentSum (and so the gradient of
 * tf.gather), BatchMatMul / _FusedMatMul in every transpose × rank × broadcast combination, no
 * leaked tensors or wasm data ids, and a small transformer forward + backward from tfjs-core ops.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { version_cpu } from '@tensorflow/tfjs-backend-cpu';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { registerWasmKernelFixes } from '../../sidecar/src/backend/wasm-kernels';
import { relMaxError } from '../helpers/numeric';
import { assertNoLeakOnWasm as assertNoLeak, compare, ints, randn, runOn, type Backend } from '../helpers/cpu-vs-wasm';

/** With the engine's per-kernel data-id check (only here: it misfires on customGrad ops). */
const assertNoLeakOnWasm: typeof assertNoLeak = (name, inputs, f) => assertNoLeak(name, inputs, f, { kernelCheck: true });


before(async () => {
  assert.ok(version_cpu); // the cpu backend is registered by this import
  registerWasmKernelFixes();
  assert.ok(await tf.setBackend('wasm'), 'wasm backend initialises');
});

describe('registerWasmKernelFixes', () => {
  test('is idempotent and keeps the wrapped kernels wrapped once', () => {
    const before = ['UnsortedSegmentSum', 'BatchMatMul', '_FusedMatMul'].map((k) => tf.getKernel(k, 'wasm')?.kernelFunc);
    registerWasmKernelFixes();
    registerWasmKernelFixes();
    const after = ['UnsortedSegmentSum', 'BatchMatMul', '_FusedMatMul'].map((k) => tf.getKernel(k, 'wasm')?.kernelFunc);
    assert.ok(before.every((f) => typeof f === 'function'));
    assert.deepEqual(after, before);
    // Nothing else the cpu backend has and a transformer needs is missing on wasm.
    const wasm = new Set(tf.getKernelsForBackend('wasm').map((k) => k.kernelName));
    const missing = tf.getKernelsForBackend('cpu').map((k) => k.kernelName).filter((k) => !wasm.has(k));
    for (const k of ['UnsortedSegmentSum', 'BatchMatMul', 'GatherV2', 'Softmax', 'Select', 'OneHot', 'Erf', 'Tanh', 'Rsqrt', 'AddN', 'Transpose']) {
      assert.ok(!missing.includes(k), `${k} missing on wasm`);
    }
  });
});

describe('UnsortedSegmentSum on wasm', () => {
  test('matches cpu, dropping negative and out-of-range ids', async () => {
    const ids = ints([0, 3, -1, 6, 7, 2, 2, 0, 100, 5, -7, 1, 6, 6, 3, 4, 2, 0, 9, 1]);
    await compare('rank-3 x, 1-D ids', [randn([20, 3, 4], 1), ids], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 7), 1e-6);
    await compare('1-D x', [randn([20], 2), ids], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 7), 1e-6);
    // 2-D ids: the cpu kernel itself fails on them ("could not be broadcast"), so against a plain-JS sum.
    const x2 = randn([4, 5, 3], 3);
    const ids2 = [0, 1, 2, 3, 4, 4, 3, 2, 1, 0, -1, 5, 6, 0, 0, 1, 1, 2, 2, 9];
    const want = new Array<number>(6 * 3).fill(0);
    ids2.forEach((s, i) => {
      if (s >= 0 && s < 6) for (let j = 0; j < 3; j++) want[s * 3 + j] += x2.values[i * 3 + j];
    });
    const [got2] = await runOn('wasm', [x2, ints(ids2, [4, 5])], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 6));
    assert.deepEqual(got2.shape, [6, 3]);
    assert.ok(relMaxError(got2.values, want) <= 1e-6, '2-D ids');
    await compare('int32 x', [ints([5, -3, 7, 1, 2, 9], [6, 1]), ints([1, 0, 1, -1, 3, 1])], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 4), 1e-6);
    await compare('empty segments', [randn([3, 2], 4), ints([5, 5, 5])], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 4), 1e-6);
  });

  test('is fast for a [16*64, 128] embedding gradient into 256 rows', async () => {
    const ids = ints(Array.from({ length: 1024 }, (_, i) => (i * 37) % 256));
    const x = randn([1024, 128], 5);
    // (The cpu kernel needs seconds for this shape: one masked sum per segment. Plain JS instead.)
    const want = new Float64Array(256 * 128);
    ids.values.forEach((s, i) => {
      for (let j = 0; j < 128; j++) want[s * 128 + j] += x.values[i * 128 + j];
    });
    const [got] = await runOn('wasm', [x, ids], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 256));
    assert.ok(relMaxError(got.values, want) <= 1e-6, 'embedding grad');
    const [xt, st] = [tf.tensor(x.values, x.shape), tf.tensor(ids.values, ids.shape, 'int32')];
    tf.dispose(tf.unsortedSegmentSum(xt, st as tf.Tensor1D, 256));
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) tf.dispose(tf.unsortedSegmentSum(xt, st as tf.Tensor1D, 256));
    const ms = (performance.now() - t0) / 10;
    tf.dispose([xt, st]);
    assert.ok(ms < 20, `UnsortedSegmentSum took ${ms.toFixed(2)} ms`);
  });

  test('makes the gradient of tf.gather work and match cpu', async () => {
    const idx = ints(Array.from({ length: 96 }, (_, i) => (i * 7 + (i % 5)) % 50));
    const table = randn([50, 16], 6);
    const w = randn([96, 16], 7);
    await compare('d gather(axis 0)', [table, idx, w], (t, i, w) => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, i), w)))(t), 1e-6);
    const w1 = randn([50, 96], 8);
    await compare('d gather(axis 1)', [randn([50, 50], 9), idx, w1], (t, i, w) => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, i, 1), w)))(t), 1e-6);
  });

  test('leaks nothing', async () => {
    await assertNoLeakOnWasm('unsortedSegmentSum', [randn([20, 3], 1), ints([0, 1, 2, -1, 4, 0, 0, 1, 2, 3, 3, 3, 9, 1, 1, 0, 2, 2, 4, 4])], (x, s) =>
      tf.unsortedSegmentSum(x, s as tf.Tensor1D, 5),
    );
    await assertNoLeakOnWasm('gather grad', [randn([10, 4], 2), ints([1, 2, 2, 9])], (t, i) => tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, i)))(t));
  });
});

/**
 * [name, a batch, b batch]; each case runs at a small size (M,K,N = 5,7,3: left to the original
 * kernel, below the fix's work threshold) and a large one (16,32,48: the explicit-transpose /
 * fold / per-batch XNNPACK paths), with every transposeA × transposeB. Inputs get [..batch, M, K] /
 * [..batch, K, N], the last two axes swapped when transposed.
 */
const MATMUL_CASES: [string, number[], number[]][] = [
  ['rank 2', [], []],
  ['rank 3', [4], [4]],
  ['rank 4', [2, 3], [2, 3]],
  ['batch 1', [1], [1]],
  ['b not batched (fold)', [4], []],
  ['b batch 1 (fold)', [2, 3], [1]],
  ['a not batched', [], [3]],
  ['a batch 1', [1], [3]],
  ['broadcast both ways', [2, 1], [1, 3]],
  ['rank 4 × rank 3', [2, 3], [3]],
];
const SIZES: [number, number, number][] = [
  [5, 7, 3],
  [16, 32, 48],
];

const withT = (batch: number[], rows: number, cols: number, t: boolean) => [...batch, ...(t ? [cols, rows] : [rows, cols])];

describe('BatchMatMul on wasm', () => {
  for (const [name, ba, bb] of MATMUL_CASES) {
    test(name, async () => {
      for (const [M, K, N] of SIZES) {
        for (const tA of [false, true]) {
          for (const tB of [false, true]) {
            const a = randn(withT(ba, M, K, tA), 11);
            const b = randn(withT(bb, K, N, tB), 12);
            // The reference broadcasts batch dims explicitly: the cpu kernel (like the original wasm
            // one) gets two-way broadcasts wrong.
            const outBatch = tf.backend_util.assertAndGetBroadcastShape(ba, bb);
            const full = (t: tf.Tensor) => (outBatch.length ? tf.broadcastTo(t, [...outBatch, ...t.shape.slice(-2)]) : t);
            await compare(`${name} ${M}x${K}x${N} tA=${tA} tB=${tB}`, [a, b], (a, b) => tf.matMul(a, b, tA, tB), 1e-5, (a, b) =>
              tf.matMul(full(a), full(b), tA, tB),
            );
          }
        }
      }
    });
  }

  test('1-row / 1-column products', async () => {
    for (const [as, bs, tB] of [
      [[3, 1, 9], [3, 9, 1], false],
      [[64, 1, 32], [64, 64, 32], true],
      [[1, 128], [384, 128], true],
      [[64, 64, 32], [64, 32, 1], false],
    ] as [number[], number[], boolean][]) {
      await compare(`${as} x ${bs} tB=${tB}`, [randn(as, 13), randn(bs, 14)], (a, b) => tf.matMul(a, b, false, tB));
    }
  });

  test('training-sized shapes (XNNPACK path)', async () => {
    await compare('[1024,128]x[384,128]^T', [randn([1024, 128], 13), randn([384, 128], 14)], (a, b) => tf.matMul(a, b, false, true));
    await compare('[1024,128]^T x [1024,384]', [randn([1024, 128], 15), randn([1024, 384], 16)], (a, b) => tf.matMul(a, b, true, false));
    await compare('attention scores', [randn([64, 64, 32], 17), randn([64, 64, 32], 18)], (q, k) => tf.matMul(q, k, false, true));
    await compare('attention values', [randn([64, 64, 64], 19), randn([64, 64, 32], 20)], (p, v) => tf.matMul(p, v));
    await compare('attention grad', [randn([64, 64, 64], 21), randn([64, 64, 32], 22)], (p, d) => tf.matMul(p, d, true, false));
  });

  test('gradients through batched, transposed matmuls match cpu', async () => {
    await compare('d/d(q,k,v) attention', [randn([2, 3, 32, 32], 23), randn([2, 3, 32, 32], 24), randn([2, 3, 32, 32], 25)], (q, k, v) => {
      const g = tf.grads((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.sum(tf.square(tf.matMul(tf.softmax(tf.matMul(q, k, false, true)), v))));
      return g([q, k, v]);
    });
  });

  test('leaks nothing on any path', async () => {
    for (const [name, ba, bb] of MATMUL_CASES) {
      for (const [M, K, N] of SIZES) {
        for (const tA of [false, true]) {
          for (const tB of [false, true]) {
            await assertNoLeakOnWasm(`${name} ${M}x${K}x${N} tA=${tA} tB=${tB}`, [randn(withT(ba, M, K, tA), 1), randn(withT(bb, K, N, tB), 2)], (a, b) =>
              tf.matMul(a, b, tA, tB),
            );
          }
        }
      }
    }
  });
});

describe('_FusedMatMul on wasm', () => {
  const cases: [string, number[], number[], boolean, boolean][] = [
    ['2-D tB', [64, 32], [48, 32], false, true],
    ['2-D tA', [32, 64], [32, 48], true, false],
    ['batched a', [3, 16, 32], [32, 24], false, false],
    ['batched a, b', [3, 16, 32], [3, 24, 32], false, true],
    ['2-D plain', [16, 32], [32, 24], false, false],
  ];
  for (const [name, as, bs, tA, tB] of cases) {
    test(name, async () => {
      const N = tB ? bs[bs.length - 2] : bs[bs.length - 1];
      for (const activation of ['linear', 'relu'] as const) {
        await compare(`${name} ${activation} + bias`, [randn(as, 31), randn(bs, 32), randn([N], 33)], (a, b, bias) =>
          tf.fused.matMul({ a, b, transposeA: tA, transposeB: tB, bias, activation }),
        );
        await compare(`${name} ${activation}`, [randn(as, 34), randn(bs, 35)], (a, b) => tf.fused.matMul({ a, b, transposeA: tA, transposeB: tB, activation }));
      }
      await assertNoLeakOnWasm(`${name} fused`, [randn(as, 36), randn(bs, 37), randn([N], 38)], (a, b, bias) =>
        tf.fused.matMul({ a, b, transposeA: tA, transposeB: tB, bias, activation: 'relu' }),
      );
    });
  }
});

describe('a transformer training step on wasm', () => {
  test('forward + backward from tfjs-core ops matches cpu and hits no missing kernel', async () => {
    const [B, T, D, H, V] = [2, 8, 16, 2, 32];
    const hd = D / H;
    const ids = ints(Array.from({ length: B * T }, (_, i) => (i * 5 + 3) % V), [B, T]);
    const targets = ints(Array.from({ length: B * T }, (_, i) => (i * 3 + 1) % V));
    const params = [randn([V, D], 40), randn([D, 3 * D], 41), randn([D, D], 42), randn([D, 4 * D], 43), randn([4 * D, D], 44), randn([D], 45)];
    const step = (idsT: tf.Tensor, tgt: tf.Tensor, ...ps: tf.Tensor[]) => {
      const loss = (emb: tf.Tensor, wqkv: tf.Tensor, wo: tf.Tensor, w1: tf.Tensor, w2: tf.Tensor, g: tf.Tensor) => {
        const scale = (t: tf.Tensor, s: number) => tf.mul(t, tf.scalar(s));
        const norm = (x: tf.Tensor) => {
          // LayerNorm-ish from primitives, plus an RMSNorm-ish rsqrt path.
          const mu = tf.mean(x, -1, true);
          const xc = tf.sub(x, mu);
          const ln = tf.mul(tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), tf.scalar(1e-5)))), g);
          return tf.div(ln, tf.sqrt(tf.add(tf.mean(tf.square(ln), -1, true), tf.scalar(1))));
        };
        let x = tf.gather(emb, idsT); // [B,T,D]
        // Rotary-style mixing with cos/sin of positions.
        const pos = tf.reshape(tf.range(0, T), [T, 1]);
        const freq = tf.reshape(tf.range(0, D / 2), [1, D / 2]);
        const ang = tf.mul(tf.cast(pos, 'float32'), tf.exp(scale(tf.cast(freq, 'float32'), -0.5)));
        const [x1, x2] = tf.split(x, 2, -1);
        x = tf.concat([tf.sub(tf.mul(x1, tf.cos(ang)), tf.mul(x2, tf.sin(ang))), tf.add(tf.mul(x1, tf.sin(ang)), tf.mul(x2, tf.cos(ang)))], -1);
        const h = norm(x);
        const qkv = tf.reshape(tf.matMul(tf.reshape(h, [B * T, D]), wqkv), [B, T, 3, H, hd]);
        const heads = (i: number) => tf.transpose(tf.reshape(tf.slice(qkv, [0, 0, i, 0, 0], [B, T, 1, H, hd]), [B, T, H, hd]), [0, 2, 1, 3]);
        const [q, k, v] = [heads(0), heads(1), heads(2)];
        const causal = tf.greaterEqual(tf.reshape(tf.range(0, T), [T, 1]), tf.reshape(tf.range(0, T), [1, T]));
        const scores = tf.where(causal, scale(tf.matMul(q, k, false, true), 1 / Math.sqrt(hd)), tf.fill([B, H, T, T], -1e9));
        const att = tf.matMul(tf.softmax(scores), v); // [B,H,T,hd]
        const merged = tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [B * T, D]);
        x = tf.add(x, tf.reshape(tf.matMul(merged, wo), [B, T, D]));
        const u = tf.matMul(tf.reshape(norm(x), [B * T, D]), w1);
        const tanhGelu = tf.mul(scale(u, 0.5), tf.add(tf.scalar(1), tf.tanh(scale(tf.add(u, scale(tf.mul(u, tf.mul(u, u)), 0.044715)), Math.sqrt(2 / Math.PI)))));
        const erfGelu = tf.mul(scale(u, 0.5), tf.add(tf.scalar(1), tf.erf(scale(u, Math.SQRT1_2))));
        const silu = tf.mul(u, tf.sigmoid(u));
        const act = tf.add(tf.add(tanhGelu, erfGelu), scale(silu, 0.1));
        x = tf.add(tf.reshape(x, [B * T, D]), tf.matMul(act, w2));
        const logits = tf.matMul(norm(x), emb, false, true); // tied embeddings: [B*T, V]
        const logp = tf.logSoftmax(tf.sub(logits, tf.max(logits, -1, true)));
        const nll = tf.neg(tf.sum(tf.mul(logp, tf.oneHot(tgt as tf.Tensor1D, V)), -1));
        return tf.mean(nll);
      };
      const { value, grads } = tf.variableGrads(() => loss(...(ps as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor])) as tf.Scalar, ps as tf.Variable[]);
      return [value, ...Object.values(grads)];
    };
    const runStep = (backend: Backend) =>
      runOn(backend, [ids, targets, ...params], (idsT, tgt, ...ps) => {
        const vars = ps.map((p, i) => tf.variable(p, true, `p${i}_${backend}`));
        const out = step(idsT, tgt, ...vars);
        const copies = out.map((t) => tf.clone(t));
        tf.dispose(vars);
        return copies;
      });
    const ref = await runStep('cpu');
    const got = await runStep('wasm');
    assert.equal(got.length, params.length + 1);
    got.forEach((g, i) => {
      const err = relMaxError(g.values, ref[i].values);
      assert.ok(err <= 1e-4, `${i === 0 ? 'loss' : `grad ${i - 1}`}: max|Δ|/max|ref| = ${err.toExponential(3)}`);
    });
  });
});
