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
import { ceilDiv, registerOnWebGpu, runProgram } from './program';

type KernelArgs = Parameters<tf.KernelFunc>[0];
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const WG = 256;

export function registerHeadsKernels(): void {
  registerOnWebGpu(K.splitHeads, splitHeads);
  registerOnWebGpu(K.mergeHeads, mergeHeads);
}

// Output index (b, a1, a2, d) with a1 < n1, a2 < n2 reads X at (b, a2, a1, d): the swap of the
// middle axes. Split: (a1, a2) = (h, t); merge: (a1, a2) = (t, h).
const SWAP_MIDDLE = /* wgsl */ `
fn main(index : i32) {
  if (index >= uniforms.total) { return; }
  let d = index % uniforms.dim;
  let q = index / uniforms.dim;
  let a2 = q % uniforms.n2;
  let q2 = q / uniforms.n2;
  let a1 = q2 % uniforms.n1;
  let b = q2 / uniforms.n1;
  result[index] = X[((b * uniforms.n2 + a2) * uniforms.n1 + a1) * uniforms.dim + d];
}`;

function swapMiddle(backend: WebGPUBackend, x: tf.TensorInfo, outShape: number[], n1: number, n2: number, dim: number): tf.TensorInfo {
  const total = size(outShape);
  return runProgram(backend, {
    key: 'swap-middle',
    inputs: { X: x },
    outputShape: outShape,
    workgroup: WG,
    workgroups: ceilDiv(total, WG),
    uniforms: [
      { name: 'total', type: 'int32', value: total },
      { name: 'dim', type: 'int32', value: dim },
      { name: 'n1', type: 'int32', value: n1 },
      { name: 'n2', type: 'int32', value: n2 },
    ],
    code: SWAP_MIDDLE,
  });
}

function splitHeads(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { batch, seq, heads, headDim } = args.attrs as unknown as { batch: number; seq: number; heads: number; headDim: number };
  // out[b, h, t, d] = x[b, t, h, d]
  return swapMiddle(args.backend as WebGPUBackend, x, [batch, heads, seq, headDim], heads, seq, headDim);
}

function mergeHeads(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const [, heads, seq, headDim] = x.shape as [number, number, number, number];
  // out[b, t, h, d] = x[b, h, t, d]
  return swapMiddle(args.backend as WebGPUBackend, x, args.attrs?.shape as number[], seq, heads, headDim);
}
