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
import { evaluate } from '../train/evaluate';

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

/** Loss, metric and ECE of `model` (with `weights` overriding parameters) on `examples`: the trainer's eval plus calibration. */
export async function evaluateDetailed(model: Model, weights: EvalWeights | undefined, examples: readonly Example[], batchSize: number, batchOpts: BatchOptions, signal?: AbortSignal): Promise<GraftEval> {
  const cal = new CalibrationBins();
  const r = await evaluate(model, weights, examples, batchSize, batchOpts, signal, (confidence, correct) => cal.add(confidence, correct));
  return { loss: r.loss, ...(r.metric !== undefined ? { metric: r.metric } : {}), ece: cal.ece(), count: r.count };
}

/** Higher is better: the metric when there is one, else −loss. */
export const scoreOf = (e: { loss: number; metric?: number }) => (e.metric !== undefined ? e.metric : -e.loss);
