/** Shared helpers for numeric tests: fixture paths, the test backend, tolerance checks, leak checks. */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { initBackend } from '../../sidecar/src/backend';
import { vitRuntimeName } from '../../sidecar/src/models/vit';
import type { BackendPreference } from '../../src/protocol';

export const SHARED = join(__dirname, '..', '..', '..', 'shared');
export const FIXTURES = join(SHARED, 'fixtures');
export const fixture = (...p: string[]) => join(FIXTURES, ...p);

/** The backend numeric tests run on: wasm (CI's) unless PEFT_LAB_TEST_BACKEND names another. */
export async function useTestBackend(): Promise<string> {
  const pref = (process.env.PEFT_LAB_TEST_BACKEND ?? 'wasm') as BackendPreference;
  const info = await initBackend(pref);
  return info.name;
}

/** max|a − b| / max|ref|: the fixtures' tolerance measure. */
export function relMaxError(actual: ArrayLike<number>, ref: ArrayLike<number>): number {
  assert.equal(actual.length, ref.length, 'length mismatch');
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(actual[i]! - ref[i]!);
    if (!(d <= maxDiff)) maxDiff = d; // NaN propagates as a failure
    maxRef = Math.max(maxRef, Math.abs(ref[i]!));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

export function assertClose(name: string, actual: ArrayLike<number>, ref: ArrayLike<number>, tol: number): number {
  const err = relMaxError(actual, ref);
  assert.ok(err <= tol, `${name}: max|Δ|/max|ref| = ${err.toExponential(3)} exceeds ${tol}`);
  return err;
}

/** Runs fn twice and checks the second run leaves no more tensors than the first (TF.js's expectNoLeakedTensors). */
export async function assertNoLeak<T>(fn: () => Promise<T> | T): Promise<T> {
  await fn();
  const before = tf.memory().numTensors;
  const r = await fn();
  assert.equal(tf.memory().numTensors, before, 'tensor count grew across a repeated call');
  return r;
}

/**
 * transformers 5 names some ViT modules differently at run time than in the checkpoint, and the
 * fixtures' reference gradients use the run-time names; ours are named as in model.safetensors.
 */
export function refGradName(name: string): string {
  return name.startsWith('vit.') ? vitRuntimeName(name) : name;
}
