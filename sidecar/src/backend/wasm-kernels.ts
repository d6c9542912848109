/**
 * Kernel fixes for TF.js's WebAssembly backend (4.22), registered by `registerWasmKernelFixes()`:
 *
 * - `UnsortedSegmentSum` is missing on wasm, and it is the gradient of `tf.gather`, so every
 *   embedding backward pass fails without it. Implemented here in JS over the wasm heap.
 * - `BatchMatMul` / `_FusedMatMul`: only 2-D, non-transposed matmuls take XNNPACK's fast path
 *   (20–30 GFLOP/s on one core); transposed (every backward matmul) or batched (attention) ones run
 *   a naive loop at 1–2.4 GFLOP/s. The wrappers make transposes explicit `Transpose` kernel runs and
 *   turn batched matmuls into 2-D ones: folded into one big matmul when the right-hand side has no
 *   batch ([B,M,K]x[K,N] → [B*M,K]x[K,N]), otherwise one XNNPACK matmul per output batch, reading
 *   the inputs through zero-copy views and writing straight into the output tensor.
 *   (The wrapped `_FusedMatMul` also sidesteps a slow-path bug in 4.22, which adds bias[N-1]
 *   instead of bias[j] to every row but the first of a transposed or batched fused matmul.)
 *
 * - `Slice`/`SplitV` copy only the slice (the originals copy the whole input per slice), `GatherV2`
 *   on axis 0 copies rows.
 * - `Identity` and same-dtype `Cast` share the input's data instead of copying it (the engine clones
 *   every tensor it saves for the backward pass).
 *
 * No other kernel that a transformer forward + backward built from tfjs-core ops needs is missing
 * on wasm (logSoftmax is composed in tfjs-core; where → Select; gelu is built from erf/tanh; the
 * engine sums gradients with AddN). Still missing, but outside this project's op set:
 * Conv2DBackpropFilter, DepthwiseConv2dNativeBackprop*, Einsum, FFT family, Ragged*.
 *
 * This reaches into the wasm backend's internals (`dataIdMap`, `makeOutput` with a memory offset,
 * the `BatchMatMul` C entry point), which are pinned by the exact @tensorflow/tfjs-backend-wasm
 * version in package.json; the unit tests compare every path with the cpu backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm'; // registers the wasm backend and the kernels wrapped below

type DataId = object;
type TensorInfo = tf.TensorInfo;
type KernelFunc = tf.KernelFunc;
type KernelArgs = Parameters<KernelFunc>[0];

/** The parts of tfjs-backend-wasm's `BackendWasm` that these kernels use. */
interface WasmBackend {
  wasm: {
    cwrap(name: string, returnType: null, argTypes: string[]): (...args: unknown[]) => void;
    tfjs: { disposeData(id: number): void };
  };
  dataIdMap: {
    get(dataId: DataId): { id: number; memoryOffset: number; shape: number[]; dtype: tf.DataType; refCount: number };
    has(dataId: DataId): boolean;
    delete(dataId: DataId): boolean;
  };
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: DataId, force?: boolean): boolean;
}

const BACKEND = 'wasm';
/** Marks kernel functions installed here, so a second registration (even from another copy of
 * this module, e.g. a bundle and a test) is a no-op. */
const FIX_MARK = Symbol.for('peft-lab.wasm-kernel-fix');

type Marked = KernelFunc & { [FIX_MARK]?: true };
const mark = (f: KernelFunc): KernelFunc => Object.assign(f, { [FIX_MARK]: true as const });
const isMarked = (config: tf.KernelConfig | undefined): boolean => !!config && !!(config.kernelFunc as Marked)[FIX_MARK];

/** Registers the fixes on the wasm backend. Idempotent; safe before or after `setBackend('wasm')`. */
export function registerWasmKernelFixes(): void {
  registerUnsortedSegmentSum();
  wrapKernel(tf.BatchMatMul, makeBatchMatMul);
  wrapKernel(tf._FusedMatMul, makeFusedMatMul);
  wrapKernel(tf.Identity, makeShareData);
  wrapKernel(tf.Cast, makeShareData);
  wrapKernel(tf.Slice, makeSlice);
  wrapKernel(tf.SplitV, makeSplitV);
  wrapKernel(tf.GatherV2, makeGather);
}

function wrapKernel(name: string, make: (original: KernelFunc) => KernelFunc): void {
  const original = tf.getKernel(name, BACKEND);
  if (!original) throw new Error(`wasm kernel '${name}' is not registered: is @tensorflow/tfjs-backend-wasm loaded?`);
  if (isMarked(original)) return;
  tf.unregisterKernel(name, BACKEND);
  // Keep the original setupFunc: it binds the C entry point the original kernel calls, and the
  // engine runs it on every setBackend('wasm').
  tf.registerKernel({ ...original, kernelFunc: mark(make(original.kernelFunc)) });
}

// ---- helpers over the wasm heap -----------------------------------------------------------------

const asWasm = (backend: unknown): WasmBackend => backend as WasmBackend;
const shapeBytes = (shape: number[]): Uint8Array => new Uint8Array(new Int32Array(shape).buffer);
const dataOf = (backend: WasmBackend, t: TensorInfo) => backend.dataIdMap.get(t.dataId);

/** A tensor over `size` float32s of existing wasm memory at `memoryOffset` (no copy, no malloc). */
function makeView(backend: WasmBackend, memoryOffset: number, shape: number[]): TensorInfo {
  return backend.makeOutput(shape, 'float32', memoryOffset);
}
/** Forgets a view made by `makeView` without freeing the memory it points into (which
 * `disposeData` would do). Also drops any XNNPACK operator cached on the view's id. */
function releaseView(backend: WasmBackend, view: TensorInfo): void {
  if (!backend.dataIdMap.has(view.dataId)) return;
  backend.wasm.tfjs.disposeData(backend.dataIdMap.get(view.dataId).id);
  backend.dataIdMap.delete(view.dataId);
}

/** Runs the wasm `Transpose` kernel to swap the last two axes; the caller disposes the result. */
function transposeLast2(backend: WasmBackend, x: TensorInfo): TensorInfo {
  const transpose = tf.getKernel(tf.Transpose, BACKEND);
  if (!transpose) throw new Error("wasm kernel 'Transpose' is not registered");
  const r = x.shape.length;
  const perm = [...Array(r - 2).keys(), r - 1, r - 2];
  return transpose.kernelFunc({ inputs: { x }, backend, attrs: { perm } }) as TensorInfo;
}

/** For each output batch (row-major over the broadcast batch shape), the batch index into a and b. */
export function broadcastBatchIndices(batchA: number[], batchB: number[], outBatch: number[]): { aIdx: Int32Array; bIdx: Int32Array } {
  const r = outBatch.length;
  const padA = [...Array(r - batchA.length).fill(1), ...batchA];
  const padB = [...Array(r - batchB.length).fill(1), ...batchB];
  const n = tf.util.sizeFromShape(outBatch);
  const aIdx = new Int32Array(n);
  const bIdx = new Int32Array(n);
  const coord = new Array<number>(r).fill(0);
  for (let i = 0; i < n; i++) {
    let ai = 0;
    let bi = 0;
    for (let d = 0; d < r; d++) {
      ai = ai * padA[d] + (padA[d] === 1 ? 0 : coord[d]);
      bi = bi * padB[d] + (padB[d] === 1 ? 0 : coord[d]);
    }
    aIdx[i] = ai;
    bIdx[i] = bi;
    for (let d = r - 1; d >= 0; d--) {
      if (++coord[d] < outBatch[d]) break;
      coord[d] = 0;
    }
  }
  return { aIdx, bIdx };
}

export interface MatMulPlan {
  M: number;
  K: number;
  N: number;
  batchA: number[];
  batchB: number[];
  outBatch: number[];
  outShape: number[];
}

/** Shapes of op(a)·op(b) with broadcast batch dimensions (TF.js's checks and messages). */
export function planMatMul(a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean, what: string): MatMulPlan {
  const ra = a.shape.length;
  const rb = b.shape.length;
  const M = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const K = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const Kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  tf.util.assert(
    K === Kb,
    () =>
      `Error in ${what}: inner shapes (${K}) and (${Kb}) of Tensors with shapes ${a.shape} and ${b.shape} ` +
      `and transposeA=${transposeA} and transposeB=${transposeB} must match.`,
  );
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const outBatch = tf.backend_util.assertAndGetBroadcastShape(batchA, batchB);
  return { M, K, N, batchA, batchB, outBatch, outShape: [...outBatch, M, N] };
}

/**
 * Whether the XNNPACK route pays off. It costs a fixed ~10–20 µs per 2-D matmul (an XNNPACK
 * operator is created, and b packed, for every distinct b) plus any explicit transposes, while the
 * original's loop runs at ~1 GMAC/s: so small products (decoding with M = 1, matrix-vector, N = 1)
 * stay on the original. Measured break-even on one core: ~8–16 K multiply-adds per 2-D matmul.
 */
const MIN_MACS_PER_MATMUL = 16384;
const MIN_ROWS = 4;
function worthIt(plan: MatMulPlan, sizeA: number, sizeB: number): boolean {
  const rows = sizeB === 1 ? sizeA * plan.M : plan.M; // rows of each 2-D matmul we would run
  return rows >= MIN_ROWS && rows * plan.K * plan.N >= MIN_MACS_PER_MATMUL;
}
/** The original kernels compute max(batchA, batchB) batches, which is wrong for two-way
 * broadcasts such as [2,1,..] x [1,3,..] (as is the cpu backend); only trust them when one side has
 * no batch or both have the same. */
function brokenBroadcast(sizeA: number, sizeB: number, plan: MatMulPlan): boolean {
  const n = tf.util.sizeFromShape(plan.outBatch);
  return !(sizeA === 1 || sizeB === 1 || (sizeA === n && sizeB === n));
}

/**
 * out[i] = mm(a[aIdx[i]], b[bIdx[i]]) for each output batch i, where `mm(aView, bView, outView)`
 * runs one 2-D non-transposed matmul on views ([1,M,K], [1,K,N], [1,M,N]) of a, b and out.
 * b views are kept for the whole loop so XNNPACK's packed weights are reused across broadcast batches.
 */
function perBatch(
  backend: WasmBackend,
  a: TensorInfo,
  b: TensorInfo,
  out: TensorInfo,
  plan: MatMulPlan,
  mm: (aView: TensorInfo, bView: TensorInfo, outView: TensorInfo) => void,
): void {
  const { M, K, N, batchA, batchB, outBatch } = plan;
  const { aIdx, bIdx } = broadcastBatchIndices(batchA, batchB, outBatch);
  const aBase = dataOf(backend, a).memoryOffset;
  const bBase = dataOf(backend, b).memoryOffset;
  const outBase = dataOf(backend, out).memoryOffset;
  const views: TensorInfo[] = [];
  const aViews = new Map<number, TensorInfo>();
  const bViews = new Map<number, TensorInfo>();
  const viewOf = (cache: Map<number, TensorInfo>, base: number, idx: number, rows: number, cols: number): TensorInfo => {
    let v = cache.get(idx);
    if (!v) {
      v = makeView(backend, base + idx * rows * cols * 4, [1, rows, cols]);
      cache.set(idx, v);
      views.push(v);
    }
    return v;
  };
  try {
    for (let i = 0; i < aIdx.length; i++) {
      const av = viewOf(aViews, aBase, aIdx[i], M, K);
      const bv = viewOf(bViews, bBase, bIdx[i], K, N);
      const ov = makeView(backend, outBase + i * M * N * 4, [1, M, N]);
      try {
        mm(av, bv, ov);
      } finally {
        releaseView(backend, ov);
      }
      // a views are not cached by XNNPACK: drop them as soon as the next batch moves on.
      if (i + 1 < aIdx.length && aIdx[i + 1] !== aIdx[i]) {
        releaseView(backend, av);
        aViews.delete(aIdx[i]);
      }
    }
  } finally {
    for (const v of views) releaseView(backend, v);
  }
}

// ---- BatchMatMul ---------------------------------------------------------------------------------

type WasmBatchMatMul = (
  aId: number,
  aShape: Uint8Array,
  aRank: number,
  bId: number,
  bShape: Uint8Array,
  bRank: number,
  transposeA: boolean,
  transposeB: boolean,
  outId: number,
) => void;
const batchMatMulEntry = new WeakMap<object, WasmBatchMatMul>();
function wasmBatchMatMul(backend: WasmBackend): WasmBatchMatMul {
  let f = batchMatMulEntry.get(backend);
  if (!f) {
    // Same C signature the wasm BatchMatMul kernel binds in its setupFunc.
    f = backend.wasm.cwrap(tf.BatchMatMul, null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']);
    batchMatMulEntry.set(backend, f);
  }
  return f;
}

function makeBatchMatMul(original: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const backend = asWasm(args.backend);
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const transposeA = !!args.attrs?.transposeA;
    const transposeB = !!args.attrs?.transposeB;
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return original(args);
    const plan = planMatMul(a, b, transposeA, transposeB, 'matMul');
    const sizeA = tf.util.sizeFromShape(plan.batchA);
    const sizeB = tf.util.sizeFromShape(plan.batchB);
    if (tf.util.sizeFromShape(plan.outShape) === 0 || plan.K === 0) return original(args);
    if (!transposeA && !transposeB && sizeA === 1 && sizeB === 1) return original(args); // already the fast path
    if (!brokenBroadcast(sizeA, sizeB, plan) && !worthIt(plan, sizeA, sizeB)) return original(args);

    const temps: TensorInfo[] = [];
    try {
      const a2 = transposeA ? transposeLast2(backend, a) : a;
      if (a2 !== a) temps.push(a2);
      const b2 = transposeB ? transposeLast2(backend, b) : b;
      if (b2 !== b) temps.push(b2);
      const { M, K, N } = plan;
      if (sizeB === 1) {
        // Fold a's batch into its rows: one XNNPACK matmul (and b's packed weights stay cached).
        const out = original({
          inputs: { a: { dataId: a2.dataId, shape: [sizeA * M, K], dtype: 'float32' }, b: { dataId: b2.dataId, shape: [K, N], dtype: 'float32' } },
          backend: args.backend,
          attrs: { transposeA: false, transposeB: false },
        }) as TensorInfo;
        out.shape = plan.outShape;
        return out;
      }
      const out = backend.makeOutput(plan.outShape, 'float32');
      try {
        const mm = wasmBatchMatMul(backend);
        const aShape = shapeBytes([1, M, K]);
        const bShape = shapeBytes([1, K, N]);
        perBatch(backend, a2, b2, out, plan, (av, bv, ov) =>
          mm(dataOf(backend, av).id, aShape, 3, dataOf(backend, bv).id, bShape, 3, false, false, dataOf(backend, ov).id),
        );
      } catch (e) {
        backend.disposeData(out.dataId);
        throw e;
      }
      return out;
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  };
}

// ---- _FusedMatMul (tf.fused.matMul; tf.matMul never dispatches here) ------------------------------

function makeFusedMatMul(original: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const backend = asWasm(args.backend);
    const { a, b, bias, preluActivationWeights: prelu } = args.inputs as {
      a: TensorInfo;
      b: TensorInfo;
      bias?: TensorInfo;
      preluActivationWeights?: TensorInfo;
    };
    const attrs = args.attrs ?? {};
    const transposeA = !!attrs.transposeA;
    const transposeB = !!attrs.transposeB;
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return original(args);
    const plan = planMatMul(a, b, transposeA, transposeB, 'fused matMul');
    const { M, K, N } = plan;
    const sizeA = tf.util.sizeFromShape(plan.batchA);
    const sizeB = tf.util.sizeFromShape(plan.batchB);
    const outSize = tf.util.sizeFromShape(plan.outShape);
    // XNNPACK adds a per-column bias (N values) and applies PReLU weights per channel group; leave
    // anything else (and degenerate shapes) to the original kernel.
    const biasOk = bias == null || (bias.shape.length === 1 && bias.shape[0] === N);
    const preluSize = prelu == null ? 0 : tf.util.sizeFromShape(prelu.shape);
    const preluOk = prelu == null || (preluSize > 0 && (M * N) % preluSize === 0);
    if (!biasOk || !preluOk || outSize === 0 || K === 0) return original(args);
    if (!transposeA && !transposeB && sizeA === 1 && sizeB === 1) return original(args);
    // With a bias the original's slow path is wrong for M > 1, so always take ours then.
    if (bias == null && !brokenBroadcast(sizeA, sizeB, plan) && !worthIt(plan, sizeA, sizeB)) return original(args);

    const temps: TensorInfo[] = [];
    const run2d = (a3: TensorInfo, b3: TensorInfo): TensorInfo =>
      original({
        inputs: { a: a3, b: b3, ...(bias ? { bias } : {}), ...(prelu ? { preluActivationWeights: prelu } : {}) },
        backend: args.backend,
        attrs: { ...attrs, transposeA: false, transposeB: false },
      }) as TensorInfo;
    try {
      const a2 = transposeA ? transposeLast2(backend, a) : a;
      if (a2 !== a) temps.push(a2);
      const b2 = transposeB ? transposeLast2(backend, b) : b;
      if (b2 !== b) temps.push(b2);
      if (sizeB === 1) {
        const out = run2d({ dataId: a2.dataId, shape: [1, sizeA * M, K], dtype: 'float32' }, { dataId: b2.dataId, shape: [1, K, N], dtype: 'float32' });
        out.shape = plan.outShape;
        return out;
      }
      // Rare (a fused matmul with a batched right-hand side): one original 2-D run per batch, copied in.
      const out = backend.makeOutput(plan.outShape, 'float32');
      try {
        perBatch(backend, a2, b2, out, plan, (av, bv, ov) => {
          const r = run2d(av, bv);
          try {
            backend.typedArrayFromHeap({ ...ov, shape: [M * N] }).set(backend.typedArrayFromHeap({ ...r, shape: [M * N] }));
          } finally {
            backend.disposeData(r.dataId);
          }
        });
      } catch (e) {
        backend.disposeData(out.dataId);
        throw e;
      }
      return out;
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  };
}

// ---- Identity / same-dtype Cast --------------------------------------------------------------------

/**
 * The wasm `Identity` (and `Cast` to the same dtype) copies the data. The engine clones every tensor
 * it saves for the backward pass, and the gradient of every `mul` casts float32 to float32, so a
 * training step copied hundreds of tensors. Like the cpu backend (and wasm's own `Reshape`), share
 * the data instead: tensors are immutable and the backend reference-counts data ids.
 */
function makeShareData(original: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x } = args.inputs as { x: TensorInfo };
    const dtype = (args.attrs?.dtype as tf.DataType | undefined) ?? x.dtype;
    if (dtype !== x.dtype || x.dtype === 'string' || x.dtype === 'complex64') return original(args);
    (args.backend as unknown as { incRef(dataId: DataId): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

// ---- Slice / SplitV -------------------------------------------------------------------------------

type NumericArray = Float32Array | Int32Array | Uint8Array;

/**
 * The wasm `Slice` (and `SplitV`, which calls it directly) reads its input with `readSync`, a copy
 * of the whole tensor, for every slice. This one copies only the slice, through views of the heap,
 * in runs as long as the slice is contiguous.
 */
function sliceInto(backend: WasmBackend, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const out = backend.makeOutput(size, x.dtype);
  const total = tf.util.sizeFromShape(size);
  if (total === 0) return out;
  // Views after makeOutput (allocation may grow the heap).
  const xv = backend.typedArrayFromHeap(x) as NumericArray;
  const ov = backend.typedArrayFromHeap(out) as NumericArray;
  const shape = x.shape;
  const r = shape.length;
  const strides = tf.util.computeStrides(shape);
  // Innermost run: trailing axes the slice covers entirely, plus the first partial one.
  let run = 1;
  let d = r - 1;
  while (d >= 0 && begin[d] === 0 && size[d] === shape[d]) run *= shape[d--];
  if (d < 0) {
    ov.set(xv.subarray(0, total));
    return out;
  }
  run *= size[d];
  const inner = d; // axes [0, inner) are iterated
  let src0 = 0;
  for (let i = 0; i <= inner; i++) src0 += begin[i] * (i < r - 1 ? strides[i] : 1);
  const idx = new Array<number>(inner).fill(0);
  const runs = total / run;
  let dst = 0;
  for (let n = 0; n < runs; n++) {
    let src = src0;
    for (let i = 0; i < inner; i++) src += idx[i] * strides[i];
    if (run === 1) ov[dst] = xv[src];
    else ov.set(xv.subarray(src, src + run), dst);
    dst += run;
    for (let i = inner - 1; i >= 0; i--) {
      if (++idx[i] < size[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

function makeSlice(original: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (x.dtype === 'string' || x.dtype === 'complex64') return original(args);
    const [begin, size] = tf.slice_util.parseSliceParams(x, args.attrs?.begin as number[], args.attrs?.size as number[]);
    return sliceInto(asWasm(args.backend), x, begin, size);
  };
}

function makeSplitV(original: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (x.dtype === 'string' || x.dtype === 'complex64') return original(args);
    return splitBySlices(args, x, (begin, size) => sliceInto(asWasm(args.backend), x, begin, size));
  };
}

/** SplitV as consecutive slices along the axis, each made by `slice(begin, size)`. */
export function splitBySlices(args: KernelArgs, x: TensorInfo, slice: (begin: number[], size: number[]) => TensorInfo): TensorInfo[] {
  const axis = tf.util.parseAxisParam(args.attrs?.axis as number, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, args.attrs?.numOrSizeSplits as number[] | number, axis);
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((s) => {
    const size = [...x.shape];
    size[axis] = s;
    const t = slice([...begin], size);
    begin[axis] += s;
    return t;
  });
}

// ---- GatherV2 ------------------------------------------------------------------------------------

/** Row gathers (axis 0, no batch dims: every embedding lookup) as row copies between heap views. */
function makeGather(original: KernelFunc): KernelFunc {
  return (args: KernelArgs) => {
    const { x, indices } = args.inputs as { x: TensorInfo; indices: TensorInfo };
    const axis = tf.util.parseAxisParam(args.attrs?.axis as number, x.shape)[0];
    const batchDims = Number(args.attrs?.batchDims ?? 0);
    if (axis !== 0 || batchDims !== 0 || indices.dtype !== 'int32' || (x.dtype !== 'float32' && x.dtype !== 'int32')) return original(args);
    const backend = asWasm(args.backend);
    const rows = x.shape[0];
    const row = tf.util.sizeFromShape(x.shape.slice(1));
    const n = tf.util.sizeFromShape(indices.shape);
    const out = backend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
    const idx = backend.typedArrayFromHeap(indices) as Int32Array;
    for (let i = 0; i < n; i++) {
      const k = idx[i];
      if (!(k >= 0 && k <= rows - 1)) {
        backend.disposeData(out.dataId);
        throw new Error(`GatherV2: the index value ${k} is not in [0, ${rows - 1}]`);
      }
    }
    if (n * row === 0) return out;
    const xv = backend.typedArrayFromHeap(x) as Float32Array | Int32Array;
    const ov = backend.typedArrayFromHeap(out) as Float32Array | Int32Array;
    if (row === 1) for (let i = 0; i < n; i++) ov[i] = xv[idx[i]];
    else for (let i = 0; i < n; i++) ov.set(xv.subarray(idx[i] * row, idx[i] * row + row), i * row);
    return out;
  };
}

// ---- UnsortedSegmentSum -------------------------------------------------------------------------

/**
 * out[s, ...] = sum of x[i, ...] over i with segmentIds[i] == s. Like the cpu backend, ids outside
 * [0, numSegments) are dropped. (One difference: the cpu backend multiplies every row by a 0/1 mask,
 * so a NaN/Inf anywhere in x spreads to all segments there; here it stays in its own segment.)
 */
function unsortedSegmentSum(args: KernelArgs): TensorInfo {
  const backend = asWasm(args.backend);
  const { x, segmentIds } = args.inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const numSegments = Number(args.attrs?.numSegments);
  if (x.dtype !== 'float32' && x.dtype !== 'int32') throw new Error(`UnsortedSegmentSum on wasm supports float32 and int32 x, got ${x.dtype}`);
  if (segmentIds.dtype !== 'int32') throw new Error(`UnsortedSegmentSum: segmentIds must be int32, got ${segmentIds.dtype}`);
  const idsRank = segmentIds.shape.length;
  const innerShape = x.shape.slice(idsRank);
  const n = tf.util.sizeFromShape(segmentIds.shape);
  const inner = tf.util.sizeFromShape(innerShape);
  const out = backend.makeOutput([numSegments, ...innerShape], x.dtype);
  // Views are taken after makeOutput: allocating may grow (and detach) the wasm heap.
  const o = backend.typedArrayFromHeap(out) as Float32Array | Int32Array;
  const xv = backend.typedArrayFromHeap(x) as Float32Array | Int32Array;
  const ids = backend.typedArrayFromHeap(segmentIds) as Int32Array;
  o.fill(0);
  if (x.dtype === 'int32') segmentSumInt(o as Int32Array, xv as Int32Array, ids, n, inner, numSegments);
  else segmentSumFloat(o as Float32Array, xv as Float32Array, ids, n, inner, numSegments);
  return out;
}

// Monomorphic loops (one typed-array type each), several times faster than a shared one.
function segmentSumFloat(o: Float32Array, xv: Float32Array, ids: Int32Array, n: number, inner: number, numSegments: number): void {
  for (let i = 0; i < n; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) o[dst + j] += xv[src + j];
  }
}
function segmentSumInt(o: Int32Array, xv: Int32Array, ids: Int32Array, n: number, inner: number, numSegments: number): void {
  for (let i = 0; i < n; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) o[dst + j] = (o[dst + j] + xv[src + j]) | 0;
  }
}

function registerUnsortedSegmentSum(): void {
  const existing = tf.getKernel(tf.UnsortedSegmentSum, BACKEND);
  if (existing) return; // ours already, or a future tfjs-backend-wasm that ships it
  tf.registerKernel({ kernelName: tf.UnsortedSegmentSum, backendName: BACKEND, kernelFunc: mark(unsortedSegmentSum) });
}
