/** Applying a saved adapter folder to a loaded model (the adapters issue fills this in). */
import type * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import type { Hooks } from '../models/forward';
import type { Model } from '../models/model';

export interface LoadedAdapter {
  hooks: Hooks;
  /** Adapter tensors (and replaced base tensors), looked up by name during the forward pass. */
  params: Map<string, tf.Tensor>;
  dispose(): void;
}

export async function loadAdapterHooks(_model: Model, dir: string): Promise<LoadedAdapter> {
  throw new InputError(dir, '', 'adapters are not supported yet');
}
