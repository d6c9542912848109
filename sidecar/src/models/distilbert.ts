/**
 * DistilBertForSequenceClassification: BERT's post-LN encoder without token types or pooler (word +
 * position embeddings; q_lin/k_lin/v_lin/out_lin, sa_layer_norm, ffn.lin1/lin2, output_layer_norm,
 * LayerNorm ε 1e-12 throughout) and a head of pre_classifier → ReLU → classifier on [CLS].
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, normParams, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import { classificationLoss } from './classification';
import type { BertConfig } from './config';
import { activation, attention, layerNorm, mergeHeads, paddingMask, splitHeads } from './ops';

const block = (i: number) => `distilbert.transformer.layer.${i}`;

function modules(cfg: BertConfig): Omit<LinearModuleInfo, 'layer'>[] {
  const d = cfg.hiddenSize;
  const ff = cfg.intermediateSize;
  const m = (module: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ module, name: module.split('.').pop()!, inFeatures, outFeatures, fanInFanOut: false, feedForward });
  return [m('attention.q_lin', d, d), m('attention.k_lin', d, d), m('attention.v_lin', d, d), m('attention.out_lin', d, d), m('ffn.lin1', d, ff), m('ffn.lin2', ff, d, true)];
}

export const distilbert: Architecture<BertConfig> = {
  inputKind: 'tokens',
  task: 'sequence-classification',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => 'distilbert.embeddings.word_embeddings',

  params(cfg) {
    const d = cfg.hiddenSize;
    const e = 'distilbert.embeddings';
    const out: ParamInfo[] = [
      { name: `${e}.word_embeddings.weight`, shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' },
      { name: `${e}.position_embeddings.weight`, shape: [cfg.maxPositions, d], layer: -1, type: 'embedding' },
      ...normParams(`${e}.LayerNorm`, d, -1),
    ];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      for (const m of modules(cfg)) out.push(...linearParams(`${b}.${m.module}`, m.outFeatures, m.inFeatures, i, m.name));
      for (const ln of ['sa_layer_norm', 'output_layer_norm']) out.push(...normParams(`${b}.${ln}`, d, i));
    }
    out.push(...linearParams('pre_classifier', d, d, -1, 'head'), ...linearParams('classifier', cfg.numLabels, d, -1, 'head'));
    return out;
  },

  aliases: () => ({}),

  linearModules: (cfg) => blockLinears(cfg.numLayers, block, modules(cfg)),

  forward(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('DistilBERT needs input_ids');
    const [b, t] = ids.shape;
    if (t > cfg.maxPositions) throw new Error(`sequence length ${t} exceeds max_position_embeddings=${cfg.maxPositions}`);
    const d = cfg.hiddenSize;
    const e = 'distilbert.embeddings';
    const emb = tf.add(f.embed(`${e}.word_embeddings`, ids, cfg.padTokenId), tf.gather(f.p(`${e}.position_embeddings.weight`), tf.tile(tf.range(0, t, 1, 'int32'), [b])));
    const eps = cfg.layerNormEps;
    let x = f.tap(`${e}.LayerNorm`, layerNorm(emb, f.p(`${e}.LayerNorm.weight`), f.p(`${e}.LayerNorm.bias`), eps)) as tf.Tensor2D;
    const mask = inputs.attentionMask ? paddingMask(inputs.attentionMask) : undefined;
    const norm = (y: tf.Tensor, name: string) => f.tap(name, layerNorm(y, f.p(`${name}.weight`), f.p(`${name}.bias`), eps)) as tf.Tensor2D;
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const heads = (m: string) => splitHeads(f.linear(`${p}.attention.${m}`, x), b, t, cfg.numHeads, cfg.headDim);
      const a = mergeHeads(attention(heads('q_lin'), heads('k_lin'), heads('v_lin'), 1 / Math.sqrt(cfg.headDim), mask), b, t, d);
      x = norm(tf.add(f.tap(`${p}.attention`, f.linear(`${p}.attention.out_lin`, a)), x), `${p}.sa_layer_norm`);
      const inner = activation(cfg.activation, f.linear(`${p}.ffn.lin1`, x)) as tf.Tensor2D;
      x = norm(tf.add(f.tap(`${p}.ffn`, f.linear(`${p}.ffn.lin2`, inner)), x), `${p}.output_layer_norm`);
    }
    const cls = tf.reshape(tf.slice(tf.reshape(x, [b, t, d]), [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D;
    return f.linear('classifier', tf.relu(f.linear('pre_classifier', cls)) as tf.Tensor2D);
  },

  loss: (cfg, logits, labels) => classificationLoss(cfg.problemType, cfg.numLabels, logits, labels),
};
