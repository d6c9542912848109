/**
 * DebertaV2ForSequenceClassification written out plainly from transformers' modeling_deberta_v2.py
 * (float64 loops over one unpadded sequence, no TF.js), as the reference for sidecar/src/models/deberta.ts:
 * DisentangledSelfAttention's content, c2p and p2c scores (its gather-then-transpose for p2c written
 * as the element it reads), make_log_bucket_position, the relative embeddings' LayerNorm, the
 * ContextPooler.
 */
import type { DebertaConfig } from '../../sidecar/src/models/config';
import { gelu, hasWeight, layerNorm, linear, type Weights } from './naive-ops';


/** make_log_bucket_position, in double precision. */
export function naiveBucket(rel: number, bucketSize: number, maxPosition: number): number {
  const mid = Math.floor(bucketSize / 2);
  const abs = rel < mid && rel > -mid ? mid - 1 : Math.abs(rel);
  if (abs <= mid) return rel;
  return Math.sign(rel) * (Math.ceil((Math.log(abs / mid) / Math.log((maxPosition - 1) / mid)) * (mid - 1)) + mid);
}

/** Logits [numLabels] of one sequence. */
export function naiveDebertaLogits(cfg: DebertaConfig, w: Weights, ids: readonly number[], types?: readonly number[]): Float64Array {
  const { hiddenSize: d, numHeads: H, headDim: D } = cfg;
  const T = ids.length;
  const E = cfg.embeddingSize;
  const has = (n: string) => hasWeight(w, n);
  let x = ids.map((id, pos) => {
    const e = Float64Array.from(w('deberta.embeddings.word_embeddings.weight').subarray(id * E, (id + 1) * E));
    if (cfg.positionBiasedInput) e.forEach((_, c) => (e[c] += w('deberta.embeddings.position_embeddings.weight')[pos * E + c]!));
    if (cfg.typeVocabSize > 0) e.forEach((_, c) => (e[c] += w('deberta.embeddings.token_type_embeddings.weight')[(types?.[pos] ?? 0) * E + c]!));
    const h = E !== d ? linear(e, w('deberta.embeddings.embed_proj.weight'), undefined, d) : e;
    return layerNorm(h, w('deberta.embeddings.LayerNorm.weight'), w('deberta.embeddings.LayerNorm.bias'), cfg.layerNormEps);
  });
  const span = cfg.positionBuckets > 0 ? cfg.positionBuckets : cfg.maxRelativePositions;
  const relRows = cfg.relativeAttention
    ? Array.from({ length: 2 * span }, (_, r) => {
        const row = Float64Array.from(w('deberta.encoder.rel_embeddings.weight').subarray(r * d, (r + 1) * d));
        return cfg.normRelEmbeddings ? layerNorm(row, w('deberta.encoder.LayerNorm.weight'), w('deberta.encoder.LayerNorm.bias'), cfg.layerNormEps) : row;
      })
    : [];
  const relPos = (i: number, j: number) => (cfg.positionBuckets > 0 ? naiveBucket(i - j, cfg.positionBuckets, cfg.maxRelativePositions) : i - j);
  const clamp = (v: number) => Math.min(Math.max(v, 0), 2 * span - 1);
  const scale = Math.sqrt(D * (1 + (cfg.c2p ? 1 : 0) + (cfg.p2c ? 1 : 0)));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `deberta.encoder.layer.${l}.attention.self`;
    const proj = (h: Float64Array, m: string) => linear(h, w(`${p}.${m}.weight`), has(`${p}.${m}.bias`) ? w(`${p}.${m}.bias`) : undefined, d);
    const q = x.map((h) => proj(h, 'query_proj'));
    const k = x.map((h) => proj(h, 'key_proj'));
    const v = x.map((h) => proj(h, 'value_proj'));
    const posKey = cfg.relativeAttention && cfg.c2p ? relRows.map((r) => proj(r, cfg.shareAttKey ? 'key_proj' : 'pos_key_proj')) : [];
    const posQuery = cfg.relativeAttention && cfg.p2c ? relRows.map((r) => proj(r, cfg.shareAttKey ? 'query_proj' : 'pos_query_proj')) : [];
    const dot = (a: Float64Array, b: Float64Array, h: number) => {
      let s = 0;
      for (let e = 0; e < D; e++) s += a[h * D + e]! * b[h * D + e]!;
      return s;
    };
    const att = x.map((_, i) => {
      const out = new Float64Array(d);
      for (let h = 0; h < H; h++) {
        const scores = k.map((kj, j) => {
          let s = dot(q[i]!, kj, h) / scale;
          if (cfg.relativeAttention && cfg.c2p) s += dot(q[i]!, posKey[clamp(relPos(i, j) + span)]!, h) / scale;
          // p2c: k_j against the position query at −δ(j, i), the element transformers' transposed gather reads.
          if (cfg.relativeAttention && cfg.p2c) s += dot(kj, posQuery[clamp(-relPos(j, i) + span)]!, h) / scale;
          return s;
        });
        const max = Math.max(...scores);
        const ex = scores.map((s) => Math.exp(s - max));
        const sum = ex.reduce((a, b) => a + b, 0);
        for (let j = 0; j < T; j++) for (let e = 0; e < D; e++) out[h * D + e] += (ex[j]! / sum) * v[j]![h * D + e]!;
      }
      return out;
    });
    const b = `deberta.encoder.layer.${l}`;
    x = x.map((row, i) => {
      const a = linear(att[i]!, w(`${b}.attention.output.dense.weight`), w(`${b}.attention.output.dense.bias`), d);
      const y = layerNorm(a.map((z, c) => z + row[c]!), w(`${b}.attention.output.LayerNorm.weight`), w(`${b}.attention.output.LayerNorm.bias`), cfg.layerNormEps);
      const inner = linear(y, w(`${b}.intermediate.dense.weight`), w(`${b}.intermediate.dense.bias`), cfg.intermediateSize).map(gelu);
      const o = linear(inner, w(`${b}.output.dense.weight`), w(`${b}.output.dense.bias`), d);
      return layerNorm(o.map((z, c) => z + y[c]!), w(`${b}.output.LayerNorm.weight`), w(`${b}.output.LayerNorm.bias`), cfg.layerNormEps);
    });
  }
  const pooled = linear(x[0]!, w('pooler.dense.weight'), w('pooler.dense.bias'), d).map(gelu);
  return linear(pooled, w('classifier.weight'), w('classifier.bias'), cfg.numLabels);
}
