/**
 * Registers the native kernels on TF.js's WebAssembly backend. They compute directly on the wasm
 * heap (the WebAssembly.Memory ArrayBuffer): inputs are read at their `memoryOffset`, outputs are
 * allocated first with the backend's own `makeOutput` (which may grow the heap and so detach the
 * old ArrayBuffer, hence the heap is fetched after the last allocation, on every call).
 *
 * Replaced wasm kernels (each falls back to the kernel it replaced for what it does not cover):
 *   BatchMatMul, _FusedMatMul   blocked AVX2/FMA GEMM, transposes and batch broadcasting by
 *                               strides and packing (no Transpose runs, no per-batch views)
 *   Sum                         reductions over leading or trailing axes (bias gradients)
 *   Add, Sub, Multiply          float32 with a full, trailing-block (bias) or scalar operand
 *   Transpose, Slice, SplitV,   strided copies (memcpy runs along the innermost contiguous axis)
 *   Concat
 * Fused training kernels (names in fused.ts, used by ops.ts, forward.ts and adamw.ts when registered):
 *   PeftLayerNorm (+GradX, +GradGamma), PeftGeluTanh (+Grad), PeftAttention (+Grad, causal or
 *   not, recomputing P from the saved log-sum-exp), PeftAttentionQkv (+Grad: the same on a fused
 *   qkv projection, heads split and merged by strides), PeftLinear (GEMM + bias),
 *   PeftSoftmaxCrossEntropy (+Grad), PeftAdamW.
 * Their gradients are registered with tf.registerGradient; each input's gradient is a separate
 * closure, so the tape skips what frozen weights do not need (e.g. LayerNorm γ/β under LoRA).
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import type { NativeAddon } from './addon';
import { K, type QkvAttrs } from './fused';
import { broadcastBatchIndices, planMatMul, splitBySlices } from '../wasm-kernels';

type TensorInfo = tf.TensorInfo;
type KernelFunc = tf.KernelFunc;
type KernelArgs = Parameters<KernelFunc>[0];

interface WasmBackend {
  wasm: { HEAPU8: Uint8Array };
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}

const BACKEND = 'wasm';
const NATIVE_MARK = Symbol.for('peft-lab.native-kernel');
type Marked = KernelFunc & { [NATIVE_MARK]?: true };

let addon: NativeAddon | undefined;

const asWasm = (b: unknown) => b as WasmBackend;
const heapOf = (b: WasmBackend): ArrayBuffer => b.wasm.HEAPU8.buffer as ArrayBuffer;
const off = (b: WasmBackend, t: TensorInfo): number => b.dataIdMap.get(t.dataId).memoryOffset;
const size = (shape: number[]) => tf.util.sizeFromShape(shape);

/** Registers the native kernels (idempotent). `native` is the loaded addon. */
export function registerNativeKernels(native: NativeAddon): void {
  addon = native;
  replaceKernel(tf.BatchMatMul, makeBatchMatMul);
  replaceKernel(tf._FusedMatMul, makeFusedMatMul);
  replaceKernel(tf.Sum, makeSum);
  replaceKernel(tf.Add, (prev) => makeBinary(prev, 0));
  replaceKernel(tf.Sub, (prev) => makeBinary(prev, 1));
  replaceKernel(tf.Multiply, (prev) => makeBinary(prev, 2));
  replaceKernel(tf.Transpose, makeTranspose);
  replaceKernel(tf.Slice, makeSlice);
  replaceKernel(tf.SplitV, makeSplitV);
  replaceKernel(tf.Concat, makeConcat);
  const own: [string, KernelFunc][] = [
    [K.layerNorm, layerNorm],
    [K.layerNormGradX, layerNormGradX],
    [K.layerNormGradGamma, layerNormGradGamma],
    [K.gelu, gelu],
    [K.geluGrad, geluGrad],
    [K.attention, attention],
    [K.attentionGrad, attentionGrad],
    [K.xent, xent],
    [K.xentGrad, xentGrad],
    [K.adamw, adamw],
    [K.splitHeads, splitHeads],
    [K.mergeHeads, mergeHeads],
    [K.linear, linear],
    [K.attentionQkv, attentionQkv],
    [K.attentionQkvGrad, attentionQkvGrad],
  ];
  for (const [kernelName, kernelFunc] of own) if (!tf.getKernel(kernelName, BACKEND)) tf.registerKernel({ kernelName, backendName: BACKEND, kernelFunc });
  registerFusedGradients();
}

/** Whether the native kernels are registered on the wasm backend. */
export function nativeKernelsRegistered(): boolean {
  return !!tf.getKernel(K.layerNorm, BACKEND);
}

function native(): NativeAddon {
  if (!addon) throw new Error('native kernels used before registerNativeKernels()');
  return addon;
}

function replaceKernel(name: string, make: (previous: KernelFunc) => KernelFunc): void {
  const previous = tf.getKernel(name, BACKEND);
  if (!previous) throw new Error(`wasm kernel '${name}' is not registered`);
  if ((previous.kernelFunc as Marked)[NATIVE_MARK]) return;
  tf.unregisterKernel(name, BACKEND);
  const f = make(previous.kernelFunc) as Marked;
  f[NATIVE_MARK] = true;
  // The setupFunc binds the wasm entry points the previous kernel (our fallback) calls.
  tf.registerKernel({ ...previous, kernelFunc: f });
}

// ---- matmul --------------------------------------------------------------------------------------

/** out = op(a) op(b) (+ bias[N]) into a fresh tensor. */
function matmul(backend: WasmBackend, a: TensorInfo, b: TensorInfo, ta: boolean, tb: boolean, bias?: TensorInfo): TensorInfo {
  const p = planMatMul(a, b, ta, tb, 'matMul');
  const { M, K: Kd, N } = p;
  const out = backend.makeOutput(p.outShape, 'float32');
  if (size(p.outShape) === 0) return out;
  const heap = heapOf(backend);
  const nat = native();
  const aOff = off(backend, a);
  const bOff = off(backend, b);
  const cOff = off(backend, out);
  const biasOff = bias ? off(backend, bias) : -1;
  // Strides of op(a) [M, K] and op(b) [K, N] in their stored layouts.
  const rsA = ta ? 1 : Kd;
  const csA = ta ? M : 1;
  const rsB = tb ? 1 : N;
  const csB = tb ? Kd : 1;
  const sizeA = size(p.batchA);
  const sizeB = size(p.batchB);
  const n = size(p.outBatch);
  const mk = M * Kd * 4;
  const kn = Kd * N * 4;
  const mn = M * N * 4;
  if (sizeB === 1 && !ta) {
    // a's batch folds into its rows: one [n·M, K] x [K, N] product.
    nat.gemm(heap, 1, n * M, N, Kd, aOff, rsA, csA, 0, bOff, rsB, csB, 0, cOff, N, 0, 1, 0, biasOff);
  } else if ((sizeA === n || sizeA === 1) && (sizeB === n || sizeB === 1)) {
    nat.gemm(heap, n, M, N, Kd, aOff, rsA, csA, sizeA === 1 ? 0 : M * Kd, bOff, rsB, csB, sizeB === 1 ? 0 : Kd * N, cOff, N, M * N, 1, 0, biasOff);
  } else {
    const { aIdx: ai, bIdx: bi } = broadcastBatchIndices(p.batchA, p.batchB, p.outBatch);
    for (let i = 0; i < n; i++) nat.gemm(heap, 1, M, N, Kd, aOff + ai[i] * mk, rsA, csA, 0, bOff + bi[i] * kn, rsB, csB, 0, cOff + i * mn, N, 0, 1, 0, biasOff);
  }
  return out;
}

function makeBatchMatMul(previous: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return previous(args);
    return matmul(asWasm(args.backend), a, b, !!args.attrs?.transposeA, !!args.attrs?.transposeB);
  };
}

function makeFusedMatMul(previous: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { a, b, bias, preluActivationWeights } = args.inputs as { a: TensorInfo; b: TensorInfo; bias?: TensorInfo; preluActivationWeights?: TensorInfo };
    const attrs = args.attrs ?? {};
    const activation = (attrs.activation as string | undefined) ?? 'linear';
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return previous(args);
    if (activation !== 'linear' || preluActivationWeights) return previous(args);
    const ta = !!attrs.transposeA;
    const tb = !!attrs.transposeB;
    const N = tb ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
    if (bias && (bias.dtype !== 'float32' || bias.shape.length !== 1 || bias.shape[0] !== N)) return previous(args);
    return matmul(asWasm(args.backend), a, b, ta, tb, bias);
  };
}

/** PeftLinear: x [N, in] · w (wᵀ with transposeB) + bias [out]. */
function linear(args: KernelArgs): TensorInfo {
  const { x, w, bias } = args.inputs as { x: TensorInfo; w: TensorInfo; bias: TensorInfo };
  return matmul(asWasm(args.backend), x, w, false, !!args.attrs?.transposeB, bias);
}

// ---- Add / Sub / Multiply ------------------------------------------------------------------------

/** Whether `shape` broadcasts to `out` as a trailing block (a suffix of out's shape after leading 1s). */
function trailingBlock(shape: number[], out: number[]): boolean {
  const pad = out.length - shape.length;
  let i = 0;
  while (i < shape.length && shape[i] === 1 && out[pad + i] !== 1) i++;
  for (; i < shape.length; i++) if (shape[i] !== out[pad + i]) return false;
  return true;
}

function makeBinary(previous: KernelFunc, op: 0 | 1 | 2): KernelFunc {
  return (args: KernelArgs) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return previous(args);
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const n = size(outShape);
    const na = size(a.shape);
    const nb = size(b.shape);
    if (n === 0 || !trailingBlock(a.shape, outShape) || !trailingBlock(b.shape, outShape) || (na !== n && nb !== n && na !== 1 && nb !== 1)) return previous(args);
    const backend = asWasm(args.backend);
    const out = backend.makeOutput(outShape, 'float32');
    native().binary(heapOf(backend), op, n, off(backend, a), na, off(backend, b), nb, off(backend, out));
    return out;
  };
}

// ---- strided copies ------------------------------------------------------------------------------

const is4Bytes = (dtype: tf.DataType) => dtype === 'float32' || dtype === 'int32';

/** Copies the index space `dims` from src (element offset + strides) to dst (element offset + strides). */
function copy(backend: WasmBackend, src: TensorInfo, srcOff: number, srcStrides: number[], dst: TensorInfo, dstOff: number, dstStrides: number[], dims: number[]): void {
  // Drop unit axes and merge axes that are contiguous on both sides.
  const d: number[] = [];
  const ss: number[] = [];
  const ds: number[] = [];
  for (let i = 0; i < dims.length; i++) {
    if (dims[i] === 1) continue;
    const n = d.length;
    if (n && ss[n - 1] === srcStrides[i] * dims[i] && ds[n - 1] === dstStrides[i] * dims[i]) {
      d[n - 1] *= dims[i];
      ss[n - 1] = srcStrides[i];
      ds[n - 1] = dstStrides[i];
    } else {
      d.push(dims[i]);
      ss.push(srcStrides[i]);
      ds.push(dstStrides[i]);
    }
  }
  if (d.length > 8) throw new Error(`strided copy of rank ${d.length}`);
  if (d.length === 0) {
    d.push(1);
    ss.push(1);
    ds.push(1);
  }
  native().copy(heapOf(backend), off(backend, src) + 4 * srcOff, size(src.shape) - srcOff, off(backend, dst) + 4 * dstOff, size(dst.shape) - dstOff, d.length, ...d, ...ss, ...ds);
}

const stridesOf = (shape: number[]): number[] => [...tf.util.computeStrides(shape), 1].slice(-Math.max(shape.length, 1)).slice(0, shape.length);

function makeTranspose(previous: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x } = args.inputs as { x: TensorInfo };
    const perm = args.attrs?.perm as number[];
    if (!is4Bytes(x.dtype) || x.shape.length > 8) return previous(args);
    const backend = asWasm(args.backend);
    const outShape = perm.map((p) => x.shape[p]);
    const out = backend.makeOutput(outShape, x.dtype);
    if (size(outShape) === 0) return out;
    const xs = stridesOf(x.shape);
    copy(backend, x, 0, perm.map((p) => xs[p]), out, 0, stridesOf(outShape), outShape);
    return out;
  };
}

function sliceOf(backend: WasmBackend, x: TensorInfo, begin: number[], sz: number[]): TensorInfo {
  const out = backend.makeOutput(sz, x.dtype);
  if (size(sz) === 0) return out;
  const xs = stridesOf(x.shape);
  copy(backend, x, begin.reduce((a, b, i) => a + b * xs[i], 0), xs, out, 0, stridesOf(sz), sz);
  return out;
}

function makeSlice(previous: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (!is4Bytes(x.dtype) || x.shape.length > 8) return previous(args);
    const [begin, sz] = tf.slice_util.parseSliceParams(x, args.attrs?.begin as number[], args.attrs?.size as number[]);
    return sliceOf(asWasm(args.backend), x, begin, sz);
  };
}

function makeSplitV(previous: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (!is4Bytes(x.dtype) || x.shape.length > 8) return previous(args);
    return splitBySlices(args, x, (begin, sz) => sliceOf(asWasm(args.backend), x, begin, sz));
  };
}

function makeConcat(previous: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const inputs = args.inputs as unknown as TensorInfo[];
    if (inputs.length < 2 || !inputs.every((t) => is4Bytes(t.dtype) && t.dtype === inputs[0].dtype) || inputs[0].shape.length > 8) return previous(args);
    const axis = tf.util.parseAxisParam(args.attrs?.axis as number, inputs[0].shape)[0];
    tf.backend_util.assertParamsConsistent(inputs.map((t) => t.shape), axis);
    const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), axis);
    const backend = asWasm(args.backend);
    const out = backend.makeOutput(outShape, inputs[0].dtype);
    if (size(outShape) === 0) return out;
    const os = stridesOf(outShape);
    let at = 0;
    for (const t of inputs) {
      if (size(t.shape) > 0) copy(backend, t, 0, stridesOf(t.shape), out, at * os[axis], os, t.shape);
      at += t.shape[axis];
    }
    return out;
  };
}

// ---- Sum -----------------------------------------------------------------------------------------

function makeSum(previous: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (x.dtype !== 'float32' || x.shape.length === 0) return previous(args);
    const rank = x.shape.length;
    const axes = [...new Set(tf.util.parseAxisParam(args.attrs?.axis as number | number[], x.shape))].sort((p, q) => p - q);
    if (axes.length === 0) return previous(args);
    const leading = axes.every((ax, i) => ax === i);
    const trailing = axes.every((ax, i) => ax === rank - axes.length + i);
    if (!leading && !trailing) return previous(args);
    const keepDims = !!args.attrs?.keepDims;
    const outShape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    const backend = asWasm(args.backend);
    const out = backend.makeOutput(outShape, 'float32');
    const split = leading ? axes.length : rank - axes.length;
    const rows = size(x.shape.slice(0, split));
    const cols = size(x.shape.slice(split));
    if (size(outShape) > 0) native().sum(heapOf(backend), rows, cols, off(backend, x), off(backend, out), leading ? 1 : 0);
    return out;
  };
}

// ---- fused training kernels ----------------------------------------------------------------------

function layerNorm(args: KernelArgs): TensorInfo[] {
  const backend = asWasm(args.backend);
  const { x, gamma, beta } = args.inputs as { x: TensorInfo; gamma: TensorInfo; beta: TensorInfo };
  const d = x.shape[x.shape.length - 1];
  const n = size(x.shape) / d;
  const y = backend.makeOutput(x.shape, 'float32');
  const mean = backend.makeOutput([n], 'float32');
  const rstd = backend.makeOutput([n], 'float32');
  native().layerNorm(heapOf(backend), n, d, Number(args.attrs?.eps), off(backend, x), off(backend, gamma), off(backend, beta), off(backend, y), off(backend, mean), off(backend, rstd));
  return [y, mean, rstd];
}

function layerNormGradX(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { dy, x, gamma, mean, rstd } = args.inputs as Record<string, TensorInfo>;
  const d = x.shape[x.shape.length - 1];
  const n = size(x.shape) / d;
  const dx = backend.makeOutput(x.shape, 'float32');
  native().layerNormGradX(heapOf(backend), n, d, off(backend, dy), off(backend, x), off(backend, gamma), off(backend, mean), off(backend, rstd), off(backend, dx));
  return dx;
}

function layerNormGradGamma(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { dy, x, mean, rstd } = args.inputs as Record<string, TensorInfo>;
  const d = x.shape[x.shape.length - 1];
  const n = size(x.shape) / d;
  const dg = backend.makeOutput([d], 'float32');
  native().layerNormGradGamma(heapOf(backend), n, d, off(backend, dy), off(backend, x), off(backend, mean), off(backend, rstd), off(backend, dg));
  return dg;
}

function gelu(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { x } = args.inputs as { x: TensorInfo };
  const y = backend.makeOutput(x.shape, 'float32');
  native().gelu(heapOf(backend), size(x.shape), off(backend, x), off(backend, y));
  return y;
}

function geluGrad(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { dy, x } = args.inputs as { dy: TensorInfo; x: TensorInfo };
  const dx = backend.makeOutput(x.shape, 'float32');
  native().geluGrad(heapOf(backend), size(x.shape), off(backend, dy), off(backend, x), off(backend, dx));
  return dx;
}

function attentionDims(q: TensorInfo): [number, number, number] {
  const [b, h, t, d] = q.shape;
  return [b * h, t, d];
}

function attention(args: KernelArgs): TensorInfo[] {
  const backend = asWasm(args.backend);
  const { q, k, v } = args.inputs as { q: TensorInfo; k: TensorInfo; v: TensorInfo };
  const [bh, t, d] = attentionDims(q);
  const o = backend.makeOutput(q.shape, 'float32');
  const lse = backend.makeOutput([bh, t], 'float32');
  native().attnFwd(heapOf(backend), bh, t, d, Number(args.attrs?.scale), args.attrs?.causal ? 1 : 0, off(backend, q), off(backend, k), off(backend, v), off(backend, o), off(backend, lse));
  return [o, lse];
}

function attentionGrad(args: KernelArgs): TensorInfo[] {
  const backend = asWasm(args.backend);
  const { q, k, v, o, lse, dy } = args.inputs as Record<string, TensorInfo>;
  const [bh, t, d] = attentionDims(q);
  const dq = backend.makeOutput(q.shape, 'float32');
  const dk = backend.makeOutput(q.shape, 'float32');
  const dv = backend.makeOutput(q.shape, 'float32');
  native().attnBwd(
    heapOf(backend),
    bh,
    t,
    d,
    Number(args.attrs?.scale),
    args.attrs?.causal ? 1 : 0,
    off(backend, q),
    off(backend, k),
    off(backend, v),
    off(backend, o),
    off(backend, lse),
    off(backend, dy),
    off(backend, dq),
    off(backend, dk),
    off(backend, dv),
  );
  return [dq, dk, dv];
}

function xent(args: KernelArgs): TensorInfo[] {
  const backend = asWasm(args.backend);
  const { logits, labels } = args.inputs as { logits: TensorInfo; labels: TensorInfo };
  const [n, c] = logits.shape;
  const loss = backend.makeOutput([], 'float32');
  const lse = backend.makeOutput([n], 'float32');
  native().xent(heapOf(backend), n, c, off(backend, logits), off(backend, labels), off(backend, lse), off(backend, loss));
  return [loss, lse];
}

function xentGrad(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { logits, labels, lse, dy } = args.inputs as Record<string, TensorInfo>;
  const [n, c] = logits.shape;
  const dx = backend.makeOutput(logits.shape, 'float32');
  native().xentGrad(heapOf(backend), n, c, off(backend, logits), off(backend, labels), off(backend, lse), off(backend, dy), off(backend, dx));
  return dx;
}

function adamw(args: KernelArgs): TensorInfo[] {
  const backend = asWasm(args.backend);
  const { p, g, m, v } = args.inputs as { p: TensorInfo; g: TensorInfo; m?: TensorInfo; v?: TensorInfo };
  const a = args.attrs as unknown as { beta1: number; beta2: number; eps: number; lr: number; decay: number; hasDecay: boolean; c1: number; c2: number };
  const pOut = backend.makeOutput(p.shape, 'float32');
  const mOut = backend.makeOutput(p.shape, 'float32');
  const vOut = backend.makeOutput(p.shape, 'float32');
  // 1 − β is rounded from the double, as tf.mul(g, 1 − beta1) does.
  native().adamw(
    heapOf(backend),
    size(p.shape),
    off(backend, p),
    off(backend, g),
    m ? off(backend, m) : -1,
    v ? off(backend, v) : -1,
    off(backend, pOut),
    off(backend, mOut),
    off(backend, vOut),
    a.beta1,
    1 - a.beta1,
    a.beta2,
    1 - a.beta2,
    a.decay,
    a.c1,
    a.c2,
    a.eps,
    a.lr,
    a.hasDecay ? 1 : 0,
  );
  return [pOut, mOut, vOut];
}

/** The layout of PeftAttentionQkv: byte offsets of q, k, v in a [B·T, 3·H·D] tensor and the strides. */
function qkvLayout(backend: WasmBackend, qkv: TensorInfo, a: QkvAttrs) {
  const w = a.heads * a.headDim;
  const base = off(backend, qkv);
  return { bh: a.batch * a.heads, q: base, k: base + 4 * w, v: base + 8 * w, layout: [a.heads, 3 * w, w] as [number, number, number] };
}

/** qkv [B·T, 3·H·D] → o [B·T, H·D] (heads merged), lse [B·H, T]. */
function attentionQkv(args: KernelArgs): TensorInfo[] {
  const backend = asWasm(args.backend);
  const { qkv } = args.inputs as { qkv: TensorInfo };
  const a = args.attrs as unknown as QkvAttrs;
  const o = backend.makeOutput([a.batch * a.seq, a.heads * a.headDim], 'float32');
  const lse = backend.makeOutput([a.batch * a.heads, a.seq], 'float32');
  const l = qkvLayout(backend, qkv, a);
  native().attnFwd(heapOf(backend), l.bh, a.seq, a.headDim, Number(a.scale), a.causal ? 1 : 0, l.q, l.k, l.v, off(backend, o), off(backend, lse), ...l.layout);
  return [o, lse];
}

/** d qkv [B·T, 3·H·D] from qkv, o, lse and dy = d o. */
function attentionQkvGrad(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { qkv, o, lse, dy } = args.inputs as Record<string, TensorInfo>;
  const a = args.attrs as unknown as QkvAttrs;
  const dqkv = backend.makeOutput(qkv.shape, 'float32');
  const l = qkvLayout(backend, qkv, a);
  const d = qkvLayout(backend, dqkv, a);
  native().attnBwd(heapOf(backend), l.bh, a.seq, a.headDim, Number(a.scale), a.causal ? 1 : 0, l.q, l.k, l.v, off(backend, o), off(backend, lse), off(backend, dy), d.q, d.k, d.v, ...l.layout);
  return dqkv;
}

/** [B·T, H·D] (any shape of that size) → [B, H, T, D]. */
function splitHeads(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { x } = args.inputs as { x: TensorInfo };
  const { batch, seq, heads, headDim } = args.attrs as unknown as { batch: number; seq: number; heads: number; headDim: number };
  const out = backend.makeOutput([batch, heads, seq, headDim], 'float32');
  // out[b, h, t, d] = x[b, t, h, d]
  copy(backend, x, 0, [seq * heads * headDim, headDim, heads * headDim, 1], out, 0, [heads * seq * headDim, seq * headDim, headDim, 1], [batch, heads, seq, headDim]);
  return out;
}

/** [B, H, T, D] → `shape` (B·T rows of H·D). */
function mergeHeads(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { x } = args.inputs as { x: TensorInfo };
  const [batch, heads, seq, headDim] = x.shape;
  const out = backend.makeOutput(args.attrs?.shape as number[], 'float32');
  // out[b, t, h, d] = x[b, h, t, d]
  copy(backend, x, 0, [heads * seq * headDim, headDim, seq * headDim, 1], out, 0, [seq * heads * headDim, heads * headDim, headDim, 1], [batch, seq, heads, headDim]);
  return out;
}

// ---- gradients -----------------------------------------------------------------------------------

const run = (name: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap = {}) => tf.engine().runKernel(name, inputs, attrs) as tf.Tensor;
const first = (dy: tf.Tensor | tf.Tensor[]): tf.Tensor => (Array.isArray(dy) ? dy[0] : dy);

/** The gradients of the fused kernels (fused.ts), for every backend that registers them. */
export function registerFusedGradients(): void {
  if (tf.getGradient(K.layerNorm)) return;
  tf.registerGradient({
    kernelName: K.layerNorm,
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [false, true, true],
    gradFunc: (dys, saved) => {
      const dy = first(dys);
      const [x, gamma, mean, rstd] = saved;
      const lead = [...Array(x.rank - 1).keys()];
      return {
        x: () => run(K.layerNormGradX, { dy, x, gamma, mean, rstd }),
        gamma: () => run(K.layerNormGradGamma, { dy, x, mean, rstd }),
        beta: () => (lead.length ? tf.sum(dy, lead) : dy),
      };
    },
  });
  tf.registerGradient({
    kernelName: K.splitHeads,
    // Shapes travel as attributes: nothing is saved (no clone, no tape node for it).
    gradFunc: (dy, _saved, attrs) => {
      const xShape = (attrs as unknown as { xShape: number[] }).xShape;
      return { x: () => run(K.mergeHeads, { x: first(dy) }, { shape: xShape, xShape: first(dy).shape }) };
    },
  });
  tf.registerGradient({
    kernelName: K.mergeHeads,
    gradFunc: (dy, _saved, attrs) => {
      const d = first(dy);
      const [batch, heads, seq, headDim] = (attrs as unknown as { xShape: number[] }).xShape;
      return { x: () => run(K.splitHeads, { x: d }, { batch, seq, heads, headDim, xShape: d.shape }) };
    },
  });
  tf.registerGradient({
    kernelName: K.attentionQkv,
    inputsToSave: ['qkv'],
    outputsToSave: [true, true],
    gradFunc: (dys, saved, attrs) => {
      const [qkv, o, lse] = saved;
      return { qkv: () => run(K.attentionQkvGrad, { qkv, o, lse, dy: first(dys) }, attrs as tf.NamedAttrMap) };
    },
  });
  tf.registerGradient({
    kernelName: K.linear,
    inputsToSave: ['x', 'w'],
    // The products BatchMatMul's gradient runs and the reduction Add's runs for the bias: same numbers
    // as matMul + add. Each input's gradient is its own closure: a frozen weight gets none.
    gradFunc: (dys, saved, attrs) => {
      const dy = first(dys);
      const [x, w] = saved;
      const tb = !!(attrs as { transposeB?: boolean }).transposeB;
      return {
        x: () => tf.matMul(dy, w, false, !tb),
        w: () => (tb ? tf.matMul(dy, x, true, false) : tf.matMul(x, dy, true, false)),
        bias: () => tf.sum(dy, 0),
      };
    },
  });
  tf.registerGradient({
    kernelName: K.gelu,
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => run(K.geluGrad, { dy: first(dy), x: saved[0] }) }),
  });
  tf.registerGradient({
    kernelName: K.attention,
    inputsToSave: ['q', 'k', 'v'],
    outputsToSave: [true, true],
    gradFunc: (dys, saved, attrs) => {
      // q, k and v share one backward pass: run it once, here (inside the engine's backward tidy),
      // and hand the three results out.
      const [q, k, v, o, lse] = saved;
      const [dq, dk, dv] = tf.engine().runKernel(K.attentionGrad, { q, k, v, o, lse, dy: first(dys) }, attrs as tf.NamedAttrMap) as tf.Tensor[];
      return { q: () => dq, k: () => dk, v: () => dv };
    },
  });
  tf.registerGradient({
    kernelName: K.xent,
    inputsToSave: ['logits', 'labels'],
    outputsToSave: [false, true],
    gradFunc: (dys, saved) => {
      const [logits, labels, lse] = saved;
      return {
        logits: () => run(K.xentGrad, { logits, labels, lse, dy: first(dys) }),
        labels: () => tf.zerosLike(labels),
      };
    },
  });
}
