/**
 * What every adapter kind provides to the training loop, `forward --adapter`, merging and export.
 * An adapter never changes the Model's base tensors: it supplies extra tensors (trainable and
 * frozen, including residual base weights from data-aware inits) as forward-pass overrides, and
 * hooks that wrap linear modules or act at tap points.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { AdapterSpec } from '../../../src/protocol';
import type { HostTensor } from '../io/safetensors';
import type { LinearModuleInfo } from '../models/architecture';
import type { Hooks } from '../models/forward';
import type { Model } from '../models/model';

/**
 * Data-aware LoRA initialisation (PiSSA, OLoRA, CorDA, LoRA-GA), supplied by the inits module and
 * chosen by the caller for `spec.init`. Per target module path: A row-major [r, in], B [out, r], and
 * the residual W − s·B·A in the module's STORED layout ([in, out] for Conv1D), which replaces the
 * frozen base weight.
 */
export type LoraInitProvider = (
  model: Model,
  targets: LinearModuleInfo[],
  rank: (module: string) => number,
  scale: (module: string) => number,
) => Promise<Map<string, { A: Float32Array; B: Float32Array; residual: Float32Array }>>;

/** Work an adapter kind does around the optimizer (AdaLoRA's orthogonality penalty and rank allocation). */
export interface TrainingProcedure {
  /** Sets the run's step count; returns what is wrong with the kind's schedule for it, if anything. */
  begin(totalSteps: number): string | undefined;
  /** Added to the task loss while training; `get` reads the traced tensors by name. */
  penalty(get: (name: string) => tf.Tensor): tf.Scalar;
  /** After each optimizer step, with its gradients (may replace trainable tensors); scalars to log. */
  afterStep(step: number, grads: ReadonlyMap<string, tf.Tensor>): Promise<Record<string, number>>;
  /** For checkpoints: tensors, and JSON for state.json. */
  state(): { tensors: ReadonlyMap<string, tf.Tensor>; json: unknown };
  restore(tensors: ReadonlyMap<string, HostTensor>, json: unknown): void;
  dispose(): void;
}

export interface AdapterInstance {
  readonly spec: AdapterSpec;
  /** Trainable tensors by name (the optimizer updates this map in place). */
  readonly trainable: Map<string, tf.Tensor>;
  /** Frozen tensors by name: adapter constants and base weights replaced by a residual (keyed by the base name). */
  readonly frozen: Map<string, tf.Tensor>;
  readonly hooks: Hooks;
  /** What training does besides the optimizer step, for kinds that need it (AdaLoRA). */
  readonly training?: TrainingProcedure;
  /** frozen ∪ trainable, built fresh (trainable tensors are replaced every optimizer step). */
  overrides(): Map<string, tf.Tensor>;
  /** How many parameters train: the trainable tensors' sizes, less the entries a sparse mask holds at 0. */
  trainableParameterCount(): number;
  /** Transformer block of a trainable tensor, or -1 (IST samples layers to train). */
  layerOf(name: string): number;
  /** Multiplies the adapter's contribution in a block by `factor` (IST's suppression probes; LoRA-family: its scaling, so DoRA's magnitudes stay); 1 restores. */
  setLayerScale(layer: number, factor: number): void;
  /** Seeds dropout for the next forward pass, so training is deterministic under a seed. */
  setStep(step: number): void;
  /** Base weights with the adapter folded in, for each base tensor that changes (new tensors; caller disposes). */
  merged(): Map<string, tf.Tensor>;
  /**
   * The inverse of merged(): base tensors recovered from merged ones by undoing the fold (LoRA:
   * W_merged − s·B·A, plus s·B₀·A₀ where a data-aware init had replaced W by a residual, so the
   * model's original W comes back), for the tensors `merged()` returns (new tensors; caller disposes).
   */
  unmerge(merged: ReadonlyMap<string, tf.Tensor>): Map<string, tf.Tensor>;
  /** Why exportPeft cannot work (a kind PEFT lacks, or modules PEFT cannot wrap with it); undefined when it can. */
  peftFormatProblem(): string | undefined;
  /** The adapter in Hugging Face PEFT's format; adapters that changed the base are converted to act on the original base. */
  exportPeft(): Promise<{ config: Record<string, unknown>; tensors: Map<string, HostTensor> }>;
  dispose(): void;
}
