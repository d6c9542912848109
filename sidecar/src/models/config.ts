import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors';
import { parseJsonText } from '../io/json';

/** The architectures PEFT Lab imports, keyed by Hugging Face `model_type`. */
export const MODEL_TYPES = ['gpt2', 'gpt_neox', 'opt', 'phi', 'bloom', 'llama', 'mistral', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3_text', 'phi3', 'smollm3', 'olmo2', 'granite', 'stablelm', 'bert', 'roberta', 'xlm-roberta', 'distilbert', 'deberta-v2', 'modernbert', 'vit'] as const;
export type ModelType = (typeof MODEL_TYPES)[number];
/** Decoders of Llama's layout (RoPE, RMSNorm, gated MLP, grouped-query attention) that differ only in options. */
export const LLAMA_FAMILY = ['llama', 'mistral', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3_text', 'phi3', 'smollm3', 'olmo2', 'granite', 'stablelm'] as const;
export type LlamaFamilyType = (typeof LLAMA_FAMILY)[number];

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
/** How RoPE's inverse frequencies are computed (transformers' `rope_type`). */
export type RopeScaling =
  | { type: 'default' }
  | { type: 'linear'; factor: number }
  /**
   * Dynamic NTK: beyond `originalMaxPositions` (max_position_embeddings), the base grows with the
   * sequence length L as θ·(factor·L/original − (factor − 1))^(d/(d−2)); unchanged up to it.
   */
  | { type: 'dynamic'; factor: number; originalMaxPositions: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  /**
   * Phi-3's LongRoPE: one divisor per frequency, `shortFactor` while the sequence fits
   * original_max_position_embeddings and `longFactor` beyond; cos and sin are scaled by `attentionFactor`.
   */
  | { type: 'longrope'; shortFactor: number[]; longFactor: number[]; originalMaxPositions: number; attentionFactor: number };
/**
 * Llama and the decoders that only change its options: Mistral (sliding window), Qwen2 (q/k/v biases),
 * Qwen3 (q/k norms), Gemma ((1 + w) norms, scaled embeddings, GELU), Gemma 2 (plus norms around each
 * sub-layer, soft-capped scores and logits), Gemma 3 text (q/k norms instead of the caps, and a RoPE of
 * its own for the sliding blocks), Phi-3 (fused q/k/v and gate/up projections, partial RoPE, LongRoPE).
 */
export interface LlamaConfig extends Common {
  modelType: LlamaFamilyType;
  numKvHeads: number;
  intermediateSize: number;
  activation: Activation;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Leading dimensions of each head that RoPE rotates (Phi-3's partial_rotary_factor · head_dim); the rest pass through. */
  rotaryDim: number;
  maxPositions: number;
  /** Biases on q_proj, k_proj, v_proj (Llama's attention_bias, always on in Qwen2). */
  qkvBias: boolean;
  /** A bias on o_proj (Llama's and Qwen3's attention_bias; never in Qwen2). */
  outputBias: boolean;
  mlpBias: boolean;
  /** Qwen3: an RMSNorm over each head's query and key (q_norm, k_norm) before RoPE. */
  qkNorm: boolean;
  /** StableLM: LayerNorms with a bias (ε in rmsNormEps) instead of RMSNorms. */
  layerNorms?: boolean;
  /** StableLM (use_parallel_residual): the MLP reads input_layernorm's output too, and both add to the stream. */
  parallelResidual?: boolean;
  /** StableLM (qk_layernorm): q_layernorm / k_layernorm hold one bias-free LayerNorm per head (norms.{h}.weight). */
  qkNormPerHeadWeights?: boolean;
  /** Granite: each sub-layer's output is scaled by this before the residual add (residual_multiplier); 1 elsewhere. */
  residualScale?: number;
  /** Granite: logits are divided by this (logits_scaling). */
  logitDivisor?: number;
  /** OLMo-2: q_norm and k_norm normalise the whole projection (all heads at once), not each head. */
  qkNormOverProjection?: boolean;
  /** OLMo-2: false: no norm before the sub-layers (input_layernorm, pre_feedforward_layernorm), only the sandwich's post-norms. */
  preNorms?: boolean;
  /** Per block, the sliding attention window (a query sees itself and the window − 1 keys before it), or undefined for full causal attention. */
  slidingWindows: (number | undefined)[];
  /** Gemma: RMSNorms scale by (offset + weight), offset 1 (their weights start at 0); 0 elsewhere. */
  normOffset: number;
  /** Gemma 3: a norm on each sub-layer's output (post_attention_layernorm, post_feedforward_layernorm) and pre_feedforward_layernorm before the MLP. */
  sandwichNorms: boolean;
  /** Multiplies the token embeddings (Gemma: √hidden_size, in float32); 1 elsewhere. */
  embedScale: number;
  /** Attention scores' scale: 1/√head_dim, or Gemma 2/3's query_pre_attn_scalar^−½. */
  attentionScale: number;
  /** Gemma 2: attention scores are capped as cap · tanh(scores / cap) before the mask (attn_logit_softcapping). */
  attnSoftcap?: number;
  /** Gemma 2: logits are capped the same way (final_logit_softcapping). */
  logitSoftcap?: number;
  /** Phi-3: one qkv_proj for queries, keys and values, and one gate_up_proj for the MLP's gate and up halves. */
  fusedProjections: boolean;
  /** SmolLM3: per block, true where it uses no position encoding at all (NoPE: no_rope_layers says 0). */
  noRopeLayers?: boolean[];
  /** Gemma 3: the RoPE of its sliding blocks (rope_local_base_freq), where it differs from the full blocks'. */
  localRope?: { theta: number; scaling: RopeScaling; layers: boolean[] };
  tieWordEmbeddings: boolean;
  /** Row of the token embedding that gets no gradient (nn.Embedding's padding_idx). */
  padTokenId?: number;
}
/**
 * GPTNeoXForCausalLM (Pythia, GPT-NeoX-20B): LayerNorm blocks whose attention and MLP by default read
 * the same input and add in parallel (use_parallel_residual), one query_key_value projection laid out
 * per head ([q; k; v] of head_dim each), RoPE over the first partial_rotary_factor of each head, an
 * untied `embed_out` head.
 */
export interface GptNeoxConfig extends Common {
  modelType: 'gpt_neox';
  intermediateSize: number;
  activation: Activation;
  layerNormEps: number;
  maxPositions: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Leading dimensions of each head that RoPE rotates (rotary_pct · head_dim). */
  rotaryDim: number;
  parallelResidual: boolean;
  /** Biases on query_key_value and the attention's dense (the MLP always has them). */
  attentionBias: boolean;
  tieWordEmbeddings: boolean;
}
/**
 * OPTForCausalLM (facebook/opt-*): learned positions offset by 2, LayerNorm before (or, in opt-350m,
 * after) each sub-layer, a ReLU MLP (fc1, fc2), token embeddings of word_embed_proj_dim projected in
 * and out where that differs from hidden_size, a head tied to the token embeddings.
 */
export interface OptConfig extends Common {
  modelType: 'opt';
  intermediateSize: number;
  activation: Activation;
  layerNormEps: number;
  /** Rows of embed_positions less its offset of 2 (max_position_embeddings). */
  maxPositions: number;
  /** do_layer_norm_before: pre-LN blocks; false (opt-350m): each sub-layer's residual sum is normalised after. */
  layerNormBefore: boolean;
  /** The decoder's final_layer_norm (only with pre-LN blocks, unless _remove_final_layer_norm). */
  finalLayerNorm: boolean;
  /** Width of the token embeddings and the head; project_in and project_out map it to hidden_size where they differ. */
  wordEmbedProjDim: number;
  /** Biases on every projection (enable_bias). */
  enableBias: boolean;
  tieWordEmbeddings: boolean;
  padTokenId?: number;
}
/**
 * PhiForCausalLM (phi-1, phi-1.5, phi-2): one LayerNorm per block feeding the attention and the MLP,
 * whose outputs add to the residual in parallel; RoPE over the first partial_rotary_factor of each
 * head; biases everywhere, the head's too.
 */
export interface PhiConfig extends Common {
  modelType: 'phi';
  numKvHeads: number;
  intermediateSize: number;
  activation: Activation;
  layerNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Leading dimensions of each head that RoPE rotates (partial_rotary_factor · head_dim). */
  rotaryDim: number;
  /** qk_layernorm: a LayerNorm over each head's query and key (before RoPE). */
  qkLayernorm: boolean;
  tieWordEmbeddings: boolean;
  padTokenId?: number;
}
/**
 * BloomForCausalLM (BLOOM, BLOOMZ): ALiBi instead of positions (each head adds slope · key position to
 * its scores), a LayerNorm on the embeddings, pre-LN blocks with GPT-NeoX's per-head query_key_value,
 * a 4·d tanh-GELU MLP, a head tied to the embeddings.
 */
export interface BloomConfig extends Common {
  modelType: 'bloom';
  layerNormEps: number;
  /** apply_residual_connection_post_layernorm: the residual of each sub-layer is its normalised input. */
  residualPostLayernorm: boolean;
  tieWordEmbeddings: boolean;
}
/** The post-LN text encoders of BERT's layout: BERT, RoBERTa / XLM-RoBERTa (positions and head differ), DistilBERT (no token types; names and head differ). */
export const ENCODER_FAMILY = ['bert', 'roberta', 'xlm-roberta', 'distilbert'] as const;
export type EncoderType = (typeof ENCODER_FAMILY)[number];
/** Text encoders that classify a sequence (an attention mask over padding): BERT's family and DeBERTa. */
/** Model types of text classifiers: they read sentence pairs and take a label per row. */
export const TEXT_CLASSIFIER_TYPES: readonly ModelType[] = [...ENCODER_FAMILY, 'deberta-v2', 'modernbert'];
export const isEncoder = (c: ModelConfig): c is BertConfig | DebertaConfig | ModernBertConfig => TEXT_CLASSIFIER_TYPES.includes(c.modelType);

/**
 * DebertaV2ForSequenceClassification (DeBERTa-v2 and -v3): BERT's post-LN encoder with disentangled
 * attention (content-to-position and position-to-content scores over bucketed relative positions,
 * from shared relative embeddings), and a ContextPooler (dense → activation on [CLS]) before the
 * classifier.
 */
export interface DebertaConfig extends Common {
  modelType: 'deberta-v2';
  intermediateSize: number;
  activation: Activation;
  layerNormEps: number;
  maxPositions: number;
  /** Token embedding width (embedding_size); an embed_proj maps it to hidden_size where they differ. */
  embeddingSize: number;
  typeVocabSize: number;
  positionBiasedInput: boolean;
  padTokenId?: number;
  relativeAttention: boolean;
  /** max_relative_positions (−1 in configs: max_position_embeddings). */
  maxRelativePositions: number;
  /** position_buckets (0: none: relative positions as they are). */
  positionBuckets: number;
  /** Content-to-position and position-to-content scores (pos_att_type). */
  c2p: boolean;
  p2c: boolean;
  /** share_att_key: position keys and queries through key_proj and query_proj, not pos_key_proj / pos_query_proj. */
  shareAttKey: boolean;
  /** norm_rel_ebd "layer_norm": the relative embeddings through encoder.LayerNorm. */
  normRelEmbeddings: boolean;
  poolerActivation: Activation;
  numLabels: number;
  problemType: ProblemType;
}

/**
 * ModernBertForSequenceClassification: a pre-LN encoder (bias-free LayerNorms; block 0 reads the
 * normalised embeddings directly), RoPE with its own base for global and local blocks, local blocks
 * attending within ±local_attention/2 tokens, a GeGLU MLP (Wi → act(input) · gate → Wo), a final norm,
 * then pooling ([CLS] or the mean) → head (dense → act → norm) → classifier.
 */
export interface ModernBertConfig extends Common {
  modelType: 'modernbert';
  intermediateSize: number;
  activation: Activation;
  normEps: number;
  /** LayerNorms with a bias (norm_bias; false in the released models). */
  normBias: boolean;
  /** Biases on Wqkv and Wo (attention_bias) and on the MLP's Wi and Wo (mlp_bias). */
  attentionBias: boolean;
  mlpBias: boolean;
  maxPositions: number;
  padTokenId?: number;
  /** Per block: the half window of a local block (a token sees those within this distance), undefined for a global one. */
  slidingWindows: (number | undefined)[];
  globalRope: { theta: number; scaling: RopeScaling };
  localRope: { theta: number; scaling: RopeScaling };
  classifierPooling: 'cls' | 'mean';
  classifierBias: boolean;
  classifierActivation: Activation;
  /** initializer_range and initializer_cutoff_factor: fresh heads start as transformers' _init_weights starts them. */
  initializerRange: number;
  initCutoff: number;
  numLabels: number;
  problemType: ProblemType;
}

/**
 * BertForSequenceClassification, and RobertaForSequenceClassification (XLM-R's too): parameters under
 * `roberta.`, positions counted from pad_token_id + 1 (a padding token sits at pad_token_id), no
 * pooler; its head is dense → tanh → out_proj on the first token.
 */
export interface BertConfig extends Common {
  modelType: EncoderType;
  /** Where the encoder's parameters live: `bert.`, `roberta.` or `distilbert.`. */
  prefix: 'bert' | 'roberta' | 'distilbert';
  intermediateSize: number;
  activation: Activation;
  layerNormEps: number;
  maxPositions: number;
  typeVocabSize: number;
  padTokenId?: number;
  /** RoBERTa: position ids are padTokenId + 1, + 2, … over the non-padding tokens (create_position_ids_from_input_ids). */
  positionsAfterPadding: boolean;
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
export type ModelConfig = Gpt2Config | GptNeoxConfig | OptConfig | PhiConfig | BloomConfig | LlamaConfig | BertConfig | DebertaConfig | ModernBertConfig | VitConfig;

/** Sanity bounds far above any real checkpoint (Llama-3 405B: 126 layers, width 16384, vocab 128256). */
const MAX_DIM = 1 << 20;
const MAX_LAYERS = 1024;
const MAX_VOCAB = 1 << 24;

/** Reads fields from a parsed config.json, each error naming the file and the key. */
class Fields {
  constructor(
    readonly file: string,
    private readonly raw: Record<string, unknown>,
    /** Prepended to keys in errors (the path of a nested object, e.g. `rope_parameters.`). */
    private readonly prefix = '',
  ) {}
  fail(key: string, problem: string): never {
    throw new InputError(this.file, `${this.prefix}${key}`, problem);
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
  positive(key: string, fallback?: number): number {
    const v = this.num(key, fallback);
    if (v <= 0) this.fail(key, `must be above 0, got ${v}`);
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

function heads(f: Fields, hidden: number, key: string, hiddenKey: string, fallback?: number): number {
  const h = f.int(key, fallback);
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
    case 'gpt_neox':
      return gptNeoxConfig(f, architecture);
    case 'opt':
      return optConfig(f, architecture);
    case 'phi':
      return phiConfig(f, architecture);
    case 'bloom': {
      // BloomConfig: hidden_size (older configs: n_embed), n_layer, n_head.
      // attribute_map: num_attention_heads and num_hidden_layers are other names of n_head and n_layer.
      const hiddenSize = f.int(f.has('n_embed') ? 'n_embed' : 'hidden_size', 64);
      const numHeads = heads(f, hiddenSize, f.has('n_head') || !f.has('num_attention_heads') ? 'n_head' : 'num_attention_heads', f.has('n_embed') ? 'n_embed' : 'hidden_size', 8);
      if (f.int('pretraining_tp', 1) > 1 && f.bool('slow_but_exact', false)) f.fail('slow_but_exact', 'the slow-but-exact tensor-parallel matmuls are not supported (its results differ from one matmul by rounding only)');
      return {
        modelType: 'bloom',
        architecture: architecture || 'BloomForCausalLM',
        hiddenSize,
        numHeads,
        headDim: hiddenSize / numHeads,
        numLayers: f.int(f.has('n_layer') || !f.has('num_hidden_layers') ? 'n_layer' : 'num_hidden_layers', 2, 1, MAX_LAYERS),
        vocabSize: f.int('vocab_size', 250880, 1, MAX_VOCAB),
        layerNormEps: f.num('layer_norm_epsilon', 1e-5),
        residualPostLayernorm: f.bool('apply_residual_connection_post_layernorm', false),
        tieWordEmbeddings: f.bool('tie_word_embeddings', true),
      };
    }
    case 'llama':
    case 'mistral':
    case 'qwen2':
    case 'qwen3':
    case 'gemma':
    case 'gemma2':
    case 'gemma3_text':
    case 'phi3':
    case 'smollm3':
    case 'olmo2':
    case 'granite':
    case 'stablelm':
      return llamaFamily(f, modelType, architecture);
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
        prefix: 'bert',
        positionsAfterPadding: false,
        numLabels: labels,
        problemType: problemType(f, labels),
      };
    }
    case 'roberta':
    case 'xlm-roberta':
      return roberta(f, modelType, architecture);
    case 'distilbert':
      return distilbertConfig(f, architecture);
    case 'deberta-v2':
      return debertaConfig(f, architecture);
    case 'modernbert':
      return modernBertConfig(f, architecture);
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
    case 'gemma3':
      return f.fail('model_type', 'the image-and-text Gemma 3 (Gemma3ForConditionalGeneration) is not supported; its text-only checkpoints (gemma-3-270m, gemma-3-1b: model_type "gemma3_text") are');
    default:
      return f.fail('model_type', `unsupported model type ${JSON.stringify(modelType)} (supported: ${MODEL_TYPES.join(', ')})`);
  }
}

/** RobertaConfig / XLMRobertaConfig: BERT's keys, pad_token_id 1 (needed: positions count from it). */
function roberta(f: Fields, modelType: 'roberta' | 'xlm-roberta', architecture: string): BertConfig {
  const hiddenSize = f.int('hidden_size');
  const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size');
  const labels = numLabels(f);
  const vocabSize = f.int('vocab_size', undefined, 1, MAX_VOCAB);
  const maxPositions = f.int('max_position_embeddings', 512);
  if (f.get('pad_token_id') === null) f.fail('pad_token_id', 'RoBERTa counts positions from its padding token: a pad_token_id is needed');
  const pad = f.int('pad_token_id', 1, 0, vocabSize - 1);
  if (pad + 2 > maxPositions) f.fail('max_position_embeddings', `positions start at pad_token_id + 1 = ${pad + 1}: max_position_embeddings=${maxPositions} leaves no room for a token`);
  return {
    modelType,
    prefix: 'roberta',
    architecture: architecture || (modelType === 'roberta' ? 'RobertaForSequenceClassification' : 'XLMRobertaForSequenceClassification'),
    hiddenSize,
    numHeads,
    headDim: hiddenSize / numHeads,
    numLayers: f.int('num_hidden_layers', undefined, 1, MAX_LAYERS),
    vocabSize,
    intermediateSize: f.int('intermediate_size'),
    activation: f.activation('hidden_act', 'gelu'),
    layerNormEps: f.num('layer_norm_eps', 1e-12),
    maxPositions,
    typeVocabSize: f.int('type_vocab_size', 2),
    padTokenId: pad,
    positionsAfterPadding: true,
    numLabels: labels,
    problemType: problemType(f, labels),
  };
}

/** DebertaV2Config (DeBERTa-v2 and -v3): transformers' defaults; the convolution of v2-xlarge is refused. */
function debertaConfig(f: Fields, architecture: string): DebertaConfig {
  const hiddenSize = f.int('hidden_size', 1536);
  const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size', 24);
  if (f.has('attention_head_size') && f.int('attention_head_size') !== hiddenSize / numHeads) f.fail('attention_head_size', 'heads of another width than hidden_size / num_attention_heads are not supported');
  if (f.has('conv_kernel_size') && f.int('conv_kernel_size', 0, 0) > 0) f.fail('conv_kernel_size', "DeBERTa-v2's convolution layer (v2-xlarge, v2-xxlarge) is not supported; DeBERTa-v3 has none");
  const vocabSize = f.int('vocab_size', 128100, 1, MAX_VOCAB);
  const maxPositions = f.int('max_position_embeddings', 512);
  const raw = f.get('pos_att_type');
  const types = typeof raw === 'string' ? raw.toLowerCase().split('|').map((x) => x.trim()) : Array.isArray(raw) ? raw : raw === undefined || raw === null ? [] : f.fail('pos_att_type', 'expected "p2c|c2p" or a list');
  for (const t of types) if (t !== 'c2p' && t !== 'p2c') f.fail('pos_att_type', `unsupported attention type ${JSON.stringify(t)} (supported: c2p, p2c)`);
  const rel = f.bool('relative_attention', false);
  const maxRel = f.int('max_relative_positions', -1, -1);
  const labels = numLabels(f);
  const normRel = f.get('norm_rel_ebd');
  if (f.has('pooler_hidden_size') && f.int('pooler_hidden_size') !== hiddenSize) f.fail('pooler_hidden_size', 'must equal hidden_size (the classifier reads the pooler from a hidden-size vector)');
  return {
    modelType: 'deberta-v2',
    architecture: architecture || 'DebertaV2ForSequenceClassification',
    hiddenSize,
    numHeads,
    headDim: hiddenSize / numHeads,
    numLayers: f.int('num_hidden_layers', 24, 1, MAX_LAYERS),
    vocabSize,
    intermediateSize: f.int('intermediate_size', 6144),
    activation: f.activation('hidden_act', 'gelu'),
    layerNormEps: f.num('layer_norm_eps', 1e-7),
    maxPositions,
    embeddingSize: f.int('embedding_size', hiddenSize),
    typeVocabSize: f.int('type_vocab_size', 0, 0),
    positionBiasedInput: f.bool('position_biased_input', true),
    ...padToken(f, 'pad_token_id', 0, vocabSize),
    relativeAttention: rel,
    maxRelativePositions: maxRel < 1 ? maxPositions : maxRel,
    positionBuckets: Math.max(0, f.int('position_buckets', -1, -1)),
    c2p: types.includes('c2p'),
    p2c: types.includes('p2c'),
    shareAttKey: f.bool('share_att_key', false),
    normRelEmbeddings: typeof normRel === 'string' && normRel.toLowerCase().split('|').map((x) => x.trim()).includes('layer_norm'),
    poolerActivation: f.activation('pooler_hidden_act', 'gelu'),
    numLabels: labels,
    problemType: problemType(f, labels),
  };
}

/**
 * ModernBertConfig: transformers' defaults (ModernBERT-base's sizes). Blocks are global or local by
 * `layer_types`, else every `global_attn_every_n_layers`-th (from block 0) is global. RoPE bases come
 * from `rope_parameters.full_attention` / `.sliding_attention` (transformers 5) or `global_rope_theta`
 * (160000) and `local_rope_theta` (10000).
 */
function modernBertConfig(f: Fields, architecture: string): ModernBertConfig {
  const hiddenSize = f.int('hidden_size', 768);
  const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size', 12);
  const numLayers = f.int('num_hidden_layers', 22, 1, MAX_LAYERS);
  const vocabSize = f.int('vocab_size', 50368, 1, MAX_VOCAB);
  const maxPositions = f.int('max_position_embeddings', 8192);
  const every = f.int('global_attn_every_n_layers', 3);
  const types = f.has('layer_types') ? layerTypes(f, numLayers, 1) : Array.from({ length: numLayers }, (_, i) => (i % every ? 'sliding_attention' : 'full_attention'));
  const half = Math.floor(f.int('local_attention', 128) / 2);
  const perType = f.get('rope_parameters');
  const nested = perType !== null && typeof perType === 'object' && !Array.isArray(perType) ? (perType as Record<string, unknown>) : undefined;
  // convert_rope_params_to_dict: a rope_scaling updates both layer types' settings (its rope_type; a legacy `type` is overridden).
  const scaling = f.get('rope_scaling');
  const scaled = scaling !== null && typeof scaling === 'object' && !Array.isArray(scaling) && 'rope_type' in scaling ? (scaling as Record<string, unknown>) : undefined;
  const rope = (kind: 'full_attention' | 'sliding_attention', baseKey: string, fallback: number) => {
    const own = nested?.[kind];
    const params = own !== undefined && own !== null && typeof own === 'object' ? { ...(own as Record<string, unknown>), ...(scaled ?? {}) } : scaled;
    return params ? ropeObject(f, scaled ? 'rope_scaling' : `rope_parameters.${kind}`, params, () => f.num(baseKey, fallback), maxPositions) : { theta: f.num(baseKey, fallback), scaling: { type: 'default' as const } };
  };
  const pooling = f.get('classifier_pooling') ?? 'cls';
  if (pooling !== 'cls' && pooling !== 'mean') f.fail('classifier_pooling', `expected "cls" or "mean", got ${JSON.stringify(pooling)}`);
  const labels = numLabels(f);
  return {
    modelType: 'modernbert',
    architecture: architecture || 'ModernBertForSequenceClassification',
    hiddenSize,
    numHeads,
    headDim: hiddenSize / numHeads,
    numLayers,
    vocabSize,
    intermediateSize: f.int('intermediate_size', 1152),
    activation: f.activation('hidden_activation', 'gelu'),
    normEps: f.num('norm_eps', 1e-5),
    normBias: f.bool('norm_bias', false),
    attentionBias: f.bool('attention_bias', false),
    mlpBias: f.bool('mlp_bias', false),
    maxPositions,
    ...padToken(f, 'pad_token_id', 50283, vocabSize),
    slidingWindows: types.map((t) => (t === 'sliding_attention' ? half : undefined)),
    globalRope: rope('full_attention', 'global_rope_theta', 160000),
    localRope: rope('sliding_attention', 'local_rope_theta', 10000),
    classifierPooling: pooling as 'cls' | 'mean',
    classifierBias: f.bool('classifier_bias', false),
    classifierActivation: f.activation('classifier_activation', 'gelu'),
    initializerRange: f.num('initializer_range', 0.02),
    // _init_weights truncates at this many std (3 where null).
    initCutoff: f.get('initializer_cutoff_factor') === null ? 3 : f.has('initializer_cutoff_factor') ? f.positive('initializer_cutoff_factor') : 2,
    numLabels: labels,
    problemType: problemType(f, labels),
  };
}

/** DistilBertConfig: its own keys (dim, n_layers, n_heads, hidden_dim, activation), no token types, LayerNorm ε 1e-12. */
function distilbertConfig(f: Fields, architecture: string): BertConfig {
  const hiddenSize = f.int('dim', 768);
  const numHeads = heads(f, hiddenSize, 'n_heads', 'dim', 12);
  const labels = numLabels(f);
  const vocabSize = f.int('vocab_size', 30522, 1, MAX_VOCAB);
  return {
    modelType: 'distilbert',
    prefix: 'distilbert',
    architecture: architecture || 'DistilBertForSequenceClassification',
    hiddenSize,
    numHeads,
    headDim: hiddenSize / numHeads,
    numLayers: f.int('n_layers', 6, 1, MAX_LAYERS),
    vocabSize,
    intermediateSize: f.int('hidden_dim', 4 * hiddenSize),
    activation: f.activation('activation', 'gelu'),
    layerNormEps: 1e-12,
    maxPositions: f.int('max_position_embeddings', 512),
    typeVocabSize: 0,
    ...padToken(f, 'pad_token_id', 0, vocabSize),
    positionsAfterPadding: false,
    numLabels: labels,
    problemType: problemType(f, labels),
  };
}

/**
 * GPTNeoXConfig: transformers' defaults (those of gpt-neox-20b). RoPE's base and rotated share come
 * from `rope_parameters` (transformers 5: rope_theta, partial_rotary_factor) or the older
 * `rotary_emb_base` and `rotary_pct` (0.25), with an optional `rope_scaling`.
 */
function gptNeoxConfig(f: Fields, architecture: string): GptNeoxConfig {
  const hiddenSize = f.int('hidden_size', 6144);
  const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size', 64);
  const headDim = hiddenSize / numHeads;
  const maxPositions = f.int('max_position_embeddings', 2048);
  const rope = partialRope(f, 'GPT-NeoX', headDim, maxPositions, 'rotary_emb_base', 'rotary_pct', 0.25);
  return {
    modelType: 'gpt_neox',
    architecture: architecture || 'GPTNeoXForCausalLM',
    hiddenSize,
    numHeads,
    headDim,
    numLayers: f.int('num_hidden_layers', 44, 1, MAX_LAYERS),
    vocabSize: f.int('vocab_size', 50432, 1, MAX_VOCAB),
    intermediateSize: f.int('intermediate_size', 24576),
    activation: f.activation('hidden_act', 'gelu'),
    layerNormEps: f.num('layer_norm_eps', 1e-5),
    maxPositions,
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    rotaryDim: rope.rotaryDim,
    parallelResidual: f.bool('use_parallel_residual', true),
    attentionBias: f.bool('attention_bias', true),
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
  };
}

/**
 * RoPE over the leading part of each head (GPT-NeoX, Phi): base and scaling from `rope_parameters`
 * (transformers 5) or `rope_scaling` beside a top-level base (`baseKey`); the rotated share from
 * rope_parameters.partial_rotary_factor or the top-level `factorKey`. transformers rotates
 * int(head_dim · share) dimensions, which must be even.
 */
function partialRope(f: Fields, model: string, headDim: number, maxPositions: number, baseKey: string, factorKey: string, fallback: number): { theta: number; scaling: RopeScaling; rotaryDim: number } {
  const key = ropeKey(f);
  const rope = ropeObject(f, key, f.get(key), () => f.num(baseKey, 10000), maxPositions);
  if (rope.scaling.type === 'longrope') f.fail(`${key}.rope_type`, `LongRoPE is not supported for ${model} (supported: default, linear, dynamic, llama3)`);
  const params = f.get('rope_parameters');
  const nested = params !== null && typeof params === 'object' && typeof (params as Record<string, unknown>).partial_rotary_factor === 'number';
  const at = nested ? 'rope_parameters.partial_rotary_factor' : factorKey;
  const factor = nested ? new Fields(f.file, params as Record<string, unknown>, 'rope_parameters.').num('partial_rotary_factor') : f.num(factorKey, fallback);
  const rotaryDim = Math.trunc(headDim * factor);
  if (factor <= 0 || factor > 1 || rotaryDim % 2 !== 0) f.fail(at, `must be in (0, 1] and give an even number of rotated dimensions (head_dim ${headDim} × ${factor} = ${headDim * factor})`);
  return { ...rope, rotaryDim };
}

/**
 * PhiConfig: transformers' defaults (those of phi-1.5's size), gelu_new, half of each head rotated
 * (partial_rotary_factor), grouped-query heads when num_key_value_heads says so.
 */
function phiConfig(f: Fields, architecture: string): PhiConfig {
  const hiddenSize = f.int('hidden_size', 2048);
  const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size', 32);
  const numKvHeads = f.has('num_key_value_heads') ? f.int('num_key_value_heads') : numHeads;
  if (numHeads % numKvHeads !== 0) f.fail('num_key_value_heads', `num_attention_heads=${numHeads} is not divisible by num_key_value_heads=${numKvHeads}`);
  const headDim = hiddenSize / numHeads;
  if (f.has('head_dim') && f.int('head_dim') !== headDim) f.fail('head_dim', `heads of another width than hidden_size / num_attention_heads (${headDim}) are not supported`);
  const vocabSize = f.int('vocab_size', 51200, 1, MAX_VOCAB);
  const maxPositions = f.int('max_position_embeddings', 2048);
  const rope = partialRope(f, 'Phi', headDim, maxPositions, 'rope_theta', 'partial_rotary_factor', 0.5);
  return {
    modelType: 'phi',
    architecture: architecture || 'PhiForCausalLM',
    hiddenSize,
    numHeads,
    numKvHeads,
    headDim,
    numLayers: f.int('num_hidden_layers', 24, 1, MAX_LAYERS),
    vocabSize,
    intermediateSize: f.int('intermediate_size', 8192),
    activation: f.activation('hidden_act', 'gelu_new'),
    layerNormEps: f.num('layer_norm_eps', 1e-5),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    rotaryDim: rope.rotaryDim,
    qkLayernorm: f.bool('qk_layernorm', false),
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    ...padToken(f, 'pad_token_id', undefined, vocabSize),
  };
}

/** OPTConfig: transformers' defaults (those of opt-125m), padding id 1; LayerNorms without weights are refused. */
function optConfig(f: Fields, architecture: string): OptConfig {
  const hiddenSize = f.int('hidden_size', 768);
  const numHeads = heads(f, hiddenSize, 'num_attention_heads', 'hidden_size', 12);
  if (!f.bool('layer_norm_elementwise_affine', true)) f.fail('layer_norm_elementwise_affine', 'LayerNorms without weight and bias are not supported');
  const vocabSize = f.int('vocab_size', 50272, 1, MAX_VOCAB);
  const layerNormBefore = f.bool('do_layer_norm_before', true);
  return {
    modelType: 'opt',
    architecture: architecture || 'OPTForCausalLM',
    hiddenSize,
    numHeads,
    headDim: hiddenSize / numHeads,
    numLayers: f.int('num_hidden_layers', 12, 1, MAX_LAYERS),
    vocabSize,
    intermediateSize: f.int('ffn_dim', 3072),
    activation: f.activation('activation_function', 'relu'),
    layerNormEps: 1e-5, // nn.LayerNorm's default: OPTConfig has no key for it
    maxPositions: f.int('max_position_embeddings', 2048),
    layerNormBefore,
    finalLayerNorm: layerNormBefore && !f.bool('_remove_final_layer_norm', false),
    wordEmbedProjDim: f.has('word_embed_proj_dim') ? f.int('word_embed_proj_dim') : hiddenSize,
    enableBias: f.bool('enable_bias', true),
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
    ...padToken(f, 'pad_token_id', 1, vocabSize),
  };
}

/** nn.Embedding's padding_idx (none where the key is null); with the vocabulary size, a negative one counts from its end, as PyTorch's does (old Llama configs say -1). */
function padToken(f: Fields, key: string, fallback?: number, vocab?: number): { padTokenId?: number } {
  // null: no padding row at all (nn.Embedding's padding_idx=None), whatever the class's default.
  if (f.get(key) === null || (!f.has(key) && fallback === undefined)) return {};
  const id = f.int(key, fallback, vocab === undefined ? 0 : -vocab);
  return { padTokenId: id < 0 ? vocab! + id : id };
}

const ARCHITECTURE_NAMES: Record<LlamaFamilyType, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  gemma: 'GemmaForCausalLM',
  gemma2: 'Gemma2ForCausalLM',
  gemma3_text: 'Gemma3ForCausalLM',
  phi3: 'Phi3ForCausalLM',
  smollm3: 'SmolLM3ForCausalLM',
  olmo2: 'Olmo2ForCausalLM',
  granite: 'GraniteForCausalLM',
  stablelm: 'StableLmForCausalLM',
};

/**
 * What each config class assumes for a key the file leaves out, where it is not Llama's (head_dim:
 * hidden/heads; num_key_value_heads: the heads; max_position_embeddings: 2048).
 */
const FAMILY_DEFAULTS: Record<LlamaFamilyType, { headDim?: number; kvHeads?: number; maxPositions: number }> = {
  llama: { maxPositions: 2048 },
  mistral: { kvHeads: 8, maxPositions: 4096 * 32 },
  qwen2: { kvHeads: 32, maxPositions: 32768 },
  qwen3: { headDim: 128, kvHeads: 32, maxPositions: 32768 },
  gemma: { headDim: 256, kvHeads: 16, maxPositions: 8192 },
  gemma2: { headDim: 256, kvHeads: 4, maxPositions: 8192 },
  gemma3_text: { headDim: 256, kvHeads: 4, maxPositions: 131072 },
  phi3: { maxPositions: 4096 },
  smollm3: { kvHeads: 4, maxPositions: 32768 },
  olmo2: { maxPositions: 2048 },
  granite: { maxPositions: 2048 },
  stablelm: { kvHeads: 32, maxPositions: 4096 },
};

/** The Llama-layout decoders, with each model type's defaults as its transformers config class has them. */
function llamaFamily(f: Fields, modelType: LlamaFamilyType, architecture: string): LlamaConfig {
  const defaults = FAMILY_DEFAULTS[modelType];
  const hiddenSize = f.int('hidden_size');
  const numHeads = f.int('num_attention_heads');
  const headDim = f.has('head_dim') ? f.int('head_dim') : (defaults.headDim ?? hiddenSize / numHeads);
  if (!Number.isInteger(headDim)) f.fail('num_attention_heads', `hidden_size=${hiddenSize} is not divisible by num_attention_heads=${numHeads} and no head_dim is given`);
  // null: the config classes' __post_init__ uses the attention heads (only an absent key takes the class default).
  const numKvHeads = f.get('num_key_value_heads') === null ? numHeads : f.int('num_key_value_heads', defaults.kvHeads ?? numHeads);
  if (numHeads % numKvHeads !== 0) f.fail('num_key_value_heads', `num_attention_heads=${numHeads} is not divisible by num_key_value_heads=${numKvHeads}`);
  if (headDim % 2 !== 0) f.fail('head_dim', `rotary embeddings need an even head dimension, got ${headDim}`);
  const numLayers = f.int('num_hidden_layers', undefined, 1, MAX_LAYERS);
  const base = llamaFamilyBase(f, modelType, architecture, { hiddenSize, numHeads, headDim, numKvHeads, numLayers });
  switch (modelType) {
    case 'gemma':
      return checkRopeFactors(f, { ...base, ...gemmaOptions(f, base) });
    case 'gemma2':
      return checkRopeFactors(f, { ...base, ...gemmaOptions(f, base), ...gemma2Options(f, numLayers) });
    case 'gemma3_text':
      return checkRopeFactors(f, { ...base, ...gemmaOptions(f, base), ...gemma3Options(f, numLayers, base.maxPositions) });
    case 'phi3':
      return checkRopeFactors(f, { ...base, ...phi3Options(f, base) });
    case 'smollm3':
      return checkRopeFactors(f, { ...base, ...smollm3Options(f, base) });
    case 'stablelm':
      return checkRopeFactors(f, { ...base, ...stablelmOptions(f, base) });
    case 'granite':
      // GraniteConfig: Llama scaled by four multipliers (embeddings, attention scores, sub-layer outputs, 1/logits).
      return checkRopeFactors(f, {
        ...base,
        embedScale: f.positive('embedding_multiplier', 1),
        attentionScale: f.positive('attention_multiplier', 1),
        residualScale: f.positive('residual_multiplier', 1),
        logitDivisor: f.positive('logits_scaling', 1),
      });
    case 'olmo2':
      // Olmo2Config: norms after each sub-layer only, RMSNorms over the whole q and k projections, ε 1e-5, padding id 1.
      return checkRopeFactors(f, { ...base, sandwichNorms: true, preNorms: false, qkNorm: true, qkNormOverProjection: true, rmsNormEps: f.num('rms_norm_eps', 1e-5), ...padToken(f, 'pad_token_id', 1, base.vocabSize) });
    default:
      return checkRopeFactors(f, base);
  }
}

function llamaFamilyBase(
  f: Fields,
  modelType: LlamaFamilyType,
  architecture: string,
  dims: { hiddenSize: number; numHeads: number; headDim: number; numKvHeads: number; numLayers: number },
): LlamaConfig {
  const { hiddenSize, numHeads, headDim, numKvHeads, numLayers } = dims;
  const vocabSize = f.int('vocab_size', undefined, 1, MAX_VOCAB);
  // Qwen2 always biases q/k/v and never o; Llama, Qwen3 and the Gemmas bias all four under attention_bias; Mistral and Phi-3 none.
  const attentionBias = ['llama', 'qwen3', 'gemma', 'gemma2', 'gemma3_text', 'smollm3', 'olmo2', 'granite'].includes(modelType) ? f.bool('attention_bias', false) : false;
  const maxPositions = f.int('max_position_embeddings', FAMILY_DEFAULTS[modelType].maxPositions, 1, Number.MAX_SAFE_INTEGER);
  const rope = ropeParameters(f, modelType === 'gemma3_text' ? 1e6 : modelType === 'smollm3' ? 2e6 : 10000, maxPositions, modelType);
  return {
    modelType,
    architecture: architecture || ARCHITECTURE_NAMES[modelType],
    hiddenSize,
    numHeads,
    headDim,
    numKvHeads,
    numLayers,
    vocabSize,
    intermediateSize: f.int('intermediate_size'),
    activation: f.activation('hidden_act', 'silu'),
    rmsNormEps: f.num('rms_norm_eps', 1e-6),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    rotaryDim: headDim,
    // RoPE has no table to outgrow: only a cap on lengths, however large.
    maxPositions,
    qkvBias: modelType === 'qwen2' || attentionBias,
    outputBias: attentionBias,
    mlpBias: modelType === 'llama' || modelType === 'smollm3' || modelType === 'granite' ? f.bool('mlp_bias', false) : false,
    qkNorm: modelType === 'qwen3',
    slidingWindows: slidingWindows(f, modelType, numLayers),
    normOffset: 0,
    sandwichNorms: false,
    embedScale: 1,
    attentionScale: 1 / Math.sqrt(headDim),
    fusedProjections: false,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    ...padToken(f, 'pad_token_id', undefined, vocabSize),
  };
}

/**
 * What every Gemma changes on the Llama layout: RMSNorms scale by (1 + w), embeddings by √hidden_size
 * (in float32), a tanh-GELU gate, a tied head and padding id 0. GemmaConfig names the activation
 * `hidden_act` (Gemma 2 and 3: `hidden_activation`) and, as transformers 5 does, reads its "gelu"
 * (gemma-2b's and gemma-7b's config) as the tanh approximation the models were trained with.
 */
function gemmaOptions(f: Fields, base: LlamaConfig): Partial<LlamaConfig> {
  if (f.bool('use_bidirectional_attention', false)) f.fail('use_bidirectional_attention', 'bidirectional attention is not supported: PEFT Lab trains causal language models');
  const gemma1 = base.modelType === 'gemma';
  const act = gemma1 ? f.activation('hidden_act', 'gelu_pytorch_tanh') : f.activation('hidden_activation', 'gelu_pytorch_tanh');
  return {
    activation: gemma1 && act === 'gelu' ? 'gelu_pytorch_tanh' : act,
    normOffset: 1,
    embedScale: Math.fround(Math.sqrt(base.hiddenSize)),
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
    ...padToken(f, 'pad_token_id', 0, base.vocabSize),
  };
}

/** A soft cap (Gemma 2's attn_logit_softcapping, final_logit_softcapping), or undefined where null. */
function softcapOf(f: Fields, key: string, fallback: number | undefined): number | undefined {
  if (f.get(key) === null || (fallback === undefined && !f.has(key))) return undefined;
  const cap = f.num(key, fallback);
  if (cap <= 0) f.fail(key, `must be above 0 (or null for none), got ${cap}`);
  return cap;
}

/**
 * Gemma 2 (Gemma2Config): norms around each sub-layer, every other block sliding (from the first, by
 * default) over `sliding_window` tokens, scores scaled by query_pre_attn_scalar^−½ and soft-capped at
 * 50, logits soft-capped at 30.
 */
function gemma2Options(f: Fields, numLayers: number): Partial<LlamaConfig> & Pick<LlamaConfig, 'slidingWindows'> {
  const window = f.get('sliding_window') === null ? undefined : f.int('sliding_window', 4096);
  return {
    sandwichNorms: true,
    slidingWindows: layerTypes(f, numLayers, 2).map((t) => (t === 'sliding_attention' ? window : undefined)),
    attentionScale: f.num('query_pre_attn_scalar', 256) ** -0.5,
    attnSoftcap: softcapOf(f, 'attn_logit_softcapping', 50),
    logitSoftcap: softcapOf(f, 'final_logit_softcapping', 30),
  };
}

/**
 * What Gemma3TextConfig and Gemma3ForCausalLM change on Gemma's options. Blocks are "sliding" or
 * "full" by `layer_types` (else every `sliding_window_pattern`-th block is full); the sliding ones
 * attend over `sliding_window` tokens with a RoPE of base `rope_local_base_freq` (transformers 5:
 * `rope_parameters.sliding_attention`). final_logit_softcapping caps the logits as Gemma 2's, when set.
 */
function gemma3Options(f: Fields, numLayers: number, maxPositions: number): Partial<LlamaConfig> & Pick<LlamaConfig, 'slidingWindows'> {
  const types = layerTypes(f, numLayers, f.int(f.has('sliding_window_pattern') ? 'sliding_window_pattern' : '_sliding_window_pattern', 6));
  const window = f.get('sliding_window') === null ? undefined : f.int('sliding_window', 4096);
  const perType = f.get('rope_parameters');
  const nested = perType !== null && typeof perType === 'object' && !Array.isArray(perType) && ('full_attention' in perType || 'sliding_attention' in perType);
  const localTheta = () => f.num('rope_local_base_freq', 10000);
  const full = nested ? ropeObject(f, 'rope_parameters.full_attention', (perType as Record<string, unknown>).full_attention, () => f.num('rope_theta', 1e6), maxPositions) : undefined;
  const local = nested ? ropeObject(f, 'rope_parameters.sliding_attention', (perType as Record<string, unknown>).sliding_attention, localTheta, maxPositions) : { theta: localTheta(), scaling: { type: 'default' as const } };
  return {
    ...(full ? { ropeTheta: full.theta, ropeScaling: full.scaling } : {}),
    qkNorm: true,
    slidingWindows: types.map((t) => (t === 'sliding_attention' ? window : undefined)),
    sandwichNorms: true,
    attentionScale: f.num('query_pre_attn_scalar', 256) ** -0.5,
    // Gemma3Attention keeps attn_logit_softcapping but never passes it to the attention: only the logit cap applies.
    logitSoftcap: softcapOf(f, 'final_logit_softcapping', undefined),
    localRope: { theta: local.theta, scaling: local.scaling, layers: types.map((t) => t === 'sliding_attention') },
  };
}

/**
 * Phi-3 (Phi3Config; Phi-3.5, Phi-4-mini): fused projections, RoPE over the first
 * partial_rotary_factor · head_dim dimensions, a sliding window over every block when set, padding id
 * 32000, RMSNorm ε 1e-5.
 */
function phi3Options(f: Fields, base: LlamaConfig): Partial<LlamaConfig> {
  const rope = f.get('rope_parameters');
  const nestedFactor = rope !== null && typeof rope === 'object' && typeof (rope as Record<string, unknown>).partial_rotary_factor === 'number';
  const factor = nestedFactor ? new Fields(f.file, rope as Record<string, unknown>, 'rope_parameters.').num('partial_rotary_factor') : f.num('partial_rotary_factor', 1);
  const rotaryDim = Math.trunc(base.headDim * factor);
  if (factor <= 0 || factor > 1 || rotaryDim % 2 !== 0)
    f.fail(nestedFactor ? 'rope_parameters.partial_rotary_factor' : 'partial_rotary_factor', `must be in (0, 1] and give an even number of rotated dimensions (head_dim ${base.headDim} × ${factor} = ${base.headDim * factor})`);
  const window = f.get('sliding_window') === null || !f.has('sliding_window') ? undefined : f.int('sliding_window');
  return {
    rotaryDim,
    fusedProjections: true,
    rmsNormEps: f.num('rms_norm_eps', 1e-5),
    slidingWindows: base.slidingWindows.map(() => window),
    ...padToken(f, 'pad_token_id', base.vocabSize > 32000 ? 32000 : undefined, base.vocabSize),
  };
}

/**
 * StableLM (StableLmConfig; stablelm-2, stablelm-3b-4e1t): LayerNorms with biases (layer_norm_eps),
 * RoPE over the leading partial_rotary_factor (0.25) of each head, q/k/v biases under use_qkv_bias,
 * per-head q/k LayerNorms under qk_layernorm, the parallel residual under use_parallel_residual.
 */
function stablelmOptions(f: Fields, base: LlamaConfig): Partial<LlamaConfig> {
  const rope = f.get('rope_parameters');
  const nested = rope !== null && typeof rope === 'object' && typeof (rope as Record<string, unknown>).partial_rotary_factor === 'number';
  const factor = nested ? new Fields(f.file, rope as Record<string, unknown>, 'rope_parameters.').num('partial_rotary_factor') : f.num('partial_rotary_factor', 0.25);
  const rotaryDim = Math.trunc(base.headDim * factor);
  if (factor <= 0 || factor > 1 || rotaryDim % 2 !== 0)
    f.fail(nested ? 'rope_parameters.partial_rotary_factor' : 'partial_rotary_factor', `must be in (0, 1] and give an even number of rotated dimensions (head_dim ${base.headDim} × ${factor} = ${base.headDim * factor})`);
  const qkNorm = f.bool('qk_layernorm', false);
  return {
    layerNorms: true,
    rmsNormEps: f.num('layer_norm_eps', 1e-5),
    rotaryDim,
    qkvBias: f.bool('use_qkv_bias', false),
    outputBias: false,
    qkNorm,
    ...(qkNorm ? { qkNormPerHeadWeights: true } : {}),
    parallelResidual: f.bool('use_parallel_residual', false),
  };
}

/**
 * SmolLM3 (SmolLM3Config): Llama with no position encoding in some blocks (no_rope_layers: 1 for
 * RoPE, 0 for none; by default every no_rope_layer_interval-th block has none), a sliding window in
 * the blocks layer_types calls sliding (by default, under use_sliding_window, the NoPE ones), a tied
 * head, padding id 128004.
 */
function smollm3Options(f: Fields, base: LlamaConfig): Partial<LlamaConfig> {
  const n = base.numLayers;
  const listed = f.get('no_rope_layers');
  let rope: boolean[];
  if (listed === undefined || listed === null) {
    const every = f.int('no_rope_layer_interval', 4);
    rope = Array.from({ length: n }, (_, i) => (i + 1) % every !== 0);
  } else {
    if (!Array.isArray(listed) || listed.length < n) f.fail('no_rope_layers', `expected a list of ${n} flags (one per num_hidden_layers)`);
    rope = listed.slice(0, n).map((v: unknown, i) => (v === 1 || v === true ? true : v === 0 || v === false ? false : f.fail(`no_rope_layers[${i}]`, `expected 0 or 1, got ${JSON.stringify(v)}`)));
  }
  // The masks follow layer_types: given, its sliding blocks are windowed whenever sliding_window is set
  // (use_sliding_window only steers flash attention); derived, only under use_sliding_window, on the NoPE blocks.
  const window = f.has('sliding_window') ? f.int('sliding_window') : undefined;
  const derivedWindow = f.bool('use_sliding_window', false) ? window : undefined;
  const types = f.has('layer_types') ? layerTypes(f, n, 1) : rope.map((r) => (derivedWindow !== undefined && !r ? 'sliding_attention' : 'full_attention'));
  return {
    noRopeLayers: rope.map((r) => !r),
    slidingWindows: types.map((t) => (window !== undefined && t === 'sliding_attention' ? window : undefined)),
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
    ...padToken(f, 'pad_token_id', 128004, base.vocabSize),
  };
}

/** `layer_types` as given (full_attention / sliding_attention, one per block), or every `pattern`-th block full. */
function layerTypes(f: Fields, numLayers: number, pattern: number): ('full_attention' | 'sliding_attention')[] {
  const types = f.get('layer_types');
  if (types === undefined || types === null) return Array.from({ length: numLayers }, (_, i) => ((i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention'));
  if (!Array.isArray(types) || types.length !== numLayers) f.fail('layer_types', `expected a list of ${numLayers} layer types (one per num_hidden_layers)`);
  return types.map((t: unknown, i) => (t === 'sliding_attention' || t === 'full_attention' ? t : f.fail(`layer_types[${i}]`, `unsupported layer type ${JSON.stringify(t)} (supported: full_attention, sliding_attention)`)));
}

/**
 * Per block, the sliding attention window or undefined, as transformers sets it: Mistral windows every
 * block when `sliding_window` is set (4096 when absent); Qwen2 and Qwen3 only with `use_sliding_window`,
 * in the blocks `layer_types` names "sliding_attention" (without it: from `max_window_layers` on).
 */
function slidingWindows(f: Fields, modelType: LlamaFamilyType, numLayers: number): (number | undefined)[] {
  const none = new Array<number | undefined>(numLayers).fill(undefined);
  // Llama and Gemma have none; Gemma 2 and 3 and Phi-3 set theirs in their own options.
  if (modelType !== 'mistral' && modelType !== 'qwen2' && modelType !== 'qwen3') return none;
  if (modelType === 'mistral') {
    const w = f.get('sliding_window') === null ? undefined : f.int('sliding_window', 4096);
    return none.map(() => w);
  }
  if (!f.bool('use_sliding_window', false) || f.get('sliding_window') === null) return none;
  const w = f.int('sliding_window', 4096);
  if (f.get('layer_types') === undefined || f.get('layer_types') === null) {
    const from = f.int('max_window_layers', 28, 0, MAX_LAYERS);
    return none.map((_, i) => (i >= from ? w : undefined));
  }
  return layerTypes(f, numLayers, 1).map((t) => (t === 'sliding_attention' ? w : undefined));
}

/** Where a config keeps its RoPE settings: transformers reads `rope_scaling or rope_parameters` (a non-null rope_scaling wins). */
const ropeKey = (f: Fields) => (f.has('rope_scaling') ? 'rope_scaling' : 'rope_parameters');

/**
 * RoPE's base and scaling. transformers 5 nests them under `rope_parameters`; older configs have
 * `rope_theta` beside a `rope_scaling` object (or null).
 */
function ropeParameters(f: Fields, defaultTheta: number, maxPositions: number, modelType: LlamaFamilyType): { theta: number; scaling: RopeScaling } {
  const key = ropeKey(f);
  return ropeObject(f, key, f.get(key), () => f.num('rope_theta', defaultTheta), maxPositions, modelType === 'phi3');
}

/**
 * One RoPE settings object at `key` (null or absent: unscaled); a base it does not give comes from
 * `theta`. `maxPositions` (max_position_embeddings) sets LongRoPE's default attention factor.
 */
function ropeObject(f: Fields, key: string, params: unknown, theta: () => number, maxPositions?: number, phi3 = false): { theta: number; scaling: RopeScaling } {
  if (params === undefined || params === null) return { theta: theta(), scaling: { type: 'default' } };
  if (typeof params !== 'object' || Array.isArray(params)) return f.fail(key, 'expected an object');
  const p = params as Record<string, unknown>;
  const base = typeof p.rope_theta === 'number' ? p.rope_theta : theta();
  const type = p.rope_type ?? p.type ?? 'default';
  const sub = new Fields(f.file, p, `${key}.`);
  switch (type) {
    case 'default':
      return { theta: base, scaling: { type: 'default' } };
    case 'linear':
      return { theta: base, scaling: { type: 'linear', factor: sub.positive('factor') } };
    case 'dynamic':
      if (maxPositions === undefined) return sub.fail('rope_type', 'dynamic RoPE needs max_position_embeddings');
      return { theta: base, scaling: { type: 'dynamic', factor: sub.positive('factor'), originalMaxPositions: maxPositions } };
    case 'llama3': {
      const lowFreqFactor = sub.positive('low_freq_factor');
      const highFreqFactor = sub.positive('high_freq_factor');
      if (highFreqFactor <= lowFreqFactor) sub.fail('high_freq_factor', `must be above low_freq_factor=${lowFreqFactor}, got ${highFreqFactor}`);
      return { theta: base, scaling: { type: 'llama3', factor: sub.positive('factor'), lowFreqFactor, highFreqFactor, originalMaxPositions: sub.int('original_max_position_embeddings', maxPositions) } };
    }
    case 'longrope':
    case 'su': // Phi-3's first name for it
      return { theta: base, scaling: longRope(f, sub, maxPositions, phi3) };
    case 'yarn':
      // Phi3Config reads "yarn" as LongRoPE; elsewhere it is YaRN, which is not computed here.
      if (phi3) return { theta: base, scaling: longRope(f, sub, maxPositions, phi3) };
      return sub.fail('rope_type', 'unsupported RoPE type "yarn" (supported: default, linear, dynamic, llama3, longrope)');
    default:
      return sub.fail('rope_type', `unsupported RoPE type ${JSON.stringify(type)} (supported: default, linear, dynamic, llama3, longrope)`);
  }
}

/**
 * LongRoPE as transformers' `_compute_longrope_parameters`: original_max_position_embeddings from the
 * config's top level first (Phi-3 keeps it there, 4096 by default), else the RoPE object, else
 * max_position_embeddings; without an `attention_factor`, cos and sin scale by √(1 + ln s / ln
 * original) where s = `factor`, else max_position_embeddings / original.
 */
function longRope(f: Fields, sub: Fields, maxPositions: number | undefined, phi3: boolean): RopeScaling {
  const factors = (key: string) => {
    const v = sub.get(key);
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) sub.fail(key, 'expected a list of positive numbers (one per rotated frequency)');
    return v as number[];
  };
  const shortFactor = factors('short_factor');
  const longFactor = factors('long_factor');
  if (longFactor.length !== shortFactor.length) sub.fail('long_factor', `has ${longFactor.length} entries, short_factor ${shortFactor.length}`);
  const big = Number.MAX_SAFE_INTEGER;
  const originalMaxPositions = f.has('original_max_position_embeddings')
    ? f.int('original_max_position_embeddings', undefined, 2, big)
    : sub.has('original_max_position_embeddings')
      ? sub.int('original_max_position_embeddings', undefined, 2, big)
      : phi3
        ? 4096
        : f.int('max_position_embeddings', maxPositions, 2, big);
  const scale = sub.has('factor') ? sub.positive('factor') : (maxPositions ?? originalMaxPositions) / originalMaxPositions;
  const attentionFactor = sub.has('attention_factor') ? sub.positive('attention_factor') : scale <= 1 ? 1 : Math.sqrt(1 + Math.log(scale) / Math.log(originalMaxPositions));
  return { type: 'longrope', shortFactor, longFactor, originalMaxPositions, attentionFactor };
}

/** LongRoPE gives one factor per rotated frequency: rotary_dim / 2 of them. */
function checkRopeFactors(f: Fields, cfg: LlamaConfig): LlamaConfig {
  const s = cfg.ropeScaling;
  if (s.type === 'longrope' && s.shortFactor.length !== cfg.rotaryDim / 2) {
    const key = ropeKey(f);
    f.fail(`${key}.short_factor`, `has ${s.shortFactor.length} entries; the ${cfg.rotaryDim} rotated dimensions of each head need ${cfg.rotaryDim / 2}`);
  }
  return cfg;
}

/**
 * The longest sequence a model runs on as configured: its max_position_embeddings (GPT-2's
 * n_positions), or none where dynamic NTK RoPE stretches past it (transformers raises the base
 * instead); undefined for models without positions (ViT).
 */
export function positionLimit(c: ModelConfig): number | undefined {
  const dynamic = (s: RopeScaling) => s.type === 'dynamic';
  if ('ropeScaling' in c && dynamic(c.ropeScaling)) return undefined;
  if (c.modelType === 'modernbert' && (dynamic(c.globalRope.scaling) || dynamic(c.localRope.scaling))) return undefined;
  return 'maxPositions' in c ? c.maxPositions : undefined;
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
