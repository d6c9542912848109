/**
 * ModernBertForSequenceClassification written out plainly from transformers' modeling_modernbert.py
 * (float64 loops over one unpadded sequence, no TF.js): the reference for sidecar/src/models/modernbert.ts.
 */
import type { ModernBertConfig } from '../../sidecar/src/models/config';
import { naiveInverseFrequencies, naiveRope } from './naive-decoder';
import { activate, layerNorm, linear, hasWeight, type Weights } from './naive-ops';

/** Logits [numLabels] of one sequence. */
export function naiveModernBertLogits(cfg: ModernBertConfig, w: Weights, ids: readonly number[]): Float64Array {
  const { hiddenSize: d, numHeads: H, headDim: D } = cfg;
  const T = ids.length;
  // nn.LayerNorm(bias=norm_bias): without a bias, the shift is 0.
  const ln = (r: Float64Array, name: string) => layerNorm(r, w(`${name}.weight`), hasWeight(w, `${name}.bias`) ? w(`${name}.bias`) : new Float64Array(d), cfg.normEps);
  const lin = (x: Float64Array, name: string, out: number) => linear(x, w(`${name}.weight`), hasWeight(w, `${name}.bias`) ? w(`${name}.bias`) : undefined, out);
  const embed = w('model.embeddings.tok_embeddings.weight');
  let x = ids.map((id) => ln(Float64Array.from(embed.subarray(id * d, (id + 1) * d)), 'model.embeddings.norm'));
  const invGlobal = naiveInverseFrequencies(D, cfg.globalRope.theta, cfg.globalRope.scaling, T);
  const invLocal = naiveInverseFrequencies(D, cfg.localRope.theta, cfg.localRope.scaling, T);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const half = cfg.slidingWindows[l];
    const inv = half === undefined ? invGlobal : invLocal;
    const hs = l === 0 ? x : x.map((r) => ln(r, `${p}.attn_norm`));
    // Wqkv's output viewed as (3, heads, head_dim): all queries, then all keys, then all values.
    const qkv = hs.map((h) => lin(h, `${p}.attn.Wqkv`, 3 * d));
    const head = (which: number, pos: number, h: number, rotate: boolean) => {
      const v = qkv[pos]!.slice(which * d + h * D, which * d + (h + 1) * D);
      return rotate ? naiveRope(v, pos, inv, 1) : v;
    };
    const att = x.map((_, i) => {
      const out = new Float64Array(d);
      for (let h = 0; h < H; h++) {
        const q = head(0, i, h, true);
        // Bidirectional; a local block's token sees |i − j| <= local_attention / 2.
        const keys = Array.from({ length: T }, (_, j) => j).filter((j) => half === undefined || Math.abs(i - j) <= half);
        const scores = keys.map((j) => head(1, j, h, true).reduce((a, kv, e) => a + kv * q[e]!, 0) / Math.sqrt(D));
        const max = Math.max(...scores);
        const ex = scores.map((s) => Math.exp(s - max));
        const sum = ex.reduce((a, b) => a + b, 0);
        keys.forEach((j, n) => head(2, j, h, false).forEach((v, e) => (out[h * D + e] += (ex[n]! / sum) * v)));
      }
      return lin(out, `${p}.attn.Wo`, d);
    });
    x = x.map((r, i) => r.map((z, c) => z + att[i]![c]!));
    // ModernBertMLP: input, gate = Wi(x).chunk(2); Wo(act(input) · gate).
    const F = cfg.intermediateSize;
    x = x.map((r) => {
      const wi = lin(ln(r, `${p}.mlp_norm`), `${p}.mlp.Wi`, 2 * F);
      const g = Float64Array.from({ length: F }, (_, k) => activate(cfg.activation, wi[k]!) * wi[F + k]!);
      const o = lin(g, `${p}.mlp.Wo`, d);
      return r.map((z, c) => z + o[c]!);
    });
  }
  const last = x.map((r) => ln(r, 'model.final_norm'));
  const pooled = cfg.classifierPooling === 'cls' ? last[0]! : last.reduce((a, r) => a.map((z, c) => z + r[c]! / T), new Float64Array(d));
  const headOut = ln(lin(pooled, 'head.dense', d).map((z) => activate(cfg.classifierActivation, z)), 'head.norm');
  return lin(headOut, 'classifier', cfg.numLabels);
}
