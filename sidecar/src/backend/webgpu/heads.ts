/**
 * Attention head layout copies on WebGPU (the native kernels' contract, backend/native/kernels.ts):
 *   PeftSplitHeads  x (B·T rows of H·D, any shape of that size) → [B, H, T, D]
 *   PeftMergeHeads  x [B, H, T, D] → attrs.shape (B·T rows of H·D)
 * One element-wise program each, an invocation per output element (reads and writes contiguous
 * along D).
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K } from '../native/fused';
import { ceilDiv, registerOnWebGpu, runProgram, type KernelArgs, sizeOf, WG } from './program';


export function registerHeadsKernels(): void {
  registerOnWebGpu(K.splitHeads, splitHeads);
  registerOnWebGpu(K.mergeHeads, mergeHeads);
}

// Output index (b, a1, a2, d) with a1 < n1, a2 < n2 reads X at (b, a2, a1, d): the swap of the
// middle axes. Split: (a1, a2) = (h, t); merge: (a1, a2) = (t, h). Each invocation copies VEC
// consecutive elements along d (VEC divides dim), with unsigned index arithmetic (no signed
// division polyfills).
const swapMiddle = (vec: number) => /* wgsl */ `
fn main(index : i32) {
  let i = u32(index) * ${vec}u;
  if (i >= u32(uniforms.total)) { return; }
  let dim = u32(uniforms.dim);
  let n1 = u32(uniforms.n1);
  let n2 = u32(uniforms.n2);
  let q = i / dim;
  let d = i - q * dim;
  let q2 = q / n2;
  let a2 = q - q2 * n2;
  let b = q2 / n1;
  let a1 = q2 - b * n1;
  let src = ((b * n2 + a2) * n1 + a1) * dim + d;
  for (var k = 0u; k < ${vec}u; k++) { result[i + k] = X[src + k]; }
}`;

function swap(backend: WebGPUBackend, x: tf.TensorInfo, outShape: number[], n1: number, n2: number, dim: number): tf.TensorInfo {
  const total = sizeOf(outShape);
  const vec = dim % 4 === 0 ? 4 : dim % 2 === 0 ? 2 : 1;
  return runProgram(backend, {
    key: `swap-middle:${vec}`,
    inputs: { X: x },
    outputShape: outShape,
    workgroup: WG,
    workgroups: ceilDiv(total / vec, WG),
    uniforms: [
      { name: 'total', type: 'int32', value: total },
      { name: 'dim', type: 'int32', value: dim },
      { name: 'n1', type: 'int32', value: n1 },
      { name: 'n2', type: 'int32', value: n2 },
    ],
    code: () => swapMiddle(vec),
  });
}

function splitHeads(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { batch, seq, heads, headDim } = args.attrs as unknown as { batch: number; seq: number; heads: number; headDim: number };
  // out[b, h, t, d] = x[b, t, h, d]
  return swap(args.backend as WebGPUBackend, x, [batch, heads, seq, headDim], heads, seq, headDim);
}

function mergeHeads(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const [, heads, seq, headDim] = x.shape as [number, number, number, number];
  // out[b, t, h, d] = x[b, h, t, d]
  return swap(args.backend as WebGPUBackend, x, args.attrs?.shape as number[], seq, heads, headDim);
}
