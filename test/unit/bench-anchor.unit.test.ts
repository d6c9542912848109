/** The PyTorch anchor is started with the thread count of the step it is compared with, on every pool. */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { anchorEnv, CASES, runAnchor } from '../../sidecar/src/bench/bench';

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
