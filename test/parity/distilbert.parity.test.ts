/**
 * DistilBERT sequence classifiers. No transformers fixture exists for them; DistilBERT is BERT's
 * encoder without token types (BERT's type-0 embedding folds into the positions), under other names,
 * with pre_classifier → ReLU → classifier in place of pooler → tanh → classifier. So bert-cls-tiny
 * rewritten into DistilBERT's layout must give, at [CLS], the hidden state of this project's BERT
 * (itself checked against transformers' logits and gradients), and logits that follow from it.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAdapter } from '../../sidecar/src/adapters';
import { f32, readSafetensors, toFloat32, toInt32, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { parseConfig, type BertConfig } from '../../sidecar/src/models/config';
import { Model } from '../../sidecar/src/models/model';
import { formatInspect, inspectModel } from '../../sidecar/src/tasks/inspect';
import { assertClose, assertNoLeak, fixture, useTestBackend } from '../helpers/numeric';
import { assertMergeReproduces, perturb } from '../helpers/adapters';

const BERT = fixture('hf', 'bert-cls-tiny');
const bertConfig = JSON.parse(readFileSync(join(BERT, 'config.json'), 'utf8')) as Record<string, number | string | object>;

/** DistilBERT's name of each BERT encoder module. */
const RENAMES: [RegExp, string][] = [
  [/^bert\.embeddings\.(word_embeddings|LayerNorm)\./, 'distilbert.embeddings.$1.'],
  [/^bert\.encoder\.layer\.(\d+)\.attention\.self\.query\./, 'distilbert.transformer.layer.$1.attention.q_lin.'],
  [/^bert\.encoder\.layer\.(\d+)\.attention\.self\.key\./, 'distilbert.transformer.layer.$1.attention.k_lin.'],
  [/^bert\.encoder\.layer\.(\d+)\.attention\.self\.value\./, 'distilbert.transformer.layer.$1.attention.v_lin.'],
  [/^bert\.encoder\.layer\.(\d+)\.attention\.output\.dense\./, 'distilbert.transformer.layer.$1.attention.out_lin.'],
  [/^bert\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\./, 'distilbert.transformer.layer.$1.sa_layer_norm.'],
  [/^bert\.encoder\.layer\.(\d+)\.intermediate\.dense\./, 'distilbert.transformer.layer.$1.ffn.lin1.'],
  [/^bert\.encoder\.layer\.(\d+)\.output\.dense\./, 'distilbert.transformer.layer.$1.ffn.lin2.'],
  [/^bert\.encoder\.layer\.(\d+)\.output\.LayerNorm\./, 'distilbert.transformer.layer.$1.output_layer_norm.'],
  [/^bert\.pooler\.dense\./, 'pre_classifier.'],
];

describe('DistilBERT classifiers against this project’s BERT (checked against transformers), moved into its layout', () => {
  let root = '';
  let dir = '';
  let bert: Model;
  let model: Model;
  let ids: tf.Tensor2D;
  let labels: tf.Tensor1D;
  /** Each DistilBERT parameter's BERT counterpart (the positions: BERT's, which carry the type-0 row besides). */
  const fromBert = new Map<string, string>([['distilbert.embeddings.position_embeddings.weight', 'bert.embeddings.position_embeddings.weight']]);

  before(async () => {
    await useTestBackend();
    root = mkdtempSync(join(tmpdir(), 'peft-lab-distilbert-'));
    const w = await readSafetensors(join(BERT, 'model.safetensors'));
    const out = new Map<string, HostTensor>();
    for (const [n, t] of w) {
      const rule = RENAMES.find(([re]) => re.test(n));
      if (rule) {
        out.set(n.replace(rule[0], rule[1]), t);
        fromBert.set(n.replace(rule[0], rule[1]), n);
      }
      else if (n.startsWith('classifier.')) out.set(n, t);
    }
    // BERT adds token type 0's embedding to every token: DistilBERT has it inside its positions.
    const d = bertConfig.hidden_size as number;
    const pos = toFloat32(w.get('bert.embeddings.position_embeddings.weight')!);
    const type0 = toFloat32(w.get('bert.embeddings.token_type_embeddings.weight')!).subarray(0, d);
    out.set('distilbert.embeddings.position_embeddings.weight', f32([pos.length / d, d], pos.map((x, i) => x + type0[i % d]!)));
    dir = join(root, 'distilbert-tiny');
    mkdirSync(dir);
    const { hidden_size, num_attention_heads, num_hidden_layers, intermediate_size, hidden_act, vocab_size, max_position_embeddings, pad_token_id, id2label, label2id } = bertConfig;
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ model_type: 'distilbert', architectures: ['DistilBertForSequenceClassification'], dim: hidden_size, n_heads: num_attention_heads, n_layers: num_hidden_layers, hidden_dim: intermediate_size, activation: hidden_act, vocab_size, max_position_embeddings, pad_token_id, id2label, label2id }),
    );
    await writeSafetensors(join(dir, 'model.safetensors'), out);
    bert = await Model.load(BERT);
    model = await Model.load(dir);
    const refs = await readSafetensors(join(BERT, 'refs.safetensors'));
    ids = tf.tensor2d(toInt32(refs.get('input_ids')!), refs.get('input_ids')!.shape as [number, number], 'int32');
    labels = tf.tensor1d(toInt32(refs.get('labels')!), 'int32');
  });
  after(() => {
    tf.dispose([ids, labels]);
    bert.dispose();
    model.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  /** BERT's last hidden state at [CLS] [B, d]. */
  function bertCls(attentionMask?: tf.Tensor2D): Float32Array {
    const last = `bert.encoder.layer.${bert.config.numLayers - 1}.output.LayerNorm`;
    let cls: Float32Array | undefined;
    const taps = new Map([[last, (x: tf.Tensor) => ((cls = tf.tidy(() => tf.reshape(tf.slice(tf.reshape(x, [ids.shape[0], ids.shape[1], -1]), [0, 0, 0], [-1, 1, -1]), [ids.shape[0], -1]).dataSync() as Float32Array)), x)]]);
    tf.tidy(() => bert.forward({ inputIds: ids, ...(attentionMask ? { attentionMask } : {}) }, { hooks: { taps } }));
    return cls!;
  }

  it('config: DistilBertConfig keys and defaults; PEFT-style default targets (q_lin, v_lin) with the head saved', async () => {
    const c = parseConfig({ model_type: 'distilbert', vocab_size: 100 }, 'c.json') as BertConfig;
    assert.deepEqual([c.hiddenSize, c.numHeads, c.numLayers, c.intermediateSize, c.activation, c.maxPositions, c.typeVocabSize, c.padTokenId, c.layerNormEps], [768, 12, 6, 3072, 'gelu', 512, 0, 0, 1e-12]);
    assert.throws(() => parseConfig({ model_type: 'distilbert', dim: 100, n_heads: 12 }, 'c.json'), /n_heads.*dim=100 is not divisible by n_heads=12/);
    const lora = await createAdapter(model, { kind: 'lora', r: 2, alpha: 4 }, { seed: 1 });
    const names = [...new Set([...lora.trainable.keys()].map((n) => n.replace(/^distilbert\.transformer\.layer\.\d+\./, '')))].sort();
    assert.deepEqual(names, ['attention.q_lin.lora_A.weight', 'attention.q_lin.lora_B.weight', 'attention.v_lin.lora_A.weight', 'attention.v_lin.lora_B.weight', 'classifier.bias', 'classifier.weight', 'pre_classifier.bias', 'pre_classifier.weight']);
    lora.dispose();
  });

  it('logits: pre_classifier → ReLU → classifier of BERT’s [CLS] state; with padding and a mask too', () => {
    const d = model.config.hiddenSize;
    const w = (n: string) => model.params.get(n)!.dataSync() as Float32Array;
    const expect = (cls: Float32Array) => {
      const [pw, pb, cw, cb] = [w('pre_classifier.weight'), w('pre_classifier.bias'), w('classifier.weight'), w('classifier.bias')];
      const k = cb.length;
      const out: number[] = [];
      for (let r = 0; r < cls.length / d; r++) {
        const h = Array.from({ length: d }, (_, o) => Math.max(0, pb[o]! + cls.subarray(r * d, (r + 1) * d).reduce((a, x, i) => a + x * pw[o * d + i]!, 0)));
        for (let c = 0; c < k; c++) out.push(cb[c]! + h.reduce((a, x, i) => a + x * cw[c * d + i]!, 0));
      }
      return out;
    };
    const got = tf.tidy(() => model.forward({ inputIds: ids }).dataSync() as Float32Array);
    assertClose('logits', got, expect(bertCls()), 1e-4);
    // The fixture's 4 rows of 12 tokens, as if padded after 12, 7, 9 and 4 tokens.
    const mask = tf.tensor2d([12, 7, 9, 4].flatMap((n) => Array.from({ length: 12 }, (_, j) => (j < n ? 1 : 0))), ids.shape, 'int32');
    const masked = tf.tidy(() => model.forward({ inputIds: ids, attentionMask: mask }).dataSync() as Float32Array);
    assertClose('masked logits', masked, expect(bertCls(mask)), 1e-4);
    mask.dispose();
  });

  it('gradients: through the encoder, those of BERT’s (a fixed linear read-out of the [CLS] state, parameters matched by name); the head’s by the chain rule; no leaks', async () => {
    const d = model.config.hiddenSize;
    const c = tf.randomNormal([ids.shape[0], d], 0, 1, 'float32', 7);
    /** Σ c ⊙ (the last layer's [CLS] state), and its gradients with respect to `names`. */
    const readOut = (m: Model, point: string, names: string[]) => {
      const xs = names.map((n) => m.params.get(n)!);
      const f = (...ts: tf.Tensor[]) => {
        let state: tf.Tensor | undefined;
        const taps = new Map([[point, (x: tf.Tensor) => ((state = x), x)]]);
        m.forward({ inputIds: ids }, { overrides: new Map(names.map((n, i) => [n, ts[i]!])), hooks: { taps } });
        const cls = tf.reshape(tf.slice(tf.reshape(state!, [ids.shape[0], ids.shape[1], d]), [0, 0, 0], [-1, 1, -1]), [ids.shape[0], d]);
        return tf.sum(tf.mul(cls, c)) as tf.Scalar;
      };
      return tf.tidy(() => tf.grads(f)(xs).map((g) => g.dataSync() as Float32Array));
    };
    const names = [...model.params.keys()].filter((n) => n.startsWith('distilbert.'));
    const bertName = (n: string) => fromBert.get(n)!;
    await assertNoLeak(() => {
      const got = readOut(model, `distilbert.transformer.layer.${model.config.numLayers - 1}.output_layer_norm`, names);
      const want = readOut(bert, `bert.encoder.layer.${bert.config.numLayers - 1}.output.LayerNorm`, names.map(bertName));
      // Key biases' gradients are analytically zero (softmax ignores a per-row shift): rounding noise on both sides, so a floor of 1e-6 of the largest.
      const globalMax = Math.max(...want.map((g) => Math.max(...g.map(Math.abs))));
      names.forEach((n, i) => {
        const scale = Math.max(...want[i]!.map(Math.abs), 1e-6 * globalMax);
        const worst = got[i]!.reduce((m, x, j) => Math.max(m, Math.abs(x - want[i]![j]!)), 0);
        assert.ok(worst <= 1e-3 * scale, `d ${n}: max|Δ| ${worst.toExponential(3)} > 1e-3 × ${scale.toExponential(3)}`);
      });
    });
    c.dispose();
    // The head: pre_classifier → ReLU → classifier, its gradients as the chain rule gives them from the loss's.
    await assertNoLeak(() => {
      const { loss, grads } = model.lossAndGrads(['classifier.weight', 'classifier.bias'], { inputIds: ids }, labels);
      const logits = tf.tidy(() => model.forward({ inputIds: ids }));
      // d loss / d logits of the mean cross-entropy: (softmax − one-hot) / B; the bias's gradient is its column sum.
      const dLogits = tf.tidy(() => tf.div(tf.sub(tf.softmax(logits), tf.oneHot(labels, logits.shape[1]!)), ids.shape[0]));
      assertClose('d classifier.bias', grads.get('classifier.bias')!.dataSync(), tf.tidy(() => tf.sum(dLogits, 0).dataSync()), 1e-4);
      tf.dispose([loss, logits, dLogits, ...grads.values()]);
    });
  });
  it('SSF on its linear modules and norms, LN-tuning and a bottleneck adapter find its tap points; SSF folds into the weights (merged logits = the adapter’s)', async () => {
    const a = await createAdapter(model, { kind: 'ssf' }, { seed: 1 });
    try {
      const points = [...new Set([...a.trainable.keys()].map((n) => n.replace(/^distilbert\.(transformer\.layer\.\d+\.)?/, '').replace(/\.ssf_(scale|shift)$/, '')))].sort();
      // SSF's default: every linear module's output and every LayerNorm.
      assert.deepEqual(points, ['attention.k_lin', 'attention.out_lin', 'attention.q_lin', 'attention.v_lin', 'embeddings.LayerNorm', 'ffn.lin1', 'ffn.lin2', 'output_layer_norm', 'sa_layer_norm']);
      perturb(a, 0.2, 3);
      assertMergeReproduces(model, a, { inputIds: ids });
    } finally {
      a.dispose();
    }
    for (const kind of ['ln-tuning', 'bottleneck'] as const) {
      const b = await createAdapter(model, { kind }, { seed: 1 });
      assert.ok(b.trainable.size > 0, kind);
      b.dispose();
    }
  });
  it('a base checkpoint without the head (distilbert-base-uncased has none): the head starts as transformers starts it, the same on every load, and trains and saves with any adapter kind', async () => {
    const base = join(root, 'distilbert-base');
    mkdirSync(base);
    writeFileSync(join(base, 'config.json'), readFileSync(join(dir, 'config.json')));
    const w = await readSafetensors(join(dir, 'model.safetensors'));
    for (const n of ['pre_classifier.weight', 'pre_classifier.bias', 'classifier.weight', 'classifier.bias']) w.delete(n);
    await writeSafetensors(join(base, 'model.safetensors'), w);
    const inspected = await inspectModel(base);
    assert.deepEqual(inspected.freshHeads, ['pre_classifier.weight', 'pre_classifier.bias', 'classifier.weight', 'classifier.bias']);
    assert.match(formatInspect(inspected), /not in the checkpoint \(a run starts and trains them fresh\): pre_classifier\.weight/);
    const [a, b] = [await Model.load(base), await Model.load(base)];
    try {
      assert.deepEqual([...a.freshHeads].sort(), ['classifier.bias', 'classifier.weight', 'pre_classifier.bias', 'pre_classifier.weight']);
      const pw = a.params.get('pre_classifier.weight')!.dataSync() as Float32Array;
      assert.deepEqual(Array.from(pw), Array.from(b.params.get('pre_classifier.weight')!.dataSync()), 'the same on every load');
      const std = Math.sqrt(pw.reduce((s, x) => s + x * x, 0) / pw.length);
      assert.ok(Math.abs(std - 0.02) < 0.003, `std ${std}`);
      assert.ok(Array.from(a.params.get('classifier.bias')!.dataSync()).every((x) => x === 0));
      // PEFT's SEQ_CLS rule saves `classifier`; the fresh pre_classifier is added so that it trains and is exported too.
      for (const kind of ['lora', 'ia3', 'bitfit'] as const) {
        const adapter = await createAdapter(a, { kind }, { seed: 1 });
        const heads = [...adapter.trainable.keys()].filter((n) => /^(pre_)?classifier\./.test(n)).sort();
        assert.deepEqual(heads, ['classifier.bias', 'classifier.weight', 'pre_classifier.bias', 'pre_classifier.weight'], kind);
        adapter.dispose();
      }
    } finally {
      a.dispose();
      b.dispose();
    }
    // A decoder's missing LM head is still an error: only a classifier's head starts fresh.
    const llama = join(root, 'llama-headless');
    mkdirSync(llama);
    writeFileSync(join(llama, 'config.json'), readFileSync(join(fixture('hf', 'llama-tiny'), 'config.json')));
    const lw = await readSafetensors(join(fixture('hf', 'llama-tiny'), 'model.safetensors'));
    lw.delete('lm_head.weight');
    await writeSafetensors(join(llama, 'model.safetensors'), lw);
    await assert.rejects(Model.load(llama), /lm_head\.weight.*tensor missing from the checkpoint/);
  });
});
