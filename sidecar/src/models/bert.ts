/** BertForSequenceClassification: post-LN encoder, pooler (tanh) and a classifier on [CLS]. */
import * as tf from '@tensorflow/tfjs-core';
import { linearParams, normParams, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import type { BertConfig } from './config';
import { classificationLoss } from './classification';
import { activation, attention, embedding, layerNorm, mergeHeads, paddingMask, splitHeads } from './ops';

const block = (i: number) => `bert.encoder.layer.${i}`;

function modules(cfg: BertConfig): Omit<LinearModuleInfo, 'layer'>[] {
  const d = cfg.hiddenSize;
  const ff = cfg.intermediateSize;
  const m = (module: string, name: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ module, name, inFeatures, outFeatures, fanInFanOut: false, feedForward });
  return [
    m('attention.self.query', 'query', d, d),
    m('attention.self.key', 'key', d, d),
    m('attention.self.value', 'value', d, d),
    m('attention.output.dense', 'dense', d, d),
    m('intermediate.dense', 'dense', d, ff),
    m('output.dense', 'dense', ff, d, true),
  ];
}
/** Column names for importance maps: BERT reuses `dense`, so qualify by role. */
const TYPE: Record<string, string> = {
  'attention.self.query': 'query',
  'attention.self.key': 'key',
  'attention.self.value': 'value',
  'attention.output.dense': 'attn.output',
  'intermediate.dense': 'intermediate',
  'output.dense': 'output',
};

export const bert: Architecture<BertConfig> = {
  inputKind: 'tokens',
  task: 'sequence-classification',
  blockPrefix: (_cfg, i) => block(i),

  params(cfg) {
    const d = cfg.hiddenSize;
    const e = 'bert.embeddings';
    const out: ParamInfo[] = [
      { name: `${e}.word_embeddings.weight`, shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' },
      { name: `${e}.position_embeddings.weight`, shape: [cfg.maxPositions, d], layer: -1, type: 'embedding' },
      { name: `${e}.token_type_embeddings.weight`, shape: [cfg.typeVocabSize, d], layer: -1, type: 'embedding' },
      ...normParams(`${e}.LayerNorm`, d, -1),
    ];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      for (const m of modules(cfg)) out.push(...linearParams(`${b}.${m.module}`, m.outFeatures, m.inFeatures, i, TYPE[m.module]!));
      for (const ln of ['attention.output.LayerNorm', 'output.LayerNorm']) out.push(...normParams(`${b}.${ln}`, d, i));
    }
    out.push(...linearParams('bert.pooler.dense', d, d, -1, 'head'), ...linearParams('classifier', cfg.numLabels, d, -1, 'head'));
    return out;
  },

  aliases: () => ({}),

  linearModules(cfg) {
    const out: LinearModuleInfo[] = [];
    for (let i = 0; i < cfg.numLayers; i++) for (const m of modules(cfg)) out.push({ ...m, layer: i, module: `${block(i)}.${m.module}` });
    return out;
  },

  forward(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('BERT needs input_ids');
    const [b, t] = ids.shape;
    if (t > cfg.maxPositions) throw new Error(`sequence length ${t} exceeds max_position_embeddings=${cfg.maxPositions}`);
    const d = cfg.hiddenSize;
    const e = 'bert.embeddings';
    const types = inputs.tokenTypeIds ? tf.reshape(inputs.tokenTypeIds, [b * t]) : tf.zeros([b * t], 'int32');
    const positions = tf.tile(tf.range(0, t, 1, 'int32'), [b]);
    const emb = tf.addN([
      embedding(f.p(`${e}.word_embeddings.weight`), tf.reshape(ids, [b * t]), cfg.padTokenId),
      tf.gather(f.p(`${e}.token_type_embeddings.weight`), types),
      tf.gather(f.p(`${e}.position_embeddings.weight`), positions),
    ]);
    let x = f.tap(`${e}.LayerNorm`, layerNorm(emb, f.p(`${e}.LayerNorm.weight`), f.p(`${e}.LayerNorm.bias`), cfg.layerNormEps)) as tf.Tensor2D;
    const mask = inputs.attentionMask ? paddingMask(inputs.attentionMask) : undefined;
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const heads = (m: string) => splitHeads(f.linear(`${p}.attention.self.${m}`, x), b, t, cfg.numHeads, cfg.headDim);
      const a = mergeHeads(attention(heads('query'), heads('key'), heads('value'), 1 / Math.sqrt(cfg.headDim), mask), b, t, d);
      const ao = f.tap(`${p}.attention`, f.linear(`${p}.attention.output.dense`, a));
      x = f.tap(`${p}.attention.output.LayerNorm`, layerNorm(tf.add(ao, x), f.p(`${p}.attention.output.LayerNorm.weight`), f.p(`${p}.attention.output.LayerNorm.bias`), cfg.layerNormEps)) as tf.Tensor2D;
      const inter = activation(cfg.activation, f.linear(`${p}.intermediate.dense`, x)) as tf.Tensor2D;
      const o = f.tap(`${p}.output`, f.linear(`${p}.output.dense`, inter));
      x = f.tap(`${p}.output.LayerNorm`, layerNorm(tf.add(o, x), f.p(`${p}.output.LayerNorm.weight`), f.p(`${p}.output.LayerNorm.bias`), cfg.layerNormEps)) as tf.Tensor2D;
    }
    // [CLS] is the first token of each row.
    const cls = tf.reshape(tf.slice(tf.reshape(x, [b, t, d]), [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D;
    const pooled = tf.tanh(f.linear('bert.pooler.dense', cls)) as tf.Tensor2D;
    return f.linear('classifier', pooled);
  },

  loss: (cfg, logits, labels) => classificationLoss(cfg.problemType, cfg.numLabels, logits, labels),
};
