/**
 * AddN within the device's storage-buffer limit. TF.js's WebGPU AddN binds every input to one shader,
 * and a device has only `maxStorageBuffersPerShaderStage` of them (8 by default, which is what TF.js
 * asks Dawn for, on the H100 too; one is the output): with more inputs the pipeline is invalid and
 * every later submit of that command buffer fails, so the training loop's gradient norm (over the
 * demo's 32 trainable tensors, say) read back as 0, and so did the loss read with it. TF.js splits Concat this way; AddN it does not. This sums groups of at most
 * limit − 1 inputs with TF.js's kernel, then the group sums, as a tree.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { AddN } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { registerOnWebGpu, release, tfjsKernel, type KernelArgs } from './program';

let tfjsAddN: tf.KernelFunc | undefined;

function addN(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as WebGPUBackend;
  const inputs = args.inputs as unknown as tf.TensorInfo[];
  const most = Math.max(2, backend.device.limits.maxStorageBuffersPerShaderStage - 1);
  const run = (group: tf.TensorInfo[]) => tfjsAddN!({ inputs: group as unknown as tf.NamedTensorInfoMap, backend, attrs: {} }) as tf.TensorInfo;
  if (inputs.length <= most) return run(inputs);
  let level = inputs;
  while (level.length > most) {
    const sums: tf.TensorInfo[] = [];
    for (let i = 0; i < level.length; i += most) sums.push(run(level.slice(i, i + most)));
    if (level !== inputs) level.forEach((t) => release(backend, t));
    level = sums;
  }
  const out = run(level);
  level.forEach((t) => release(backend, t));
  return out;
}

/** Registers (idempotently) the bounded AddN in place of TF.js's, which it calls per group. */
export function registerAddNKernel(): void {
  tfjsAddN ??= tfjsKernel(AddN);
  if (tfjsAddN) registerOnWebGpu(AddN, addN, true);
}
