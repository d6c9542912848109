/**
 * The causal-LM loss by slices of rows (ops.chunkedCausalLmLoss), used for training when a batch's
 * logits would be large (a real vocabulary): the same loss and gradients as the one-matmul loss, on
 * random tensors sliced unevenly and on the fixtures against transformers' reference gradients.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { disposeBatch, readInputBatch } from '../../sidecar/src/io/tensors';
import { readSafetensors, toFloat32 } from '../../sidecar/src/io/safetensors';
import { Model } from '../../sidecar/src/models/model';
import { causalLmLoss, chunkedCausalLmLoss } from '../../sidecar/src/models/ops';
import { assertClose, assertNoLeak, fixture, refGradName, useTestBackend } from '../helpers/numeric';

describe('causal-LM loss by slices of rows', () => {
  before(async () => {
    await useTestBackend();
  });

  it('equals the one-matmul loss and its gradients (hidden, and the head when it trains), slices of 5 over 3 × 7 rows, ignored labels included', async () => {
    const [b, t, d, v] = [3, 7, 6, 11];
    const hidden = tf.randomNormal([b * t, d], 0, 1, 'float32', 1) as tf.Tensor2D;
    const head = tf.randomNormal([v, d], 0, 1, 'float32', 2) as tf.Tensor2D;
    const ids = Array.from({ length: b * t }, (_, i) => (i % 4 === 0 ? -100 : (i * 7) % v));
    const labels = tf.tensor2d(ids, [b, t], 'int32');
    const plain = (h: tf.Tensor, w: tf.Tensor) => causalLmLoss(tf.reshape(tf.matMul(h, w, false, true), [b, t, v]) as tf.Tensor3D, labels);
    const want = tf.valueAndGrads(plain)([hidden, head]);
    for (const headTrainable of [true, false]) {
      await assertNoLeak(async () => {
        const got = headTrainable
          ? tf.valueAndGrads((h: tf.Tensor, w: tf.Tensor) => chunkedCausalLmLoss(h as tf.Tensor2D, w as tf.Tensor2D, labels, { rowsPerChunk: 5, headTrainable }))([hidden, head])
          : tf.valueAndGrads((h: tf.Tensor) => chunkedCausalLmLoss(h as tf.Tensor2D, head, labels, { rowsPerChunk: 5, headTrainable }))([hidden]);
        assertClose('loss', await got.value.data(), await want.value.data(), 1e-6);
        assertClose('d hidden', await got.grads[0]!.data(), await want.grads[0]!.data(), 1e-5);
        if (headTrainable) assertClose('d head', await got.grads[1]!.data(), await want.grads[1]!.data(), 1e-5);
        tf.dispose([got.value, ...got.grads]);
      });
    }
    tf.dispose([hidden, head, labels, want.value, ...want.grads]);
  });

  for (const name of ['gpt2-tiny', 'llama-tiny']) {
    it(`${name}: training's loss by slices gives transformers' loss and every gradient (a tied head's two uses summed)`, async () => {
      const model = await Model.load(fixture('hf', name));
      const refs = await readSafetensors(fixture('hf', name, 'refs.safetensors'));
      const batch = await readInputBatch(fixture('hf', name, 'refs.safetensors'), model.arch.inputKind);
      try {
        assert.ok(model.chunkedLossRows(batch.inputs, 1) !== undefined, 'a limit of 1 logit sends any batch through the slices');
        assert.equal(model.chunkedLossRows(batch.inputs), undefined, 'a fixture batch is far below the default limit');
        const names = [...model.params.keys()];
        const { loss, grads } = model.lossAndGrads(names, batch.inputs, batch.labels!, { chunkedLossLogits: 1 });
        assertClose('loss', await loss.data(), toFloat32(refs.get('loss')!), 1e-4);
        for (const n of names) assertClose(`grad ${n}`, await grads.get(n)!.data(), toFloat32(refs.get(`grad.${refGradName(n)}`)!), 1e-3);
        tf.dispose([loss, ...grads.values()]);
      } finally {
        disposeBatch(batch);
        model.dispose();
      }
    });
  }
});
