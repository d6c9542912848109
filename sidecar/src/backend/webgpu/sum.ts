/**
 * Sum over leading axes on WebGPU (the gradients of biases and of LayerNorm's β: Σ over tokens of an
 * [N, d] activation gradient, 74 per full GPT-2 step) as one column-sum dispatch (reduce.ts). TF.js
 * transposes the input first (a full copy) and then sums rows: two dispatches and three times the
 * memory traffic. Every other reduction (and a narrow d, where TF.js's row sums parallelise better)
 * stays on TF.js's kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { registerOnWebGpu, sizeOf, tfjsKernel, type KernelArgs } from './program';
import { COLS_PER_WG, columnSum, runColumnSum } from './reduce';

let tfjsSum: tf.KernelFunc | undefined;

export function registerSumKernel(): void {
  tfjsSum ??= tfjsKernel(tf.Sum);
  registerOnWebGpu(tf.Sum, sum, true);
}

const SUM_COLUMNS = columnSum('X[at]');

function sum(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  const k = axes.length;
  const leading = k > 0 && k < x.shape.length && axes.every((a, i) => a === i);
  const n = sizeOf(x.shape.slice(0, k));
  const d = sizeOf(x.shape.slice(k));
  if (x.dtype !== 'float32' || !leading || n === 0 || d < COLS_PER_WG) {
    if (!tfjsSum) throw new Error('Sum: no fallback kernel on webgpu');
    return tfjsSum(args);
  }
  const outputShape = keepDims ? x.shape.map((s, i) => (i < k ? 1 : s)) : x.shape.slice(k);
  return runColumnSum(args.backend as WebGPUBackend, { key: 'sum-leading', inputs: { X: x }, outputShape, n, d, code: SUM_COLUMNS });
}
