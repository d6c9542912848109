/**
 * GPTNeoXForCausalLM, OPTForCausalLM, PhiForCausalLM and BloomForCausalLM written out plainly from
 * transformers' modeling_gpt_neox.py, modeling_opt.py, modeling_phi.py and modeling_bloom.py (float64
 * loops over one unpadded sequence, no TF.js): the references for sidecar/src/models/gpt-neox.ts,
 * opt.ts, phi.ts and bloom.ts, which no transformers fixture covers.
 */
import type { BloomConfig, GptNeoxConfig, OptConfig, PhiConfig } from '../../sidecar/src/models/config';
import { naiveInverseFrequencies, naiveRope } from './naive-decoder';
import { activate, causalAttention, headLogits, layerNorm, linear, hasWeight, type Weights } from './naive-ops';

/** Logits [T·V] of one sequence. */
export function naiveGptNeoxLogits(cfg: GptNeoxConfig, w: Weights, ids: readonly number[]): Float64Array {
  const { hiddenSize: d, numHeads: H, headDim: D, vocabSize: V, layerNormEps: eps } = cfg;
  const inv = naiveInverseFrequencies(cfg.rotaryDim, cfg.ropeTheta, cfg.ropeScaling, ids.length);
  const embed = w('gpt_neox.embed_in.weight');
  let x = ids.map((id) => Float64Array.from(embed.subarray(id * d, (id + 1) * d)));
  const ln = (r: Float64Array, name: string) => layerNorm(r, w(`${name}.weight`), w(`${name}.bias`), eps);
  const bias = (n: string) => (hasWeight(w, n) ? w(n) : undefined);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `gpt_neox.layers.${l}`;
    const proj = (h: Float64Array, m: string, out: number) => linear(h, w(`${p}.${m}.weight`), bias(`${p}.${m}.bias`), out);
    const mlp = (h: Float64Array) => proj(proj(h, 'mlp.dense_h_to_4h', cfg.intermediateSize).map((z) => activate(cfg.activation, z)), 'mlp.dense_4h_to_h', d);
    // GPTNeoXAttention: view(..., heads, 3·head_size).chunk(3): each head's q, k, v are consecutive.
    const qkv = x.map((r) => proj(ln(r, `${p}.input_layernorm`), 'attention.query_key_value', 3 * d));
    const part = (which: number, pos: number, rotate: boolean) => {
      const out = new Float64Array(d);
      for (let h = 0; h < H; h++) {
        const head = qkv[pos]!.slice(h * 3 * D + which * D, h * 3 * D + (which + 1) * D);
        out.set(rotate ? naiveRope(head, pos, inv, 1) : head, h * D);
      }
      return out;
    };
    const q = x.map((_, i) => part(0, i, true));
    const k = x.map((_, i) => part(1, i, true));
    const v = x.map((_, i) => part(2, i, false));
    const att = causalAttention(q, k, v, H, D, 1 / Math.sqrt(D)).map((a) => proj(a, 'attention.dense', d));
    x = x.map((r, i) => {
      if (cfg.parallelResidual) {
        const m = mlp(ln(r, `${p}.post_attention_layernorm`));
        return r.map((z, c) => z + att[i]![c]! + m[c]!);
      }
      const mid = r.map((z, c) => z + att[i]![c]!);
      const m = mlp(ln(mid, `${p}.post_attention_layernorm`));
      return mid.map((z, c) => z + m[c]!);
    });
  }
  const out = x.map((r) => ln(r, 'gpt_neox.final_layer_norm'));
  return headLogits(out, w(cfg.tieWordEmbeddings ? 'gpt_neox.embed_in.weight' : 'embed_out.weight'), V);
}

/** Logits [T·V] of one sequence (positions 0…T−1: OPTLearnedPositionalEmbedding's rows 2…T+1). */
export function naiveOptLogits(cfg: OptConfig, w: Weights, ids: readonly number[]): Float64Array {
  const { hiddenSize: d, numHeads: H, headDim: D, vocabSize: V, layerNormEps: eps } = cfg;
  const E = cfg.wordEmbedProjDim;
  const embed = w('model.decoder.embed_tokens.weight');
  const positions = w('model.decoder.embed_positions.weight');
  const projected = E !== d;
  let x = ids.map((id, t) => {
    const tok = Float64Array.from(embed.subarray(id * E, (id + 1) * E));
    const e = projected ? linear(tok, w('model.decoder.project_in.weight'), undefined, d) : tok;
    return e.map((z, c) => z + positions[(t + 2) * d + c]!);
  });
  const ln = (r: Float64Array, name: string) => layerNorm(r, w(`${name}.weight`), w(`${name}.bias`), eps);
  const bias = (n: string) => (hasWeight(w, n) ? w(n) : undefined);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.decoder.layers.${l}`;
    const proj = (h: Float64Array, m: string, out: number) => linear(h, w(`${p}.${m}.weight`), bias(`${p}.${m}.bias`), out);
    // OPTDecoderLayer: do_layer_norm_before normalises each sub-layer's input, else its residual sum.
    const hs = cfg.layerNormBefore ? x.map((r) => ln(r, `${p}.self_attn_layer_norm`)) : x;
    // OPTAttention scales the queries (q_proj(h) · head_dim^−½) and not the scores: the same product.
    const q = hs.map((h) => proj(h, 'self_attn.q_proj', d).map((z) => z / Math.sqrt(D)));
    const k = hs.map((h) => proj(h, 'self_attn.k_proj', d));
    const v = hs.map((h) => proj(h, 'self_attn.v_proj', d));
    const att = causalAttention(q, k, v, H, D, 1);
    x = x.map((r, i) => {
      let s = r.map((z, c) => z + proj(att[i]!, 'self_attn.out_proj', d)[c]!);
      if (!cfg.layerNormBefore) s = ln(s, `${p}.self_attn_layer_norm`);
      const h2 = cfg.layerNormBefore ? ln(s, `${p}.final_layer_norm`) : s;
      const m = proj(proj(h2, 'fc1', cfg.intermediateSize).map((z) => activate(cfg.activation, z)), 'fc2', d);
      const out = s.map((z, c) => z + m[c]!);
      return cfg.layerNormBefore ? out : ln(out, `${p}.final_layer_norm`);
    });
  }
  let out = cfg.finalLayerNorm ? x.map((r) => ln(r, 'model.decoder.final_layer_norm')) : x;
  if (projected) out = out.map((r) => linear(r, w('model.decoder.project_out.weight'), undefined, E));
  return headLogits(out, w(cfg.tieWordEmbeddings ? 'model.decoder.embed_tokens.weight' : 'lm_head.weight'), V);
}

/** Logits [T·V] of one sequence. */
export function naivePhiLogits(cfg: PhiConfig, w: Weights, ids: readonly number[]): Float64Array {
  const { hiddenSize: d, numHeads: H, numKvHeads: Hkv, headDim: D, vocabSize: V, layerNormEps: eps } = cfg;
  const inv = naiveInverseFrequencies(cfg.rotaryDim, cfg.ropeTheta, cfg.ropeScaling, ids.length);
  const embed = w('model.embed_tokens.weight');
  let x = ids.map((id) => Float64Array.from(embed.subarray(id * d, (id + 1) * d)));
  const ln = (r: Float64Array, name: string) => layerNorm(r, w(`${name}.weight`), w(`${name}.bias`), eps);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const proj = (h: Float64Array, m: string, out: number) => linear(h, w(`${p}.${m}.weight`), w(`${p}.${m}.bias`), out);
    const hs = x.map((r) => ln(r, `${p}.input_layernorm`));
    // PhiAttention: per head, q_layernorm / k_layernorm (qk_layernorm), then RoPE on the leading rotary_ndims.
    const heads = (m: string, n: number, normName: string | undefined, rotate: boolean) =>
      hs.map((h, pos) => {
        const y = proj(h, `self_attn.${m}`, n * D);
        const out = new Float64Array(n * D);
        for (let k = 0; k < n; k++) {
          let head = y.slice(k * D, (k + 1) * D);
          if (normName && cfg.qkLayernorm) head = ln(head, `${p}.self_attn.${normName}`);
          out.set(rotate ? naiveRope(head, pos, inv, 1) : head, k * D);
        }
        return out;
      });
    const q = heads('q_proj', H, 'q_layernorm', true);
    // repeat_kv: each key/value head serves H / Hkv consecutive query heads.
    const repeat = (rows: Float64Array[]) => rows.map((r) => Float64Array.from({ length: H * D }, (_, j) => r[Math.floor(Math.floor(j / D) / (H / Hkv)) * D + (j % D)]!));
    const k = repeat(heads('k_proj', Hkv, 'k_layernorm', true));
    const v = repeat(heads('v_proj', Hkv, undefined, false));
    const att = causalAttention(q, k, v, H, D, 1 / Math.sqrt(D)).map((a) => proj(a, 'self_attn.dense', d));
    // PhiDecoderLayer: attention and MLP both read the normalised input; residual + attn + mlp.
    x = x.map((r, i) => {
      const m = proj(proj(hs[i]!, 'mlp.fc1', cfg.intermediateSize).map((z) => activate(cfg.activation, z)), 'mlp.fc2', d);
      return r.map((z, c) => z + att[i]![c]! + m[c]!);
    });
  }
  const out = x.map((r) => ln(r, 'model.final_layernorm'));
  const logits = headLogits(out, w(cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'), V);
  const bias = w('lm_head.bias');
  return logits.map((z, i) => z + bias[i % V]!);
}

/** build_alibi_tensor's slopes, in float64: 2^(−8/n)^k for the largest power of two n ≤ heads, then odd powers of 2^(−4/n). */
export function naiveAlibiSlopes(heads: number): number[] {
  const n = 2 ** Math.floor(Math.log2(heads));
  const slopes = Array.from({ length: n }, (_, i) => (2 ** (-8 / n)) ** (i + 1));
  for (let i = 0; i < Math.min(n, heads - n); i++) slopes.push((2 ** (-4 / n)) ** (2 * i + 1));
  return slopes;
}

/** Logits [T·V] of one sequence. */
export function naiveBloomLogits(cfg: BloomConfig, w: Weights, ids: readonly number[]): Float64Array {
  const { hiddenSize: d, numHeads: H, headDim: D, vocabSize: V, layerNormEps: eps } = cfg;
  const ln = (r: Float64Array, name: string) => layerNorm(r, w(`${name}.weight`), w(`${name}.bias`), eps);
  const embed = w('transformer.word_embeddings.weight');
  let x = ids.map((id) => ln(Float64Array.from(embed.subarray(id * d, (id + 1) * d)), 'transformer.word_embeddings_layernorm'));
  const slopes = naiveAlibiSlopes(H);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `transformer.h.${l}`;
    const proj = (h: Float64Array, m: string, out: number) => linear(h, w(`${p}.${m}.weight`), w(`${p}.${m}.bias`), out);
    const hs = x.map((r) => ln(r, `${p}.input_layernorm`));
    // BloomAttention._reshape: view(…, heads, 3, head_dim).
    const qkv = hs.map((h) => proj(h, 'self_attention.query_key_value', 3 * d));
    const part = (pos: number, h: number, which: number) => qkv[pos]!.subarray(h * 3 * D + which * D, h * 3 * D + (which + 1) * D);
    const attn = x.map((r, i) => {
      const out = new Float64Array(d);
      for (let h = 0; h < H; h++) {
        // alibi.baddbmm(q, kᵀ, beta=1, alpha=1/√D): slope · key position + q·k/√D, then the causal mask.
        const scores = Array.from({ length: i + 1 }, (_, j) => slopes[h]! * j + part(i, h, 0).reduce((a, qv, e) => a + qv * part(j, h, 1)[e]!, 0) / Math.sqrt(D));
        const max = Math.max(...scores);
        const ex = scores.map((s) => Math.exp(s - max));
        const sum = ex.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= i; j++) for (let e = 0; e < D; e++) out[h * D + e] += (ex[j]! / sum) * part(j, h, 2)[e]!;
      }
      const o = proj(out, 'self_attention.dense', d);
      // apply_residual_connection_post_layernorm: the residual is the normalised input.
      const residual = cfg.residualPostLayernorm ? hs[i]! : r;
      return o.map((z, c) => z + residual[c]!);
    });
    x = attn.map((a) => {
      const h2 = ln(a, `${p}.post_attention_layernorm`);
      const m = proj(proj(h2, 'mlp.dense_h_to_4h', 4 * d).map((z) => activate('gelu_new', z)), 'mlp.dense_4h_to_h', d);
      const residual = cfg.residualPostLayernorm ? h2 : a;
      return m.map((z, c) => z + residual[c]!);
    });
  }
  const out = x.map((r) => ln(r, 'transformer.ln_f'));
  return headLogits(out, w(cfg.tieWordEmbeddings ? 'transformer.word_embeddings.weight' : 'lm_head.weight'), V);
}
