/**
 * AdamW on WebGPU (PeftAdamW, the native kernel's contract): [p', m', v'] from p, g and, after the
 * first step, m and v; train/adamw.ts's float32 order of operations:
 *   m = m0·β1 + g·(1−β1); v = v0·β2 + (g·g)·(1−β2); p' = p·(1−lr·wd) − ((m/c1) / (sqrt(v/c2) + eps))·lr
 * One element-wise program per output (runProgram has one output); p' recomputes m and v, so it runs
 * first. GPU division, sqrt and a possible multiply-add contraction make it equal to the composite
 * to a few ulps, not bitwise.
 *
 * With `inPlace` (the caller disposes p, m and v right after, as train/adamw.ts does), each output
 * takes over its input's GPU buffer and is computed in it, when no other tensor shares that data:
 * parameters and moments then keep their buffers for the whole run (no second copy of each, and the
 * same bind groups every step, see dispatch.ts). When all three can, one dispatch of this module's
 * own pipeline (p, m, v bound read-write) updates them together, as the native kernel does: a
 * third of the dispatches, and g, p, m, v read once.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K, type AdamWScalars } from '../native/fused';
import { rawRecorder } from './dispatch';
import { ceilDiv, registerOnWebGpu, runProgram, type Uniform, type KernelArgs, sizeOf, WG } from './program';

type Attrs = AdamWScalars;

export function registerAdamWKernels(): void {
  registerOnWebGpu(K.adamw, adamw);
}

/** The old value of an operand: its input array, or `result` when updated in place. */
const M_EXPR = (m: string | undefined) => (m ? `${m} * uniforms.b1 + G[i] * uniforms.omb1` : 'G[i] * uniforms.omb1');
const V_EXPR = (v: string | undefined) => (v ? `${v} * uniforms.b2 + (G[i] * G[i]) * uniforms.omb2` : '(G[i] * G[i]) * uniforms.omb2');

const elementwise = (body: string) => /* wgsl */ `
fn main(index : i32) {
  if (index >= uniforms.n) { return; }
  let i = index;
  ${body}
}`;

/**
 * A new tensor that takes over `t`'s GPU buffer (t is left without one), when `t` is the only tensor
 * on that data; else undefined.
 */
function takeOver(backend: WebGPUBackend, t: tf.TensorInfo | undefined): tf.TensorInfo | undefined {
  if (!ownsBuffer(backend, t)) return undefined;
  const data = backend.tensorMap.get(t.dataId)!;
  const out = backend.makeTensorInfo(t.shape, t.dtype);
  backend.tensorMap.get(out.dataId)!.resource = data.resource;
  data.resource = undefined;
  return out;
}

/** Whether `t` is the only tensor on its data, on a GPU buffer of this backend's own. */
function ownsBuffer(backend: WebGPUBackend, t: tf.TensorInfo | undefined): t is tf.TensorInfo {
  const data = t && backend.tensorMap.get(t.dataId);
  return !!data && data.refCount === 1 && !data.external && data.resource instanceof GPUBuffer;
}

const WG_FUSED = 256;
const FUSED_CODE = (hasDecay: boolean) => /* wgsl */ `
struct U { n : u32, b1 : f32, omb1 : f32, b2 : f32, omb2 : f32, eps : f32, pad0 : f32, pad1 : f32 };
@group(0) @binding(0) var<storage, read_write> P : array<f32>;
@group(0) @binding(1) var<storage, read_write> M : array<f32>;
@group(0) @binding(2) var<storage, read_write> V : array<f32>;
@group(0) @binding(3) var<storage, read> G : array<f32>;
@group(0) @binding(4) var<storage, read> S : array<f32>;
@group(0) @binding(5) var<uniform> u : U;
@compute @workgroup_size(${WG_FUSED})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = (wid.y * nwg.x + wid.x) * ${WG_FUSED}u + lid;
  if (i >= u.n) { return; }
  let g = G[i];
  let m = M[i] * u.b1 + g * u.omb1;
  let v = V[i] * u.b2 + (g * g) * u.omb2;
  M[i] = m;
  V[i] = v;
  let p = ${hasDecay ? 'P[i] * S[1]' : 'P[i]'};
  let upd = (m / S[2]) / (sqrt(v / S[3]) + u.eps);
  P[i] = p - upd * S[0];
}`;

const fusedPipelines = new WeakMap<GPUDevice, Map<boolean, GPUComputePipeline>>();
function fusedPipeline(device: GPUDevice, hasDecay: boolean): GPUComputePipeline {
  let byDecay = fusedPipelines.get(device);
  if (!byDecay) fusedPipelines.set(device, (byDecay = new Map()));
  let pipeline = byDecay.get(hasDecay);
  if (!pipeline) {
    const module = device.createShaderModule({ code: FUSED_CODE(hasDecay) });
    byDecay.set(hasDecay, (pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } })));
  }
  return pipeline;
}

/** p, m and v updated together in their own buffers (one dispatch); undefined when it cannot. */
function adamwFusedInPlace(backend: WebGPUBackend, p: tf.TensorInfo, g: tf.TensorInfo, m: tf.TensorInfo, v: tf.TensorInfo, scalars: tf.TensorInfo, a: Attrs): tf.TensorInfo[] | undefined {
  const record = rawRecorder(backend);
  if (!record || !ownsBuffer(backend, p) || !ownsBuffer(backend, m) || !ownsBuffer(backend, v)) return undefined;
  backend.uploadToGPU(g.dataId);
  backend.uploadToGPU(scalars.dataId);
  const n = sizeOf(p.shape);
  const uniforms = new ArrayBuffer(32);
  new Uint32Array(uniforms, 0, 1)[0] = n;
  new Float32Array(uniforms, 4, 5).set([a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2, a.eps]);
  const groups = ceilDiv(n, WG_FUSED);
  const x = Math.min(groups, backend.device.limits.maxComputeWorkgroupsPerDimension);
  const buffer = (t: tf.TensorInfo) => backend.tensorMap.get(t.dataId)!.resource as GPUBuffer;
  const outputs = [takeOver(backend, p)!, takeOver(backend, m)!, takeOver(backend, v)!];
  const operands = [...outputs, g, scalars];
  record(fusedPipeline(backend.device, a.hasDecay), operands.map(buffer), uniforms, [x, ceilDiv(groups, x), 1], operands.map((t) => t.dataId), 'AdamWInPlace');
  return outputs;
}

function adamw(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { p, g, m, v, scalars } = args.inputs as { p: tf.TensorInfo; g: tf.TensorInfo; m?: tf.TensorInfo; v?: tf.TensorInfo; scalars?: tf.TensorInfo };
  const a = args.attrs as unknown as Attrs;
  const fused = a.inPlace && m && v && scalars ? adamwFusedInPlace(backend, p, g, m, v, scalars, a) : undefined;
  if (fused) return fused;
  const n = sizeOf(p.shape);
  // 1 − β is rounded from the double, as tf.mul(g, 1 − beta1) does (uniforms are float32).
  const count: Uniform = { name: 'n', type: 'int32', value: n };
  const beta1: Uniform[] = [
    { name: 'b1', type: 'float32', value: a.beta1 },
    { name: 'omb1', type: 'float32', value: 1 - a.beta1 },
  ];
  const beta2: Uniform[] = [
    { name: 'b2', type: 'float32', value: a.beta2 },
    { name: 'omb2', type: 'float32', value: 1 - a.beta2 },
  ];
  const spec = { outputShape: p.shape, workgroup: WG, workgroups: ceilDiv(n, WG) };
  // S = [lr, decay, c1, c2]: the step's tensor (fused.ts adamWStepScalars) when given, so that the
  // uniforms and bind groups repeat from step to step (dispatch.ts); else one made for this call.
  const own = scalars ? undefined : backend.makeTensorInfo([4], 'float32', new Float32Array([a.lr, a.decay, a.c1, a.c2]));
  const pInPlace = a.inPlace ? takeOver(backend, p) : undefined;
  const inputs: Record<string, tf.TensorInfo> = pInPlace ? { G: g } : { P: p, G: g };
  if (m) inputs.M = m;
  if (v) inputs.V = v;
  inputs.S = scalars ?? own!;
  const pOut = runProgram(backend, {
    ...spec,
    uniforms: [count, ...beta1, ...beta2, { name: 'eps', type: 'float32', value: a.eps }],
    key: `adamw-p:${!!m}:${!!v}:${a.hasDecay}:${!!pInPlace}`,
    inputs,
    output: pInPlace,
    code: () =>
      elementwise(`
  let m = ${M_EXPR(m && 'M[i]')};
  let v = ${V_EXPR(v && 'V[i]')};
  let p0 = ${pInPlace ? 'result[i]' : 'P[i]'};
  let p = ${a.hasDecay ? 'p0 * S[1]' : 'p0'};
  let u = (m / S[2]) / (sqrt(v / S[3]) + uniforms.eps);
  result[i] = p - u * S[0];`),
  });
  if (own) backend.disposeData(own.dataId);
  // m' and v', each from its old value (in its own buffer when it can take it over) and g.
  const moment = (name: 'm' | 'v', old: tf.TensorInfo | undefined, expr: (old: string | undefined) => string, betas: Uniform[]) => {
    const inPlace = a.inPlace ? takeOver(backend, old) : undefined;
    const array = name.toUpperCase();
    return runProgram(backend, {
      ...spec,
      uniforms: [count, ...betas],
      key: `adamw-${name}:${!!old}:${!!inPlace}`,
      inputs: old && !inPlace ? { G: g, [array]: old } : { G: g },
      output: inPlace,
      code: () => elementwise(`result[i] = ${expr(inPlace ? 'result[i]' : old && `${array}[i]`)};`),
    });
  };
  const mOut = moment('m', m, M_EXPR, beta1);
  const vOut = moment('v', v, V_EXPR, beta2);
  return [pOut, mOut, vOut];
}
