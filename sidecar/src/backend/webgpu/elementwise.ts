/**
 * Element-wise fused kernels on WebGPU: GELU (tanh approximation) and its gradient, in the order
 * of operations of ops.ts's composite (so results match it to float32 rounding).
 *
 * registerElementwiseKernels also registers the other fused training kernels that live beside
 * this module: LayerNorm (norm.ts), softmax cross-entropy (xent.ts), AdamW (adamw.ts), the
 * attention head layout copies (heads.ts) and the column sums of bias gradients (sum.ts).
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K } from '../native/fused';
import { registerAdamWKernels } from './adamw';
import { registerHeadsKernels } from './heads';
import { registerNormKernels } from './norm';
import { ceilDiv, registerOnWebGpu, runProgram, type KernelArgs, sizeOf, WG } from './program';
import { registerSumKernel } from './sum';
import { registerXentKernels } from './xent';


export function registerElementwiseKernels(): void {
  registerOnWebGpu(K.gelu, gelu);
  registerOnWebGpu(K.geluGrad, geluGrad);
  registerNormKernels();
  registerXentKernels();
  registerAdamWKernels();
  registerHeadsKernels();
  registerSumKernel();
}

// y = (x·0.5) · (1 + tanh((x + x·x·x·0.044715) · √(2/π)))
const GELU_FWD = /* wgsl */ `
fn main(index : i32) {
  if (index >= uniforms.n) { return; }
  let x = X[index];
  let u = (x + x * x * x * 0.044715) * 0.7978845608028654;
  result[index] = (x * 0.5) * (1.0 + tanh(clamp(u, -15.0, 15.0)));
}`;

// dx = dy · (0.5 (1 + t) + 0.5 x (1 − t²) √(2/π) (1 + 3·0.044715 x²))
const GELU_BWD = /* wgsl */ `
fn main(index : i32) {
  if (index >= uniforms.n) { return; }
  let x = X[index];
  let t = tanh(clamp((x + x * x * x * 0.044715) * 0.7978845608028654, -15.0, 15.0));
  result[index] = DY[index] * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x));
}`;

function gelu(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const n = sizeOf(x.shape);
  return runProgram(args.backend as WebGPUBackend, { key: 'gelu', inputs: { X: x }, outputShape: x.shape, workgroup: WG, workgroups: ceilDiv(n, WG), uniforms: [{ name: 'n', type: 'int32', value: n }], code: GELU_FWD });
}

function geluGrad(args: KernelArgs): tf.TensorInfo {
  const { dy, x } = args.inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
  const n = sizeOf(x.shape);
  return runProgram(args.backend as WebGPUBackend, { key: 'gelu-grad', inputs: { DY: dy, X: x }, outputShape: x.shape, workgroup: WG, workgroups: ceilDiv(n, WG), uniforms: [{ name: 'n', type: 'int32', value: n }], code: GELU_BWD });
}
