/**
 * AdamW on WebGPU (PeftAdamW, the native kernel's contract): [p', m', v'] from p, g and, after the
 * first step, m and v; train/adamw.ts's float32 order of operations:
 *   m = m0·β1 + g·(1−β1); v = v0·β2 + (g·g)·(1−β2); p' = p·(1−lr·wd) − ((m/c1) / (sqrt(v/c2) + eps))·lr
 * One element-wise program per output (runProgram has one output); p' recomputes m and v. GPU
 * division, sqrt and a possible multiply-add contraction make it equal to the composite to a few
 * ulps, not bitwise.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K, type AdamWScalars } from '../native/fused';
import { ceilDiv, registerOnWebGpu, runProgram, type Uniform, type KernelArgs, sizeOf, WG } from './program';


type Attrs = AdamWScalars;

export function registerAdamWKernels(): void {
  registerOnWebGpu(K.adamw, adamw);
}

const M_EXPR = (hasM: boolean) => (hasM ? 'M[i] * uniforms.b1 + G[i] * uniforms.omb1' : 'G[i] * uniforms.omb1');
const V_EXPR = (hasV: boolean) => (hasV ? 'V[i] * uniforms.b2 + (G[i] * G[i]) * uniforms.omb2' : '(G[i] * G[i]) * uniforms.omb2');

const elementwise = (body: string) => /* wgsl */ `
fn main(index : i32) {
  if (index >= uniforms.n) { return; }
  let i = index;
  ${body}
}`;

function adamw(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { p, g, m, v } = args.inputs as { p: tf.TensorInfo; g: tf.TensorInfo; m?: tf.TensorInfo; v?: tf.TensorInfo };
  const a = args.attrs as unknown as Attrs;
  const n = sizeOf(p.shape);
  // 1 − β is rounded from the double, as tf.mul(g, 1 − beta1) does (uniforms are float32).
  const uniforms: Uniform[] = [
    { name: 'n', type: 'int32', value: n },
    { name: 'b1', type: 'float32', value: a.beta1 },
    { name: 'omb1', type: 'float32', value: 1 - a.beta1 },
    { name: 'b2', type: 'float32', value: a.beta2 },
    { name: 'omb2', type: 'float32', value: 1 - a.beta2 },
    { name: 'decay', type: 'float32', value: a.decay },
    { name: 'c1', type: 'float32', value: a.c1 },
    { name: 'c2', type: 'float32', value: a.c2 },
    { name: 'eps', type: 'float32', value: a.eps },
    { name: 'lr', type: 'float32', value: a.lr },
  ];
  const hasM = !!m;
  const hasV = !!v;
  const spec = { outputShape: p.shape, workgroup: WG, workgroups: ceilDiv(n, WG), uniforms };
  // Every uniform is declared in each program; one use of `uniforms` suffices for the layout.
  const mOut = runProgram(backend, { ...spec, key: `adamw-m:${hasM}`, inputs: hasM ? { G: g, M: m } : { G: g }, code: elementwise(`result[i] = ${M_EXPR(hasM)};`) });
  const vOut = runProgram(backend, { ...spec, key: `adamw-v:${hasV}`, inputs: hasV ? { G: g, V: v } : { G: g }, code: elementwise(`result[i] = ${V_EXPR(hasV)};`) });
  const inputs: Record<string, tf.TensorInfo> = { P: p, G: g };
  if (m) inputs.M = m;
  if (v) inputs.V = v;
  const pOut = runProgram(backend, {
    ...spec,
    key: `adamw-p:${hasM}:${hasV}:${a.hasDecay}`,
    inputs,
    code: elementwise(`
  let m = ${M_EXPR(hasM)};
  let v = ${V_EXPR(hasV)};
  let p = ${a.hasDecay ? 'P[i] * uniforms.decay' : 'P[i]'};
  let u = (m / uniforms.c1) / (sqrt(v / uniforms.c2) + uniforms.eps);
  result[i] = p - u * uniforms.lr;`),
  });
  return [pOut, mOut, vOut];
}
