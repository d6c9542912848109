/** WebGPU matmul (BatchMatMul, _FusedMatMul) against the cpu backend; every tile config. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { K as FUSED, fusedLinear } from '../../sidecar/src/backend/native/fused';
import { loadMatMulPlan } from '../../sidecar/src/backend/webgpu/kernels';
import { CONFIGS, chooseConfig, chooseSplits, describePlan, foldBatch, forceMatMulConfig, forceMatMulSplitK, setMatMulPlan, shapeKey, tfjsRoute, vec4Loads } from '../../sidecar/src/backend/webgpu/matmul';
import { assertClose, onCpu, useWebGpu, values } from '../helpers/webgpu';

before(async () => {
  await useWebGpu();
});
after(() => {
  forceMatMulConfig(undefined);
  forceMatMulSplitK(undefined);
});

interface Case {
  a: number[];
  b: number[];
  ta: boolean;
  tb: boolean;
}

const tol = (K: number) => 2e-6 * Math.max(8, K);

async function check(c: Case, what: string, fused?: { bias?: number[]; activation?: 'linear' | 'relu' | 'relu6' | 'elu' | 'sigmoid' | 'leakyrelu'; alpha?: number }): Promise<void> {
  const av = values(tf.util.sizeFromShape(c.a), 1 + c.a.length);
  const bv = values(tf.util.sizeFromShape(c.b), 7 + c.b.length);
  const biasv = fused?.bias ? values(tf.util.sizeFromShape(fused.bias), 11) : undefined;
  // The reference broadcasts the batch dims explicitly (the cpu backend's BatchMatMul mishandles
  // broadcasts on both sides, e.g. [2,1] × [1,3]).
  const outBatch = tf.backend_util.assertAndGetBroadcastShape(c.a.slice(0, -2), c.b.slice(0, -2));
  const f = (reference = false) =>
    tf.tidy(() => {
      let a = tf.tensor(av, c.a);
      let b = tf.tensor(bv, c.b);
      if (reference) {
        a = tf.broadcastTo(a, [...outBatch, ...c.a.slice(-2)]);
        b = tf.broadcastTo(b, [...outBatch, ...c.b.slice(-2)]);
      }
      if (!fused) return tf.matMul(a, b, c.ta, c.tb);
      return tf.fused.matMul({ a, b, transposeA: c.ta, transposeB: c.tb, bias: biasv ? tf.tensor(biasv, fused.bias) : undefined, activation: fused.activation ?? 'linear', leakyreluAlpha: fused.alpha });
    });
  const ref = await onCpu(() => {
    const y = f(true);
    const out = { shape: y.shape, data: y.dataSync().slice() };
    y.dispose();
    return out;
  });
  const before = tf.memory().numTensors;
  const y = f();
  assert.deepEqual(y.shape, ref.shape, `${what}: shape`);
  const K = c.ta ? c.a[c.a.length - 2]! : c.a[c.a.length - 1]!;
  assertClose(await y.data(), ref.data, tol(K), what, 1e-6);
  y.dispose();
  assert.equal(tf.memory().numTensors, before, `${what}: tensors leak`);
}

const tr = (s: number[], t: boolean) => (t ? [...s.slice(0, -2), s[s.length - 1]!, s[s.length - 2]!] : s);
/** op(A) is [..., M, K], op(B) is [..., K, N]. */
const mm = (M: number, K: number, N: number, ta: boolean, tb: boolean, batchA: number[] = [], batchB: number[] = []): Case => ({ a: tr([...batchA, M, K], ta), b: tr([...batchB, K, N], tb), ta, tb });
const TRANSPOSES: [boolean, boolean][] = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

test('the kernels replace TF.js own on webgpu', () => {
  for (const name of [tf.BatchMatMul, tf._FusedMatMul, FUSED.linear]) assert.ok((tf.getKernel(name, 'webgpu')?.kernelFunc as { peft?: true } | undefined)?.peft, name);
});

test('config choice: big for the vocabulary matmuls, thin for rank-8, mid for small K, else mid4', () => {
  forceMatMulConfig(undefined);
  assert.equal(chooseConfig(2048, 8192, 768, 1).name, 'big');
  assert.equal(chooseConfig(2048, 768, 768, 1).name, 'mid4');
  assert.equal(chooseConfig(2048, 8, 768, 1).name, 'thin');
  assert.equal(chooseConfig(8, 768, 2048, 1).name, 'thin');
  assert.equal(chooseConfig(2048, 768, 8, 1).name, 'mid');
  assert.equal(chooseConfig(256, 256, 64, 96).name, 'mid4');
});

test('batch folding', () => {
  assert.deepEqual(foldBatch([], []), { batch: 1, outBatch: [], ob: [1, 1, 1], sa: [0, 0, 0], sb: [0, 0, 0] });
  assert.deepEqual(foldBatch([2, 3], [2, 3]), { batch: 6, outBatch: [2, 3], ob: [1, 1, 6], sa: [0, 0, 1], sb: [0, 0, 1] });
  assert.deepEqual(foldBatch([2, 1], [1, 3]), { batch: 6, outBatch: [2, 3], ob: [1, 2, 3], sa: [0, 1, 0], sb: [0, 0, 1] });
  assert.deepEqual(foldBatch([4], [1]), { batch: 4, outBatch: [4], ob: [1, 1, 4], sa: [0, 0, 1], sb: [0, 0, 0] });
  assert.equal(foldBatch([2, 1, 2, 1], [1, 2, 1, 2]), undefined);
  assert.equal(foldBatch([2], [3]), undefined);
});

for (const cfg of Object.values(CONFIGS)) {
  for (const db of cfg.S === 1 ? [false, true] : [false]) {
    test(`${cfg.name}${db ? ' double-buffered' : ''}: four transposes, edge tiles, K not a multiple of BK`, async () => {
      forceMatMulConfig(cfg, db);
      try {
        const M = cfg.BM + 3;
        const N = cfg.BN + 5;
        const K = 2 * cfg.BK + 3;
        for (const [ta, tb] of TRANSPOSES) await check(mm(M, K, N, ta, tb), `${cfg.name} ${ta}${tb} ${M}×${K}×${N}`);
        await check(mm(1, K, 9, false, false), `${cfg.name} M=1`);
        await check(mm(7, K, 1, true, true), `${cfg.name} N=1`);
        await check(mm(5, 1, 6, false, true), `${cfg.name} K=1`);
      } finally {
        forceMatMulConfig(undefined);
      }
    });
  }
}

test('vec4 loads: which operands take them', () => {
  assert.deepEqual(vec4Loads(CONFIGS.big, 8, 8, 8, false, false), { va: false, vb: false }, 'not a vec4 config');
  assert.deepEqual(vec4Loads(CONFIGS.big4, 6, 8, 8, false, false), { va: true, vb: true }, 'A along K, B along N');
  assert.deepEqual(vec4Loads(CONFIGS.big4, 6, 8, 8, true, false), { va: false, vb: true }, 'Aᵀ along M = 6');
  assert.deepEqual(vec4Loads(CONFIGS.mid4, 8, 6, 12, false, true), { va: true, vb: true }, 'Bᵀ along K');
  assert.deepEqual(vec4Loads(CONFIGS.mid4, 8, 6, 10, false, false), { va: false, vb: false });
});

for (const cfg of [CONFIGS.big4, CONFIGS.mid4]) {
  test(`${cfg.name}: vec4 loads in every transpose, edge tiles, batches, split K, one operand vec4`, async () => {
    forceMatMulConfig(cfg);
    try {
      const M = cfg.BM + 4;
      const N = cfg.BN + 8;
      const K = 2 * cfg.BK + 4;
      for (const [ta, tb] of TRANSPOSES) {
        assert.deepEqual(vec4Loads(cfg, M, N, K, ta, tb), { va: true, vb: true });
        await check(mm(M, K, N, ta, tb), `${cfg.name} ${ta}${tb} ${M}×${K}×${N}`);
        await check(mm(12, K, 20, ta, tb, [3], [3]), `${cfg.name} batched ${ta}${tb}`, { bias: [20], activation: 'relu' });
        await check(mm(12, K, 20, ta, tb, [2, 1], [1, 3]), `${cfg.name} broadcast ${ta}${tb}`);
      }
      // Aᵀ with M = 9: A scalar, B vec4.
      assert.deepEqual(vec4Loads(cfg, 9, N, K, true, false), { va: false, vb: true });
      await check(mm(9, K, N, true, false), `${cfg.name} A scalar, B vec4`);
      forceMatMulSplitK(3);
      await check(mm(M, 5 * cfg.BK + 4, N, false, true), `${cfg.name} split K`);
    } finally {
      forceMatMulConfig(undefined);
      forceMatMulSplitK(undefined);
    }
  });
}

test('a matmul plan picks the kernel per shape; forced choices win over it; bad plans are refused', async () => {
  const shape = { M: 40, N: 36, K: 300, batch: 1, ta: false, tb: true, bias: false };
  const plain = describePlan(shape);
  try {
    setMatMulPlan({ [shapeKey(shape)]: 'wide/split2', [shapeKey({ ...shape, ta: true })]: 'tfjs' });
    assert.equal(describePlan(shape), 'wide/split2');
    assert.equal(describePlan({ ...shape, ta: true }), 'tfjs');
    assert.equal(describePlan({ ...shape, M: 44 }), plain, 'other shapes: the heuristic');
    await check(mm(40, 300, 36, false, true), 'planned wide/split2');
    await check(mm(40, 300, 36, true, true), 'planned tfjs');
    forceMatMulConfig(CONFIGS.mid);
    assert.equal(describePlan(shape), 'mid', 'a forced config wins');
    forceMatMulConfig(undefined);
    assert.throws(() => setMatMulPlan({ [shapeKey(shape)]: 'huge' }), /'huge' is not a shape key and kernel choice/);
    assert.throws(() => setMatMulPlan({ '40x36': 'mid' }), /not a shape key/);
  } finally {
    setMatMulPlan(undefined);
    forceMatMulConfig(undefined);
  }
  assert.equal(describePlan(shape), plain);
});

test('PEFT_LAB_WEBGPU_MATMUL_PLAN files: loaded, or refused naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peft-plan-'));
  try {
    const file = join(dir, 'plan.json');
    writeFileSync(file, JSON.stringify({ version: 1, device: 'x', createdAt: '', choices: { '1:nn:64x64x64': 'big4', '1:nt:8x8x8': 'auto' } }));
    assert.equal(loadMatMulPlan(file), 2);
    assert.equal(describePlan({ M: 64, N: 64, K: 64, batch: 1, ta: false, tb: false, bias: false }), 'big4');
    writeFileSync(file, '{"version":1,"choices":[]}');
    assert.throws(() => loadMatMulPlan(file), new RegExp(`${file}: not a matmul plan`));
    writeFileSync(file, '{');
    assert.throws(() => loadMatMulPlan(file), new RegExp(`PEFT_LAB_WEBGPU_MATMUL_PLAN: ${file}: `));
    assert.throws(() => loadMatMulPlan(join(dir, 'missing.json')), /missing\.json: ENOENT/);
    assert.equal(loadMatMulPlan(undefined), 0);
    assert.equal(describePlan({ M: 64, N: 64, K: 64, batch: 1, ta: false, tb: false, bias: false }), 'mid4', 'unset: the heuristic');
  } finally {
    setMatMulPlan(undefined);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('heuristic shapes (small): rank-8 thin, small K, batched attention-like', async () => {
  for (const [ta, tb] of TRANSPOSES) {
    await check(mm(70, 40, 8, ta, tb), `thin N=8 ${ta}${tb}`);
    await check(mm(8, 150, 33, ta, tb), `thin M=8 ${ta}${tb}`);
    await check(mm(33, 8, 70, ta, tb), `small K ${ta}${tb}`);
  }
  await check(mm(19, 8, 21, false, true, [3, 2], [3, 2]), 'batched A·Bᵀ');
  await check(mm(19, 21, 8, false, false, [6], [6]), 'batched A·B');
});

test('batch broadcasting', async () => {
  await check(mm(9, 13, 11, false, false, [3], []), 'A batched, B 2-D');
  await check(mm(9, 13, 11, true, false, [], [2, 3]), 'A 2-D, B batched');
  await check(mm(9, 13, 11, false, true, [2, 1], [1, 3]), 'outer broadcast both ways');
  await check(mm(9, 13, 11, true, true, [2, 3, 1], [3, 2]), 'rank-3 batch');
  await check(mm(9, 13, 11, false, false, [1], [1]), 'unit batch');
});

test('fused: bias, activations, fallback for prelu', async () => {
  for (const [ta, tb] of TRANSPOSES) await check(mm(37, 29, 45, ta, tb), `bias relu ${ta}${tb}`, { bias: [45], activation: 'relu' });
  await check(mm(37, 29, 45, false, false, [2]), 'bias [1,N] linear', { bias: [1, 45] });
  await check(mm(37, 29, 45, false, false), 'scalar bias', { bias: [1], activation: 'relu6' });
  await check(mm(12, 29, 8, false, false), 'thin bias elu', { bias: [8], activation: 'elu' });
  await check(mm(37, 29, 45, false, false), 'sigmoid', { activation: 'sigmoid' });
  await check(mm(37, 29, 45, false, false), 'leakyrelu', { bias: [45], activation: 'leakyrelu', alpha: 0.1 });
  // prelu: TF.js's own kernel
  const a = tf.tensor(values(6 * 5, 3), [6, 5]);
  const b = tf.tensor(values(5 * 4, 4), [5, 4]);
  const w = tf.tensor(values(4, 5), [4]);
  const before = tf.memory().numTensors;
  const y = tf.fused.matMul({ a, b, activation: 'prelu', preluActivationWeights: w });
  const ref = await onCpu(() => tf.tidy(() => tf.fused.matMul({ a: tf.tensor(values(30, 3), [6, 5]), b: tf.tensor(values(20, 4), [5, 4]), activation: 'prelu', preluActivationWeights: tf.tensor(values(4, 5), [4]) }).dataSync().slice()));
  assertClose(await y.data(), ref, 1e-5, 'prelu', 1e-6);
  y.dispose();
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([a, b, w]);
});

test('gradients through tf.matMul and fused matMul match the cpu backend', async () => {
  const av = values(23 * 17, 1);
  const bv = values(17 * 19, 2);
  const bias = values(19, 3);
  const dy = values(23 * 19, 4);
  const f = () =>
    tf.tidy(() => {
      const a = tf.tensor2d(av, [23, 17]);
      const b = tf.tensor2d(bv, [17, 19]);
      const bs = tf.tensor1d(bias);
      const d = tf.tensor2d(dy, [23, 19]);
      const g = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, w), d)))([a, b]);
      const gf = tf.grads((x: tf.Tensor, w: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias: c, activation: 'relu' }), d)))([a, b, bs]);
      return [...g, ...gf];
    });
  const ref = await onCpu(() => {
    const ts = f();
    const out = ts.map((t) => t.dataSync().slice());
    tf.dispose(ts);
    return out;
  });
  const before = tf.memory().numTensors;
  const ts = f();
  const got = await Promise.all(ts.map((t) => t.data()));
  tf.dispose(ts);
  assert.equal(tf.memory().numTensors, before);
  for (let i = 0; i < ref.length; i++) assertClose(got[i]!, ref[i]!, tol(23), `grad ${i}`, 1e-6);
});

test('split-K choice: long K with few output tiles (weight and input gradients), none for the forward GEMMs', () => {
  const mid = CONFIGS.mid;
  assert.equal(chooseSplits(mid, 768, 768, 2048, 1), 4); // attn c_proj weight grad: 144 tiles
  assert.equal(chooseSplits(mid, 768, 3072, 2048, 1), 4); // c_fc weight grad: 576 tiles
  assert.equal(chooseSplits(mid, 3072, 768, 2048, 1), 4);
  assert.equal(chooseSplits(mid, 768, 2304, 2048, 1), 4);
  assert.equal(chooseSplits(mid, 2048, 768, 3072, 1), 4); // MLP down-projection / c_fc input grad
  assert.equal(chooseSplits(mid, 2048, 768, 8192, 1), 8); // LM-head input grad
  assert.equal(chooseSplits(mid, 2048, 2304, 768, 1), 1);
  assert.equal(chooseSplits(mid, 2048, 768, 768, 1), 1);
  assert.equal(chooseSplits(mid, 8192, 768, 2048, 1), 1); // 1536 tiles
  assert.equal(chooseSplits(CONFIGS.thin, 768, 8, 2048, 1), 1);
});

for (const cfg of [CONFIGS.mid, CONFIGS.big]) {
  test(`${cfg.name} split-K across workgroups: four transposes, bias + activation, batched, uneven splits`, async () => {
    try {
      for (const [splits, db] of [[2, false], [3, false], [3, true]] as const) {
        forceMatMulConfig(cfg, db);
        forceMatMulSplitK(splits);
        const M = cfg.BM + 3;
        const N = cfg.BN + 5;
        const K = 5 * cfg.BK + 3;
        for (const [ta, tb] of TRANSPOSES) await check(mm(M, K, N, ta, tb), `${cfg.name}${db ? ' db' : ''} split ${splits} ${ta}${tb}`);
        await check(mm(M, K, N, true, false), `${cfg.name}${db ? ' db' : ''} split ${splits} bias relu`, { bias: [N], activation: 'relu' });
        await check(mm(9, K, 11, false, true, [2, 3], [2, 3]), `${cfg.name}${db ? ' db' : ''} split ${splits} batched`, { bias: [1], activation: 'leakyrelu', alpha: 0.1 });
        await check(mm(7, 2, 5, false, false), `${cfg.name}${db ? ' db' : ''} split ${splits} K < splits`);
      }
    } finally {
      forceMatMulSplitK(undefined);
      forceMatMulConfig(undefined);
    }
  });
}

test("TF.js routes: vocabulary-sized A·B (≥ 528 128×128 tiles) to its vec4 A·B, long-K Aᵀ·B to its kernel; A·Bᵀ stays ours", async () => {
  forceMatMulConfig(undefined);
  assert.equal(tfjsRoute(2048, 8192, 768, 1, false, false), 'viaTfjs');
  assert.equal(tfjsRoute(2048, 8192, 768, 1, false, true), undefined, 'A·Bᵀ (the tied LM head): big');
  assert.equal(tfjsRoute(2048, 2304, 768, 1, false, false), undefined);
  assert.equal(tfjsRoute(2048, 8190, 768, 1, false, false), undefined, 'N not a multiple of 4');
  assert.equal(tfjsRoute(768, 768, 2048, 1, true, false), 'kernel', 'weight gradient over 2048 tokens');
  assert.equal(tfjsRoute(768, 768, 512, 1, true, false), undefined, 'short K');
  assert.equal(tfjsRoute(768, 8, 2048, 1, true, false), undefined, 'rank-8: thin');
  assert.equal(tfjsRoute(768, 768, 2048, 2, true, false), undefined, 'batched');
  forceMatMulSplitK(2);
  try {
    assert.equal(tfjsRoute(768, 768, 2048, 1, true, false), undefined, 'a forced K split times our kernel');
    assert.equal(describePlan({ M: 72, N: 40, K: 1100, batch: 1, ta: true, tb: false, bias: false }), 'mid4/split2', "PeftLinear's weight gradient in the split-K test");
  } finally {
    forceMatMulSplitK(undefined);
  }
  assert.equal(describePlan({ M: 2048, N: 8192, K: 768, batch: 1, ta: false, tb: true, bias: false }), 'big');
  assert.equal(describePlan({ M: 768, N: 3072, K: 2048, batch: 1, ta: true, tb: false, bias: false }), 'tfjs');
  // 2048×4224 output: 16 × 33 = 528 tiles of 128×128.
  assert.equal(tfjsRoute(2048, 4224, 20, 1, false, false), 'viaTfjs');
  await check(mm(2048, 20, 4224, false, false), 'route A·B bias', { bias: [4224] });
  await check(mm(2048, 20, 4224, false, true), 'A·Bᵀ on big');
  await check(mm(40, 1030, 36, true, false), 'route Aᵀ·B long K');
});

/** PeftLinear against the cpu composite (matMul + add): the forward, and gradients wrt x, w and bias. */
async function checkLinear(n: number, inF: number, outF: number, tb: boolean, what: string): Promise<void> {
  const xv = values(n * inF, 21);
  const wv = values(inF * outF, 22);
  const bv = values(outF, 23);
  const dv = values(n * outF, 24);
  const wShape: [number, number] = tb ? [outF, inF] : [inF, outF];
  const f = (fused: boolean) =>
    tf.tidy(() => {
      const x = tf.tensor2d(xv, [n, inF]);
      const w = tf.tensor2d(wv, wShape);
      const bias = tf.tensor1d(bv);
      const d = tf.tensor2d(dv, [n, outF]);
      const lin = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => {
        if (!fused) return tf.add(tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D, false, tb), b);
        const y = fusedLinear(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D, tb);
        assert.ok(y, `${what}: PeftLinear on webgpu`);
        return y;
      };
      const y = lin(x, w, bias);
      const g = tf.grads((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(lin(x, w, b), d)))([x, w, bias]);
      return [y, ...g];
    });
  const ref = await onCpu(() => {
    const ts = f(false);
    const out = ts.map((t) => ({ shape: t.shape, data: t.dataSync().slice() }));
    tf.dispose(ts);
    return out;
  });
  const before = tf.memory().numTensors;
  const ts = f(true);
  const got = await Promise.all(ts.map((t) => t.data()));
  ts.forEach((t, i) => assert.deepEqual(t.shape, ref[i]!.shape, `${what} ${i}: shape`));
  tf.dispose(ts);
  assert.equal(tf.memory().numTensors, before, `${what}: tensors leak`);
  const names = ['y', 'dx', 'dw', 'dbias'];
  const ks = [inF, outF, n, n];
  for (let i = 0; i < ref.length; i++) assertClose(got[i]!, ref[i]!.data, tol(ks[i]!), `${what} ${names[i]}`, 1e-6);
}

test('PeftLinear: forward and gradients (x, w, bias) against matMul + add on cpu, both weight layouts', async () => {
  for (const tb of [false, true]) {
    await checkLinear(37, 29, 45, tb, `linear ${tb}`);
    await checkLinear(70, 24, 8, tb, `linear rank-8 out ${tb}`);
  }
  // Long K in the weight gradient (n = 1100 rows): the split-K path with the default heuristic
  // (forced to 2 here, the shapes being small).
  forceMatMulSplitK(2);
  try {
    for (const tb of [false, true]) await checkLinear(1100, 40, 72, tb, `linear split-K ${tb}`);
  } finally {
    forceMatMulSplitK(undefined);
  }
});
