/**
 * WebGPU kernel tests run on whatever adapter Dawn offers; on machines without a GPU that is Mesa's
 * llvmpipe through EGL (Dawn's OpenGL backend, compatibility mode; test/webgpu/setup.sh installs
 * it). Correctness only: timings on a software adapter mean nothing.
 *
 * Dawn's Vulkan backend (the one Linux GPUs get) runs them too on Mesa's lavapipe, version 23 or
 * later (Debian 12's 22.3 lacks a feature Dawn requires; bookworm-backports' mesa-vulkan-drivers
 * works): `PEFT_LAB_DAWN_FLAGS=backend=vulkan` with `VK_ICD_FILENAMES` naming its lvp_icd json.
 * The whole tier passed that way on 2026-11-27 (13 minutes on 2 cores; not part of `npm test`).
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { initBackend } from '../../sidecar/src/backend';

export async function useWebGpu(): Promise<string> {
  process.env.EGL_PLATFORM ??= 'surfaceless';
  process.env.PEFT_LAB_DAWN_FLAGS ??= 'backend=opengl';
  const info = await initBackend('webgpu', () => {});
  return info.device;
}

/** Runs `f` on the pure-JS cpu backend (the composite ops: the reference) and returns its arrays. */
export async function onCpu<T>(f: () => T): Promise<T> {
  const prev = tf.getBackend();
  await tf.setBackend('cpu');
  try {
    return f();
  } finally {
    await tf.setBackend(prev);
  }
}

/** max|a − b| ≤ atol + rtol·max|b|, with the worst element named. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, what: string, atol = 0): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  assert.ok(worst <= atol + rtol * maxRef, `${what}: max|Δ| ${worst} at ${at} (got ${actual[at]}, want ${expected[at]}), limit ${atol + rtol * maxRef}`);
}

/** Deterministic values in [-scale, scale). */
export function values(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}
