/**
 * Random checkpoints for the parity tests against float64 re-implementations: a model of a config
 * written to a folder as a hub checkpoint would be (names renamed, tensors dropped or added) and
 * loaded back, and the checks those tests share (directional gradients, the key/value cache).
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { f32, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { parseConfig, type ModelConfig } from '../../sidecar/src/models/config';
import { randomModel } from '../../sidecar/src/models/init';
import { KvCache } from '../../sidecar/src/models/kv-cache';
import { Model } from '../../sidecar/src/models/model';
import { assertClose } from './numeric';

export type WeightMap = Map<string, Float32Array | Float64Array>;

export interface RandomCheckpointOptions {
  /** Tensors left out of the file (a base checkpoint without its head). */
  drop?: RegExp;
  /** Stored names (a base model's, without the task prefix). */
  rename?: (name: string) => string;
  /** Tensors stored beside the model's (buffers, another head). */
  extra?: ReadonlyMap<string, HostTensor>;
  /** Parameters moved off their init (norms at 1, biases at 0), so that every weight matters; default: norms and biases. */
  moved?: (name: string) => boolean;
}

/** A random model of config `raw` (N(0, 0.2) weights, seeded), written under `root` and loaded back, with its weights by name. */
export async function randomCheckpoint<C extends ModelConfig>(root: string, raw: Record<string, unknown>, seed: number, o: RandomCheckpointOptions = {}): Promise<{ model: Model; cfg: C; weights: Map<string, Float32Array> }> {
  const cfg = parseConfig(raw, 'config.json') as C;
  const fresh = randomModel(cfg, seed, 0.2);
  const dir = join(root, `m${seed}`);
  mkdirSync(dir, { recursive: true });
  const moved = o.moved ?? ((n: string) => /norm/i.test(n) || n.endsWith('.bias'));
  const weights = new Map<string, Float32Array>();
  const out = new Map<string, HostTensor>(o.extra ?? []);
  for (const [n, t] of fresh.params) {
    const data = Float32Array.from((moved(n) ? tf.tidy(() => tf.add(t, tf.randomNormal(t.shape, 0, 0.2, 'float32', seed + 7))) : t).dataSync() as Float32Array);
    weights.set(n, data);
    if (!o.drop?.test(n)) out.set(o.rename ? o.rename(n) : n, f32(t.shape, data));
  }
  fresh.dispose();
  writeFileSync(join(dir, 'config.json'), JSON.stringify(raw));
  await writeSafetensors(join(dir, 'model.safetensors'), out);
  return { model: await Model.load(dir), cfg, weights };
}

/** Weights by name for a reference implementation; a missing one throws. */
export const weightLookup = (weights: WeightMap) => (n: string): Float32Array | Float64Array => {
  const t = weights.get(n);
  if (!t) throw new Error(`no ${n}`);
  return t;
};

/**
 * Each gradient along a seeded random unit direction equals the float64 reference loss's central
 * difference along it (the weight moved by ±1e-4 in float64, below a float32 step).
 */
export function assertDirectionalGradients(grads: ReadonlyMap<string, tf.Tensor>, weights: WeightMap, referenceLoss: (w: WeightMap) => number, seed = 50): void {
  for (const [k, [n, grad]] of [...grads].entries()) {
    const g = grad.dataSync() as Float32Array;
    const dir = Float64Array.from(tf.tidy(() => tf.randomNormal([Math.max(1, g.length)], 0, 1, 'float32', seed + k).dataSync()));
    const len = Math.sqrt(dir.reduce((a, x) => a + x * x, 0));
    const eps = 1e-4;
    const moved = (s: number): WeightMap => new Map([...weights, [n, Float64Array.from(weights.get(n)!, (x, j) => x + (s * eps * dir[j]!) / len)]]);
    const numeric = (referenceLoss(moved(1)) - referenceLoss(moved(-1))) / (2 * eps);
    const analytic = g.reduce((a, x, j) => a + (x * dir[j]!) / len, 0);
    assert.ok(Math.abs(numeric - analytic) <= 2e-3 * Math.max(Math.abs(numeric), 1e-2), `${n}: ${analytic} vs the reference's ${numeric}`);
  }
}

/** A causal LM's logits of `seq` fed through the key/value cache: its first four tokens, then one at a time. */
export function cachedLogits(model: Model, seq: readonly number[]): number[] {
  const cache = new KvCache();
  const steps: number[] = [];
  try {
    for (const feed of [seq.slice(0, 4), ...seq.slice(4).map((t) => [t])])
      steps.push(...(tf.tidy(() => model.forward({ inputIds: tf.tensor2d([feed], [1, feed.length], 'int32'), cache }).dataSync() as Float32Array)));
  } finally {
    cache.dispose();
  }
  return steps;
}

/** The cached logits of `seq` equal the whole sequence's. */
export function assertCachedLogitsMatch(model: Model, seq: readonly number[], label: string): void {
  const full = tf.tidy(() => model.forward({ inputIds: tf.tensor2d([seq as number[]], [1, seq.length], 'int32') }).dataSync() as Float32Array);
  assertClose(`${label}: cached logits`, cachedLogits(model, seq), full, 1e-4);
}

/** Mean cross-entropy of a reference classifier's logits over rows of ids against class labels. */
export function referenceClassifierLoss(logits: (w: WeightMap, ids: readonly number[]) => Float64Array, rows: readonly (readonly number[])[], labels: readonly number[]): (w: WeightMap) => number {
  return (w) =>
    rows.reduce((sum, ids, b) => {
      const z = logits(w, ids);
      const m = Math.max(...z);
      return sum + (Math.log(z.reduce((a, x) => a + Math.exp(x - m), 0)) + m - z[labels[b]!]!);
    }, 0) / rows.length;
}

/**
 * A sequence classifier's loss and the gradients of `names` equal a float64 reference's (the loss;
 * each gradient along a random direction), with no tensor left behind.
 */
export async function assertClassifierGradients(model: Model, names: readonly string[], rows: number[][], labels: number[], weights: WeightMap, logits: (w: WeightMap, ids: readonly number[]) => Float64Array): Promise<void> {
  const reference = referenceClassifierLoss(logits, rows, labels);
  const before = tf.memory().numTensors;
  const inputIds = tf.tensor2d(rows, [rows.length, rows[0]!.length], 'int32');
  const target = tf.tensor1d(labels, 'int32');
  const { loss, grads } = model.lossAndGrads(names, { inputIds }, target);
  tf.dispose([inputIds, target]);
  try {
    assert.ok(Math.abs(loss.dataSync()[0]! - reference(weights)) < 1e-4);
    assertDirectionalGradients(grads, weights, reference);
  } finally {
    tf.dispose([loss, ...grads.values()]);
  }
  assert.equal(tf.memory().numTensors, before, 'tensors leaked');
}

/**
 * A sequence classifier's logits equal a reference's for each row, and a row cut to 8 tokens and
 * padded back behind an attention mask equals the reference on those 8.
 */
export function assertClassifierLogits(model: Model, rows: number[][], numLabels: number, logits: (ids: readonly number[]) => Float64Array, label: string): void {
  const [b, t] = [rows.length, rows[0]!.length];
  const got = tf.tidy(() => model.forward({ inputIds: tf.tensor2d(rows, [b, t], 'int32') }).dataSync() as Float32Array);
  rows.forEach((ids, r) => assertClose(`${label}, row ${r}`, got.subarray(r * numLabels, (r + 1) * numLabels), logits(ids), 1e-4));
  const padded = [...rows.slice(0, -1), [...rows[b - 1]!.slice(0, 8), ...Array<number>(t - 8).fill(0)]];
  const mask = [...rows.slice(0, -1).map(() => Array<number>(t).fill(1)), [...Array<number>(8).fill(1), ...Array<number>(t - 8).fill(0)]];
  const masked = tf.tidy(() => model.forward({ inputIds: tf.tensor2d(padded, [b, t], 'int32'), attentionMask: tf.tensor2d(mask, [b, t], 'int32') }).dataSync() as Float32Array);
  assertClose(`${label}, padded row`, masked.subarray((b - 1) * numLabels, b * numLabels), logits(rows[b - 1]!.slice(0, 8)), 1e-4);
}
