/**
 * Workgroup reductions shared by the row kernels (layer norm, cross-entropy): a tree over a
 * `var<workgroup>` array of the workgroup's size. Call them in uniform control flow (no early
 * return before them: they hold barriers); every invocation gets the result.
 */
import { WGSL_COMMON } from './program';

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
