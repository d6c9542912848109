/** A loaded Hugging Face model: its config, architecture and float32 parameters under their HF names. */
import * as tf from '@tensorflow/tfjs-core';
// Gradients are registered separately from tfjs-core's ops; every training path needs them.
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors';
import { numel } from '../io/safetensors';
import { CheckpointReader } from '../io/checkpoint';
import type { Architecture, LmTrunk, ModelInputs, ParamInfo } from './architecture';
import { bert } from './bert';
import { bloom } from './bloom';
import { deberta } from './deberta';
import { distilbert } from './distilbert';
import { readConfig, type ModelConfig, type ModelType, type ProblemType } from './config';
import { Forward, type Hooks } from './forward';
import { chunkedCausalLmLoss } from './ops';
import { gpt2 } from './gpt2';
import { gptNeox } from './gpt-neox';
import { opt } from './opt';
import { phi } from './phi';
import { llama } from './llama';
import { modernBert } from './modernbert';
import { vit } from './vit';
import { mulberry32 } from '../train/rng';

/** Logits of a batch above which a causal LM's training loss goes by slices (32 Mi floats, 128 MiB; the benchmark's gpu case has 16 Mi). */
export const CHUNKED_LOSS_LOGITS = 1 << 25;
/** Logits per slice (16 Mi floats, 64 MiB). */
export const CHUNK_LOGITS = 1 << 24;

const ARCHITECTURES: Record<ModelType, Architecture<never>> = { gpt2, gpt_neox: gptNeox, opt, phi, bloom, llama, mistral: llama, qwen2: llama, qwen3: llama, gemma: llama, gemma2: llama, gemma3_text: llama, phi3: llama, smollm3: llama, olmo2: llama, granite: llama, stablelm: llama, bert, roberta: bert, 'xlm-roberta': bert, distilbert, 'deberta-v2': deberta, modernbert: modernBert, vit };

/** How a forward pass runs: adapter hooks, parameters replaced by name, dropout on or off. */
export interface RunOptions {
  hooks?: Hooks;
  overrides?: ReadonlyMap<string, tf.Tensor>;
  training?: boolean;
}

/** When a causal LM's logits go by slices (above `chunkedLossLogits`) and how many per slice; tests lower both. */
export interface SliceOptions {
  chunkedLossLogits?: number;
  chunkLogits?: number;
}

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
    /**
     * A classifier's head parameters the checkpoint lacks (a base model: bert-base-uncased has no
     * `classifier`), initialised as transformers does: the run must train them.
     */
    readonly freshHeads: readonly string[] = [],
  ) {
    this.arch = architectureOf(config);
    this.conv1d = new Set(this.arch.linearModules(config).filter((m) => m.fanInFanOut).map((m) => m.module));
    this.aliases = this.arch.aliases(config);
  }

  /**
   * Loads `config.json` and the (possibly sharded) safetensors checkpoint of a folder. Every
   * parameter must be there with its shape, and every stored tensor must be used: a leftover one
   * (a config with fewer layers than the checkpoint) would otherwise be dropped without a word. A
   * classifier's head may be missing (a base checkpoint): it starts as transformers starts it,
   * N(0, 0.02) weights (or the architecture's own init, ParamInfo.fresh) and zero biases, from a seed
   * of its name (the same on every load).
   */
  static async load(dir: string, opts: LoadOptions = {}): Promise<Model> {
    const config = withProblemType(withNumLabels(readConfig(dir), opts.numLabels, dir), opts.problemType);
    const arch = architectureOf(config);
    const reader = await CheckpointReader.open(dir);
    const params = new Map<string, tf.Tensor>();
    const fresh: ParamInfo[] = [];
    try {
      // Headers first (names, shapes, leftovers), so a mismatch is reported before any data is read.
      const stored = new Map<string, string>();
      for (const info of arch.params(config)) {
        const name = resolveStoredName(reader, info.name);
        if (!name && info.type === 'head' && arch.task !== 'causal-lm') {
          fresh.push(info);
          continue;
        }
        if (!name) throw new InputError(join(dir, reader.files()[0]?.name ?? 'model.safetensors'), info.name, 'tensor missing from the checkpoint');
        const entry = reader.entry(name);
        // numLabels asked another head size: the checkpoint's is replaced (transformers' ignore_mismatched_sizes).
        if (opts.numLabels !== undefined && info.type === 'head' && entry.shape.join() !== info.shape.join()) {
          fresh.push(info);
          stored.set(info.name, name);
          continue;
        }
        if (entry.shape.length !== info.shape.length || entry.shape.some((s, i) => s !== info.shape[i]))
          throw new InputError(join(dir, entry.file), name, `shape [${entry.shape.join(', ')}] does not match config.json, which implies [${info.shape.join(', ')}]`);
        stored.set(info.name, name);
      }
      checkAllUsed(reader, new Set(stored.values()), Object.keys(arch.aliases(config)), dir);
      for (const [param, name] of stored) {
        if (fresh.some((f) => f.name === param)) continue;
        const info = reader.entry(name);
        params.set(param, tf.keep(tf.tensor(await reader.readFloat32(name), info.shape, 'float32')));
      }
      for (const info of fresh) params.set(info.name, tf.keep(freshHead(info)));
    } catch (e) {
      for (const t of params.values()) t.dispose();
      throw e;
    } finally {
      await reader.close();
    }
    return new Model(config, params, dir, fresh.map((p) => p.name));
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
  forward(inputs: ModelInputs, opts: RunOptions = {}): tf.Tensor {
    return this.arch.forward(this.config, this.forwardContext(opts), inputs);
  }

  /**
   * Causal LMs: the forward pass without the head's matmul (hidden rows and the head, whose
   * product with headLogits is `forward`'s logits), so callers take logits of only the rows they
   * need; undefined for models without a trunk.
   */
  trunk(inputs: ModelInputs, opts: RunOptions = {}): LmTrunk | undefined {
    return this.arch.trunk?.(this.config, this.forwardContext(opts), inputs);
  }

  private forwardContext(opts: RunOptions): Forward {
    const overrides = opts.overrides;
    const lookup = (name: string): tf.Tensor | undefined => {
      const n = this.aliases[name] ?? name;
      return overrides?.get(n) ?? this.params.get(n);
    };
    return new Forward(lookup, opts.hooks ?? {}, (m) => this.conv1d.has(m), opts.training ?? false);
  }

  /**
   * Rows per slice of a causal LM's loss when the logits of a batch would pass `CHUNKED_LOSS_LOGITS`
   * (a real vocabulary: Qwen's 151,936 × 2,048 tokens is 1.2 GB of them), else undefined: one matmul.
   */
  chunkedLossRows(inputs: ModelInputs, limit = CHUNKED_LOSS_LOGITS, sliceLogits = CHUNK_LOGITS): number | undefined {
    const ids = inputs.inputIds;
    if (!this.arch.trunk || !ids || this.config.vocabSize <= 0) return undefined;
    if (ids.shape[0] * ids.shape[1] * this.config.vocabSize <= limit) return undefined;
    return Math.max(1, Math.floor(sliceLogits / this.config.vocabSize));
  }

  loss(logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
    return this.arch.loss(this.config, logits, labels);
  }

  /** The loss of a batch without gradients (evaluation, probes): by slices of rows where chunkedLossRows says so. */
  lossOf(inputs: ModelInputs, labels: tf.Tensor, opts: RunOptions & SliceOptions = {}): tf.Scalar {
    const rows = this.chunkedLossRows(inputs, opts.chunkedLossLogits, opts.chunkLogits);
    return tf.tidy(() => this.batchLoss(inputs, labels, opts, rows, () => false));
  }

  /** One matmul when `rows` is undefined, else the loss `rows` at a time (never all B·T·V logits). */
  private batchLoss(inputs: ModelInputs, labels: tf.Tensor, run: RunOptions, rows: number | undefined, headTrains: (name: string) => boolean): tf.Scalar {
    if (rows === undefined) return this.loss(this.forward(inputs, run), labels);
    const r = this.trunk(inputs, run)!;
    const headTrainable = headTrains(this.aliases[r.headName] ?? r.headName);
    const bias = r.headBias ? { bias: r.headBias.tensor, biasTrainable: headTrains(r.headBias.name) } : {};
    return chunkedCausalLmLoss(r.hidden, r.head, labels as tf.Tensor2D, { rowsPerChunk: rows, headTrainable, softcap: r.logitSoftcap, ...bias });
  }

  /**
   * Loss and its gradients with respect to the named parameters (base or `extra` adapter tensors).
   * A tied weight receives the sum of both uses, as in PyTorch. The caller owns the results.
   */
  lossAndGrads(
    names: readonly string[],
    inputs: ModelInputs,
    labels: tf.Tensor,
    opts: {
      hooks?: Hooks;
      extra?: ReadonlyMap<string, tf.Tensor>;
      training?: boolean;
      /** Added to the loss (an adapter's regulariser, AdaLoRA's orthogonality penalty), from the traced tensors by name. */
      penalty?: (get: (name: string) => tf.Tensor) => tf.Scalar;
    } & SliceOptions = {},
  ): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
    const xs = names.map((n) => {
      const t = opts.extra?.get(n) ?? this.params.get(n);
      if (!t) throw new Error(`no parameter named ${n}`);
      return t;
    });
    const rows = this.chunkedLossRows(inputs, opts.chunkedLossLogits, opts.chunkLogits);
    const f = (...ts: tf.Tensor[]): tf.Scalar => {
      const overrides = new Map(opts.extra ?? []);
      names.forEach((n, i) => overrides.set(n, ts[i]!));
      // The head's gradient only when it is one of the names (a frozen vocabulary-sized head costs a matmul for nothing).
      const loss = this.batchLoss(inputs, labels, { hooks: opts.hooks, overrides, training: opts.training }, rows, (head) => names.includes(head));
      if (!opts.penalty) return loss;
      const get = (n: string) => {
        const t = overrides.get(n) ?? this.params.get(n);
        if (!t) throw new Error(`no parameter named ${n}`);
        return t;
      };
      return tf.add(loss, opts.penalty(get));
    };
    const { value, grads } = tf.valueAndGrads(f)(xs);
    return { loss: value as tf.Scalar, grads: new Map(names.map((n, i) => [n, grads[i]!])) };
  }

  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    this.params.clear();
  }
}

/** The task model's prefix of a parameter name (GPT-2's `transformer.`, Llama's `model.`, …). */
const TASK_PREFIX = /^(transformer|gpt_neox|model|bert|roberta|distilbert|deberta|vit)\./;
export interface LoadOptions {
  /** A classifier's outputs in place of config.json's num_labels (the spec's numLabels). */
  numLabels?: number;
  /** A classifier's loss in place of config.json's problem_type (the spec's problemType). */
  problemType?: ProblemType;
}

/** config.json with another problem_type, as from_pretrained(problem_type=…) gives it. */
function withProblemType(config: ModelConfig, problemType: ProblemType | undefined): ModelConfig {
  return problemType === undefined || !('problemType' in config) ? config : { ...config, problemType };
}

/**
 * config.json with another num_labels, as from_pretrained(num_labels=…) gives it: a label table of
 * that size, and for one output without an explicit problem_type, a regression.
 */
function withNumLabels(config: ModelConfig, numLabels: number | undefined, dir: string): ModelConfig {
  if (numLabels === undefined || !('numLabels' in config) || config.numLabels === numLabels) return config;
  if (!Number.isInteger(numLabels) || numLabels < 1) throw new InputError(join(dir, 'config.json'), 'num_labels', `numLabels must be an integer ≥ 1, got ${numLabels}`);
  const explicit = readProblemType(dir);
  return { ...config, numLabels, problemType: explicit ?? (numLabels === 1 ? 'regression' : 'single_label_classification') };
}

/** config.json's own problem_type, if it names one. */
function readProblemType(dir: string): ProblemType | undefined {
  try {
    const p = (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { problem_type?: unknown }).problem_type;
    return p === 'regression' || p === 'single_label_classification' || p === 'multi_label_classification' ? p : undefined;
  } catch {
    return undefined;
  }
}

/** A head parameter a base checkpoint lacks, as transformers' _init_weights starts it (initializer_range 0.02). */
function freshHead(info: ParamInfo): tf.Tensor {
  if (info.fresh === 'ones') return tf.ones(info.shape);
  if (info.name.endsWith('.bias')) return tf.zeros(info.shape);
  let h = 0;
  for (const c of info.name) h = (Math.imul(h, 31) + c.charCodeAt(0)) | 0;
  const seed = (h >>> 0) || 1;
  const std = info.fresh?.std ?? 0.02;
  const cutoff = info.fresh?.cutoff;
  if (cutoff === undefined) return tf.randomNormal(info.shape, 0, std, 'float32', seed);
  // trunc_normal_(std, a=−cutoff·std, b=cutoff·std): normals redrawn until inside.
  const rand = mulberry32(seed);
  const out = new Float32Array(info.shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < out.length; i++) {
    let z: number;
    do z = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
    while (Math.abs(z) > cutoff);
    out[i] = z * std;
  }
  return tf.tensor(out, info.shape, 'float32');
}

/** A parameter's name without the task model's prefix, as base-model checkpoints store it. */
export const withoutTaskPrefix = (name: string): string => name.replace(TASK_PREFIX, '');

/** Checkpoints saved from a bare base model lack the task prefix (`transformer.`, `gpt_neox.`, `model.`, `bert.`, `roberta.`, `distilbert.`, `vit.`). */
function resolveStoredName(reader: CheckpointReader, name: string): string | undefined {
  if (reader.has(name)) return name;
  const other = STORED_ALIASES[name];
  if (other && reader.has(other)) return other;
  const stripped = withoutTaskPrefix(name);
  return stripped !== name && reader.has(stripped) ? stripped : undefined;
}

/** Names some checkpoints store a parameter under: transformers 5 loads GPT-NeoX's `embed_out` as `lm_head` and may save it so (save_original_format=False). */
const STORED_ALIASES: Readonly<Record<string, string>> = { 'embed_out.weight': 'lm_head.weight' };

/**
 * Buffers transformers saves beside the parameters and recomputes on load: GPT-2's causal mask
 * (`attn.bias`, `attn.masked_bias`; GPT-NeoX's `attention.bias`, `attention.masked_bias`), position
 * ids (BERT, ViT), Llama's and Pythia's rotary `inv_freq`.
 */
const BUFFERS = /(^|\.)(attn\.bias|attn\.masked_bias|attention\.bias|attention\.masked_bias|position_ids|rotary_emb\.inv_freq)$/;

/** A name with its numbers (layer indices) generalised, and without the task prefix. */
const shapeOfName = (n: string) => withoutTaskPrefix(n).replace(/\.\d+\./g, '.#.');

/**
 * Refuses a checkpoint with leftover tensors of the model's own kind (a block the config does not
 * have: config.json and the checkpoint disagree on the number of layers). Other extras load, as in
 * transformers: heads of another task (BERT's pretraining `cls.*`), tied copies, buffers.
 */
function checkAllUsed(reader: CheckpointReader, used: ReadonlySet<string>, tied: readonly string[], dir: string): void {
  const tiedNames = new Set(tied.flatMap((n) => [n, withoutTaskPrefix(n)]));
  const kinds = new Set([...used].map(shapeOfName));
  const unused = reader.names().filter((n) => !used.has(n) && !tiedNames.has(n) && !BUFFERS.test(n) && kinds.has(shapeOfName(n)));
  if (unused.length === 0) return;
  const first = unused[0]!;
  const more = unused.length > 1 ? ` (and ${unused.length - 1} more of ${unused.length} unused tensors)` : '';
  throw new InputError(join(dir, reader.entry(first).file), first, `tensor not used by the model config.json describes${more}: config.json and the checkpoint disagree (e.g. on the number of layers)`);
}
