/**
 * The causal-LM loss by slices of rows (ops.chunkedCausalLmLoss), used for training when a batch's
 * logits would be large (a real vocabulary): the same loss and gradients as the one-matmul loss, on
 * random tensors sliced unevenly and on the fixtures against transformers' reference gradients;
 * evaluation's loss, argmax and confidences and the probes' loss by slices equal the one-matmul ones.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { createAdapter } from '../../sidecar/src/adapters';
import { disposeTrainBatch, makeBatch } from '../../sidecar/src/data/batch';
import type { Example } from '../../sidecar/src/data/dataset';
import { disposeBatch, readInputBatch } from '../../sidecar/src/io/tensors';
import { readSafetensors, toFloat32 } from '../../sidecar/src/io/safetensors';
import { Model, type SliceOptions } from '../../sidecar/src/models/model';
import { causalLmLoss, chunkedCausalLmLoss } from '../../sidecar/src/models/ops';
import { evaluate } from '../../sidecar/src/train/evaluate';
import { assertClose, assertNoLeak, fixture, refGradName, useTestBackend } from '../helpers/numeric';
import { perturb } from '../helpers/adapters';

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

describe('evaluation and probe losses by slices of rows', () => {
  before(async () => {
    await useTestBackend();
  });

  /** Prompt + completion rows of varied lengths (prompt labels ignored), ids below `vocab`. */
  const examples = (vocab: number): Example[] =>
    [9, 14, 5, 11, 7].map((len, r) => {
      const ids = Int32Array.from({ length: len }, (_, i) => (r * 31 + i * 17 + 3) % vocab);
      return { kind: 'lm', ids, labels: ids.map((v, i) => (i < 3 ? -100 : v)), completion: true, source: 'x' };
    });
  const opts = { padId: 0, attentionMask: false };

  for (const name of ['gpt2-tiny', 'llama-tiny']) {
    it(`${name}: evaluate() 5 rows at a time gives the one-matmul loss, exact match and every confidence; lossOf too; no tensor left`, async () => {
      const model = await Model.load(fixture('hf', name));
      const adapter = await createAdapter(model, { kind: 'lora', r: 4, alpha: 8 }, { seed: 1 });
      // A LoRA off its init (B ≠ 0): its hooks must reach the sliced path's forward too.
      perturb(adapter, 0.05, 3);
      const weights = { hooks: adapter.hooks, overrides: adapter.overrides() };
      const slices = { chunkedLossLogits: 1, chunkLogits: 5 * model.config.vocabSize };
      const rows = examples(model.config.vocabSize);
      const run = async (s: SliceOptions) => {
        const preds: { confidence: number; ok: boolean }[] = [];
        const r = await evaluate(model, weights, rows, 3, opts, undefined, (confidence, ok) => preds.push({ confidence, ok }), s);
        return { r, preds };
      };
      const batch = makeBatch(rows, opts);
      try {
        assert.equal(model.chunkedLossRows(batch.inputs, slices.chunkedLossLogits, slices.chunkLogits), 5);
        const want = await run({});
        // The sliced path never asks for all the logits (forward); it takes the trunk's rows.
        const forward = model.forward.bind(model);
        let forwards = 0;
        model.forward = (...args) => {
          forwards++;
          return forward(...args);
        };
        const got = await assertNoLeak(() => run(slices));
        assert.equal(forwards, 0, 'no full-logits forward by slices');
        model.forward = forward;
        assertClose('loss', [got.r.loss], [want.r.loss], 1e-5);
        assert.equal(got.r.count, want.r.count);
        assert.equal(got.r.metric, want.r.metric);
        assert.equal(got.preds.length, want.preds.length);
        assertClose('confidences', got.preds.map((p) => p.confidence), want.preds.map((p) => p.confidence), 1e-5);
        assert.deepEqual(got.preds.map((p) => p.ok), want.preds.map((p) => p.ok), 'the same argmax at every label');
        // Without predictions (no confidences asked for), the same loss.
        assertClose('loss without confidences', [(await evaluate(model, weights, rows, 3, opts, undefined, undefined, slices)).loss], [want.r.loss], 1e-5);
        // lossOf (IST's probes): sliced, unsliced and the forward's loss agree.
        const plain = tf.tidy(() => model.loss(model.forward(batch.inputs, weights), batch.labels));
        for (const s of [{}, slices]) {
          const loss = await assertNoLeak(() => {
            const l = model.lossOf(batch.inputs, batch.labels, { ...weights, ...s });
            const v = l.dataSync()[0]!;
            l.dispose();
            return v;
          });
          assertClose(`lossOf ${JSON.stringify(s)}`, [loss], await plain.data(), 1e-5);
        }
        plain.dispose();
      } finally {
        disposeTrainBatch(batch);
        adapter.dispose();
        model.dispose();
      }
    });
  }

  it('a classifier (no trunk) keeps the one-matmul path whatever the limits', async () => {
    const model = await Model.load(fixture('hf', 'bert-cls-tiny'));
    try {
      const rows: Example[] = [5, 8, 3].map((len, r) => ({ kind: 'cls', ids: Int32Array.from({ length: len }, (_, i) => (r * 7 + i * 11 + 1) % 128), label: r % 2, source: 'x' }));
      const bertOpts = { padId: 0, attentionMask: true };
      const want = await evaluate(model, undefined, rows, 2, bertOpts);
      const got = await evaluate(model, undefined, rows, 2, bertOpts, undefined, undefined, { chunkedLossLogits: 1, chunkLogits: 1 });
      assert.deepEqual(got, want);
    } finally {
      model.dispose();
    }
  });
});
