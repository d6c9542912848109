/**
 * LayerNorm on WebGPU: the contract of the native kernels (backend/native/kernels.ts) and their
 * order of operations (native/peft_kernels.cc): y = ((x − mean) · rstd) · γ + β with
 * rstd = 1/sqrt(Σ(x − mean)²/D + eps), two passes over the row. Sums run as workgroup trees, so
 * results differ from the CPU kernels only in summation order.
 *
 *   PeftLayerNorm          3 programs: mean (a workgroup per row), rstd (a workgroup per row, from
 *                          mean), y (element-wise).
 *   PeftLayerNormGradX     1 program, a workgroup per row: dx = (g − mean(g) − x̂·mean(g·x̂))·rstd,
 *                          g = dy·γ, x̂ = (x − mean)·rstd.
 *   PeftLayerNormGradGamma 1 program (reduce.ts columnSum): dγ = Σ_rows dy·x̂.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K } from '../native/fused';
import { ceilDiv, registerOnWebGpu, runProgram, type KernelArgs, sizeOf, WG } from './program';
import { columnSum, ROW_WG, runColumnSum, WGSL_REDUCE, rowStart } from './reduce';


export function registerNormKernels(): void {
  registerOnWebGpu(K.layerNorm, layerNorm);
  registerOnWebGpu(K.layerNormGradX, layerNormGradX);
  registerOnWebGpu(K.layerNormGradGamma, layerNormGradGamma);
}

// Row kernels: row = wgIndex() (workgroups past n, from a folded dispatch, read row n − 1 and write nothing).
const LN_MEAN = /* wgsl */ `
${WGSL_REDUCE}
fn main(index : i32) {
${rowStart('d')}
  var s = 0.0;
  for (var j = i32(localIndex); j < uniforms.d; j += ${ROW_WG}) { s += X[base + j]; }
  let t = wgSum(s);
  if (row < uniforms.n && localIndex == 0u) { result[row] = t / f32(uniforms.d); }
}`;

const LN_RSTD = /* wgsl */ `
${WGSL_REDUCE}
fn main(index : i32) {
${rowStart('d')}
  let mean = MEAN[r];
  var s = 0.0;
  for (var j = i32(localIndex); j < uniforms.d; j += ${ROW_WG}) {
    let c = X[base + j] - mean;
    s += c * c;
  }
  let v = wgSum(s) / f32(uniforms.d);
  if (row < uniforms.n && localIndex == 0u) { result[row] = 1.0 / sqrt(v + uniforms.eps); }
}`;

const LN_Y = /* wgsl */ `
fn main(index : i32) {
  if (index >= uniforms.n * uniforms.d) { return; }
  let r = index / uniforms.d;
  let j = index - r * uniforms.d;
  result[index] = ((X[index] - MEAN[r]) * RSTD[r]) * G[j] + B[j];
}`;

const LN_GRAD_X = /* wgsl */ `
${WGSL_REDUCE}
fn main(index : i32) {
${rowStart('d')}
  let mean = MEAN[r];
  let rstd = RSTD[r];
  var s = vec2<f32>(0.0, 0.0);
  for (var j = i32(localIndex); j < uniforms.d; j += ${ROW_WG}) {
    let g = DY[base + j] * G[j];
    let xh = (X[base + j] - mean) * rstd;
    s += vec2<f32>(g, g * xh);
  }
  let ab = wgSum2(s) / f32(uniforms.d);
  if (row >= uniforms.n) { return; }
  for (var j = i32(localIndex); j < uniforms.d; j += ${ROW_WG}) {
    let g = DY[base + j] * G[j];
    let xh = (X[base + j] - mean) * rstd;
    result[base + j] = (g - ab.x - xh * ab.y) * rstd;
  }
}`;

// dγ = Σ_rows dy·x̂, a column sum.
const LN_GRAD_GAMMA = columnSum('DY[at] * ((X[at] - MEAN[r]) * RSTD[r])');

function rows(x: tf.TensorInfo): [number, number] {
  const d = x.shape[x.shape.length - 1] ?? 1;
  return [sizeOf(x.shape) / d, d];
}

function layerNorm(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { x, gamma, beta } = args.inputs as { x: tf.TensorInfo; gamma: tf.TensorInfo; beta: tf.TensorInfo };
  const [n, d] = rows(x);
  const nd = [
    { name: 'n', type: 'int32', value: n },
    { name: 'd', type: 'int32', value: d },
  ] as const;
  const mean = runProgram(backend, { key: 'ln-mean', inputs: { X: x }, outputShape: [n], workgroup: ROW_WG, workgroups: n, uniforms: [...nd], code: LN_MEAN });
  const rstd = runProgram(backend, {
    key: 'ln-rstd',
    inputs: { X: x, MEAN: mean },
    outputShape: [n],
    workgroup: ROW_WG,
    workgroups: n,
    uniforms: [...nd, { name: 'eps', type: 'float32', value: Number(args.attrs?.eps) }],
    code: LN_RSTD,
  });
  const y = runProgram(backend, {
    key: 'ln-y',
    inputs: { X: x, MEAN: mean, RSTD: rstd, G: gamma, B: beta },
    outputShape: x.shape,
    workgroup: WG,
    workgroups: ceilDiv(n * d, WG),
    uniforms: [...nd],
    code: LN_Y,
  });
  return [y, mean, rstd];
}

function layerNormGradX(args: KernelArgs): tf.TensorInfo {
  const { dy, x, gamma, mean, rstd } = args.inputs as Record<string, tf.TensorInfo>;
  const [n, d] = rows(x!);
  return runProgram(args.backend as WebGPUBackend, {
    key: 'ln-grad-x',
    inputs: { DY: dy!, X: x!, G: gamma!, MEAN: mean!, RSTD: rstd! },
    outputShape: x!.shape,
    workgroup: ROW_WG,
    workgroups: n,
    uniforms: [
      { name: 'n', type: 'int32', value: n },
      { name: 'd', type: 'int32', value: d },
    ],
    code: LN_GRAD_X,
  });
}

function layerNormGradGamma(args: KernelArgs): tf.TensorInfo {
  const { dy, x, mean, rstd } = args.inputs as Record<string, tf.TensorInfo>;
  const [n, d] = rows(x!);
  return runColumnSum(args.backend as WebGPUBackend, { key: 'ln-grad-gamma', inputs: { DY: dy!, X: x!, MEAN: mean!, RSTD: rstd! }, outputShape: [d], n, d, code: LN_GRAD_GAMMA });
}
