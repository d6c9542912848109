/**
 * BertForSequenceClassification: post-LN encoder, pooler (tanh) and a classifier on [CLS]; and
 * RobertaForSequenceClassification (XLM-R's too): the same encoder under `roberta.`, positions counted
 * from pad_token_id + 1, and a head of dense → tanh → out_proj on <s> instead of pooler + classifier.
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, normParams, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import type { BertConfig } from './config';
import { classificationLoss } from './classification';
import { activation, attention, embedding, layerNorm, mergeHeads, paddingMask, splitHeads } from './ops';

const block = (cfg: BertConfig, i: number) => `${cfg.prefix}.encoder.layer.${i}`;

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

/**
 * RoBERTa's position ids [B·T] (create_position_ids_from_input_ids): pad + the count of non-padding
 * tokens so far for a token, pad itself for a padding token.
 */
function robertaPositions(ids: tf.Tensor2D, pad: number): tf.Tensor1D {
  const real = tf.cast(tf.notEqual(ids, pad), 'int32');
  return tf.reshape(tf.add(tf.mul(tf.cumsum(real, 1), real), pad), [-1]);
}

export const bert: Architecture<BertConfig> = {
  inputKind: 'tokens',
  task: 'sequence-classification',
  blockPrefix: (cfg, i) => block(cfg, i),
  tokenEmbedding: (cfg) => `${cfg.prefix}.embeddings.word_embeddings`,

  params(cfg) {
    const d = cfg.hiddenSize;
    const e = `${cfg.prefix}.embeddings`;
    const out: ParamInfo[] = [
      { name: `${e}.word_embeddings.weight`, shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' },
      { name: `${e}.position_embeddings.weight`, shape: [cfg.maxPositions, d], layer: -1, type: 'embedding' },
      { name: `${e}.token_type_embeddings.weight`, shape: [cfg.typeVocabSize, d], layer: -1, type: 'embedding' },
      ...normParams(`${e}.LayerNorm`, d, -1),
    ];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(cfg, i);
      for (const m of modules(cfg)) out.push(...linearParams(`${b}.${m.module}`, m.outFeatures, m.inFeatures, i, TYPE[m.module]!));
      for (const ln of ['attention.output.LayerNorm', 'output.LayerNorm']) out.push(...normParams(`${b}.${ln}`, d, i));
    }
    if (cfg.prefix === 'roberta') out.push(...linearParams('classifier.dense', d, d, -1, 'head'), ...linearParams('classifier.out_proj', cfg.numLabels, d, -1, 'head'));
    else out.push(...linearParams('bert.pooler.dense', d, d, -1, 'head'), ...linearParams('classifier', cfg.numLabels, d, -1, 'head'));
    return out;
  },

  aliases: () => ({}),

  linearModules: (cfg) => blockLinears(cfg.numLayers, (i) => block(cfg, i), modules(cfg)),

  forward(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error(`${cfg.modelType} needs input_ids`);
    const [b, t] = ids.shape;
    const firstPosition = cfg.positionsAfterPadding ? cfg.padTokenId! + 1 : 0;
    if (t + firstPosition > cfg.maxPositions) throw new Error(`sequence length ${t} exceeds max_position_embeddings=${cfg.maxPositions}${firstPosition ? ` less the ${firstPosition} positions RoBERTa's start at` : ''}`);
    const d = cfg.hiddenSize;
    const e = `${cfg.prefix}.embeddings`;
    const types = inputs.tokenTypeIds ? tf.reshape(inputs.tokenTypeIds, [b * t]) : tf.zeros([b * t], 'int32');
    const emb = tf.addN([
      f.embed(`${e}.word_embeddings`, ids, cfg.padTokenId),
      tf.gather(f.p(`${e}.token_type_embeddings.weight`), types),
      cfg.positionsAfterPadding
        ? embedding(f.p(`${e}.position_embeddings.weight`), robertaPositions(ids, cfg.padTokenId!), cfg.padTokenId)
        : tf.gather(f.p(`${e}.position_embeddings.weight`), tf.tile(tf.range(0, t, 1, 'int32'), [b])),
    ]);
    let x = f.tap(`${e}.LayerNorm`, layerNorm(emb, f.p(`${e}.LayerNorm.weight`), f.p(`${e}.LayerNorm.bias`), cfg.layerNormEps)) as tf.Tensor2D;
    const mask = inputs.attentionMask ? paddingMask(inputs.attentionMask) : undefined;
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(cfg, i);
      const heads = (m: string) => splitHeads(f.linear(`${p}.attention.self.${m}`, x), b, t, cfg.numHeads, cfg.headDim);
      const a = mergeHeads(attention(heads('query'), heads('key'), heads('value'), 1 / Math.sqrt(cfg.headDim), mask), b, t, d);
      const ao = f.tap(`${p}.attention`, f.linear(`${p}.attention.output.dense`, a));
      x = f.tap(`${p}.attention.output.LayerNorm`, layerNorm(tf.add(ao, x), f.p(`${p}.attention.output.LayerNorm.weight`), f.p(`${p}.attention.output.LayerNorm.bias`), cfg.layerNormEps)) as tf.Tensor2D;
      const inter = activation(cfg.activation, f.linear(`${p}.intermediate.dense`, x)) as tf.Tensor2D;
      const o = f.tap(`${p}.output`, f.linear(`${p}.output.dense`, inter));
      x = f.tap(`${p}.output.LayerNorm`, layerNorm(tf.add(o, x), f.p(`${p}.output.LayerNorm.weight`), f.p(`${p}.output.LayerNorm.bias`), cfg.layerNormEps)) as tf.Tensor2D;
    }
    // [CLS] (RoBERTa's <s>) is the first token of each row.
    const cls = tf.reshape(tf.slice(tf.reshape(x, [b, t, d]), [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D;
    if (cfg.prefix === 'roberta') return f.linear('classifier.out_proj', tf.tanh(f.linear('classifier.dense', cls)) as tf.Tensor2D);
    const pooled = tf.tanh(f.linear('bert.pooler.dense', cls)) as tf.Tensor2D;
    return f.linear('classifier', pooled);
  },

  loss: (cfg, logits, labels) => classificationLoss(cfg.problemType, cfg.numLabels, logits, labels),
};
