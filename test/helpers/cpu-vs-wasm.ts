/**
 * Shared by the wasm kernel-fix tests and the native kernel tests: deterministic inputs, running a
 * function on the cpu and the wasm backends, comparing them, and checking wasm for leaks.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { relMaxError } from './numeric';

export type Backend = 'cpu' | 'wasm';
export type Data = { values: Float32Array | Int32Array; shape: number[]; dtype: 'float32' | 'int32' };
type Fn = (...t: tf.Tensor[]) => tf.Tensor | tf.Tensor[];

/** Deterministic N(0,1)-ish floats (sum of uniforms from an LCG), times `scale`. */
export function randn(shape: number[], seed: number, scale = 1): Data {
  let s = (seed * 2654435761) >>> 0 || 1;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < values.length; i++) values[i] = (u() + u() + u() - u() - u() - u()) * scale;
  return { values, shape, dtype: 'float32' };
}
export const ints = (values: number[], shape = [values.length]): Data => ({ values: Int32Array.from(values), shape, dtype: 'int32' });

/** Runs `f` on fresh tensors made from `inputs` on the given backend; returns the outputs' values. */
export async function runOn(backend: Backend, inputs: Data[], f: Fn): Promise<{ values: Float32Array | Int32Array | Uint8Array; shape: number[] }[]> {
  await tf.setBackend(backend);
  return tf.tidy(() => {
    const ts = inputs.map((d) => tf.tensor(d.values, d.shape, d.dtype));
    const out = f(...ts);
    return (Array.isArray(out) ? out : [out]).map((t) => ({ values: t.dataSync(), shape: t.shape }));
  });
}

/** Asserts wasm's `f` matches cpu's `ref` (default `f`) within `tol` (max|Δ|/max|ref| per output); returns the wasm outputs. */
export async function compare(name: string, inputs: Data[], f: Fn, tol = 1e-5, ref: Fn = f) {
  const want = await runOn('cpu', inputs, ref);
  const got = await runOn('wasm', inputs, f);
  assert.equal(got.length, want.length, `${name}: output count`);
  got.forEach((g, i) => {
    assert.deepEqual(g.shape, want[i]!.shape, `${name}: output ${i} shape`);
    const err = relMaxError(g.values, want[i]!.values);
    assert.ok(err <= tol, `${name}: output ${i} max|Δ|/max|ref| = ${err.toExponential(3)} > ${tol}`);
  });
  return got;
}

const wasmDataIds = () => (tf.engine().findBackend('wasm') as unknown as { numDataIds(): number }).numDataIds();

/**
 * Runs `f` twice on wasm under tf.tidy: neither the tensor count nor the wasm data ids may grow.
 * With `kernelCheck`, IS_TEST is on, so the engine also checks that each kernel adds exactly its
 * outputs' data ids (it misfires on tfjs-core's customGrad ops such as logSoftmax).
 */
export async function assertNoLeakOnWasm(name: string, inputs: Data[], f: Fn, opts: { kernelCheck?: boolean } = {}) {
  await tf.setBackend('wasm');
  const ts = inputs.map((d) => tf.tensor(d.values, d.shape, d.dtype));
  const once = () => tf.tidy(() => void f(...ts));
  if (opts.kernelCheck) tf.env().set('IS_TEST', true);
  try {
    once();
    const tensors = tf.memory().numTensors;
    const ids = wasmDataIds();
    once();
    assert.equal(tf.memory().numTensors, tensors, `${name}: tensor count grew`);
    assert.equal(wasmDataIds(), ids, `${name}: wasm data ids grew`);
  } finally {
    if (opts.kernelCheck) tf.env().set('IS_TEST', false);
    tf.dispose(ts);
  }
}
