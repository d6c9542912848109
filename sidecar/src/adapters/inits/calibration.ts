/**
 * The data the data-driven inits need from a model: CorDA's input covariances and LoRA-GA's
 * full-weight gradients, both on calibration token ids (one sample per row).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../../models/architecture';
import type { LinearHook } from '../../models/forward';
import type { Model } from '../../models/model';

function checkCalib(model: Model, calibIds: tf.Tensor2D, what: string): void {
  if (model.arch.inputKind !== 'tokens') throw new RangeError(`${what} needs a text model; ${model.config.modelType} takes pixels`);
  if (calibIds.rank !== 2 || calibIds.shape[0] === 0 || calibIds.shape[1] === 0)
    throw new RangeError(`${what}: calibration ids must be [samples, tokens] with both non-zero, got [${calibIds.shape.join(', ')}]`);
  if (calibIds.dtype !== 'int32') throw new RangeError(`${what}: calibration ids must be int32, got ${calibIds.dtype}`);
}

function rows(ids: tf.Tensor2D, from: number, to: number): tf.Tensor2D {
  return tf.slice(ids, [from, 0], [to - from, ids.shape[1]]);
}

/**
 * CorDA covariances (PEFT `calib_cov_distribution`): each sample (row of `calibIds`) is one forward
 * pass in PEFT; for each target linear module its input X [tokens, in] is scaled by 1/|max(X)| (the
 * largest entry, not the largest magnitude, as PEFT does) and XᵀX is summed; the sum is divided by
 * the number of calls (a row's forward pass calls most modules once; not tokens). Rows are batched
 * `batchRows` at a time here (attention does not mix rows, so each row's inputs are those of its own
 * forward pass). Returns [in, in] row-major float64 per module path.
 */
export async function collectCovariances(
  model: Model,
  modules: readonly LinearModuleInfo[],
  calibIds: tf.Tensor2D,
  batchRows = 8,
): Promise<Map<string, Float64Array>> {
  checkCalib(model, calibIds, 'CorDA');
  const [samples, tokens] = calibIds.shape;
  const sums = new Map<string, Float64Array>(modules.map((m) => [m.module, new Float64Array(m.inFeatures * m.inFeatures)]));
  // Calls per module, as PEFT's sample_count: a module also called on something else than the rows'
  // tokens (DeBERTa's query_proj / key_proj on the relative embeddings) counts that call too.
  const counts = new Map<string, number>(modules.map((m) => [m.module, 0]));
  for (let from = 0; from < samples; from += batchRows) {
    const to = Math.min(samples, from + batchRows);
    const pending = new Map<string, tf.Tensor>();
    const hooks = new Map<string, LinearHook>();
    for (const m of modules) {
      hooks.set(m.module, (x, _layer, base) => {
        const b = to - from;
        const rowsInput = x.shape[0] === b * tokens;
        counts.set(m.module, counts.get(m.module)! + b);
        const cov = tf.tidy(() => {
          if (!rowsInput) {
            // Not the rows' tokens: one such call per row's forward pass in PEFT (a batch of 1), so b of them.
            const xn = tf.div(x, tf.abs(tf.max(x)));
            return tf.mul(tf.matMul(xn, xn, true, false), b);
          }
          const x3 = tf.reshape(x, [b, tokens, x.shape[1]]);
          const top = tf.abs(tf.max(x3, [1, 2], true)); // [b, 1, 1]
          const xn = tf.reshape(tf.div(x3, top), [b * tokens, x.shape[1]]);
          return tf.matMul(xn, xn, true, false); // Σ_rows X_bᵀ X_b
        });
        const prev = pending.get(m.module);
        pending.set(m.module, tf.keep(prev ? tf.add(prev, cov) : cov));
        if (prev) {
          prev.dispose();
          cov.dispose();
        }
        return base(x);
      });
    }
    try {
      const ids = rows(calibIds, from, to);
      // Only the hooks' inputs matter: a causal LM stops before its vocabulary-sized head.
      tf.tidy(() => {
        const run = { hooks: { linear: hooks } };
        if (!model.trunk({ inputIds: ids }, run)) model.forward({ inputIds: ids }, run);
      });
      ids.dispose();
      for (const m of modules) {
        const t = pending.get(m.module);
        if (!t) throw new Error(`CorDA: module ${m.module} was not called in the forward pass`);
        const data = await t.data();
        const acc = sums.get(m.module)!;
        for (let i = 0; i < acc.length; i++) acc[i]! += data[i]!;
      }
    } finally {
      tf.dispose([...pending.values()]);
    }
  }
  for (const [module, acc] of sums) {
    const n = counts.get(module)! || samples;
    for (let i = 0; i < acc.length; i++) {
      acc[i]! /= n;
      if (!Number.isFinite(acc[i]!)) throw new RangeError(`CorDA: the input covariance of ${module} is not finite (an all-zero or non-finite calibration input?)`);
    }
  }
  return sums;
}

/**
 * LoRA-GA gradients (PEFT `estimate_gradients` under a `train_step` that runs `loss.backward()` once
 * per batch of `batchRows` rows): the gradient of each target weight (stored layout) of the
 * causal-LM loss with labels = input ids, summed over the batches. PEFT then divides the
 * accumulated `.grad` by the number of backward passes its hook counted (`divideByBatches`, on by
 * default, does the same); the fixture's `grad.<module>` is that average. Runs in eval mode (PEFT
 * runs `model.train()`; with dropout 0 the two agree). Returns float32 per module path.
 */
export async function estimateGradients(
  model: Model,
  modules: readonly LinearModuleInfo[],
  calibIds: tf.Tensor2D,
  batchRows = 4,
  opts: { divideByBatches?: boolean } = {},
): Promise<Map<string, Float32Array>> {
  checkCalib(model, calibIds, 'LoRA-GA');
  if (model.arch.task !== 'causal-lm') throw new RangeError(`LoRA-GA gradients use the causal-LM loss; ${model.config.modelType} is a ${model.arch.task} model`);
  if (!Number.isInteger(batchRows) || batchRows <= 0) throw new RangeError(`LoRA-GA: batchRows must be a positive integer, got ${batchRows}`);
  const names = modules.map((m) => `${m.module}.weight`);
  const sums = new Map<string, Float64Array>();
  const samples = calibIds.shape[0];
  let batches = 0;
  for (let from = 0; from < samples; from += batchRows) {
    const ids = rows(calibIds, from, Math.min(samples, from + batchRows));
    try {
      const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, ids);
      try {
        for (const [i, name] of names.entries()) {
          const data = await grads.get(name)!.data();
          const module = modules[i]!.module;
          let acc = sums.get(module);
          if (!acc) sums.set(module, (acc = new Float64Array(data.length)));
          for (let k = 0; k < data.length; k++) acc[k]! += data[k]!;
        }
      } finally {
        tf.dispose([loss, ...grads.values()]);
      }
    } finally {
      ids.dispose();
    }
    batches++;
  }
  const div = opts.divideByBatches === false ? 1 : batches;
  return new Map([...sums].map(([m, acc]) => [m, Float32Array.from(acc, (v) => v / div)]));
}
