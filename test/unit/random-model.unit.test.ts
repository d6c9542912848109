/** randomModel is a function of (config, seed): the benchmark compares loss trajectories across backends and runs. */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchConfig, CASES } from '../../sidecar/src/bench/bench';
import { randomModel, tensorSeed } from '../../sidecar/src/models/init';

test('seed 0 gives the same model every time (TF.js reads a 0 seed as "unseeded")', async () => {
  await tf.setBackend('cpu');
  const cfg = { ...benchConfig(CASES[0]!), numLayers: 1, vocabSize: 16 };
  const a = randomModel(cfg, 0);
  const b = randomModel(cfg, 0);
  const c = randomModel(cfg, 1);
  try {
    const wte = [...a.params.keys()][0]!;
    for (const [name, t] of a.params) assert.deepEqual(await t.data(), await b.params.get(name)!.data(), name);
    assert.notDeepEqual(await a.params.get(wte)!.data(), await c.params.get(wte)!.data(), 'another seed, another model');
    assert.notEqual(tensorSeed(0, 0), 0);
    assert.equal(tensorSeed(2, 5), 2 * 100_003 + 5);
  } finally {
    [a, b, c].forEach((m) => m.dispose());
  }
});
