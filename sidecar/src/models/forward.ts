/**
 * The seam between architectures and adapters. An architecture's forward pass reads parameters,
 * looks its tokens up and applies linear layers only through a `Forward`, so an adapter can wrap any
 * linear module (LoRA, DoRA, IA3, ...), the token embedding (LoRA's lora_embedding_A/B) or act at a
 * named tap point (SSF, bottleneck adapters) without the architecture knowing, and gradients can be
 * taken with respect to any set of parameter names.
 */
import * as tf from '@tensorflow/tfjs-core';
import { embedding } from './ops';
import { fusedLinear } from '../backend/native/fused';

/** A linear module as stored: `weight` is [out, in], or [in, out] for GPT-2's Conv1D (`fanInFanOut`). */
export interface LinearLayer {
  readonly module: string;
  readonly weight: tf.Tensor2D;
  readonly bias?: tf.Tensor1D;
  readonly fanInFanOut: boolean;
}

/** Wraps one linear module; `base` computes the unadapted layer. x is [N, in], the result [N, out]. */
export type LinearHook = (x: tf.Tensor2D, layer: LinearLayer, base: (x: tf.Tensor2D) => tf.Tensor2D, f: Forward) => tf.Tensor2D;
/**
 * Wraps a token-embedding lookup: ids [N] → rows [N, d]; `base` is the plain lookup, `paddingIdx`
 * the row that gets no gradient (nn.Embedding's padding_idx), which an adapter's own table honours too.
 */
export type EmbeddingHook = (ids: tf.Tensor1D, base: (ids: tf.Tensor1D) => tf.Tensor2D, paddingIdx: number | undefined, f: Forward) => tf.Tensor2D;
/** Acts on the activation at a named point (module path of a norm, attention or MLP block). */
export type TapHook = (x: tf.Tensor, f: Forward) => tf.Tensor;

export interface Hooks {
  readonly linear?: ReadonlyMap<string, LinearHook>;
  /** By embedding module (`model.embed_tokens`, `transformer.wte`, ...). */
  readonly embeddings?: ReadonlyMap<string, EmbeddingHook>;
  readonly taps?: ReadonlyMap<string, TapHook>;
}

export type ParamLookup = (name: string) => tf.Tensor | undefined;

export class Forward {
  constructor(
    private readonly lookup: ParamLookup,
    private readonly hooks: Hooks,
    /** Modules stored as [in, out] (GPT-2 Conv1D). */
    private readonly conv1d: (module: string) => boolean,
    readonly training: boolean,
  ) {}

  /** A parameter by name (Hugging Face names for base weights). */
  p(name: string): tf.Tensor {
    const t = this.lookup(name);
    if (!t) throw new Error(`parameter ${name} is not loaded`);
    return t;
  }

  has(name: string): boolean {
    return this.lookup(name) !== undefined;
  }

  layer(module: string): LinearLayer {
    const bias = this.lookup(`${module}.bias`) as tf.Tensor1D | undefined;
    return { module, weight: this.p(`${module}.weight`) as tf.Tensor2D, fanInFanOut: this.conv1d(module), ...(bias ? { bias } : {}) };
  }

  /** y = x Wᵀ + b (x W + b for Conv1D) on x [N, in], through the module's hook if any. */
  linear(module: string, x: tf.Tensor2D): tf.Tensor2D {
    const layer = this.layer(module);
    const hook = this.hooks.linear?.get(module);
    return hook ? hook(x, layer, (y) => baseLinear(y, layer), this) : baseLinear(x, layer);
  }

  /** Linear on [..., in] inputs of any rank. */
  linearNd(module: string, x: tf.Tensor): tf.Tensor {
    const lead = x.shape.slice(0, -1);
    const y = this.linear(module, tf.reshape(x, [-1, x.shape[x.rank - 1]!]) as tf.Tensor2D);
    return tf.reshape(y, [...lead, y.shape[1]]);
  }

  /** The token embedding rows of module `module` for ids [N] (flattened), through its hook if any. */
  embed(module: string, ids: tf.Tensor, paddingIdx?: number): tf.Tensor2D {
    const flat = tf.reshape(ids, [-1]) as tf.Tensor1D;
    const base = (i: tf.Tensor1D) => embedding(this.p(`${module}.weight`), i, paddingIdx);
    const hook = this.hooks.embeddings?.get(module);
    return hook ? hook(flat, base, paddingIdx, this) : base(flat);
  }

  tap(point: string, x: tf.Tensor): tf.Tensor {
    const hook = this.hooks.taps?.get(point);
    return hook ? hook(x, this) : x;
  }
}

export function baseLinear(x: tf.Tensor2D, layer: LinearLayer): tf.Tensor2D {
  // One op (GEMM with the bias in its last pass) where the backend has it.
  const fused = layer.bias ? fusedLinear(x, layer.weight, layer.bias, !layer.fanInFanOut) : undefined;
  if (fused) return fused;
  const y: tf.Tensor2D = tf.matMul(x, layer.weight, false, !layer.fanInFanOut);
  return layer.bias ? (tf.add(y, layer.bias) as tf.Tensor2D) : y;
}
