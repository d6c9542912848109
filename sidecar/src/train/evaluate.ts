/**
 * Evaluation on held-out examples (no dropout, no gradients): the loss averaged over what it counts
 * (label tokens for language models, rows for classifiers) and the task metric — accuracy for
 * classification; for prompt + completion rows, exact match of the teacher-forced argmax over the
 * completion tokens; for a regression (batchOpts.regression), the Pearson correlation of the
 * predictions with the targets over all rows; for multi-label rows, subset accuracy (every class's
 * sigmoid on the right side of 0.5).
 */
import * as tf from '@tensorflow/tfjs-core';
import { disposeTrainBatch, makeBatch, type BatchOptions, type TrainBatch } from '../data/batch';
import type { Example } from '../data/dataset';
import { headLogits, type LmTrunk } from '../models/architecture';
import type { Hooks } from '../models/forward';
import type { Model, RunOptions, SliceOptions } from '../models/model';
import { yieldToEventLoop } from '../jobs/context';

export interface EvalResult {
  loss: number;
  /** Accuracy / exact match in [0, 1], when the examples have a task metric. */
  metric?: number;
  /** Label tokens (LM) or rows (classification) the loss averages over. */
  count: number;
}

export interface EvalAdapter {
  hooks?: Hooks;
  overrides?: ReadonlyMap<string, tf.Tensor>;
}

export async function evaluate(
  model: Model,
  adapter: EvalAdapter | undefined,
  examples: readonly Example[],
  batchSize: number,
  batchOpts: BatchOptions,
  signal?: AbortSignal,
  /** Called for every scored prediction with its probability and correctness (calibration). */
  onPrediction?: (confidence: number, correct: boolean) => void,
  /** When (and how finely) a causal LM's logits go by slices; tests lower the limits. */
  slices: SliceOptions = {},
): Promise<EvalResult> {
  let lossSum = 0;
  let count = 0;
  let hits = 0;
  let scored = 0;
  const regression = batchOpts.regression === true;
  const multiLabel = batchOpts.multiLabel === true;
  const predictions: number[] = [];
  const targets: number[] = [];
  for (let i = 0; i < examples.length; i += batchSize) {
    if (signal?.aborted) break;
    const chunk = examples.slice(i, i + batchSize);
    const batch = makeBatch(chunk, batchOpts);
    try {
      const outs = batchOutputs(model, batch, { hooks: adapter?.hooks, overrides: adapter?.overrides, training: false }, onPrediction !== undefined && !regression && !multiLabel, slices, regression || multiLabel);
      const [lossV, predV, labelV, confV] = await Promise.all([outs[0]!.data(), outs[1]!.data(), batch.labels.data(), outs[2]?.data()]);
      tf.dispose(outs);
      if (chunk[0]!.kind === 'lm') {
        const T = batch.labels.shape[1]!;
        let n = 0;
        chunk.forEach((e, b) => {
          let all = true;
          for (let t = 1; t < T; t++) {
            const l = labelV[b * T + t]!;
            if (l === -100) continue;
            n++;
            const ok = predV[b * T + t - 1] === l;
            if (!ok) all = false;
            onPrediction?.(confV![b * T + t - 1]!, ok);
          }
          if (e.kind === 'lm' && e.completion) {
            scored++;
            if (all) hits++;
          }
        });
        if (n > 0 && Number.isFinite(lossV[0]!)) {
          lossSum += lossV[0]! * n;
          count += n;
        } else if (n > 0) {
          lossSum = NaN;
          count += n;
        }
      } else if (multiLabel) {
        // predV: the logits [B, C]; a class is predicted where its logit is positive (sigmoid > 0.5).
        const c = predV.length / chunk.length;
        chunk.forEach((_, b) => {
          scored++;
          let all = true;
          for (let k = 0; k < c; k++) if (predV[b * c + k]! > 0 !== labelV[b * c + k]! > 0.5) all = false;
          if (all) hits++;
        });
        lossSum += lossV[0]! * chunk.length;
        count += chunk.length;
      } else if (regression) {
        // No classes, so nothing is right or wrong (and there is no probability to calibrate).
        predictions.push(...predV);
        targets.push(...labelV);
        lossSum += lossV[0]! * chunk.length;
        count += chunk.length;
      } else {
        chunk.forEach((_, b) => {
          scored++;
          const ok = predV[b] === labelV[b];
          if (ok) hits++;
          onPrediction?.(confV![b]!, ok);
        });
        lossSum += lossV[0]! * chunk.length;
        count += chunk.length;
      }
    } finally {
      disposeTrainBatch(batch);
    }
    await yieldToEventLoop();
  }
  // r = 0 where it is undefined (constant predictions or targets, one row): a regression always has its metric, so runs and masks compare on it alone.
  const metric = regression ? (pearson(predictions, targets) ?? 0) : scored > 0 ? hits / scored : undefined;
  return { loss: count > 0 ? lossSum / count : NaN, ...(metric !== undefined ? { metric } : {}), count };
}

/** The Pearson correlation of two series (GLUE's STS-B metric); undefined where either is constant or shorter than 2. */
export function pearson(x: readonly number[], y: readonly number[]): number | undefined {
  const n = x.length;
  if (n < 2) return undefined;
  const mean = (v: readonly number[]) => v.reduce((a, b) => a + b, 0) / n;
  const mx = mean(x);
  const my = mean(y);
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i]! - mx;
    const dy = y[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : undefined;
}

/**
 * [loss, argmax per position (or row) — a regression's value —, max softmax probability (with `confidence`)]: from all the
 * logits at once, or for a causal LM whose logits chunkedLossRows finds too many, slice by slice.
 */
function batchOutputs(model: Model, batch: TrainBatch, run: RunOptions, confidence: boolean, slices: SliceOptions, rawOutputs = false): tf.Tensor[] {
  const rows = model.chunkedLossRows(batch.inputs, slices.chunkedLossLogits, slices.chunkLogits);
  return tf.tidy(() => {
    // chunkedLossRows gives rows only to models with a trunk.
    if (rows !== undefined) return slicedOutputs(model.trunk(batch.inputs, run)!, batch.labels as tf.Tensor2D, rows, confidence);
    const logits = model.forward(batch.inputs, run);
    // A regression's prediction is its one output; multi-label rows are judged class by class on the host.
    if (rawOutputs) return [model.loss(logits, batch.labels), tf.reshape(logits, [-1])];
    return [model.loss(logits, batch.labels), tf.argMax(logits, -1), ...(confidence ? [tf.exp(tf.max(tf.logSoftmax(logits), -1))] : [])];
  });
}

/**
 * batchOutputs of a causal LM `rows` hidden rows at a time: each slice's logits give its part of
 * the loss's sum (each position against the next label, as causalLmLoss), its argmax and
 * confidence, and are freed before the next slice's.
 */
function slicedOutputs(trunk: LmTrunk, labels: tf.Tensor2D, rows: number, confidence: boolean): tf.Tensor[] {
  const [b, t] = labels.shape;
  const n = b * t;
  const next = tf.reshape(tf.concat([tf.slice(labels, [0, 1], [b, t - 1]), tf.fill([b, 1], -100, 'int32')], 1), [n]) as tf.Tensor1D;
  const parts: tf.Tensor[][] = [];
  for (let s = 0; s < n; s += rows) {
    const len = Math.min(rows, n - s);
    parts.push(tf.tidy(() => sliceOutputs(headLogits(trunk, tf.slice(trunk.hidden, [s, 0], [len, -1])), tf.slice(next, [s], [len]), confidence)));
  }
  // NaN when every label is ignored, as the unsliced mean.
  const count = tf.sum(tf.cast(tf.notEqual(next, -100), 'float32'));
  const loss = tf.div(tf.addN(parts.map((p) => p[0]!)), count);
  const column = (k: number) => tf.reshape(tf.concat(parts.map((p) => p[k]!)), [b, t]);
  return [loss, column(1), ...(confidence ? [column(2)] : [])];
}

/** One slice's summed cross-entropy over its counted labels, its argmax and (with `confidence`) max probability. */
function sliceOutputs(logits: tf.Tensor2D, labels: tf.Tensor1D, confidence: boolean): tf.Tensor[] {
  const valid = tf.cast(tf.notEqual(labels, -100), 'float32');
  const lse = tf.logSumExp(logits, 1);
  const picked = tf.sum(tf.mul(logits, tf.oneHot(tf.mul(labels, tf.cast(valid, 'int32')), logits.shape[1])), 1);
  const loss = tf.sum(tf.mul(tf.sub(lse, picked), valid));
  return [loss, tf.argMax(logits, 1), ...(confidence ? [tf.exp(tf.sub(tf.max(logits, 1), lse))] : [])];
}
