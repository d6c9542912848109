/**
 * Numeric parity with transformers 5.17 on every fixture in ../shared/fixtures/hf: logits and loss
 * within 1e-4·max|ref|, every gradient within 1e-3·max|ref|, on the test backend (wasm in CI).
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { disposeBatch, readInputBatch } from '../../sidecar/src/io/tensors';
import { readSafetensors, toFloat32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, assertNoLeak, fixture, refGradName, useTestBackend } from '../helpers/numeric';


const models = readdirSync(fixture('hf')).sort();

describe('Hugging Face parity', () => {
  let backend = '';
  before(async () => {
    backend = await useTestBackend();
  });

  it('covers all four architectures, on the test backend', () => {
    assert.deepEqual(models, ['bert-cls-tiny', 'gpt2-tiny', 'llama-tiny', 'vit-tiny']);
    assert.equal(backend, process.env.PEFT_LAB_TEST_BACKEND ?? 'wasm');
  });

  for (const name of models) {
    describe(name, () => {
      const dir = fixture('hf', name);
      let model: Model;
      let refs: Map<string, HostTensor>;
      before(async () => {
        model = await Model.load(dir);
        refs = await readSafetensors(fixture('hf', name, 'refs.safetensors'));
      });

      it('logits and loss match transformers', async () => {
        const batch = await readInputBatch(fixture('hf', name, 'refs.safetensors'), model.arch.inputKind);
        try {
          const logits = tf.tidy(() => model.forward(batch.inputs));
          const loss = tf.tidy(() => model.loss(logits, batch.labels!));
          assert.deepEqual(logits.shape, refs.get('logits')!.shape);
          assertClose('logits', await logits.data(), toFloat32(refs.get('logits')!), 1e-4);
          assertClose('loss', await loss.data(), toFloat32(refs.get('loss')!), 1e-4);
          tf.dispose([logits, loss]);
        } finally {
          disposeBatch(batch);
        }
      });

      it('every gradient matches PyTorch, and nothing leaks', async () => {
        const batch = await readInputBatch(fixture('hf', name, 'refs.safetensors'), model.arch.inputKind);
        const names = [...model.params.keys()];
        // Key biases have an analytically zero gradient (softmax ignores a per-row shift): PyTorch's
        // value there is rounding noise (~1e-13), so every tensor is also allowed a noise floor of
        // 1e-6 of the model's largest gradient, far below the 1e-3 tolerance of any real gradient.
        let globalMax = 0;
        for (const n of names) globalMax = Math.max(globalMax, ...toFloat32(refs.get(`grad.${refGradName(n)}`)!).map(Math.abs));
        try {
          await assertNoLeak(async () => {
            const { loss, grads } = model.lossAndGrads(names, batch.inputs, batch.labels!);
            assertClose('loss', await loss.data(), toFloat32(refs.get('loss')!), 1e-4);
            for (const n of names) {
              const ref = refs.get(`grad.${refGradName(n)}`);
              assert.ok(ref, `fixture has no gradient for ${n}`);
              const refData = toFloat32(ref);
              const g = await grads.get(n)!.data();
              const scale = Math.max(Math.max(...refData.map(Math.abs)), 1e-6 * globalMax);
              let maxDiff = 0;
              for (let i = 0; i < refData.length; i++) maxDiff = Math.max(maxDiff, Math.abs(g[i]! - refData[i]!));
              assert.ok(maxDiff <= 1e-3 * scale, `grad ${n}: max|Δ| ${maxDiff.toExponential(3)} > 1e-3 × ${scale.toExponential(3)}`);
            }
            tf.dispose([loss, ...grads.values()]);
          });
          // Every parameter in the checkpoint has a gradient in the fixture and vice versa.
          const refNames = [...refs.keys()].filter((k) => k.startsWith('grad.')).sort();
          assert.deepEqual(names.map((n) => `grad.${refGradName(n)}`).sort(), refNames);
        } finally {
          disposeBatch(batch);
        }
      });
    });
  }
});
