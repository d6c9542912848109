/**
 * The cached dispatch path (backend/webgpu/dispatch.ts) and AdamW's in-place update: the uniform
 * bytes equal TF.js's own, repeated training steps create no bind groups or uniform slots, and
 * in-place updates keep their buffers without touching tensors that share the data.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { loraFactory } from '../../sidecar/src/adapters/bench-lora';
import { clearPendingDeviceError, dispatchStats, packUniforms } from '../../sidecar/src/backend/webgpu/dispatch';
import { benchConfig, type BenchCase } from '../../sidecar/src/bench/bench';
import { randomModel } from '../../sidecar/src/models/init';
import { AdamW } from '../../sidecar/src/train/adamw';
import { assertClose, onCpu, useWebGpu, values } from '../helpers/webgpu';

before(async () => {
  await useWebGpu();
});

const backend = () => tf.backend() as WebGPUBackend;
type Fields = Array<{ type: string; data: number[] }>;

test('packUniforms lays out every field width as TF.js makeUniforms does', () => {
  const b = backend() as unknown as { makeUniforms(f: Fields): unknown; queue: GPUQueue };
  const cases: Fields[] = [
    [{ type: 'float32', data: [NaN] }, { type: 'float32', data: [Infinity] }, { type: 'int32', data: [2, 3] }, { type: 'int32', data: [3, 1] }],
    [{ type: 'int32', data: [7] }, { type: 'int32', data: [4, 5, 6] }, { type: 'float32', data: [0.5] }],
    [{ type: 'int32', data: [1, 2, 3, 4, 5] }, { type: 'int32', data: [9] }, { type: 'int32', data: [1, 2] }, { type: 'uint32', data: [4000000000] }],
    [{ type: 'int32', data: [1, 2, 3, 4, 5, 6] }, { type: 'float32', data: [1e-5, 2] }, { type: 'int32', data: [] }, { type: 'int32', data: [1, 2, 3, 4] }],
  ];
  for (const fields of cases) {
    let written: Uint8Array | undefined;
    const writeBuffer = b.queue.writeBuffer;
    b.queue.writeBuffer = (_buffer: GPUBuffer, _offset: number, data: ArrayBuffer | ArrayBufferView, dataOffset = 0, size?: number) => {
      written = new Uint8Array(data as ArrayBuffer, dataOffset, size).slice();
    };
    try {
      b.makeUniforms(fields.map((f) => ({ ...f, data: [...f.data] })));
    } finally {
      b.queue.writeBuffer = writeBuffer;
    }
    assert.ok(written, 'makeUniforms wrote the block');
    assert.deepEqual(new Uint8Array(packUniforms(fields)), written, JSON.stringify(fields));
  }
});

const CASE: BenchCase = { case: 'test', d: 32, layers: 2, heads: 4, seq: 17, batch: 2, vocab: 40, rank: 4 };

/** `steps` LoRA or full steps; each step's loss and the dispatch counters' change over it. */
async function train(mode: 'lora' | 'full', steps: number) {
  const model = randomModel(benchConfig(CASE), 5);
  const adapter = mode === 'lora' ? loraFactory()(model, CASE.rank, 2 * CASE.rank, ['c_attn']) : undefined;
  const trainable = adapter?.trainable ?? model.params;
  const names = [...trainable.keys()];
  const ids = tf.tensor2d(Array.from({ length: CASE.batch * (CASE.seq - 1) }, (_, i) => (i * 5 + 1) % CASE.vocab), [CASE.batch, CASE.seq - 1], 'int32');
  const opt = new AdamW({ lr: 1e-2, weightDecay: 0.01 });
  const stats = dispatchStats(tf.backend());
  const out: Array<{ loss: number; bindGroups: number; slots: number; dispatches: number }> = [];
  for (let i = 0; i < steps; i++) {
    const before = stats && { ...stats };
    const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, ids, { hooks: adapter?.hooks, extra: adapter?.trainable, training: true });
    opt.step(trainable, grads);
    const value = (await loss.data())[0]!;
    tf.dispose([loss, ...grads.values()]);
    out.push({
      loss: value,
      bindGroups: stats && before ? stats.bindGroupsCreated - before.bindGroupsCreated : -1,
      slots: stats && before ? stats.uniformSlotsWritten - before.uniformSlotsWritten : -1,
      dispatches: stats && before ? stats.dispatches - before.dispatches : -1,
    });
  }
  tf.dispose(ids);
  opt.dispose();
  adapter?.dispose();
  model.dispose();
  return out;
}

for (const mode of ['lora', 'full'] as const) {
  test(`${mode}: from the third step on, a step creates no bind groups or uniform slots; losses match the cpu backend`, async () => {
    const ref = await onCpu(() => train(mode, 5));
    const before = tf.memory().numTensors;
    const got = await train(mode, 5);
    assert.equal(tf.memory().numTensors, before, 'no tensors leak');
    assertClose(
      got.map((s) => s.loss),
      ref.map((s) => s.loss),
      2e-4,
      'losses',
    );
    assert.ok(got[0]!.dispatches > 50, `dispatches went through the cached path (${got[0]!.dispatches})`);
    assert.ok(got[0]!.bindGroups > 0, 'the first step creates bind groups');
    for (const s of got.slice(2)) {
      assert.equal(s.bindGroups, 0, `bind groups created in a later step: ${JSON.stringify(got)}`);
      assert.equal(s.slots, 0, `uniform slots written in a later step: ${JSON.stringify(got)}`);
      assert.equal(s.dispatches, got[1]!.dispatches, "every later step records the same dispatches");
    }
  });
}

test('AdamW updates p, m and v in their own buffers in one dispatch, but not data another tensor shares', async () => {
  const resource = (t: tf.Tensor) => backend().tensorMap.get(t.dataId)?.resource;
  const params = new Map([['w', tf.tensor2d(values(12 * 5, 1), [12, 5])]]);
  const grad = () => new Map([['w', tf.tensor2d(values(12 * 5, 2), [12, 5])]]);
  const opt = new AdamW({ lr: 1e-2, weightDecay: 0.1 });
  const stepWith = (g: Map<string, tf.Tensor>) => {
    opt.step(params, g);
    tf.dispose([...g.values()]);
  };
  stepWith(grad()); // uploads w; m and v start here
  const buffers = [resource(params.get('w')!), resource(opt.state.m.get('w')!), resource(opt.state.v.get('w')!)];
  assert.ok(buffers.every((b) => b instanceof GPUBuffer));
  const stats = dispatchStats(tf.backend())!;
  const g2 = grad();
  let dispatches = stats.dispatches;
  stepWith(g2);
  assert.equal(stats.dispatches - dispatches, 1, 'p, m and v in one dispatch');
  assert.deepEqual([resource(params.get('w')!), resource(opt.state.m.get('w')!), resource(opt.state.v.get('w')!)], buffers, 'updated in place');
  // A clone shares w's data: the update must leave it alone and take a new buffer.
  const kept = params.get('w')!.clone();
  const keptValues = (await kept.data()).slice();
  const g3 = grad();
  dispatches = stats.dispatches;
  stepWith(g3);
  assert.equal(stats.dispatches - dispatches, 3, 'one program per output');
  assert.notEqual(resource(params.get('w')!), buffers[0]);
  assert.deepEqual(await kept.data(), keptValues, 'the shared tensor kept its values');
  const w = (await params.get('w')!.data()).slice();
  // Same three steps on the cpu backend (composite AdamW).
  const ref = await onCpu(async () => {
    const p = new Map([['w', tf.tensor2d(values(12 * 5, 1), [12, 5])]]);
    const o = new AdamW({ lr: 1e-2, weightDecay: 0.1 });
    for (let i = 0; i < 3; i++) {
      const g = grad();
      o.step(p, g);
      tf.dispose([...g.values()]);
    }
    const r = (await p.get('w')!.data()).slice();
    tf.dispose([...p.values()]);
    o.dispose();
    return r;
  });
  assertClose(w, ref, 1e-6, 'w after three steps');
  tf.dispose([kept, ...params.values()]);
  opt.dispose();
});

test('AddN over more inputs than a shader may bind (8 storage buffers by default) sums in groups, equal to the cpu backend', async () => {
  const limit = backend().device.limits.maxStorageBuffersPerShaderStage;
  for (const n of [limit - 1, limit, 3 * limit + 2, limit * limit + 1]) {
    const parts = Array.from({ length: n }, (_, i) => values(37, 100 + i));
    const sum = async () => {
      const ts = parts.map((p) => tf.tensor1d(p));
      const y = tf.addN(ts);
      const out = (await y.data()) as Float32Array;
      // The inputs are the caller's: still readable after the sum.
      assertClose((await ts.at(-1)!.data()) as Float32Array, parts.at(-1)!, 0, `${n} inputs: last input intact`);
      tf.dispose([y, ...ts]);
      return out;
    };
    // The group sums are backend data the engine never sees: count the backend's.
    const before = backend().numDataIds();
    const got = await sum();
    assert.equal(backend().numDataIds(), before, `${n} inputs: no leak`);
    const want = await onCpu(() => {
      const ts = parts.map((p) => tf.tensor1d(p));
      const y = tf.addN(ts);
      const out = y.dataSync() as Float32Array;
      tf.dispose([y, ...ts]);
      return out;
    });
    assertClose(got, want, 1e-6, `addN of ${n}`);
  }
});

test('a device error (Dawn reports it as an event and carries on) fails the next read-back with its message, once', async () => {
  // Large enough to run on the GPU (TF.js hands small ops on host values to its CPU kernels).
  const x = tf.range(0, 4096, 1, 'float32');
  backend().device.createBuffer({ size: 4, usage: 0xffffff });
  // The event is delivered asynchronously, before or with the read's completion.
  await new Promise((r) => setTimeout(r, 50));
  const y = tf.add(x, 1);
  await assert.rejects(y.data(), /WebGPU device error; the results since are invalid: .*BufferUsage/);
  const z = tf.add(x, 2);
  assert.deepEqual(Array.from(((await z.data()) as Float32Array).slice(0, 3)), [2, 3, 4], 'the next read is clean');
  // An error left pending when a job ends (after its last read) is dropped at the next job's start.
  backend().device.createBuffer({ size: 4, usage: 0xffffff });
  await new Promise((r) => setTimeout(r, 50));
  clearPendingDeviceError(backend());
  const w = tf.add(x, 3);
  assert.equal(((await w.data()) as Float32Array)[0], 3, 'cleared: the read succeeds');
  tf.dispose([x, y, z, w]);
});

// Last in this file: it destroys the device.
test('a lost device fails every read from then on', async () => {
  const x = tf.range(0, 4096, 1, 'float32');
  const y = tf.add(x, 1);
  await y.data();
  backend().device.destroy();
  await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 2; i++) await assert.rejects(tf.add(x, i).data(), /WebGPU device lost \(destroyed\)/);
});
