import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors';
import { parseJsonText } from '../io/json';

/** The architectures PEFT Lab imports, keyed by Hugging Face `model_type`. */
export const MODEL_TYPES = ['gpt2', 'llama', 'bert', 'vit'] as const;
export type ModelType = (typeof MODEL_TYPES)[number];

export type Activation = 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'relu' | 'silu' | 'tanh';
const ACTIVATIONS: Record<string, Activation> = {
  gelu: 'gelu',
  gelu_new: 'gelu_new',
  gelu_fast: 'gelu_new',
  gelu_pytorch_tanh: 'gelu_pytorch_tanh',
  relu: 'relu',
  silu: 'silu',
  swish: 'silu',
  tanh: 'tanh',
};

interface Common {
  modelType: ModelType;
  architecture: string;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  headDim: number;
  vocabSize: number;
}
export interface Gpt2Config extends Common {
  modelType: 'gpt2';
  maxPositions: number;
  innerSize: number;
  activation: Activation;
  layerNormEps: number;
  scaleAttnWeights: boolean;
  scaleAttnByInverseLayerIdx: boolean;
  tieWordEmbeddings: boolean;
}
export interface LlamaConfig extends Common {
  modelType: 'llama';
  numKvHeads: number;
  intermediateSize: number;
  activation: Activation;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositions: number;
  attentionBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  /** Row of the token embedding that gets no gradient (nn.Embedding's padding_idx). */
  padTokenId?: number;
}
export interface BertConfig extends Common {
  modelType: 'bert';
  intermediateSize: number;
  activation: Activation;
  layerNormEps: number;
  maxPositions: number;
  typeVocabSize: number;
  padTokenId?: number;
  numLabels: number;
  problemType: ProblemType;
}
export interface VitConfig extends Common {
  modelType: 'vit';
  intermediateSize: number;
  activation: Activation;
  layerNormEps: number;
  imageSize: number;
  patchSize: number;
  numChannels: number;
  qkvBias: boolean;
  numLabels: number;
  problemType: ProblemType;
}
export type ProblemType = 'single_label_classification' | 'regression' | 'multi_label_classification';
export type ModelConfig = Gpt2Config | LlamaConfig | BertConfig | VitConfig;

/** Sanity bounds far above any real checkpoint (Llama-3 405B: 126 layers, width 16384, vocab 128256). */
const MAX_DIM = 1 << 20;
const MAX_LAYERS = 1024;
const MAX_VOCAB = 1 << 24;

/** Reads fields from a parsed config.json, each error naming the file and the key. */
class Fields {
  constructor(
    private readonly file: string,
    private readonly raw: Record<string, unknown>,
  ) {}
  fail(key: string, problem: string): never {
    throw new InputError(this.file, key, problem);
  }
  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }
  /** An integer field; `max` bounds sizes so a hostile config cannot make us enumerate or allocate billions. */
  int(key: string, fallback?: number, min = 1, max = MAX_DIM): number {
    const v = this.raw[key] ?? fallback;
    if (v === undefined || v === null) this.fail(key, 'missing required field');
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(key, `expected an integer, got ${JSON.stringify(v)}`);
    if (v < min) this.fail(key, `must be at least ${min}, got ${v}`);
    if (v > max) this.fail(key, `must be at most ${max}, got ${v}`);
    return v;
  }
  num(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `expected a finite number, got ${JSON.stringify(v)}`);
    return v;
  }
  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  activation(key: string, fallback: string): Activation {
    const v = this.raw[key] ?? fallback;
    const a = typeof v === 'string' ? ACTIVATIONS[v] : undefined;
    if (!a) this.fail(key, `unsupported activation ${JSON.stringify(v)} (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
    return a;
  }
  get(key: string): unknown {
    return this.raw[key];
  }
}

function numLabels(f: Fields): number {
  const id2label = f.get('id2label');
  if (f.has('num_labels')) return f.int('num_labels');
  if (id2label && typeof id2label === 'object') return Math.max(1, Object.keys(id2label).length);
  return 2; // transformers' PretrainedConfig default
}

function problemType(f: Fields, labels: number): ProblemType {
  const p = f.get('problem_type');
  if (p === undefined || p === null) return labels === 1 ? 'regression' : 'single_label_classification';
  if (p === 'single_label_classification' || p === 'regression' || p === 'multi_label_classification') return p;
  return f.fail('problem_type', `unsupported problem type ${JSON.stringify(p)}`);
}

function heads(f: Fields, hidden: number, key: string, hiddenKey: string): number {
  const h = f.int(key);
  if (hidden % h !== 0) f.fail(key, `${hiddenKey}=${hidden} is not divisible by ${key}=${h}`);
  return h;
}

/** Parses and checks a Hugging Face config.json object. `file` is only used in error messages. */
export function parseConfig(raw: unknown, file: string): ModelConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError(file, '', 'expected a JSON object');
  const f = new Fields(file, raw as Record<string, unknown>);
  const modelType = f.get('model_type');
  const archs = f.get('architectures');
  const architecture = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : '';
  switch (modelType) {
    case 'gpt2': {
      const hiddenSize = f.int('n_embd');
      const numHeads = heads(f, hiddenSize, 'n_head', 'n_embd');
      return {
        modelType,
        architecture: architecture || 'GPT2LMHeadModel',
        hiddenSize,
        numHeads,
        headDim: hiddenSize / numHeads,
        numLayers: f.int('n_layer', undefined, 1, MAX_LAYERS),
        vocabSize: f.int('vocab_size', undefined, 1, MAX_VOCAB),
        maxPositions: f.int('n_positions'),
        innerSize: f.has('n_inner') ? f.int('n_inner') : 4 * hiddenSize,
        activation: f.activation('activation_function', 'gelu_new'),
        layerNormEps: f.num('layer_norm_epsilon', 1e-5),
        scaleAttnWeights: f.bool('scale_attn_weights', true),
        scaleAttnByInverseLayerIdx: f.bool('scale_attn_by_inverse_layer_idx', false),
        tieWordEmbeddings: f.bool('tie_word_embeddings', true),
      };
    }
    case 'llama': {
      const hiddenSize = f.int('hidden_size');
      const numHeads = f.int('num_attention_heads');
      const headDim = f.has('head_dim') ? f.int('head_dim') : hiddenSize / numHeads;
      if (!Number.isInteger(headDim)) f.fail('num_attention_heads', `hidden_size=${hiddenSize} is not divisible by num_attention_heads=${numHeads} and no head_dim is given`);
      const numKvHeads = f.int('num_key_value_heads', numHeads);
      if (numHeads % numKvHeads !== 0) f.fail('num_key_value_heads', `num_attention_heads=${numHeads} is not divisible by num_key_value_heads=${numKvHeads}`);
      if (headDim % 2 !== 0) f.fail('head_dim', `rotary embeddings need an even head dimension, got ${headDim}`);
      return {
        modelType,
        architecture: architecture || 'LlamaForCausalLM',
        hiddenSize,
        numHeads,
        headDim,
        numKvHeads,
        numLayers: f.int('num_hidden_layers', undefined, 1, MAX_LAYERS),
        vocabSize: f.int('vocab_size', undefined, 1, MAX_VOCAB),
        intermediateSize: f.int('intermediate_size'),
        activation: f.activation('hidden_act', 'silu'),
        rmsNormEps: f.num('rms_norm_eps', 1e-6),
        ropeTheta: ropeTheta(f),
        maxPositions: f.int('max_position_embeddings', 2048),
        attentionBias: f.bool('attention_bias', false),
        mlpBias: f.bool('mlp_bias', false),
        tieWordEmbeddings: f.bool('tie_word_embeddings', false),
        ...padToken(f, 'pad_token_id'),
      };
    }
    case 'bert': {
      const hiddenSize = f.int('hidden_size');
      const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size');
      const labels = numLabels(f);
      return {
        modelType,
        architecture: architecture || 'BertForSequenceClassification',
        hiddenSize,
        numHeads,
        headDim: hiddenSize / numHeads,
        numLayers: f.int('num_hidden_layers', undefined, 1, MAX_LAYERS),
        vocabSize: f.int('vocab_size', undefined, 1, MAX_VOCAB),
        intermediateSize: f.int('intermediate_size'),
        activation: f.activation('hidden_act', 'gelu'),
        layerNormEps: f.num('layer_norm_eps', 1e-12),
        maxPositions: f.int('max_position_embeddings', 512),
        typeVocabSize: f.int('type_vocab_size', 2),
        ...padToken(f, 'pad_token_id', 0),
        numLabels: labels,
        problemType: problemType(f, labels),
      };
    }
    case 'vit': {
      const hiddenSize = f.int('hidden_size');
      const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size');
      const imageSize = f.int('image_size', 224);
      const patchSize = f.int('patch_size', 16);
      if (imageSize % patchSize !== 0) f.fail('patch_size', `image_size=${imageSize} is not divisible by patch_size=${patchSize}`);
      const labels = numLabels(f);
      return {
        modelType,
        architecture: architecture || 'ViTForImageClassification',
        hiddenSize,
        numHeads,
        headDim: hiddenSize / numHeads,
        numLayers: f.int('num_hidden_layers', undefined, 1, MAX_LAYERS),
        vocabSize: 0,
        intermediateSize: f.int('intermediate_size'),
        activation: f.activation('hidden_act', 'gelu'),
        layerNormEps: f.num('layer_norm_eps', 1e-12),
        imageSize,
        patchSize,
        numChannels: f.int('num_channels', 3),
        qkvBias: f.bool('qkv_bias', true),
        numLabels: labels,
        problemType: problemType(f, labels),
      };
    }
    default:
      return f.fail('model_type', `unsupported model type ${JSON.stringify(modelType)} (supported: ${MODEL_TYPES.join(', ')})`);
  }
}

function padToken(f: Fields, key: string, fallback?: number): { padTokenId?: number } {
  if (!f.has(key) && fallback === undefined) return {};
  return { padTokenId: f.int(key, fallback, 0) };
}

function ropeTheta(f: Fields): number {
  // transformers 5 nests RoPE settings under rope_parameters; older configs use rope_theta/rope_scaling.
  const params = f.get('rope_parameters') ?? f.get('rope_scaling');
  if (params && typeof params === 'object') {
    const p = params as Record<string, unknown>;
    const type = p.rope_type ?? p.type ?? 'default';
    if (type !== 'default') f.fail('rope_parameters.rope_type', `unsupported RoPE type ${JSON.stringify(type)} (supported: default)`);
    if (typeof p.rope_theta === 'number') return p.rope_theta;
  }
  return f.num('rope_theta', 10000);
}

export function readConfig(dir: string): ModelConfig {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // ENOTDIR: `dir` is a file (e.g. the model.safetensors itself); name what was given, not the path we made.
    if (code === 'ENOTDIR') throw new InputError(dir, '', 'not a folder: give the model folder (config.json and model.safetensors)');
    throw new InputError(file, '', code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a folder, not a file' : `cannot read (${code ?? (e as Error).message})`);
  }
  return parseConfig(parseJsonText(text, file), file);
}

/** A GPT-2 of the usual layout (pre-LN, tanh-GELU, 4·d MLP, learned positions, tied embeddings):
 * the bundled default model's and the benchmark's. */
export function gpt2Config(o: { d: number; layers: number; heads: number; vocab: number; positions: number }): Gpt2Config {
  return {
    modelType: 'gpt2',
    architecture: 'GPT2LMHeadModel',
    hiddenSize: o.d,
    numLayers: o.layers,
    numHeads: o.heads,
    headDim: o.d / o.heads,
    vocabSize: o.vocab,
    maxPositions: o.positions,
    innerSize: 4 * o.d,
    activation: 'gelu_new',
    layerNormEps: 1e-5,
    scaleAttnWeights: true,
    scaleAttnByInverseLayerIdx: false,
    tieWordEmbeddings: true,
  };
}
