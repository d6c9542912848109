/** The attention keys and values a causal LM keeps while it generates (ModelInputs.cache). */
import * as tf from '@tensorflow/tfjs-core';

/**
 * Per block, the attention keys and values [B, Hkv, past, D] of the tokens seen so far, so that a
 * generation step runs the new token alone. Kept tensors, replaced by each forward pass (it keeps
 * the new ones and disposes the old); `dispose` frees them.
 */
export class KvCache {
  past = 0;
  private readonly layers: ({ k: tf.Tensor4D; v: tf.Tensor4D } | undefined)[] = [];

  /** Keys and values of block `i` with the new ones appended (kept; the previous ones freed). */
  extend(i: number, k: tf.Tensor4D, v: tf.Tensor4D): { k: tf.Tensor4D; v: tf.Tensor4D } {
    const old = this.layers[i];
    const next = old ? { k: tf.keep(tf.concat([old.k, k], 2)), v: tf.keep(tf.concat([old.v, v], 2)) } : { k: tf.keep(tf.clone(k)), v: tf.keep(tf.clone(v)) };
    if (old) tf.dispose([old.k, old.v]);
    this.layers[i] = next;
    return next;
  }

  dispose(): void {
    for (const l of this.layers) if (l) tf.dispose([l.k, l.v]);
    this.layers.length = 0;
    this.past = 0;
  }
}
