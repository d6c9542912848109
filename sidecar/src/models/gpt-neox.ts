/**
 * GPTNeoXForCausalLM (Pythia, GPT-NeoX-20B): pre-LN blocks whose attention and MLP read the same
 * residual stream and add in parallel (unless use_parallel_residual is off), queries, keys and values
 * from one query_key_value projection laid out per head, partial RoPE, an `embed_out` head.
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, normParams, trunkLogits, type Architecture, type ParamInfo } from './architecture';
import type { GptNeoxConfig } from './config';
import { activation, applyRope, attention, cachedAttention, causalLmLoss, causalMask, layerNorm, mergeHeads, ropeTablesAt, splitHeadInterleavedQkv } from './ops';

const block = (i: number) => `gpt_neox.layers.${i}`;
const EMBED_MODULE = 'gpt_neox.embed_in';
const EMBED = `${EMBED_MODULE}.weight`;

export const gptNeox: Architecture<GptNeoxConfig> = {
  inputKind: 'tokens',
  task: 'causal-lm',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => EMBED_MODULE,

  params(cfg) {
    const d = cfg.hiddenSize;
    const ff = cfg.intermediateSize;
    const out: ParamInfo[] = [{ name: EMBED, shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' }];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      out.push(
        ...normParams(`${b}.input_layernorm`, d, i),
        ...linearParams(`${b}.attention.query_key_value`, 3 * d, d, i, 'query_key_value', cfg.attentionBias),
        ...linearParams(`${b}.attention.dense`, d, d, i, 'dense', cfg.attentionBias),
        ...normParams(`${b}.post_attention_layernorm`, d, i),
        ...linearParams(`${b}.mlp.dense_h_to_4h`, ff, d, i, 'dense_h_to_4h'),
        ...linearParams(`${b}.mlp.dense_4h_to_h`, d, ff, i, 'dense_4h_to_h'),
      );
    }
    out.push(...normParams('gpt_neox.final_layer_norm', d, -1));
    if (!cfg.tieWordEmbeddings) out.push({ name: 'embed_out.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'head' });
    return out;
  },

  aliases: (cfg): Record<string, string> => (cfg.tieWordEmbeddings ? { 'embed_out.weight': EMBED } : {}),

  linearModules(cfg) {
    const d = cfg.hiddenSize;
    const ff = cfg.intermediateSize;
    return blockLinears(cfg.numLayers, block, [
      { module: 'attention.query_key_value', name: 'query_key_value', inFeatures: d, outFeatures: 3 * d, fanInFanOut: false, feedForward: false },
      { module: 'attention.dense', name: 'dense', inFeatures: d, outFeatures: d, fanInFanOut: false, feedForward: false },
      { module: 'mlp.dense_h_to_4h', name: 'dense_h_to_4h', inFeatures: d, outFeatures: ff, fanInFanOut: false, feedForward: false },
      { module: 'mlp.dense_4h_to_h', name: 'dense_4h_to_h', inFeatures: ff, outFeatures: d, fanInFanOut: false, feedForward: true },
    ]);
  },

  trunk(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('GPT-NeoX needs input_ids');
    const [b, t] = ids.shape;
    const { numHeads: H, headDim: D, hiddenSize: d, layerNormEps: eps } = cfg;
    const cache = inputs.cache;
    const past = cache?.past ?? 0;
    let x = f.embed(EMBED_MODULE, ids);
    const { cos, sin } = ropeTablesAt(past, t, cfg.rotaryDim, cfg.ropeTheta, cfg.ropeScaling);
    const mask = cache ? undefined : causalMask(t);
    const norm = (y: tf.Tensor, point: string) => f.tap(point, layerNorm(y, f.p(`${point}.weight`), f.p(`${point}.bias`), eps)) as tf.Tensor2D;
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      // query_key_value's output is [heads, 3, head_dim] per token: each head's query, key and value side by side.
      const [q, k, v] = splitHeadInterleavedQkv(f.linear(`${p}.attention.query_key_value`, norm(x, `${p}.input_layernorm`)), b, t, H, D);
      const qr = applyRope(q, cos, sin);
      const kr = applyRope(k, cos, sin);
      const scale = 1 / Math.sqrt(D);
      const a = cache ? cachedAttention(cache, i, qr, kr, v, scale) : mergeHeads(attention(qr, kr, v, scale, mask), b, t, d);
      const attn = f.tap(`${p}.attention`, f.linear(`${p}.attention.dense`, a));
      const mlp = (h: tf.Tensor2D) => f.tap(`${p}.mlp`, f.linear(`${p}.mlp.dense_4h_to_h`, activation(cfg.activation, f.linear(`${p}.mlp.dense_h_to_4h`, h)) as tf.Tensor2D));
      // Parallel: x + attn(ln1(x)) + mlp(ln2(x)); sequential: the MLP reads the sum with the attention.
      if (cfg.parallelResidual) x = tf.add(tf.add(x, attn), mlp(norm(x, `${p}.post_attention_layernorm`)));
      else {
        x = tf.add(x, attn);
        x = tf.add(x, mlp(norm(x, `${p}.post_attention_layernorm`)));
      }
    }
    if (cache) cache.past += t;
    const hidden = norm(x, 'gpt_neox.final_layer_norm');
    const headName = cfg.tieWordEmbeddings ? EMBED : 'embed_out.weight';
    return { hidden, head: f.p(headName) as tf.Tensor2D, headName, batch: b, seq: t };
  },

  forward(cfg, f, inputs) {
    return trunkLogits(gptNeox.trunk!(cfg, f, inputs));
  },

  loss: (_cfg, logits, labels) => causalLmLoss(logits as tf.Tensor3D, labels as tf.Tensor2D),
};
