/**
 * Fused WGSL kernels for the WebGPU backend, registered under the same names as the native CPU
 * kernels (backend/native/fused.ts), so the model code takes the same fused path on either
 * backend, with the same gradients (registered once, backend-independent). Each family lives in its
 * own module; this one registers them all.
 */
import { registerFusedGradients } from '../native/kernels';
import { registerAttentionKernels } from './attention';
import { registerElementwiseKernels } from './elementwise';
import { registerMatMulKernels } from './matmul';

/** Registers (idempotently) the fused kernels on the webgpu backend. */
export function registerWebGpuKernels(): void {
  registerElementwiseKernels();
  registerMatMulKernels();
  registerAttentionKernels();
  registerFusedGradients();
}
