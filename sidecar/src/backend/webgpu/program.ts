/**
 * Runs a hand-written WGSL compute shader through tfjs-backend-webgpu's own program machinery
 * (`runWebGPUProgram`), so it shares the backend's command encoder, buffer pool and pipeline cache:
 * no extra submits and no host round-trips.
 *
 * The backend wraps the shader: it declares `result` (binding 0, the output, read_write), one
 * read-only storage array per input (named as `inputs`' keys, in order) and `uniforms` (the
 * tensor shapes plus the `uniforms` listed here), and calls the user's `fn main(index : i32)` once
 * per invocation with the flat global index. Inside `main`, `localIndex` (u32) and `workgroupId`,
 * `numWorkgroups` (vec3<u32>) are available; `wgIndex(WG)` below gives the flat workgroup index.
 * With layout 'auto', every declared binding must be used by the shader (each input, `result`, and
 * one uniform at least: the helpers touch them when unused).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

export type UniformType = 'float32' | 'int32' | 'uint32';
export interface Uniform {
  name: string;
  type: UniformType;
  value: number;
}

export interface ProgramSpec {
  /** Cache key of the shader source (with everything that changes the code, not the shapes). */
  key: string;
  inputs: Record<string, tf.TensorInfo>;
  outputShape: number[];
  dtype?: tf.DataType;
  /** Invocations per workgroup (1-D). */
  workgroup: number;
  /** Write into this tensor (already holding a GPU buffer) instead of a new one; the shader may read
   * `result` before writing it (in-place updates). */
  output?: tf.TensorInfo;
  /** Number of workgroups (1-D; the backend folds it into 2-D/3-D past the per-dimension limit). */
  workgroups: number;
  uniforms?: Uniform[];
  /** Inputs bound as `array<vec4<f32>>` (16-byte loads; the caller makes sure sizes and offsets allow). */
  vec4Inputs?: readonly string[];
  /** WGSL: module-scope declarations and `fn main(index : i32)`; a function is called only when the
   * pipeline is first compiled (building a generated shader's text on every dispatch costs host time). */
  code: string | (() => string);
}

const WGSL_TYPE: Record<UniformType, string> = { float32: 'f32', int32: 'i32', uint32: 'u32' };

export function runProgram(backend: WebGPUBackend, spec: ProgramSpec): tf.TensorInfo {
  const names = Object.keys(spec.inputs);
  const uniforms = spec.uniforms ?? [];
  const program: WebGPUProgram = {
    variableNames: names,
    outputShape: spec.outputShape,
    shaderKey: `peft:${spec.key}`,
    // A flat layout: the backend passes the flat global index to main().
    dispatchLayout: { x: spec.outputShape.map((_, i) => i) },
    dispatch: [spec.workgroups, 1, 1],
    workgroupSize: [spec.workgroup, 1, 1],
    uniforms: uniforms.map((u) => `${u.name} : ${WGSL_TYPE[u.type]},`).join(' '),
    size: false,
    ...(spec.vec4Inputs?.length ? { variableComponents: names.map((n) => (spec.vec4Inputs!.includes(n) ? 4 : 1)) } : {}),
    getUserCode: typeof spec.code === 'function' ? spec.code : () => spec.code as string,
  };
  return backend.runWebGPUProgram(
    program,
    names.map((n) => spec.inputs[n]!),
    spec.dtype ?? 'float32',
    uniforms.map((u) => ({ type: u.type, data: [u.value] })),
    spec.output,
  );
}

/** WGSL helpers shared by the kernels: the flat workgroup index for a 1-D workgroup of size WG. */
export const WGSL_COMMON = /* wgsl */ `
fn wgIndex() -> i32 {
  return i32(workgroupId.z * numWorkgroups.x * numWorkgroups.y + workgroupId.y * numWorkgroups.x + workgroupId.x);
}
`;

/** Frees an intermediate result of runProgram. */
export function release(backend: WebGPUBackend, t: tf.TensorInfo): void {
  backend.disposeData(t.dataId);
}

export const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

/** A kernel function's argument (inputs, backend, attrs). */
export type KernelArgs = Parameters<tf.KernelFunc>[0];
/** Elements of a shape. */
export const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
/** Invocations per workgroup of the element-wise and per-row kernels. */
export const WG = 256;

export const WEBGPU = 'webgpu';

/** Registers `kernelFunc` for `kernelName` on webgpu unless one of ours is there; with `replace`,
 * TF.js's own kernel of that name is unregistered first. */
export function registerOnWebGpu(kernelName: string, kernelFunc: tf.KernelFunc, replace = false): void {
  const existing = tf.getKernel(kernelName, WEBGPU);
  if (existing && (existing.kernelFunc as { peft?: true }).peft) return;
  if (existing) {
    if (!replace) return;
    tf.unregisterKernel(kernelName, WEBGPU);
  }
  (kernelFunc as { peft?: true }).peft = true;
  tf.registerKernel({ kernelName, backendName: WEBGPU, kernelFunc });
}

/** TF.js's own kernel of that name on webgpu (not one of ours), to fall back on. */
export function tfjsKernel(name: string): tf.KernelFunc | undefined {
  const k = tf.getKernel(name, WEBGPU);
  return k && !(k.kernelFunc as { peft?: true }).peft ? k.kernelFunc : undefined;
}
