/**
 * Fused training ops for the model code (ops.ts, adamw.ts). Each returns undefined when the active
 * backend has no kernel for it (any backend but wasm with the native addon loaded), and the caller
 * then runs its composite of tfjs-core ops; with the kernel, the op is one tape node whose gradient
 * is one or two native kernels instead of dozens of element-wise ops. Results agree with the
 * composites up to float32 rounding (summation order; AdamW is bitwise equal).
 *
 * Only this module and kernels.ts know the kernel names; registering happens in kernels.ts.
 */
import * as tf from '@tensorflow/tfjs-core';

export const K = {
  layerNorm: 'PeftLayerNorm',
  layerNormGradX: 'PeftLayerNormGradX',
  layerNormGradGamma: 'PeftLayerNormGradGamma',
  gelu: 'PeftGeluTanh',
  geluGrad: 'PeftGeluTanhGrad',
  attention: 'PeftAttention',
  attentionGrad: 'PeftAttentionGrad',
  xent: 'PeftSoftmaxCrossEntropy',
  xentGrad: 'PeftSoftmaxCrossEntropyGrad',
  adamw: 'PeftAdamW',
  splitHeads: 'PeftSplitHeads',
  mergeHeads: 'PeftMergeHeads',
  linear: 'PeftLinear',
  attentionQkv: 'PeftAttentionQkv',
  attentionQkvGrad: 'PeftAttentionQkvGrad',
} as const;

const has = (kernel: string): boolean => {
  const backend = tf.getBackend();
  return !!backend && tf.getKernel(kernel, backend) !== undefined;
};

const f32 = (...ts: tf.Tensor[]) => ts.every((t) => t.dtype === 'float32');

/** The op's result. Its other outputs (mean/rstd, log-sum-exp) exist for the gradient, and a tape
 * that records the op keeps its own copies of them: disposed here, so nothing leaks outside a tidy. */
function firstOf(outs: tf.Tensor[]): tf.Tensor {
  tf.dispose(outs.slice(1));
  return outs[0]!;
}

/** LayerNorm over the last axis: ((x − mean) · rsqrt(var + eps)) · weight + bias. */
export function fusedLayerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor | undefined {
  const d = x.shape[x.rank - 1];
  if (!has(K.layerNorm) || x.rank < 1 || !f32(x, weight, bias) || weight.rank !== 1 || bias.rank !== 1 || weight.size !== d || bias.size !== d || x.size === 0) return undefined;
  return firstOf(tf.engine().runKernel(K.layerNorm, { x, gamma: weight, beta: bias }, { eps }) as tf.Tensor[]);
}

/** GELU, tanh approximation (gelu_new / gelu_pytorch_tanh). */
export function fusedGeluTanh(x: tf.Tensor): tf.Tensor | undefined {
  if (!has(K.gelu) || !f32(x)) return undefined;
  return tf.engine().runKernel(K.gelu, { x }) as tf.Tensor;
}

/** softmax(scale · q kᵀ [+ causal mask]) v on [B, H, T, D] (same H for q, k and v). */
export function fusedAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number, causal: boolean): tf.Tensor4D | undefined {
  if (!has(K.attention) || !f32(q, k, v)) return undefined;
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (!same(q.shape, k.shape) || !same(q.shape, v.shape) || q.size === 0) return undefined;
  return firstOf(tf.engine().runKernel(K.attention, { q, k, v }, { scale, causal }) as tf.Tensor[]) as tf.Tensor4D;
}

/** The attributes of PeftAttentionQkv (+Grad), the contract every backend's kernel reads. */
export interface QkvAttrs {
  batch: number;
  seq: number;
  heads: number;
  headDim: number;
  scale: number;
  causal: boolean;
}

/**
 * Attention straight from a fused projection qkv [B·T, 3·H·D] (q, k and v side by side, heads
 * inside each, as GPT-2's c_attn) to the merged heads [B·T, H·D]: the split, the head transposes
 * and the merge are strides of one op (otherwise split + splitHeads ×3 + attention + mergeHeads).
 */
export function fusedAttentionQkv(qkv: tf.Tensor2D, batch: number, seq: number, heads: number, headDim: number, scale: number, causal: boolean): tf.Tensor2D | undefined {
  if (!has(K.attentionQkv) || qkv.dtype !== 'float32' || qkv.rank !== 2 || qkv.shape[0] !== batch * seq || qkv.shape[1] !== 3 * heads * headDim || qkv.size === 0) return undefined;
  const attrs: QkvAttrs = { batch, seq, heads, headDim, scale, causal };
  return firstOf(tf.engine().runKernel(K.attentionQkv, { qkv }, { ...attrs }) as tf.Tensor[]) as tf.Tensor2D;
}

/** x·W + bias on x [N, in] (x·Wᵀ with transposeB, W [out, in]): one op, the bias added in the
 * GEMM's last pass, instead of MatMul + Add. Same rounding as the two ops. */
export function fusedLinear(x: tf.Tensor2D, w: tf.Tensor2D, bias: tf.Tensor1D, transposeB: boolean): tf.Tensor2D | undefined {
  if (!has(K.linear) || !f32(x, w, bias) || x.rank !== 2 || w.rank !== 2 || bias.rank !== 1) return undefined;
  const [inF, outF] = transposeB ? [w.shape[1], w.shape[0]] : w.shape;
  if (x.shape[1] !== inF || bias.size !== outF) return undefined;
  return tf.engine().runKernel(K.linear, { x, w, bias }, { transposeB }) as tf.Tensor2D;
}

/** [..., T, H·D] (B·T rows) → [B, H, T, D] in one copy (reshape + transpose otherwise). */
export function fusedSplitHeads(x: tf.Tensor, batch: number, seq: number, heads: number, headDim: number): tf.Tensor4D | undefined {
  if (!has(K.splitHeads) || x.dtype !== 'float32' || x.size !== batch * seq * heads * headDim || x.size === 0) return undefined;
  return tf.engine().runKernel(K.splitHeads, { x }, { batch, seq, heads, headDim, xShape: x.shape }) as tf.Tensor4D;
}

/** [B, H, T, D] → [B·T, H·D] in one copy. */
export function fusedMergeHeads(x: tf.Tensor, batch: number, seq: number, width: number): tf.Tensor2D | undefined {
  const sh = x.shape as number[];
  if (!has(K.mergeHeads) || x.dtype !== 'float32' || sh.length !== 4 || sh[0] !== batch || sh[2] !== seq || sh[1] * sh[3] !== width || x.size === 0) return undefined;
  return tf.engine().runKernel(K.mergeHeads, { x }, { shape: [batch * seq, width], xShape: x.shape }) as tf.Tensor2D;
}

/** Mean cross-entropy of logits [N, C] against int32 labels [N], label −100 ignored. */
export function fusedCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar | undefined {
  if (!has(K.xent) || logits.dtype !== 'float32' || labels.dtype !== 'int32' || logits.shape[1] === 0) return undefined;
  return firstOf(tf.engine().runKernel(K.xent, { logits, labels }, {}) as tf.Tensor[]) as tf.Scalar;
}

export interface AdamWScalars {
  beta1: number;
  beta2: number;
  eps: number;
  lr: number;
  /** 1 − lr·weightDecay (used when hasDecay). */
  decay: number;
  hasDecay: boolean;
  c1: number;
  c2: number;
  /** The caller disposes p, m and v right after: a GPU kernel may then update them in their buffers. */
  inPlace?: boolean;
}

/** The step's varying scalars as a float32 tensor [lr, 1 − lr·weightDecay, c1, c2], shared by every
 * parameter's update: GPU kernels read them from it, so their uniforms stay the same from step to
 * step (webgpu/dispatch.ts caches uniforms and bind groups by value). CPU kernels use the attrs. */
export function adamWStepScalars(s: Pick<AdamWScalars, 'lr' | 'c1' | 'c2'>, weightDecay: number): tf.Tensor1D {
  return tf.tensor1d([s.lr, 1 - s.lr * weightDecay, s.c1, s.c2], 'float32');
}

/** One AdamW update of one parameter: [p', m', v'] (m0/v0 undefined on the first step); `scalars`
 * from adamWStepScalars for the same step. */
export function fusedAdamW(p: tf.Tensor, g: tf.Tensor, m0: tf.Tensor | undefined, v0: tf.Tensor | undefined, s: AdamWScalars, scalars?: tf.Tensor1D): [tf.Tensor, tf.Tensor, tf.Tensor] | undefined {
  if (!has(K.adamw) || !f32(p, g) || (m0 && !f32(m0)) || (v0 && !f32(v0)) || p.size !== g.size) return undefined;
  if ((m0 && m0.size !== p.size) || (v0 && v0.size !== p.size)) return undefined;
  const inputs: Record<string, tf.Tensor> = { p, g };
  if (m0) inputs.m = m0;
  if (v0) inputs.v = v0;
  if (scalars) inputs.scalars = scalars;
  return tf.engine().runKernel(K.adamw, inputs, { ...s }) as [tf.Tensor, tf.Tensor, tf.Tensor];
}
