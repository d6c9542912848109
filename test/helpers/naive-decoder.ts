/**
 * A second, deliberately plain implementation of the Llama-layout decoders (Llama, Mistral, Qwen2,
 * Qwen3, Gemma, Gemma 2, Gemma 3 text, Phi-3), written from transformers' modeling files: float64 loops
 * over one sequence, no TF.js. The tests first check it against transformers' own logits (the
 * llama-tiny fixture), then use it as the reference for the options that fixture lacks (biases, q/k
 * norms, sliding windows, RoPE scaling, soft caps, fused projections, partial RoPE).
 */
import type { LlamaConfig, RopeScaling } from '../../sidecar/src/models/config';
import { layerNorm } from './naive-ops';

type Weights = (name: string) => Float32Array | undefined;

/** x Wᵀ + b for one row x [in], W [out, in]. */
function linear(x: Float64Array, w: Float32Array, b: Float32Array | undefined, out: number): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o]! : 0;
    for (let i = 0; i < n; i++) s += x[i]! * w[o * n + i]!;
    y[o] = s;
  }
  return y;
}

/** LlamaRMSNorm: x / sqrt(mean(x²) + eps) · weight (Gemma3RMSNorm: · (1 + weight)), over `x` in slices of `width`. */
function rmsNorm(x: Float64Array, weight: Float32Array, eps: number, offset: number, width = x.length): Float64Array {
  const y = new Float64Array(x.length);
  for (let s = 0; s < x.length; s += width) {
    let ms = 0;
    for (let i = 0; i < width; i++) ms += x[s + i]! ** 2;
    const r = 1 / Math.sqrt(ms / width + eps);
    for (let i = 0; i < width; i++) y[s + i] = x[s + i]! * r * (offset + weight[i]!);
  }
  return y;
}

/** ACT2FN: SiLU, or GELU's tanh approximation (gelu_pytorch_tanh, Gemma's). */
function act(kind: string, z: number): number {
  if (kind === 'silu') return z / (1 + Math.exp(-z));
  if (kind === 'gelu_pytorch_tanh' || kind === 'gelu_new') return 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z ** 3)));
  throw new Error(`naive decoder: no activation ${kind}`);
}

/** `_compute_default_rope_parameters` and the linear / llama3 / longrope variants of transformers' modeling_rope_utils (`seq`: positions so far). */
export function naiveInverseFrequencies(dim: number, theta: number, scaling: RopeScaling, seq = 0): number[] {
  if (scaling.type === 'longrope') {
    const ext = seq > scaling.originalMaxPositions ? scaling.longFactor : scaling.shortFactor;
    return Array.from({ length: dim / 2 }, (_, i) => 1 / (ext[i]! * theta ** ((2 * i) / dim)));
  }
  // _compute_dynamic_ntk_parameters: seq_len = max(seq, max_position_embeddings).
  const root = scaling.type === 'dynamic' ? theta * ((scaling.factor * Math.max(seq, scaling.originalMaxPositions)) / scaling.originalMaxPositions - (scaling.factor - 1)) ** (dim / (dim - 2)) : theta;
  const base = Array.from({ length: dim / 2 }, (_, i) => 1 / root ** ((2 * i) / dim));
  if (scaling.type === 'linear') return base.map((f) => f / scaling.factor);
  if (scaling.type !== 'llama3') return base;
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions: old } = scaling;
  const lowWavelen = old / lowFreqFactor;
  const highWavelen = old / highFreqFactor;
  return base.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    const scaled = wavelen > lowWavelen ? f / factor : f;
    const smooth = (old / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    return medium ? ((1 - smooth) * scaled) / factor + smooth * scaled : scaled;
  });
}

/**
 * apply_rotary_pos_emb on one head vector at position `pos`: x·cos + rotate_half(x)·sin over its first
 * 2·inv.length dimensions (Phi-3's partial RoPE leaves the rest), cos and sin times `gain` (LongRoPE).
 */
export function naiveRope(x: Float64Array, pos: number, inv: number[], gain: number): Float64Array {
  const half = inv.length;
  const y = Float64Array.from(x);
  for (let i = 0; i < half; i++) {
    const c = gain * Math.cos(pos * inv[i]!);
    const s = gain * Math.sin(pos * inv[i]!);
    y[i] = x[i]! * c - x[i + half]! * s;
    y[i + half] = x[i + half]! * c + x[i]! * s;
  }
  return y;
}

/** Logits [T·V] of one sequence of token ids. */
export function naiveDecoderLogits(cfg: LlamaConfig, w: Weights, ids: readonly number[]): Float64Array {
  const need = (n: string) => {
    const t = w(n);
    if (!t) throw new Error(`naive decoder: no ${n}`);
    return t;
  };
  const { hiddenSize: d, numHeads: H, numKvHeads: Hkv, headDim: D, vocabSize: V } = cfg;
  const T = ids.length;
  const R = cfg.rotaryDim;
  const globalInv = naiveInverseFrequencies(R, cfg.ropeTheta, cfg.ropeScaling, T);
  const localInv = cfg.localRope ? naiveInverseFrequencies(R, cfg.localRope.theta, cfg.localRope.scaling, T) : globalInv;
  const gain = cfg.ropeScaling.type === 'longrope' ? cfg.ropeScaling.attentionFactor : 1;
  const cap = (z: number, c: number | undefined) => (c === undefined ? z : c * Math.tanh(z / c));
  const embed = need('model.embed_tokens.weight');
  // Gemma3TextScaledWordEmbedding: × √hidden_size (as float32).
  let x = ids.map((id) => Float64Array.from(embed.subarray(id * d, (id + 1) * d)).map((e) => e * cfg.embedScale));
  // StableLM: nn.LayerNorm (with its bias) where the others have RMSNorm.
  const norm = (r: Float64Array, name: string, width?: number) =>
    cfg.layerNorms ? layerNorm(r, need(name), need(name.replace(/weight$/, 'bias')), cfg.rmsNormEps) : rmsNorm(r, need(name), cfg.rmsNormEps, cfg.normOffset, width);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const inv = cfg.localRope?.layers[l] ? localInv : globalInv;
    const proj = (h: Float64Array, m: string, out: number) => linear(h, need(`${p}.${m}.weight`), w(`${p}.${m}.bias`), out);
    // Phi3Attention: qkv_proj's rows are the queries', then the keys', then the values'.
    const fused = (h: Float64Array, m: string) => {
      if (!cfg.fusedProjections) return proj(h, `self_attn.${m}`, (m === 'q_proj' ? H : Hkv) * D);
      const all = proj(h, 'self_attn.qkv_proj', (H + 2 * Hkv) * D);
      const at = { q_proj: [0, H * D], k_proj: [H * D, (H + Hkv) * D], v_proj: [(H + Hkv) * D, (H + 2 * Hkv) * D] }[m]!;
      return all.slice(at[0], at[1]);
    };
    // Olmo2DecoderLayer: the attention reads the residual stream itself (no input_layernorm).
    const hs = cfg.preNorms === false ? x : x.map((r) => norm(r, `${p}.input_layernorm.weight`));
    const heads = (m: string, n: number, normName: string) =>
      hs.map((h, pos) => {
        let y = fused(h, m);
        // Olmo2Attention: q_norm(q_proj(x)) over the whole projection; Qwen3's per head; StableLmLayerNormPerHead: each head its own bias-free LayerNorm.
        if (cfg.qkNorm && cfg.qkNormPerHeadWeights) {
          const layer = normName === 'q_norm' ? 'q_layernorm' : 'k_layernorm';
          const per = new Float64Array(y.length);
          for (let k = 0; k < n; k++) per.set(layerNorm(y.slice(k * D, (k + 1) * D), need(`${p}.self_attn.${layer}.norms.${k}.weight`), new Float64Array(D), cfg.rmsNormEps), k * D);
          y = per;
        } else if (cfg.qkNorm) y = norm(y, `${p}.self_attn.${normName}.weight`, cfg.qkNormOverProjection ? y.length : D);
        // SmolLM3Attention: `if self.use_rope` (no_rope_layers[layer] = 1) rotates, else not.
        if (cfg.noRopeLayers?.[l]) return y;
        const rotated = new Float64Array(n * D);
        for (let k = 0; k < n; k++) rotated.set(naiveRope(y.subarray(k * D, (k + 1) * D), pos, inv, gain), k * D);
        return rotated;
      });
    const q = heads('q_proj', H, 'q_norm');
    const k = heads('k_proj', Hkv, 'k_norm');
    const v = hs.map((h) => fused(h, 'v_proj'));
    const window = cfg.slidingWindows[l];
    x = x.map((row, i) => {
      const att = new Float64Array(H * D);
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / Hkv)); // repeat_kv: each KV head serves H/Hkv consecutive query heads
        const scores: number[] = [];
        for (let j = 0; j <= i; j++) {
          if (window !== undefined && j <= i - window) scores.push(-Infinity);
          else {
            let s = 0;
            for (let e = 0; e < D; e++) s += q[i]![h * D + e]! * k[j]![g * D + e]!;
            // Gemma 2 caps the scaled scores (before the mask).
            scores.push(cap(s * cfg.attentionScale, cfg.attnSoftcap));
          }
        }
        const max = Math.max(...scores);
        const ex = scores.map((s) => Math.exp(s - max));
        const sum = ex.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= i; j++) for (let e = 0; e < D; e++) att[h * D + e] += (ex[j]! / sum) * v[j]![g * D + e]!;
      }
      let o = proj(att, 'self_attn.o_proj', d);
      // Gemma3DecoderLayer: post_attention_layernorm on the attention output, pre_feedforward_layernorm
      // before the MLP, post_feedforward_layernorm on its output; Llama: post_attention_layernorm before the MLP.
      if (cfg.sandwichNorms) o = norm(o, `${p}.post_attention_layernorm.weight`);
      // GraniteDecoderLayer: residual + output · residual_multiplier.
      const rs = cfg.residualScale ?? 1;
      const r = row.map((a, c) => a + o[c]! * rs);
      // StableLM's parallel residual: the MLP reads the same normalised input as the attention.
      const h2 = cfg.parallelResidual ? hs[i]! : cfg.preNorms === false ? r : norm(r, `${p}.${cfg.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}.weight`);
      const F = cfg.intermediateSize;
      // Phi3MLP: gate_up_proj's first half is the gate.
      const gateUp = cfg.fusedProjections ? proj(h2, 'mlp.gate_up_proj', 2 * F) : undefined;
      const gate = (gateUp ? gateUp.slice(0, F) : proj(h2, 'mlp.gate_proj', F)).map((z) => act(cfg.activation, z));
      const up = gateUp ? gateUp.slice(F) : proj(h2, 'mlp.up_proj', F);
      let mlp = proj(gate.map((z, c) => z * up[c]!), 'mlp.down_proj', d);
      if (cfg.sandwichNorms) mlp = norm(mlp, `${p}.post_feedforward_layernorm.weight`);
      return r.map((a, c) => a + mlp[c]! * rs);
    });
  }
  const head = w('lm_head.weight') ?? embed;
  const out = new Float64Array(T * V);
  // GraniteForCausalLM: logits / logits_scaling.
  x.forEach((r, i) => out.set(linear(norm(r, 'model.norm.weight'), head, undefined, V).map((z) => cap(z / (cfg.logitDivisor ?? 1), cfg.logitSoftcap)), i * V));
  return out;
}
