/**
 * GPT-NeoX (Pythia), OPT, Phi and BLOOM causal LMs against plain float64 re-implementations of
 * transformers' modeling_gpt_neox.py, modeling_opt.py, modeling_phi.py and modeling_bloom.py
 * (test/helpers/naive-layernorm-decoders.ts): logits of the layouts real checkpoints use (Pythia's
 * parallel residual and quarter-rotated heads; opt-125m's pre-LN blocks; opt-350m's post-LN blocks
 * with projected embeddings; phi-2's shared norm and biased head; BLOOM's ALiBi, for a power-of-two
 * number of heads and not), the key/value cache, gradients
 * (float64 directional derivatives), checkpoints as the hub stores them, and PEFT's default targets.
 * No transformers fixture exists for them: the references are written from transformers' source.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAdapter } from '../../sidecar/src/adapters';
import { tapPoints } from '../../sidecar/src/adapters/targets';
import { alibiSlopes } from '../../sidecar/src/models/bloom';
import { f32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { parseConfig, type BloomConfig, type GptNeoxConfig, type OptConfig, type PhiConfig } from '../../sidecar/src/models/config';
import { assertMergeReproduces, perturb } from '../helpers/adapters';
import { naiveAlibiSlopes, naiveBloomLogits, naiveGptNeoxLogits, naiveOptLogits, naivePhiLogits } from '../helpers/naive-layernorm-decoders';
import { assertClose, assertNoLeak, useTestBackend } from '../helpers/numeric';
import { assertCachedLogitsMatch, assertDirectionalGradients, randomCheckpoint, weightLookup, type RandomCheckpointOptions, type WeightMap } from '../helpers/random-checkpoint';

const VOCAB = 40;
const NEOX = { model_type: 'gpt_neox', architectures: ['GPTNeoXForCausalLM'], vocab_size: VOCAB, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 48, max_position_embeddings: 64, hidden_act: 'gelu' };
const PHI = { model_type: 'phi', architectures: ['PhiForCausalLM'], vocab_size: VOCAB, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 48, max_position_embeddings: 64 };
const BLOOM = { model_type: 'bloom', architectures: ['BloomForCausalLM'], vocab_size: VOCAB, hidden_size: 32, n_layer: 2, n_head: 4 };
const OPT = { model_type: 'opt', architectures: ['OPTForCausalLM'], vocab_size: VOCAB, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, ffn_dim: 48, max_position_embeddings: 32, pad_token_id: 1 };

type Config = GptNeoxConfig | OptConfig | PhiConfig | BloomConfig;
interface Variant {
  name: string;
  config: Record<string, unknown>;
}
const VARIANTS: Variant[] = [
  { name: 'gpt_neox as Pythia: parallel residual, a quarter of each head rotated (rotary_pct, rotary_emb_base), untied embed_out', config: { ...NEOX, rotary_pct: 0.25, rotary_emb_base: 10000 } },
  {
    name: 'gpt_neox, sequential residual, no attention biases, tied head, transformers 5 rope_parameters (half rotated, linear scaling)',
    config: { ...NEOX, use_parallel_residual: false, attention_bias: false, tie_word_embeddings: true, rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 500, partial_rotary_factor: 0.5 } },
  },
  { name: 'opt as opt-125m: pre-LN blocks, ReLU, final norm, tied head', config: { ...OPT, do_layer_norm_before: true } },
  { name: 'opt as opt-350m: post-LN blocks, no final norm, 24-wide embeddings projected in and out', config: { ...OPT, do_layer_norm_before: false, word_embed_proj_dim: 24, activation_function: 'gelu' } },
  { name: 'phi as phi-2: one norm for both sub-layers, 0.4 of each 10-wide head rotated, gelu_new, biased head', config: { ...PHI, hidden_size: 40, partial_rotary_factor: 0.4, rope_theta: 5000 } },
  {
    name: 'phi with grouped-query heads (4 of 2), q/k LayerNorms, a tied head (its own bias), transformers 5 rope_parameters',
    config: { ...PHI, num_key_value_heads: 2, qk_layernorm: true, tie_word_embeddings: true, rope_parameters: { rope_type: 'default', rope_theta: 500, partial_rotary_factor: 0.25 } },
  },
  { name: 'bloom as bloom-560m: ALiBi over 4 heads, embeddings’ LayerNorm, tied head', config: { ...BLOOM } },
  { name: 'bloom with 6 heads (ALiBi’s slopes beyond a power of two), residuals from the normalised inputs, the older n_embed key', config: { ...BLOOM, hidden_size: undefined, n_embed: 36, n_head: 6, apply_residual_connection_post_layernorm: true } },
];
const IDS = [
  [0, 7, 12, 3, 33, 9, 20, 31, 5, 18, 2, 39],
  [2, 22, 8, 16, 35, 11, 4, 27, 6, 13, 38, 25],
];

const naiveLogits = (cfg: Config, w: (n: string) => Float32Array | Float64Array, ids: readonly number[]) => {
  switch (cfg.modelType) {
    case 'gpt_neox':
      return naiveGptNeoxLogits(cfg, w, ids);
    case 'opt':
      return naiveOptLogits(cfg, w, ids);
    case 'phi':
      return naivePhiLogits(cfg, w, ids);
    case 'bloom':
      return naiveBloomLogits(cfg, w, ids);
  }
};

describe('GPT-NeoX (Pythia), OPT, Phi and BLOOM against float64 re-implementations of transformers’ modeling files', () => {
  let root = '';
  before(async () => {
    await useTestBackend();
    root = mkdtempSync(join(tmpdir(), 'peft-lab-neox-opt-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A random model of the config, written to a folder (names renamed, some dropped, extra tensors added) and loaded back; with its weights by name. */
  const load = (raw: Record<string, unknown>, seed: number, o: RandomCheckpointOptions = {}) => randomCheckpoint<Config>(root, raw, seed, o);
  const lookup = weightLookup;

  it('configs as GPTNeoXConfig and OPTConfig: defaults, Pythia’s and opt-350m’s keys; unsupported settings named', () => {
    const neox = parseConfig({ model_type: 'gpt_neox' }, 'c.json') as GptNeoxConfig;
    assert.deepEqual([neox.hiddenSize, neox.numHeads, neox.numLayers, neox.intermediateSize, neox.vocabSize, neox.rotaryDim, neox.ropeTheta, neox.parallelResidual, neox.attentionBias, neox.tieWordEmbeddings], [6144, 64, 44, 24576, 50432, 24, 10000, true, true, false]);
    // pythia-70m's config.json keys.
    const pythia = parseConfig({ ...NEOX, hidden_size: 512, num_attention_heads: 8, rotary_pct: 0.25, rotary_emb_base: 10000, use_parallel_residual: true }, 'c.json') as GptNeoxConfig;
    assert.deepEqual([pythia.headDim, pythia.rotaryDim], [64, 16]);
    const nested = parseConfig({ ...NEOX, rope_parameters: { rope_type: 'default', rope_theta: 1000, partial_rotary_factor: 0.5 } }, 'c.json') as GptNeoxConfig;
    assert.deepEqual([nested.rotaryDim, nested.ropeTheta], [8, 1000]);
    assert.throws(() => parseConfig({ ...NEOX, rotary_pct: 0.2 }, 'c.json'), /rotary_pct.*even number/);
    // Older configs: rope_scaling beside rotary_emb_base; dynamic NTK from max_position_embeddings.
    const scaled = parseConfig({ ...NEOX, rotary_emb_base: 500, rope_scaling: { type: 'linear', factor: 4 } }, 'c.json') as GptNeoxConfig;
    assert.deepEqual([scaled.ropeTheta, scaled.ropeScaling], [500, { type: 'linear', factor: 4 }]);
    assert.deepEqual((parseConfig({ ...NEOX, rope_scaling: { type: 'dynamic', factor: 2 } }, 'c.json') as GptNeoxConfig).ropeScaling, { type: 'dynamic', factor: 2, originalMaxPositions: 64 });
    assert.throws(() => parseConfig({ ...NEOX, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1] } }, 'c.json'), /rope_scaling\.rope_type.*LongRoPE is not supported for GPT-NeoX/);
    const o = parseConfig({ model_type: 'opt' }, 'c.json') as OptConfig;
    assert.deepEqual([o.hiddenSize, o.numHeads, o.numLayers, o.intermediateSize, o.activation, o.layerNormBefore, o.finalLayerNorm, o.wordEmbedProjDim, o.tieWordEmbeddings, o.padTokenId], [768, 12, 12, 3072, 'relu', true, true, 768, true, 1]);
    const opt350 = parseConfig({ model_type: 'opt', hidden_size: 1024, num_attention_heads: 16, do_layer_norm_before: false, word_embed_proj_dim: 512 }, 'c.json') as OptConfig;
    assert.deepEqual([opt350.finalLayerNorm, opt350.wordEmbedProjDim], [false, 512]);
    assert.equal((parseConfig({ model_type: 'opt', _remove_final_layer_norm: true }, 'c.json') as OptConfig).finalLayerNorm, false);
    assert.throws(() => parseConfig({ model_type: 'opt', layer_norm_elementwise_affine: false }, 'c.json'), /layer_norm_elementwise_affine/);
    // phi-2's and phi-1.5's config.json keys; PhiConfig's defaults.
    const phi2 = parseConfig({ model_type: 'phi', hidden_size: 2560, num_attention_heads: 32, partial_rotary_factor: 0.4, rope_theta: 10000, qk_layernorm: false, num_key_value_heads: null }, 'c.json') as PhiConfig;
    assert.deepEqual([phi2.headDim, phi2.rotaryDim, phi2.numKvHeads, phi2.ropeTheta, phi2.activation, phi2.tieWordEmbeddings], [80, 32, 32, 10000, 'gelu_new', false]);
    const phiDefaults = parseConfig({ model_type: 'phi' }, 'c.json') as PhiConfig;
    assert.deepEqual([phiDefaults.hiddenSize, phiDefaults.numHeads, phiDefaults.rotaryDim, phiDefaults.intermediateSize, phiDefaults.vocabSize, phiDefaults.layerNormEps], [2048, 32, 32, 8192, 51200, 1e-5]);
    assert.throws(() => parseConfig({ model_type: 'phi', head_dim: 128 }, 'c.json'), /head_dim.*not supported/);
    // transformers reads `rope_scaling or rope_parameters`: a non-null rope_scaling wins.
    const both = parseConfig({ ...NEOX, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 }, rope_scaling: { type: 'linear', factor: 3 } }, 'c.json') as GptNeoxConfig;
    assert.deepEqual(both.ropeScaling, { type: 'linear', factor: 3 });
    // BLOOM: ALiBi's slopes as build_alibi_tensor computes them, for 4 heads and for 6 (beyond a power of two).
    assert.deepEqual(Array.from(alibiSlopes(4)), [0.25, 0.0625, 0.015625, 0.00390625]);
    assertClose('slopes of 6 heads', alibiSlopes(6), naiveAlibiSlopes(6), 1e-7);
    assert.deepEqual(Array.from(alibiSlopes(6)).slice(4), [Math.fround(2 ** -1), Math.fround(2 ** -3)]);
    const bloom560 = parseConfig({ model_type: 'bloom', n_embed: 1024, n_layer: 24, num_attention_heads: 16, n_head: 16, vocab_size: 250880 }, 'c.json') as BloomConfig;
    assert.deepEqual([bloom560.hiddenSize, bloom560.numHeads, bloom560.headDim, bloom560.tieWordEmbeddings, bloom560.residualPostLayernorm], [1024, 16, 64, true, false]);
    // BloomConfig's attribute_map: num_attention_heads and num_hidden_layers name n_head and n_layer.
    const aliased = parseConfig({ model_type: 'bloom', hidden_size: 48, num_attention_heads: 6, num_hidden_layers: 3 }, 'c.json') as BloomConfig;
    assert.deepEqual([aliased.numHeads, aliased.numLayers], [6, 3]);
    // pad_token_id null: no padding row (nn.Embedding's padding_idx=None), not OPT's default 1.
    assert.equal((parseConfig({ model_type: 'opt', pad_token_id: null }, 'c.json') as OptConfig).padTokenId, undefined);
  });

  for (const [i, v] of VARIANTS.entries()) {
    it(`${v.name}: logits equal the reference’s`, async () => {
      const { model, cfg, weights } = await load(v.config, 10 * (i + 1));
      try {
        const got = tf.tidy(() => model.forward({ inputIds: tf.tensor2d(IDS, [2, 12], 'int32') }).dataSync() as Float32Array);
        IDS.forEach((ids, b) => assertClose(`${v.name}, row ${b}`, got.subarray(b * 12 * VOCAB, (b + 1) * 12 * VOCAB), naiveLogits(cfg, lookup(weights), ids), 1e-4));
      } finally {
        model.dispose();
      }
    });
  }

  it('the key/value cache gives the whole-sequence logits (every layout)', async () => {
    for (const [i, v] of VARIANTS.entries()) {
      const { model } = await load(v.config, 50 + i);
      try {
        assertCachedLogitsMatch(model, IDS[1]!.slice(0, 9), v.name);
      } finally {
        model.dispose();
      }
    }
  });

  it('gradients along random directions equal the float64 reference’s derivatives of the loss (embeddings, positions, fused q/k/v, norms, projections); no leaks', async () => {
    const cases: [number, string[]][] = [
      [0, ['gpt_neox.embed_in.weight', 'gpt_neox.layers.0.attention.query_key_value.weight', 'gpt_neox.layers.1.post_attention_layernorm.bias', 'embed_out.weight']],
      [3, ['model.decoder.embed_positions.weight', 'model.decoder.project_in.weight', 'model.decoder.layers.0.self_attn_layer_norm.weight', 'model.decoder.layers.1.fc1.weight']],
      [5, ['model.embed_tokens.weight', 'lm_head.bias', 'model.layers.0.self_attn.k_layernorm.weight', 'model.layers.1.self_attn.k_proj.weight']],
      [7, ['transformer.word_embeddings_layernorm.weight', 'transformer.h.0.self_attention.query_key_value.weight', 'transformer.h.1.mlp.dense_h_to_4h.bias']],
    ];
    for (const [vi, names] of cases) {
      const { model, cfg, weights } = await load(VARIANTS[vi]!.config, 90 + vi);
      // Labels as transformers takes them (the loss shifts them): the ids, the first two of row 1 ignored.
      const labels = IDS.map((r, b) => r.map((id, t) => (b === 1 && t < 2 ? -100 : id)));
      const naiveLoss = (w: WeightMap) => {
        let sum = 0;
        let n = 0;
        IDS.forEach((ids, b) => {
          const z = naiveLogits(cfg, lookup(w), ids);
          labels[b]!.slice(1).forEach((y, t) => {
            if (y < 0) return;
            const row = z.subarray(t * VOCAB, (t + 1) * VOCAB);
            const m = Math.max(...row);
            sum += Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0)) + m - row[y]!;
            n++;
          });
        });
        return sum / n;
      };
      try {
        await assertNoLeak(() => {
          const inputIds = tf.tensor2d(IDS, [2, 12], 'int32');
          const target = tf.tensor2d(labels, [2, 12], 'int32');
          const { loss, grads } = model.lossAndGrads(names, { inputIds }, target);
          tf.dispose([inputIds, target]);
          assert.ok(Math.abs(loss.dataSync()[0]! - naiveLoss(weights)) < 1e-4);
          assertDirectionalGradients(grads, weights, naiveLoss, 60);
          tf.dispose([loss, ...grads.values()]);
        });
      } finally {
        model.dispose();
      }
    }
  });

  it('Phi’s biased head through the sliced loss: loss and gradients (head weight and bias trained or frozen) equal the one-matmul ones', async () => {
    const { model } = await load(VARIANTS[4]!.config, 95);
    try {
      await assertNoLeak(() => {
        const inputIds = tf.tensor2d(IDS, [2, 12], 'int32');
        for (const names of [['lm_head.weight', 'lm_head.bias', 'model.layers.1.mlp.fc1.weight'], ['lm_head.bias', 'model.final_layernorm.weight'], ['model.layers.0.self_attn.q_proj.weight']]) {
          const whole = model.lossAndGrads(names, { inputIds }, inputIds);
          // Any batch above 1 logit goes by slices of 5 rows.
          const sliced = model.lossAndGrads(names, { inputIds }, inputIds, { chunkedLossLogits: 1, chunkLogits: 5 * VOCAB });
          assertClose('loss', sliced.loss.dataSync(), whole.loss.dataSync(), 1e-5);
          for (const n of names) assertClose(`d ${n}`, sliced.grads.get(n)!.dataSync(), whole.grads.get(n)!.dataSync(), 1e-4);
          tf.dispose([whole.loss, sliced.loss, ...whole.grads.values(), ...sliced.grads.values()]);
        }
        inputIds.dispose();
      });
    } finally {
      model.dispose();
    }
  });

  it('checkpoints as the hub stores them: Pythia’s saved attention buffers are skipped, its head may be named lm_head; OPT saved from OPTModel (decoder.*, no lm_head) loads with its tied head', async () => {
    // Pythia's safetensors carry the causal mask (bool), masked_bias and rotary inv_freq of each block.
    const buffers = new Map<string, HostTensor>();
    for (let l = 0; l < 2; l++) {
      const p = `gpt_neox.layers.${l}.attention`;
      buffers.set(`${p}.bias`, { dtype: 'BOOL', shape: [1, 1, 64, 64], data: new Uint8Array(64 * 64).fill(1) });
      buffers.set(`${p}.masked_bias`, f32([], [-1e9]));
      buffers.set(`${p}.rotary_emb.inv_freq`, f32([2], [1, 0.01]));
    }
    const neox = await load(VARIANTS[0]!.config, 70, { extra: buffers });
    neox.model.dispose();
    // transformers 5 calls embed_out lm_head, and saves it so with save_original_format=False.
    const renamed = await load(VARIANTS[0]!.config, 72, { rename: (n) => n.replace(/^embed_out\./, 'lm_head.') });
    try {
      const got = tf.tidy(() => renamed.model.forward({ inputIds: tf.tensor2d([IDS[0]!], [1, 12], 'int32') }).dataSync() as Float32Array);
      assertClose('gpt_neox with lm_head.weight', got, naiveLogits(renamed.cfg, lookup(renamed.weights), IDS[0]!), 1e-4);
    } finally {
      renamed.model.dispose();
    }
    // facebook/opt-125m's names: the OPTModel's (no `model.` prefix), no lm_head (tied).
    const { model, cfg, weights } = await load(VARIANTS[2]!.config, 71, { rename: (n) => n.replace(/^model\./, '') });
    try {
      const got = tf.tidy(() => model.forward({ inputIds: tf.tensor2d([IDS[0]!], [1, 12], 'int32') }).dataSync() as Float32Array);
      assertClose('opt from OPTModel names', got, naiveLogits(cfg, lookup(weights), IDS[0]!), 1e-4);
    } finally {
      model.dispose();
    }
  });

  it('PEFT’s default targets (query_key_value; q_proj and v_proj; Phi’s q_proj, v_proj, fc1, fc2; BLOOM’s query_key_value; IA3’s feed-forward dense_4h_to_h and fc2); LoRA and SSF on every tap point merge to the adapted logits', async () => {
    const expected: Record<number, { lora: string[]; ia3ff: string[] }> = {
      0: { lora: ['attention.query_key_value'], ia3ff: ['mlp.dense_4h_to_h'] },
      3: { lora: ['self_attn.q_proj', 'self_attn.v_proj'], ia3ff: ['fc2'] },
      5: { lora: ['mlp.fc1', 'mlp.fc2', 'self_attn.q_proj', 'self_attn.v_proj'], ia3ff: ['mlp.fc2'] },
      6: { lora: ['self_attention.query_key_value'], ia3ff: ['mlp.dense_4h_to_h'] },
    };
    for (const [vi, want] of Object.entries(expected)) {
      const v = VARIANTS[Number(vi)]!;
      const { model } = await load(v.config, 80 + Number(vi));
      const inputIds = tf.tensor2d(IDS, [2, 12], 'int32');
      try {
        const modules = (a: { trainable: Map<string, tf.Tensor> }, suffix: RegExp) => [...new Set([...a.trainable.keys()].filter((n) => suffix.test(n)).map((n) => n.replace(/^.*(layers|\.h)\.\d+\./, '').replace(suffix, '')))].sort();
        const lora = await createAdapter(model, { kind: 'lora', r: 2, alpha: 4 }, { seed: 1 });
        assert.deepEqual(modules(lora, /\.lora_A\.weight$/), want.lora, v.name);
        perturb(lora, 0.3, 2);
        assertMergeReproduces(model, lora, { inputIds });
        lora.dispose();
        const ia3 = await createAdapter(model, { kind: 'ia3' }, { seed: 1 });
        perturb(ia3, 0.3, 4);
        assertMergeReproduces(model, ia3, { inputIds });
        ia3.dispose();
        // SSF at every norm and sub-layer output (post-LN OPT normalises after the residual sums).
        const points = tapPoints(model).map((t) => t.name);
        const ssf = await createAdapter(model, { kind: 'ssf', targets: [...new Set(points)] }, { seed: 1 });
        perturb(ssf, 0.2, 3);
        assertMergeReproduces(model, ssf, { inputIds });
        ssf.dispose();
        assert.ok(want.ia3ff.every((m) => model.arch.linearModules(model.config).some((l) => l.module.endsWith(m) && l.feedForward)), `${v.name}: feed-forward modules`);
      } finally {
        inputIds.dispose();
        model.dispose();
      }
    }
  });
});
