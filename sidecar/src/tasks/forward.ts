/** `forward` and `grads`: a model (+ adapter) on a batch from a safetensors file, results to another. */
import { baseLoadOptions } from './base-options';
import * as tf from '@tensorflow/tfjs-core';
import type { ForwardJobParams, GradsJobParams, JobResult } from '../../../src/protocol';
import { InputError } from '../errors';
import { prepareOutputFile } from '../io/atomic';
import { writeSafetensors, type HostTensor } from '../io/safetensors';
import { disposeBatch, fromTf, readInputBatch, type InputBatch } from '../io/tensors';
import type { JobContext } from '../jobs/context';
import { throwIfCancelled } from '../jobs/context';
import { inputLimits } from '../models/input-limits';
import { Model } from '../models/model';
import { loadAdapterHooks } from './adapter-hooks';
import { modelFolder } from '../spec/hub-cache';

/** The batch, checked against the model (ids, positions, token types, labels) so errors name the file. */
function readBatch(model: Model, file: string): Promise<InputBatch> {
  return readInputBatch(file, model.arch.inputKind, inputLimits(model.config));
}

export async function runForward(p: ForwardJobParams, ctx: JobContext): Promise<JobResult & { kind: 'forward' }> {
  await prepareOutputFile(p.out); // before the compute: a bad out path should not cost a forward pass
  const model = await Model.load(modelFolder(p.model), await baseLoadOptions(p.adapter));
  let adapter: Awaited<ReturnType<typeof loadAdapterHooks>> | undefined;
  let batch: InputBatch | undefined;
  try {
    // Inside the try: an adapter that fails to load must not leak the loaded model.
    adapter = p.adapter ? await loadAdapterHooks(model, p.adapter) : undefined;
    batch = await readBatch(model, p.inputs);
    throwIfCancelled(ctx.signal);
    const b = batch;
    const a = adapter;
    const logits = tf.tidy(() => model.forward(b.inputs, { hooks: a?.hooks, overrides: a?.params }));
    const out: Record<string, HostTensor> = { logits: await fromTf(logits) };
    let loss: number | undefined;
    if (b.labels) {
      const l = tf.tidy(() => model.loss(logits, b.labels!));
      out.loss = { dtype: 'F32', shape: [1], data: Float32Array.from(await l.data()) };
      loss = out.loss.data[0] as number;
      l.dispose();
    }
    logits.dispose();
    await writeSafetensors(p.out, out);
    ctx.progress({ done: 1, total: 1 });
    return { kind: 'forward', out: p.out, ...(loss !== undefined ? { loss } : {}) };
  } finally {
    if (batch) disposeBatch(batch);
    adapter?.dispose();
    model.dispose();
  }
}

export async function runGrads(p: GradsJobParams, ctx: JobContext): Promise<JobResult & { kind: 'grads' }> {
  await prepareOutputFile(p.out);
  const model = await Model.load(modelFolder(p.model));
  let batch: InputBatch | undefined;
  try {
    batch = await readBatch(model, p.inputs);
    if (!batch.labels) throw new InputError(p.inputs, 'labels', 'tensor missing: gradients need labels');
    throwIfCancelled(ctx.signal);
    const names = [...model.params.keys()];
    const { loss, grads } = model.lossAndGrads(names, batch.inputs, batch.labels);
    const out: Record<string, HostTensor> = { loss: { dtype: 'F32', shape: [1], data: Float32Array.from(await loss.data()) } };
    for (const [n, g] of grads) out[`grad.${n}`] = await fromTf(g);
    tf.dispose([loss, ...grads.values()]);
    await writeSafetensors(p.out, out);
    ctx.progress({ done: 1, total: 1 });
    return { kind: 'grads', out: p.out, loss: out.loss!.data[0] as number, tensors: grads.size };
  } finally {
    if (batch) disposeBatch(batch);
    model.dispose();
  }
}
