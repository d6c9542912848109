/** The PyTorch anchor is started with the thread count of the step it is compared with, on every pool. */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { anchorEnv, CASES, kernelTimes, runAnchor } from '../../sidecar/src/bench/bench';

test('anchorEnv pins the BLAS and OpenMP pools to the thread count and keeps the rest of the environment', () => {
  const env = anchorEnv(3, { PATH: '/bin', OPENBLAS_NUM_THREADS: '16' });
  assert.deepEqual(env, { PATH: '/bin', OPENBLAS_NUM_THREADS: '3', OMP_NUM_THREADS: '3', MKL_NUM_THREADS: '3' });
});

test('runAnchor passes the case flags and the thread environment to the anchor script', () => {
  const small = CASES.find((c) => c.case === 'small')!;
  const r = runAnchor(resolve('test/fixtures/fake-anchor/anchor.cjs'), process.execPath, small, 'full', 2, 1);
  assert.ok(!('error' in r), JSON.stringify(r));
  assert.deepEqual(r, { tokens_per_s: 2000, step_ms: small.d });
});

type Profile = Parameters<typeof kernelTimes>[0];
const profileOf = (kernels: [string, number | { error: string }, number[][]?][]): Profile =>
  ({ kernels: kernels.map(([name, kernelTimeMs, inputShapes = [[1]]]) => ({ name, kernelTimeMs, inputShapes })) }) as unknown as Profile;

test('kernelTimes sums calls per kernel, largest total first', () => {
  const rows = kernelTimes(profileOf([['A', 1.5], ['B', 4], ['A', 2.25], ['C', { error: 'no timer' }]]));
  assert.deepEqual(rows, [
    { kernel: 'B', calls: 1, ms: 4 },
    { kernel: 'A', calls: 2, ms: 3.75 },
    { kernel: 'C', calls: 1, ms: 0 },
  ]);
});

test('kernelTimes reports no times (null) when any time is invalid, as on Dawn\'s null device', () => {
  for (const bad of [-453.95, Number.NaN, Number.POSITIVE_INFINITY]) {
    const rows = kernelTimes(profileOf([['A', 1], ['B', bad], ['A', 2]]));
    assert.deepEqual(rows.map((r) => [r.kernel, r.calls, r.ms]), [['A', 2, null], ['B', 1, null]], String(bad));
  }
});

test('kernelTimes byShape: one row per kernel and input shapes, largest total first', () => {
  const mm = [[2048, 768], [768, 2304]];
  const rows = kernelTimes(profileOf([['MatMul', 0.3, mm], ['Add', 0.01, [[2048, 768], []]], ['MatMul', 0.25, mm], ['MatMul', 0.1, [[8, 8], [8, 8]]]]), { byShape: true });
  assert.deepEqual(rows, [
    { kernel: 'MatMul', shapes: '2048x768 768x2304', calls: 2, ms: 0.55 },
    { kernel: 'MatMul', shapes: '8x8 8x8', calls: 1, ms: 0.1 },
    { kernel: 'Add', shapes: '2048x768 scalar', calls: 1, ms: 0.01 },
  ]);
});
