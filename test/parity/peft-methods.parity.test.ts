/**
 * LoHa, LoKr and VeRA adapters, and LoRA on token embeddings, that Hugging Face PEFT itself made
 * and saved for the shared tiny checkpoints (scripts/fixtures/make_peft_methods_fixtures.py): each loads onto its base and gives
 * PEFT's logits, loss and the gradient of every trained tensor (factors, λ vectors, trained biases,
 * a classifier's head), without leaking tensors. Then its PEFT export is the file PEFT wrote.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { readSafetensors, toFloat32, toInt32, type HostTensor } from '../../sidecar/src/io/safetensors';
import type { ModelInputs } from '../../sidecar/src/models/architecture';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, assertNoLeak, fixture, relMaxError, useTestBackend } from '../helpers/numeric';

const DIR = join(__dirname, '..', 'fixtures', 'peft-methods');
const ADAPTERS = readdirSync(DIR, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
const BASES: Record<string, string> = { llama: 'llama-tiny', bert: 'bert-cls-tiny', gpt2: 'gpt2-tiny', vit: 'vit-tiny' };

describe('PEFT-made LoHa, LoKr, VeRA and embedding-LoRA adapters (test/fixtures/peft-methods)', () => {
  before(async () => {
    await useTestBackend();
  });

  it('covers each method on a decoder and a classifier, VeRA on Conv1D, LoRA on a tied embedding', () => {
    for (const a of ['llama-loha', 'bert-loha', 'llama-lokr', 'bert-lokr', 'llama-lokr-factor', 'gpt2-vera', 'llama-vera', 'bert-vera', 'llama-lora-embed', 'gpt2-lora-embed', 'bert-lora-embed', 'gpt2-lora-layers', 'llama-lokr-layers', 'llama-oft', 'bert-oft', 'vit-lora', 'vit-loha', 'llama-hra', 'bert-hra-gs', 'vit-lora-patterns'])
      assert.ok(ADAPTERS.includes(a), a);
  });

  for (const name of ADAPTERS) {
    it(`${name}: PEFT's logits, loss and gradients; exports the file PEFT wrote`, async () => {
      const dir = join(DIR, name);
      const refs = await readSafetensors(join(dir, 'refs.safetensors'));
      const model = await Model.load(fixture('hf', BASES[name.split('-')[0]!]!));
      const adapter = await loadPeftAdapter(model, dir);
      const int2d = (t: HostTensor) => tf.tensor2d(toInt32(t), t.shape as [number, number], 'int32');
      const mask = refs.get('attention_mask');
      const pixels = refs.get('pixel_values');
      const inputs: ModelInputs = pixels
        ? { pixelValues: tf.tensor4d(toFloat32(pixels), pixels.shape as [number, number, number, number]) }
        : { inputIds: int2d(refs.get('input_ids')!), ...(mask ? { attentionMask: int2d(mask) } : {}) };
      const labelRef = refs.get('labels');
      const labels = labelRef ? tf.tensor1d(toInt32(labelRef), 'int32') : inputs.inputIds!;
      try {
        const run = (opts: Parameters<Model['forward']>[1]) => tf.tidy(() => model.forward(inputs, opts).dataSync() as Float32Array);
        const want = toFloat32(refs.get('logits')!);
        assert.ok(relMaxError(run({}), want) > 1e-3, 'the adapter changes the logits');
        assertClose(`${name} logits`, run({ hooks: adapter.hooks, overrides: adapter.overrides() }), want, 2e-5);

        const names = [...adapter.trainable.keys()];
        // PEFT's names are transformers 5's run-time ones (ViT's differ from its checkpoint's).
        const ours = (k: string) => (model.arch.checkpointName ? model.arch.checkpointName(k) : k);
        const refGrads = new Map([...refs].filter(([k]) => k.startsWith('grad:')).map(([k, t]) => [ours(k.slice(5).replace('.base_layer.', '.')), toFloat32(t)]));
        assert.deepEqual([...names].sort(), [...refGrads.keys()].sort(), 'the trained tensors are the ones PEFT trains');
        await assertNoLeak(() => {
          const { loss, grads } = model.lossAndGrads(names, inputs, labels, { hooks: adapter.hooks, extra: adapter.overrides() });
          assertClose(`${name} loss`, loss.dataSync(), toFloat32(refs.get('loss')!), 2e-5);
          for (const n of names) assertClose(`grad ${n}`, grads.get(n)!.dataSync(), refGrads.get(n)!, 1e-4);
          tf.dispose([loss, ...grads.values()]);
        });

        // Export gives back PEFT's tensors under PEFT's keys (less the copy of an untouched base
        // embedding table PEFT saves beside a LoRA on embed_tokens: PEFT loads without it).
        const { config, tensors } = await adapter.exportPeft();
        const saved = new Map([...(await readSafetensors(join(dir, 'adapter_model.safetensors')))].filter(([k]) => !k.endsWith('.base_layer.weight')));
        assert.deepEqual([...tensors.keys()].sort(), [...saved.keys()].sort());
        for (const [k, t] of saved) assert.deepEqual(toFloat32(tensors.get(k)!), toFloat32(t), k);
        const peftConfig = (await import(join(dir, 'adapter_config.json'))) as Record<string, unknown>;
        for (const key of ['peft_type', 'task_type', 'r', 'alpha', 'decompose_both', 'decompose_factor', 'bias', 'fan_in_fan_out', 'save_projection'])
          if (key in peftConfig) assert.deepEqual(config[key], peftConfig[key], key);
        // Patterns and modules to save may be written per module (full run-time paths): they must resolve as PEFT's do.
        for (const key of ['rank_pattern', 'alpha_pattern']) {
          const theirs = (peftConfig[key] ?? {}) as Record<string, number>;
          const ours = (config[key] ?? {}) as Record<string, number>;
          for (const m of config.target_modules as string[]) {
            const resolve = (p: Record<string, number>) => Object.entries(p).find(([k]) => new RegExp(`^(?:.*\\.)?(?:${k})$`, 'u').test(m))?.[1];
            assert.equal(resolve(ours), resolve(theirs), `${key} of ${m}`);
          }
        }
        if (peftConfig.modules_to_save) assert.ok((config.modules_to_save as string[]).length >= (peftConfig.modules_to_save as string[]).length, 'modules_to_save');
        // PEFT Lab lists the full paths of the modules PEFT's short names matched.
        const short = peftConfig.target_modules as string[];
        const full = config.target_modules as string[];
        assert.equal(full.length, adapter.hooks.linear!.size + (adapter.hooks.embeddings?.size ?? 0));
        for (const m of full) assert.ok(short.some((s) => m.endsWith(`.${s}`)), m);
      } finally {
        tf.dispose([...(Object.values(inputs) as tf.Tensor[]), ...(labelRef ? [labels] : [])]);
        adapter.dispose();
        model.dispose();
      }
    });
  }
});
