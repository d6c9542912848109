/**
 * LoRA on token embeddings (PEFT's lora.Embedding): every architecture looks its tokens up through
 * the hook (Forward.embed), merging folds it into the table (refused where the output head shares
 * it), export → load keeps it, and the kinds and inits that cannot act on an embedding say so.
 * The numbers against PEFT itself are in test/parity/peft-methods (the *-lora-embed fixtures).
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdapterSpec } from '../../src/protocol';
import { createAdapter } from '../../sidecar/src/adapters/index';
import { loadPeftAdapter, savePeftAdapter } from '../../sidecar/src/adapters/peft';
import type { AdapterInstance } from '../../sidecar/src/adapters/types';
import { InputError } from '../../sidecar/src/errors';
import { readSafetensors, toInt32, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { runImportance } from '../../sidecar/src/tasks/importance';
import { Model } from '../../sidecar/src/models/model';
import type { ModelInputs } from '../../sidecar/src/models/architecture';
import { assertClose, assertNoLeak, fixture, relMaxError, useTestBackend } from '../helpers/numeric';

const TRANSFORMERS = join(__dirname, '..', 'fixtures', 'transformers');
const tmp = mkdtempSync(join(tmpdir(), 'lora-embedding-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function inputsOf(dir: string): Promise<ModelInputs> {
  const refs = await readSafetensors(join(dir, 'refs.safetensors'));
  const int2d = (t: HostTensor) => tf.tensor2d(toInt32(t), t.shape as [number, number], 'int32');
  const mask = refs.get('attention_mask');
  return { inputIds: int2d(refs.get('input_ids')!), ...(mask ? { attentionMask: int2d(mask) } : {}) };
}

function logitsOf(model: Model, inputs: ModelInputs, adapter?: AdapterInstance, overrides?: ReadonlyMap<string, tf.Tensor>): Float32Array {
  return tf.tidy(() => model.forward(inputs, adapter ? { hooks: adapter.hooks, overrides: adapter.overrides() } : { overrides }).dataSync() as Float32Array);
}

/** A's entries away from its zero init, so the adapter acts. */
function perturb(adapter: AdapterInstance): void {
  for (const [k, t] of [...adapter.trainable]) {
    if (!k.endsWith('lora_embedding_A')) continue;
    adapter.trainable.set(k, tf.keep(tf.randomNormal(t.shape, 0, 0.05, 'float32', 11)));
    t.dispose();
  }
}

describe('LoRA on token embeddings', () => {
  before(async () => {
    await useTestBackend();
  });

  const dirs = [
    ...readdirSync(TRANSFORMERS).map((d) => join(TRANSFORMERS, d)),
    ...['llama-tiny', 'gpt2-tiny', 'bert-cls-tiny'].map((m) => fixture('hf', m)),
  ];
  for (const dir of dirs) {
    it(`${dir.split('/').slice(-1)[0]}: the token lookup goes through the adapter; merging folds it in, or is refused for a tied head`, async () => {
      const model = await Model.load(dir);
      const inputs = await inputsOf(dir);
      try {
        const module = model.arch.tokenEmbedding!(model.config);
        const a = await createAdapter(model, { kind: 'lora', r: 2, alpha: 4, targets: [module] }, { seed: 1 });
        try {
          assert.deepEqual([...a.hooks.embeddings!.keys()], [module]);
          assert.equal(a.hooks.linear!.size, 0);
          const base = logitsOf(model, inputs);
          assert.deepEqual(logitsOf(model, inputs, a), base, 'A starts at zero');
          perturb(a);
          const adapted = logitsOf(model, inputs, a);
          assert.ok(relMaxError(adapted, base) > 1e-4, 'the adapter changes the logits');
          if (Object.values(model.aliases).includes(`${module}.weight`)) {
            assert.throws(() => a.merged(), /cannot be merged: the output head shares its table/);
            return;
          }
          await assertNoLeak(() => {
            const merged = a.merged();
            try {
              assert.ok(merged.has(`${module}.weight`), [...merged.keys()].join(', '));
              assertClose('merged logits', logitsOf(model, inputs, undefined, merged), adapted, 1e-5);
            } finally {
              tf.dispose([...merged.values()]);
            }
          });
        } finally {
          a.dispose();
        }
      } finally {
        tf.dispose(Object.values(inputs) as tf.Tensor[]);
        model.dispose();
      }
    });
  }

  describe('on llama-tiny (untied head)', () => {
    let model: Model;
    let inputs: ModelInputs;
    before(async () => {
      model = await Model.load(fixture('hf', 'llama-tiny'));
      inputs = await inputsOf(fixture('hf', 'llama-tiny'));
    });
    after(() => {
      tf.dispose(Object.values(inputs) as tf.Tensor[]);
      model.dispose();
    });

    it('beside linear targets: PEFT\'s init (A = 0, B ~ N(0, 1)), counts, export → load with PEFT\'s keys', async () => {
      const spec: AdapterSpec = { kind: 'lora', r: 4, alpha: 8, targets: ['embed_tokens', 'q_proj'], rankPattern: { embed_tokens: 2 } };
      const a = await createAdapter(model, spec, { seed: 3 });
      const dir = join(tmp, 'export');
      try {
        // embed_tokens: 2·(128 + 64); q_proj: 4·(64 + 64) in each of 2 layers.
        assert.equal(a.trainableParameterCount(), 2 * 192 + 2 * 512);
        const B = (await a.trainable.get('model.embed_tokens.lora_embedding_B')!.data()) as Float32Array;
        const std = Math.sqrt(B.reduce((s, x) => s + x * x, 0) / B.length);
        assert.ok(std > 0.7 && std < 1.3, `B ~ N(0, 1): std ${std}`);
        assert.ok(((await a.trainable.get('model.embed_tokens.lora_embedding_A')!.data()) as Float32Array).every((x) => x === 0));
        perturb(a);
        const adapted = logitsOf(model, inputs, a);
        await savePeftAdapter(dir, a, { baseModel: 'llama-tiny' });
        const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
        assert.ok((cfg.target_modules as string[]).includes('model.embed_tokens'));
        const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()];
        assert.ok(keys.includes('base_model.model.model.embed_tokens.lora_embedding_A') && keys.includes('base_model.model.model.embed_tokens.lora_embedding_B'), keys.join(', '));
        const b = await loadPeftAdapter(model, dir);
        try {
          assert.deepEqual(logitsOf(model, inputs, b), adapted);
        } finally {
          b.dispose();
        }
      } finally {
        a.dispose();
      }
    });

    it('kinds that cannot act on an embedding say so; data-aware inits leave it at the default init; position tables are not targets', async () => {
      const refused: [AdapterSpec, RegExp][] = [
        [{ kind: 'dora', targets: ['embed_tokens', 'q_proj'] }, /name the embedding model\.embed_tokens: this adapter acts on linear modules only \(LoRA also on the token embedding\); train it whole with modulesToSave/],
        [{ kind: 'ia3', targets: ['embed_tokens'] }, /name the embedding model\.embed_tokens/],
        [{ kind: 'loha', targets: ['embed_tokens'] }, /name the embedding model\.embed_tokens/],
      ];
      for (const [spec, msg] of refused) await assert.rejects(createAdapter(model, spec, { seed: 0 }), msg, JSON.stringify(spec));
      // A data-aware init acts on the linear modules; the embedding's LoRA takes the default init (A = 0), as in PEFT.
      const pissa = await createAdapter(model, { kind: 'lora', init: 'pissa', targets: ['embed_tokens'] }, { seed: 0, inits: async () => new Map() });
      assert.ok(((await pissa.trainable.get('model.embed_tokens.lora_embedding_A')!.data()) as Float32Array).every((x) => x === 0));
      pissa.dispose();
      const gpt2 = await Model.load(fixture('hf', 'gpt2-tiny'));
      try {
        await assert.rejects(createAdapter(gpt2, { kind: 'lora', targets: ['wpe'] }, { seed: 0 }), /name the embedding transformer\.wpe: LoRA acts on linear modules and the token embedding \(transformer\.wte\)/);
      } finally {
        gpt2.dispose();
      }
    });

    it('importance scores an adapter with LoRA on the embedding, and one with an AdaLoRA module pruned to nothing', async () => {
      const inputs = join(tmp, 'imp-inputs.safetensors');
      const ids = { dtype: 'I32' as const, shape: [2, 6], data: Int32Array.from([1, 5, 9, 30, 2, 7, 4, 8, 15, 16, 23, 42]) };
      await writeSafetensors(inputs, new Map([['input_ids', ids], ['labels', ids]]));
      const pruned = join(tmp, 'pruned');
      cpSync(join(__dirname, '..', 'fixtures', 'peft-adalora', 'llama-adalora'), pruned, { recursive: true });
      const q0 = 'model.layers.0.self_attn.q_proj';
      const cfgFile = join(pruned, 'adapter_config.json');
      const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as { rank_pattern: Record<string, boolean[]> };
      cfg.rank_pattern[`${q0}.lora_E`] = Array<boolean>(6).fill(false);
      writeFileSync(cfgFile, JSON.stringify(cfg));
      const file = join(pruned, 'adapter_model.safetensors');
      const t = await readSafetensors(file);
      t.set(`base_model.model.${q0}.lora_A`, { dtype: 'F32', shape: [0, 64], data: new Float32Array(0) });
      t.set(`base_model.model.${q0}.lora_E`, { dtype: 'F32', shape: [0, 1], data: new Float32Array(0) });
      t.set(`base_model.model.${q0}.lora_B`, { dtype: 'F32', shape: [64, 0], data: new Float32Array(0) });
      await writeSafetensors(file, t);
      const ctx = { signal: new AbortController().signal, progress: () => undefined, log: () => undefined };
      for (const adapter of [join(__dirname, '..', 'fixtures', 'peft-methods', 'llama-lora-embed'), pruned]) {
        const out = join(tmp, `imp-${adapter.length}`);
        const r = await runImportance({ kind: 'importance', model: fixture('hf', 'llama-tiny'), adapter, inputs, methods: ['fisher'], out }, ctx);
        assert.equal(r.kind, 'importance');
        const scores = await readSafetensors(join(out, 'scores.safetensors'));
        assert.ok([...scores.keys()].some((k) => /lora_embedding_A|lora_E/.test(k)), `the adapter's tensors are scored: ${[...scores.keys()].slice(0, 3).join(', ')}`);
      }
    });

    it('PEFT\'s saved copy of the base table must be the base model\'s (to the rounding of the type it was saved in)', async () => {
      const dir = join(tmp, 'table');
      cpSync(join(__dirname, '..', 'fixtures', 'peft-methods', 'llama-lora-embed'), dir, { recursive: true });
      const file = join(dir, 'adapter_model.safetensors');
      const t = await readSafetensors(file);
      const key = 'base_model.model.model.embed_tokens.base_layer.weight';
      const table = t.get(key)!;
      const changed = Float32Array.from(table.data as Float32Array);
      changed[5]! += 1;
      t.set(key, { ...table, data: changed });
      await writeSafetensors(file, t);
      const n = tf.memory().numTensors;
      await assert.rejects(loadPeftAdapter(model, dir), (e: unknown) => e instanceof InputError && e.where === key && /differs from the base model's embedding/.test(e.message));
      assert.equal(tf.memory().numTensors, n, 'a failed load leaks no tensors');
      // A model trained in bf16 saves the table rounded to bf16 (round to nearest even): that is the base's.
      const f32Bits = new Uint32Array(Float32Array.from(table.data as Float32Array).buffer);
      const bf16 = Uint16Array.from(f32Bits, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
      t.set(key, { dtype: 'BF16', shape: table.shape, data: bf16 });
      await writeSafetensors(file, t);
      (await loadPeftAdapter(model, dir)).dispose();
    });
  });
});
