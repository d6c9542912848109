/**
 * The data the data-driven inits need from a model: CorDA's input covariances and LoRA-GA's
 * full-weight gradients, both on calibration samples (token ids, one sample per row).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../../models/architecture';
import type { LinearHook } from '../../models/forward';
import type { Model } from '../../models/model';

/** One calibration sample: its token ids and, for a sentence pair, its token types. */
export interface CalibrationRow {
  ids: Int32Array;
  typeIds?: Int32Array;
}
/** Calibration samples: int32 ids [samples, tokens] of one length, or rows of any lengths. */
export type Calibration = tf.Tensor2D | readonly CalibrationRow[];

/** A batch of samples as model inputs (the caller disposes them). */
interface CalibrationBatch {
  ids: tf.Tensor2D;
  types?: tf.Tensor2D;
  /** LoRA-GA: labels, −100 where a row is padded. */
  labels?: tf.Tensor2D;
}

function checkCalib(model: Model, calib: Calibration, what: string): void {
  if (model.arch.inputKind !== 'tokens') throw new RangeError(`${what} needs a text model; ${model.config.modelType} takes pixels`);
  if (!(calib instanceof tf.Tensor)) {
    if (calib.length === 0 || calib.some((r) => r.ids.length === 0)) throw new RangeError(`${what}: calibration needs at least one sample, and no empty one`);
    return;
  }
  if (calib.rank !== 2 || calib.shape[0] === 0 || calib.shape[1] === 0)
    throw new RangeError(`${what}: calibration ids must be [samples, tokens] with both non-zero, got [${calib.shape.join(', ')}]`);
  if (calib.dtype !== 'int32') throw new RangeError(`${what}: calibration ids must be int32, got ${calib.dtype}`);
}

const sampleCount = (calib: Calibration) => (calib instanceof tf.Tensor ? calib.shape[0] : calib.length);

/**
 * Batches of `batchRows` samples in order. Rows of different lengths: `pad` false splits them into
 * runs of equal length (so each sample's forward pass sees its own tokens only, as PEFT's one sample
 * per pass); `pad` true fills each batch's shorter rows on the right with labels −100 (a causal model
 * never attends forward, so the real tokens compute what they would alone, as under a padding collator).
 */
function* batches(calib: Calibration, batchRows: number, pad: boolean): Generator<CalibrationBatch> {
  if (calib instanceof tf.Tensor) {
    const [samples, tokens] = calib.shape;
    for (let from = 0; from < samples; from += batchRows) {
      const ids = tf.slice(calib, [from, 0], [Math.min(samples, from + batchRows) - from, tokens]);
      yield pad ? { ids, labels: tf.clone(ids) } : { ids };
    }
    return;
  }
  const groups: CalibrationRow[][] = [];
  for (const row of calib) {
    const last = groups[groups.length - 1];
    const fits = last && last.length < batchRows && (pad || (last[0]!.ids.length === row.ids.length && !last[0]!.typeIds === !row.typeIds));
    if (fits) last.push(row);
    else groups.push([row]);
  }
  for (const g of groups) {
    const len = Math.max(...g.map((r) => r.ids.length));
    const ids = new Int32Array(g.length * len);
    const labels = new Int32Array(g.length * len).fill(-100);
    const types = g[0]!.typeIds ? new Int32Array(g.length * len) : undefined;
    g.forEach((r, i) => {
      ids.set(r.ids, i * len);
      labels.set(r.ids, i * len);
      if (types && r.typeIds) types.set(r.typeIds, i * len);
    });
    yield {
      ids: tf.tensor2d(ids, [g.length, len], 'int32'),
      ...(types ? { types: tf.tensor2d(types, [g.length, len], 'int32') } : {}),
      ...(pad ? { labels: tf.tensor2d(labels, [g.length, len], 'int32') } : {}),
    };
  }
}

const disposeBatch = (b: CalibrationBatch) => tf.dispose([b.ids, ...(b.types ? [b.types] : []), ...(b.labels ? [b.labels] : [])]);

/**
 * CorDA covariances (PEFT `calib_cov_distribution`): each sample is one forward pass in PEFT, of its
 * own length (and token types); for each target linear module its input X [tokens, in] is scaled by
 * 1/|max(X)| (the largest entry, not the largest magnitude, as PEFT does) and XᵀX is summed; the sum
 * is divided by the number of calls (a sample's forward pass calls most modules once; not tokens).
 * Samples of one length are batched `batchRows` at a time here (attention does not mix rows, so each
 * row's inputs are those of its own forward pass). Returns [in, in] row-major float64 per module path.
 */
export async function collectCovariances(
  model: Model,
  modules: readonly LinearModuleInfo[],
  calib: Calibration,
  batchRows = 8,
): Promise<Map<string, Float64Array>> {
  checkCalib(model, calib, 'CorDA');
  const samples = sampleCount(calib);
  const sums = new Map<string, Float64Array>(modules.map((m) => [m.module, new Float64Array(m.inFeatures * m.inFeatures)]));
  // Calls per module, as PEFT's sample_count: a module also called on something else than the rows'
  // tokens (DeBERTa's query_proj / key_proj on the relative embeddings) counts that call too.
  const counts = new Map<string, number>(modules.map((m) => [m.module, 0]));
  for (const batch of batches(calib, batchRows, false)) {
    const [b, tokens] = batch.ids.shape;
    const pending = new Map<string, tf.Tensor>();
    const hooks = new Map<string, LinearHook>();
    for (const m of modules) {
      hooks.set(m.module, (x, _layer, base) => {
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
      // Only the hooks' inputs matter: a causal LM stops before its vocabulary-sized head.
      tf.tidy(() => {
        const run = { hooks: { linear: hooks } };
        const inputs = { inputIds: batch.ids, ...(batch.types ? { tokenTypeIds: batch.types } : {}) };
        if (!model.trunk(inputs, run)) model.forward(inputs, run);
      });
      for (const m of modules) {
        const t = pending.get(m.module);
        if (!t) throw new Error(`CorDA: module ${m.module} was not called in the forward pass`);
        const data = await t.data();
        const acc = sums.get(m.module)!;
        for (let i = 0; i < acc.length; i++) acc[i]! += data[i]!;
      }
    } finally {
      tf.dispose([...pending.values()]);
      disposeBatch(batch);
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
 * causal-LM loss with labels = input ids (rows of different lengths padded on the right, their pads
 * ignored, as a padding collator gives them), summed over the batches. PEFT then divides the
 * accumulated `.grad` by the number of backward passes its hook counted (`divideByBatches`, on by
 * default, does the same); the fixture's `grad.<module>` is that average. Runs in eval mode (PEFT
 * runs `model.train()`; with dropout 0 the two agree). Returns float32 per module path.
 */
export async function estimateGradients(
  model: Model,
  modules: readonly LinearModuleInfo[],
  calib: Calibration,
  batchRows = 4,
  opts: { divideByBatches?: boolean } = {},
): Promise<Map<string, Float32Array>> {
  checkCalib(model, calib, 'LoRA-GA');
  if (model.arch.task !== 'causal-lm') throw new RangeError(`LoRA-GA gradients use the causal-LM loss; ${model.config.modelType} is a ${model.arch.task} model`);
  if (!Number.isInteger(batchRows) || batchRows <= 0) throw new RangeError(`LoRA-GA: batchRows must be a positive integer, got ${batchRows}`);
  const names = modules.map((m) => `${m.module}.weight`);
  const sums = new Map<string, Float64Array>();
  let count = 0;
  for (const batch of batches(calib, batchRows, true)) {
    try {
      const { loss, grads } = model.lossAndGrads(names, { inputIds: batch.ids }, batch.labels!);
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
      disposeBatch(batch);
    }
    count++;
  }
  const div = opts.divideByBatches === false ? 1 : count;
  return new Map([...sums].map(([m, acc]) => [m, Float32Array.from(acc, (v) => v / div)]));
}
