/**
 * Evaluation on held-out examples (no dropout, no gradients): the loss averaged over what it counts
 * (label tokens for language models, rows for classifiers) and the task metric — accuracy for
 * classification; for prompt + completion rows, exact match of the teacher-forced argmax over the
 * completion tokens.
 */
import * as tf from '@tensorflow/tfjs-core';
import { disposeTrainBatch, makeBatch, type BatchOptions } from '../data/batch';
import type { Example } from '../data/dataset';
import type { Hooks } from '../models/forward';
import type { Model } from '../models/model';
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
): Promise<EvalResult> {
  let lossSum = 0;
  let count = 0;
  let hits = 0;
  let scored = 0;
  for (let i = 0; i < examples.length; i += batchSize) {
    if (signal?.aborted) break;
    const chunk = examples.slice(i, i + batchSize);
    const batch = makeBatch(chunk, batchOpts);
    try {
      const outs = tf.tidy(() => {
        const logits = model.forward(batch.inputs, { hooks: adapter?.hooks, overrides: adapter?.overrides, training: false });
        const confidence = onPrediction ? [tf.exp(tf.max(tf.logSoftmax(logits), -1))] : [];
        return [model.loss(logits, batch.labels), tf.argMax(logits, -1), ...confidence];
      });
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
  return { loss: count > 0 ? lossSum / count : NaN, ...(scored > 0 ? { metric: hits / scored } : {}), count };
}
