/**
 * The adapters Hugging Face PEFT also has (LoRA, DoRA, IA3), assembled from a PEFT-shaped setup
 * (built from an AdapterSpec by createAdapter, or from adapter_config.json by loadPeftAdapter), with
 * PEFT's extras: `bias` ('all' / 'lora_only'), `modules_to_save`, and export to PEFT's format.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor } from '../io/safetensors';
import type { Model } from '../models/model';
import { replacementPart, type AdapterCore, type PeftExport } from './core';
import { addIa3, ia3Name, type Ia3Module } from './ia3';
import { addLora, addLoraEmbeddings, host, loraEmbeddingExportTensors, loraExportTensors, type LoraEmbeddingModule, type LoraModule } from './lora';
import { adaloraNames, adaloraScale, addAdalora, orthogonalityPenalty, RankAllocator, type AdaloraModule, type AdaloraSchedule } from './adalora';
import { addDeltaModules, factorName, LOHA, LOKR, type DeltaModule } from './lycoris';
import { addHra, hraName, type HraModule } from './hra';
import { addOft, oftName, type OftModule } from './oft';
import { addVera, VERA_A, VERA_B, veraNames, type VeraModule } from './vera';
import { layerOfPath, matchesModuleToSave, pathNames } from './targets';

export const PEFT_PREFIX = 'base_model.model.';
export const PEFT_VERSION = '0.21.0';

export type LoraBias = 'none' | 'all' | 'lora_only';

export interface Extras {
  bias: LoraBias;
  /** modules_to_save names (for a SEQ_CLS model, including PEFT's `classifier`, `score`: see modulesToSaveFor). */
  modulesToSave: string[];
  /** Loaded values for the replaced tensors (bias, modules_to_save), by base name. */
  values?: ReadonlyMap<string, tf.Tensor>;
}

export interface LoraSetup extends Extras {
  dora: boolean;
  rslora: boolean;
  dropout: number;
  r: number;
  alpha: number;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  loraBias: boolean;
  /** `init_lora_weights` to report when the export needs no conversion. */
  initLabel: boolean | string;
  modules: LoraModule[];
  /** LoRA on token embeddings (PEFT's lora_embedding_A / _B). */
  embeddings: LoraEmbeddingModule[];
}

export interface LycorisSetup extends Extras {
  kind: 'loha' | 'lokr';
  r: number;
  alpha: number;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** LoKr only. */
  decomposeBoth: boolean;
  decomposeFactor: number;
  modules: DeltaModule[];
}

export interface VeraSetup extends Extras {
  r: number;
  dropout: number;
  /** The shared projections A [r, in_max], B [out_max, r] (the core owns them once built). */
  projections: { A: tf.Tensor2D; B: tf.Tensor2D };
  /** PEFT's projection_prng_key (recorded only: the projections travel in the file). */
  seed: number;
  modules: VeraModule[];
}

export interface AdaloraSetup extends Extras {
  /** initR: the rank every module starts with (r₀, which the scale keeps after pruning). */
  schedule: AdaloraSchedule;
  alpha: number;
  dropout: number;
  modules: AdaloraModule[];
  /** A loaded adapter's pattern (its tensors already cut to it), kept for export. */
  rankPattern: Record<string, boolean[]> | null;
  /** The total_step a loaded config records (a trained one records the run's). */
  totalSteps?: number;
}

export interface OftSetup extends Extras {
  /** The requested block size (each module's may be adjusted to divide its input size). */
  blockSize: number;
  /** The requested block count, when given instead (PEFT's r). */
  r: number;
  terms: number;
  modules: OftModule[];
}

export interface HraSetup extends Extras {
  r: number;
  gs: boolean;
  modules: HraModule[];
  /** The seed of PEFT's init for modules without `u`. */
  seed: number;
}

export interface Ia3Setup extends Extras {
  modules: Ia3Module[];
}

/** PEFT's task type for the architecture (ViT has none: PEFT then records an auto_mapping). */
export function taskTypeOf(model: Model): 'CAUSAL_LM' | 'SEQ_CLS' | null {
  switch (model.config.modelType) {
    case 'gpt2':
    case 'gpt_neox':
    case 'opt':
    case 'phi':
    case 'bloom':
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
      return 'CAUSAL_LM';
    case 'bert':
    case 'roberta':
    case 'xlm-roberta':
    case 'distilbert':
    case 'deberta-v2':
    case 'modernbert':
      return 'SEQ_CLS';
    default:
      return null;
  }
}

export function autoMapping(model: Model): Record<string, string> | null {
  if (taskTypeOf(model) !== null) return null;
  const cls = model.config.architecture || 'ViTForImageClassification';
  return { base_model_class: cls, parent_library: `transformers.models.${model.config.modelType}.modeling_${model.config.modelType}` };
}

/** modules_to_save as PEFT records it: a SEQ_CLS model always adds its head names. */
export function modulesToSaveFor(model: Model, names: readonly string[]): string[] {
  const out = [...names];
  if (taskTypeOf(model) === 'SEQ_CLS') for (const n of ['classifier', 'score']) if (!out.includes(n)) out.push(n);
  return out;
}

/** A LoRA/IA3 adapter's modules_to_save: the asked ones plus the task head (PEFT's SEQ_CLS rule; a ViT's classifier, as PEFT's image-classification recipes). */
export function adapterModulesToSave(model: Model, names: readonly string[]): string[] {
  const out = modulesToSaveFor(model, names);
  if (model.arch.task === 'image-classification' && !out.includes('classifier')) out.push('classifier');
  return out;
}

/** Base parameters inside a modules_to_save module (some module path prefix ends with a name). */
export function moduleToSaveParams(model: Model, names: readonly string[]): string[] {
  if (names.length === 0) return [];
  return model.paramInfo()
    .map((p) => p.name)
    .filter((p) => {
      const parts = p.split('.');
      // Each enclosing module, under its checkpoint name and its run-time one (ViT's differ).
      for (let i = 1; i < parts.length; i++) if (pathNames(model, parts.slice(0, i).join('.')).some((m) => matchesModuleToSave(names, m))) return true;
      return false;
    });
}

/** Registers the replaced-tensor extras; returns the bias and modules_to_save parameter names. */
function addExtras(core: AdapterCore, extras: Extras, targeted: readonly string[]): { biases: string[]; saved: string[] } {
  const model = core.model;
  const saved = moduleToSaveParams(model, extras.modulesToSave);
  const savedSet = new Set(saved);
  let biases: string[] = [];
  if (extras.bias === 'all') biases = model.paramInfo().map((p) => p.name).filter((n) => n.endsWith('.bias') && !savedSet.has(n));
  else if (extras.bias === 'lora_only') biases = targeted.map((m) => `${m}.bias`).filter((n) => model.params.has(n));
  for (const name of [...saved, ...biases]) {
    const v = extras.values?.get(name) ?? model.params.get(name)!;
    core.addTrainable(name, tf.clone(v), layerOfPath(model, name), { replacesBase: true });
  }
  if (saved.length + biases.length) core.mergeParts.push(replacementPart(core, [...saved, ...biases]));
  return { biases, saved };
}

/**
 * Tied output heads of saved (trained) embeddings. PEFT wraps each module to save in its own copy,
 * so its head would keep the original embedding: the head is saved too (as `lm_head`, equal to the
 * embedding) for PEFT to compute what PEFT Lab computes.
 */
export function tiedHeadsOf(model: Model, saved: readonly string[]): { param: string; source: string }[] {
  const set = new Set(saved);
  return Object.entries(model.aliases)
    .filter(([, source]) => set.has(source))
    .map(([param, source]) => ({ param, source }));
}

/** modules_to_save as exported: the adapter's, plus the modules of tied heads (see tiedHeadsOf). */
function exportedModulesToSave(model: Model, modulesToSave: readonly string[], saved: readonly string[]): string[] | null {
  const out = [...modulesToSave];
  for (const { param } of tiedHeadsOf(model, saved)) {
    const module = param.replace(/\.weight$/, '');
    if (!out.includes(module)) out.push(module);
  }
  return out.length ? out : null;
}

/** PEFT keys of the extras: a targeted module's bias lives on `base_layer`. */
async function extrasExport(core: AdapterCore, names: { biases: string[]; saved: string[] }, targeted: ReadonlySet<string>): Promise<Map<string, HostTensor>> {
  const out = new Map<string, HostTensor>();
  for (const n of names.saved) out.set(n, await host(core.tensor(n)));
  for (const { param, source } of tiedHeadsOf(core.model, names.saved)) out.set(param, await host(core.tensor(source)));
  for (const n of names.biases) {
    const module = n.slice(0, -'.bias'.length);
    out.set(targeted.has(module) ? `${module}.base_layer.bias` : n, await host(core.tensor(n)));
  }
  return out;
}

function prefixed(m: Map<string, HostTensor>): Map<string, HostTensor> {
  return new Map([...m].map(([k, v]) => [PEFT_PREFIX + k, v]));
}

export function buildLora(core: AdapterCore, setup: LoraSetup): void {
  const targeted = [...setup.modules.map((m) => m.info.module), ...setup.embeddings.map((m) => m.info.module)];
  const extras = addExtras(core, setup, targeted);
  addLora(core, setup.modules, { dora: setup.dora, dropout: setup.dropout });
  addLoraEmbeddings(core, setup.embeddings);
  core.exporter = async (): Promise<PeftExport> => {
    const convert = setup.modules.some((m) => m.init !== undefined);
    const tensors = await loraExportTensors(core, setup.modules, setup, convert);
    for (const [k, v] of await loraEmbeddingExportTensors(core, setup.embeddings, convert ? (m) => 2 * m.r : undefined)) tensors.set(k, v);
    for (const [k, v] of await extrasExport(core, extras, new Set(targeted))) tensors.set(k, v);
    // Converting to the original base doubles the rank and keeps s: α·2 (rsLoRA: α·√2).
    const k = convert ? 2 : 1;
    const alphaK = convert ? (setup.rslora ? Math.SQRT2 : 2) : 1;
    const mapValues = (o: Record<string, number>, f: number) => Object.fromEntries(Object.entries(o).map(([key, v]) => [key, v * f]));
    const config: Record<string, unknown> = {
      ...loraConfigFields(core.model, targeted, exportedModulesToSave(core.model, setup.modulesToSave, extras.saved), core.spec.layers),
      alpha_pattern: mapValues(setup.alphaPattern, alphaK),
      bias: setup.bias,
      fan_in_fan_out: setup.modules.some((m) => m.info.fanInFanOut),
      init_lora_weights: convert ? true : setup.initLabel,
      lora_alpha: setup.alpha * alphaK,
      lora_bias: setup.loraBias,
      lora_dropout: setup.dropout,
      r: setup.r * k,
      rank_pattern: mapValues(setup.rankPattern, k),
      use_dora: setup.dora,
      use_rslora: setup.rslora,
    };
    return { config, tensors: prefixed(tensors) };
  };
}

/** The rows (A, E) or columns (B) a pattern keeps, as host data. */
async function keptRanks(t: tf.Tensor, keep: readonly boolean[] | undefined, axis: 0 | 1): Promise<HostTensor> {
  if (!keep || keep.length !== t.shape[axis] || keep.every(Boolean)) return host(t);
  const idx = keep.flatMap((k, i) => (k ? [i] : []));
  const cut = tf.tidy(() => (idx.length ? tf.gather(t, idx, axis) : axis === 0 ? tf.zeros([0, t.shape[1]!]) : tf.zeros([t.shape[0]!, 0])));
  const out = await host(cut);
  cut.dispose();
  return out;
}

/**
 * AdaLoRA (PEFT's ADALORA): trains with the orthogonality penalty and the RankAllocator
 * (core.training); exports the kept ranks only, with the rank_pattern, as PEFT saves them.
 */
export function buildAdalora(core: AdapterCore, setup: AdaloraSetup): void {
  const targeted = setup.modules.map((m) => m.info.module);
  const extras = addExtras(core, setup, targeted);
  const schedule = setup.schedule;
  addAdalora(core, setup.modules, { scale: adaloraScale(setup.alpha, schedule.initR), dropout: setup.dropout });
  const ranks = new Map(setup.modules.map((m) => [m.info.module, m.A.shape[0]]));
  let allocator: RankAllocator | undefined;
  core.training = {
    begin(totalSteps) {
      const { tinit, tfinal, targetR, initR } = schedule;
      if (tinit >= totalSteps - tfinal) return `the schedule leaves no steps to allocate ranks in: tinit (${tinit}) must be below the run's ${totalSteps} steps less tfinal (${tfinal})`;
      // The pattern is fixed at step total − tfinal from the scores of the steps before it: there must be one.
      if (totalSteps - tfinal < 2) return `the rank pattern would be fixed at step ${totalSteps - tfinal}, before any step has scored the ranks: make tfinal (${tfinal}) at most ${totalSteps - 2}`;
      if (targetR > initR) return `targetR (${targetR}) exceeds the initial rank r (${initR})`;
      allocator?.dispose();
      allocator = new RankAllocator(targeted, ranks, schedule, totalSteps);
      return undefined;
    },
    penalty: (get) => orthogonalityPenalty(targeted, get, schedule.orthRegWeight),
    async afterStep(step, grads) {
      if (!allocator) throw new Error('AdaLoRA: begin(totalSteps) was not called before training');
      return { adalora_budget: (await allocator.afterStep(step, core.trainable, grads)).budget };
    },
    state() {
      const s = allocator?.state();
      return { tensors: s?.tensors ?? new Map<string, tf.Tensor>(), json: { rankPattern: s?.rankPattern ?? null } };
    },
    restore(tensors, json) {
      const pattern = (json as { rankPattern?: Record<string, boolean[]> | null } | undefined)?.rankPattern ?? null;
      allocator?.restore(tensors, pattern, (name) => core.trainable.get(name)?.shape);
    },
    dispose: () => allocator?.dispose(),
  };
  core.exporter = async (): Promise<PeftExport> => {
    const pattern = allocator?.rankPattern ?? setup.rankPattern;
    const tensors = new Map<string, HostTensor>();
    for (const m of targeted) {
      const n = adaloraNames(m);
      const keep = pattern?.[m];
      tensors.set(n.A, await keptRanks(core.tensor(n.A), keep, 0));
      tensors.set(n.E, await keptRanks(core.tensor(n.E), keep, 0));
      tensors.set(n.B, await keptRanks(core.tensor(n.B), keep, 1));
    }
    for (const [k, v] of await extrasExport(core, extras, new Set(targeted))) tensors.set(k, v);
    const config: Record<string, unknown> = {
      ...loraConfigFields(core.model, targeted, exportedModulesToSave(core.model, setup.modulesToSave, extras.saved), core.spec.layers),
      peft_type: 'ADALORA',
      beta1: schedule.beta1,
      beta2: schedule.beta2,
      bias: setup.bias,
      deltaT: schedule.deltaT,
      fan_in_fan_out: setup.modules.some((m) => m.info.fanInFanOut),
      init_r: schedule.initR,
      lora_alpha: setup.alpha,
      lora_dropout: setup.dropout,
      orth_reg_weight: schedule.orthRegWeight,
      rank_pattern: pattern ? Object.fromEntries(Object.entries(pattern).map(([m, k]) => [adaloraNames(m).E, k])) : null,
      target_r: schedule.targetR,
      tfinal: schedule.tfinal,
      tinit: schedule.tinit,
      total_step: allocator?.totalSteps ?? setup.totalSteps ?? null,
    };
    return { config, tensors: prefixed(tensors) };
  };
}

/** LoraConfig's fields at the values PEFT Lab never changes (LORA and ADALORA configs set the rest). */
export function loraConfigFields(model: Model, targeted: readonly string[], modulesToSave: string[] | null, layers?: readonly number[]): Record<string, unknown> {
  return {
    ...commonConfig(model, 'LORA', targeted, modulesToSave, layers),
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    bias: 'none',
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    init_lora_weights: true,
    kasa_config: null,
    layer_replication: null,
    loftq_config: {},
    lora_alpha: 8,
    lora_bias: false,
    lora_dropout: 0,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: 'megatron.core',
    monteclora_config: null,
    qalora_group_size: 16,
    r: 8,
    rank_pattern: {},
    target_parameters: null,
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: false,
    velora_config: null,
  };
}

/** Fields every PEFT config of a module-wrapping method writes. */
function commonConfig(model: Model, peftType: string, targeted: readonly string[], modulesToSave: string[] | null, layers?: readonly number[]): Record<string, unknown> {
  return {
    auto_mapping: autoMapping(model),
    base_model_name_or_path: null,
    inference_mode: true,
    layers_pattern: null,
    layers_to_transform: layers ? [...layers] : null,
    modules_to_save: modulesToSave,
    peft_type: peftType,
    peft_version: PEFT_VERSION,
    revision: null,
    target_modules: [...targeted].sort(),
    task_type: taskTypeOf(model),
  };
}

const LYCORIS_NAMES = { loha: 'LoHa', lokr: 'LoKr' } as const;

/** PEFT wraps only nn.Linear with `method`: on transformers' Conv1D modules (GPT-2's) the adapter has no PEFT format. */
function noPeftFormatOnConv1d(core: AdapterCore, modules: readonly { info: { module: string; fanInFanOut: boolean } }[], method: string): boolean {
  const conv1d = modules.filter((m) => m.info.fanInFanOut).map((m) => m.info.module);
  if (conv1d.length) core.noExportReason = `PEFT has no ${method} for transformers' Conv1D modules (${conv1d.slice(0, 3).join(', ')}${conv1d.length > 3 ? ', ...' : ''}), so this adapter has no PEFT format`;
  return conv1d.length > 0;
}

/** LoHa / LoKr (PEFT's LOHA / LOKR). PEFT wraps only nn.Linear with them: on transformers' Conv1D (GPT-2) there is no PEFT format. */
export function buildLycoris(core: AdapterCore, setup: LycorisSetup): void {
  const targeted = setup.modules.map((m) => m.info.module);
  const extras = addExtras(core, setup, targeted);
  addDeltaModules(core, setup.modules, setup.kind === 'loha' ? LOHA : LOKR);
  if (noPeftFormatOnConv1d(core, setup.modules, LYCORIS_NAMES[setup.kind])) return;
  core.exporter = async (): Promise<PeftExport> => {
    const tensors = new Map<string, HostTensor>();
    for (const mod of setup.modules) for (const name of mod.factors.keys()) tensors.set(factorName(mod.info.module, name), await host(core.tensor(factorName(mod.info.module, name))));
    for (const [k, v] of await extrasExport(core, extras, new Set(targeted))) tensors.set(k, v);
    const config: Record<string, unknown> = {
      ...commonConfig(core.model, setup.kind === 'loha' ? 'LOHA' : 'LOKR', targeted, exportedModulesToSave(core.model, setup.modulesToSave, extras.saved), core.spec.layers),
      alpha: setup.alpha,
      alpha_pattern: { ...setup.alphaPattern },
      exclude_modules: null,
      init_weights: true,
      module_dropout: 0,
      r: setup.r,
      rank_dropout: 0,
      rank_pattern: { ...setup.rankPattern },
      use_effective_conv2d: false,
      ...(setup.kind === 'lokr' ? { decompose_both: setup.decomposeBoth, decompose_factor: setup.decomposeFactor, rank_dropout_scale: false } : {}),
    };
    return { config, tensors: prefixed(tensors) };
  };
}

/** VeRA (PEFT's VERA), its shared projections saved in the file (save_projection) under `base_model.vera_A` / `vera_B`. */
export function buildVera(core: AdapterCore, setup: VeraSetup): void {
  const targeted = setup.modules.map((m) => m.info.module);
  const extras = addExtras(core, setup, targeted);
  addVera(core, setup.projections, setup.modules, { r: setup.r, dropout: setup.dropout });
  core.exporter = async (): Promise<PeftExport> => {
    const tensors = new Map<string, HostTensor>();
    for (const mod of setup.modules) {
      const n = veraNames(mod.info.module);
      tensors.set(n.b, await host(core.tensor(n.b)));
      tensors.set(n.d, await host(core.tensor(n.d)));
    }
    for (const [k, v] of await extrasExport(core, extras, new Set(targeted))) tensors.set(k, v);
    const config: Record<string, unknown> = {
      ...commonConfig(core.model, 'VERA', targeted, exportedModulesToSave(core.model, setup.modulesToSave, extras.saved), core.spec.layers),
      bias: setup.bias === 'lora_only' ? 'vera_only' : setup.bias,
      d_initial: 0.1,
      fan_in_fan_out: setup.modules.some((m) => m.info.fanInFanOut),
      init_weights: true,
      projection_prng_key: setup.seed,
      r: setup.r,
      save_projection: true,
      vera_dropout: setup.dropout,
    };
    const out = prefixed(tensors);
    // The projections belong to the tuner, not to a module: PEFT keys them without `model.`.
    out.set(`base_model.${VERA_A}`, await host(core.tensor(VERA_A)));
    out.set(`base_model.${VERA_B}`, await host(core.tensor(VERA_B)));
    return { config, tensors: out };
  };
}

/** OFT (PEFT's OFT, with its Neumann-series Cayley transform). PEFT wraps nn.Linear only: no PEFT format on Conv1D. */
export function buildOft(core: AdapterCore, setup: OftSetup): void {
  const targeted = setup.modules.map((m) => m.info.module);
  const extras = addExtras(core, setup, targeted);
  addOft(core, setup.modules);
  if (noPeftFormatOnConv1d(core, setup.modules, 'OFT')) return;
  setPerModuleExporter(core, extras, targeted, setup.modulesToSave, 'OFT', oftName, {
    bias: setup.bias === 'lora_only' ? 'oft_only' : setup.bias,
    block_share: false,
    coft: false,
    eps: 6e-5,
    exclude_modules: null,
    fan_in_fan_out: false,
    init_weights: true,
    module_dropout: 0,
    num_cayley_neumann_terms: setup.terms,
    oft_block_size: setup.r ? 0 : setup.blockSize,
    r: setup.r,
    use_cayley_neumann: true,
  });
}

/** HRA (PEFT's HRA). PEFT wraps nn.Linear only: no PEFT format on Conv1D. */
export function buildHra(core: AdapterCore, setup: HraSetup): void {
  const targeted = setup.modules.map((m) => m.info.module);
  const extras = addExtras(core, setup, targeted);
  addHra(core, setup.modules, setup.seed);
  if (noPeftFormatOnConv1d(core, setup.modules, 'HRA')) return;
  setPerModuleExporter(core, extras, targeted, setup.modulesToSave, 'HRA', hraName, {
    apply_GS: setup.gs,
    bias: setup.bias === 'lora_only' ? 'hra_only' : setup.bias,
    exclude_modules: null,
    init_weights: true,
    r: setup.r,
  });
}

/** The PEFT export of a kind with one tensor per targeted module (OFT, HRA): those tensors and the
 * extras (biases, modules to save), with the common config fields and then the kind's own. */
function setPerModuleExporter(
  core: AdapterCore,
  extras: ReturnType<typeof addExtras>,
  targeted: readonly string[],
  modulesToSave: readonly string[],
  peftType: string,
  tensorName: (module: string) => string,
  fields: Record<string, unknown>,
): void {
  core.exporter = async (): Promise<PeftExport> => {
    const tensors = new Map<string, HostTensor>();
    for (const m of targeted) tensors.set(tensorName(m), await host(core.tensor(tensorName(m))));
    for (const [k, v] of await extrasExport(core, extras, new Set(targeted))) tensors.set(k, v);
    const config: Record<string, unknown> = {
      ...commonConfig(core.model, peftType, [...targeted], exportedModulesToSave(core.model, modulesToSave, extras.saved), core.spec.layers),
      ...fields,
    };
    return { config, tensors: prefixed(tensors) };
  };
}

export function buildIa3(core: AdapterCore, setup: Ia3Setup): void {
  const targeted = setup.modules.map((m) => m.info.module);
  const extras = addExtras(core, setup, targeted);
  addIa3(core, setup.modules);
  core.exporter = async (): Promise<PeftExport> => {
    const tensors = new Map<string, HostTensor>();
    for (const m of setup.modules) tensors.set(ia3Name(m.info.module), await host(core.tensor(ia3Name(m.info.module))));
    for (const [k, v] of await extrasExport(core, extras, new Set(targeted))) tensors.set(k, v);
    const config: Record<string, unknown> = {
      auto_mapping: autoMapping(core.model),
      base_model_name_or_path: null,
      exclude_modules: null,
      fan_in_fan_out: setup.modules.some((m) => m.info.fanInFanOut),
      feedforward_modules: setup.modules.filter((m) => m.feedForward).map((m) => m.info.module).sort(),
      inference_mode: true,
      init_ia3_weights: true,
      modules_to_save: exportedModulesToSave(core.model, setup.modulesToSave, extras.saved),
      peft_type: 'IA3',
      peft_version: PEFT_VERSION,
      revision: null,
      target_modules: [...targeted].sort(),
      task_type: taskTypeOf(core.model),
    };
    return { config, tensors: prefixed(tensors) };
  };
}

/**
 * LN-tuning as PEFT's LN_TUNING: a copy of each targeted norm module, saved as
 * `<module>.ln_tuning_layers.<weight|bias>` (the whole module, trained or not), and the modules to
 * save (a classifier's head among them, which PEFT loads from the file).
 */
export function setLnTuningExporter(core: AdapterCore, normParams: readonly string[], modulesToSave: readonly string[]): void {
  const model = core.model;
  const modules = [...new Set(normParams.map((n) => n.slice(0, n.lastIndexOf('.'))))].sort();
  const value = (n: string) => core.trainable.get(n) ?? model.params.get(n)!;
  core.exporter = async (): Promise<PeftExport> => {
    const tensors = new Map<string, HostTensor>();
    for (const m of modules) {
      const own = model.paramInfo().filter((p) => p.name.startsWith(`${m}.`) && !p.name.slice(m.length + 1).includes('.'));
      for (const p of own) tensors.set(`${m}.ln_tuning_layers.${p.name.slice(m.length + 1)}`, await host(value(p.name)));
    }
    for (const n of moduleToSaveParams(model, modulesToSave)) tensors.set(n, await host(value(n)));
    const config: Record<string, unknown> = {
      auto_mapping: autoMapping(model),
      base_model_name_or_path: null,
      exclude_modules: null,
      inference_mode: true,
      modules_to_save: modulesToSave.length ? [...modulesToSave] : null,
      peft_type: 'LN_TUNING',
      peft_version: PEFT_VERSION,
      revision: null,
      target_modules: modules,
      task_type: taskTypeOf(model),
    };
    return { config, tensors: prefixed(tensors) };
  };
}
