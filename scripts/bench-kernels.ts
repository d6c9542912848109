/**
 * Micro-benchmark of the wasm matmul fixes: GFLOP/s before and after registerWasmKernelFixes().
 *   node --import tsx scripts/bench-kernels.ts [--reps N]
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { registerWasmKernelFixes } from '../sidecar/src/backend/wasm-kernels';

const argReps = process.argv.indexOf('--reps');
const REPS = argReps > 0 ? Number(process.argv[argReps + 1]) : 0;

interface Case {
  name: string;
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
  flops: number;
}
const CASES: Case[] = [
  // A projection's backward / tied-embedding shape: [B*T, d] x [d', d]^T.
  { name: '[64*16,128] x [384,128]^T (transposeB)', a: [64 * 16, 128], b: [384, 128], transposeB: true, flops: 2 * 1024 * 128 * 384 },
  // The same product without the transpose, for reference: XNNPACK's fast path even before the fixes.
  { name: '[64*16,128] x [128,384] (plain 2-D)', a: [64 * 16, 128], b: [128, 384], flops: 2 * 1024 * 128 * 384 },
  { name: '[64*16,128]^T x [64*16,384] (transposeA, weight grad)', a: [64 * 16, 128], b: [64 * 16, 384], transposeA: true, flops: 2 * 1024 * 128 * 384 },
  // Attention: batch*heads = 64, seq 64, head dim 32.
  { name: '[64,64,32] x [64,32,64] (batched, attention values)', a: [64, 64, 32], b: [64, 32, 64], flops: 2 * 64 * 64 * 32 * 64 },
  { name: '[64,64,32] x [64,64,32]^T (batched, attention scores)', a: [64, 64, 32], b: [64, 64, 32], transposeB: true, flops: 2 * 64 * 64 * 32 * 64 },
];

function time(c: Case): { ms: number; gflops: number } {
  const a = tf.randomNormal(c.a);
  const b = tf.randomNormal(c.b);
  const run = () => tf.tidy(() => void tf.matMul(a, b, c.transposeA, c.transposeB).dataSync());
  run(); // warm-up (also creates XNNPACK operators and grows the heap)
  // Enough repetitions for ~0.5 s, at least 3.
  let reps = REPS;
  if (!reps) {
    const t0 = performance.now();
    run();
    reps = Math.max(3, Math.min(200, Math.round(500 / Math.max(performance.now() - t0, 0.01))));
  }
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    run();
    times.push(performance.now() - t0);
  }
  tf.dispose([a, b]);
  times.sort((x, y) => x - y);
  const ms = times[Math.floor(times.length / 2)];
  return { ms, gflops: c.flops / (ms * 1e6) };
}

async function main(): Promise<void> {
  if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend failed to initialise');
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  console.log(`tfjs ${tf.version_core}, wasm${simd ? ' SIMD' : ''}, ${getThreadsCount()} thread(s), node ${process.version}; median of N runs\n`);
  const before = CASES.map(time);
  registerWasmKernelFixes();
  const after = CASES.map(time);
  const w = Math.max(...CASES.map((c) => c.name.length));
  console.log(`${'matmul'.padEnd(w)}  ${'before'.padStart(16)}  ${'after'.padStart(16)}  speed-up`);
  CASES.forEach((c, i) => {
    const f = (r: { ms: number; gflops: number }) => `${r.ms.toFixed(2).padStart(7)} ms ${r.gflops.toFixed(1).padStart(5)} GF/s`;
    console.log(`${c.name.padEnd(w)}  ${f(before[i])}  ${f(after[i])}  ${(before[i].ms / after[i].ms).toFixed(1)}x`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
