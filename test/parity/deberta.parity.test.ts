/**
 * DeBERTa-v2/v3 sequence classifiers against a plain float64 re-implementation of transformers'
 * modeling_deberta_v2.py (test/helpers/naive-deberta.ts): logits of v3-style models (shared
 * attention keys, log-bucketed relative positions, normalised relative embeddings, no absolute
 * positions) and v2-style ones (own pos_key_proj, clamped relative positions, absolute positions,
 * token types, an embedding projection), padding, gradients (float64 directional derivatives).
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAdapter } from '../../sidecar/src/adapters';
import { collectCovariances } from '../../sidecar/src/adapters/inits/calibration';
import { hookableLinears } from '../../sidecar/src/adapters/targets';
import { inputLimits } from '../../sidecar/src/models/input-limits';
import { parseConfig, type DebertaConfig } from '../../sidecar/src/models/config';
import { logBucket } from '../../sidecar/src/models/deberta';
import { assertMergeReproduces, perturb } from '../helpers/adapters';
import { naiveBucket, naiveDebertaLogits } from '../helpers/naive-deberta';
import { assertClose, useTestBackend } from '../helpers/numeric';
import { assertClassifierGradients, assertClassifierLogits, randomCheckpoint, weightLookup } from '../helpers/random-checkpoint';

const BASE = { model_type: 'deberta-v2', architectures: ['DebertaV2ForSequenceClassification'], vocab_size: 50, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 96, max_position_embeddings: 64, hidden_act: 'gelu', num_labels: 3 };
const VARIANTS: { name: string; config: Record<string, unknown> }[] = [
  {
    name: 'v3: shared keys, position buckets 8 (log-bucketed beyond ±4), normalised relative embeddings, no absolute positions',
    config: { relative_attention: true, position_buckets: 8, max_relative_positions: -1, pos_att_type: 'p2c|c2p', share_att_key: true, norm_rel_ebd: 'layer_norm', position_biased_input: false, type_vocab_size: 0 },
  },
  {
    name: 'v2: own pos_key_proj / pos_query_proj, relative positions clamped at ±6, absolute positions, token types, embed_proj from 48',
    config: { relative_attention: true, max_relative_positions: 6, pos_att_type: ['c2p', 'p2c'], share_att_key: false, position_biased_input: true, type_vocab_size: 2, embedding_size: 48 },
  },
  { name: 'c2p only, unbucketed', config: { relative_attention: true, max_relative_positions: 16, pos_att_type: ['c2p'], share_att_key: true, position_biased_input: false } },
];
const IDS = [
  [1, 7, 12, 3, 44, 9, 20, 31, 5, 18, 2, 40],
  [1, 22, 8, 16, 35, 11, 4, 27, 6, 13, 49, 2],
];

describe('DeBERTa-v2/v3 classifiers against a float64 re-implementation of transformers’ modeling_deberta_v2', () => {
  let root = '';
  before(async () => {
    await useTestBackend();
    root = mkdtempSync(join(tmpdir(), 'peft-lab-deberta-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A random model of the variant, written to a folder and loaded back (names and shapes as a checkpoint's). */
  const load = (config: Record<string, unknown>, seed: number, drop?: RegExp) => randomCheckpoint<DebertaConfig>(root, { ...BASE, ...config }, seed, { ...(drop ? { drop } : {}), moved: (n) => n.includes('LayerNorm') });
  const lookup = weightLookup;

  it('config: DebertaV2Config defaults; v3 keys (a "p2c|c2p" string, buckets, norm_rel_ebd); the v2-xlarge convolution refused', () => {
    const c = parseConfig({ model_type: 'deberta-v2', vocab_size: 100 }, 'c.json') as DebertaConfig;
    assert.deepEqual([c.hiddenSize, c.numHeads, c.numLayers, c.intermediateSize, c.layerNormEps, c.relativeAttention, c.positionBiasedInput, c.typeVocabSize, c.c2p, c.p2c], [1536, 24, 24, 6144, 1e-7, false, true, 0, false, false]);
    const v3 = parseConfig({ ...BASE, ...VARIANTS[0]!.config }, 'c.json') as DebertaConfig;
    assert.deepEqual([v3.c2p, v3.p2c, v3.positionBuckets, v3.maxRelativePositions, v3.normRelEmbeddings, v3.shareAttKey], [true, true, 8, 64, true, true]);
    assert.throws(() => parseConfig({ ...BASE, conv_kernel_size: 3 }, 'c.json'), /conv_kernel_size.*not supported/);
    assert.throws(() => parseConfig({ ...BASE, pos_att_type: 'c2p|p2p' }, 'c.json'), /pos_att_type.*"p2p"/);
  });

  it('log buckets as transformers’ make_log_bucket_position: as they are within ±bucket/2, log-spaced beyond', () => {
    for (const [bucket, max] of [[8, 64], [256, 512]] as const)
      for (let r = -70; r <= 70; r++) assert.equal(logBucket(r, bucket, max), naiveBucket(r, bucket, max), `bucket(${r}; ${bucket}, ${max})`);
    assert.deepEqual([logBucket(3, 8, 64), logBucket(4, 8, 64), logBucket(5, 8, 64), logBucket(63, 8, 64), logBucket(-63, 8, 64)], [3, 4, 5, 7, -7]);
  });

  for (const [i, v] of VARIANTS.entries()) {
    it(`${v.name}: logits equal the reference's; a padded row (mask) equals its unpadded self`, async () => {
      const { model, cfg, weights } = await load(v.config, 10 * (i + 1));
      try {
        assertClassifierLogits(model, IDS, 3, (ids) => naiveDebertaLogits(cfg, lookup(weights), ids), v.name);
      } finally {
        model.dispose();
      }
    });
  }

  it('gradients (v3): along random directions, the float64 reference’s derivative of the loss, for the relative embeddings, their norm, a projection and the pooler; no leaks', async () => {
    const { model, cfg, weights } = await load(VARIANTS[0]!.config, 99);
    const names = ['deberta.encoder.rel_embeddings.weight', 'deberta.encoder.LayerNorm.weight', 'deberta.encoder.layer.0.attention.self.key_proj.weight', 'pooler.dense.weight'];
    try {
      await assertClassifierGradients(model, names, IDS, [2, 0], weights, (w, ids) => naiveDebertaLogits(cfg, lookup(w), ids));
    } finally {
      model.dispose();
    }
  });

  it('PEFT targets (query_proj, value_proj); a base without pooler and classifier gets fresh ones that train; SSF on its norms merges', async () => {
    const { model } = await load(VARIANTS[0]!.config, 7);
    try {
      const lora = await createAdapter(model, { kind: 'lora', r: 2, alpha: 4 }, { seed: 1 });
      const names = [...new Set([...lora.trainable.keys()].map((n) => n.replace(/^deberta\.encoder\.layer\.\d+\./, '')))].sort();
      assert.deepEqual(names, ['attention.self.query_proj.lora_A.weight', 'attention.self.query_proj.lora_B.weight', 'attention.self.value_proj.lora_A.weight', 'attention.self.value_proj.lora_B.weight', 'classifier.bias', 'classifier.weight']);
      lora.dispose();
      const ssf = await createAdapter(model, { kind: 'ssf', targets: ['LayerNorm'] }, { seed: 1 });
      // (SSF on a complete model; a base without its pooler and classifier comes below.)
      perturb(ssf, 0.2, 3);
      const inputIds = tf.tensor2d(IDS, [2, 12], 'int32');
      assertMergeReproduces(model, ssf, { inputIds });
      inputIds.dispose();
      ssf.dispose();
    } finally {
      model.dispose();
    }
    // deberta-v3-base has neither: both start fresh, and both train (PEFT would leave the pooler frozen at random).
    const bare = (await load(VARIANTS[0]!.config, 8, /^(pooler|classifier)\./)).model;
    try {
      assert.deepEqual([...bare.freshHeads].sort(), ['classifier.bias', 'classifier.weight', 'pooler.dense.bias', 'pooler.dense.weight']);
      const lora = await createAdapter(bare, { kind: 'lora', r: 2, alpha: 4 }, { seed: 1 });
      assert.deepEqual([...lora.trainable.keys()].filter((n) => /^(pooler|classifier)\./.test(n)).sort(), ['classifier.bias', 'classifier.weight', 'pooler.dense.bias', 'pooler.dense.weight']);
      lora.dispose();
    } finally {
      bare.dispose();
    }
  });
  it('CorDA’s covariances count the projections’ calls on the relative embeddings (shared keys) as PEFT’s hook does: the same for any calibration batch size', async () => {
    const { model } = await load(VARIANTS[0]!.config, 21);
    try {
      const mods = hookableLinears(model).filter((m) => /layer\.0\.attention\.self\.(query|value)_proj$/.test(m.module));
      const ids = tf.tensor2d(IDS, [2, 12], 'int32');
      const [one, two] = [await collectCovariances(model, mods, ids, 1), await collectCovariances(model, mods, ids, 2)];
      ids.dispose();
      for (const m of mods) assertClose(m.module, two.get(m.module)!, one.get(m.module)!, 1e-5);
      // The v3 input limits: no token types to check (type_vocab_size 0), no length cap from absolute positions.
      const limits = inputLimits(model.config);
      assert.deepEqual([limits.tokenTypes, limits.positions], [undefined, undefined]);
    } finally {
      model.dispose();
    }
  });
});
