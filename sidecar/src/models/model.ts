/** A loaded Hugging Face model: its config, architecture and float32 parameters under their HF names. */
import * as tf from '@tensorflow/tfjs-core';
// Gradients are registered separately from tfjs-core's ops; every training path needs them.
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { join } from 'node:path';
import { InputError } from '../errors';
import { CheckpointReader, numel } from '../io/safetensors';
import type { Architecture, ModelInputs, ParamInfo } from './architecture';
import { bert } from './bert';
import { readConfig, type ModelConfig, type ModelType } from './config';
import { Forward, type Hooks } from './forward';
import { gpt2 } from './gpt2';
import { llama } from './llama';
import { vit } from './vit';

const ARCHITECTURES: Record<ModelType, Architecture<never>> = { gpt2, llama, bert, vit };

export function architectureOf(cfg: ModelConfig): Architecture {
  return ARCHITECTURES[cfg.modelType] as Architecture;
}

export class Model {
  readonly arch: Architecture;
  private readonly conv1d: Set<string>;
  /** Parameter names that alias another (a tied `lm_head.weight` → the input embedding). */
  readonly aliases: Readonly<Record<string, string>>;

  constructor(
    readonly config: ModelConfig,
    /** Base parameters (kept tensors), by Hugging Face name. */
    readonly params: Map<string, tf.Tensor>,
    readonly dir = '',
  ) {
    this.arch = architectureOf(config);
    this.conv1d = new Set(this.arch.linearModules(config).filter((m) => m.fanInFanOut).map((m) => m.module));
    this.aliases = this.arch.aliases(config);
  }

  /** Loads `config.json` and the (possibly sharded) safetensors checkpoint of a folder. */
  static async load(dir: string): Promise<Model> {
    const config = readConfig(dir);
    const arch = architectureOf(config);
    const reader = await CheckpointReader.open(dir);
    const params = new Map<string, tf.Tensor>();
    try {
      for (const info of arch.params(config)) {
        const name = resolveStoredName(reader, info.name);
        if (!name) throw new InputError(join(dir, 'model.safetensors'), info.name, 'tensor missing from the checkpoint');
        const entry = reader.entry(name);
        if (entry.shape.length !== info.shape.length || entry.shape.some((s, i) => s !== info.shape[i]))
          throw new InputError(join(dir, entry.file), name, `shape [${entry.shape.join(', ')}] does not match config.json, which implies [${info.shape.join(', ')}]`);
        const data = await reader.readFloat32(name);
        params.set(info.name, tf.keep(tf.tensor(data, info.shape, 'float32')));
      }
    } catch (e) {
      for (const t of params.values()) t.dispose();
      throw e;
    } finally {
      await reader.close();
    }
    return new Model(config, params, dir);
  }

  /** Every parameter the architecture defines, with its layer and module type. */
  paramInfo(): ParamInfo[] {
    return this.arch.params(this.config);
  }

  parameterCount(): number {
    let n = 0;
    for (const t of this.params.values()) n += numel(t.shape);
    return n;
  }

  /**
   * Logits for the inputs. `overrides` replace or add parameters by name (adapter weights, or the
   * tensors a gradient is taken with respect to); `hooks` let adapters wrap modules.
   */
  forward(inputs: ModelInputs, opts: { hooks?: Hooks; overrides?: ReadonlyMap<string, tf.Tensor>; training?: boolean } = {}): tf.Tensor {
    const overrides = opts.overrides;
    const lookup = (name: string): tf.Tensor | undefined => {
      const n = this.aliases[name] ?? name;
      return overrides?.get(n) ?? this.params.get(n);
    };
    const f = new Forward(lookup, opts.hooks ?? {}, (m) => this.conv1d.has(m), opts.training ?? false);
    return this.arch.forward(this.config, f, inputs);
  }

  loss(logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
    return this.arch.loss(this.config, logits, labels);
  }

  /**
   * Loss and its gradients with respect to the named parameters (base or `extra` adapter tensors).
   * A tied weight receives the sum of both uses, as in PyTorch. The caller owns the results.
   */
  lossAndGrads(
    names: readonly string[],
    inputs: ModelInputs,
    labels: tf.Tensor,
    opts: { hooks?: Hooks; extra?: ReadonlyMap<string, tf.Tensor>; training?: boolean } = {},
  ): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
    const xs = names.map((n) => {
      const t = opts.extra?.get(n) ?? this.params.get(n);
      if (!t) throw new Error(`no parameter named ${n}`);
      return t;
    });
    const f = (...ts: tf.Tensor[]): tf.Scalar => {
      const overrides = new Map(opts.extra ?? []);
      names.forEach((n, i) => overrides.set(n, ts[i]!));
      return this.loss(this.forward(inputs, { hooks: opts.hooks, overrides, training: opts.training }), labels);
    };
    const { value, grads } = tf.valueAndGrads(f)(xs);
    return { loss: value as tf.Scalar, grads: new Map(names.map((n, i) => [n, grads[i]!])) };
  }

  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    this.params.clear();
  }
}

/** Checkpoints saved from a bare base model lack the task prefix (`transformer.`, `model.`, `bert.`, `vit.`). */
function resolveStoredName(reader: CheckpointReader, name: string): string | undefined {
  if (reader.has(name)) return name;
  const stripped = name.replace(/^(transformer|model|bert|vit)\./, '');
  return stripped !== name && reader.has(stripped) ? stripped : undefined;
}
