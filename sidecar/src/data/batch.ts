/**
 * Batches of examples as model inputs: token rows padded on the right to the longest row of the
 * batch (labels −100 on padding; an attention mask for encoder models), or pixel values decoded
 * and resized for ViT. The caller disposes the tensors (disposeTrainBatch).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelInputs } from '../models/architecture';
import type { Example } from './dataset';
import { decodeImage, toPixelValues } from './images';

export interface TrainBatch {
  inputs: ModelInputs;
  /** [B, T] int32 for causal LM (−100 ignored), [B] int32 for classification ([B] float32 targets for a regression). */
  labels: tf.Tensor;
  /** Real (non-padding) tokens, or image patches + [CLS] per image, for throughput. */
  tokens: number;
  /** Rows in the batch. */
  size: number;
}

export interface BatchOptions {
  /** Input id written on padding positions (never attended to by real tokens, never a label). */
  padId: number;
  /** Encoder models (BERT) need an attention mask; causal models pad on the right and need none. */
  attentionMask: boolean;
  /** A regression model's targets: float32 values, not class ids. */
  regression?: boolean;
  /** Multi-label rows: targets [B, classes] of 0/1 (float32). */
  multiLabel?: boolean;
  imageSize?: number;
  numChannels?: number;
  patchSize?: number;
}

export function makeBatch(examples: readonly Example[], opts: BatchOptions): TrainBatch {
  if (examples.length === 0) throw new Error('empty batch');
  const first = examples[0]!;
  const B = examples.length;
  if (first.kind === 'image') {
    const size = opts.imageSize ?? 224;
    const ch = opts.numChannels ?? 3;
    const per = ch * size * size;
    const px = new Float32Array(B * per);
    const labels = new Int32Array(B);
    examples.forEach((e, i) => {
      if (e.kind !== 'image') throw new Error('mixed batch');
      px.set(toPixelValues(decodeImage(e.file), size, ch), i * per);
      labels[i] = e.label;
    });
    const patches = opts.patchSize ? (size / opts.patchSize) ** 2 + 1 : 1;
    return {
      inputs: { pixelValues: tf.tensor4d(px, [B, ch, size, size], 'float32') },
      labels: tf.tensor1d(labels, 'int32'),
      tokens: B * patches,
      size: B,
    };
  }
  let T = 0;
  for (const e of examples) if (e.kind !== 'image') T = Math.max(T, e.ids.length);
  const ids = new Int32Array(B * T).fill(opts.padId);
  const mask = new Int32Array(B * T);
  let tokens = 0;
  if (first.kind === 'lm') {
    const labels = new Int32Array(B * T).fill(-100);
    examples.forEach((e, i) => {
      if (e.kind !== 'lm') throw new Error('mixed batch');
      ids.set(e.ids, i * T);
      labels.set(e.labels, i * T);
      mask.fill(1, i * T, i * T + e.ids.length);
      tokens += e.ids.length;
    });
    return {
      inputs: { inputIds: tf.tensor2d(ids, [B, T], 'int32'), ...(opts.attentionMask ? { attentionMask: tf.tensor2d(mask, [B, T], 'int32') } : {}) },
      labels: tf.tensor2d(labels, [B, T], 'int32'),
      tokens,
      size: B,
    };
  }
  // Multi-label rows: [B, classes] of 0/1; a regression's values; else class ids.
  const classes = opts.multiLabel && first.kind === 'cls' ? (first.targets?.length ?? 0) : 0;
  const labels = opts.multiLabel ? new Float32Array(B * classes) : opts.regression ? new Float32Array(B) : new Int32Array(B);
  // Token types where any row has them (text pairs); padding and single texts are type 0.
  const types = examples.some((e) => e.kind === 'cls' && e.typeIds) ? new Int32Array(B * T) : undefined;
  examples.forEach((e, i) => {
    if (e.kind !== 'cls') throw new Error('mixed batch');
    ids.set(e.ids, i * T);
    if (e.typeIds) types!.set(e.typeIds, i * T);
    mask.fill(1, i * T, i * T + e.ids.length);
    if (opts.multiLabel) labels.set(e.targets!, i * classes);
    else labels[i] = e.label;
    tokens += e.ids.length;
  });
  return {
    inputs: {
      inputIds: tf.tensor2d(ids, [B, T], 'int32'),
      ...(opts.attentionMask ? { attentionMask: tf.tensor2d(mask, [B, T], 'int32') } : {}),
      ...(types ? { tokenTypeIds: tf.tensor2d(types, [B, T], 'int32') } : {}),
    },
    labels: opts.multiLabel ? tf.tensor2d(labels, [B, classes], 'float32') : tf.tensor1d(labels, opts.regression ? 'float32' : 'int32'),
    tokens,
    size: B,
  };
}

export function disposeTrainBatch(b: TrainBatch): void {
  const { inputIds, attentionMask, tokenTypeIds, pixelValues } = b.inputs;
  tf.dispose([inputIds, attentionMask, tokenTypeIds, pixelValues, b.labels].filter((t): t is tf.Tensor => t !== undefined));
}
