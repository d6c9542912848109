/**
 * PhiForCausalLM (phi-1, phi-1.5, phi-2): pre-LN blocks with one LayerNorm whose output feeds the
 * attention and the MLP, both added to the residual in parallel; partial RoPE; optional LayerNorms
 * over each head's query and key (qk_layernorm); a biased head.
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, normParams, trunkLogits, type Architecture, type ParamInfo } from './architecture';
import type { PhiConfig } from './config';
import { activation, applyRope, attention, cachedAttention, causalLmLoss, causalMask, layerNorm, mergeHeads, ropeTablesAt, splitHeads } from './ops';

const block = (i: number) => `model.layers.${i}`;
const EMBED_MODULE = 'model.embed_tokens';
const EMBED = `${EMBED_MODULE}.weight`;

export const phi: Architecture<PhiConfig> = {
  inputKind: 'tokens',
  task: 'causal-lm',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => EMBED_MODULE,

  params(cfg) {
    const d = cfg.hiddenSize;
    const q = cfg.numHeads * cfg.headDim;
    const kv = cfg.numKvHeads * cfg.headDim;
    const out: ParamInfo[] = [{ name: EMBED, shape: [cfg.vocabSize, d], layer: -1, type: 'embedding' }];
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      out.push(
        ...normParams(`${b}.input_layernorm`, d, i),
        ...linearParams(`${b}.self_attn.q_proj`, q, d, i, 'q_proj'),
        ...linearParams(`${b}.self_attn.k_proj`, kv, d, i, 'k_proj'),
        ...linearParams(`${b}.self_attn.v_proj`, kv, d, i, 'v_proj'),
        ...linearParams(`${b}.self_attn.dense`, d, q, i, 'dense'),
        ...(cfg.qkLayernorm ? [...normParams(`${b}.self_attn.q_layernorm`, cfg.headDim, i), ...normParams(`${b}.self_attn.k_layernorm`, cfg.headDim, i)] : []),
        ...linearParams(`${b}.mlp.fc1`, cfg.intermediateSize, d, i, 'fc1'),
        ...linearParams(`${b}.mlp.fc2`, d, cfg.intermediateSize, i, 'fc2'),
      );
    }
    out.push(...normParams('model.final_layernorm', d, -1));
    // The head's bias is its own even when its weight is tied to the embeddings.
    const head = linearParams('lm_head', cfg.vocabSize, d, -1, 'head');
    out.push(...(cfg.tieWordEmbeddings ? head.filter((p) => p.name.endsWith('.bias')) : head));
    return out;
  },

  aliases: (cfg): Record<string, string> => (cfg.tieWordEmbeddings ? { 'lm_head.weight': EMBED } : {}),

  linearModules(cfg) {
    const d = cfg.hiddenSize;
    const q = cfg.numHeads * cfg.headDim;
    const kv = cfg.numKvHeads * cfg.headDim;
    const m = (module: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ module, name: module.split('.').pop()!, inFeatures, outFeatures, fanInFanOut: false, feedForward });
    return blockLinears(cfg.numLayers, block, [m('self_attn.q_proj', d, q), m('self_attn.k_proj', d, kv), m('self_attn.v_proj', d, kv), m('self_attn.dense', q, d), m('mlp.fc1', d, cfg.intermediateSize), m('mlp.fc2', cfg.intermediateSize, d, true)]);
  },

  trunk(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('Phi needs input_ids');
    const [b, t] = ids.shape;
    const { numHeads: H, numKvHeads: Hkv, headDim: D, layerNormEps: eps } = cfg;
    const cache = inputs.cache;
    const past = cache?.past ?? 0;
    let x = f.embed(EMBED_MODULE, ids, cfg.padTokenId);
    const { cos, sin } = ropeTablesAt(past, t, cfg.rotaryDim, cfg.ropeTheta, cfg.ropeScaling);
    const mask = cache ? undefined : causalMask(t);
    const norm = (y: tf.Tensor, name: string) => layerNorm(y, f.p(`${name}.weight`), f.p(`${name}.bias`), eps);
    const scale = 1 / Math.sqrt(D);
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const h = f.tap(`${p}.input_layernorm`, norm(x, `${p}.input_layernorm`)) as tf.Tensor2D;
      const heads = (m: string, n: number, normName?: string) => {
        const y = splitHeads(f.linear(`${p}.self_attn.${m}`, h), b, t, n, D);
        return normName && cfg.qkLayernorm ? (norm(y, `${p}.self_attn.${normName}`) as tf.Tensor4D) : y;
      };
      const q = applyRope(heads('q_proj', H, 'q_layernorm'), cos, sin);
      const k = applyRope(heads('k_proj', Hkv, 'k_layernorm'), cos, sin);
      const v = heads('v_proj', Hkv);
      const a = cache ? cachedAttention(cache, i, q, k, v, scale) : mergeHeads(attention(q, k, v, scale, mask), b, t, H * D);
      const attn = f.tap(`${p}.self_attn`, f.linear(`${p}.self_attn.dense`, a));
      const mlp = f.tap(`${p}.mlp`, f.linear(`${p}.mlp.fc2`, activation(cfg.activation, f.linear(`${p}.mlp.fc1`, h)) as tf.Tensor2D));
      x = tf.add(tf.add(x, attn), mlp);
    }
    if (cache) cache.past += t;
    const hidden = f.tap('model.final_layernorm', norm(x, 'model.final_layernorm')) as tf.Tensor2D;
    const headName = cfg.tieWordEmbeddings ? EMBED : 'lm_head.weight';
    return { hidden, head: f.p(headName) as tf.Tensor2D, headName, headBias: { tensor: f.p('lm_head.bias') as tf.Tensor1D, name: 'lm_head.bias' }, batch: b, seq: t };
  },

  forward(cfg, f, inputs) {
    return trunkLogits(phi.trunk!(cfg, f, inputs));
  },

  loss: (_cfg, logits, labels) => causalLmLoss(logits as tf.Tensor3D, labels as tf.Tensor2D),
};
