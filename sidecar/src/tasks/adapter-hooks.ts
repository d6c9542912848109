/** Applying a saved adapter folder (Hugging Face PEFT's format or PEFT Lab's own, or a run folder) to a loaded model. */
import type * as tf from '@tensorflow/tfjs-core';
import { loadAnyAdapter } from '../analysis/finetuned';
import type { Hooks } from '../models/forward';
import type { Model } from '../models/model';

export interface LoadedAdapter {
  hooks: Hooks;
  /** Adapter tensors (and replaced base tensors), looked up by name during the forward pass. */
  params: Map<string, tf.Tensor>;
  dispose(): void;
}

export async function loadAdapterHooks(model: Model, dir: string): Promise<LoadedAdapter> {
  const adapter = await loadAnyAdapter(model, dir);
  return { hooks: adapter.hooks, params: adapter.overrides(), dispose: () => adapter.dispose() };
}
