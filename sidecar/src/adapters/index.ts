/**
 * The adapter zoo: `createAdapter` builds any AdapterKind on a loaded model. Methods PEFT also has
 * (LoRA, DoRA, IA3) follow PEFT 0.21 exactly (names, scaling, init, targets); the others follow
 * ../shared/methods.md. Nothing here changes the Model's tensors: see AdapterInstance.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AdapterSpec, LoraInit } from '../../../src/protocol';
import { AdapterOptionError } from '../errors';
import type { LinearModuleInfo } from '../models/architecture';
import type { Model } from '../models/model';
import { addBottleneck } from './bottleneck';
import { AdapterCore, replacementPart } from './core';
import { ADALORA_DEFAULTS, adaloraInit, type AdaloraSchedule } from './adalora';
import { adapterModulesToSave, buildAdalora, buildHra, buildIa3, buildLora, buildLycoris, buildOft, buildVera, moduleToSaveParams, setLnTuningExporter } from './family';
import { OFT_NEUMANN_TERMS, oftLayout } from './oft';
import type { Ia3Module } from './ia3';
import { loraEmbeddingInit, type LoraEmbeddingModule, type LoraModule } from './lora';
import { addLoldu, addSvfit } from './lowrank';
import { lohaFactors, lokrFactors, lokrLayout, type DeltaModule } from './lycoris';
import { veraProjections } from './vera';
import { addSparse } from './sparse';
import { addSsf } from './ssf';
import {
  defaultTargets,
  hookableLinears,
  IA3_DEFAULT_FEEDFORWARD,
  insideModuleToSave,
  layerOfPath,
  LN_TUNING_DEFAULT_TARGETS,
  matchesFeedforward,
  matchesTarget,
  patternKey,
  pathNames,
  selectEmbeddings,
  selectLinears,
  tapPoints,
  type EmbeddingModuleInfo,
  type TargetSelection,
} from './targets';
import type { AdapterInstance, LoraInitProvider } from './types';
import { tfSeed } from '../train/rng';

export type { AdapterInstance, LoraInitProvider } from './types';

/** Inits that replace the base weight by a residual and come from the inits module. */
export const DATA_AWARE_INITS: readonly LoraInit[] = ['pissa', 'olora', 'corda-ipm', 'corda-kpm', 'lora-ga'];

/** PEFT's defaults (LoraConfig: r = 8, lora_alpha = 8; LoHaConfig and LoKrConfig: r = 8, alpha = 8; VeraConfig: r = 256). */
export const LORA_DEFAULTS = { r: 8, alpha: 8, dropout: 0 } as const;
export const VERA_DEFAULT_R = 256;

export interface CreateOptions {
  seed: number;
  inits?: LoraInitProvider;
}

/** The rank and α of a module under PEFT's rank_pattern / alpha_pattern. */
/**
 * The rank and α of a module under PEFT's rank_pattern / alpha_pattern, matched on each of its
 * names (pathNames: a pattern may use the run-time name of a renamed module).
 */
export function rankAndAlpha(module: string | readonly string[], r: number, alpha: number, rankPattern: Record<string, number> = {}, alphaPattern: Record<string, number> = {}): { r: number; alpha: number } {
  const names = typeof module === 'string' ? [module] : module;
  const key = (patterns: Record<string, number>) => names.map((n) => patternKey(Object.keys(patterns), n)).find((k) => k !== undefined);
  const rk = key(rankPattern);
  const ak = key(alphaPattern);
  return { r: rk !== undefined ? rankPattern[rk]! : r, alpha: ak !== undefined ? alphaPattern[ak]! : alpha };
}

export const loraScale = (r: number, alpha: number, rslora: boolean) => (rslora ? alpha / Math.sqrt(r) : alpha / r);

function positiveInt(v: number, what: string): number {
  if (!Number.isInteger(v) || v <= 0) throw new AdapterOptionError(what.startsWith('rank of') ? 'rankPattern' : what, `${what} must be a positive integer, got ${v}`);
  return v;
}


/**
 * The spec with the classifier head modules its base checkpoint lacked (Model.freshHeads) added to
 * modules_to_save where nothing there covers them already: a newly initialised head must train, and
 * the exported adapter must carry it (PEFT would start another random one).
 */
export function withFreshHeads(model: Model, spec: AdapterSpec): AdapterSpec {
  if (model.freshHeads.length === 0 || spec.kind === 'full') return spec;
  const own = spec.modulesToSave ?? [];
  const covered = PEFT_HEAD_RULE.has(spec.kind) ? adapterModulesToSave(model, own) : own;
  const modules = [...new Set(model.freshHeads.map((p) => p.replace(/\.(weight|bias)$/, '')))].filter((m) => !insideModuleToSave(covered, m));
  return modules.length ? { ...spec, modulesToSave: [...own, ...modules] } : spec;
}

/**
 * A run spec's own modulesToSave must each name parameters of the model: a name that matches none
 * would train nothing, and a tied head (GPT-2's lm_head, which is wte's table) has none of its own.
 */
export function checkModulesToSave(model: Model, names: readonly string[] | undefined): void {
  for (const name of names ?? []) {
    if (moduleToSaveParams(model, [name]).length) continue;
    const tied = Object.entries(model.aliases).find(([alias]) => alias.replace(/\.weight$/, '').endsWith(name));
    throw new AdapterOptionError(
      'modulesToSave',
      tied
        ? `modulesToSave names ${name}, which is tied to ${tied[1].replace(/\.weight$/, '')} (one table for both): name that module to train the two together`
        : `modulesToSave names ${name}, which matches no module of this ${model.config.modelType} model`,
    );
  }
}

export async function createAdapter(model: Model, requested: AdapterSpec, opts: CreateOptions): Promise<AdapterInstance> {
  const spec = withFreshHeads(model, requested);
  const core = new AdapterCore(model, spec, opts.seed);
  try {
    switch (spec.kind) {
      case 'lora':
      case 'dora':
        await createLora(core, opts.inits);
        break;
      case 'adalora':
        createAdalora(core);
        break;
      case 'loha':
      case 'lokr':
        createLycoris(core, spec.kind);
        break;
      case 'vera':
        createVera(core);
        break;
      case 'oft':
        createOft(core);
        break;
      case 'hra':
        createHra(core);
        break;
      case 'ia3':
        createIa3(core);
        break;
      case 'ssf':
        createSsf(core);
        break;
      case 'bottleneck':
        createBottleneck(core);
        break;
      case 'bitfit':
      case 'ln-tuning':
      case 'full':
        createReplacing(core);
        break;
      case 'svfit':
        await addSvfit(core, linearTargets(core), positiveInt(spec.r ?? LORA_DEFAULTS.r, 'r'));
        addModulesToSave(core);
        break;
      case 'loldu':
        await addLoldu(core, linearTargets(core), spec.r === undefined ? undefined : positiveInt(spec.r, 'r'));
        addModulesToSave(core);
        break;
      case 'sparse':
        if (!spec.mask) throw new Error('a sparse adapter needs `mask`, a safetensors file of 0/1 masks named like the base tensors');
        await addSparse(core, spec.mask);
        addModulesToSave(core);
        break;
      default: {
        const never: never = spec.kind;
        throw new Error(`unknown adapter kind ${String(never)}`);
      }
    }
  } catch (e) {
    core.dispose();
    throw e;
  }
  return core;
}

/** The spec's target selection (its targets or the kind's defaults); LoRA may also name the token embedding. */
function targetSelection(core: AdapterCore, extraModulesToSave: readonly string[]): TargetSelection {
  const spec = core.spec;
  return {
    targets: spec.targets ?? defaultTargets(spec.kind, core.model.config.modelType),
    modulesToSave: extraModulesToSave,
    embeddings: spec.kind === 'lora',
    ...(spec.layers ? { layers: spec.layers } : {}),
  };
}

function linearTargets(core: AdapterCore, extraModulesToSave: readonly string[] = []): LinearModuleInfo[] {
  return selectLinears(core.model, targetSelection(core, extraModulesToSave));
}

/** The kinds PEFT itself exports, whose modules_to_save gain a classifier's head as PEFT's SEQ_CLS rule adds it. */
const PEFT_HEAD_RULE: ReadonlySet<string> = new Set(['lora', 'dora', 'adalora', 'oft', 'hra', 'loha', 'lokr', 'vera', 'ia3', 'ln-tuning']);

/** modules_to_save (the spec's; for LN-tuning, with PEFT's head rule, as it exports them): full trainable copies of those modules' parameters. */
function addModulesToSave(core: AdapterCore, skip: ReadonlySet<string> = new Set()): void {
  const wanted = core.spec.kind === 'ln-tuning' ? adapterModulesToSave(core.model, core.spec.modulesToSave ?? []) : (core.spec.modulesToSave ?? []);
  const names = moduleToSaveParams(core.model, wanted).filter((n) => !skip.has(n) && !core.trainable.has(n));
  for (const n of names) core.addTrainable(n, tf.clone(core.model.params.get(n)!), layerOfPath(core.model, n), { replacesBase: true });
  if (names.length) core.mergeParts.push(replacementPart(core, names));
}

/** LoRA / DoRA modules with PEFT's init (or a data-aware one from the provider), synchronously for the random inits. */
export function loraModules(
  spec: AdapterSpec,
  seed: number,
  targets: LinearModuleInfo[],
  inits?: Map<string, { A: Float32Array; B: Float32Array; residual: Float32Array }>,
  model?: Model,
): LoraModule[] {
  const r0 = positiveInt(spec.r ?? LORA_DEFAULTS.r, 'r');
  const alpha0 = spec.alpha ?? LORA_DEFAULTS.alpha;
  const init = spec.init ?? 'default';
  const release = (m: LoraModule) => tf.dispose([m.A, m.B, ...(m.residual ? [m.residual] : [])]);
  return buildAll(targets, (info, i) => {
    const { r, alpha } = rankAndAlpha(model ? pathNames(model, info.module) : info.module, r0, alpha0, spec.rankPattern, spec.alphaPattern);
    positiveInt(r, `rank of ${info.module}`);
    const scale = loraScale(r, alpha, spec.rslora ?? false);
    const [outF, inF] = [info.outFeatures, info.inFeatures];
    const s = seed * 100_003 + 2 * i;
    if (init === 'default' || init === 'gaussian') {
      // PEFT: A kaiming_uniform(a=√5) = U(−1/√in, 1/√in), or N(0, 1/r) for "gaussian"; B = 0.
      const A = init === 'default' ? tf.randomUniform([r, inF], -1 / Math.sqrt(inF), 1 / Math.sqrt(inF), 'float32', s) : tf.randomNormal([r, inF], 0, 1 / r, 'float32', tfSeed(s));
      return { info, r, alpha, scale, A: A as tf.Tensor2D, B: tf.zeros([outF, r]) as tf.Tensor2D };
    }
    const got = inits?.get(info.module);
    if (!got) throw new Error(`the ${init} init returned nothing for ${info.module}`);
    const shape = info.fanInFanOut ? [inF, outF] : [outF, inF];
    if (got.A.length !== r * inF || got.B.length !== outF * r || got.residual.length !== outF * inF)
      throw new Error(`the ${init} init returned tensors of the wrong size for ${info.module} (r=${r}, in=${inF}, out=${outF})`);
    return {
      info,
      r,
      alpha,
      scale,
      A: tf.tensor2d(got.A, [r, inF]),
      B: tf.tensor2d(got.B, [outF, r]),
      residual: tf.tensor2d(got.residual, shape as [number, number]),
      init: { A: Float32Array.from(got.A), B: Float32Array.from(got.B) },
    };
  }, release);
}

async function createLora(core: AdapterCore, provider?: LoraInitProvider): Promise<void> {
  const { model, spec } = core;
  const modulesToSave = adapterModulesToSave(model, spec.modulesToSave ?? []);
  const targets = linearTargets(core, modulesToSave);
  const embeddings = selectEmbeddings(model, targetSelection(core, modulesToSave));
  const init = spec.init ?? 'default';
  // A data-aware init acts on the linear modules; a LoRA on the embedding takes PEFT's default init, as in PEFT.
  let inits: Map<string, { A: Float32Array; B: Float32Array; residual: Float32Array }> | undefined;
  if (DATA_AWARE_INITS.includes(init)) {
    if (!provider) throw new Error(`LoRA init "${init}" needs the data-aware init module: pass opts.inits (a LoraInitProvider) to createAdapter`);
    const r0 = spec.r ?? LORA_DEFAULTS.r;
    const alpha0 = spec.alpha ?? LORA_DEFAULTS.alpha;
    const ra = (m: string) => rankAndAlpha(pathNames(model, m), r0, alpha0, spec.rankPattern, spec.alphaPattern);
    inits = await provider(model, targets, (m) => ra(m).r, (m) => loraScale(ra(m).r, ra(m).alpha, spec.rslora ?? false));
  }
  const embeddingModules = loraEmbeddingModules(spec, core.seed, embeddings);
  let modules: LoraModule[];
  try {
    modules = loraModules(spec, core.seed, targets, inits, model);
  } catch (e) {
    tf.dispose(embeddingModules.flatMap((m) => [m.A, m.B]));
    throw e;
  }
  buildLora(core, {
    dora: spec.kind === 'dora',
    rslora: spec.rslora ?? false,
    dropout: spec.dropout ?? LORA_DEFAULTS.dropout,
    r: spec.r ?? LORA_DEFAULTS.r,
    alpha: spec.alpha ?? LORA_DEFAULTS.alpha,
    rankPattern: { ...(spec.rankPattern ?? {}) },
    alphaPattern: { ...(spec.alphaPattern ?? {}) },
    bias: spec.bias ?? 'none',
    loraBias: false,
    initLabel: init === 'gaussian' ? 'gaussian' : true,
    modulesToSave,
    modules,
    embeddings: embeddingModules,
  });
}

/** LoRA on token embeddings with PEFT's init, rank and α per module under rank_pattern / alpha_pattern. */
function loraEmbeddingModules(spec: AdapterSpec, seed: number, infos: EmbeddingModuleInfo[]): LoraEmbeddingModule[] {
  return buildAll(infos, (info, i) => {
    const { r, alpha } = rankAndAlpha(info.module, spec.r ?? LORA_DEFAULTS.r, spec.alpha ?? LORA_DEFAULTS.alpha, spec.rankPattern, spec.alphaPattern);
    positiveInt(r, `rank of ${info.module}`);
    return { info, r, alpha, scale: loraScale(r, alpha, spec.rslora ?? false), ...loraEmbeddingInit(info, r, seed * 100_003 + 50_000 + i) };
  }, (m) => tf.dispose([m.A, m.B]));
}

/** LoHa / LoKr modules with PEFT's init, rank and α per module under rank_pattern / alpha_pattern. */
export function lycorisModules(spec: AdapterSpec, seed: number, targets: LinearModuleInfo[], model?: Model): DeltaModule[] {
  const r0 = positiveInt(spec.r ?? LORA_DEFAULTS.r, 'r');
  const alpha0 = spec.alpha ?? LORA_DEFAULTS.alpha;
  return buildAll(targets, (info, i) => {
    const { r, alpha } = rankAndAlpha(model ? pathNames(model, info.module) : info.module, r0, alpha0, spec.rankPattern, spec.alphaPattern);
    positiveInt(r, `rank of ${info.module}`);
    const s = seed * 100_003 + 4 * i;
    const factors = spec.kind === 'loha' ? lohaFactors(info, r, s) : lokrFactors(lokrLayout(info, r, spec.decomposeBoth ?? false, decomposeFactorOf(spec)), r, s);
    return { info, r, alpha, scale: alpha / r, factors };
  }, (m) => tf.dispose([...m.factors.values()]));
}

/** `make` over `items`; when one throws, the tensors of those already made are disposed (`release`). */
function buildAll<I, M>(items: readonly I[], make: (item: I, index: number) => M, release: (made: M) => void): M[] {
  const out: M[] = [];
  try {
    items.forEach((item, i) => out.push(make(item, i)));
  } catch (e) {
    out.forEach(release);
    throw e;
  }
  return out;
}

/** LoKr's decompose_factor: −1 (near the square root) or a positive integer. */
function decomposeFactorOf(spec: AdapterSpec): number {
  const f = spec.decomposeFactor ?? -1;
  if (f !== -1 && (!Number.isInteger(f) || f <= 0)) throw new AdapterOptionError('decomposeFactor', `decomposeFactor must be -1 or a positive integer, got ${f}`);
  return f;
}

function createLycoris(core: AdapterCore, kind: 'loha' | 'lokr'): void {
  const { model, spec } = core;
  const modulesToSave = adapterModulesToSave(model, spec.modulesToSave ?? []);
  const modules = lycorisModules(spec, core.seed, linearTargets(core, modulesToSave), model);
  buildLycoris(core, {
    kind,
    r: spec.r ?? LORA_DEFAULTS.r,
    alpha: spec.alpha ?? LORA_DEFAULTS.alpha,
    rankPattern: { ...(spec.rankPattern ?? {}) },
    alphaPattern: { ...(spec.alphaPattern ?? {}) },
    decomposeBoth: spec.decomposeBoth ?? false,
    decomposeFactor: kind === 'lokr' ? decomposeFactorOf(spec) : -1,
    bias: 'none',
    modulesToSave,
    modules,
  });
}

/** The spec's AdaLoRA schedule over PEFT's defaults (its r is init_r). */
export function adaloraSchedule(spec: AdapterSpec): AdaloraSchedule {
  const o = spec.adalora ?? {};
  const initR = positiveInt(spec.r ?? ADALORA_DEFAULTS.initR, 'r');
  return {
    initR,
    targetR: positiveInt(o.targetR ?? Math.min(ADALORA_DEFAULTS.targetR, initR), 'adalora.targetR'),
    tinit: o.tinit ?? ADALORA_DEFAULTS.tinit,
    tfinal: o.tfinal ?? ADALORA_DEFAULTS.tfinal,
    deltaT: positiveInt(o.deltaT ?? ADALORA_DEFAULTS.deltaT, 'adalora.deltaT'),
    beta1: o.beta1 ?? ADALORA_DEFAULTS.beta1,
    beta2: o.beta2 ?? ADALORA_DEFAULTS.beta2,
    orthRegWeight: o.orthRegWeight ?? ADALORA_DEFAULTS.orthRegWeight,
  };
}

function createAdalora(core: AdapterCore): void {
  const { model, spec } = core;
  const modulesToSave = adapterModulesToSave(model, spec.modulesToSave ?? []);
  const schedule = adaloraSchedule(spec);
  const modules = buildAll(linearTargets(core, modulesToSave), (info, i) => adaloraInit(info, schedule.initR, core.seed * 100_003 + 2 * i), (m) => tf.dispose([m.A, m.E, m.B]));
  buildAdalora(core, { schedule, alpha: spec.alpha ?? LORA_DEFAULTS.alpha, dropout: spec.dropout ?? 0, bias: spec.bias ?? 'none', modulesToSave, modules, rankPattern: null });
}

/** PEFT's OFTConfig default block size. */
export const OFT_DEFAULT_BLOCK_SIZE = 32;

function createOft(core: AdapterCore): void {
  const { model, spec } = core;
  const modulesToSave = adapterModulesToSave(model, spec.modulesToSave ?? []);
  const blockSize = positiveInt(spec.blockSize ?? OFT_DEFAULT_BLOCK_SIZE, 'blockSize');
  const modules = linearTargets(core, modulesToSave).map((info) => ({ info, terms: OFT_NEUMANN_TERMS, ...oftLayout(info.inFeatures, 0, blockSize) }));
  buildOft(core, { blockSize, r: 0, terms: OFT_NEUMANN_TERMS, bias: 'none', modulesToSave, modules });
}

function createHra(core: AdapterCore): void {
  const { model, spec } = core;
  const modulesToSave = adapterModulesToSave(model, spec.modulesToSave ?? []);
  const r = positiveInt(spec.r ?? LORA_DEFAULTS.r, 'r');
  const gs = spec.gramSchmidt ?? false;
  const modules = linearTargets(core, modulesToSave).map((info) => ({ info, r, gs }));
  buildHra(core, { r, gs, bias: 'none', modulesToSave, modules, seed: core.seed * 100_003 + 11 });
}

function createVera(core: AdapterCore): void {
  const { model, spec } = core;
  const modulesToSave = adapterModulesToSave(model, spec.modulesToSave ?? []);
  const targets = linearTargets(core, modulesToSave);
  const r = positiveInt(spec.r ?? VERA_DEFAULT_R, 'r');
  buildVera(core, {
    r,
    dropout: spec.dropout ?? 0,
    bias: spec.bias ?? 'none',
    projections: veraProjections(targets, r, core.seed * 100_003 + 7),
    seed: core.seed,
    modulesToSave,
    modules: targets.map((info) => ({ info })),
  });
}

function createIa3(core: AdapterCore): void {
  const { model, spec } = core;
  const modulesToSave = adapterModulesToSave(model, spec.modulesToSave ?? []);
  const targets = linearTargets(core, modulesToSave);
  const ff = IA3_DEFAULT_FEEDFORWARD[model.config.modelType];
  const modules: Ia3Module[] = targets.map((info) => ({ info, feedForward: matchesFeedforward(ff, info.module) }));
  buildIa3(core, { bias: 'none', modulesToSave, modules });
}

function createSsf(core: AdapterCore): void {
  const { model, spec } = core;
  const taps = tapPoints(model);
  const foldable = (t: (typeof taps)[number]) => t.kind === 'sublayer' || t.normBias !== undefined || (t.consumers?.length ?? 0) > 0;
  let linears: LinearModuleInfo[];
  let chosen: typeof taps;
  if (spec.targets) {
    const t = spec.targets;
    linears = hookableLinears(model).filter((m) => matchesTarget(t, m.module));
    chosen = taps.filter((p) => matchesTarget(t, p.point));
    if (linears.length + chosen.length === 0) throw new Error(`SSF targets [${t.join(', ')}] match no linear module or tap point of this ${model.config.modelType} model`);
  } else {
    // Default: after every linear module and every norm of the transformer (as the SSF paper inserts them).
    linears = model.arch.linearModules(model.config);
    chosen = taps.filter((p) => p.kind === 'norm' && foldable(p));
  }
  addSsf(core, { linears, taps: chosen });
  addModulesToSave(core);
}

function createBottleneck(core: AdapterCore): void {
  const { model, spec } = core;
  let taps = tapPoints(model).filter((p) => p.kind === 'sublayer');
  if (spec.targets) {
    const t = spec.targets;
    taps = taps.filter((p) => matchesTarget(t, p.point));
    if (taps.length === 0) throw new Error(`bottleneck targets [${t.join(', ')}] match no attention/MLP sub-layer output of this ${model.config.modelType} model`);
  }
  const width = positiveInt(spec.bottleneck ?? Math.max(1, Math.round(model.config.hiddenSize / 16)), 'bottleneck');
  addBottleneck(core, taps, width);
  addModulesToSave(core);
}

/** BitFit (biases), LN-tuning (norm parameters), full fine-tuning (everything): trainable copies under the base names. */
function createReplacing(core: AdapterCore): void {
  const { model, spec } = core;
  const info = model.paramInfo();
  let names: string[];
  if (spec.kind === 'full') names = info.map((p) => p.name);
  else if (spec.kind === 'bitfit') names = info.filter((p) => p.name.endsWith('.bias')).map((p) => p.name);
  else names = info.filter((p) => p.type === 'norm').map((p) => p.name);
  const targets = spec.targets ?? (spec.kind === 'ln-tuning' ? LN_TUNING_DEFAULT_TARGETS[model.config.modelType] : undefined);
  if (targets && spec.kind !== 'full') names = names.filter((n) => matchesTarget(targets, n.slice(0, n.lastIndexOf('.'))));
  if (names.length === 0) throw new Error(`${spec.kind}: this ${model.config.modelType} model has no ${spec.kind === 'bitfit' ? 'bias' : 'norm'} parameters${spec.targets ? ' matching the targets' : ''} to train`);
  for (const n of names) core.addTrainable(n, tf.clone(model.params.get(n)!), layerOfPath(model, n), { replacesBase: true });
  core.mergeParts.push(replacementPart(core, names));
  addModulesToSave(core, new Set(names));
  if (spec.kind === 'ln-tuning') setLnTuningExporter(core, names, adapterModulesToSave(model, spec.modulesToSave ?? []));
}
