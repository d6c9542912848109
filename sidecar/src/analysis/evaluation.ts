/**
 * Evaluation for the analysis commands: the training loop's loss and task metric (same definitions
 * as ../train/evaluate.ts: loss averaged over label tokens / rows; accuracy for classification; for
 * prompt + completion rows, exact match of the teacher-forced argmax over the completion tokens),
 * plus the expected calibration error of the predicted probability of each label token / row.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GraftEval } from '../../../src/protocol';
import type { BatchOptions } from '../data/batch';
import type { Example } from '../data/dataset';
import type { Hooks } from '../models/forward';
import type { Model } from '../models/model';
import { yieldToEventLoop } from '../jobs/context';
import { chunks, withBatch } from './data';

export const ECE_BINS = 15;

/** Confidences and correctness → ECE: Σ_bins (n_b/N)·|accuracy_b − mean confidence_b|, equal-width bins on [0, 1]. */
export class CalibrationBins {
  readonly count: number[];
  readonly conf: number[];
  readonly correct: number[];

  constructor(readonly bins = ECE_BINS) {
    this.count = new Array<number>(bins).fill(0);
    this.conf = new Array<number>(bins).fill(0);
    this.correct = new Array<number>(bins).fill(0);
  }

  add(confidence: number, ok: boolean): void {
    // Bin b holds (b/B, (b+1)/B]; a confidence of exactly 0 goes to the first bin.
    const b = Math.min(this.bins - 1, Math.max(0, Math.ceil(confidence * this.bins) - 1));
    this.count[b]!++;
    this.conf[b]! += confidence;
    if (ok) this.correct[b]!++;
  }

  get total(): number {
    return this.count.reduce((a, b) => a + b, 0);
  }

  ece(): number {
    const n = this.total;
    if (n === 0) return NaN;
    let e = 0;
    for (let b = 0; b < this.bins; b++) {
      const c = this.count[b]!;
      if (c === 0) continue;
      e += (c / n) * Math.abs(this.correct[b]! / c - this.conf[b]! / c);
    }
    return e;
  }
}

export interface EvalWeights {
  hooks?: Hooks;
  overrides?: ReadonlyMap<string, tf.Tensor>;
}

/** Loss, metric and ECE of `model` (with `weights` overriding parameters) on `examples`. */
export async function evaluateDetailed(model: Model, weights: EvalWeights | undefined, examples: readonly Example[], batchSize: number, batchOpts: BatchOptions, signal?: AbortSignal): Promise<GraftEval> {
  let lossSum = 0;
  let count = 0;
  let hits = 0;
  let scored = 0;
  const cal = new CalibrationBins();
  for (const chunk of chunks(examples, batchSize)) {
    if (signal?.aborted) break;
    await withBatch(chunk, batchOpts, async (batch) => {
      const [loss, pred, conf] = tf.tidy(() => {
        const logits = model.forward(batch.inputs, { hooks: weights?.hooks, overrides: weights?.overrides, training: false });
        return [model.loss(logits, batch.labels), tf.argMax(logits, -1), tf.exp(tf.max(tf.logSoftmax(logits), -1))];
      });
      const [lossV, predV, confV, labelV] = await Promise.all([loss.data(), pred.data(), conf.data(), batch.labels.data()]);
      tf.dispose([loss, pred, conf]);
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
            cal.add(confV[b * T + t - 1]!, ok);
          }
          if (e.kind === 'lm' && e.completion) {
            scored++;
            if (all) hits++;
          }
        });
        if (n > 0) {
          lossSum += Number.isFinite(lossV[0]!) ? lossV[0]! * n : NaN;
          count += n;
        }
      } else {
        chunk.forEach((_, b) => {
          scored++;
          const ok = predV[b] === labelV[b];
          if (ok) hits++;
          cal.add(confV[b]!, ok);
        });
        lossSum += lossV[0]! * chunk.length;
        count += chunk.length;
      }
    });
    await yieldToEventLoop();
  }
  return { loss: count > 0 ? lossSum / count : NaN, ...(scored > 0 ? { metric: hits / scored } : {}), ece: cal.ece(), count };
}

/** Higher is better: the metric when there is one, else −loss. */
export const scoreOf = (e: { loss: number; metric?: number }) => (e.metric !== undefined ? e.metric : -e.loss);
