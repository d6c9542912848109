/**
 * The adapter zoo on the tiny fixture models (../shared/fixtures/hf): per kind, the trainable
 * parameter count (hand-computed below), that the init preserves the base function, that merging
 * matches the adapter's forward (and unmerging restores the base), that gradients reach every
 * trainable tensor, that layer scales act per block; then PEFT export → load round trips, the
 * export of a residual-changing init, dropout seeding, and adapter_config.json errors.
 *
 * Sizes: llama-tiny d=64, 2 layers, q 64 / kv 32 (GQA), MLP 128, vocab 128, no biases, untied head.
 * gpt2-tiny d=64, 4 layers, MLP 256, vocab 128, Conv1D weights [in, out], tied head.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Matrix, SingularValueDecomposition } from 'ml-matrix';
import type { AdapterSpec } from '../../src/protocol';
import { loraFactory } from '../../sidecar/src/adapters/bench-lora';
import { createAdapter } from '../../sidecar/src/adapters/index';
import { selectLinears } from '../../sidecar/src/adapters/targets';
import { veraProjections } from '../../sidecar/src/adapters/vera';
import { loadPeftAdapter, savePeftAdapter, writePeftLora } from '../../sidecar/src/adapters/peft';
import type { AdapterInstance, LoraInitProvider } from '../../sidecar/src/adapters/types';
import { InputError } from '../../sidecar/src/errors';
import { f32, readSafetensors, writeSafetensors } from '../../sidecar/src/io/safetensors';
import { disposeBatch, readInputBatch, type InputBatch } from '../../sidecar/src/io/tensors';
import { Model } from '../../sidecar/src/models/model';
import { loadAdapterHooks } from '../../sidecar/src/tasks/adapter-hooks';
import { assertClose, assertNoLeak, fixture, relMaxError, useTestBackend } from '../helpers/numeric';

type Fixture = 'llama-tiny' | 'gpt2-tiny' | 'bert-cls-tiny' | 'vit-tiny';
const models = new Map<Fixture, Model>();
const batches = new Map<Fixture, InputBatch>();
const tmp = mkdtempSync(join(tmpdir(), 'adapters-unit-'));

function labelsOf(name: Fixture): tf.Tensor {
  const b = batches.get(name)!;
  return b.labels ?? b.inputs.inputIds!;
}

async function logits(name: Fixture, adapter?: AdapterInstance, overrides?: ReadonlyMap<string, tf.Tensor>, training = false): Promise<Float32Array> {
  const model = models.get(name)!;
  const batch = batches.get(name)!;
  const out = tf.tidy(() => model.forward(batch.inputs, adapter ? { hooks: adapter.hooks, overrides: adapter.overrides(), training } : { overrides }));
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}

/** Moves every trainable tensor off its init (as training would), in place. */
function perturb(adapter: AdapterInstance, seed: number, std = 0.05): void {
  let i = 0;
  for (const [k, t] of [...adapter.trainable]) {
    const next = tf.keep(tf.tidy(() => tf.add(t, tf.randomNormal(t.shape, 0, std, 'float32', seed * 1000 + i++))));
    adapter.trainable.set(k, next);
    t.dispose();
  }
}

/**
 * A perturbed adapter of `spec` exported in PEFT's format: `check` gets its folder, its config and
 * its logits, and `loadsBack()` asserts the folder loads to those logits. Cleans up after.
 */
async function withExported(
  name: Fixture,
  spec: AdapterSpec,
  check: (x: { dir: string; cfg: Record<string, unknown>; model: Model; loadsBack: () => Promise<void> }) => Promise<void>,
): Promise<void> {
  const model = models.get(name)!;
  const a = await createAdapter(model, spec, { seed: 8 });
  const dir = mkdtempSync(join(tmp, 'export-'));
  try {
    perturb(a, 9);
    const before = await logits(name, a);
    await savePeftAdapter(dir, a, { baseModel: name });
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const loadsBack = async () => {
      const b = await loadPeftAdapter(model, dir);
      try {
        assert.deepEqual(await logits(name, b), before);
      } finally {
        b.dispose();
      }
    };
    await check({ dir, cfg, model, loadsBack });
  } finally {
    a.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

const heldOf = (a: AdapterInstance) => [...a.trainable.values()].reduce((n, t) => n + t.size, 0);

interface Case {
  title: string;
  model: Fixture;
  spec: AdapterSpec;
  /** Hand-computed trainable parameter count. */
  count: number;
  /** The trainable tensors' total size, where it differs from `count` (a sparse delta is dense). */
  held?: number;
  mergeable?: boolean;
}

// llama-tiny, per layer: q 64×64, k 64→32, v 64→32, o 64×64, gate/up 64→128, down 128→64.
// gpt2-tiny, per layer: c_attn 64→192, attn.c_proj 64→64, c_fc 64→256, mlp.c_proj 256→64.
const CASES: Case[] = [
  // LoRA r=4 on q, v (PEFT's llama default): 4·(64+64) + 4·(64+32) = 896 per layer.
  { title: 'lora (default init)', model: 'llama-tiny', spec: { kind: 'lora', r: 4, alpha: 8 }, count: 2 * 896 },
  { title: 'lora (gaussian init, rsLoRA)', model: 'llama-tiny', spec: { kind: 'lora', r: 4, alpha: 8, init: 'gaussian', rslora: true }, count: 2 * 896 },
  // + magnitude vectors 64 + 32 per layer.
  { title: 'dora', model: 'llama-tiny', spec: { kind: 'dora', r: 4, alpha: 8 }, count: 2 * (896 + 96) },
  // IA3 on k, v (outputs 32 + 32) and down_proj (feed-forward: input 128).
  { title: 'ia3', model: 'llama-tiny', spec: { kind: 'ia3' }, count: 2 * (32 + 32 + 128) },
  // SSF after the 7 linears (γ, β of width out: 2·512) and the 2 block norms (2·2·64).
  { title: 'ssf', model: 'llama-tiny', spec: { kind: 'ssf' }, count: 2 * (2 * 512 + 2 * 128) },
  // Bottleneck width 64/16 = 4 after attention and MLP: 4·64 + 4 + 64·4 + 64 = 580 each.
  { title: 'bottleneck', model: 'llama-tiny', spec: { kind: 'bottleneck' }, count: 2 * 2 * 580, mergeable: false },
  // RMSNorm weights: 2 per layer + the final norm.
  { title: 'ln-tuning', model: 'llama-tiny', spec: { kind: 'ln-tuning' }, count: 2 * 2 * 64 + 64 },
  // embed 8192 + 2·(norms 128 + 4096+2048+2048+4096+3·8192) + norm 64 + lm_head 8192.
  { title: 'full', model: 'llama-tiny', spec: { kind: 'full' }, count: 8192 + 2 * (128 + 36864) + 64 + 8192 },
  // Top-4 singular values of q and v.
  { title: 'svfit', model: 'llama-tiny', spec: { kind: 'svfit', r: 4 }, count: 2 * 2 * 4 },
  // D (4) and a scalar per module.
  { title: 'loldu (top-r)', model: 'llama-tiny', spec: { kind: 'loldu', r: 4 }, count: 2 * 2 * 5 },
  // Full LDU: min(out, in) = 64 for q, 32 for v, + scalars.
  { title: 'loldu (full W)', model: 'llama-tiny', spec: { kind: 'loldu' }, count: 2 * (65 + 33) },
  // The mask's ones (every 7th of layer-0 q_proj.weight's 4096, every 5th of layer-1 v_proj.weight's
  // 2048), though the deltas held are as large as the masked tensors.
  { title: 'sparse', model: 'llama-tiny', spec: { kind: 'sparse', mask: join(tmp, 'mask.safetensors') }, count: 586 + 410, held: 4096 + 2048 },
  // LoHa r=4 on q, v: two pairs per module, 2·4·(64+64) + 2·4·(32+64) = 1792 per layer.
  { title: 'loha', model: 'llama-tiny', spec: { kind: 'loha', r: 4, alpha: 8 }, count: 2 * 1792 },
  // LoKr r=2 on q (64 = 8·8 both ways: W1 8×8 whole, W2 = [8,2]·[2,8] as 2 < 8/2) and v (out 32 = 4·8:
  // W1 4×8, W2 [8,2]·[2,8]): 64 + 32 + 32 + 32 = 160 per layer.
  { title: 'lokr', model: 'llama-tiny', spec: { kind: 'lokr', r: 2, alpha: 4 }, count: 2 * 160 },
  // VeRA r=16 on q, v: λ_b (out) and λ_d (r) each: 64 + 16 + 32 + 16 per layer; the projections are frozen.
  { title: 'vera', model: 'llama-tiny', spec: { kind: 'vera', r: 16 }, count: 2 * 128 },
  // OFT on q, v (in 64): 2 blocks of 32, 32·31/2 = 496 entries each: 2·992 per layer.
  { title: 'oft', model: 'llama-tiny', spec: { kind: 'oft' }, count: 2 * 2 * 992 },
  // OFT with blocks of 8 on down_proj (in 128: 16 blocks) and q_proj (8 blocks), 28 entries each.
  { title: 'oft (block size 8)', model: 'llama-tiny', spec: { kind: 'oft', blockSize: 8, targets: ['q_proj', 'down_proj'] }, count: 2 * 28 * (8 + 16) },
  // HRA r=8 on q, v (in 64): hra_u 64·8 each.
  { title: 'hra', model: 'llama-tiny', spec: { kind: 'hra' }, count: 2 * 2 * 512 },
  // HRA on GPT-2's Conv1D c_attn (in 64), r=4, on the stored [in, out] layout.
  { title: 'hra (Conv1D)', model: 'gpt2-tiny', spec: { kind: 'hra', r: 4 }, count: 4 * 256 },
  // GPT-2 (Conv1D): LoRA on c_attn, 4·(64+192) per layer.
  { title: 'lora (Conv1D)', model: 'gpt2-tiny', spec: { kind: 'lora', r: 4, alpha: 16, dropout: 0.1 }, count: 4 * 1024 },
  { title: 'dora (Conv1D)', model: 'gpt2-tiny', spec: { kind: 'dora', r: 4, alpha: 16 }, count: 4 * (1024 + 192) },
  // IA3: c_attn output 192, mlp.c_proj input 256.
  { title: 'ia3 (Conv1D)', model: 'gpt2-tiny', spec: { kind: 'ia3' }, count: 4 * (192 + 256) },
  // Biases per layer: ln_1 64, c_attn 192, c_proj 64, ln_2 64, c_fc 256, c_proj 64 (= 704), + ln_f 64.
  { title: 'bitfit', model: 'gpt2-tiny', spec: { kind: 'bitfit' }, count: 4 * 704 + 64 },
  // SSF: linears 2·(192+64+256+64), ln_1/ln_2 2·2·64, + ln_f 2·64.
  { title: 'ssf (LayerNorm)', model: 'gpt2-tiny', spec: { kind: 'ssf' }, count: 4 * (2 * 576 + 256) + 128 },
  { title: 'svfit (Conv1D)', model: 'gpt2-tiny', spec: { kind: 'svfit', r: 4 }, count: 4 * 4 },
  { title: 'loldu (Conv1D)', model: 'gpt2-tiny', spec: { kind: 'loldu', r: 4 }, count: 4 * 5 },
  // LoKr r=2 with decomposeBoth on c_attn (out 192 = 12·16, in 64 = 8·8): W1 = [12,2]·[2,8] (2 < 12/2), W2 = [16,2]·[2,8].
  { title: 'lokr (Conv1D, both factors low-rank)', model: 'gpt2-tiny', spec: { kind: 'lokr', r: 2, alpha: 2, decomposeBoth: true }, count: 4 * (40 + 48) },
  // VeRA on c_attn (192 + 8) and c_fc (256 + 8), which slice the shared projections differently.
  { title: 'vera (Conv1D, two shapes)', model: 'gpt2-tiny', spec: { kind: 'vera', r: 8, targets: ['c_attn', 'c_fc'], dropout: 0.1 }, count: 4 * (200 + 264) },
  // BERT: LoHa on query, value (2·4·128 each) + the classifier (64·3 + 3).
  { title: 'loha (BERT, classifier saved)', model: 'bert-cls-tiny', spec: { kind: 'loha', r: 4, alpha: 4 }, count: 2 * 2 * 1024 + 195 },
  // BERT: LoRA on query, value (4·128 each) + the classifier as modules_to_save (PEFT's SEQ_CLS): 64·3 + 3.
  { title: 'lora (BERT, classifier saved)', model: 'bert-cls-tiny', spec: { kind: 'lora', r: 4, alpha: 8 }, count: 2 * 2 * 512 + 195 },
  { title: 'ssf (BERT)', model: 'bert-cls-tiny', spec: { kind: 'ssf', targets: ['attention', 'output', 'LayerNorm'] }, count: 2 * 2 * (2 * 64 + 2 * 64) + 2 * 64 },
  // ViT: IA3 on key, value (64 + 64) and output.dense; PEFT's "output.dense" also matches attention.output.dense,
  // both feed-forward (inputs 64 and 128); + classifier 64·10 + 10.
  { title: 'ia3 (ViT)', model: 'vit-tiny', spec: { kind: 'ia3' }, count: 2 * (64 + 64 + 64 + 128) + 650 },
  { title: 'bottleneck (ViT)', model: 'vit-tiny', spec: { kind: 'bottleneck', bottleneck: 8 }, count: 2 * 2 * (8 * 64 + 8 + 64 * 8 + 64), mergeable: false },
];

describe('adapters', () => {
  before(async () => {
    await useTestBackend();
    for (const name of ['llama-tiny', 'gpt2-tiny', 'bert-cls-tiny', 'vit-tiny'] as Fixture[]) {
      const model = await Model.load(fixture('hf', name));
      models.set(name, model);
      batches.set(name, await readInputBatch(fixture('hf', name, 'refs.safetensors'), model.arch.inputKind));
    }
    const q = Float32Array.from({ length: 64 * 64 }, (_, i) => (i % 7 === 0 ? 1 : 0));
    const v = Float32Array.from({ length: 32 * 64 }, (_, i) => (i % 5 === 1 ? 1 : 0));
    await writeSafetensors(join(tmp, 'mask.safetensors'), {
      'model.layers.0.self_attn.q_proj.weight': f32([64, 64], q),
      'model.layers.1.self_attn.v_proj.weight': f32([32, 64], v),
    });
  });
  after(() => {
    for (const b of batches.values()) disposeBatch(b);
    for (const m of models.values()) m.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  for (const c of CASES) {
    describe(c.title, () => {
      it('has the hand-computed number of trainable parameters', async () => {
        const a = await createAdapter(models.get(c.model)!, c.spec, { seed: 1 });
        try {
          assert.equal(a.trainableParameterCount(), c.count);
          assert.equal(heldOf(a), c.held ?? c.count);
          for (const k of a.trainable.keys()) assert.ok(!a.frozen.has(k), `${k} is both trainable and frozen`);
        } finally {
          a.dispose();
        }
      });

      it('starts as the base model (init preserves the function), deterministically under the seed', async () => {
        const base = await logits(c.model);
        const a = await createAdapter(models.get(c.model)!, c.spec, { seed: 1 });
        const b = await createAdapter(models.get(c.model)!, c.spec, { seed: 1 });
        try {
          const err = relMaxError(await logits(c.model, a), base);
          assert.ok(err <= 1e-6, `init changes the logits by ${err}`);
          for (const [k, t] of a.trainable) assert.deepEqual(await t.data(), await b.trainable.get(k)!.data(), `${k} differs between two adapters with one seed`);
        } finally {
          a.dispose();
          b.dispose();
        }
      });

      it(c.mergeable === false ? 'refuses to merge' : 'merged base = adapter forward; unmerge restores the base', async () => {
        const model = models.get(c.model)!;
        const a = await createAdapter(model, c.spec, { seed: 2 });
        try {
          perturb(a, 3);
          if (c.mergeable === false) {
            assert.throws(() => a.merged(), /cannot be merged/);
            return;
          }
          const withAdapter = await logits(c.model, a);
          assert.ok(relMaxError(withAdapter, await logits(c.model)) > 1e-4, 'the perturbed adapter should change the logits');
          await assertNoLeak(async () => {
            const merged = a.merged();
            const restored = a.unmerge(merged);
            try {
              assertClose('merged logits', await logits(c.model, undefined, merged), withAdapter, 1e-5);
              for (const [k, t] of restored) {
                const base = model.params.get(k);
                assert.ok(base, `unmerge returned ${k}, which is not a base parameter`);
                assertClose(`unmerged ${k}`, (await t.data()) as Float32Array, (await base.data()) as Float32Array, 1e-5);
              }
              for (const k of merged.keys()) if (model.params.has(k)) assert.ok(restored.has(k), `unmerge dropped ${k}`);
            } finally {
              tf.dispose([...merged.values(), ...restored.values()]);
            }
          });
        } finally {
          a.dispose();
        }
      });

      it('gradients reach every trainable tensor', async () => {
        const model = models.get(c.model)!;
        const a = await createAdapter(model, c.spec, { seed: 4 });
        try {
          perturb(a, 5);
          const names = [...a.trainable.keys()];
          const { loss, grads } = model.lossAndGrads(names, batches.get(c.model)!.inputs, labelsOf(c.model), { hooks: a.hooks, extra: a.overrides(), training: true });
          try {
            assert.ok(Number.isFinite((await loss.data())[0]!));
            for (const n of names) {
              const g = (await grads.get(n)!.data()) as Float32Array;
              assert.ok(g.every(Number.isFinite), `${n}: non-finite gradient`);
              assert.ok(g.some((x) => x !== 0), `${n}: zero gradient`);
              if (c.spec.kind === 'sparse') {
                const mask = (await a.frozen.get(n.replace('sparse_delta', 'sparse_mask'))!.data()) as Float32Array;
                assert.ok(g.every((x, i) => mask[i] !== 0 || x === 0), `${n}: gradient outside the mask`);
              }
            }
          } finally {
            tf.dispose([loss, ...grads.values()]);
          }
        } finally {
          a.dispose();
        }
      });

      it(c.spec.kind === 'dora' ? 'a layer scale multiplies the LoRA scaling (magnitudes stay); 1 restores it' : 'a layer scale of 0 removes the adapter from that block; 1 restores it', async () => {
        const model = models.get(c.model)!;
        const a = await createAdapter(model, c.spec, { seed: 6 });
        try {
          perturb(a, 7);
          const full = await logits(c.model, a);
          const layers = new Set([...a.trainable.keys()].map((k) => a.layerOf(k)));
          for (let l = -1; l < model.config.numLayers; l++) a.setLayerScale(l, 0);
          if (c.spec.kind === 'dora') {
            // PEFT's DoRA with scaling 0 (IST's probes scale `scaling`): m ⊙ W / ‖W‖, as if B were 0.
            const off = await logits(c.model, a);
            assert.ok(relMaxError(off, await logits(c.model)) > 1e-3, 'the magnitudes still act at scale 0');
            for (let l = -1; l < model.config.numLayers; l++) a.setLayerScale(l, 1);
            const Bs = [...a.trainable].filter(([k]) => k.endsWith('lora_B.weight'));
            for (const [k, t] of Bs) a.trainable.set(k, tf.zerosLike(t));
            assertClose('scale 0 = B set to 0', off, await logits(c.model, a), 1e-6);
            for (const [k, t] of Bs) {
              a.trainable.get(k)!.dispose();
              a.trainable.set(k, t);
            }
            for (let l = -1; l < model.config.numLayers; l++) a.setLayerScale(l, 0);
          } else {
            // Nothing of the adapter is left (heads in modules_to_save are layer −1, scaled too).
            assertClose('all layers off', await logits(c.model, a), await logits(c.model), 1e-6);
          }
          for (let l = -1; l < model.config.numLayers; l++) a.setLayerScale(l, 1);
          assert.deepEqual(await logits(c.model, a), full);
          if (layers.has(0) && model.config.numLayers > 1) {
            a.setLayerScale(0, 0.25);
            const scaled = await logits(c.model, a);
            assert.ok(relMaxError(scaled, full) > 0, 'scaling layer 0 changes the output');
            if (c.mergeable !== false) {
              // Merging folds in the scaled adapter; unmerging undoes exactly that.
              const merged = a.merged();
              const restored = a.unmerge(merged);
              try {
                assertClose('merged under a layer scale', await logits(c.model, undefined, merged), scaled, 1e-5);
                for (const [k, t] of restored) assertClose(`unmerged ${k}`, (await t.data()) as Float32Array, (await model.params.get(k)!.data()) as Float32Array, 1e-5);
              } finally {
                tf.dispose([...merged.values(), ...restored.values()]);
              }
            }
            a.setLayerScale(0, 1);
          }
        } finally {
          a.dispose();
        }
      });
    });
  }

  it('targets follow PEFT: defaults per architecture, short names match path suffixes', async () => {
    const keys = async (m: Fixture, spec: AdapterSpec) => {
      const a = await createAdapter(models.get(m)!, spec, { seed: 0 });
      const k = [...a.trainable.keys()].sort();
      a.dispose();
      return k;
    };
    assert.deepEqual(
      (await keys('llama-tiny', { kind: 'lora', r: 2 })).filter((k) => k.includes('layers.0')),
      ['model.layers.0.self_attn.q_proj.lora_A.weight', 'model.layers.0.self_attn.q_proj.lora_B.weight', 'model.layers.0.self_attn.v_proj.lora_A.weight', 'model.layers.0.self_attn.v_proj.lora_B.weight'],
    );
    // "c_proj" matches both attn.c_proj and mlp.c_proj; "mlp.c_proj" only the latter; full paths match themselves.
    assert.equal((await keys('gpt2-tiny', { kind: 'lora', r: 2, targets: ['c_proj'] })).length, 4 * 2 * 2);
    assert.equal((await keys('gpt2-tiny', { kind: 'lora', r: 2, targets: ['mlp.c_proj'] })).length, 4 * 2);
    assert.deepEqual(await keys('gpt2-tiny', { kind: 'ia3', targets: ['transformer.h.3.mlp.c_fc'] }), ['transformer.h.3.mlp.c_fc.ia3_l']);
    await assert.rejects(createAdapter(models.get('llama-tiny')!, { kind: 'lora', targets: ['nope'] }, { seed: 0 }), /match no linear module/);
    // LoRA goes on a targeted token embedding, as PEFT puts it there; kinds that cannot say so rather than leave it out.
    assert.ok((await keys('llama-tiny', { kind: 'lora', r: 2, targets: ['q_proj', 'embed_tokens'] })).includes('model.embed_tokens.lora_embedding_A'));
    await assert.rejects(createAdapter(models.get('llama-tiny')!, { kind: 'ia3', targets: ['k_proj', 'embed_tokens'] }, { seed: 0 }), /name the embedding model\.embed_tokens: this adapter acts on linear modules only/);
    assert.ok((await keys('llama-tiny', { kind: 'lora', r: 2, targets: ['q_proj', 'embed_tokens'], modulesToSave: ['embed_tokens'] })).includes('model.embed_tokens.weight'));
    await assert.rejects(createAdapter(models.get('llama-tiny')!, { kind: 'bitfit' }, { seed: 0 }), /no bias parameters/);
  });

  it('layers (PEFT\'s layers_to_transform) keep the blocks named; a full path ignores them, as in PEFT; export and load keep them', async () => {
    const model = models.get('gpt2-tiny')!;
    const modules = async (spec: AdapterSpec) => {
      const a = await createAdapter(model, spec, { seed: 0 });
      const out = [...a.hooks.linear!.keys()].sort();
      a.dispose();
      return out;
    };
    assert.deepEqual(await modules({ kind: 'lora', targets: ['c_attn', 'c_fc'], layers: [1, 3] }), ['transformer.h.1.attn.c_attn', 'transformer.h.1.mlp.c_fc', 'transformer.h.3.attn.c_attn', 'transformer.h.3.mlp.c_fc']);
    assert.deepEqual(await modules({ kind: 'vera', r: 4, layers: [2] }), ['transformer.h.2.attn.c_attn']);
    assert.deepEqual(await modules({ kind: 'lora', targets: ['c_attn', 'transformer.h.0.mlp.c_fc'], layers: [3] }), ['transformer.h.0.mlp.c_fc', 'transformer.h.3.attn.c_attn']);
    await assert.rejects(createAdapter(model, { kind: 'lora', layers: [4] }, { seed: 0 }), /layers: block 4 does not exist \(this gpt2 model has blocks 0 to 3\)/);
    await withExported('llama-tiny', { kind: 'loha', r: 2, targets: ['q_proj', 'down_proj'], layers: [1] }, async ({ cfg, loadsBack }) => {
      assert.deepEqual(cfg.layers_to_transform, [1]);
      assert.deepEqual(cfg.target_modules, ['model.layers.1.mlp.down_proj', 'model.layers.1.self_attn.q_proj']);
      await loadsBack();
    });
  });

  it('rank_pattern / alpha_pattern apply per module as in PEFT, and scale is α/r (rsLoRA α/√r)', async () => {
    const model = models.get('llama-tiny')!;
    const a = await createAdapter(model, { kind: 'lora', r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], rankPattern: { 'layers.1.self_attn.q_proj': 2 }, alphaPattern: { v_proj: 3 } }, { seed: 0 });
    try {
      assert.deepEqual(a.trainable.get('model.layers.1.self_attn.q_proj.lora_A.weight')!.shape, [2, 64]);
      assert.deepEqual(a.trainable.get('model.layers.0.self_attn.q_proj.lora_A.weight')!.shape, [4, 64]);
      // With B = 1 and A = 1 the update of v_proj is s·(B·A) = (3/4)·4 per entry.
      for (const k of [...a.trainable.keys()]) {
        const t = a.trainable.get(k)!;
        a.trainable.set(k, tf.keep(tf.onesLike(t)));
        t.dispose();
      }
      const merged = a.merged();
      const v = (await tf.sub(merged.get('model.layers.0.self_attn.v_proj.weight')!, model.params.get('model.layers.0.self_attn.v_proj.weight')!).data()) as Float32Array;
      assert.ok(v.every((x) => Math.abs(x - 3) < 1e-5), `v_proj update ${v[0]}`);
      const q = (await tf.sub(merged.get('model.layers.1.self_attn.q_proj.weight')!, model.params.get('model.layers.1.self_attn.q_proj.weight')!).data()) as Float32Array;
      assert.ok(q.every((x) => Math.abs(x - (8 / 2) * 2) < 1e-5), `q_proj (r=2) update ${q[0]}`);
      tf.dispose([...merged.values()]);
    } finally {
      a.dispose();
    }
    const rs = await createAdapter(model, { kind: 'lora', r: 4, alpha: 8, rslora: true }, { seed: 0 });
    try {
      for (const k of [...rs.trainable.keys()]) {
        const t = rs.trainable.get(k)!;
        rs.trainable.set(k, tf.keep(tf.onesLike(t)));
        t.dispose();
      }
      const merged = rs.merged();
      const d = (await tf.sub(merged.get('model.layers.0.self_attn.q_proj.weight')!, model.params.get('model.layers.0.self_attn.q_proj.weight')!).data()) as Float32Array;
      assert.ok(Math.abs(d[0]! - (8 / 2) * 4) < 1e-4, `rsLoRA update ${d[0]}`);
      tf.dispose([...merged.values()]);
    } finally {
      rs.dispose();
    }
  });

  it('PEFT default LoRA init: A ~ U(−1/√in, 1/√in), B = 0; DoRA magnitude = row norms of W', async () => {
    const model = models.get('llama-tiny')!;
    const a = await createAdapter(model, { kind: 'dora', r: 8, alpha: 8 }, { seed: 0 });
    try {
      const A = (await a.trainable.get('model.layers.0.self_attn.q_proj.lora_A.weight')!.data()) as Float32Array;
      const bound = 1 / Math.sqrt(64);
      assert.ok(A.every((x) => Math.abs(x) <= bound) && Math.max(...A.map(Math.abs)) > 0.9 * bound);
      assert.ok(((await a.trainable.get('model.layers.0.self_attn.q_proj.lora_B.weight')!.data()) as Float32Array).every((x) => x === 0));
      const m = (await a.trainable.get('model.layers.0.self_attn.q_proj.lora_magnitude_vector')!.data()) as Float32Array;
      const W = (await model.params.get('model.layers.0.self_attn.q_proj.weight')!.data()) as Float32Array;
      for (let o = 0; o < 64; o += 13) {
        let s = 0;
        for (let i = 0; i < 64; i++) s += W[o * 64 + i]! ** 2;
        assert.ok(Math.abs(m[o]! - Math.sqrt(s)) < 1e-5 * Math.sqrt(s));
      }
    } finally {
      a.dispose();
    }
  });

  it('DoRA’s gradients treat the weight norm as a constant (PEFT detaches it)', async () => {
    const model = models.get('llama-tiny')!;
    const m = 'model.layers.0.self_attn.q_proj';
    const a = await createAdapter(model, { kind: 'dora', r: 4, alpha: 8, targets: ['q_proj'] }, { seed: 3 });
    const inputs = batches.get('llama-tiny')!.inputs;
    const labels = labelsOf('llama-tiny');
    const lossOf = (overrides: ReadonlyMap<string, tf.Tensor>, adapter?: AdapterInstance) =>
      tf.tidy(() => model.loss(model.forward(inputs, adapter ? { hooks: adapter.hooks, overrides: adapter.overrides() } : { overrides }), labels).dataSync()[0]!);
    try {
      perturb(a, 4, 0.1);
      const B0 = a.trainable.get(`${m}.lora_B.weight`)!;
      const dir = tf.randomNormal(B0.shape, 0, 1, 'float32', 5);
      const { loss, grads } = model.lossAndGrads([`${m}.lora_B.weight`], inputs, labels, { hooks: a.hooks, extra: a.overrides() });
      const ours = tf.tidy(() => tf.sum(tf.mul(grads.get(`${m}.lora_B.weight`)!, dir)).dataSync()[0]!);
      tf.dispose([loss, ...grads.values()]);
      const eps = 5e-2;
      // Reference: the merged weight m/c₀ ⊙ (W + s·B·A) with the norm c₀ held at B₀, by central differences.
      const merged = a.merged();
      const W = model.params.get(`${m}.weight`)!;
      const A = a.trainable.get(`${m}.lora_A.weight`)!;
      const mag = a.trainable.get(`${m}.lora_magnitude_vector`)!;
      const k = tf.tidy(() => tf.reshape(tf.div(mag, tf.norm(tf.add(W, tf.mul(tf.matMul(B0, A), 2)), 'euclidean', 1)), [-1, 1]));
      const at = (sign: number) => {
        const w = tf.tidy(() => tf.mul(k, tf.add(W, tf.mul(tf.matMul(tf.add(B0, tf.mul(dir, sign * eps)), A), 2))));
        const o = new Map(merged);
        o.set(`${m}.weight`, w);
        const l = lossOf(o);
        w.dispose();
        return l;
      };
      const detached = (at(1) - at(-1)) / (2 * eps);
      // The same difference through the adapter itself moves the norm too: a different number.
      const viaAdapter = (sign: number) => {
        a.trainable.set(`${m}.lora_B.weight`, tf.add(B0, tf.mul(dir, sign * eps)));
        const l = lossOf(new Map(), a);
        a.trainable.get(`${m}.lora_B.weight`)!.dispose();
        return l;
      };
      const throughNorm = (viaAdapter(1) - viaAdapter(-1)) / (2 * eps);
      a.trainable.set(`${m}.lora_B.weight`, B0);
      tf.dispose([dir, k, ...merged.values()]);
      const err = Math.abs(ours - detached);
      assert.ok(err < 0.01 * Math.abs(detached), `gradient·d ${ours} vs detached-norm difference ${detached}`);
      assert.ok(Math.abs(ours - throughNorm) > 5 * err, `the norm's own gradient is left out: ${ours} vs ${throughNorm} (with it)`);
    } finally {
      a.dispose();
    }
  });

  it('SVFit trains the top-r singular values; LoLDU the diagonal of the LDU of W’s top-r part (checked against ml-matrix’s SVD)', async () => {
    const model = models.get('llama-tiny')!;
    const m = 'model.layers.0.self_attn.q_proj';
    const W = (await model.params.get(`${m}.weight`)!.data()) as Float32Array; // [out 64, in 64]
    const svd = new SingularValueDecomposition(new Matrix(Array.from({ length: 64 }, (_, o) => Array.from(W.subarray(o * 64, o * 64 + 64)))));
    const r = 4;
    /** Σ_{j<r} c_j u_j v_jᵀ as a flat [out, in] array. */
    const rankSum = (c: (j: number) => number) => {
      const out = new Float64Array(64 * 64);
      for (let j = 0; j < r; j++) for (let o = 0; o < 64; o++) for (let i = 0; i < 64; i++) out[o * 64 + i]! += c(j) * svd.leftSingularVectors.get(o, j) * svd.rightSingularVectors.get(i, j);
      return out;
    };
    const top = rankSum((j) => svd.diagonal[j]!);
    const mergedDelta = async (a: AdapterInstance) => {
      const merged = a.merged();
      const w = (await merged.get(`${m}.weight`)!.data()) as Float32Array;
      tf.dispose([...merged.values()]);
      return w.map((x, i) => x - W[i]!);
    };
    const setTensor = (a: AdapterInstance, name: string, values: number[]) => {
      a.trainable.get(name)!.dispose();
      a.trainable.set(name, tf.tensor1d(values));
    };

    const sv = await createAdapter(model, { kind: 'svfit', r, targets: ['q_proj'] }, { seed: 0 });
    try {
      const s0 = Array.from((await sv.trainable.get(`${m}.svfit_s`)!.data()) as Float32Array);
      assertClose('S_r = the top singular values', s0, svd.diagonal.slice(0, r), 1e-4);
      // Moving s_0 by δ adds δ·u₀v₀ᵀ to W, nothing else.
      setTensor(sv, `${m}.svfit_s`, s0.map((x, j) => (j === 0 ? x + 0.5 : x)));
      assertClose('ΔW = δ u₀ v₀ᵀ', await mergedDelta(sv), rankSum((j) => (j === 0 ? 0.5 : 0)), 1e-4);
    } finally {
      sv.dispose();
    }

    const ld = await createAdapter(model, { kind: 'loldu', r, targets: ['q_proj'] }, { seed: 0 });
    try {
      const L = (await ld.frozen.get(`${m}.loldu_l`)!.data()) as Float32Array; // Pᵀ L [64, r]
      const U = (await ld.frozen.get(`${m}.loldu_u`)!.data()) as Float32Array; // [r, 64]
      const D = (await ld.trainable.get(`${m}.loldu_d`)!.data()) as Float32Array;
      for (let j = 0; j < r; j++) {
        assert.equal(U[j * 64 + j], 1, 'U is unit upper triangular');
        for (let c = 0; c < j; c++) assert.equal(U[j * 64 + c], 0);
      }
      // Pᵀ L is a row permutation of a unit lower-triangular matrix: column j's pivot row reads (…, 1, 0, …, 0).
      const pivots = Array.from({ length: r }, (_, j) => Array.from({ length: 64 }, (_, o) => o).find((o) => L[o * r + j] === 1 && Array.from({ length: r - j - 1 }, (_, k) => L[o * r + j + 1 + k]).every((x) => x === 0)));
      assert.ok(pivots.every((p) => p !== undefined) && new Set(pivots).size === r, `unit pivots on distinct rows: ${pivots.join(',')}`);
      const ldu = new Float64Array(64 * 64);
      for (let o = 0; o < 64; o++) for (let i = 0; i < 64; i++) for (let j = 0; j < r; j++) ldu[o * 64 + i]! += L[o * r + j]! * D[j]! * U[j * 64 + i]!;
      assertClose('Pᵀ L D U = W_r (the top-r part of W)', ldu, top, 1e-4);
      // σ = 2 doubles the factored part: W' = W + W_r.
      setTensor(ld, `${m}.loldu_scale`, [2]);
      assertClose('σ = 2: ΔW = W_r', await mergedDelta(ld), top, 1e-4);
    } finally {
      ld.dispose();
    }
  });

  it('DoRA and IA3 merges follow PEFT’s formulas (recomputed by hand on Conv1D modules stored [in, out])', async () => {
    const model = models.get('gpt2-tiny')!;
    const m = 'transformer.h.1.attn.c_attn';
    const [inF, outF, r, s] = [64, 192, 4, 16 / 4];
    const W = (await model.params.get(`${m}.weight`)!.data()) as Float32Array; // [in, out]
    const dora = await createAdapter(model, { kind: 'dora', r, alpha: 16 }, { seed: 0 });
    try {
      perturb(dora, 11, 0.1);
      const A = (await dora.trainable.get(`${m}.lora_A.weight`)!.data()) as Float32Array; // [r, in]
      const B = (await dora.trainable.get(`${m}.lora_B.weight`)!.data()) as Float32Array; // [out, r]
      const mag = (await dora.trainable.get(`${m}.lora_magnitude_vector`)!.data()) as Float32Array; // [out]
      const merged = dora.merged();
      const got = (await merged.get(`${m}.weight`)!.data()) as Float32Array;
      tf.dispose([...merged.values()]);
      // V = W_outin + s·B·A; W' = m[o] / ‖V[o, :]‖ · V[o, :] (norm over the input dim per output row), stored [in, out].
      let maxErr = 0;
      for (let o = 0; o < outF; o++) {
        const row = new Float64Array(inF);
        for (let i = 0; i < inF; i++) {
          let ba = 0;
          for (let k = 0; k < r; k++) ba += B[o * r + k]! * A[k * inF + i]!;
          row[i] = W[i * outF + o]! + s * ba;
        }
        const norm = Math.sqrt(row.reduce((a, v) => a + v * v, 0));
        for (let i = 0; i < inF; i++) maxErr = Math.max(maxErr, Math.abs(got[i * outF + o]! - (mag[o]! / norm) * row[i]!));
      }
      assert.ok(maxErr < 1e-5, `DoRA merge differs by ${maxErr}`);
    } finally {
      dora.dispose();
    }
    const ia3 = await createAdapter(model, { kind: 'ia3' }, { seed: 0 });
    try {
      perturb(ia3, 12, 0.2);
      const merged = ia3.merged();
      // c_attn (not feed-forward): output columns and the bias scaled by l [out, 1].
      const l = (await ia3.trainable.get(`${m}.ia3_l`)!.data()) as Float32Array;
      assert.deepEqual(ia3.trainable.get(`${m}.ia3_l`)!.shape, [outF, 1]);
      const got = (await merged.get(`${m}.weight`)!.data()) as Float32Array;
      const b = (await model.params.get(`${m}.bias`)!.data()) as Float32Array;
      const gotB = (await merged.get(`${m}.bias`)!.data()) as Float32Array;
      for (let i = 0; i < inF; i += 7) for (let o = 0; o < outF; o += 5) assert.ok(Math.abs(got[i * outF + o]! - W[i * outF + o]! * l[o]!) < 1e-6);
      for (let o = 0; o < outF; o++) assert.ok(Math.abs(gotB[o]! - b[o]! * l[o]!) < 1e-6);
      // mlp.c_proj (feed-forward): input rows scaled by l [1, in]; bias untouched.
      const f = 'transformer.h.1.mlp.c_proj';
      const lf = (await ia3.trainable.get(`${f}.ia3_l`)!.data()) as Float32Array;
      assert.deepEqual(ia3.trainable.get(`${f}.ia3_l`)!.shape, [1, 256]);
      const Wf = (await model.params.get(`${f}.weight`)!.data()) as Float32Array; // [256, 64]
      const gotF = (await merged.get(`${f}.weight`)!.data()) as Float32Array;
      for (let i = 0; i < 256; i += 3) for (let o = 0; o < 64; o += 5) assert.ok(Math.abs(gotF[i * 64 + o]! - Wf[i * 64 + o]! * lf[i]!) < 1e-6);
      assert.ok(!merged.has(`${f}.bias`));
      tf.dispose([...merged.values()]);
    } finally {
      ia3.dispose();
    }
  });

  it('dropout: seeded per step in training, off in eval', async () => {
    const model = models.get('llama-tiny')!;
    const a = await createAdapter(model, { kind: 'lora', r: 4, alpha: 8, dropout: 0.5 }, { seed: 0 });
    try {
      perturb(a, 1);
      const evalOut = await logits('llama-tiny', a);
      a.setStep(1);
      const t1 = await logits('llama-tiny', a, undefined, true);
      const t1b = await logits('llama-tiny', a, undefined, true);
      a.setStep(2);
      const t2 = await logits('llama-tiny', a, undefined, true);
      assert.deepEqual(t1, t1b);
      assert.ok(relMaxError(t2, t1) > 0, 'another step draws another mask');
      assert.ok(relMaxError(t1, evalOut) > 0, 'training applies dropout');
      assert.deepEqual(await logits('llama-tiny', a), evalOut);
    } finally {
      a.dispose();
    }
  });

  describe('PEFT export → load round trip', () => {
    const roundTrip: { title: string; model: Fixture; spec: AdapterSpec }[] = [
      { title: 'LoRA with rsLoRA, rank/alpha patterns and bias "all" (GPT-2, Conv1D)', model: 'gpt2-tiny', spec: { kind: 'lora', r: 4, alpha: 8, rslora: true, targets: ['c_attn', 'mlp.c_proj'], rankPattern: { 'h.1.attn.c_attn': 2 }, alphaPattern: { c_proj: 5 }, bias: 'all' } },
      { title: 'LoRA with bias "lora_only" and modules_to_save (BERT)', model: 'bert-cls-tiny', spec: { kind: 'lora', r: 2, alpha: 4, bias: 'lora_only', modulesToSave: ['pooler'] } },
      { title: 'DoRA (llama)', model: 'llama-tiny', spec: { kind: 'dora', r: 4, alpha: 8, targets: ['q_proj', 'k_proj', 'down_proj'] } },
      { title: 'DoRA (GPT-2, Conv1D)', model: 'gpt2-tiny', spec: { kind: 'dora', r: 4, alpha: 8 } },
      { title: 'IA3 (GPT-2, Conv1D, feed-forward mlp.c_proj)', model: 'gpt2-tiny', spec: { kind: 'ia3' } },
      { title: 'IA3 (ViT, classifier saved)', model: 'vit-tiny', spec: { kind: 'ia3' } },
      { title: 'LN-tuning (GPT-2 LayerNorms, weight and bias)', model: 'gpt2-tiny', spec: { kind: 'ln-tuning' } },
      { title: 'LN-tuning (Llama RMSNorms, two of them)', model: 'llama-tiny', spec: { kind: 'ln-tuning', targets: ['input_layernorm'] } },
      { title: 'LoHa with rank and alpha patterns (llama)', model: 'llama-tiny', spec: { kind: 'loha', r: 4, alpha: 8, targets: ['q_proj', 'down_proj'], rankPattern: { down_proj: 2 }, alphaPattern: { q_proj: 2 } } },
      { title: 'LoKr with a decomposition factor (llama)', model: 'llama-tiny', spec: { kind: 'lokr', r: 2, alpha: 4, decomposeFactor: 4, targets: ['k_proj', 'up_proj'] } },
      { title: 'LoKr with both factors low-rank, classifier saved (BERT)', model: 'bert-cls-tiny', spec: { kind: 'lokr', r: 2, decomposeBoth: true } },
      { title: 'VeRA with bias "lora_only" (BERT; PEFT\'s vera_only)', model: 'bert-cls-tiny', spec: { kind: 'vera', r: 8, bias: 'lora_only' } },
      { title: 'VeRA (GPT-2, Conv1D, two shapes)', model: 'gpt2-tiny', spec: { kind: 'vera', r: 8, targets: ['c_attn', 'c_fc'] } },
      { title: 'LN-tuning (ViT: exported under transformers 5\'s names, read back)', model: 'vit-tiny', spec: { kind: 'ln-tuning', targets: ['layernorm_after'] } },
      { title: 'LoRA with a rank pattern and a module to save (ViT, run-time names)', model: 'vit-tiny', spec: { kind: 'lora', r: 4, rankPattern: { query: 2 }, modulesToSave: ['vit.encoder.layer.1.layernorm_after'] } },
      { title: 'HRA with Gram–Schmidt (llama)', model: 'llama-tiny', spec: { kind: 'hra', r: 4, gramSchmidt: true, targets: ['q_proj', 'down_proj'] } },
      { title: 'OFT with a block size that does not divide (BERT: 12 → 8, as PEFT adjusts it)', model: 'bert-cls-tiny', spec: { kind: 'oft', blockSize: 12 } },
    ];
    for (const c of roundTrip) {
      it(c.title, async () => {
        const model = models.get(c.model)!;
        const a = await createAdapter(model, c.spec, { seed: 8 });
        const dir = join(tmp, `rt-${c.model}-${c.spec.kind}-${Math.random().toString(36).slice(2)}`);
        try {
          perturb(a, 9);
          const before = await logits(c.model, a);
          await savePeftAdapter(dir, a, { baseModel: c.model });
          const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
          assert.equal(cfg.base_model_name_or_path, c.model);
          assert.equal(cfg.peft_type, { ia3: 'IA3', 'ln-tuning': 'LN_TUNING', loha: 'LOHA', lokr: 'LOKR', vera: 'VERA', oft: 'OFT', hra: 'HRA' }[c.spec.kind as string] ?? 'LORA');
          if (c.spec.kind === 'ln-tuning' && c.model !== 'vit-tiny') {
            // PEFT's layout: each norm module copied whole, under ln_tuning_layers (ViT's: under its run-time names, its head saved too; read back below).
            const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()];
            const norms = [...a.trainable.keys()].map((n) => n.replace(/\.(weight|bias)$/, (_, leaf: string) => `.ln_tuning_layers.${leaf}`));
            assert.deepEqual(keys.sort(), norms.map((n) => `base_model.model.${n}`).sort());
            assert.deepEqual(cfg.target_modules, [...new Set([...a.trainable.keys()].map((n) => n.slice(0, n.lastIndexOf('.'))))].sort());
          }
          assert.equal(cfg.task_type, { 'gpt2-tiny': 'CAUSAL_LM', 'llama-tiny': 'CAUSAL_LM', 'bert-cls-tiny': 'SEQ_CLS', 'vit-tiny': null }[c.model]);
          const b = await loadPeftAdapter(model, dir);
          try {
            assert.deepEqual([...b.trainable.keys()].sort(), [...a.trainable.keys()].sort());
            assert.deepEqual(await logits(c.model, b), before);
          } finally {
            b.dispose();
          }
          // `forward --adapter` goes through the same loader.
          const hooks = await loadAdapterHooks(model, dir);
          const out = tf.tidy(() => model.forward(batches.get(c.model)!.inputs, { hooks: hooks.hooks, overrides: hooks.params }));
          assert.deepEqual(await out.data(), before);
          out.dispose();
          hooks.dispose();
        } finally {
          a.dispose();
          rmSync(dir, { recursive: true, force: true });
        }
      });
    }

    it('LN-tuning on a classifier saves its head as PEFT\'s SEQ_CLS needs, and loads back to the same logits', () =>
      withExported('bert-cls-tiny', { kind: 'ln-tuning' }, async ({ dir, cfg, loadsBack }) => {
        assert.deepEqual([cfg.peft_type, cfg.task_type, cfg.modules_to_save], ['LN_TUNING', 'SEQ_CLS', ['classifier', 'score']]);
        const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()];
        assert.ok(keys.includes('base_model.model.classifier.weight') && keys.includes('base_model.model.classifier.bias'), keys.join(', '));
        await loadsBack();
      }));

    it('reads PEFT\'s bias="all" files of a classifier: the wrapper\'s original and trained bias copies', () =>
      withExported('bert-cls-tiny', { kind: 'lora', r: 2, alpha: 4, bias: 'all' }, async ({ dir, model, loadsBack }) => {
        // As PEFT 0.21 saves it: every state-dict key ending in ".bias", so also
        // classifier.original_module.bias (the base's) and classifier.modules_to_save.bias (the trained one again).
        const file = join(dir, 'adapter_model.safetensors');
        const t = await readSafetensors(file);
        const trained = t.get('base_model.model.classifier.bias')!;
        const original = (await model.params.get('classifier.bias')!.data()) as Float32Array;
        t.set('base_model.model.classifier.original_module.bias', { dtype: 'F32', shape: trained.shape, data: Float32Array.from(original) });
        t.set('base_model.model.classifier.modules_to_save.bias', { ...trained });
        await writeSafetensors(file, t);
        await loadsBack();
        // A copy that disagrees with the tensor it duplicates is an error naming it.
        t.set('base_model.model.classifier.modules_to_save.bias', { dtype: 'F32', shape: trained.shape, data: Float32Array.from(original) });
        await writeSafetensors(file, t);
        await assert.rejects(loadPeftAdapter(model, dir), /classifier\.modules_to_save\.bias\): duplicates tensor base_model\.model\.classifier\.bias with different values/);
      }));

    it('a trained tied embedding is saved with its head (lm_head), as PEFT computes it; a head that differs is refused', () =>
      withExported('gpt2-tiny', { kind: 'lora', r: 2, alpha: 4, modulesToSave: ['wte'] }, async ({ dir, cfg, model, loadsBack }) => {
        // PEFT copies each module to save: without lm_head its head would keep the original embedding.
        assert.deepEqual(cfg.modules_to_save, ['wte', 'lm_head']);
        const file = join(dir, 'adapter_model.safetensors');
        const t = await readSafetensors(file);
        const wte = t.get('base_model.model.transformer.wte.weight')!;
        assert.deepEqual(t.get('base_model.model.lm_head.weight'), wte);
        assert.ok(relMaxError(wte.data as Float32Array, (await model.params.get('transformer.wte.weight')!.data()) as Float32Array) > 0, 'the embedding trained');
        await loadsBack();
        const head = Float32Array.from(wte.data as Float32Array);
        head[0]! += 1;
        t.set('base_model.model.lm_head.weight', { ...wte, data: head });
        await writeSafetensors(file, t);
        const n = tf.memory().numTensors;
        await assert.rejects(loadPeftAdapter(model, dir), /lm_head\.weight\): differs from base_model\.model\.transformer\.wte\.weight: the adapter trains the output head apart/);
        assert.equal(tf.memory().numTensors, n, 'a failed load leaks no tensors');
      }));

    it('an init that replaced the base weight exports as a rank-2r LoRA on the original base', async () => {
      for (const name of ['llama-tiny', 'gpt2-tiny'] as Fixture[]) {
        const model = models.get(name)!;
        // A stub of the inits module: random A, B and the residual W − s·B·A in the stored layout.
        const stub: LoraInitProvider = async (_m, targets, rank, scale) => {
          const out = new Map<string, { A: Float32Array; B: Float32Array; residual: Float32Array }>();
          for (const [i, t] of targets.entries()) {
            const r = rank(t.module);
            const A = tf.randomNormal([r, t.inFeatures], 0, 0.1, 'float32', 100 + i);
            const B = tf.randomNormal([t.outFeatures, r], 0, 0.1, 'float32', 200 + i);
            const W = model.params.get(`${t.module}.weight`)!;
            const res = tf.tidy(() => {
              const d = tf.mul(tf.matMul(B, A), scale(t.module));
              return tf.sub(W, t.fanInFanOut ? tf.transpose(d) : d);
            });
            out.set(t.module, { A: (await A.data()) as Float32Array, B: (await B.data()) as Float32Array, residual: (await res.data()) as Float32Array });
            tf.dispose([A, B, res]);
          }
          return out;
        };
        const spec: AdapterSpec = { kind: 'lora', r: 4, alpha: 8, init: 'pissa' };
        await assert.rejects(createAdapter(model, spec, { seed: 0 }), /needs the data-aware init module/);
        const a = await createAdapter(model, spec, { seed: 0, inits: stub });
        const dir = join(tmp, `res-${name}`);
        try {
          assert.ok(a.frozen.size > 0, 'the residuals replace base weights');
          assertClose('init preserves the function', await logits(name, a), await logits(name), 1e-5);
          if (name === 'llama-tiny') {
            // Unconverted, as adapter-init writes it: init A/B, init_lora_weights "lora_ga", and
            // residual_model.safetensors beside it, which the loader applies to the original base.
            const un = join(tmp, 'unconverted');
            const cfg = { ...JSON.parse(readFileSync(fixture('peft', 'llama-tiny-loraga', 'adapter_config.json'), 'utf8')), target_modules: ['q_proj', 'v_proj'] };
            const tensors = new Map([...a.trainable].map(([k, t]) => [`base_model.model.${k}`, f32([...t.shape], t.dataSync() as Float32Array)]));
            await writePeftLora(un, { config: cfg, tensors });
            await writeSafetensors(join(un, 'residual_model.safetensors'), new Map([...a.frozen].map(([k, t]) => [k, f32([...t.shape], t.dataSync() as Float32Array)])));
            const u = await loadPeftAdapter(model, un);
            try {
              assert.equal(u.frozen.size, a.frozen.size);
              assertClose('unconverted adapter + residual file on the original base', await logits(name, u), await logits(name), 1e-5);
            } finally {
              u.dispose();
            }
          }
          perturb(a, 10);
          const trained = await logits(name, a);
          await savePeftAdapter(dir, a, { baseModel: name });
          const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
          assert.equal(cfg.r, 8);
          assert.equal(cfg.lora_alpha, 16);
          assert.equal(cfg.init_lora_weights, true);
          const b = await loadPeftAdapter(model, dir);
          try {
            assert.equal(b.frozen.size, 0, 'the export acts on the unmodified base');
            assertClose('converted export on the original base', await logits(name, b), trained, 1e-5);
          } finally {
            b.dispose();
          }
          // unmerge gives back the model's original weights, not the residual.
          const merged = a.merged();
          const restored = a.unmerge(merged);
          for (const [k, t] of restored) assertClose(`unmerged ${k}`, (await t.data()) as Float32Array, (await model.params.get(k)!.data()) as Float32Array, 1e-5);
          tf.dispose([...merged.values(), ...restored.values()]);
        } finally {
          a.dispose();
          rmSync(dir, { recursive: true, force: true });
        }
      }
    });

    it('kinds PEFT does not have refuse to export', async () => {
      const a = await createAdapter(models.get('llama-tiny')!, { kind: 'ssf' }, { seed: 0 });
      try {
        await assert.rejects(a.exportPeft(), /no Hugging Face PEFT format/);
      } finally {
        a.dispose();
      }
    });
  });

  describe('adapter_config.json errors name the file and the key', () => {
    const good = JSON.parse(readFileSync(fixture('peft', 'llama-tiny-lora', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const weights = readFileSync(fixture('peft', 'llama-tiny-lora', 'adapter_model.safetensors'));
    const bad: [string, Record<string, unknown> | string, string, RegExp][] = [
      ['unsupported peft_type', { ...good, peft_type: 'PREFIX_TUNING' }, 'peft_type', /unsupported PEFT type "PREFIX_TUNING"/],
      ['r not an integer', { ...good, r: 'four' }, 'r', /positive integer/],
      ['bias value', { ...good, bias: 'some' }, 'bias', /"none", "all" or "lora_only"/],
      ['rank_pattern value', { ...good, rank_pattern: { q_proj: 0 } }, 'rank_pattern.q_proj', /positive integer/],
      ['targets that match nothing', { ...good, target_modules: ['qkv'] }, 'target_modules', /match no linear module/],
      ['unsupported feature', { ...good, use_qalora: true }, 'use_qalora', /not supported/],
      ['init that changes the base unrecoverably', { ...good, init_lora_weights: 'loftq' }, 'init_lora_weights', /unsupported value/],
      ['rank that does not match the tensors', { ...good, r: 8 }, 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', /shape \[4, 64\] does not match .* imply \[8, 64\]/],
      ['tensor of no targeted module', { ...good, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj'] }, 'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight', /does not belong to any module/],
      ['missing tensor', { ...good, use_dora: true }, 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector', /missing/],
      ['invalid JSON', '{"peft_type": "LORA",', '1:22', /JSON syntax error: property name expected/],
    ];
    for (const [title, cfg, key, msg] of bad) {
      it(title, async () => {
        const dir = join(tmp, `bad-${title.replace(/\W+/g, '-')}`);
        await writePeftLora(dir, { config: {}, tensors: new Map() });
        writeFileSync(join(dir, 'adapter_config.json'), typeof cfg === 'string' ? cfg : JSON.stringify(cfg));
        writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
        const before = tf.memory().numTensors;
        await assert.rejects(loadPeftAdapter(models.get('llama-tiny')!, dir), (e: unknown) => {
          assert.ok(e instanceof InputError, `expected an InputError, got ${String(e)}`);
          const file = key.startsWith('base_model.') ? 'adapter_model.safetensors' : 'adapter_config.json';
          assert.equal(e.file, join(dir, file));
          assert.equal(e.where, key);
          assert.match(e.message, msg);
          assert.ok(e.message.startsWith(join(dir, file)), e.message);
          return true;
        });
        assert.equal(tf.memory().numTensors, before, 'a failed load leaks no tensors');
      });
    }
    it('a folder without the adapter file', async () => {
      const dir = join(tmp, 'no-weights');
      await writePeftLora(dir, { config: good, tensors: new Map() });
      rmSync(join(dir, 'adapter_model.safetensors'));
      await assert.rejects(loadPeftAdapter(models.get('llama-tiny')!, dir), (e: unknown) => e instanceof InputError && e.file === join(dir, 'adapter_model.safetensors'));
    });
  });

  it('writePeftLora replaces a folder atomically and keeps keys sorted', async () => {
    const dir = join(tmp, 'w');
    await writePeftLora(dir, { config: { r: 1, a: { z: 1, b: 2 } }, tensors: new Map([['base_model.model.x.lora_A.weight', f32([1, 2], [1, 2])]]) });
    await writePeftLora(dir, { config: { r: 2 }, tensors: { 'base_model.model.y.lora_A.weight': f32([1], [3]) } });
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')), { r: 2 });
    const t = await readSafetensors(join(dir, 'adapter_model.safetensors'));
    assert.deepEqual([...t.keys()], ['base_model.model.y.lora_A.weight']);
    assert.deepEqual(readdirSync(tmp).filter((f) => f.startsWith('.w.')), [], 'no temp or old folder left behind');
    await writePeftLora(join(dir, 'sub'), { config: { b: 1, a: { d: 1, c: 2 } }, tensors: new Map() });
    assert.equal(readFileSync(join(dir, 'sub', 'adapter_config.json'), 'utf8'), '{\n  "a": {\n    "c": 2,\n    "d": 1\n  },\n  "b": 1\n}\n');
  });

  it('the bench LoRA factory builds LoRA on the given targets', () => {
    const model = models.get('gpt2-tiny')!;
    const a = loraFactory()(model, 8, 16, ['c_attn']);
    try {
      assert.equal([...a.trainable.values()].reduce((n, t) => n + t.size, 0), 4 * 8 * (64 + 192));
      assert.ok(a.hooks.linear?.has('transformer.h.0.attn.c_attn'));
    } finally {
      a.dispose();
    }
  });
});

describe('seed 0 is a seed', () => {
  let model: Model;
  before(async () => {
    await useTestBackend();
    model = await Model.load(fixture('hf', 'llama-tiny'));
  });
  after(() => model.dispose());
  // TF.js's normal draws take 0 as "no seed" (Math.random): the first module of a seed-0 run got a
  // different normal init on every run (AdaLoRA, LoRA's gaussian init), and AdaLoRA's first logged
  // loss moved in the 4th digit. Uniform draws (LoRA's default init, LyCORIS, HRA) were not affected.
  const kinds: AdapterSpec[] = [
    { kind: 'lora', r: 2, targets: ['q_proj', 'v_proj'] },
    { kind: 'lora', r: 2, targets: ['q_proj'], init: 'gaussian' },
    { kind: 'adalora', r: 2, targets: ['q_proj', 'v_proj'] },
    { kind: 'loha', r: 2, targets: ['q_proj'] },
    { kind: 'lokr', r: 2, targets: ['q_proj'] },
    { kind: 'hra', r: 2, targets: ['q_proj'] },
    { kind: 'bottleneck' },
    { kind: 'lora', r: 2, targets: ['q_proj', 'embed_tokens'] },
  ];
  for (const spec of kinds) {
    it(`${spec.kind}${spec.init ? ` (${spec.init})` : ''}${spec.targets?.includes('embed_tokens') ? ' on embeddings' : ''}: two builds at seed 0 are equal, and differ from seed 1`, async () => {
      const build = async (seed: number) => {
        const a = await createAdapter(model, spec, { seed });
        const out = new Map<string, Float32Array>();
        for (const [k, t] of a.trainable) out.set(k, (await t.data()) as Float32Array);
        a.dispose();
        return out;
      };
      const [x, y, z] = [await build(0), await build(0), await build(1)];
      assert.deepEqual([...x.keys()], [...y.keys()]);
      for (const [k, v] of x) assert.deepEqual(y.get(k), v, `${k}: same at seed 0`);
      const random = [...x].filter(([, v]) => v.some((e) => e !== 0 && e !== 1));
      assert.ok(random.length > 0, 'something was drawn at random');
      assert.ok(random.some(([k, v]) => z.get(k)!.some((e, i) => e !== v[i])), 'seed 1 draws other values');
    });
  }

  it('vera: the shared projections at seed 0 are equal across builds', async () => {
    const infos = selectLinears(model, { targets: ['q_proj', 'v_proj'] });
    const draw = async (seed: number) => {
      const p = veraProjections(infos, 2, seed);
      const out = [(await p.A.data()) as Float32Array, (await p.B.data()) as Float32Array];
      tf.dispose([p.A, p.B]);
      return out;
    };
    const [x, y, z] = [await draw(0), await draw(0), await draw(1)];
    assert.deepEqual(x, y);
    assert.notDeepEqual(x[0], z[0]);
  });
});
