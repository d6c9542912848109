import * as tf from '@tensorflow/tfjs-core';
import type { KvCache } from './kv-cache';
import type { ModelConfig } from './config';
import type { Forward } from './forward';

/** Inputs as tensors: token ids (int32) for text models, pixel values for ViT. */
export interface ModelInputs {
  inputIds?: tf.Tensor2D;
  attentionMask?: tf.Tensor2D;
  tokenTypeIds?: tf.Tensor2D;
  pixelValues?: tf.Tensor4D;
  /**
   * Causal LMs, generating: the keys and values of the tokens before `inputIds` (which then sit at
   * positions past, past + 1, …). The forward pass appends the new ones (see KvCache).
   */
  cache?: KvCache;
}


/** Coarse module types, the columns of importance maps and budget grids. */
export type ModuleType = string;

export interface LinearModuleInfo {
  module: string;
  /** Transformer block index, or -1 outside the blocks (heads, poolers). */
  layer: number;
  /** Short name as PEFT's target_modules matches it (`q_proj`, `c_attn`, `query`, ...). */
  name: string;
  inFeatures: number;
  outFeatures: number;
  fanInFanOut: boolean;
  /** IA3: feed-forward modules scale their input, others their output. */
  feedForward: boolean;
}

export interface ParamInfo {
  name: string;
  shape: number[];
  layer: number;
  type: ModuleType;
  /**
   * How a head parameter the checkpoint lacks starts (Model.load): by default weights N(0, 0.02) and
   * biases 0; `std` for another normal (redrawn beyond `cutoff` std where transformers truncates it),
   * `ones` for a norm's weight.
   */
  fresh?: { std: number; cutoff?: number } | 'ones';
}

/** Each block's linear modules (as a per-block list gives them, `module` relative to the block), with their full paths. */
export function blockLinears(numLayers: number, block: (i: number) => string, modules: readonly Omit<LinearModuleInfo, 'layer'>[]): LinearModuleInfo[] {
  const out: LinearModuleInfo[] = [];
  for (let i = 0; i < numLayers; i++) for (const m of modules) out.push({ ...m, layer: i, module: `${block(i)}.${m.module}` });
  return out;
}

/** A LayerNorm's weight and bias ([d] each). */
export function normParams(name: string, d: number, layer: number): ParamInfo[] {
  return [
    { name: `${name}.weight`, shape: [d], layer, type: 'norm' },
    { name: `${name}.bias`, shape: [d], layer, type: 'norm' },
  ];
}

/** An nn.Linear's weight [out, in] and, unless `bias` is false, its bias [out]. */
export function linearParams(name: string, outFeatures: number, inFeatures: number, layer: number, type: ModuleType, bias = true): ParamInfo[] {
  const w: ParamInfo = { name: `${name}.weight`, shape: [outFeatures, inFeatures], layer, type };
  return bias ? [w, { name: `${name}.bias`, shape: [outFeatures], layer, type }] : [w];
}

export interface LmTrunk {
  hidden: tf.Tensor2D;
  head: tf.Tensor2D;
  /** The head's parameter (the token embedding when tied). */
  headName: string;
  /** Phi: the head's bias [V] (lm_head.bias), and its parameter name. */
  headBias?: { tensor: tf.Tensor1D; name: string };
  batch: number;
  seq: number;
  /** Gemma 2: logits are capped as cap · tanh(logits / cap) (final_logit_softcapping). */
  logitSoftcap?: number;
}

/** cap · tanh(x / cap): Gemma 2's soft bound on attention scores and logits. */
export function softcap(x: tf.Tensor, cap: number): tf.Tensor {
  return tf.mul(tf.tanh(tf.div(x, cap)), cap);
}

/** Logits [rows, V] of some rows of a trunk's hidden states (all of them, or a slice). */
export function headLogits(r: LmTrunk, hidden: tf.Tensor2D = r.hidden): tf.Tensor2D {
  let logits = tf.matMul(hidden, r.head, false, true) as tf.Tensor2D;
  if (r.headBias) logits = tf.add(logits, r.headBias.tensor);
  return r.logitSoftcap ? (softcap(logits, r.logitSoftcap) as tf.Tensor2D) : logits;
}

/** Logits [B, T, V] from a trunk: hidden · headᵀ (+ bias). */
export function trunkLogits(r: LmTrunk): tf.Tensor3D {
  return tf.reshape(headLogits(r), [r.batch, r.seq, r.head.shape[0]]);
}

export interface Architecture<C extends ModelConfig = ModelConfig> {
  /** Every stored parameter with its expected shape (tied copies excluded). */
  params(cfg: C): ParamInfo[];
  /** Parameter names that alias another (e.g. a tied `lm_head.weight`). */
  aliases(cfg: C): Record<string, string>;
  linearModules(cfg: C): LinearModuleInfo[];
  /** What the inputs must hold. */
  inputKind: 'tokens' | 'pixels';
  task: 'causal-lm' | 'sequence-classification' | 'image-classification';
  forward(cfg: C, f: Forward, inputs: ModelInputs): tf.Tensor;
  /**
   * Causal LMs: the forward pass up to the last norm (hidden [B·T, d]) and the output embedding
   * (head [V, d], named `headName`), so a training loss can take the logits a slice of rows at a
   * time (ops.chunkedCausalLmLoss) instead of holding all B·T·V of them.
   */
  trunk?(cfg: C, f: Forward, inputs: ModelInputs): LmTrunk;
  loss(cfg: C, logits: tf.Tensor, labels: tf.Tensor): tf.Scalar;
  /** Names of the transformer blocks, by layer index (for importance and allocation). */
  blockPrefix(cfg: C, layer: number): string;
  /** The token embedding module (its table is `<module>.weight`), looked up through Forward.embed; none for pixel inputs. */
  tokenEmbedding?(cfg: C): string;
  /**
   * A module or parameter path as transformers 5 names it at run time, where that differs from the
   * checkpoint's name PEFT Lab uses (ViT's `vit.encoder.layer.N.attention.attention.query` is
   * `vit.layers.N.attention.q_proj`): PEFT's files and target_modules use the run-time names.
   */
  runtimeName?(path: string): string;
  /** The inverse of runtimeName: a run-time path back to the checkpoint's (other paths unchanged). */
  checkpointName?(path: string): string;
}

