/**
 * LoRA adapters that Hugging Face PEFT itself made and saved for the tiny checkpoints of
 * test/fixtures/transformers (scripts/fixtures/make_peft_fixtures.py): each loads onto its base and
 * gives the logits PEFT computed with it (a classifier's modules_to_save head included).
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { readSafetensors, toFloat32, toInt32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, relMaxError, useTestBackend } from '../helpers/numeric';

const FIXTURES = join(__dirname, '..', 'fixtures');
const ADAPTERS = readdirSync(join(FIXTURES, 'peft-archs'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();

describe('PEFT-made LoRA adapters of every new architecture (test/fixtures/peft-archs)', () => {
  before(async () => {
    await useTestBackend();
  });

  it('covers the new architectures', () => {
    for (const a of ['gpt_neox', 'opt', 'phi', 'bloom', 'smollm3', 'olmo2', 'granite', 'stablelm', 'modernbert', 'deberta_v3']) assert.ok(ADAPTERS.includes(`${a}-lora`), a);
  });

  for (const name of ADAPTERS) {
    it(`${name}: loads onto its base and gives PEFT’s logits`, async () => {
      const dir = join(FIXTURES, 'peft-archs', name);
      const refs = await readSafetensors(join(dir, 'refs.safetensors'));
      const model = await Model.load(join(FIXTURES, 'transformers', name.replace(/-lora$/, '')));
      const adapter = await loadPeftAdapter(model, dir);
      const int2d = (t: HostTensor) => tf.tensor2d(toInt32(t), t.shape as [number, number], 'int32');
      const mask = refs.get('attention_mask');
      const inputs = { inputIds: int2d(refs.get('input_ids')!), ...(mask ? { attentionMask: int2d(mask) } : {}) };
      try {
        const run = (opts: Parameters<Model['forward']>[1]) => tf.tidy(() => model.forward(inputs, opts).dataSync() as Float32Array);
        const adapted = run({ hooks: adapter.hooks, overrides: adapter.overrides() });
        const want = toFloat32(refs.get('logits')!);
        assert.ok(relMaxError(run({}), want) > 1e-3, 'the adapter changes the logits');
        assertClose(`${name} logits`, adapted, want, 2e-5);
      } finally {
        tf.dispose(Object.values(inputs));
        adapter.dispose();
        model.dispose();
      }
    });
  }
});
