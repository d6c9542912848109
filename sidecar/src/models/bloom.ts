/**
 * BloomForCausalLM (BLOOM, BLOOMZ): no position embeddings but ALiBi (head h adds slope_h · key position
 * to its scores), a LayerNorm right after the token embeddings, pre-LN blocks whose query_key_value is
 * laid out per head (as GPT-NeoX's), a tanh-GELU MLP of 4·d, a head tied to the embeddings.
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, normParams, trunkLogits, type Architecture, type ParamInfo } from './architecture';
import type { BloomConfig } from './config';
import { activation, attention, cachedCausalMask, causalLmLoss, causalMask, layerNorm, mergeHeads, splitHeadInterleavedQkv } from './ops';

const block = (i: number) => `transformer.h.${i}`;
const EMBED_MODULE = 'transformer.word_embeddings';
const EMBED = `${EMBED_MODULE}.weight`;

/**
 * ALiBi's slopes as build_alibi_tensor computes them in float32: powers of 2^(−8/n) for the largest
 * power of two n ≤ heads, then odd powers of 2^(−4/n) for the heads beyond it.
 */
export function alibiSlopes(heads: number): Float32Array {
  const f = Math.fround;
  const n = 2 ** Math.floor(Math.log2(heads));
  const base = f(2 ** -(2 ** -(Math.log2(n) - 3)));
  const out = Array.from({ length: n }, (_, i) => f(base ** (i + 1)));
  if (n !== heads) {
    const extra = f(2 ** -(2 ** -(Math.log2(2 * n) - 3)));
    for (let i = 0; i < Math.min(n, heads - n); i++) out.push(f(extra ** (2 * i + 1)));
  }
  return Float32Array.from(out);
}

/** The additive [1, H, T, past + T] bias of new tokens at past…past+T−1: slope_h · key position, plus the causal mask. */
function alibiMask(heads: number, past: number, t: number): tf.Tensor4D {
  const slopes = tf.reshape(tf.tensor1d(alibiSlopes(heads)), [1, heads, 1, 1]);
  const keys = tf.reshape(tf.range(0, past + t, 1, 'float32'), [1, 1, 1, past + t]);
  const causal = past ? cachedCausalMask(past, t) : causalMask(t);
  return tf.add(tf.mul(slopes, keys), causal) as tf.Tensor4D;
}

export const bloom: Architecture<BloomConfig> = {
  inputKind: 'tokens',
  task: 'causal-lm',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => EMBED_MODULE,

  params(cfg) {
    const d = cfg.hiddenSize;
    const out: ParamInfo[] = [{ name: EMBED, shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' }, ...normParams('transformer.word_embeddings_layernorm', d, -1)];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      out.push(
        ...normParams(`${b}.input_layernorm`, d, i),
        ...linearParams(`${b}.self_attention.query_key_value`, 3 * d, d, i, 'query_key_value'),
        ...linearParams(`${b}.self_attention.dense`, d, d, i, 'dense'),
        ...normParams(`${b}.post_attention_layernorm`, d, i),
        ...linearParams(`${b}.mlp.dense_h_to_4h`, 4 * d, d, i, 'dense_h_to_4h'),
        ...linearParams(`${b}.mlp.dense_4h_to_h`, d, 4 * d, i, 'dense_4h_to_h'),
      );
    }
    out.push(...normParams('transformer.ln_f', d, -1));
    if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'head' });
    return out;
  },

  aliases: (cfg): Record<string, string> => (cfg.tieWordEmbeddings ? { 'lm_head.weight': EMBED } : {}),

  linearModules(cfg) {
    const d = cfg.hiddenSize;
    return blockLinears(cfg.numLayers, block, [
      { module: 'self_attention.query_key_value', name: 'query_key_value', inFeatures: d, outFeatures: 3 * d, fanInFanOut: false, feedForward: false },
      { module: 'self_attention.dense', name: 'dense', inFeatures: d, outFeatures: d, fanInFanOut: false, feedForward: false },
      { module: 'mlp.dense_h_to_4h', name: 'dense_h_to_4h', inFeatures: d, outFeatures: 4 * d, fanInFanOut: false, feedForward: false },
      { module: 'mlp.dense_4h_to_h', name: 'dense_4h_to_h', inFeatures: 4 * d, outFeatures: d, fanInFanOut: false, feedForward: true },
    ]);
  },

  trunk(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('BLOOM needs input_ids');
    const [b, t] = ids.shape;
    const { numHeads: H, headDim: D, hiddenSize: d, layerNormEps: eps } = cfg;
    const cache = inputs.cache;
    const past = cache?.past ?? 0;
    const norm = (y: tf.Tensor, point: string) => f.tap(point, layerNorm(y, f.p(`${point}.weight`), f.p(`${point}.bias`), eps)) as tf.Tensor2D;
    let x = norm(f.embed(EMBED_MODULE, ids), 'transformer.word_embeddings_layernorm');
    // Keys sit at 0…past+t−1 (batches are right-padded: the attention mask's running count is the position).
    const mask = alibiMask(H, past, t);
    const scale = 1 / Math.sqrt(D);
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const h = norm(x, `${p}.input_layernorm`);
      const [q, k, v] = splitHeadInterleavedQkv(f.linear(`${p}.self_attention.query_key_value`, h), b, t, H, D);
      const all = cache ? cache.extend(i, k, v) : { k, v };
      const a = mergeHeads(attention(q, all.k, all.v, scale, mask), b, t, d);
      // apply_residual_connection_post_layernorm: each sub-layer adds to its normalised input, not to the stream.
      const attn = tf.add(f.tap(`${p}.self_attention`, f.linear(`${p}.self_attention.dense`, a)), cfg.residualPostLayernorm ? h : x);
      const h2 = norm(attn, `${p}.post_attention_layernorm`);
      const m = f.tap(`${p}.mlp`, f.linear(`${p}.mlp.dense_4h_to_h`, activation('gelu_new', f.linear(`${p}.mlp.dense_h_to_4h`, h2)) as tf.Tensor2D));
      x = tf.add(m, cfg.residualPostLayernorm ? h2 : attn) as tf.Tensor2D;
    }
    if (cache) cache.past += t;
    const hidden = norm(x, 'transformer.ln_f');
    const headName = cfg.tieWordEmbeddings ? EMBED : 'lm_head.weight';
    return { hidden, head: f.p(headName) as tf.Tensor2D, headName, batch: b, seq: t };
  },

  forward(cfg, f, inputs) {
    return trunkLogits(bloom.trunk!(cfg, f, inputs));
  },

  loss: (_cfg, logits, labels) => causalLmLoss(logits as tf.Tensor3D, labels as tf.Tensor2D),
};
