/**
 * DebertaV2ForSequenceClassification (DeBERTa-v2, -v3): BERT's post-LN encoder whose attention adds,
 * to the content scores q·kᵀ, content-to-position scores q·P_kᵀ (c2p) and position-to-content scores
 * k·P_qᵀ (p2c) read at each pair's bucketed relative position, all over √(d·(1 + #types)); P_k and
 * P_q project the shared relative embeddings (through key_proj / query_proj with share_att_key).
 * A ContextPooler (dense → activation on [CLS]) feeds the classifier.
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, normParams, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import { classificationLoss } from './classification';
import type { DebertaConfig } from './config';
import type { Forward } from './forward';
import { activation, layerNorm, mergeHeads, paddingMask, splitHeads } from './ops';

const block = (i: number) => `deberta.encoder.layer.${i}`;

/** Rows of the relative embeddings the attention reads: 2 × (position_buckets, else max_relative_positions). */
export const attentionSpan = (cfg: DebertaConfig) => (cfg.positionBuckets > 0 ? cfg.positionBuckets : cfg.maxRelativePositions);

function modules(cfg: DebertaConfig): Omit<LinearModuleInfo, 'layer'>[] {
  const d = cfg.hiddenSize;
  const ff = cfg.intermediateSize;
  const m = (module: string, name: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ module, name, inFeatures, outFeatures, fanInFanOut: false, feedForward });
  const own = cfg.relativeAttention && !cfg.shareAttKey;
  return [
    m('attention.self.query_proj', 'query_proj', d, d),
    m('attention.self.key_proj', 'key_proj', d, d),
    m('attention.self.value_proj', 'value_proj', d, d),
    ...(own && cfg.c2p ? [m('attention.self.pos_key_proj', 'pos_key_proj', d, d)] : []),
    ...(own && cfg.p2c ? [m('attention.self.pos_query_proj', 'pos_query_proj', d, d)] : []),
    m('attention.output.dense', 'dense', d, d),
    m('intermediate.dense', 'dense', d, ff),
    m('output.dense', 'dense', ff, d, true),
  ];
}
/** Column names for importance maps: `dense` is reused, so qualify by role (as BERT's). */
const TYPE: Record<string, string> = { 'attention.output.dense': 'attn.output', 'intermediate.dense': 'intermediate', 'output.dense': 'output' };

/**
 * transformers' make_log_bucket_position in float32: relative positions within ±bucket/2 as they are,
 * farther ones on a log scale up to max_position.
 */
export function logBucket(rel: number, bucketSize: number, maxPosition: number): number {
  const f = Math.fround;
  const mid = Math.floor(bucketSize / 2);
  const abs = rel < mid && rel > -mid ? mid - 1 : Math.abs(rel);
  if (abs <= mid) return rel;
  const ratio = f(f(Math.log(f(abs / mid))) / f(Math.log(f((maxPosition - 1) / mid))));
  return Math.sign(rel) * (Math.ceil(f(ratio * (mid - 1))) + mid);
}

/** relativeIndex's tables by configuration and length: the same for every layer, batch and step. */
const INDEX_CACHE = new Map<string, Int32Array>();

/**
 * Gather indices [T·T] into each head's scores [T · 2·span] (flattened): for each (i, j), column
 * clamp(±bucket(i − j) + span) of row i (c2p: +bucket(i − j) on the queries' rows; p2c: the
 * transposed read, row j at −bucket(j − i), as transformers' gather-then-transpose).
 */
function relativeIndex(cfg: DebertaConfig, t: number, kind: 'c2p' | 'p2c'): tf.Tensor1D {
  const span = attentionSpan(cfg);
  const key = `${kind} ${t} ${span} ${cfg.positionBuckets} ${cfg.maxRelativePositions}`;
  let cols = INDEX_CACHE.get(key);
  if (!cols) {
    const bucket = (r: number) => (cfg.positionBuckets > 0 ? logBucket(r, cfg.positionBuckets, cfg.maxRelativePositions) : r);
    const clamp = (x: number) => Math.min(Math.max(x, 0), 2 * span - 1);
    cols = new Int32Array(t * t);
    for (let i = 0; i < t; i++)
      for (let j = 0; j < t; j++) cols[i * t + j] = kind === 'c2p' ? i * 2 * span + clamp(bucket(i - j) + span) : j * 2 * span + clamp(-bucket(j - i) + span);
    if (INDEX_CACHE.size > 64) INDEX_CACHE.clear();
    INDEX_CACHE.set(key, cols);
  }
  return tf.tensor1d(cols, 'int32');
}

/** The relative-position scores of one layer's queries and keys [B, H, T, D]: c2p + p2c, [B, H, T, T], not yet scaled. */
function relativeScores(cfg: DebertaConfig, f: Forward, p: string, q: tf.Tensor4D, k: tf.Tensor4D, rel: tf.Tensor2D, index: { c2p?: tf.Tensor1D; p2c?: tf.Tensor1D }): tf.Tensor | undefined {
  const [b, h, t, d] = q.shape;
  const span2 = rel.shape[0];
  // The relative embeddings through a projection, as heads [B, H, 2·span, D].
  const positions = (proj: string) => tf.broadcastTo(tf.transpose(tf.reshape(f.linear(`${p}.attention.self.${proj}`, rel), [1, span2, h, d]), [0, 2, 1, 3]), [b, h, span2, d]);
  const read = (scores: tf.Tensor, idx: tf.Tensor1D) => tf.reshape(tf.gather(tf.reshape(scores, [b * h, t * span2]), idx, 1), [b, h, t, t]);
  let out: tf.Tensor | undefined;
  if (cfg.c2p) out = read(tf.matMul(q, positions(cfg.shareAttKey ? 'key_proj' : 'pos_key_proj'), false, true), index.c2p!);
  if (cfg.p2c) {
    const p2c = read(tf.matMul(k, positions(cfg.shareAttKey ? 'query_proj' : 'pos_query_proj'), false, true), index.p2c!);
    out = out ? tf.add(out, p2c) : p2c;
  }
  return out;
}

export const deberta: Architecture<DebertaConfig> = {
  inputKind: 'tokens',
  task: 'sequence-classification',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => 'deberta.embeddings.word_embeddings',

  params(cfg) {
    const d = cfg.hiddenSize;
    const e = 'deberta.embeddings';
    const out: ParamInfo[] = [{ name: `${e}.word_embeddings.weight`, shape: [cfg.vocabSize, cfg.embeddingSize], layer: -1, type: 'embedding' }];
    if (cfg.positionBiasedInput) out.push({ name: `${e}.position_embeddings.weight`, shape: [cfg.maxPositions, cfg.embeddingSize], layer: -1, type: 'embedding' });
    if (cfg.typeVocabSize > 0) out.push({ name: `${e}.token_type_embeddings.weight`, shape: [cfg.typeVocabSize, cfg.embeddingSize], layer: -1, type: 'embedding' });
    if (cfg.embeddingSize !== d) out.push({ name: `${e}.embed_proj.weight`, shape: [d, cfg.embeddingSize], layer: -1, type: 'embedding' });
    out.push(...normParams(`${e}.LayerNorm`, d, -1));
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      for (const m of modules(cfg)) out.push(...linearParams(`${b}.${m.module}`, m.outFeatures, m.inFeatures, i, TYPE[m.module] ?? m.name));
      for (const ln of ['attention.output.LayerNorm', 'output.LayerNorm']) out.push(...normParams(`${b}.${ln}`, d, i));
    }
    if (cfg.relativeAttention) {
      out.push({ name: 'deberta.encoder.rel_embeddings.weight', shape: [2 * attentionSpan(cfg), d], layer: -1, type: 'embedding' });
      if (cfg.normRelEmbeddings) out.push(...normParams('deberta.encoder.LayerNorm', d, -1));
    }
    out.push(...linearParams('pooler.dense', d, d, -1, 'head'), ...linearParams('classifier', cfg.numLabels, d, -1, 'head'));
    return out;
  },

  aliases: () => ({}),

  linearModules: (cfg) => blockLinears(cfg.numLayers, block, modules(cfg)),

  forward(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('DeBERTa needs input_ids');
    const [b, t] = ids.shape;
    if (cfg.positionBiasedInput && t > cfg.maxPositions) throw new Error(`sequence length ${t} exceeds max_position_embeddings=${cfg.maxPositions}`);
    const d = cfg.hiddenSize;
    const e = 'deberta.embeddings';
    const parts: tf.Tensor[] = [f.embed(`${e}.word_embeddings`, ids, cfg.padTokenId)];
    if (cfg.positionBiasedInput) parts.push(tf.gather(f.p(`${e}.position_embeddings.weight`), tf.tile(tf.range(0, t, 1, 'int32'), [b])));
    if (cfg.typeVocabSize > 0) parts.push(tf.gather(f.p(`${e}.token_type_embeddings.weight`), inputs.tokenTypeIds ? tf.reshape(inputs.tokenTypeIds, [b * t]) : tf.zeros([b * t], 'int32')));
    let emb = parts.length > 1 ? tf.addN(parts) : parts[0]!;
    if (cfg.embeddingSize !== d) emb = tf.matMul(emb, f.p(`${e}.embed_proj.weight`), false, true);
    let x = f.tap(`${e}.LayerNorm`, layerNorm(emb, f.p(`${e}.LayerNorm.weight`), f.p(`${e}.LayerNorm.bias`), cfg.layerNormEps)) as tf.Tensor2D;
    // DebertaV2Embeddings zeroes padding positions (their rows never reach a real token either way).
    if (inputs.attentionMask) x = tf.mul(x, tf.reshape(tf.cast(inputs.attentionMask, 'float32'), [b * t, 1]));
    const mask = inputs.attentionMask ? paddingMask(inputs.attentionMask) : undefined;
    // √(d·(1 + #pos_att_type)), as transformers scales even without relative attention.
    const types = 1 + (cfg.c2p ? 1 : 0) + (cfg.p2c ? 1 : 0);
    const scale = 1 / Math.fround(Math.sqrt(Math.fround(cfg.headDim * types)));
    let rel: tf.Tensor2D | undefined;
    const index: { c2p?: tf.Tensor1D; p2c?: tf.Tensor1D } = {};
    if (cfg.relativeAttention) {
      rel = f.p('deberta.encoder.rel_embeddings.weight') as tf.Tensor2D;
      if (cfg.normRelEmbeddings) rel = layerNorm(rel, f.p('deberta.encoder.LayerNorm.weight'), f.p('deberta.encoder.LayerNorm.bias'), cfg.layerNormEps) as tf.Tensor2D;
      if (cfg.c2p) index.c2p = relativeIndex(cfg, t, 'c2p');
      if (cfg.p2c) index.p2c = relativeIndex(cfg, t, 'p2c');
    }
    const norm = (y: tf.Tensor, name: string) => f.tap(name, layerNorm(y, f.p(`${name}.weight`), f.p(`${name}.bias`), cfg.layerNormEps)) as tf.Tensor2D;
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const heads = (m: string) => splitHeads(f.linear(`${p}.attention.self.${m}`, x), b, t, cfg.numHeads, cfg.headDim);
      const q = heads('query_proj');
      const k = heads('key_proj');
      let scores: tf.Tensor = tf.matMul(q, k, false, true);
      const relative = rel ? relativeScores(cfg, f, p, q, k, rel, index) : undefined;
      if (relative) scores = tf.add(scores, relative);
      scores = tf.mul(scores, scale);
      if (mask) scores = tf.add(scores, mask);
      const a = mergeHeads(tf.matMul(tf.softmax(scores), heads('value_proj')), b, t, d);
      x = norm(tf.add(f.tap(`${p}.attention`, f.linear(`${p}.attention.output.dense`, a)), x), `${p}.attention.output.LayerNorm`);
      const inner = activation(cfg.activation, f.linear(`${p}.intermediate.dense`, x)) as tf.Tensor2D;
      x = norm(tf.add(f.tap(`${p}.output`, f.linear(`${p}.output.dense`, inner)), x), `${p}.output.LayerNorm`);
    }
    const cls = tf.reshape(tf.slice(tf.reshape(x, [b, t, d]), [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D;
    return f.linear('classifier', activation(cfg.poolerActivation, f.linear('pooler.dense', cls)) as tf.Tensor2D);
  },

  loss: (cfg, logits, labels) => classificationLoss(cfg.problemType, cfg.numLabels, logits, labels),
};
