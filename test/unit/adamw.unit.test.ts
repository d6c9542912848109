/**
 * AdamW against PyTorch's algorithm recomputed in float64: decoupled decay, bias correction, and a
 * tensor left out of some steps (IST trains a few blocks per step) keeps its own update count, as
 * PyTorch's per-parameter `state['step']` does for a parameter without a gradient.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { AdamW } from '../../sidecar/src/train/adamw';
import { loraPlusScale } from '../../sidecar/src/train/trainer';

/** PyTorch's AdamW for one tensor, float64; `grads[t]` undefined: no gradient at step t (skipped). `counts`: bias-correction counts to use instead. */
function reference(p0: number[], grads: (number[] | undefined)[], o: { lr: number; beta1: number; beta2: number; eps: number; wd: number }, counts?: number[]): number[] {
  const p = [...p0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  let t = 0;
  for (const [k, g] of grads.entries()) {
    if (!g) continue;
    t = counts ? counts[k]! : t + 1;
    for (let i = 0; i < p.length; i++) {
      p[i]! *= 1 - o.lr * o.wd;
      m[i] = o.beta1 * m[i]! + (1 - o.beta1) * g[i]!;
      v[i] = o.beta2 * v[i]! + (1 - o.beta2) * g[i]! ** 2;
      const mhat = m[i]! / (1 - o.beta1 ** t);
      const vhat = v[i]! / (1 - o.beta2 ** t);
      p[i]! -= (o.lr * mhat) / (Math.sqrt(vhat) + o.eps);
    }
  }
  return p;
}

describe('AdamW', () => {
  test('matches PyTorch; a tensor skipped at some steps is bias-corrected by its own update count', async () => {
    await tf.setBackend('cpu');
    const o = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0.1 };
    const w0 = [0.5, -1, 2];
    const b0 = [0.25, -0.75];
    const gradAt = (n: number, t: number) => Array.from({ length: n }, (_, i) => Math.sin(1 + 3 * t + i) * (i + 1));
    // w trains every step; b only at steps 2, 5 and 6 (1-based), as an IST block drawn rarely.
    const steps = 6;
    const bSteps = new Set([2, 5, 6]);
    const params = new Map<string, tf.Tensor>([
      ['w', tf.tensor1d(w0)],
      ['b', tf.tensor1d(b0)],
    ]);
    const opt = new AdamW({ lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.wd });
    const before = tf.memory().numTensors;
    for (let t = 1; t <= steps; t++) {
      const grads = new Map<string, tf.Tensor>([['w', tf.tensor1d(gradAt(3, t))]]);
      if (bSteps.has(t)) grads.set('b', tf.tensor1d(gradAt(2, t)));
      opt.step(params, grads);
      tf.dispose([...grads.values()]);
    }
    // Moments appear once per tensor; nothing else is left behind.
    assert.equal(tf.memory().numTensors, before + 4);
    assert.equal(opt.state.step, steps);
    assert.deepEqual(Object.fromEntries(opt.state.steps), { w: 6, b: 3 });
    const wantW = reference(w0, Array.from({ length: steps }, (_, i) => gradAt(3, i + 1)), o);
    const wantB = reference(b0, Array.from({ length: steps }, (_, i) => (bSteps.has(i + 1) ? gradAt(2, i + 1) : undefined)), o);
    const gotW = Array.from(params.get('w')!.dataSync());
    const gotB = Array.from(params.get('b')!.dataSync());
    gotW.forEach((x, i) => assert.ok(Math.abs(x - wantW[i]!) < 1e-6, `w[${i}] ${x} vs ${wantW[i]}`));
    gotB.forEach((x, i) => assert.ok(Math.abs(x - wantB[i]!) < 1e-6, `b[${i}] ${x} vs ${wantB[i]}`));
    // Bias correction by the optimizer's step count instead would move b elsewhere (beyond the tolerance).
    const globalCount = reference(b0, [gradAt(2, 2), gradAt(2, 5), gradAt(2, 6)], o, [2, 5, 6]);
    assert.ok(globalCount.some((x, i) => Math.abs(x - wantB[i]!) > 1e-4), 'the per-tensor count matters here');
    tf.dispose([...params.values()]);
    opt.dispose();
  });

  test('LoRA+: lora_B matrices and one-dimensional tensors step at lr × ratio, the rest at lr (PEFT’s create_loraplus_optimizer groups)', async () => {
    await tf.setBackend('cpu');
    const o = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0.1 };
    const start: Record<string, number[][]> = { 'q.lora_A.weight': [[0.5, -1], [2, 0.25]], 'q.lora_B.weight': [[0.1, 0.2], [-0.3, 0.4]], 'q.bias': [[0.3, -0.2]] };
    const params = new Map<string, tf.Tensor>(Object.entries(start).map(([n, v]) => [n, n === 'q.bias' ? tf.tensor1d(v[0]!) : tf.tensor2d(v)]));
    const scale = loraPlusScale(16, params, o.lr);
    assert.deepEqual(Object.keys(start).map(scale), [1, 16, 16]);
    assert.equal(loraPlusScale(undefined, params, o.lr)('q.lora_B.weight'), 1);
    // LoRA on an embedding: PEFT's embedding group at loraplus_lr_embedding = 1e-6, whatever the ratio.
    assert.equal(scale('model.embed_tokens.lora_embedding_A') * o.lr, 1e-6);
    assert.equal(scale('model.embed_tokens.lora_embedding_B') * o.lr, 1e-6);
    const opt = new AdamW({ lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.wd });
    const gradAt = (n: string, t: number) => start[n]!.flat().map((_, i) => Math.cos(2 + t + 5 * i));
    for (let t = 1; t <= 3; t++) {
      const grads = new Map<string, tf.Tensor>([...params].map(([n, p]) => [n, tf.tensor(gradAt(n, t), p.shape)]));
      opt.step(params, grads, o.lr, () => true, scale);
      tf.dispose([...grads.values()]);
    }
    for (const [n, ratio] of [['q.lora_A.weight', 1], ['q.lora_B.weight', 16], ['q.bias', 16]] as const) {
      const want = reference(start[n]!.flat(), [1, 2, 3].map((t) => gradAt(n, t)), { ...o, lr: o.lr * ratio });
      Array.from(params.get(n)!.dataSync()).forEach((x, i) => assert.ok(Math.abs(x - want[i]!) < 1e-6, `${n}[${i}] ${x} vs ${want[i]}`));
    }
    tf.dispose([...params.values()]);
    opt.dispose();
  });
});
