/**
 * Transformer building blocks from tfjs-core ops. Callers run them inside tf.tidy.
 *
 * Where the active backend has a fused kernel (wasm with the native addon: backend/native), layer
 * norm, tanh-GELU, attention and cross-entropy run as one op each (one tape node, one or two native
 * kernels in the backward pass); elsewhere they are the composites below. Both agree up to float32
 * rounding.
 */
import * as tf from '@tensorflow/tfjs-core';
import { fusedAttention, fusedAttentionQkv, fusedCrossEntropy, fusedGeluTanh, fusedLayerNorm, fusedMergeHeads, fusedSplitHeads } from '../backend/native/fused';
import type { KvCache } from './kv-cache';
import type { Activation, RopeScaling } from './config';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export function activation(kind: Activation, x: tf.Tensor): tf.Tensor {
  switch (kind) {
    case 'gelu': // exact, erf-based (BERT, ViT)
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
    case 'gelu_new':
    case 'gelu_pytorch_tanh': {
      const fused = fusedGeluTanh(x);
      if (fused) return fused;
      // x·x·x rather than pow: pow is slow on the wasm backend (engine notes).
      const inner = tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), SQRT_2_OVER_PI);
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(inner)));
    }
    case 'relu':
      return tf.relu(x);
    case 'silu':
      return tf.mul(x, tf.sigmoid(x));
    case 'tanh':
      return tf.tanh(x);
  }
}

export function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  const fused = fusedLayerNorm(x, weight, bias, eps);
  if (fused) return fused;
  const axis = x.rank - 1;
  const mean = tf.mean(x, axis, true);
  const centered = tf.sub(x, mean);
  const variance = tf.mean(tf.mul(centered, centered), axis, true);
  return tf.add(tf.mul(tf.mul(centered, tf.rsqrt(tf.add(variance, eps))), weight), bias);
}

export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  const ms = tf.mean(tf.mul(x, x), x.rank - 1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), weight);
}

/** [B, T, H*D] → [B, H, T, D] */
export function splitHeads(x: tf.Tensor, batch: number, seq: number, heads: number, headDim: number): tf.Tensor4D {
  const fused = fusedSplitHeads(x, batch, seq, heads, headDim);
  if (fused) return fused;
  return tf.transpose(tf.reshape(x, [batch, seq, heads, headDim]), [0, 2, 1, 3]);
}

/**
 * Queries, keys and values [B, H, T, D] from a fused projection [B·T, 3·H·D] laid out per head
 * (GPT-NeoX's query_key_value, BLOOM's: each head's q, k and v side by side).
 */
export function splitHeadInterleavedQkv(qkv: tf.Tensor2D, batch: number, seq: number, heads: number, headDim: number): [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D] {
  const parts = tf.split(tf.reshape(qkv, [batch, seq, heads, 3 * headDim]), 3, 3);
  return parts.map((z) => tf.transpose(z, [0, 2, 1, 3]) as tf.Tensor4D) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
}

/** [B, H, T, D] → [B*T, H*D] */
export function mergeHeads(x: tf.Tensor, batch: number, seq: number, width: number): tf.Tensor2D {
  const fused = fusedMergeHeads(x, batch, seq, width);
  if (fused) return fused;
  return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [batch * seq, width]);
}

/** Masks made by `causalMask`: `attention` recognises them and can skip the masked keys. */
const CAUSAL_MASKS = new WeakSet<tf.Tensor>();

/** Additive mask [T, T]: 0 where key ≤ query, a large negative number above the diagonal. */
export function causalMask(seq: number): tf.Tensor2D {
  const m = new Float32Array(seq * seq);
  for (let i = 0; i < seq; i++) for (let j = i + 1; j < seq; j++) m[i * seq + j] = -1e9;
  const t = tf.tensor2d(m, [seq, seq]);
  CAUSAL_MASKS.add(t);
  return t;
}

/**
 * Additive mask [T, past + T] of T new queries after `past` cached keys: each sees the keys up to its
 * own position, and with a sliding `window` only the last `window` of them (itself included), as
 * transformers' sliding_window_overlay (kv > q − window).
 */
export function cachedCausalMask(past: number, seq: number, window?: number): tf.Tensor2D {
  const n = past + seq;
  const m = new Float32Array(seq * n);
  for (let i = 0; i < seq; i++) {
    const q = past + i;
    for (let j = 0; j < n; j++) if (j > q || (window !== undefined && j <= q - window)) m[i * n + j] = -1e9;
  }
  return tf.tensor2d(m, [seq, n]);
}

/** The causal mask of T tokens, sliding-windowed where `window` is shorter than T (then a plain additive mask, not the fused kernel's). */
/** Additive mask [T, T] letting each token see those within `half` positions on either side (ModernBERT's local blocks). */
export function bandMask(seq: number, half: number): tf.Tensor2D {
  const m = new Float32Array(seq * seq);
  for (let i = 0; i < seq; i++) for (let j = 0; j < seq; j++) if (Math.abs(i - j) > half) m[i * seq + j] = -1e9;
  return tf.tensor2d(m, [seq, seq]);
}

export function windowedCausalMask(seq: number, window?: number): tf.Tensor2D {
  return window === undefined || window >= seq ? causalMask(seq) : cachedCausalMask(0, seq, window);
}

/**
 * Attention of the new tokens' q, k, v [B, H(kv), T, D] over the cache of block `layer` and
 * themselves (the cache is extended): [B·T, H·D].
 */
export function cachedAttention(cache: KvCache, layer: number, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number, window?: number, softcap?: number): tf.Tensor2D {
  const [b, h, t, d] = q.shape;
  const all = cache.extend(layer, k, v);
  const out = attention(q, all.k, all.v, scale, cachedCausalMask(cache.past, t, window), softcap);
  return mergeHeads(out, b, t, h * d);
}

/** Additive mask [B, 1, 1, T] from a 0/1 attention mask [B, T]. */
export function paddingMask(attentionMask: tf.Tensor): tf.Tensor {
  const [b, t] = attentionMask.shape as [number, number];
  return tf.reshape(tf.mul(tf.sub(1, tf.cast(attentionMask, 'float32')), -1e9), [b, 1, 1, t]);
}

/**
 * softmax(q·kᵀ·scale + mask)·v over [B, H, T, D] queries and [B, Hkv, T, D] keys and values, repeated
 * for grouped-query heads when Hkv < H. `mask` is added to the scores and broadcasts against
 * [B, H, T, T]; `softcap` (Gemma 2) bounds the scaled scores as cap · tanh(s / cap) before the mask.
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number, mask?: tf.Tensor, softcap?: number): tf.Tensor4D {
  const [b, h, t, d] = q.shape;
  const hkv = k.shape[1];
  if (hkv !== h) {
    const rep = h / hkv;
    const tk = k.shape[2]; // the keys' length (longer than t with a KvCache)
    // stack, not tile: tile's gradient is a loop of slices and stops at rank 4.
    const expand = (x: tf.Tensor4D) => tf.reshape(tf.stack(new Array<tf.Tensor>(rep).fill(x), 2), [b, h, tk, d]) as tf.Tensor4D;
    k = expand(k);
    v = expand(v);
  }
  // A causal mask (exp(−1e9 − max) is exactly 0 in float32) or none: the fused kernel, if any.
  const causal = mask !== undefined && isCausalMask(mask, t);
  if ((!mask || causal) && softcap === undefined) {
    const fused = fusedAttention(q, k, v, scale, causal);
    if (fused) return fused;
  }
  let scores: tf.Tensor = tf.mul(tf.matMul(q, k, false, true), scale);
  if (softcap !== undefined) scores = tf.mul(tf.tanh(tf.div(scores, softcap)), softcap);
  if (mask) scores = tf.add(scores, mask);
  return tf.matMul(tf.softmax(scores), v) as tf.Tensor4D;
}

/**
 * Multi-head attention from a fused projection qkv [B·T, 3·H·D] (q, k, v side by side) to the merged
 * heads [B·T, H·D]; `mask` as in `attention`. One fused op where the backend has it (no mask or a
 * causal one), else split + splitHeads + attention + mergeHeads.
 */
export function attentionQkv(qkv: tf.Tensor2D, batch: number, seq: number, heads: number, headDim: number, scale: number, mask?: tf.Tensor): tf.Tensor2D {
  const causal = mask !== undefined && isCausalMask(mask, seq);
  if (!mask || causal) {
    const fused = fusedAttentionQkv(qkv, batch, seq, heads, headDim, scale, causal);
    if (fused) return fused;
  }
  const [q, k, v] = tf.split(qkv, 3, 1).map((z) => splitHeads(z, batch, seq, heads, headDim));
  return mergeHeads(attention(q!, k!, v!, scale, mask), batch, seq, heads * headDim);
}

const isCausalMask = (mask: tf.Tensor, t: number) => CAUSAL_MASKS.has(mask) && !mask.isDisposed && mask.shape[0] === t && mask.shape[1] === t;

/**
 * RoPE's inverse frequencies [D/2] as transformers computes them in float32 (`ROPE_INIT_FUNCTIONS`):
 * θ^(−2i/D), divided by `factor` for linear scaling; Llama 3.1's scaling divides the low frequencies
 * (wavelengths above original_max_position_embeddings / low_freq_factor) by `factor`, keeps the high
 * ones, and blends smoothly between; LongRoPE divides each by its own factor, the short ones while
 * `seq` (the positions so far) fits original_max_position_embeddings, the long ones beyond; dynamic
 * NTK scaling raises θ once `seq` passes max_position_embeddings.
 */
export function ropeInverseFrequencies(headDim: number, theta: number, scaling: RopeScaling = { type: 'default' }, seq = 0): Float32Array {
  const f = Math.fround;
  const inv = new Float32Array(headDim / 2);
  if (scaling.type === 'longrope') {
    const factors = seq > scaling.originalMaxPositions ? scaling.longFactor : scaling.shortFactor;
    for (let i = 0; i < inv.length; i++) inv[i] = f(1 / f(f(factors[i]!) * f(theta ** f((2 * i) / headDim))));
    return inv;
  }
  // Dynamic NTK raises the base once the sequence outgrows max_position_embeddings (transformers'
  // _compute_dynamic_ntk_parameters, with seq_len = the positions so far). transformers keeps the
  // largest base it has used for later, shorter calls; here each call computes its own, as a fresh model.
  const base = scaling.type === 'dynamic' && seq > scaling.originalMaxPositions ? theta * (scaling.factor * (seq / scaling.originalMaxPositions) - (scaling.factor - 1)) ** (headDim / (headDim - 2)) : theta;
  for (let i = 0; i < inv.length; i++) inv[i] = f(1 / f(base ** f((2 * i) / headDim)));
  if (scaling.type === 'linear') return inv.map((x) => f(x / scaling.factor));
  if (scaling.type === 'llama3') {
    const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositions: context } = scaling;
    return inv.map((x) => {
      const wavelength = f((2 * Math.PI) / x);
      if (wavelength < context / high) return x;
      if (wavelength > context / low) return f(x / factor);
      const smooth = f(f(f(context / wavelength) - low) / (high - low));
      return f(f(f((1 - smooth) * x) / factor) + f(smooth * x)); // torch: (1 − s) · x / factor + s · x
    });
  }
  return inv;
}

/**
 * Rotary position tables as transformers computes them in float32: cos/sin of shape [T, D] (D: the
 * rotated dimensions), times LongRoPE's attention factor.
 */
export function ropeTables(seq: number, headDim: number, theta: number, scaling?: RopeScaling): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const half = headDim / 2;
  const inv = ropeInverseFrequencies(headDim, theta, scaling, seq);
  const gain = scaling?.type === 'longrope' ? Math.fround(scaling.attentionFactor) : 1;
  const cos = new Float32Array(seq * headDim);
  const sin = new Float32Array(seq * headDim);
  for (let i = 0; i < half; i++) {
    const invFreq = inv[i]!;
    for (let p = 0; p < seq; p++) {
      const angle = Math.fround(p * invFreq);
      const c = gain === 1 ? Math.cos(angle) : Math.fround(Math.cos(angle)) * gain;
      const s = gain === 1 ? Math.sin(angle) : Math.fround(Math.sin(angle)) * gain;
      cos[p * headDim + i] = c;
      cos[p * headDim + i + half] = c;
      sin[p * headDim + i] = s;
      sin[p * headDim + i + half] = s;
    }
  }
  return { cos: tf.tensor2d(cos, [seq, headDim]), sin: tf.tensor2d(sin, [seq, headDim]) };
}

/** RoPE tables for the new tokens at positions past..past+t−1 (a generation step past a KvCache's `past`). */
export function ropeTablesAt(past: number, t: number, dim: number, theta: number, scaling?: RopeScaling): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  // LongRoPE picks its factors by the whole length so far, so the tables span it all.
  const tables = ropeTables(past + t, dim, theta, scaling);
  return past ? { cos: tf.slice(tables.cos, [past, 0], [t, -1]), sin: tf.slice(tables.sin, [past, 0], [t, -1]) } : tables;
}

/**
 * x·cos + rotate_half(x)·sin on [B, H, T, D]; rotate_half(x) = [-x2, x1]. Tables narrower than D
 * rotate the leading dimensions only (Phi-3's partial RoPE); the rest pass through.
 */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D {
  const d = cos.shape[1];
  if (d < x.shape[3]) {
    const [rot, pass] = tf.split(x, [d, x.shape[3] - d], 3);
    return tf.concat([applyRope(rot as tf.Tensor4D, cos, sin), pass!], 3) as tf.Tensor4D;
  }
  const [x1, x2] = tf.split(x, [d / 2, d / 2], 3);
  const rotated = tf.concat([tf.neg(x2), x1], 3);
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
}

/**
 * Mean cross-entropy of logits [N, C] against integer labels [N], ignoring label -100 as PyTorch
 * does. Returns a scalar; NaN when every label is ignored (as PyTorch).
 */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  const fused = fusedCrossEntropy(logits, labels);
  if (fused) return fused;
  const classes = logits.shape[1];
  const valid = tf.cast(tf.notEqual(labels, -100), 'float32');
  const safeLabels = tf.cast(tf.mul(labels, tf.cast(valid, 'int32')), 'int32') as tf.Tensor1D;
  const logp = tf.logSoftmax(logits);
  const picked = tf.sum(tf.mul(logp, tf.oneHot(safeLabels, classes)), 1);
  return tf.div(tf.neg(tf.sum(tf.mul(picked, valid))), tf.sum(valid)) as tf.Scalar;
}

/** Causal LM loss as transformers computes it: logits [B, T, V] predict labels shifted by one. */
export function causalLmLoss(logits: tf.Tensor3D, labels: tf.Tensor2D): tf.Scalar {
  const [b, t, v] = logits.shape;
  // Every position against the next label, the last one against −100 (ignored): the same mean as
  // slicing off the last position, without copying the logits (or padding their gradient).
  const next = tf.concat([tf.slice(labels, [0, 1], [b, t - 1]), tf.fill([b, 1], -100, labels.dtype)], 1);
  return crossEntropy(tf.reshape(logits, [b * t, v]) as tf.Tensor2D, tf.reshape(next, [b * t]) as tf.Tensor1D);
}

export function mseLoss(pred: tf.Tensor, target: tf.Tensor): tf.Scalar {
  return tf.mean(tf.squaredDifference(tf.reshape(pred, [-1]), tf.reshape(tf.cast(target, 'float32'), [-1])));
}

/** BCE-with-logits, mean over all entries (multi-label classification). */
export function bceWithLogits(logits: tf.Tensor, target: tf.Tensor): tf.Scalar {
  const y = tf.cast(target, 'float32');
  // max(x,0) - x·y + log(1 + exp(-|x|)), the stable form
  return tf.mean(tf.add(tf.sub(tf.relu(logits), tf.mul(logits, y)), tf.log1p(tf.exp(tf.neg(tf.abs(logits))))));
}

/**
 * Embedding rows for ids [N] from a table [V, D]. With `paddingIdx`, that row gets no gradient,
 * as PyTorch's nn.Embedding(padding_idx=...) does (BERT's and Llama's token embeddings).
 */
export function embedding(table: tf.Tensor, ids: tf.Tensor, paddingIdx?: number): tf.Tensor2D {
  if (paddingIdx === undefined) return tf.gather(table, ids) as tf.Tensor2D;
  // ids go in as an input so the gradient function can read them (a captured tensor would be disposed).
  const lookup = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [t, idx, save] = args as [tf.Tensor, tf.Tensor1D, tf.GradSaveFunc];
    save([idx]);
    return {
      value: tf.gather(t, idx),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const i = saved[0] as tf.Tensor1D;
        const keep = tf.expandDims(tf.cast(tf.notEqual(i, paddingIdx), 'float32'), 1);
        return [tf.unsortedSegmentSum(tf.mul(dy as tf.Tensor, keep), i, t.shape[0]!), tf.zerosLike(i)];
      },
    };
  });
  return lookup(table, tf.cast(ids, 'int32')) as tf.Tensor2D;
}

/**
 * The causal-LM loss of causalLmLoss, from the last hidden states [N = B·T, d] and the output
 * embedding [V, d] (and its bias [V], Phi's), without ever holding the N × V logits: rows go
 * `rowsPerChunk` at a time through hidden · headᵀ, log-sum-exp and the picked logit, and the backward
 * pass recomputes each slice's logits for softmax − one-hot (the memory of a slice, not of all; the
 * head matmul runs twice). The head's gradient is computed only when it trains (`headTrainable`,
 * `biasTrainable`): a frozen vocabulary-sized head would cost another full matmul for nothing.
 * `softcap` caps the logits as cap · tanh(z / cap) (Gemma 2).
 */
export function chunkedCausalLmLoss(
  hidden: tf.Tensor2D,
  head: tf.Tensor2D,
  labels: tf.Tensor2D,
  o: { rowsPerChunk: number; headTrainable: boolean; softcap?: number; bias?: tf.Tensor1D; biasTrainable?: boolean },
): tf.Scalar {
  const [b, t] = labels.shape;
  const vocab = head.shape[0];
  const n = b * t;
  const spans: [number, number][] = [];
  for (let s = 0; s < n; s += o.rowsPerChunk) spans.push([s, Math.min(o.rowsPerChunk, n - s)]);
  const cap = o.softcap;
  const trainsBias = o.bias !== undefined && o.biasTrainable === true;
  /** One slice's logits (capped), one-hot of its labels and 0/1 mask of counted rows; `tanh`: of the capped ones, for their derivative. */
  const slice = (h: tf.Tensor2D, w: tf.Tensor2D, bias: tf.Tensor1D | undefined, y: tf.Tensor1D, [s, len]: [number, number]) => {
    const ys = tf.slice(y, [s], [len]);
    const valid = tf.cast(tf.notEqual(ys, -100), 'float32');
    const product = tf.matMul(tf.slice(h, [s, 0], [len, -1]), w, false, true);
    const raw = bias ? tf.add(product, bias) : product;
    const tanh = cap === undefined ? undefined : tf.tanh(tf.div(raw, cap));
    const logits = tanh ? tf.mul(tanh, cap!) : raw;
    return { logits, tanh, onehot: tf.oneHot(tf.mul(ys, tf.cast(valid, 'int32')), vocab), valid };
  };
  const lossOf = (h: tf.Tensor2D, w: tf.Tensor2D, bias: tf.Tensor1D | undefined, next: tf.Tensor1D, count: tf.Scalar) => {
    let total: tf.Tensor = tf.scalar(0);
    for (const span of spans) {
      const part = tf.tidy(() => {
        const { logits, onehot, valid } = slice(h, w, bias, next, span);
        const picked = tf.sum(tf.mul(logits, onehot), 1);
        return tf.sum(tf.mul(tf.sub(tf.logSumExp(logits, 1), picked), valid));
      });
      const sum = tf.add(total, part);
      tf.dispose([total, part]);
      total = sum;
    }
    // NaN when every label is ignored, as PyTorch's mean over nothing.
    const value = tf.div(total, count) as tf.Scalar;
    total.dispose();
    return value;
  };
  /** d hidden, and d head / d bias when they train, slice by slice. */
  const grads = (dy: tf.Tensor, h: tf.Tensor2D, w: tf.Tensor2D, bias: tf.Tensor1D | undefined, next: tf.Tensor1D, count: tf.Scalar): { dh: tf.Tensor; dw?: tf.Tensor; db?: tf.Tensor } => {
    const scale = tf.div(dy, count);
    const parts: tf.Tensor[] = [];
    let dw: tf.Tensor | undefined = o.headTrainable ? tf.zerosLike(w) : undefined;
    let db: tf.Tensor | undefined = trainsBias ? tf.zerosLike(bias!) : undefined;
    const accumulate = (acc: tf.Tensor, term: () => tf.Tensor) => {
      const next = tf.tidy(() => tf.add(acc, term()));
      acc.dispose();
      return next;
    };
    for (const span of spans) {
      const g = tf.tidy(() => {
        const { logits, tanh, onehot, valid } = slice(h, w, bias, next, span);
        const g = tf.mul(tf.mul(tf.sub(tf.softmax(logits), onehot), tf.expandDims(valid, 1)), scale);
        // d(cap · tanh(z / cap))/dz = 1 − tanh².
        return tanh ? tf.mul(g, tf.sub(1, tf.square(tanh))) : g;
      });
      parts.push(tf.matMul(g, w));
      if (dw) dw = accumulate(dw, () => tf.matMul(g, tf.slice(h, [span[0], 0], [span[1], -1]), true, false));
      if (db) db = accumulate(db, () => tf.sum(g, 0));
      g.dispose();
    }
    const dh = tf.concat(parts);
    tf.dispose([...parts, scale]);
    return { dh, ...(dw ? { dw } : {}), ...(db ? { db } : {}) };
  };
  // Each position against the next label, the last one against −100 (as causalLmLoss); with the
  // count of counted labels these are inputs of the custom gradient, saved for the backward pass
  // (the forward's own tensors are gone by then). A frozen head or bias is captured, not an input:
  // no [V, d] gradient of zeros is made for it.
  const next = tf.reshape(tf.concat([tf.slice(labels, [0, 1], [b, t - 1]), tf.fill([b, 1], -100, 'int32')], 1), [n]) as tf.Tensor1D;
  const count = tf.sum(tf.cast(tf.notEqual(next, -100), 'float32')) as tf.Scalar;
  const trained = [...(o.headTrainable ? [head] : []), ...(trainsBias ? [o.bias!] : [])];
  const loss = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const inputs = args.slice(0, -1) as tf.Tensor[];
    save(inputs);
    // [h, (w), (bias), y, count]: the trained ones from the inputs, the frozen ones captured.
    const unpack = (ts: tf.Tensor[]) => {
      let i = 1;
      const w = o.headTrainable ? (ts[i++] as tf.Tensor2D) : head;
      const bias = trainsBias ? (ts[i++] as tf.Tensor1D) : o.bias;
      return { h: ts[0] as tf.Tensor2D, w, bias, y: ts[i] as tf.Tensor1D, c: ts[i + 1] as tf.Scalar };
    };
    const x = unpack(inputs);
    return {
      value: lossOf(x.h, x.w, x.bias, x.y, x.c),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const s = unpack(saved);
        const r = grads(dy as tf.Tensor, s.h, s.w, s.bias, s.y, s.c);
        return [r.dh, ...(r.dw ? [r.dw] : []), ...(r.db ? [r.db] : []), tf.zerosLike(s.y), tf.zerosLike(s.c)];
      },
    };
  });
  return loss(hidden, ...trained, next, count) as tf.Scalar;
}
