/**
 * Hugging Face PEFT's adapter folders: `adapter_config.json` + `adapter_model.safetensors`.
 *
 * Loading follows `PeftModel.from_pretrained` (PEFT 0.21): LORA (incl. DoRA, rsLoRA, rank/alpha
 * patterns, lora_bias, bias, modules_to_save, exclude_modules), LOHA, LOKR, VERA (with its
 * projections in the file), IA3 and LN_TUNING. Like PEFT, an adapter whose
 * config says `init_lora_weights: "pissa"` / `"olora"` re-runs that init on the given (original)
 * base, so the base weight becomes the residual before the saved A and B apply; `"lora_ga"` uses the
 * given base as is (PEFT cannot recompute it either: pass `residuals`, or load on the residual model);
 * `"corda"` needs `residuals`. Saving writes what `save_pretrained` writes; an adapter whose init
 * replaced the base weight is converted to a plain LoRA on the original base first (methods.md).
 */
import * as tf from '@tensorflow/tfjs-core';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { AdapterKind, AdapterSpec, LoraInit } from '../../../src/protocol';
import { InputError } from '../errors';
import { parseJsonText } from '../io/json';
import { readSafetensors, toFloat32, type HostTensor } from '../io/safetensors';
import { readTorchStateDict } from '../io/torch-checkpoint';
import type { LinearModuleInfo } from '../models/architecture';
import type { Model } from '../models/model';
import type { ModelConfig } from '../models/config';
import { AdapterCore } from './core';
import { adaloraNames, type AdaloraModule, type AdaloraSchedule } from './adalora';
import { buildAdalora, buildHra, buildIa3, buildLora, buildLycoris, buildOft, buildVera, moduleToSaveParams, modulesToSaveFor, PEFT_PREFIX, taskTypeOf, tiedHeadsOf, type LoraBias } from './family';
import { ia3Name, type Ia3Module } from './ia3';
import { createAdapter, loraScale, rankAndAlpha, VERA_DEFAULT_R } from './index';
import { oloraInit, pissaInit } from './inits/methods';
import { Matrix, outInMatrix, thinSvd, toFloat32 as matrixToFloat32 } from './inits/linalg';
import { loraEmbeddingNames, loraNames, type LoraEmbeddingModule, type LoraModule } from './lora';
import { factorName, lohaShapes, lokrLayout, lokrShapes, type DeltaModule } from './lycoris';
import { hraName, type HraModule } from './hra';
import { OFT_NEUMANN_TERMS, oftLayout, oftName, type OftModule } from './oft';
import { VERA_A, VERA_B, veraNames, veraProjectionShapes, type VeraModule } from './vera';
import { IA3_DEFAULT_FEEDFORWARD, IA3_DEFAULT_TARGETS, LORA_DEFAULT_TARGETS, adaloraDefaultTargets, hookableLinears, matchesFeedforward, matchesTarget, pathNames, selectEmbeddings, selectLinears, veraDefaultTargets, type TargetSpec } from './targets';
import type { AdapterInstance } from './types';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_WEIGHTS_BIN, writePeftLora } from './peft-write';
import { adapterModelCard } from './model-card';

export { ADAPTER_CONFIG, ADAPTER_WEIGHTS, checkAdapterTarget, writePeftLora } from './peft-write';

/** Residual base weights beside an unconverted data-aware adapter (written by `adapter-init`). */
export const RESIDUAL_FILE = 'residual_model.safetensors';

export interface LoadPeftOptions {
  /**
   * Residual base weights, keyed by base weight name (`<module>.weight`, stored layout), that replace
   * the model's for an adapter trained on a base a data-aware init changed (PiSSA, LoRA-GA, CorDA...).
   * With them the adapter applies to the original base model; they are remembered for export.
   * Default: `residual_model.safetensors` in the adapter folder, when there is one.
   */
  residuals?: ReadonlyMap<string, HostTensor | tf.Tensor>;
}

/** Reads adapter_config.json fields, each error naming the file and the key. */
class ConfigFields {
  constructor(
    readonly file: string,
    private readonly raw: Record<string, unknown>,
  ) {}
  fail(key: string, problem: string): never {
    throw new InputError(this.file, key, problem);
  }
  get(key: string): unknown {
    return this.raw[key];
  }
  isSet(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }
  int(key: string, fallback: number): number {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) this.fail(key, `expected a positive integer, got ${JSON.stringify(v)}`);
    return v;
  }
  num(key: string, fallback: number, check?: (v: number) => string | undefined): number {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `expected a number, got ${JSON.stringify(v)}`);
    const problem = check?.(v);
    if (problem) this.fail(key, problem);
    return v;
  }
  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  /** A module list or a regex (`target_modules` style); undefined when null/absent. */
  targets(key: string): TargetSpec | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string') {
      if (v !== 'all-linear') {
        try {
          new RegExp(v, 'u');
        } catch (e) {
          this.fail(key, `not a valid regular expression: ${(e as Error).message}`);
        }
      }
      return v;
    }
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
    return this.fail(key, `expected a list of module names or a regular expression, got ${JSON.stringify(v)}`);
  }
  stringList(key: string): string[] | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
    return this.fail(key, `expected a list of module names, got ${JSON.stringify(v)}`);
  }
  numberMap(key: string, integers: boolean): Record<string, number> {
    const v = this.raw[key];
    if (v === undefined || v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(key, `expected an object of pattern → number, got ${JSON.stringify(v)}`);
    const out: Record<string, number> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (typeof x !== 'number' || !Number.isFinite(x) || (integers && (!Number.isInteger(x) || x < 1)))
        this.fail(`${key}.${k}`, `expected ${integers ? 'a positive integer' : 'a number'}, got ${JSON.stringify(x)}`);
      try {
        new RegExp(k, 'u');
      } catch (e) {
        this.fail(`${key}.${k}`, `the pattern is not a valid regular expression: ${(e as Error).message}`);
      }
      out[k] = x as number;
    }
    return out;
  }
  /** PEFT's bias: "none", "all", or "<method>_only" (PEFT reads any *_only as the adapted modules' biases). */
  bias(method: string): LoraBias {
    const v = this.raw.bias ?? 'none';
    const only = typeof v === 'string' && v.endsWith('_only');
    if (v !== 'none' && v !== 'all' && !only) this.fail('bias', `expected "none", "all" or "${method}_only", got ${JSON.stringify(v)}`);
    return only ? 'lora_only' : (v as LoraBias);
  }
  /** layers_to_transform (an index or a list) and layers_pattern (a name or a list), as PEFT reads them. */
  layers(): { layers?: number[]; layersPattern?: string[] } {
    const raw = this.raw.layers_to_transform;
    if (raw === undefined || raw === null || (Array.isArray(raw) && raw.length === 0)) return {};
    const list = typeof raw === 'number' ? [raw] : raw;
    if (!Array.isArray(list) || !list.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0))
      this.fail('layers_to_transform', `expected a block index or a list of them, got ${JSON.stringify(raw)}`);
    const pat = this.raw.layers_pattern;
    const patterns = pat === undefined || pat === null ? [] : typeof pat === 'string' ? [pat] : pat;
    if (!Array.isArray(patterns) || !patterns.every((x) => typeof x === 'string')) this.fail('layers_pattern', `expected a name or a list of names, got ${JSON.stringify(pat)}`);
    return { layers: list as number[], ...(patterns.length && (patterns as string[]).some((x) => x) ? { layersPattern: patterns as string[] } : {}) };
  }
  /** Features PEFT Lab does not implement must keep their "off" value. */
  unsupported(key: string, what: string, isOff: (v: unknown) => boolean = (v) => v === undefined || v === null): void {
    if (!isOff(this.raw[key])) this.fail(key, `${what} is not supported (got ${JSON.stringify(this.raw[key])})`);
  }
}

const emptyOrNull = (v: unknown) => v === undefined || v === null || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);

async function readConfigFile(file: string): Promise<ConfigFields> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    throw new InputError(file, '', `cannot read the adapter config (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const raw = parseJsonText(text, file);
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError(file, '', 'expected a JSON object');
  return new ConfigFields(file, raw as Record<string, unknown>);
}

/** Keys of tensors PEFT keeps on the tuner rather than a module (VeRA's shared projections), by internal name. */
const TUNER_KEYS: Record<string, string> = { [`base_model.${VERA_A}`]: VERA_A, [`base_model.${VERA_B}`]: VERA_B };

/**
 * File keys without PEFT's prefix and wrappers (`base_layer.` and `modules_to_save.` segments
 * dropped), under the checkpoint's names where the model's run-time ones differ (ViT's).
 */
function internalKey(key: string, checkpointName: (path: string) => string = (p) => p): string | undefined {
  if (TUNER_KEYS[key]) return TUNER_KEYS[key];
  if (!key.startsWith(PEFT_PREFIX)) return undefined;
  return checkpointName(
    key
      .slice(PEFT_PREFIX.length)
      .replace(/\.base_layer\./g, '.')
      .replace(/\.modules_to_save(\.default)?\./g, '.'),
  );
}

/** Tensors of adapter_model.safetensors under internal names, each checked and consumed once. */
class WeightFile {
  private readonly byName = new Map<string, { key: string; t: HostTensor }>();
  private readonly used = new Set<string>();
  constructor(
    readonly file: string,
    raw: Map<string, HostTensor>,
    checkpointName?: (path: string) => string,
  ) {
    for (const [key, t] of raw) {
      const name = internalKey(key, checkpointName);
      if (name === undefined) throw new InputError(file, key, `tensor name does not start with "${PEFT_PREFIX}"`);
      // With bias="all", PEFT also saves the biases inside a modules_to_save wrapper: the frozen
      // original (the base model's own) and the trained copy again under `modules_to_save.`.
      if (key.includes('.original_module.')) continue;
      const prev = this.byName.get(name);
      if (prev && sameHostTensor(prev.t, t)) continue;
      if (prev) throw new InputError(file, key, `duplicates tensor ${prev.key} with different values`);
      this.byName.set(name, { key, t });
    }
  }
  /** The tensor, shape-checked; throws naming the expected key when missing, unless optional. */
  take(name: string, shape: readonly number[], optional = false, expectedKey = PEFT_PREFIX + name): tf.Tensor | undefined {
    const e = this.byName.get(name);
    if (!e) {
      if (optional) return undefined;
      throw new InputError(this.file, expectedKey, 'tensor missing from the adapter file');
    }
    if (e.t.shape.length !== shape.length || e.t.shape.some((s, i) => s !== shape[i]))
      throw new InputError(this.file, e.key, `shape [${e.t.shape.join(', ')}] does not match the model and adapter_config.json, which imply [${shape.join(', ')}]`);
    this.used.add(name);
    return tf.tensor(toFloat32(e.t), [...shape], 'float32');
  }
  /** The stored dtype of a tensor (F32, BF16, ...), if the file has it. */
  dtypeOf(name: string): string | undefined {
    return this.byName.get(name)?.t.dtype;
  }
  /** Internal names with their file keys. */
  entries(): [string, string][] {
    return [...this.byName].map(([name, e]) => [name, e.key]);
  }
  /** Fails on any tensor no targeted module or setting accounts for. */
  checkAllUsed(): void {
    for (const [name, e] of this.byName) {
      if (!this.used.has(name)) throw new InputError(this.file, e.key, 'tensor does not belong to any module targeted by adapter_config.json');
    }
  }
}

/** The adapter tensors of a module in PEFT's files, by suffix (to find the module a key belongs to). */
const ADAPTER_KEY = /\.(hra_u|oft_R\.weight|lora_[AB](\.weight)?|lora_E|lora_B\.bias|lora_magnitude_vector|lora_embedding_[AB]|hada_(w[12]_[ab]|t[12])|lokr_(w[12](_[ab])?|t2)|vera_lambda_[bd]|ia3_l)$/;

/**
 * Adapter tensors of a module PEFT can wrap but PEFT Lab cannot (an `lm_head`, a convolution): named
 * as such, rather than reported as a stray tensor or a shape that does not fit.
 */
function checkAdaptable(model: Model, weights: WeightFile): void {
  const linears = hookableLinears(model);
  const token = model.arch.tokenEmbedding?.(model.config);
  const adaptable = new Set([...linears.map((m) => m.module), ...(token ? [token] : [])]);
  for (const [name, key] of weights.entries()) {
    const m = ADAPTER_KEY.exec(name);
    if (!m || adaptable.has(name.slice(0, m.index))) continue;
    throw new InputError(
      weights.file,
      key,
      `adapts ${name.slice(0, m.index)}, which PEFT Lab cannot: adapters act on this ${model.config.modelType} model's linear modules (named like ${linears[0]?.module ?? '?'})${token ? ` and LoRA also on ${token}` : ''}`,
    );
  }
}

function sameHostTensor(a: HostTensor, b: HostTensor): boolean {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return false;
  const x = toFloat32(a);
  const y = toFloat32(b);
  return x.every((v, i) => Object.is(v, y[i]));
}

/** A residual as host data (read asynchronously: WebGPU in Node cannot read back synchronously). */
async function asHost(t: HostTensor | tf.Tensor): Promise<{ data: Float32Array; shape: number[] }> {
  if (t instanceof tf.Tensor) return { data: (await t.data()) as Float32Array, shape: [...t.shape] };
  return { data: toFloat32(t), shape: [...t.shape] };
}

/** A rank-r factorisation s·B₀·A₀ of W − W_res (for exporting an adapter given its residual). */
function factorDifference(w: Float32Array, res: Float32Array, info: LinearModuleInfo, r: number, scale: number): { A: Float32Array; B: Float32Array } {
  const diff = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) diff[i] = (w[i]! - res[i]!) / scale;
  const D = outInMatrix({ data: diff, outFeatures: info.outFeatures, inFeatures: info.inFeatures, fanInFanOut: info.fanInFanOut });
  const { U, S, V } = thinSvd(D);
  const k = Math.min(r, S.length);
  const A = new Matrix(r, info.inFeatures);
  const B = new Matrix(info.outFeatures, r);
  for (let j = 0; j < k; j++) {
    const q = Math.sqrt(S[j]!);
    for (let i = 0; i < info.inFeatures; i++) A.set(j, i, q * V.get(i, j));
    for (let o = 0; o < info.outFeatures; o++) B.set(o, j, q * U.get(o, j));
  }
  return { A: matrixToFloat32(A), B: matrixToFloat32(B) };
}

function initOf(v: unknown): LoraInit {
  if (v === 'gaussian') return 'gaussian';
  if (typeof v === 'string' && v.startsWith('pissa')) return 'pissa';
  if (v === 'olora') return 'olora';
  if (v === 'lora_ga') return 'lora-ga';
  if (v === 'corda') return 'corda-ipm';
  return 'default';
}

/**
 * An adapter folder's weights: adapter_model.safetensors, else the adapter_model.bin older PEFT
 * versions wrote (read without running its pickle).
 */
async function readAdapterWeights(dir: string, checkpointName?: (path: string) => string): Promise<WeightFile> {
  const file = join(dir, ADAPTER_WEIGHTS);
  const has = (f: string) => fsp.access(f).then(() => true, () => false);
  if (await has(file)) return new WeightFile(file, await readSafetensors(file), checkpointName);
  const bin = join(dir, ADAPTER_WEIGHTS_BIN);
  if (await has(bin)) return new WeightFile(bin, await readTorchStateDict(bin), checkpointName);
  throw new InputError(file, '', `missing (nor is there an ${ADAPTER_WEIGHTS_BIN})`);
}

/** Loads a PEFT adapter folder onto `model` (see the module comment for data-aware inits). */
export async function loadPeftAdapter(model: Model, dir: string, loadOpts: LoadPeftOptions = {}): Promise<AdapterInstance> {
  let opts = loadOpts;
  const cfgFile = join(dir, ADAPTER_CONFIG);
  const c = await readConfigFile(cfgFile);
  const peftType = c.get('peft_type');
  if (typeof peftType !== 'string' || !['LORA', 'ADALORA', 'LOHA', 'LOKR', 'VERA', 'OFT', 'HRA', 'IA3', 'LN_TUNING'].includes(peftType))
    c.fail('peft_type', `unsupported PEFT type ${JSON.stringify(peftType)} (PEFT Lab loads LORA, including DoRA, ADALORA, LOHA, LOKR, VERA, OFT, HRA, IA3 and LN_TUNING)`);
  const checkpointName = model.arch.checkpointName;
  const weights = await readAdapterWeights(dir, checkpointName ? (p) => checkpointName(p) : undefined);
  checkAdaptable(model, weights);
  const taskType = c.get('task_type');
  const mtsRaw = c.stringList('modules_to_save') ?? [];
  const modulesToSave = taskType === 'SEQ_CLS' ? modulesToSaveFor(model, mtsRaw) : mtsRaw;
  const exclude = c.targets('exclude_modules');
  const modelType = model.config.modelType;
  c.bool('fan_in_fan_out', false); // PEFT overrides it from the module type (Conv1D ⇒ true), as we do

  if (peftType === 'LN_TUNING') {
    // The norm modules targeted, each saved whole as `<module>.ln_tuning_layers.<param>`.
    const targets = c.targets('target_modules');
    if (targets === undefined) c.fail('target_modules', 'missing: the norm modules to tune');
    const norms = [...new Set(model.paramInfo().filter((p) => p.type === 'norm').map((p) => p.name.slice(0, p.name.lastIndexOf('.'))))];
    const chosen = norms.filter((m) => pathNames(model, m).some((n) => matchesTarget(targets!, n)) && !(exclude && pathNames(model, m).some((n) => matchesTarget(exclude, n))));
    if (chosen.length === 0) c.fail('target_modules', `match no norm module of this ${modelType} model (e.g. ${norms.slice(0, 3).join(', ')})`);
    const adapter = await createAdapter(model, { kind: 'ln-tuning', targets: chosen, ...(modulesToSave.length ? { modulesToSave } : {}) }, { seed: 0 });
    const owned: tf.Tensor[] = [];
    try {
      const set = (name: string, t: tf.Tensor) => {
        const old = adapter.trainable.get(name);
        adapter.trainable.set(name, t);
        old?.dispose();
      };
      for (const name of [...adapter.trainable.keys()]) {
        const module = name.slice(0, name.lastIndexOf('.'));
        if (!chosen.includes(module)) continue;
        set(name, tf.keep(weights.take(`${module}.ln_tuning_layers.${name.slice(module.length + 1)}`, model.params.get(name)!.shape)!));
      }
      for (const [name, t] of await extrasValues(model, weights, modulesToSave, 'none', [], owned)) set(name, tf.keep(tf.clone(t)));
      tf.dispose(owned);
      weights.checkAllUsed();
    } catch (e) {
      adapter.dispose();
      tf.dispose(owned.filter((t) => !t.isDisposed));
      throw e;
    }
    return adapter;
  }

  const sel: Selection = { exclude, modulesToSave, ...(peftType === 'IA3' || peftType === 'LN_TUNING' ? {} : c.layers()) };
  if (peftType === 'LOHA' || peftType === 'LOKR') return loadLycoris(c, model, weights, peftType === 'LOHA' ? 'loha' : 'lokr', sel);
  if (peftType === 'VERA') return loadVera(c, model, weights, sel);
  if (peftType === 'ADALORA') return loadAdalora(c, model, weights, sel);
  if (peftType === 'OFT') return loadOft(c, model, weights, sel);
  if (peftType === 'HRA') return loadHra(c, model, weights, sel);

  if (peftType === 'IA3') {
    c.unsupported('target_parameters', 'IA3 on parameters', emptyOrNull);
    const targets = c.targets('target_modules') ?? IA3_DEFAULT_TARGETS[modelType];
    const ff = c.targets('feedforward_modules') ?? IA3_DEFAULT_FEEDFORWARD[modelType];
    if (Array.isArray(targets) && Array.isArray(ff) && !ff.every((f) => targets.includes(f)))
      c.fail('feedforward_modules', `must be a subset of target_modules (PEFT's rule); ${ff.filter((f) => !targets.includes(f)).join(', ')} is not`);
    const infos = selectTargets(c, model, 'target_modules', { targets, exclude, modulesToSave });
    const spec: AdapterSpec = { kind: 'ia3', ...(Array.isArray(targets) ? { targets: [...targets] } : {}), ...(modulesToSave.length ? { modulesToSave } : {}) };
    return assemble(model, spec, weights, async (core, owned) => {
      const modules: Ia3Module[] = infos.map((info) => {
        const feedForward = matchesFeedforward(ff, info.module) || (model.arch.runtimeName ? matchesFeedforward(ff, model.arch.runtimeName(info.module)) : false);
        const l = weights.take(ia3Name(info.module), feedForward ? [1, info.inFeatures] : [info.outFeatures, 1])! as tf.Tensor2D;
        owned.push(l);
        return { info, feedForward, l };
      });
      const values = await extrasValues(model, weights, modulesToSave, 'none', [], owned);
      buildIa3(core, { bias: 'none', modulesToSave, modules, values });
      tf.dispose([...values.values()]);
    });
  }

  // ---- LORA ----
  const layerSel = c.layers();
  c.unsupported('layer_replication', 'layer_replication', emptyOrNull);
  c.unsupported('target_parameters', 'LoRA on parameters (target_parameters)', emptyOrNull);
  c.unsupported('trainable_token_indices', 'trainable_token_indices', emptyOrNull);
  c.unsupported('alora_invocation_tokens', 'aLoRA (alora_invocation_tokens)');
  for (const k of ['arrow_config', 'kasa_config', 'monteclora_config', 'velora_config', 'use_bdlora']) c.unsupported(k, k, emptyOrNull);
  c.unsupported('use_qalora', 'QALoRA', (v) => v === undefined || v === null || v === false);
  const initRaw = c.get('init_lora_weights') ?? true;
  const okInit = typeof initRaw === 'boolean' || (typeof initRaw === 'string' && (['gaussian', 'olora', 'lora_ga', 'corda', 'eva', 'orthogonal', 'mica'].includes(initRaw) || /^pissa(_niter_\d+)?$/.test(initRaw)));
  if (!okInit) c.fail('init_lora_weights', `unsupported value ${JSON.stringify(initRaw)} (LoftQ and other quantization-aware inits change the base in ways PEFT Lab cannot reproduce)`);
  const r = c.int('r', 8);
  const alpha = c.num('lora_alpha', 8);
  const dropout = c.num('lora_dropout', 0, (v) => (v < 0 || v >= 1 ? `must be in [0, 1), got ${v}` : undefined));
  const rslora = c.bool('use_rslora', false);
  const dora = c.bool('use_dora', false);
  const loraBias = c.bool('lora_bias', false);
  const bias = c.bias('lora');
  const rankPattern = c.numberMap('rank_pattern', true);
  const alphaPattern = c.numberMap('alpha_pattern', false);
  const targets = c.targets('target_modules') ?? LORA_DEFAULT_TARGETS[modelType];
  const selection = { targets, exclude, modulesToSave, embeddings: !dora, ...layerSel };
  const infos = selectTargets(c, model, 'target_modules', selection);
  const embeddingInfos = selectEmbeddings(model, selection);
  const init = initOf(initRaw);
  if (embeddingInfos.length && loraBias) c.fail('lora_bias', 'true with LoRA on an embedding (PEFT refuses it too)');
  if (!opts.residuals && init !== 'default' && init !== 'gaussian') {
    // PEFT Lab's adapter-init writes the residual base beside an unconverted data-aware adapter.
    const file = join(dir, RESIDUAL_FILE);
    if (await fsp.access(file).then(() => true, () => false)) opts = { ...opts, residuals: await readSafetensors(file) };
  }
  if (init === 'corda-ipm' && !opts.residuals)
    c.fail('init_lora_weights', 'a CorDA adapter expects the residual base PEFT computed from calibration data: load it on the residual model, pass the residuals, or convert it with save_pretrained(path_initial_model_for_weight_conversion=...)');
  const residualSource = opts.residuals && !loadOpts.residuals ? join(dir, RESIDUAL_FILE) : 'residuals';
  const spec: AdapterSpec = {
    kind: (dora ? 'dora' : 'lora') as AdapterKind,
    ...(Array.isArray(targets) ? { targets: [...targets] } : {}),
    r,
    alpha,
    dropout,
    rslora,
    bias,
    rankPattern,
    alphaPattern,
    init,
    ...(modulesToSave.length ? { modulesToSave } : {}),
    ...(layerSel.layers ? { layers: layerSel.layers } : {}),
  };
  const core = new AdapterCore(model, spec, 0);
  const owned: tf.Tensor[] = [];
  try {
    const modules: LoraModule[] = [];
    for (const info of infos) {
      const ra = rankAndAlpha(pathNames(model, info.module), r, alpha, rankPattern, alphaPattern);
      const scale = loraScale(ra.r, ra.alpha, rslora);
      const n = loraNames(info.module);
      const A = weights.take(n.A, [ra.r, info.inFeatures])! as tf.Tensor2D;
      owned.push(A);
      const B = weights.take(n.B, [info.outFeatures, ra.r])! as tf.Tensor2D;
      owned.push(B);
      const mod: LoraModule = { info, r: ra.r, alpha: ra.alpha, scale, A, B };
      if (loraBias) owned.push((mod.bias = weights.take(n.bias, [info.outFeatures]) as tf.Tensor1D));
      if (dora) owned.push((mod.magnitude = weights.take(n.magnitude, [info.outFeatures]) as tf.Tensor1D));
      const stored = info.fanInFanOut ? [info.inFeatures, info.outFeatures] : [info.outFeatures, info.inFeatures];
      const wName = `${info.module}.weight`;
      const given = opts.residuals?.get(wName);
      if (given) {
        const res = await asHost(given);
        if (res.shape.length !== 2 || res.shape[0] !== stored[0] || res.shape[1] !== stored[1])
          throw new InputError(residualSource, wName, `shape [${res.shape.join(', ')}] differs from the weight's [${stored.join(', ')}]`);
        const w = (await model.params.get(wName)!.data()) as Float32Array;
        owned.push((mod.residual = tf.tensor2d(res.data, stored as [number, number])));
        mod.init = factorDifference(w, res.data, info, ra.r, scale);
      } else if (init === 'pissa' || init === 'olora') {
        // PEFT's from_pretrained re-runs the init on the given base, then loads A and B over it.
        const w = (await model.params.get(wName)!.data()) as Float32Array;
        const stw = { data: w, outFeatures: info.outFeatures, inFeatures: info.inFeatures, fanInFanOut: info.fanInFanOut };
        const got = init === 'pissa' ? pissaInit(stw, ra.r, scale) : oloraInit(stw, ra.r, scale);
        owned.push((mod.residual = tf.tensor2d(got.residual, stored as [number, number])));
        mod.init = { A: got.A, B: got.B };
      }
      modules.push(mod);
    }
    if (opts.residuals) {
      const targeted = new Set(infos.map((i) => `${i.module}.weight`));
      for (const k of opts.residuals.keys()) if (!targeted.has(k)) throw new InputError(residualSource, k, 'not the weight of a module this adapter targets');
    }
    const embeddings: LoraEmbeddingModule[] = [];
    for (const info of embeddingInfos) {
      const ra = rankAndAlpha(pathNames(model, info.module), r, alpha, rankPattern, alphaPattern);
      const n = loraEmbeddingNames(info.module);
      const A = weights.take(n.A, [ra.r, info.numEmbeddings])! as tf.Tensor2D;
      owned.push(A);
      const B = weights.take(n.B, [info.dim, ra.r])! as tf.Tensor2D;
      owned.push(B);
      embeddings.push({ info, r: ra.r, alpha: ra.alpha, scale: loraScale(ra.r, ra.alpha, rslora), A, B });
      await checkSavedBaseTable(model, weights, info.module);
    }
    const values = await extrasValues(model, weights, modulesToSave, bias, infos.map((i) => i.module), owned);
    weights.checkAllUsed();
    buildLora(core, { dora, rslora, dropout, r, alpha, rankPattern, alphaPattern, loraBias, bias, modulesToSave, modules, embeddings, values, initLabel: initRaw as boolean | string });
    tf.dispose([...values.values()]);
  } catch (e) {
    core.dispose();
    tf.dispose(owned.filter((t) => !t.isDisposed));
    throw e;
  }
  return core;
}

interface Selection {
  exclude: TargetSpec | undefined;
  modulesToSave: string[];
  layers?: number[];
  layersPattern?: string[];
}

/** Builds an adapter on a fresh core from the file's tensors; on failure disposes the core and what was read. */
async function assemble(model: Model, spec: AdapterSpec, weights: WeightFile, build: (core: AdapterCore, owned: tf.Tensor[]) => Promise<void>): Promise<AdapterInstance> {
  const core = new AdapterCore(model, spec, 0);
  const owned: tf.Tensor[] = [];
  try {
    await build(core, owned);
    weights.checkAllUsed();
  } catch (e) {
    core.dispose();
    tf.dispose(owned.filter((t) => !t.isDisposed));
    throw e;
  }
  return core;
}

/** PEFT's LOHA / LOKR (`rank_dropout` and `module_dropout` act in training only: loaded adapters evaluate). */
async function loadLycoris(c: ConfigFields, model: Model, weights: WeightFile, kind: 'loha' | 'lokr', sel: Selection): Promise<AdapterInstance> {
  const r = c.int('r', 8);
  const alpha = c.num('alpha', 8);
  const rankPattern = c.numberMap('rank_pattern', true);
  const alphaPattern = c.numberMap('alpha_pattern', false);
  const decomposeBoth = kind === 'lokr' && c.bool('decompose_both', false);
  const decomposeFactor = kind === 'lokr' ? c.num('decompose_factor', -1, (v) => (v === -1 || (Number.isInteger(v) && v > 0) ? undefined : `expected -1 or a positive integer, got ${v}`)) : -1;
  const targets = c.targets('target_modules') ?? LORA_DEFAULT_TARGETS[model.config.modelType];
  const infos = selectTargets(c, model, 'target_modules', { targets, ...sel });
  const { modulesToSave } = sel;
  const spec: AdapterSpec = {
    kind,
    ...(Array.isArray(targets) ? { targets: [...targets] } : {}),
    r,
    alpha,
    rankPattern,
    alphaPattern,
    ...(kind === 'lokr' ? { decomposeBoth, decomposeFactor } : {}),
    ...(modulesToSave.length ? { modulesToSave } : {}),
    ...(sel.layers ? { layers: sel.layers } : {}),
  };
  return assemble(model, spec, weights, async (core, owned) => {
    const modules: DeltaModule[] = infos.map((info) => {
      const ra = rankAndAlpha(pathNames(model, info.module), r, alpha, rankPattern, alphaPattern);
      const shapes = kind === 'loha' ? lohaShapes(info, ra.r) : lokrShapes(lokrLayout(info, ra.r, decomposeBoth, decomposeFactor), ra.r);
      const factors = new Map<string, tf.Tensor>();
      for (const [name, shape] of shapes) {
        const t = weights.take(factorName(info.module, name), shape)!;
        owned.push(t);
        factors.set(name, t);
      }
      return { info, r: ra.r, alpha: ra.alpha, scale: ra.alpha / ra.r, factors };
    });
    const values = await extrasValues(model, weights, modulesToSave, 'none', [], owned);
    buildLycoris(core, { kind, r, alpha, rankPattern, alphaPattern, decomposeBoth, decomposeFactor, bias: 'none', modulesToSave, modules, values });
    tf.dispose([...values.values()]);
  });
}

/** PEFT's VERA, whose shared projections must be in the file (save_projection, PEFT's default). */
async function loadVera(c: ConfigFields, model: Model, weights: WeightFile, sel: Selection): Promise<AdapterInstance> {
  if (!c.bool('save_projection', true))
    c.fail('save_projection', "false: the shared projections vera_A and vera_B are not in the file, and PEFT Lab cannot redraw them with PyTorch's generator (projection_prng_key); save the adapter with save_projection=True");
  const r = c.int('r', VERA_DEFAULT_R);
  const dropout = c.num('vera_dropout', 0, (v) => (v < 0 || v >= 1 ? `must be in [0, 1), got ${v}` : undefined));
  const seed = c.num('projection_prng_key', 0);
  const bias = c.bias('vera');
  const targets = c.targets('target_modules') ?? veraDefaultTargets(model.config.modelType);
  const infos = selectTargets(c, model, 'target_modules', { targets, ...sel });
  const { modulesToSave } = sel;
  const spec: AdapterSpec = { kind: 'vera', ...(Array.isArray(targets) ? { targets: [...targets] } : {}), r, dropout, bias, ...(modulesToSave.length ? { modulesToSave } : {}), ...(sel.layers ? { layers: sel.layers } : {}) };
  return assemble(model, spec, weights, async (core, owned) => {
    const shapes = veraProjectionShapes(infos, r);
    const take = (name: string, shape: number[], key = PEFT_PREFIX + name) => {
      const t = weights.take(name, shape, false, key)!;
      owned.push(t);
      return t;
    };
    const projections = { A: take(VERA_A, shapes.A, `base_model.${VERA_A}`) as tf.Tensor2D, B: take(VERA_B, shapes.B, `base_model.${VERA_B}`) as tf.Tensor2D };
    const modules: VeraModule[] = infos.map((info) => {
      const n = veraNames(info.module);
      return { info, lambdaB: take(n.b, [info.outFeatures]) as tf.Tensor1D, lambdaD: take(n.d, [r]) as tf.Tensor1D };
    });
    const values = await extrasValues(model, weights, modulesToSave, bias, infos.map((i) => i.module), owned);
    buildVera(core, { r, dropout, bias, projections, seed, modulesToSave, modules, values });
    tf.dispose([...values.values()]);
  });
}

/** PEFT's HRA (the products of reflections, or one by their Gram–Schmidt basis: apply_GS). */
async function loadHra(c: ConfigFields, model: Model, weights: WeightFile, sel: Selection): Promise<AdapterInstance> {
  const r = c.int('r', 8);
  const gs = c.bool('apply_GS', false);
  const bias = c.bias('hra');
  const targets = c.targets('target_modules') ?? LORA_DEFAULT_TARGETS[model.config.modelType];
  const infos = selectTargets(c, model, 'target_modules', { targets, ...sel });
  const { modulesToSave } = sel;
  const spec: AdapterSpec = {
    kind: 'hra',
    ...(Array.isArray(targets) ? { targets: [...targets] } : {}),
    r,
    ...(gs ? { gramSchmidt: true } : {}),
    ...(modulesToSave.length ? { modulesToSave } : {}),
    ...(sel.layers ? { layers: sel.layers } : {}),
  };
  return assemble(model, spec, weights, async (core, owned) => {
    const modules: HraModule[] = infos.map((info) => {
      const u = weights.take(hraName(info.module), [info.inFeatures, r])! as tf.Tensor2D;
      owned.push(u);
      return { info, r, gs, u };
    });
    const values = await extrasValues(model, weights, modulesToSave, bias, infos.map((i) => i.module), owned);
    buildHra(core, { r, gs, bias, modulesToSave, modules, values, seed: 0 });
    tf.dispose([...values.values()]);
  });
}

/** PEFT's OFT with the Neumann-series Cayley transform (its default); module_dropout acts in training only. */
async function loadOft(c: ConfigFields, model: Model, weights: WeightFile, sel: Selection): Promise<AdapterInstance> {
  c.unsupported('coft', 'constrained OFT (coft)', (v) => v === undefined || v === null || v === false);
  c.unsupported('block_share', 'block_share', (v) => v === undefined || v === null || v === false);
  c.unsupported('use_cayley_neumann', 'the exact Cayley transform (use_cayley_neumann false)', (v) => v === undefined || v === null || v === true);
  const whole = (key: string, fallback: number) => c.num(key, fallback, (v) => (Number.isInteger(v) && v >= 0 ? undefined : `expected a whole number ≥ 0, got ${v}`));
  const r = whole('r', 0);
  const blockSize = whole('oft_block_size', 32);
  if ((r === 0) === (blockSize === 0)) c.fail('oft_block_size', `OFT takes either r or oft_block_size, the other 0 (got r ${r}, oft_block_size ${blockSize})`);
  const terms = c.int('num_cayley_neumann_terms', OFT_NEUMANN_TERMS);
  const bias = c.bias('oft');
  const targets = c.targets('target_modules') ?? LORA_DEFAULT_TARGETS[model.config.modelType];
  const infos = selectTargets(c, model, 'target_modules', { targets, ...sel });
  const { modulesToSave } = sel;
  const spec: AdapterSpec = {
    kind: 'oft',
    ...(Array.isArray(targets) ? { targets: [...targets] } : {}),
    ...(blockSize ? { blockSize } : {}),
    ...(modulesToSave.length ? { modulesToSave } : {}),
    ...(sel.layers ? { layers: sel.layers } : {}),
  };
  return assemble(model, spec, weights, async (core, owned) => {
    const modules: OftModule[] = infos.map((info) => {
      const layout = oftLayout(info.inFeatures, r, blockSize);
      const weight = weights.take(oftName(info.module), [layout.blocks, (layout.blockSize * (layout.blockSize - 1)) / 2])! as tf.Tensor2D;
      owned.push(weight);
      return { info, terms, ...layout, weight };
    });
    const values = await extrasValues(model, weights, modulesToSave, bias, infos.map((i) => i.module), owned);
    buildOft(core, { blockSize, r, terms, bias, modulesToSave, modules, values });
    tf.dispose([...values.values()]);
  });
}

/** PEFT's ADALORA: each module at the ranks its rank_pattern keeps (the file holds only those), scaled by α / init_r. */
async function loadAdalora(c: ConfigFields, model: Model, weights: WeightFile, sel: Selection): Promise<AdapterInstance> {
  c.unsupported('use_dora', 'DoRA', (v) => v === undefined || v === null || v === false);
  const count = (key: string, fallback: number) => c.num(key, fallback, (v) => (Number.isInteger(v) && v >= 0 ? undefined : `expected a whole number ≥ 0, got ${v}`));
  const fraction = (key: string) => c.num(key, 0.85, (v) => (v > 0 && v < 1 ? undefined : `must be in (0, 1), got ${v}`));
  const schedule: AdaloraSchedule = {
    initR: c.int('init_r', 12),
    targetR: c.int('target_r', 8),
    tinit: count('tinit', 0),
    tfinal: count('tfinal', 0),
    deltaT: c.int('deltaT', 1),
    beta1: fraction('beta1'),
    beta2: fraction('beta2'),
    orthRegWeight: c.num('orth_reg_weight', 0.5, (v) => (v >= 0 ? undefined : `must be ≥ 0, got ${v}`)),
  };
  const alpha = c.num('lora_alpha', 8);
  const dropout = c.num('lora_dropout', 0, (v) => (v < 0 || v >= 1 ? `must be in [0, 1), got ${v}` : undefined));
  const bias = c.bias('lora');
  const targets = c.targets('target_modules') ?? adaloraDefaultTargets(model.config.modelType);
  const infos = selectTargets(c, model, 'target_modules', { targets, ...sel });
  // rank_pattern: `<module>.lora_E` → which of the init_r ranks were kept.
  const raw = c.get('rank_pattern');
  let rankPattern: Record<string, boolean[]> | null = null;
  if (raw !== undefined && raw !== null) {
    if (typeof raw !== 'object' || Array.isArray(raw)) c.fail('rank_pattern', `expected an object of <module>.lora_E → list of true/false, got ${JSON.stringify(raw).slice(0, 40)}`);
    rankPattern = {};
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
      if (!Array.isArray(v) || v.length !== schedule.initR || !v.every((b) => typeof b === 'boolean')) c.fail(`rank_pattern.${k}`, `expected ${schedule.initR} (init_r) values true or false`);
      // Keys name E, with the adapter's name after it where the pattern was saved from a live model.
      const module = k.replace(/\.lora_E(\.[^.]+)?$/, '');
      rankPattern[model.arch.checkpointName ? model.arch.checkpointName(module) : module] = v as boolean[];
    }
    // PEFT then scales each module by its kept rank (not by init_r, as in training): its own logits change on load.
    if (alpha <= 0) c.fail('lora_alpha', `${alpha} with a rank_pattern is not supported: PEFT scales each module by its kept rank after loading, unlike in training`);
  }
  const { modulesToSave } = sel;
  const spec: AdapterSpec = {
    kind: 'adalora',
    ...(Array.isArray(targets) ? { targets: [...targets] } : {}),
    r: schedule.initR,
    alpha,
    dropout,
    bias,
    adalora: { targetR: schedule.targetR, tinit: schedule.tinit, tfinal: schedule.tfinal, deltaT: schedule.deltaT, beta1: schedule.beta1, beta2: schedule.beta2, orthRegWeight: schedule.orthRegWeight },
    ...(modulesToSave.length ? { modulesToSave } : {}),
    ...(sel.layers ? { layers: sel.layers } : {}),
  };
  const totalRaw = c.get('total_step');
  const totalSteps = typeof totalRaw === 'number' && Number.isInteger(totalRaw) && totalRaw > 0 ? totalRaw : undefined;
  return assemble(model, spec, weights, async (core, owned) => {
    const modules: AdaloraModule[] = infos.map((info) => {
      const keep = rankPattern?.[info.module];
      const r = keep ? keep.filter(Boolean).length : schedule.initR;
      const n = adaloraNames(info.module);
      const take = (name: string, shape: number[]) => {
        const t = weights.take(name, shape)! as tf.Tensor2D;
        owned.push(t);
        return t;
      };
      return { info, A: take(n.A, [r, info.inFeatures]), E: take(n.E, [r, 1]), B: take(n.B, [info.outFeatures, r]) };
    });
    const values = await extrasValues(model, weights, modulesToSave, bias, infos.map((i) => i.module), owned);
    buildAdalora(core, { schedule, alpha, dropout, bias, modulesToSave, modules, values, rankPattern, ...(totalSteps ? { totalSteps } : {}) });
    tf.dispose([...values.values()]);
  });
}

/** Half a unit in the last place, relative, of the float types a saved table may be in (the rounding its values got). */
const ROUNDING: Record<string, { rel: number; abs: number }> = { F32: { rel: 0, abs: 0 }, F16: { rel: 2 ** -11, abs: 2 ** -25 }, BF16: { rel: 2 ** -8, abs: 0 } };

/**
 * PEFT saves the base table of a targeted embedding beside its LoRA (`<module>.base_layer.weight`,
 * for the names in its EMBEDDING_LAYER_NAMES). It must be the base model's (LoRA trains no base
 * weight), to the rounding of the type it was saved in (a model trained in bf16 saves a bf16 table).
 */
async function checkSavedBaseTable(model: Model, weights: WeightFile, module: string): Promise<void> {
  const name = `${module}.weight`;
  const key = `${PEFT_PREFIX}${module}.base_layer.weight`;
  const base = model.params.get(name)!;
  const dtype = weights.dtypeOf(name);
  const saved = weights.take(name, base.shape, true, key);
  if (!saved) return;
  const tol = ROUNDING[dtype ?? 'F32'] ?? { rel: 2 ** -8, abs: 0 };
  const same = tf.tidy(() => tf.all(tf.lessEqual(tf.abs(tf.sub(saved, base)), tf.add(tf.mul(tf.abs(base), tol.rel), tol.abs))));
  const equal = (await same.data())[0] === 1;
  tf.dispose([same, saved]);
  if (!equal) throw new InputError(weights.file, key, "differs from the base model's embedding: the adapter was saved on another base model (or one with a changed vocabulary)");
}

function selectTargets(c: ConfigFields, model: Model, key: string, sel: Parameters<typeof selectLinears>[1]): LinearModuleInfo[] {
  try {
    return selectLinears(model, sel);
  } catch (e) {
    return c.fail(key, (e as Error).message);
  }
}

/** Values of the bias / modules_to_save tensors from the file (biases may be absent: PEFT then keeps the base's). */
async function extrasValues(model: Model, weights: WeightFile, modulesToSave: string[], bias: LoraBias, targeted: string[], owned: tf.Tensor[]): Promise<Map<string, tf.Tensor>> {
  const values = new Map<string, tf.Tensor>();
  const saved = moduleToSaveParams(model, modulesToSave);
  for (const n of saved) {
    const t = weights.take(n, model.params.get(n)!.shape)!;
    owned.push(t);
    values.set(n, t);
  }
  // A tied head saved beside its embedding (PEFT wraps each in a copy): PEFT Lab keeps them tied, so they must agree.
  for (const { param, source } of tiedHeadsOf(model, saved)) {
    const head = weights.take(param, model.params.get(source)!.shape, true);
    if (!head) continue;
    const equal = tf.tidy(() => tf.all(tf.equal(head, values.get(source)!)));
    const same = (await equal.data())[0] === 1;
    tf.dispose([equal, head]);
    if (!same) throw new InputError(weights.file, PEFT_PREFIX + param, `differs from ${PEFT_PREFIX}${source}: the adapter trains the output head apart from the input embedding, but the base model ties them`);
  }
  const savedSet = new Set(saved);
  const biases =
    bias === 'all'
      ? model.paramInfo().map((p) => p.name).filter((n) => n.endsWith('.bias') && !savedSet.has(n))
      : bias === 'lora_only'
        ? targeted.map((m) => `${m}.bias`).filter((n) => model.params.has(n))
        : [];
  const targetedSet = new Set(targeted);
  for (const n of biases) {
    const module = n.slice(0, -'.bias'.length);
    const t = weights.take(n, model.params.get(n)!.shape, true, PEFT_PREFIX + (targetedSet.has(module) ? `${module}.base_layer.bias` : n));
    if (t) {
      owned.push(t);
      values.set(n, t);
    }
  }
  return values;
}

/** Writes `adapter` as PEFT's `save_pretrained` would, atomically (temp folder, then rename). */
/** Writes the adapter as PEFT's save_pretrained would; with the base's config, also its model card (README.md, how to load it). */
export async function savePeftAdapter(dir: string, adapter: AdapterInstance, meta: { baseModel: string; modelConfig?: ModelConfig }): Promise<void> {
  const { config, tensors } = await adapter.exportPeft();
  const full = { ...config, base_model_name_or_path: meta.baseModel };
  await writePeftLora(dir, { config: full, tensors, ...(meta.modelConfig ? { readme: adapterModelCard(full, meta.modelConfig) } : {}) });
}

export { taskTypeOf };
