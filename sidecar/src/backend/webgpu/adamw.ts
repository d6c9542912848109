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
 * same bind groups every step, see dispatch.ts).
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K, type AdamWScalars } from '../native/fused';
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
  const data = t && backend.tensorMap.get(t.dataId);
  if (!t || !data || data.refCount !== 1 || data.external || !(data.resource instanceof GPUBuffer)) return undefined;
  const out = backend.makeTensorInfo(t.shape, t.dtype);
  backend.tensorMap.get(out.dataId)!.resource = data.resource;
  data.resource = undefined;
  return out;
}

function adamw(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { p, g, m, v, scalars } = args.inputs as { p: tf.TensorInfo; g: tf.TensorInfo; m?: tf.TensorInfo; v?: tf.TensorInfo; scalars?: tf.TensorInfo };
  const a = args.attrs as unknown as Attrs;
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
  const mInPlace = a.inPlace ? takeOver(backend, m) : undefined;
  const mOut = runProgram(backend, {
    ...spec,
    uniforms: [count, ...beta1],
    key: `adamw-m:${!!m}:${!!mInPlace}`,
    inputs: m && !mInPlace ? { G: g, M: m } : { G: g },
    output: mInPlace,
    code: () => elementwise(`result[i] = ${M_EXPR(mInPlace ? 'result[i]' : m && 'M[i]')};`),
  });
  const vInPlace = a.inPlace ? takeOver(backend, v) : undefined;
  const vOut = runProgram(backend, {
    ...spec,
    uniforms: [count, ...beta2],
    key: `adamw-v:${!!v}:${!!vInPlace}`,
    inputs: v && !vInPlace ? { G: g, V: v } : { G: g },
    output: vInPlace,
    code: () => elementwise(`result[i] = ${V_EXPR(vInPlace ? 'result[i]' : v && 'V[i]')};`),
  });
  return [pOut, mOut, vOut];
}
