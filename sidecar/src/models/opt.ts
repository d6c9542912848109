/**
 * OPTForCausalLM (facebook/opt-*): learned positions (offset by 2), LayerNorm before each sub-layer
 * (opt-350m: after its residual sum), a ReLU MLP of fc1 and fc2, token embeddings projected in and
 * out (project_in, project_out) where word_embed_proj_dim differs from hidden_size, a tied head.
 */
import * as tf from '@tensorflow/tfjs-core';
import { blockLinears, linearParams, normParams, trunkLogits, type Architecture, type LinearModuleInfo, type ParamInfo } from './architecture';
import type { OptConfig } from './config';
import { activation, attention, cachedAttention, causalLmLoss, causalMask, layerNorm, mergeHeads, splitHeads } from './ops';

const block = (i: number) => `model.decoder.layers.${i}`;
const EMBED_MODULE = 'model.decoder.embed_tokens';
const EMBED = `${EMBED_MODULE}.weight`;
const POSITIONS = 'model.decoder.embed_positions.weight';
/** OPTLearnedPositionalEmbedding: position p is row p + 2. */
const POSITION_OFFSET = 2;

const projected = (cfg: OptConfig) => cfg.wordEmbedProjDim !== cfg.hiddenSize;

export const opt: Architecture<OptConfig> = {
  inputKind: 'tokens',
  task: 'causal-lm',
  blockPrefix: (_cfg, i) => block(i),
  tokenEmbedding: () => EMBED_MODULE,

  params(cfg) {
    const d = cfg.hiddenSize;
    const e = cfg.wordEmbedProjDim;
    const ff = cfg.intermediateSize;
    const bias = cfg.enableBias;
    const out: ParamInfo[] = [
      { name: EMBED, shape: [cfg.vocabSize, e], layer: -1, type: 'embedding' },
      { name: POSITIONS, shape: [cfg.maxPositions + POSITION_OFFSET, d], layer: -1, type: 'embedding' },
    ];
    if (projected(cfg)) out.push(...linearParams('model.decoder.project_in', d, e, -1, 'project_in', false));
    for (let i = 0; i < cfg.numLayers; i++) {
      const b = block(i);
      for (const m of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) out.push(...linearParams(`${b}.self_attn.${m}`, d, d, i, m, bias));
      out.push(
        ...normParams(`${b}.self_attn_layer_norm`, d, i),
        ...linearParams(`${b}.fc1`, ff, d, i, 'fc1', bias),
        ...linearParams(`${b}.fc2`, d, ff, i, 'fc2', bias),
        ...normParams(`${b}.final_layer_norm`, d, i),
      );
    }
    if (cfg.finalLayerNorm) out.push(...normParams('model.decoder.final_layer_norm', d, -1));
    if (projected(cfg)) out.push(...linearParams('model.decoder.project_out', e, d, -1, 'project_out', false));
    if (!cfg.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, e], layer: -1, type: 'head' });
    return out;
  },

  aliases: (cfg): Record<string, string> => (cfg.tieWordEmbeddings ? { 'lm_head.weight': EMBED } : {}),

  linearModules(cfg) {
    const d = cfg.hiddenSize;
    const ff = cfg.intermediateSize;
    const m = (module: string, inFeatures: number, outFeatures: number, feedForward = false) => ({ module, name: module.split('.').pop()!, inFeatures, outFeatures, fanInFanOut: false, feedForward });
    const out: LinearModuleInfo[] = blockLinears(cfg.numLayers, block, [...['q_proj', 'k_proj', 'v_proj', 'out_proj'].map((p) => m(`self_attn.${p}`, d, d)), m('fc1', d, ff), m('fc2', ff, d, true)]);
    // nn.Linear modules outside the blocks, as PEFT's "all-linear" finds them.
    if (projected(cfg)) out.push({ ...m('model.decoder.project_in', cfg.wordEmbedProjDim, d), layer: -1 }, { ...m('model.decoder.project_out', d, cfg.wordEmbedProjDim), layer: -1 });
    return out;
  },

  trunk(cfg, f, inputs) {
    const ids = inputs.inputIds;
    if (!ids) throw new Error('OPT needs input_ids');
    const [b, t] = ids.shape;
    const { numHeads: H, headDim: D, hiddenSize: d, layerNormEps: eps } = cfg;
    const cache = inputs.cache;
    const past = cache?.past ?? 0;
    if (past + t > cfg.maxPositions) throw new Error(`sequence length ${past + t} exceeds max_position_embeddings=${cfg.maxPositions}`);
    let tokens = f.embed(EMBED_MODULE, ids, cfg.padTokenId);
    if (projected(cfg)) tokens = f.linear('model.decoder.project_in', tokens);
    // Positions come from the attention mask's running count in transformers; batches here are
    // right-padded, where that count is past, past + 1, … for every real token. Their rows broadcast
    // over the batch (no gather: the gradient is a sum, not a segment sum).
    const table = f.p(POSITIONS);
    const positions = tf.slice(table, [past + POSITION_OFFSET, 0], [t, d]);
    let x = tf.reshape(tf.add(tf.reshape(tokens, [b, t, d]), positions), [b * t, d]) as tf.Tensor2D;
    const mask = cache ? undefined : causalMask(t);
    const norm = (y: tf.Tensor, point: string) => f.tap(point, layerNorm(y, f.p(`${point}.weight`), f.p(`${point}.bias`), eps)) as tf.Tensor2D;
    const scale = 1 / Math.sqrt(D);
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      const pre = (y: tf.Tensor2D, point: string) => (cfg.layerNormBefore ? norm(y, point) : y);
      const post = (y: tf.Tensor2D, point: string) => (cfg.layerNormBefore ? y : norm(y, point));
      const h = pre(x, `${p}.self_attn_layer_norm`);
      const [q, k, v] = ['q_proj', 'k_proj', 'v_proj'].map((m) => splitHeads(f.linear(`${p}.self_attn.${m}`, h), b, t, H, D)) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
      const a = cache ? cachedAttention(cache, i, q, k, v, scale) : mergeHeads(attention(q, k, v, scale, mask), b, t, d);
      x = post(tf.add(x, f.tap(`${p}.self_attn`, f.linear(`${p}.self_attn.out_proj`, a))), `${p}.self_attn_layer_norm`);
      const h2 = pre(x, `${p}.final_layer_norm`);
      // The MLP has no module of its own: its tap point is named as the sub-layer, not as fc2 (SSF targets either).
      const m = f.tap(`${p}.mlp`, f.linear(`${p}.fc2`, activation(cfg.activation, f.linear(`${p}.fc1`, h2)) as tf.Tensor2D));
      x = post(tf.add(x, m), `${p}.final_layer_norm`);
    }
    if (cache) cache.past += t;
    let hidden = cfg.finalLayerNorm ? norm(x, 'model.decoder.final_layer_norm') : x;
    if (projected(cfg)) hidden = f.linear('model.decoder.project_out', hidden);
    const headName = cfg.tieWordEmbeddings ? EMBED : 'lm_head.weight';
    return { hidden, head: f.p(headName) as tf.Tensor2D, headName, batch: b, seq: t };
  },

  forward(cfg, f, inputs) {
    return trunkLogits(opt.trunk!(cfg, f, inputs));
  },

  loss: (_cfg, logits, labels) => causalLmLoss(logits as tf.Tensor3D, labels as tf.Tensor2D),
};
