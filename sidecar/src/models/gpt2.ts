/** GPT2LMHeadModel: learned positions, pre-LN blocks, Conv1D weights stored [in, out], tied head. */
import * as tf from '@tensorflow/tfjs-core';
import { normParams, trunkLogits, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import type { Gpt2Config } from './config';
import { activation, attentionQkv, cachedAttention, causalLmLoss, causalMask, layerNorm, splitHeads } from './ops';

const block = (i: number) => `transformer.h.${i}`;

export const gpt2: Architecture<Gpt2Config> = {
  inputKind: 'tokens',
  task: 'causal-lm',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => 'transformer.wte',

  params(cfg) {
    const d = cfg.hiddenSize;
    const out: ParamInfo[] = [
      { name: 'transformer.wte.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' },
      { name: 'transformer.wpe.weight', shape: [cfg.maxPositions, d], layer: -1, type: 'embedding' },
    ];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      const add = (name: string, shape: number[], type: string) => out.push({ name: `${b}.${name}`, shape, layer: i, type });
      add('ln_1.weight', [d], 'norm');
      add('ln_1.bias', [d], 'norm');
      add('attn.c_attn.weight', [d, 3 * d], 'c_attn');
      add('attn.c_attn.bias', [3 * d], 'c_attn');
      add('attn.c_proj.weight', [d, d], 'attn.c_proj');
      add('attn.c_proj.bias', [d], 'attn.c_proj');
      add('ln_2.weight', [d], 'norm');
      add('ln_2.bias', [d], 'norm');
      add('mlp.c_fc.weight', [d, cfg.innerSize], 'c_fc');
      add('mlp.c_fc.bias', [cfg.innerSize], 'c_fc');
      add('mlp.c_proj.weight', [cfg.innerSize, d], 'mlp.c_proj');
      add('mlp.c_proj.bias', [d], 'mlp.c_proj');
    }
    out.push(...normParams('transformer.ln_f', d, -1));
    if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'head' });
    return out;
  },

  aliases: (cfg): Record<string, string> => (cfg.tieWordEmbeddings ? { 'lm_head.weight': 'transformer.wte.weight' } : {}),

  linearModules(cfg) {
    const d = cfg.hiddenSize;
    const out: LinearModuleInfo[] = [];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      const add = (m: string, name: string, inF: number, outF: number, feedForward: boolean) =>
        out.push({ module: `${b}.${m}`, layer: i, name, inFeatures: inF, outFeatures: outF, fanInFanOut: true, feedForward });
      add('attn.c_attn', 'c_attn', d, 3 * d, false);
      add('attn.c_proj', 'c_proj', d, d, false);
      add('mlp.c_fc', 'c_fc', d, cfg.innerSize, false);
      add('mlp.c_proj', 'c_proj', cfg.innerSize, d, true);
    }
    return out;
  },

  trunk(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('GPT-2 needs input_ids');
    const [b, t] = ids.shape;
    const cache = inputs.cache;
    const past = cache?.past ?? 0;
    if (past + t > cfg.maxPositions) throw new Error(`sequence length ${past + t} exceeds n_positions=${cfg.maxPositions}`);
    const flatIds = tf.reshape(ids, [b * t]);
    // Positions past..past+t−1 are rows of wpe, broadcast over the batch (no gather; its
    // gradient is a sum over the batch instead of a segment sum).
    const wpe = f.p('transformer.wpe.weight');
    const tokens = tf.reshape(f.embed('transformer.wte', flatIds), [b, t, cfg.hiddenSize]);
    let x = tf.reshape(tf.add(tokens, tf.slice(wpe, [past, 0], [t, wpe.shape[1]!])), [b * t, cfg.hiddenSize]) as tf.Tensor2D;
    const mask = cache ? undefined : causalMask(t);
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const h = f.tap(`${p}.ln_1`, layerNorm(x, f.p(`${p}.ln_1.weight`), f.p(`${p}.ln_1.bias`), cfg.layerNormEps)) as tf.Tensor2D;
      const qkv = f.linear(`${p}.attn.c_attn`, h);
      let scale = cfg.scaleAttnWeights ? 1 / Math.sqrt(cfg.headDim) : 1;
      if (cfg.scaleAttnByInverseLayerIdx) scale /= i + 1;
      const a = cache
        ? cachedAttention(cache, i, ...(tf.split(qkv, 3, 1).map((z) => splitHeads(z, b, t, cfg.numHeads, cfg.headDim)) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D]), scale)
        : attentionQkv(qkv, b, t, cfg.numHeads, cfg.headDim, scale, mask);
      x = tf.add(x, f.tap(`${p}.attn`, f.linear(`${p}.attn.c_proj`, a)));
      const h2 = f.tap(`${p}.ln_2`, layerNorm(x, f.p(`${p}.ln_2.weight`), f.p(`${p}.ln_2.bias`), cfg.layerNormEps)) as tf.Tensor2D;
      const m = f.linear(`${p}.mlp.c_proj`, activation(cfg.activation, f.linear(`${p}.mlp.c_fc`, h2)) as tf.Tensor2D);
      x = tf.add(x, f.tap(`${p}.mlp`, m));
    }
    if (cache) cache.past += t;
    const hf = f.tap('transformer.ln_f', layerNorm(x, f.p('transformer.ln_f.weight'), f.p('transformer.ln_f.bias'), cfg.layerNormEps)) as tf.Tensor2D;
    const headName = cfg.tieWordEmbeddings ? 'transformer.wte.weight' : 'lm_head.weight';
    return { hidden: hf, head: f.p(headName) as tf.Tensor2D, headName, batch: b, seq: t };
  },

  forward(cfg, f, inputs) {
    return trunkLogits(gpt2.trunk!(cfg, f, inputs));
  },

  loss: (_cfg, logits, labels) => causalLmLoss(logits as tf.Tensor3D, labels as tf.Tensor2D),
};
