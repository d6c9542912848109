/**
 * One whole training step of a small GPT-2 (forward, loss, backward, AdamW) on WebGPU with the fused
 * WGSL kernels, against the same step on the cpu backend (tfjs composites): LoRA and full.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { loraFactory } from '../../sidecar/src/adapters/bench-lora';
import { benchConfig, type BenchCase } from '../../sidecar/src/bench/bench';
import { randomModel } from '../../sidecar/src/models/init';
import { AdamW } from '../../sidecar/src/train/adamw';
import { assertClose, useWebGpu } from '../helpers/webgpu';

const LR = 1e-2;
const CASE: BenchCase = { case: 'test', d: 32, layers: 2, heads: 4, seq: 25, batch: 2, vocab: 50, rank: 4 };

interface StepResult {
  loss: number;
  grads: Map<string, Float32Array>;
  updated: Map<string, Float32Array>;
}

async function step(mode: 'lora' | 'full'): Promise<StepResult> {
  const model = randomModel(benchConfig(CASE), 3);
  const adapter = mode === 'lora' ? loraFactory()(model, CASE.rank, 2 * CASE.rank, ['c_attn']) : undefined;
  // LoRA's B starts at zero (so A's gradient would be zero): give it values to test both.
  if (adapter)
    for (const [name, t] of adapter.trainable)
      if (/lora_B/.test(name)) {
        adapter.trainable.set(name, tf.keep(tf.randomNormal(t.shape, 0, 0.1, 'float32', 11)));
        t.dispose();
      }
  const trainable = adapter?.trainable ?? model.params;
  const names = [...trainable.keys()];
  const ids = tf.tensor2d(Array.from({ length: CASE.batch * (CASE.seq - 1) }, (_, i) => (i * 7 + 3) % CASE.vocab), [CASE.batch, CASE.seq - 1], 'int32');
  const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, ids, { hooks: adapter?.hooks, extra: adapter?.trainable, training: true });
  const out: StepResult = { loss: (await loss.data())[0]!, grads: new Map(), updated: new Map() };
  for (const [n, g] of grads) out.grads.set(n, (await g.data()) as Float32Array);
  const opt = new AdamW({ lr: LR, weightDecay: 0.01 });
  opt.step(trainable, grads);
  for (const n of names) out.updated.set(n, (await trainable.get(n)!.data()) as Float32Array);
  tf.dispose([loss, ids, ...grads.values()]);
  opt.dispose();
  adapter?.dispose();
  model.dispose();
  return out;
}

before(async () => {
  await useWebGpu();
});

for (const mode of ['lora', 'full'] as const) {
  test(`a ${mode} training step on WebGPU matches the cpu backend (loss, every gradient, AdamW update), no leaks`, async () => {
    await tf.setBackend('cpu');
    const ref = await step(mode);
    await tf.setBackend('webgpu');
    const before = tf.memory().numTensors;
    const got = await step(mode);
    assert.equal(tf.memory().numTensors, before, 'tensors leaked');
    assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${got.loss} vs ${ref.loss}`);
    assert.deepEqual([...got.grads.keys()].sort(), [...ref.grads.keys()].sort());
    for (const [n, g] of ref.grads) assertClose(got.grads.get(n)!, g, 1e-4, `grad ${n}`);
    // Adam's first step moves each weight by about lr·sign(g), so weights whose gradient is rounding
    // noise (GPT-2's key biases have an analytically zero gradient) may move either way: those are
    // left out; the others must agree to a thousandth of the learning rate.
    for (const [n, p] of ref.updated) {
      const g = ref.grads.get(n)!;
      const gmax = g.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      const keep = (_: number, i: number) => Math.abs(g[i]!) > 1e-3 * gmax;
      assertClose(got.updated.get(n)!.filter(keep), p.filter(keep), 0, `updated ${n}`, 1e-3 * LR);
    }
  });
}
