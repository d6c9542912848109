/**
 * LlamaForCausalLM: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, tied or untied head; with the
 * options that make it MistralForCausalLM (sliding-window attention), Qwen2ForCausalLM (q/k/v biases),
 * Qwen3ForCausalLM (per-head RMSNorm of queries and keys), GemmaForCausalLM ((1 + w) norms, scaled
 * embeddings, GELU gate), Gemma2ForCausalLM (norms around each sub-layer, soft-capped scores and
 * logits), Gemma3ForCausalLM (q/k norms, a local RoPE for its sliding blocks), Phi3ForCausalLM
 * (fused qkv_proj and gate_up_proj, partial RoPE), SmolLM3ForCausalLM (blocks without RoPE),
 * Olmo2ForCausalLM (norms only after each sub-layer, q/k norms over the whole projections),
 * GraniteForCausalLM (embedding, attention, residual and logit multipliers) and StableLmForCausalLM
 * (LayerNorms, partial RoPE, per-head q/k LayerNorms, an optional parallel residual).
 */
import * as tf from '@tensorflow/tfjs-core';
import { trunkLogits, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import type { LlamaConfig } from './config';
import { activation, applyRope, attention, cachedAttention, causalLmLoss, layerNorm, mergeHeads, rmsNorm, ropeTablesAt, splitHeads, windowedCausalMask } from './ops';

const block = (i: number) => `model.layers.${i}`;

function modules(cfg: LlamaConfig): Omit<LinearModuleInfo, 'layer' | 'module'>[] {
  const d = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const ff = cfg.intermediateSize;
  const m = (name: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ name, inFeatures, outFeatures, fanInFanOut: false, feedForward });
  if (cfg.fusedProjections) return [m('qkv_proj', d, qDim + 2 * kvDim), m('o_proj', qDim, d), m('gate_up_proj', d, 2 * ff), m('down_proj', ff, d, true)];
  return [m('q_proj', d, qDim), m('k_proj', d, kvDim), m('v_proj', d, kvDim), m('o_proj', qDim, d), m('gate_proj', d, ff), m('up_proj', d, ff), m('down_proj', ff, d, true)];
}
const parent = (name: string) => (['gate_proj', 'up_proj', 'gate_up_proj', 'down_proj'].includes(name) ? 'mlp' : 'self_attn');
function hasBias(cfg: LlamaConfig, name: string): boolean {
  if (parent(name) === 'mlp') return cfg.mlpBias;
  return name === 'o_proj' ? cfg.outputBias : cfg.qkvBias;
}

export const llama: Architecture<LlamaConfig> = {
  inputKind: 'tokens',
  task: 'causal-lm',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => 'model.embed_tokens',

  params(cfg) {
    const d = cfg.hiddenSize;
    const out: ParamInfo[] = [{ name: 'model.embed_tokens.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' }];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      // StableLM's norms are LayerNorms with a bias; the others RMSNorms.
      const norm = (name: string, width = d) => out.push({ name: `${b}.${name}.weight`, shape: [width], layer: i, type: 'norm' }, ...(cfg.layerNorms ? [{ name: `${b}.${name}.bias`, shape: [width], layer: i, type: 'norm' }] : []));
      if (cfg.preNorms !== false) norm('input_layernorm');
      for (const m of modules(cfg)) {
        const mod = `${b}.${parent(m.name)}.${m.name}`;
        out.push({ name: `${mod}.weight`, shape: [m.outFeatures, m.inFeatures], layer: i, type: m.name });
        if (hasBias(cfg, m.name)) out.push({ name: `${mod}.bias`, shape: [m.outFeatures], layer: i, type: m.name });
      }
      if (cfg.qkNorm && cfg.qkNormPerHeadWeights) {
        // StableLM's StableLmLayerNormPerHead: one bias-free LayerNorm per head.
        for (const [n, heads] of [['q_layernorm', cfg.numHeads], ['k_layernorm', cfg.numKvHeads]] as const)
          for (let h = 0; h < heads; h++) out.push({ name: `${b}.self_attn.${n}.norms.${h}.weight`, shape: [cfg.headDim], layer: i, type: 'norm' });
      } else if (cfg.qkNorm) {
        // Per head ([head_dim]), or OLMo-2's over the whole projection.
        const width = (heads: number) => (cfg.qkNormOverProjection ? heads * cfg.headDim : cfg.headDim);
        out.push({ name: `${b}.self_attn.q_norm.weight`, shape: [width(cfg.numHeads)], layer: i, type: 'norm' }, { name: `${b}.self_attn.k_norm.weight`, shape: [width(cfg.numKvHeads)], layer: i, type: 'norm' });
      }
      // With the parallel residual the MLP reads input_layernorm's output too: no second norm.
      if (!cfg.parallelResidual) norm('post_attention_layernorm');
      if (cfg.sandwichNorms) for (const n of [...(cfg.preNorms === false ? [] : ['pre_feedforward_layernorm']), 'post_feedforward_layernorm']) norm(n);
    }
    out.push({ name: 'model.norm.weight', shape: [d], layer: -1, type: 'norm' }, ...(cfg.layerNorms ? [{ name: 'model.norm.bias', shape: [d], layer: -1, type: 'norm' }] : []));
    if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, d], layer: -1, type: 'head' });
    return out;
  },

  aliases: (cfg): Record<string, string> => (cfg.tieWordEmbeddings ? { 'lm_head.weight': 'model.embed_tokens.weight' } : {}),

  linearModules(cfg) {
    const out: LinearModuleInfo[] = [];
    for (let i = 0; i < cfg.numLayers; i++) for (const m of modules(cfg)) out.push({ ...m, layer: i, module: `${block(i)}.${parent(m.name)}.${m.name}` });
    return out;
  },

  trunk(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('Llama needs input_ids');
    const [b, t] = ids.shape;
    const cache = inputs.cache;
    const past = cache?.past ?? 0;
    const qDim = cfg.numHeads * cfg.headDim;
    let x = f.embed('model.embed_tokens', ids, cfg.padTokenId);
    if (cfg.embedScale !== 1) x = tf.mul(x, cfg.embedScale);
    // Gemma's RMSNorm scales by (1 + w).
    const norm = (y: tf.Tensor, weight: string) =>
      cfg.layerNorms ? layerNorm(y, f.p(weight), f.p(weight.replace(/weight$/, 'bias')), cfg.rmsNormEps) : rmsNorm(y, cfg.normOffset ? tf.add(f.p(weight), cfg.normOffset) : f.p(weight), cfg.rmsNormEps);
    const normTap = (y: tf.Tensor, point: string) => f.tap(point, norm(y, `${point}.weight`)) as tf.Tensor2D;
    // One mask per distinct window (Qwen's and Gemma's blocks may mix full and sliding attention).
    const masks = new Map<number | undefined, tf.Tensor2D>();
    const maskOf = (w: number | undefined) => masks.get(w) ?? masks.set(w, windowedCausalMask(t, w)).get(w)!;
    const rope = (theta: number, scaling: LlamaConfig['ropeScaling']) => ropeTablesAt(past, t, cfg.rotaryDim, theta, scaling);
    const globalRope = rope(cfg.ropeTheta, cfg.ropeScaling);
    const localRope = cfg.localRope ? rope(cfg.localRope.theta, cfg.localRope.scaling) : globalRope;
    const kvDim = cfg.numKvHeads * cfg.headDim;
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      // Phi-3 projects queries, keys and values in one matmul (qkv_proj), the MLP's gate and up halves in another (gate_up_proj).
      const queryKeyValue = (h: tf.Tensor2D): tf.Tensor2D[] =>
        cfg.fusedProjections ? tf.split(f.linear(`${p}.self_attn.qkv_proj`, h), [qDim, kvDim, kvDim], 1) : ['q_proj', 'k_proj', 'v_proj'].map((m) => f.linear(`${p}.self_attn.${m}`, h));
      const gateUp = (h: tf.Tensor2D): tf.Tensor2D[] =>
        cfg.fusedProjections ? tf.split(f.linear(`${p}.mlp.gate_up_proj`, h), 2, 1) : [f.linear(`${p}.mlp.gate_proj`, h), f.linear(`${p}.mlp.up_proj`, h)];
      const { cos, sin } = cfg.localRope?.layers[i] ? localRope : globalRope;
      // OLMo-2 has no norm before its sub-layers: they read the residual stream.
      const h = cfg.preNorms === false ? x : normTap(x, `${p}.input_layernorm`);
      // Qwen3 and Gemma 3 normalise each head's query and key over the head dimension, before RoPE;
      // OLMo-2 the whole projections, before they are split into heads.
      const headNorm = (x: tf.Tensor4D, name: string) => {
        if (!cfg.qkNorm || cfg.qkNormOverProjection) return x;
        if (!cfg.qkNormPerHeadWeights) return norm(x, `${p}.self_attn.${name}.weight`) as tf.Tensor4D;
        // StableLM: head h through its own bias-free LayerNorm (weights stacked to [1, H, 1, D]).
        const layer = name === 'q_norm' ? 'q_layernorm' : 'k_layernorm';
        const weights = tf.reshape(tf.stack(Array.from({ length: x.shape[1] }, (_, head) => f.p(`${p}.self_attn.${layer}.norms.${head}.weight`))), [1, x.shape[1], 1, x.shape[3]]);
        return layerNorm(x, weights, tf.zerosLike(weights), cfg.rmsNormEps) as tf.Tensor4D;
      };
      const projectionNorm = (x: tf.Tensor2D, name: string) => (cfg.qkNormOverProjection ? (norm(x, `${p}.self_attn.${name}.weight`) as tf.Tensor2D) : x);
      const [q0, k0, vh] = queryKeyValue(h);
      const qh = projectionNorm(q0!, 'q_norm');
      const kh = projectionNorm(k0!, 'k_norm');
      // SmolLM3's NoPE blocks leave queries and keys unrotated.
      const rotate = (x: tf.Tensor4D) => (cfg.noRopeLayers?.[i] ? x : applyRope(x, cos, sin));
      const q = rotate(headNorm(splitHeads(qh, b, t, cfg.numHeads, cfg.headDim), 'q_norm'));
      const k = rotate(headNorm(splitHeads(kh, b, t, cfg.numKvHeads, cfg.headDim), 'k_norm'));
      const v = splitHeads(vh, b, t, cfg.numKvHeads, cfg.headDim);
      const scale = cfg.attentionScale;
      const window = cfg.slidingWindows[i];
      const cap = cfg.attnSoftcap;
      const a = cache ? cachedAttention(cache, i, q, k, v, scale, window, cap) : mergeHeads(attention(q, k, v, scale, maskOf(window), cap), b, t, qDim);
      let attn = f.tap(`${p}.self_attn`, f.linear(`${p}.self_attn.o_proj`, a));
      // Gemma 3 normalises each sub-layer's output before the residual add (its "sandwich").
      if (cfg.sandwichNorms) attn = normTap(attn, `${p}.post_attention_layernorm`);
      // Granite scales each sub-layer's output before the residual add.
      const residual = (y: tf.Tensor) => (cfg.residualScale !== undefined && cfg.residualScale !== 1 ? tf.mul(y, cfg.residualScale) : y);
      x = tf.add(x, residual(attn));
      // StableLM's parallel residual: x + attn(ln(x)) + mlp(ln(x)), the MLP reading the same normalised input.
      const h2 = cfg.parallelResidual ? h : cfg.preNorms === false ? x : normTap(x, `${p}.${cfg.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}`);
      const [gate, up] = gateUp(h2);
      const gated = tf.mul(activation(cfg.activation, gate), up) as tf.Tensor2D;
      let mlp = f.tap(`${p}.mlp`, f.linear(`${p}.mlp.down_proj`, gated));
      if (cfg.sandwichNorms) mlp = normTap(mlp, `${p}.post_feedforward_layernorm`);
      x = tf.add(x, residual(mlp));
    }
    if (cache) cache.past += t;
    const normed = normTap(x, 'model.norm');
    // Granite divides the logits by logits_scaling: the same as dividing the hidden states the head reads.
    const hf = cfg.logitDivisor !== undefined && cfg.logitDivisor !== 1 ? (tf.div(normed, cfg.logitDivisor) as tf.Tensor2D) : normed;
    const headName = cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
    return { hidden: hf, head: f.p(headName) as tf.Tensor2D, headName, batch: b, seq: t, ...(cfg.logitSoftcap ? { logitSoftcap: cfg.logitSoftcap } : {}) };
  },

  forward(cfg, f, inputs) {
    return trunkLogits(llama.trunk!(cfg, f, inputs));
  },

  loss: (_cfg, logits, labels) => causalLmLoss(logits as tf.Tensor3D, labels as tf.Tensor2D),
};
