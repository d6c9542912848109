/**
 * Every architecture beyond ../shared/fixtures against transformers 5.18 itself: tiny random
 * checkpoints saved by save_pretrained (so their config.json is transformers 5's own, with nested
 * rope_parameters and layer_types), and what transformers computed on them
 * (scripts/fixtures/make_transformers_fixtures.py): logits, the loss, gradients of chosen parameters,
 * and for causal LMs the logits through its KV cache. Norms and biases are randomised too.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { readSafetensors, toFloat32, toInt32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, assertNoLeak, useTestBackend } from '../helpers/numeric';
import { cachedLogits } from '../helpers/random-checkpoint';

const ROOT = join(__dirname, '..', 'fixtures', 'transformers');
const ARCHS = readdirSync(ROOT, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();

describe('architectures against transformers 5.18 (test/fixtures/transformers)', () => {
  before(async () => {
    await useTestBackend();
  });

  it('covers every architecture the fixtures of ../shared lack', () => {
    for (const a of ['gpt_neox', 'opt', 'opt_post_ln', 'phi', 'bloom', 'mistral', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3_text', 'phi3', 'smollm3', 'olmo2', 'granite', 'stablelm', 'stablelm2', 'roberta', 'distilbert', 'deberta_v3', 'modernbert'])
      assert.ok(ARCHS.includes(a), `fixture ${a}`);
  });

  for (const arch of ARCHS) {
    it(`${arch}: logits, loss and gradients as transformers computed them${arch.match(/^(roberta|distilbert|deberta|modernbert)/) ? ' (a padded row behind its mask)' : ', and through the KV cache'}`, async () => {
      const dir = join(ROOT, arch);
      const refs = await readSafetensors(join(dir, 'refs.safetensors'));
      const model = await Model.load(dir);
      const int2d = (t: HostTensor) => tf.tensor2d(toInt32(t), t.shape as [number, number], 'int32');
      try {
        const causal = model.arch.task === 'causal-lm';
        await assertNoLeak(() => {
          const inputIds = int2d(refs.get('input_ids')!);
          const mask = refs.get('attention_mask');
          const inputs = { inputIds, ...(mask ? { attentionMask: int2d(mask) } : {}) };
          const labels = causal ? inputIds : tf.tensor1d(toInt32(refs.get('labels')!), 'int32');
          const logits = tf.tidy(() => model.forward(inputs).dataSync() as Float32Array);
          assertClose(`${arch} logits`, logits, toFloat32(refs.get('logits')!), 2e-5);
          const names = [...refs.keys()].filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
          const { loss, grads } = model.lossAndGrads(names, inputs, labels);
          assertClose(`${arch} loss`, loss.dataSync(), toFloat32(refs.get('loss')!), 1e-5);
          for (const n of names) assertClose(`${arch} d ${n}`, grads.get(n)!.dataSync(), toFloat32(refs.get(`grad.${n}`)!), 1e-4);
          tf.dispose([loss, ...grads.values(), ...Object.values(inputs), labels]);
        });
        if (causal) {
          const seq = Array.from(toInt32(refs.get('input_ids')!).subarray(0, refs.get('input_ids')!.shape[1]));
          assertClose(`${arch} cached logits`, cachedLogits(model, seq), toFloat32(refs.get('cached_logits')!), 2e-5);
        }
      } finally {
        model.dispose();
      }
    });
  }
});
