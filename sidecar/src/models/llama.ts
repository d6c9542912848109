/**
 * LlamaForCausalLM: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, tied or untied head; with the
 * options that make it MistralForCausalLM (sliding-window attention), Qwen2ForCausalLM (q/k/v biases)
 * and Qwen3ForCausalLM (per-head RMSNorm of queries and keys).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Architecture, LinearModuleInfo, ParamInfo } from './architecture';
import type { LlamaConfig } from './config';
import { activation, applyRope, embedding, attention, cachedAttention, causalLmLoss, mergeHeads, rmsNorm, ropeTables, splitHeads, windowedCausalMask } from './ops';

const block = (i: number) => `model.layers.${i}`;

function modules(cfg: LlamaConfig): Omit<LinearModuleInfo, 'layer' | 'module'>[] {
  const d = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const ff = cfg.intermediateSize;
  const m = (name: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ name, inFeatures, outFeatures, fanInFanOut: false, feedForward });
  return [m('q_proj', d, qDim), m('k_proj', d, kvDim), m('v_proj', d, kvDim), m('o_proj', qDim, d), m('gate_proj', d, ff), m('up_proj', d, ff), m('down_proj', ff, d, true)];
}
const parent = (name: string) => (name.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(name) ? 'mlp' : 'self_attn');
function hasBias(cfg: LlamaConfig, name: string): boolean {
  if (parent(name) === 'mlp') return cfg.mlpBias;
  return name === 'o_proj' ? cfg.outputBias : cfg.qkvBias;
}

export const llama: Architecture<LlamaConfig> = {
  inputKind: 'tokens',
  task: 'causal-lm',
  blockPrefix: (_cfg, i) => block(i),

  params(cfg) {
    const d = cfg.hiddenSize;
    const out: ParamInfo[] = [{ name: 'model.embed_tokens.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' }];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      out.push({ name: `${b}.input_layernorm.weight`, shape: [d], layer: i, type: 'norm' });
      for (const m of modules(cfg)) {
        const mod = `${b}.${parent(m.name)}.${m.name}`;
        out.push({ name: `${mod}.weight`, shape: [m.outFeatures, m.inFeatures], layer: i, type: m.name });
        if (hasBias(cfg, m.name)) out.push({ name: `${mod}.bias`, shape: [m.outFeatures], layer: i, type: m.name });
      }
      if (cfg.qkNorm) for (const n of ['q_norm', 'k_norm']) out.push({ name: `${b}.self_attn.${n}.weight`, shape: [cfg.headDim], layer: i, type: 'norm' });
      out.push({ name: `${b}.post_attention_layernorm.weight`, shape: [d], layer: i, type: 'norm' });
    }
    out.push({ name: 'model.norm.weight', shape: [d], layer: -1, type: 'norm' });
    if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'head' });
    return out;
  },

  aliases: (cfg): Record<string, string> => (cfg.tieWordEmbeddings ? { 'lm_head.weight': 'model.embed_tokens.weight' } : {}),

  linearModules(cfg) {
    const out: LinearModuleInfo[] = [];
    for (let i = 0; i < cfg.numLayers; i++) for (const m of modules(cfg)) out.push({ ...m, layer: i, module: `${block(i)}.${parent(m.name)}.${m.name}` });
    return out;
  },

  forward(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('Llama needs input_ids');
    const [b, t] = ids.shape;
    const cache = inputs.cache;
    const past = cache?.past ?? 0;
    const qDim = cfg.numHeads * cfg.headDim;
    let x = embedding(f.p('model.embed_tokens.weight'), tf.reshape(ids, [b * t]), cfg.padTokenId);
    // One mask per distinct window (Qwen's blocks may mix full and sliding attention).
    const masks = new Map<number | undefined, tf.Tensor2D>();
    const maskOf = (w: number | undefined) => masks.get(w) ?? masks.set(w, windowedCausalMask(t, w)).get(w)!;
    const tables = ropeTables(past + t, cfg.headDim, cfg.ropeTheta, cfg.ropeScaling);
    // New tokens sit at positions past..past+t−1.
    const { cos, sin } = past ? { cos: tf.slice(tables.cos, [past, 0], [t, -1]), sin: tf.slice(tables.sin, [past, 0], [t, -1]) } : tables;
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const h = f.tap(`${p}.input_layernorm`, rmsNorm(x, f.p(`${p}.input_layernorm.weight`), cfg.rmsNormEps)) as tf.Tensor2D;
      // Qwen3 normalises each head's query and key over the head dimension, before RoPE.
      const headNorm = (x: tf.Tensor4D, name: string) => (cfg.qkNorm ? (rmsNorm(x, f.p(`${p}.self_attn.${name}.weight`), cfg.rmsNormEps) as tf.Tensor4D) : x);
      const q = applyRope(headNorm(splitHeads(f.linear(`${p}.self_attn.q_proj`, h), b, t, cfg.numHeads, cfg.headDim), 'q_norm'), cos, sin);
      const k = applyRope(headNorm(splitHeads(f.linear(`${p}.self_attn.k_proj`, h), b, t, cfg.numKvHeads, cfg.headDim), 'k_norm'), cos, sin);
      const v = splitHeads(f.linear(`${p}.self_attn.v_proj`, h), b, t, cfg.numKvHeads, cfg.headDim);
      const scale = 1 / Math.sqrt(cfg.headDim);
      const window = cfg.slidingWindows[i];
      const a = cache ? cachedAttention(cache, i, q, k, v, scale, window) : mergeHeads(attention(q, k, v, scale, maskOf(window)), b, t, qDim);
      x = tf.add(x, f.tap(`${p}.self_attn`, f.linear(`${p}.self_attn.o_proj`, a)));
      const h2 = f.tap(`${p}.post_attention_layernorm`, rmsNorm(x, f.p(`${p}.post_attention_layernorm.weight`), cfg.rmsNormEps)) as tf.Tensor2D;
      const gated = tf.mul(activation(cfg.activation, f.linear(`${p}.mlp.gate_proj`, h2)), f.linear(`${p}.mlp.up_proj`, h2)) as tf.Tensor2D;
      x = tf.add(x, f.tap(`${p}.mlp`, f.linear(`${p}.mlp.down_proj`, gated)));
    }
    if (cache) cache.past += t;
    const hf = f.tap('model.norm', rmsNorm(x, f.p('model.norm.weight'), cfg.rmsNormEps)) as tf.Tensor2D;
    const head = cfg.tieWordEmbeddings ? f.p('model.embed_tokens.weight') : f.p('lm_head.weight');
    return tf.reshape(tf.matMul(hf, head, false, true), [b, t, cfg.vocabSize]);
  },

  loss: (_cfg, logits, labels) => causalLmLoss(logits as tf.Tensor3D, labels as tf.Tensor2D),
};
