/**
 * Which modules an adapter acts on: the hookable linear modules and tap points of a model, and
 * Hugging Face PEFT's rules for matching `target_modules`, `exclude_modules`, `modules_to_save`,
 * `rank_pattern` / `alpha_pattern` and `feedforward_modules` against module paths.
 */
import type { AdapterKind } from '../../../src/protocol';
import type { LinearModuleInfo } from '../models/architecture';
import { isEncoder, type ModelType } from '../models/config';
import { AdapterOptionError } from '../errors';
import type { Model } from '../models/model';

/**
 * Every linear module that goes through `Forward.linear` (so a hook can wrap it): the transformer
 * blocks' modules, plus BERT's pooler and the classification heads (layer −1). Tied LM heads are a
 * plain matmul and cannot be wrapped.
 */
export function hookableLinears(model: Model): LinearModuleInfo[] {
  const out = [...model.arch.linearModules(model.config)];
  const cfg = model.config;
  const d = cfg.hiddenSize;
  const extra = (module: string, name: string, inFeatures: number, outFeatures: number) =>
    out.push({ module, name, layer: -1, inFeatures, outFeatures, fanInFanOut: false, feedForward: false });
  if (cfg.modelType === 'bert') {
    extra('bert.pooler.dense', 'dense', d, d);
    extra('classifier', 'classifier', d, cfg.numLabels);
  } else if (cfg.modelType === 'deberta-v2') {
    // ContextPooler, then the classifier.
    extra('pooler.dense', 'dense', d, d);
    extra('classifier', 'classifier', d, cfg.numLabels);
  } else if (cfg.modelType === 'modernbert') {
    // ModernBertPredictionHead's dense, then the classifier.
    extra('head.dense', 'dense', d, d);
    extra('classifier', 'classifier', d, cfg.numLabels);
  } else if (cfg.modelType === 'distilbert') {
    extra('pre_classifier', 'pre_classifier', d, d);
    extra('classifier', 'classifier', d, cfg.numLabels);
  } else if (isEncoder(cfg)) {
    // RobertaClassificationHead: dense, tanh, out_proj.
    extra('classifier.dense', 'dense', d, d);
    extra('classifier.out_proj', 'out_proj', d, cfg.numLabels);
  } else if (cfg.modelType === 'vit') {
    extra('classifier', 'classifier', d, cfg.numLabels);
  }
  return out;
}

/**
 * PEFT 0.21 `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`. Where PEFT has no entry (it then
 * asks for target_modules), our own choice: ViT's and DistilBERT's query and value (as BERT's);
 * Phi-3's qkv_proj and ModernBERT's Wqkv, which hold them; SmolLM3's, OLMo-2's and Granite's q_proj and
 * v_proj (as Llama's). Exported adapters always list their target_modules, so PEFT loads them all.
 */
export const LORA_DEFAULT_TARGETS: Record<ModelType, string[]> = {
  gpt2: ['c_attn'],
  gpt_neox: ['query_key_value'],
  opt: ['q_proj', 'v_proj'],
  phi: ['q_proj', 'v_proj', 'fc1', 'fc2'],
  bloom: ['query_key_value'],
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  qwen3: ['q_proj', 'v_proj'],
  gemma: ['q_proj', 'v_proj'],
  gemma2: ['q_proj', 'v_proj'],
  gemma3_text: ['q_proj', 'v_proj'],
  phi3: ['qkv_proj'],
  smollm3: ['q_proj', 'v_proj'],
  olmo2: ['q_proj', 'v_proj'],
  granite: ['q_proj', 'v_proj'],
  stablelm: ['q_proj', 'v_proj'],
  bert: ['query', 'value'],
  roberta: ['query', 'value'],
  'xlm-roberta': ['query', 'value'],
  distilbert: ['q_lin', 'v_lin'],
  'deberta-v2': ['query_proj', 'value_proj'],
  modernbert: ['Wqkv'],
  vit: ['query', 'value'],
};
/**
 * PEFT's `TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING`; our own where it has none: ViT and XLM-R
 * as BERT; Phi-3 its fused q/k/v and down_proj; SmolLM3, OLMo-2, Granite and StableLM as Llama;
 * ModernBERT Wqkv and its MLP's Wo.
 */
export const IA3_DEFAULT_TARGETS: Record<ModelType, string[]> = {
  gpt2: ['c_attn', 'mlp.c_proj'],
  gpt_neox: ['query_key_value', 'dense_4h_to_h'],
  opt: ['q_proj', 'k_proj', 'fc2'],
  phi: ['q_proj', 'v_proj', 'fc2'],
  bloom: ['query_key_value', 'mlp.dense_4h_to_h'],
  llama: ['k_proj', 'v_proj', 'down_proj'],
  mistral: ['k_proj', 'v_proj', 'down_proj'],
  qwen2: ['q_proj', 'v_proj', 'down_proj'],
  qwen3: ['q_proj', 'v_proj', 'down_proj'],
  gemma: ['q_proj', 'v_proj', 'down_proj'],
  gemma2: ['q_proj', 'v_proj', 'down_proj'],
  gemma3_text: ['q_proj', 'v_proj', 'down_proj'],
  phi3: ['qkv_proj', 'down_proj'],
  smollm3: ['k_proj', 'v_proj', 'down_proj'],
  olmo2: ['k_proj', 'v_proj', 'down_proj'],
  granite: ['k_proj', 'v_proj', 'down_proj'],
  stablelm: ['k_proj', 'v_proj', 'down_proj'],
  bert: ['key', 'value', 'output.dense'],
  roberta: ['key', 'value', 'output.dense'],
  'xlm-roberta': ['key', 'value', 'output.dense'],
  distilbert: ['k_lin', 'v_lin', 'ffn.lin2'],
  'deberta-v2': ['key_proj', 'value_proj', 'output.dense'],
  modernbert: ['Wqkv', 'mlp.Wo'],
  vit: ['key', 'value', 'output.dense'],
};
/** PEFT's `TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING` (ViT, absent there: as BERT). */
export const IA3_DEFAULT_FEEDFORWARD: Record<ModelType, string[]> = {
  gpt2: ['mlp.c_proj'],
  gpt_neox: ['dense_4h_to_h'],
  opt: ['fc2'],
  phi: ['fc2'],
  bloom: ['mlp.dense_4h_to_h'],
  llama: ['down_proj'],
  mistral: ['down_proj'],
  qwen2: ['down_proj'],
  qwen3: ['down_proj'],
  gemma: ['down_proj'],
  gemma2: ['down_proj'],
  gemma3_text: ['down_proj'],
  phi3: ['down_proj'],
  smollm3: ['down_proj'],
  olmo2: ['down_proj'],
  granite: ['down_proj'],
  stablelm: ['down_proj'],
  bert: ['output.dense'],
  roberta: ['output.dense'],
  'xlm-roberta': ['output.dense'],
  distilbert: ['ffn.lin2'],
  'deberta-v2': ['output.dense'],
  modernbert: ['mlp.Wo'],
  vit: ['output.dense'],
};

/**
 * PEFT's `TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING` where it has the model type; every
 * norm of the others (BERT, ViT). Qwen's default is PEFT's, post_attention_layernorm alone.
 */
export const LN_TUNING_DEFAULT_TARGETS: Partial<Record<ModelType, string[]>> = {
  gpt2: ['ln_1', 'ln_2', 'ln_f'],
  phi: ['input_layernorm', 'final_layernorm'],
  bloom: ['input_layernorm', 'post_attention_layernorm', 'ln_f'],
  llama: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  mistral: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  qwen2: ['post_attention_layernorm'],
  qwen3: ['post_attention_layernorm'],
  gemma: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  gemma2: ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm', 'norm'],
  gemma3_text: ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm', 'norm'],
};

/** PEFT's `TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING`: LoRA's, but Phi's attention only. */
export function veraDefaultTargets(modelType: ModelType): string[] {
  return modelType === 'phi' ? ['q_proj', 'v_proj'] : LORA_DEFAULT_TARGETS[modelType];
}

/** PEFT's `TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING` where it differs from LoRA's. */
const ADALORA_TARGETS: Partial<Record<ModelType, string[]>> = {
  opt: ['q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2'],
  roberta: ['query', 'key', 'value', 'dense'],
  'deberta-v2': ['query_proj', 'key_proj', 'value_proj', 'dense'],
};

export const adaloraDefaultTargets = (modelType: ModelType): string[] => ADALORA_TARGETS[modelType] ?? LORA_DEFAULT_TARGETS[modelType];

/** Default targets of a kind that acts on linear modules (LoHa and LoKr: LoRA's, as PEFT's mappings are copies). */
export function defaultTargets(kind: AdapterKind, modelType: ModelType): string[] {
  if (kind === 'ia3') return IA3_DEFAULT_TARGETS[modelType];
  if (kind === 'vera') return veraDefaultTargets(modelType);
  if (kind === 'adalora') return adaloraDefaultTargets(modelType);
  return LORA_DEFAULT_TARGETS[modelType];
}

/** Python's `re.fullmatch(pattern, key)` (the pattern is used as a JavaScript regex). */
export function fullMatch(pattern: string, key: string): boolean {
  return new RegExp(`^(?:${pattern})$`, 'u').test(key);
}

/** A target list or regex, as PEFT's `target_modules` / `exclude_modules` take it. */
export type TargetSpec = string | readonly string[];

/** PEFT's `check_target_module_exists` core: a regex full-matches, or a list entry equals the path or is its `.suffix`. */
export function matchesTarget(targets: TargetSpec, key: string): boolean {
  if (typeof targets === 'string') return fullMatch(targets, key);
  return targets.some((t) => key === t || key.endsWith(`.${t}`));
}

/** PEFT's `get_pattern_key`: the first pattern p with `re.match(rf"(.*\.)?({p})$", key)`, or undefined. */
export function patternKey(patterns: readonly string[], key: string): string | undefined {
  return patterns.find((p) => new RegExp(`^(?:.*\\.)?(?:${p})$`, 'u').test(key));
}

/** PEFT's `_set_trainable` / modules_to_save match: the module path ends with the name (no dot required). */
export function matchesModuleToSave(names: readonly string[], module: string): boolean {
  return names.some((n) => module.endsWith(n));
}

/** PEFT's check that a target is not inside a modules_to_save module: `(^|.*\.)m($|\..*)`. */
export function insideModuleToSave(names: readonly string[], key: string): boolean {
  return names.some((m) => new RegExp(`^(?:.*\\.)?${m}(?:$|\\..*)`, 'u').test(key));
}

/** IA3's `_check_target_module_feedforward`: regex full match, or `key.endswith(name)` (no dot). */
export function matchesFeedforward(ff: TargetSpec, key: string): boolean {
  if (typeof ff === 'string') return fullMatch(ff, key);
  return ff.some((t) => key.endsWith(t));
}

export interface TargetSelection {
  targets: TargetSpec;
  exclude?: TargetSpec | null;
  modulesToSave?: readonly string[];
  /** The token embedding may be targeted (LoRA's lora_embedding_A/B): selectEmbeddings picks it. */
  embeddings?: boolean;
  /** PEFT's layers_to_transform: only modules in these blocks (with a list of targets). */
  layers?: readonly number[];
  /** PEFT's layers_pattern: the name before the block index (`layers`, `h`); absent: the first numbered segment. */
  layersPattern?: readonly string[];
  /** The model's run-time names (Architecture.runtimeName), which PEFT's configs use. */
  runtimeName?: (path: string) => string;
}

/** A token embedding module LoRA can act on: its table is `<module>.weight`, [numEmbeddings, dim]. */
export interface EmbeddingModuleInfo {
  module: string;
  numEmbeddings: number;
  dim: number;
}

/** Whether a target selection names `module` (PEFT's rules, exclusions and modules_to_save included; "all-linear" names every linear one). */
function selected(sel: TargetSelection, module: string, linear = false): boolean {
  // PEFT matches the run-time name (transformers 5 renamed ViT's modules); PEFT Lab's own names match too.
  const names = sel.runtimeName && sel.runtimeName(module) !== module ? [module, sel.runtimeName(module)] : [module];
  const mts = sel.modulesToSave ?? [];
  const exclude = sel.exclude;
  if (exclude && names.some((n) => (typeof exclude === 'string' ? fullMatch(exclude, n) : matchesTarget(exclude, n)))) return false;
  if (mts.length && names.some((n) => insideModuleToSave(mts, n))) return false;
  if (sel.targets === 'all-linear') return linear && inLayers(sel, module);
  const targets = sel.targets;
  if (typeof targets === 'string') return names.some((n) => fullMatch(targets, n)); // PEFT: a regex ignores layers_to_transform
  if (names.some((n) => targets.includes(n))) return true; // a full path names its module whatever the layers
  return names.some((n) => matchesTarget(targets, n)) && inLayers(sel, module);
}

function withRuntimeNames(model: Model, sel: TargetSelection): TargetSelection {
  const rt = model.arch.runtimeName;
  return rt && !sel.runtimeName ? { ...sel, runtimeName: (p) => rt(p) } : sel;
}

/** A module's names as PEFT may write them: PEFT Lab's (the checkpoint's) and, where it differs, the run-time one (ViT's). */
export function pathNames(model: Model, path: string): string[] {
  const rt = model.arch.runtimeName?.(path);
  return rt && rt !== path ? [path, rt] : [path];
}

/** PEFT's layers_to_transform test: the block index in the module's path (after a layers_pattern name) is one of them. */
function inLayers(sel: TargetSelection, module: string): boolean {
  if (!sel.layers) return true;
  const patterns = sel.layersPattern?.length ? sel.layersPattern.map((p) => new RegExp(`^.*?\\.${p}\\.(\\d+)\\.`, 'u')) : [/^.*?\.[^.]*\.(\d+)\./u];
  const names = sel.runtimeName ? [module, sel.runtimeName(module)] : [module];
  for (const name of names) {
    for (const re of patterns) {
      const m = re.exec(name);
      if (m) return sel.layers.includes(Number(m[1]));
    }
  }
  return false;
}

/** The token embedding a selection names (PEFT puts LoRA on an nn.Embedding its targets match). */
export function selectEmbeddings(model: Model, selection: TargetSelection): EmbeddingModuleInfo[] {
  const sel = withRuntimeNames(model, selection);
  const module = model.arch.tokenEmbedding?.(model.config);
  if (!module || !selected(sel, module)) return [];
  const [numEmbeddings, dim] = model.params.get(`${module}.weight`)!.shape as [number, number];
  return [{ module, numEmbeddings, dim }];
}

/**
 * The hookable linear modules selected by a target spec, as PEFT selects them. Throws when nothing
 * matches (PEFT raises too), and when the targets name an embedding the adapter cannot act on
 * (rather than leave it out unnoticed). `"all-linear"` is every hookable linear module.
 */
export function selectLinears(model: Model, selection: TargetSelection): LinearModuleInfo[] {
  const sel = withRuntimeNames(model, selection);
  const all = hookableLinears(model);
  const picked = all.filter((m) => selected(sel, m.module, true));
  const token = model.arch.tokenEmbedding?.(model.config);
  const embeddings = model.paramInfo().filter((p) => p.type === 'embedding').map((p) => p.name.replace(/\.weight$/, ''));
  const named = embeddings.filter((e) => selected(sel, e) && !(sel.embeddings && e === token));
  if (named.length)
    throw new AdapterOptionError(
      'targets',
      `target modules name the embedding ${named[0]}: ${sel.embeddings ? `LoRA acts on linear modules and the token embedding${token ? ` (${token})` : ''}` : 'this adapter acts on linear modules only (LoRA also on the token embedding)'}; train it whole with modulesToSave instead`,
    );
  const blocks = new Set(all.map((m) => m.layer));
  const missing = sel.layers?.find((l) => !blocks.has(l));
  if (missing !== undefined) throw new AdapterOptionError('layers', `layers: block ${missing} does not exist (this ${model.config.modelType} model has blocks 0 to ${Math.max(...blocks)})`);
  if (picked.length === 0 && !(sel.embeddings && token && selected(sel, token))) {
    const shown = typeof sel.targets === 'string' ? JSON.stringify(sel.targets) : `[${sel.targets.join(', ')}]`;
    // Targets that only name modules trained whole (modules_to_save) select nothing: say which.
    const linear = new Set(all.map((m) => m.module));
    const saved = [...linear, ...embeddings].filter((m) => selected({ ...sel, modulesToSave: [] }, m, linear.has(m)) && !selected(sel, m, linear.has(m)));
    if (saved.length) throw new AdapterOptionError('targets', `target modules ${shown} name only ${saved.slice(0, 3).join(', ')}${saved.length > 3 ? ', ...' : ''}, which modulesToSave trains whole: an adapter cannot act inside it too`);
    throw new AdapterOptionError('targets', `target modules ${shown} match no linear module of this ${model.config.modelType} model (modules are named like ${all[0]?.module ?? '?'})`);
  }
  return picked;
}

/** A point where `Forward.tap` is called, with what SSF needs to fold a scale and shift into weights. */
export interface TapPoint {
  point: string;
  layer: number;
  /** `norm`: the output of a LayerNorm/RMSNorm; `sublayer`: the output of an attention or MLP block (before the residual add). */
  kind: 'norm' | 'sublayer';
  /** Short name matched by targets (`ln_1`, `input_layernorm`, `attn`, `mlp`, ...). */
  name: string;
  /** norm: the weight/bias parameter names (bias absent for RMSNorm). */
  normWeight?: string;
  normBias?: string;
  /** norm: Gemma's RMSNorm scales by (normOffset + weight); a scale γ folds as (offset + w)·γ − offset. */
  normOffset?: number;
  /** norm without bias: linear modules that consume its output (a shift folds into their biases). */
  consumers?: string[];
  /** sublayer: the linear module whose output the tap sees (a scale and shift fold into it). */
  outputLinear?: string;
}

/** Every tap point of the model's architecture, in forward order. */
export function tapPoints(model: Model): TapPoint[] {
  const cfg = model.config;
  const out: TapPoint[] = [];
  const block = (i: number) => model.arch.blockPrefix(cfg, i);
  const offset = 'normOffset' in cfg ? cfg.normOffset : 0;
  const norm = (point: string, layer: number, bias: boolean, consumers?: string[]) =>
    out.push({ point, layer, kind: 'norm', name: point.split('.').pop()!, normWeight: `${point}.weight`, ...(bias ? { normBias: `${point}.bias` } : {}), ...(consumers ? { consumers } : {}), ...(offset ? { normOffset: offset } : {}) });
  const sub = (point: string, layer: number, outputLinear: string) => out.push({ point, layer, kind: 'sublayer', name: point.split('.').pop()!, outputLinear });
  /** Blocks of LayerNorm → attention, LayerNorm → MLP (GPT-2's layout, names given per architecture). */
  const lnBlocks = (norm1: string, attn: string, attnOut: string, norm2: string, mlpOut: string) => {
    for (let i = 0; i < cfg.numLayers; i++) {
      const p = block(i);
      norm(`${p}.${norm1}`, i, true);
      sub(`${p}.${attn}`, i, `${p}.${attn}.${attnOut}`);
      norm(`${p}.${norm2}`, i, true);
      sub(`${p}.mlp`, i, `${p}.mlp.${mlpOut}`);
    }
  };
  switch (cfg.modelType) {
    case 'gpt2':
      lnBlocks('ln_1', 'attn', 'c_proj', 'ln_2', 'c_proj');
      norm('transformer.ln_f', -1, true);
      break;
    case 'gpt_neox':
      // With the parallel residual both norms read the block's input; each feeds its own sub-layer.
      lnBlocks('input_layernorm', 'attention', 'dense', 'post_attention_layernorm', 'dense_4h_to_h');
      norm('gpt_neox.final_layer_norm', -1, true);
      break;
    case 'bloom':
      norm('transformer.word_embeddings_layernorm', -1, true);
      lnBlocks('input_layernorm', 'self_attention', 'dense', 'post_attention_layernorm', 'dense_4h_to_h');
      norm('transformer.ln_f', -1, true);
      break;
    case 'phi':
      // One norm feeds both sub-layers; qk_layernorm's per-head norms are no tap points (their width is head_dim).
      for (let i = 0; i < cfg.numLayers; i++) {
        const p = block(i);
        norm(`${p}.input_layernorm`, i, true);
        sub(`${p}.self_attn`, i, `${p}.self_attn.dense`);
        sub(`${p}.mlp`, i, `${p}.mlp.fc2`);
      }
      norm('model.final_layernorm', -1, true);
      break;
    case 'opt':
      // Pre-LN blocks normalise before each sub-layer; opt-350m's after its residual sum.
      for (let i = 0; i < cfg.numLayers; i++) {
        const p = block(i);
        const before = cfg.layerNormBefore;
        if (before) norm(`${p}.self_attn_layer_norm`, i, true);
        sub(`${p}.self_attn`, i, `${p}.self_attn.out_proj`);
        if (!before) norm(`${p}.self_attn_layer_norm`, i, true);
        if (before) norm(`${p}.final_layer_norm`, i, true);
        sub(`${p}.mlp`, i, `${p}.fc2`);
        if (!before) norm(`${p}.final_layer_norm`, i, true);
      }
      if (cfg.finalLayerNorm) norm('model.decoder.final_layer_norm', -1, true);
      break;
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
      for (let i = 0; i < cfg.numLayers; i++) {
        const p = block(i);
        const [attnIn, mlpIn] = cfg.fusedProjections ? [['qkv_proj'], ['gate_up_proj']] : [['q_proj', 'k_proj', 'v_proj'], ['gate_proj', 'up_proj']];
        // OLMo-2 has no norms before its sub-layers, only after them; StableLM's are LayerNorms (with
        // biases), and with its parallel residual input_layernorm feeds the MLP as well.
        const pre = cfg.preNorms !== false;
        const biased = cfg.layerNorms === true;
        const mlpReaders = mlpIn.map((m) => `${p}.mlp.${m}`);
        if (pre) norm(`${p}.input_layernorm`, i, biased, [...attnIn.map((m) => `${p}.self_attn.${m}`), ...(cfg.parallelResidual ? mlpReaders : [])]);
        sub(`${p}.self_attn`, i, `${p}.self_attn.o_proj`);
        // Gemma 3's sandwich: post_attention_layernorm normalises the attention output (before the
        // residual add) and pre_feedforward_layernorm feeds the MLP.
        if (cfg.sandwichNorms) norm(`${p}.post_attention_layernorm`, i, biased, []);
        if (pre && !cfg.parallelResidual) norm(`${p}.${cfg.sandwichNorms ? 'pre_feedforward_layernorm' : 'post_attention_layernorm'}`, i, biased, mlpReaders);
        sub(`${p}.mlp`, i, `${p}.mlp.down_proj`);
        if (cfg.sandwichNorms) norm(`${p}.post_feedforward_layernorm`, i, biased, []);
      }
      norm('model.norm', -1, cfg.layerNorms === true, []);
      break;
    case 'bert':
    case 'roberta':
    case 'xlm-roberta':
    case 'deberta-v2':
      norm(`${cfg.modelType === 'deberta-v2' ? 'deberta' : cfg.prefix}.embeddings.LayerNorm`, -1, true);
      for (let i = 0; i < cfg.numLayers; i++) {
        const p = block(i);
        sub(`${p}.attention`, i, `${p}.attention.output.dense`);
        norm(`${p}.attention.output.LayerNorm`, i, true);
        sub(`${p}.output`, i, `${p}.output.dense`);
        norm(`${p}.output.LayerNorm`, i, true);
      }
      break;
    case 'distilbert':
      norm('distilbert.embeddings.LayerNorm', -1, true);
      for (let i = 0; i < cfg.numLayers; i++) {
        const p = block(i);
        sub(`${p}.attention`, i, `${p}.attention.out_lin`);
        norm(`${p}.sa_layer_norm`, i, true);
        sub(`${p}.ffn`, i, `${p}.ffn.lin2`);
        norm(`${p}.output_layer_norm`, i, true);
      }
      break;
    case 'modernbert':
      // Bias-free norms: a shift folds into the linears that read them; the embeddings' norm and the
      // final one feed the residual stream and the pooling, which have no bias to take it.
      norm('model.embeddings.norm', -1, cfg.normBias, []);
      for (let i = 0; i < cfg.numLayers; i++) {
        const p = block(i);
        if (i > 0) norm(`${p}.attn_norm`, i, cfg.normBias, [`${p}.attn.Wqkv`]);
        sub(`${p}.attn`, i, `${p}.attn.Wo`);
        norm(`${p}.mlp_norm`, i, cfg.normBias, [`${p}.mlp.Wi`]);
        sub(`${p}.mlp`, i, `${p}.mlp.Wo`);
      }
      norm('model.final_norm', -1, cfg.normBias, []);
      break;
    case 'vit':
      for (let i = 0; i < cfg.numLayers; i++) {
        const p = block(i);
        norm(`${p}.layernorm_before`, i, true);
        sub(`${p}.attention`, i, `${p}.attention.output.dense`);
        norm(`${p}.layernorm_after`, i, true);
        sub(`${p}.output`, i, `${p}.output.dense`);
      }
      break;
  }
  return out;
}

/** The transformer block a parameter or module path belongs to, or −1. */
export function layerOfPath(model: Model, path: string): number {
  for (let i = 0; i < model.config.numLayers; i++) {
    const p = `${model.arch.blockPrefix(model.config, i)}.`;
    if (path.startsWith(p)) return i;
  }
  return -1;
}
