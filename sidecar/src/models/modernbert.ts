/**
 * ModernBertForSequenceClassification: pre-LN blocks of bias-free LayerNorms (block 0 reads the
 * normalised embeddings as they are), queries, keys and values from one Wqkv ([q; k; v] by rows),
 * RoPE with a global and a local base, local blocks attending within ±local_attention/2 tokens, a
 * GeGLU MLP, a final norm; then [CLS] or mean pooling, head (dense → act → norm) and classifier.
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import { classificationLoss } from './classification';
import type { ModernBertConfig } from './config';
import { activation, applyRope, attention, bandMask, layerNorm, mergeHeads, paddingMask, ropeTablesAt, splitHeads } from './ops';

const block = (i: number) => `model.layers.${i}`;

function modules(cfg: ModernBertConfig): Omit<LinearModuleInfo, 'layer'>[] {
  const d = cfg.hiddenSize;
  const m = (module: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ module, name: module.split('.').pop()!, inFeatures, outFeatures, fanInFanOut: false, feedForward });
  return [m('attn.Wqkv', d, 3 * d), m('attn.Wo', d, d), m('mlp.Wi', d, 2 * cfg.intermediateSize), m('mlp.Wo', cfg.intermediateSize, d, true)];
}
/** Importance-map columns: both sub-layers have a Wo. */
const TYPE: Record<string, string> = { 'attn.Wqkv': 'Wqkv', 'attn.Wo': 'attn.Wo', 'mlp.Wi': 'Wi', 'mlp.Wo': 'mlp.Wo' };

/** A LayerNorm's parameters: weight, and bias where norm_bias says so. */
function norm(cfg: ModernBertConfig, name: string, layer: number, type = 'norm', fresh?: ParamInfo['fresh']): ParamInfo[] {
  const w: ParamInfo = { name: `${name}.weight`, shape: [cfg.hiddenSize], layer, type, ...(fresh ? { fresh } : {}) };
  return cfg.normBias ? [w, { name: `${name}.bias`, shape: [cfg.hiddenSize], layer, type }] : [w];
}

export const modernBert: Architecture<ModernBertConfig> = {
  inputKind: 'tokens',
  task: 'sequence-classification',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => 'model.embeddings.tok_embeddings',

  params(cfg) {
    const d = cfg.hiddenSize;
    const out: ParamInfo[] = [{ name: 'model.embeddings.tok_embeddings.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' }, ...norm(cfg, 'model.embeddings.norm', -1)];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      // Block 0's attn_norm is nn.Identity: the embeddings' norm already ran.
      if (i > 0) out.push(...norm(cfg, `${b}.attn_norm`, i));
      for (const m of modules(cfg)) out.push(...linearParams(`${b}.${m.module}`, m.outFeatures, m.inFeatures, i, TYPE[m.module]!, m.module.startsWith('attn') ? cfg.attentionBias : cfg.mlpBias));
      out.push(...norm(cfg, `${b}.mlp_norm`, i));
    }
    out.push(...norm(cfg, 'model.final_norm', -1));
    // A base checkpoint (ModernBertModel) has no head; transformers' _init_weights starts them so:
    // dense at initializer_range/√(2·layers), the classifier at hidden_size^−½, both truncated at
    // initializer_cutoff_factor std.
    const head = (name: string, outF: number, bias: boolean, std: number) =>
      linearParams(name, outF, d, -1, 'head', bias).map((p) => (p.name.endsWith('.weight') ? { ...p, fresh: { std, cutoff: cfg.initCutoff } } : p));
    out.push(...head('head.dense', d, cfg.classifierBias, cfg.initializerRange / Math.sqrt(2 * cfg.numLayers)), ...norm(cfg, 'head.norm', -1, 'head', 'ones'), ...head('classifier', cfg.numLabels, true, d ** -0.5));
    return out;
  },

  aliases: () => ({}),

  linearModules: (cfg) => blockLinears(cfg.numLayers, block, modules(cfg)),

  forward(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('ModernBERT needs input_ids');
    const [b, t] = ids.shape;
    const d = cfg.hiddenSize;
    const zeros = cfg.normBias ? undefined : tf.zeros([d]);
    const ln = (x: tf.Tensor, name: string) => layerNorm(x, f.p(`${name}.weight`), zeros ?? f.p(`${name}.bias`), cfg.normEps) as tf.Tensor2D;
    const normTap = (x: tf.Tensor, name: string) => f.tap(name, ln(x, name)) as tf.Tensor2D;
    let x = normTap(f.embed('model.embeddings.tok_embeddings', ids, cfg.padTokenId), 'model.embeddings.norm');
    // Padding keys are hidden from every query; local blocks also hide keys beyond their half window.
    const padding = inputs.attentionMask ? paddingMask(inputs.attentionMask) : undefined;
    const masks = new Map<number | undefined, tf.Tensor | undefined>();
    const maskOf = (half: number | undefined) => {
      if (!masks.has(half)) {
        const band = half === undefined || half >= t - 1 ? undefined : bandMask(t, half);
        masks.set(half, band && padding ? tf.add(band, padding) : (band ?? padding));
      }
      return masks.get(half);
    };
    const globalRope = ropeTablesAt(0, t, cfg.headDim, cfg.globalRope.theta, cfg.globalRope.scaling);
    const localRope = ropeTablesAt(0, t, cfg.headDim, cfg.localRope.theta, cfg.localRope.scaling);
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const half = cfg.slidingWindows[i];
      const { cos, sin } = half === undefined ? globalRope : localRope;
      const h = i === 0 ? x : normTap(x, `${p}.attn_norm`);
      const [q, k, v] = tf.split(f.linear(`${p}.attn.Wqkv`, h), 3, 1).map((z) => splitHeads(z, b, t, cfg.numHeads, cfg.headDim)) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
      const a = mergeHeads(attention(applyRope(q, cos, sin), applyRope(k, cos, sin), v, 1 / Math.sqrt(cfg.headDim), maskOf(half)), b, t, d);
      x = tf.add(x, f.tap(`${p}.attn`, f.linear(`${p}.attn.Wo`, a)));
      // GeGLU: Wi's first half is the input, the second the gate.
      const [input, gate] = tf.split(f.linear(`${p}.mlp.Wi`, normTap(x, `${p}.mlp_norm`)), 2, 1);
      x = tf.add(x, f.tap(`${p}.mlp`, f.linear(`${p}.mlp.Wo`, tf.mul(activation(cfg.activation, input!), gate!) as tf.Tensor2D)));
    }
    const last = tf.reshape(normTap(x, 'model.final_norm'), [b, t, d]);
    let pooled: tf.Tensor2D;
    if (cfg.classifierPooling === 'cls') pooled = tf.reshape(tf.slice(last, [0, 0, 0], [b, 1, d]), [b, d]);
    else {
      // The mean over the tokens the attention mask keeps.
      const keep = inputs.attentionMask ? tf.cast(tf.reshape(inputs.attentionMask, [b, t, 1]), 'float32') : tf.ones([b, t, 1]);
      pooled = tf.div(tf.sum(tf.mul(last, keep), 1), tf.sum(keep, 1)) as tf.Tensor2D;
    }
    const headOut = ln(activation(cfg.classifierActivation, f.linear('head.dense', pooled)), 'head.norm');
    return f.linear('classifier', headOut);
  },

  loss: (cfg, logits, labels) => classificationLoss(cfg.problemType, cfg.numLabels, logits, labels),
};
