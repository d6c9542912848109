/**
 * ModernBERT sequence classifiers against a plain float64 re-implementation of transformers'
 * modeling_modernbert.py (test/helpers/naive-modernbert.ts): logits of global and local (banded)
 * blocks with their two RoPE bases, [CLS] and mean pooling, padding, gradients (float64 directional
 * derivatives); a base checkpoint's fresh head as transformers initialises it; PEFT targets and SSF.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAdapter } from '../../sidecar/src/adapters';
import { tapPoints } from '../../sidecar/src/adapters/targets';
import { f32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { parseConfig, type ModernBertConfig } from '../../sidecar/src/models/config';
import { assertMergeReproduces, perturb } from '../helpers/adapters';
import { naiveModernBertLogits } from '../helpers/naive-modernbert';
import { useTestBackend } from '../helpers/numeric';
import { assertClassifierGradients, assertClassifierLogits, randomCheckpoint, weightLookup } from '../helpers/random-checkpoint';

const BASE = { model_type: 'modernbert', architectures: ['ModernBertForSequenceClassification'], vocab_size: 60, hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 4, intermediate_size: 40, max_position_embeddings: 64, num_labels: 3, pad_token_id: 0 };
const VARIANTS: { name: string; config: Record<string, unknown> }[] = [
  {
    name: 'ModernBERT-base’s keys: every 2nd block global from block 0, the others local (±2 tokens: local_attention 4), global_rope_theta / local_rope_theta, mean pooling',
    config: { global_attn_every_n_layers: 2, local_attention: 4, global_rope_theta: 1000, local_rope_theta: 77, classifier_pooling: 'mean' },
  },
  {
    name: 'transformers 5 keys (layer_types, nested rope_parameters), [CLS] pooling, norms and projections with biases',
    config: {
      layer_types: ['sliding_attention', 'full_attention', 'sliding_attention'],
      local_attention: 6,
      rope_parameters: { full_attention: { rope_type: 'default', rope_theta: 5000 }, sliding_attention: { rope_type: 'default', rope_theta: 50 } },
      classifier_pooling: 'cls',
      norm_bias: true,
      attention_bias: true,
      mlp_bias: true,
      classifier_bias: true,
    },
  },
];
const IDS = [
  [1, 7, 12, 3, 44, 9, 20, 31, 5, 18, 2, 40],
  [1, 22, 8, 16, 35, 11, 4, 27, 6, 13, 59, 2],
];

describe('ModernBERT classifiers against a float64 re-implementation of transformers’ modeling_modernbert', () => {
  let root = '';
  before(async () => {
    await useTestBackend();
    root = mkdtempSync(join(tmpdir(), 'peft-lab-modernbert-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const load = (config: Record<string, unknown>, seed: number, drop?: RegExp, rename?: (n: string) => string, extra?: Map<string, HostTensor>) =>
    randomCheckpoint<ModernBertConfig>(root, { ...BASE, ...config }, seed, { ...(drop ? { drop } : {}), ...(rename ? { rename } : {}), ...(extra ? { extra } : {}) });
  const lookup = weightLookup;

  it('config as ModernBertConfig: defaults (ModernBERT-base’s sizes), every third block global from block 0, half windows, the two RoPE bases', () => {
    const c = parseConfig({ model_type: 'modernbert' }, 'c.json') as ModernBertConfig;
    assert.deepEqual([c.hiddenSize, c.numHeads, c.numLayers, c.intermediateSize, c.vocabSize, c.normEps, c.normBias, c.padTokenId, c.classifierPooling, c.globalRope.theta, c.localRope.theta], [768, 12, 22, 1152, 50368, 1e-5, false, 50283, 'cls', 160000, 10000]);
    assert.deepEqual(c.slidingWindows.slice(0, 6), [undefined, 64, 64, undefined, 64, 64]);
    assert.throws(() => parseConfig({ model_type: 'modernbert', classifier_pooling: 'max' }, 'c.json'), /classifier_pooling.*"max"/);
    const legacy = parseConfig({ ...BASE, ...VARIANTS[0]!.config }, 'c.json') as ModernBertConfig;
    assert.deepEqual([legacy.slidingWindows, legacy.globalRope.theta, legacy.localRope.theta, legacy.initCutoff], [[undefined, 2, undefined], 1000, 77, 2]);
    // A rope_scaling (with its rope_type) updates both layer types' settings, as convert_rope_params_to_dict.
    const scaled = parseConfig({ model_type: 'modernbert', rope_scaling: { rope_type: 'linear', factor: 4 } }, 'c.json') as ModernBertConfig;
    assert.deepEqual([scaled.globalRope, scaled.localRope], [{ theta: 160000, scaling: { type: 'linear', factor: 4 } }, { theta: 10000, scaling: { type: 'linear', factor: 4 } }]);
    assert.equal((parseConfig({ model_type: 'modernbert', initializer_cutoff_factor: null }, 'c.json') as ModernBertConfig).initCutoff, 3);
  });

  for (const [i, v] of VARIANTS.entries()) {
    it(`${v.name}: logits equal the reference’s; a padded row (mask) equals its unpadded self`, async () => {
      const { model, cfg, weights } = await load(v.config, 10 * (i + 1));
      try {
        assertClassifierLogits(model, IDS, 3, (ids) => naiveModernBertLogits(cfg, lookup(weights), ids), v.name);
      } finally {
        model.dispose();
      }
    });
  }

  it('gradients along random directions equal the float64 reference’s derivatives (embeddings, a local block’s Wqkv, the GeGLU Wi, a norm, the head); no leaks', async () => {
    const { model, cfg, weights } = await load(VARIANTS[0]!.config, 99);
    const names = ['model.embeddings.tok_embeddings.weight', 'model.layers.1.attn.Wqkv.weight', 'model.layers.2.mlp.Wi.weight', 'model.layers.1.attn_norm.weight', 'head.dense.weight'];
    try {
      await assertClassifierGradients(model, names, IDS, [2, 0], weights, (w, ids) => naiveModernBertLogits(cfg, lookup(w), ids));
    } finally {
      model.dispose();
    }
  });

  it('a base checkpoint (ModernBertModel’s names without model., no head): head and classifier start as transformers’ _init_weights (truncated normals, norm at 1) and train; LoRA on Wqkv; SSF merges, bias-free layout too', async () => {
    const { model } = await load(VARIANTS[0]!.config, 7, /^(head|classifier)\./, (n) => n.replace(/^model\./, ''));
    try {
      assert.deepEqual([...model.freshHeads].sort(), ['classifier.bias', 'classifier.weight', 'head.dense.weight', 'head.norm.weight']);
      assert.deepEqual(Array.from(model.params.get('head.norm.weight')!.dataSync()), Array(32).fill(1));
      const spread = (name: string, std: number) => {
        const w = model.params.get(name)!.dataSync() as Float32Array;
        assert.ok(w.every((x) => Math.abs(x) <= 2 * std), `${name}: truncated at 2 std`);
        const rms = Math.sqrt(w.reduce((a, x) => a + x * x, 0) / w.length);
        // A normal truncated at ±2σ has a spread of 0.88σ.
        assert.ok(Math.abs(rms - 0.88 * std) < 0.15 * std, `${name}: spread ${rms} for σ ${std}`);
      };
      spread('classifier.weight', 32 ** -0.5);
      spread('head.dense.weight', 0.02 / Math.sqrt(2 * 3));
      const lora = await createAdapter(model, { kind: 'lora', r: 2, alpha: 4 }, { seed: 1 });
      const names = [...new Set([...lora.trainable.keys()].map((n) => n.replace(/^model\.layers\.\d+\./, '')))].sort();
      assert.deepEqual(names, ['attn.Wqkv.lora_A.weight', 'attn.Wqkv.lora_B.weight', 'classifier.bias', 'classifier.weight', 'head.dense.weight', 'head.norm.weight']);
      lora.dispose();
    } finally {
      model.dispose();
    }
    // SSF everywhere on norms with biases; on the released bias-free layout, where the blocks' norms fold their shifts into Wqkv and Wi.
    for (const [vi, targets] of [[1, undefined], [0, ['attn_norm', 'mlp_norm', 'attn', 'mlp']]] as const) {
      const { model: m } = await load(VARIANTS[vi]!.config, 8 + vi, /^$/, (n) => n, new Map([['decoder.bias', f32([60], new Float32Array(60))]]));
      try {
        const points = targets ?? [...new Set(tapPoints(m).map((t) => t.name))];
        const ssf = await createAdapter(m, { kind: 'ssf', targets: [...points] }, { seed: 1 });
        perturb(ssf, 0.2, 3);
        const inputIds = tf.tensor2d(IDS, [2, 12], 'int32');
        assertMergeReproduces(m, ssf, { inputIds });
        inputIds.dispose();
        ssf.dispose();
      } finally {
        m.dispose();
      }
    }
  });
});
