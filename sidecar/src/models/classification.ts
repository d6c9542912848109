import * as tf from '@tensorflow/tfjs-core';
import type { ProblemType } from './config';
import { bceWithLogits, crossEntropy, mseLoss } from './ops';

/** The sequence/image classification loss transformers picks from `problem_type`. */
export function classificationLoss(problemType: ProblemType, numLabels: number, logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  switch (problemType) {
    case 'regression':
      return numLabels === 1 ? mseLoss(logits, labels) : tf.mean(tf.squaredDifference(logits, tf.cast(labels, 'float32')));
    case 'multi_label_classification':
      return bceWithLogits(logits, labels);
    case 'single_label_classification':
      return crossEntropy(tf.reshape(logits, [-1, numLabels]) as tf.Tensor2D, tf.cast(tf.reshape(labels, [-1]), 'int32') as tf.Tensor1D);
  }
}
