/**
 * Workgroup reductions shared by the row kernels (layer norm, cross-entropy): a tree over a
 * `var<workgroup>` array of the workgroup's size. Call them in uniform control flow (no early
 * return before them: they hold barriers); every invocation gets the result.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { ceilDiv, runProgram, WGSL_COMMON, WG } from './program';

/** Invocations per workgroup of the row kernels (one workgroup per row). */
export const ROW_WG = 256;

/** WGSL lines opening a row kernel: `row` (this workgroup's row; workgroups past n, from a folded
 * dispatch, clamp their reads to row n − 1 as `r` and must write nothing) and `base`, the row's
 * first element in a row-major [n, width] input. */
export const rowStart = (width: string) => `  let row = wgIndex();
  let r = min(row, uniforms.n - 1);
  let base = r * uniforms.${width};`;

/** WGSL: wgSum(f32), wgMax(f32), wgSum2(vec2<f32>) over a workgroup of ROW_WG invocations, and wgIndex(). */
export const WGSL_REDUCE = /* wgsl */ `
${WGSL_COMMON}
var<workgroup> red : array<vec2<f32>, ${ROW_WG}>;

fn wgSum2(v : vec2<f32>) -> vec2<f32> {
  let l = localIndex;
  red[l] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    if (l < s) { red[l] = red[l] + red[l + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn wgSum(v : f32) -> f32 {
  return wgSum2(vec2<f32>(v, 0.0)).x;
}

fn wgMax(v : f32) -> f32 {
  let l = localIndex;
  red[l] = vec2<f32>(v, 0.0);
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    if (l < s) { red[l].x = max(red[l].x, red[l + s].x); }
    workgroupBarrier();
  }
  let r = red[0].x;
  workgroupBarrier();
  return r;
}
`;

/** Column sums: columns per workgroup × row groups = WG. */
export const COLS_PER_WG = 16;
const ROW_GROUPS = WG / COLS_PER_WG;

/**
 * WGSL `main` of a column sum over a row-major [uniforms.n, uniforms.d] operand:
 * result[c] = Σ_r term, with `term` a WGSL expression of `at` (the element r·d + c) and `r`.
 * Dispatch ceil(d / COLS_PER_WG) workgroups of WG. Invocation l takes column block · COLS_PER_WG +
 * l % COLS_PER_WG and rows l / COLS_PER_WG + k·ROW_GROUPS (a warp reads 16 consecutive floats of
 * two rows), then a tree over the row groups.
 */
export const columnSum = (term: string) => /* wgsl */ `
${WGSL_COMMON}
var<workgroup> part : array<f32, ${WG}>;
fn main(index : i32) {
  let l = i32(localIndex);
  let col = wgIndex() * ${COLS_PER_WG} + l % ${COLS_PER_WG};
  let c = min(col, uniforms.d - 1);
  var s = 0.0;
  for (var r = l / ${COLS_PER_WG}; r < uniforms.n; r += ${ROW_GROUPS}) {
    let at = r * uniforms.d + c;
    s += ${term};
  }
  part[l] = s;
  workgroupBarrier();
  for (var k = ${ROW_GROUPS / 2}; k > 0; k = k >> 1u) {
    if (l < k * ${COLS_PER_WG}) { part[l] = part[l] + part[l + k * ${COLS_PER_WG}]; }
    workgroupBarrier();
  }
  if (l < ${COLS_PER_WG} && col < uniforms.d) { result[col] = part[l]; }
}`;

/** Runs a columnSum program over [n, d] operands (`inputs`), output shaped `outputShape` (d elements). */
export function runColumnSum(backend: WebGPUBackend, spec: { key: string; inputs: Record<string, tf.TensorInfo>; outputShape: number[]; n: number; d: number; code: string }): tf.TensorInfo {
  return runProgram(backend, {
    key: spec.key,
    inputs: spec.inputs,
    outputShape: spec.outputShape,
    workgroup: WG,
    workgroups: ceilDiv(spec.d, COLS_PER_WG),
    uniforms: [
      { name: 'n', type: 'int32', value: spec.n },
      { name: 'd', type: 'int32', value: spec.d },
    ],
    code: spec.code,
  });
}
