/** ViTForImageClassification: patch embedding, [CLS] token, pre-LN encoder, classifier on [CLS]. */
import * as tf from '@tensorflow/tfjs-core';
import { linearParams, normParams, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import { classificationLoss } from './classification';
import type { VitConfig } from './config';
import { activation, attention, layerNorm, mergeHeads, splitHeads } from './ops';

const block = (i: number) => `vit.encoder.layer.${i}`;

function modules(cfg: VitConfig): (Omit<LinearModuleInfo, 'layer'> & { type: string; bias: boolean })[] {
  const d = cfg.hiddenSize;
  const ff = cfg.intermediateSize;
  const m = (module: string, name: string, type: string, inFeatures: number, outFeatures: number, bias: boolean, feedForward = false) => ({ module, name, type, inFeatures, outFeatures, fanInFanOut: false, feedForward, bias });
  return [
    m('attention.attention.query', 'query', 'query', d, d, cfg.qkvBias),
    m('attention.attention.key', 'key', 'key', d, d, cfg.qkvBias),
    m('attention.attention.value', 'value', 'value', d, d, cfg.qkvBias),
    m('attention.output.dense', 'dense', 'attn.output', d, d, true),
    m('intermediate.dense', 'dense', 'intermediate', d, ff, true),
    m('output.dense', 'dense', 'output', ff, d, true, true),
  ];
}

export const vit: Architecture<VitConfig> = {
  inputKind: 'pixels',
  task: 'image-classification',
  blockPrefix: (_cfg, i) => block(i),
  runtimeName: vitRuntimeName,
  checkpointName: vitCheckpointName,

  params(cfg) {
    const d = cfg.hiddenSize;
    const p = cfg.patchSize;
    const patches = (cfg.imageSize / p) ** 2;
    const e = 'vit.embeddings';
    const out: ParamInfo[] = [
      { name: `${e}.cls_token`, shape: [1, 1, d], layer: -1, type: 'embedding' },
      { name: `${e}.position_embeddings`, shape: [1, patches + 1, d], layer: -1, type: 'embedding' },
      { name: `${e}.patch_embeddings.projection.weight`, shape: [d, cfg.numChannels, p, p], layer: -1, type: 'embedding' },
      { name: `${e}.patch_embeddings.projection.bias`, shape: [d], layer: -1, type: 'embedding' },
    ];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      for (const ln of ['layernorm_before', 'layernorm_after']) out.push(...normParams(`${b}.${ln}`, d, i));
      for (const m of modules(cfg)) out.push(...linearParams(`${b}.${m.module}`, m.outFeatures, m.inFeatures, i, m.type, m.bias));
    }
    out.push(...normParams('vit.layernorm', d, -1), ...linearParams('classifier', cfg.numLabels, d, -1, 'head'));
    return out;
  },

  aliases: () => ({}),

  linearModules(cfg) {
    const out: LinearModuleInfo[] = [];
    for (let i = 0; i < cfg.numLayers; i++)
      for (const { type: _t, bias: _b, ...m } of modules(cfg)) out.push({ ...m, layer: i, module: `${block(i)}.${m.module}` });
    return out;
  },

  forward(cfg, f, inputs) {
    const px = inputs.pixelValues;
    if (!px) throw new Error('ViT needs pixel_values');
    const [b, c, hgt, wid] = px.shape;
    if (c !== cfg.numChannels || hgt !== cfg.imageSize || wid !== cfg.imageSize)
      throw new Error(`pixel_values must be [batch, ${cfg.numChannels}, ${cfg.imageSize}, ${cfg.imageSize}], got [${px.shape.join(', ')}]`);
    const d = cfg.hiddenSize;
    const p = cfg.patchSize;
    const n = cfg.imageSize / p;
    // A stride-p, kernel-p convolution is a matmul over flattened patches (and needs no conv kernels).
    const patches = tf.reshape(tf.transpose(tf.reshape(px, [b, c, n, p, n, p]), [0, 2, 4, 1, 3, 5]), [b * n * n, c * p * p]);
    const w = tf.reshape(f.p('vit.embeddings.patch_embeddings.projection.weight'), [d, c * p * p]);
    const emb = tf.reshape(tf.add(tf.matMul(patches, w, false, true), f.p('vit.embeddings.patch_embeddings.projection.bias')), [b, n * n, d]);
    const cls = tf.broadcastTo(f.p('vit.embeddings.cls_token'), [b, 1, d]);
    const t = n * n + 1;
    let x = tf.reshape(tf.add(tf.concat([cls, emb], 1), f.p('vit.embeddings.position_embeddings')), [b * t, d]) as tf.Tensor2D;
    for (let i = 0; i < cfg.numLayers; i++) {
      const q = block(i);
      const h = f.tap(`${q}.layernorm_before`, layerNorm(x, f.p(`${q}.layernorm_before.weight`), f.p(`${q}.layernorm_before.bias`), cfg.layerNormEps)) as tf.Tensor2D;
      const heads = (m: string) => splitHeads(f.linear(`${q}.attention.attention.${m}`, h), b, t, cfg.numHeads, cfg.headDim);
      const a = mergeHeads(attention(heads('query'), heads('key'), heads('value'), 1 / Math.sqrt(cfg.headDim)), b, t, d);
      x = tf.add(x, f.tap(`${q}.attention`, f.linear(`${q}.attention.output.dense`, a)));
      const h2 = f.tap(`${q}.layernorm_after`, layerNorm(x, f.p(`${q}.layernorm_after.weight`), f.p(`${q}.layernorm_after.bias`), cfg.layerNormEps)) as tf.Tensor2D;
      const m = f.linear(`${q}.output.dense`, activation(cfg.activation, f.linear(`${q}.intermediate.dense`, h2)) as tf.Tensor2D);
      x = tf.add(x, f.tap(`${q}.output`, m));
    }
    const hf = layerNorm(x, f.p('vit.layernorm.weight'), f.p('vit.layernorm.bias'), cfg.layerNormEps);
    const cls0 = tf.reshape(tf.slice(tf.reshape(hf, [b, t, d]), [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D;
    return f.linear('classifier', cls0);
  },

  loss: (cfg, logits, labels) => classificationLoss(cfg.problemType, cfg.numLabels, logits, labels),
};

/** transformers 5's run-time names of ViT's checkpoint paths (its modeling file renamed the modules; checkpoints keep the old keys). */
export function vitRuntimeName(path: string): string {
  return path
    .replace(/^vit\.encoder\.layer\.(\d+)\./, 'vit.layers.$1.')
    .replace(/\.attention\.attention\.(query|key|value)(?=\.|$)/, (_m, p: string) => `.attention.${p[0]}_proj`)
    .replace(/\.attention\.output\.dense(?=\.|$)/, '.attention.o_proj')
    .replace(/^(vit\.layers\.\d+)\.intermediate\.dense(?=\.|$)/, '$1.mlp.fc1')
    .replace(/^(vit\.layers\.\d+)\.output\.dense(?=\.|$)/, '$1.mlp.fc2');
}

/** The inverse of vitRuntimeName (checkpoint paths pass through unchanged). */
export function vitCheckpointName(path: string): string {
  return path
    .replace(/^vit\.layers\.(\d+)\./, 'vit.encoder.layer.$1.')
    .replace(/\.attention\.([qkv])_proj(?=\.|$)/, (_m, p: string) => `.attention.attention.${{ q: 'query', k: 'key', v: 'value' }[p]}`)
    .replace(/\.attention\.o_proj(?=\.|$)/, '.attention.output.dense')
    .replace(/^(vit\.encoder\.layer\.\d+)\.mlp\.fc1(?=\.|$)/, '$1.intermediate.dense')
    .replace(/^(vit\.encoder\.layer\.\d+)\.mlp\.fc2(?=\.|$)/, '$1.output.dense');
}
