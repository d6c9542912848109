/**
 * Softmax cross-entropy on WebGPU, the contract of the native kernels (backend/native/kernels.ts,
 * native/peft_kernels.cc): loss = −Σ_valid (x[label] − lse) / #valid, label −100 ignored (an
 * out-of-range label picks nothing but still counts, as the composite); NaN when no label counts.
 *
 *   PeftSoftmaxCrossEntropy      2 programs: lse = max + log Σ exp(x − max) (a workgroup per row);
 *                                the loss (one workgroup over the rows; float32 tree sums where the
 *                                CPU kernel sums in double).
 *   PeftSoftmaxCrossEntropyGrad  1 program, a workgroup per row (each counts the valid labels):
 *                                dx = exp(x − lse) · dy/#valid, minus dy/#valid at the label.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K } from '../native/fused';
import { registerOnWebGpu, runProgram, type KernelArgs } from './program';
import { ROW_WG, rowStart, WGSL_REDUCE } from './reduce';

export function registerXentKernels(): void {
  registerOnWebGpu(K.xent, xent);
  registerOnWebGpu(K.xentGrad, xentGrad);
}

const XENT_LSE = /* wgsl */ `
${WGSL_REDUCE}
fn main(index : i32) {
${rowStart('c')}
  var m = -3.402823466e38;
  for (var j = i32(localIndex); j < uniforms.c; j += ${ROW_WG}) { m = max(m, X[base + j]); }
  m = wgMax(m);
  var s = 0.0;
  for (var j = i32(localIndex); j < uniforms.c; j += ${ROW_WG}) { s += exp(X[base + j] - m); }
  let t = wgSum(s);
  if (row < uniforms.n && localIndex == 0u) { result[row] = m + log(t); }
}`;

const XENT_LOSS = /* wgsl */ `
${WGSL_REDUCE}
fn main(index : i32) {
  var s = vec2<f32>(0.0, 0.0);
  for (var r = i32(localIndex); r < uniforms.n; r += ${ROW_WG}) {
    let y = LABELS[r];
    if (y >= 0 && y < uniforms.c) { s.x += X[r * uniforms.c + y] - LSE[r]; }
    if (y != -100) { s.y += 1.0; }
  }
  let t = wgSum2(s);
  if (localIndex == 0u) {
    if (t.y == 0.0) { result[0] = uniforms.NAN; } else { result[0] = -t.x / t.y; }
  }
}`;

const XENT_GRAD = /* wgsl */ `
${WGSL_REDUCE}
fn main(index : i32) {
  let row = wgIndex();
  var cnt = 0.0;
  for (var r = i32(localIndex); r < uniforms.n; r += ${ROW_WG}) {
    if (LABELS[r] != -100) { cnt += 1.0; }
  }
  let scale = DY[0] / wgSum(cnt);
  if (row >= uniforms.n) { return; }
  let base = row * uniforms.c;
  let y = LABELS[row];
  let valid = y >= 0 && y < uniforms.c;
  let l = LSE[row];
  for (var j = i32(localIndex); j < uniforms.c; j += ${ROW_WG}) {
    var g = 0.0;
    if (valid) {
      g = exp(X[base + j] - l) * scale;
      if (j == y) { g = g - scale; }
    }
    result[base + j] = g;
  }
}`;

function xent(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { logits, labels } = args.inputs as { logits: tf.TensorInfo; labels: tf.TensorInfo };
  const [n, c] = logits.shape as [number, number];
  // No rows: no lse, and the mean over no labels is NaN (as the composite).
  if (n === 0) return [backend.makeTensorInfo([], 'float32', new Float32Array([NaN])), backend.makeTensorInfo([0], 'float32', new Float32Array(0))];
  const nc = [
    { name: 'n', type: 'int32', value: n },
    { name: 'c', type: 'int32', value: c },
  ] as const;
  const lse = runProgram(backend, { key: 'xent-lse', inputs: { X: logits }, outputShape: [n], workgroup: ROW_WG, workgroups: n, uniforms: [...nc], code: XENT_LSE });
  const loss = runProgram(backend, { key: 'xent-loss', inputs: { X: logits, LABELS: labels, LSE: lse }, outputShape: [], workgroup: ROW_WG, workgroups: 1, uniforms: [...nc], code: XENT_LOSS });
  return [loss, lse];
}

function xentGrad(args: KernelArgs): tf.TensorInfo {
  const { logits, labels, lse, dy } = args.inputs as Record<string, tf.TensorInfo>;
  const [n, c] = logits!.shape as [number, number];
  return runProgram(args.backend as WebGPUBackend, {
    key: 'xent-grad',
    inputs: { X: logits!, LABELS: labels!, LSE: lse!, DY: dy! },
    outputShape: logits!.shape,
    workgroup: ROW_WG,
    workgroups: n,
    uniforms: [
      { name: 'n', type: 'int32', value: n },
      { name: 'c', type: 'int32', value: c },
    ],
    code: XENT_GRAD,
  });
}
