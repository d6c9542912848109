/**
 * `adapter-init`: a LoRA adapter at its initial values, in Hugging Face PEFT's format, for any of
 * PEFT's inits (default, gaussian, PiSSA, OLoRA, CorDA IPM/KPM, LoRA-GA). Writes
 * `adapter_config.json` + `adapter_model.safetensors` (A and B under PEFT's names) and, for inits
 * that change the base weights, `residual_model.safetensors` holding each changed base weight
 * (W − s·B·A, stored layout) under its Hugging Face name.
 */
import * as tf from '@tensorflow/tfjs-core';
import { join } from 'node:path';
import { LORA_INITS, type LoraInit } from '../../../src/protocol';
import { CALIBRATED_INITS, LORA_GA_DEFAULTS, loraInitProvider, RESIDUAL_INITS } from '../adapters/inits';
import { adapterModulesToSave, loraConfigFields, moduleToSaveParams } from '../adapters/family';
import { host } from '../adapters/lora';
import { checkAdapterTarget, RESIDUAL_FILE, writePeftLora } from '../adapters/peft';
import { selectLinears } from '../adapters/targets';
import { InputError } from '../errors';
import { readSafetensors, writeSafetensors, type HostTensor } from '../io/safetensors';
import { checkTokenRange, toTf } from '../io/tensors';
import type { JobContext } from '../jobs/context';
import { throwIfCancelled } from '../jobs/context';
import type { LinearModuleInfo } from '../models/architecture';
import { Model } from '../models/model';
import { modelFolder } from '../spec/hub-cache';

// The file the loader reads beside an unconverted data-aware adapter (peft.ts).
export { RESIDUAL_FILE } from '../adapters/peft';

export interface AdapterInitParams {
  /** Hugging Face model folder. */
  model: string;
  method: LoraInit;
  r: number;
  alpha: number;
  /** PEFT `target_modules`: short names (`q_proj`) or module paths. */
  targets: string[];
  /** Safetensors file with `calib_input_ids` (or `input_ids`), one sample per row; CorDA and LoRA-GA need it. */
  calib?: string;
  seed?: number;
  out: string;
}

export interface AdapterInitResult {
  out: string;
  method: LoraInit;
  modules: string[];
  /** Path of residual_model.safetensors, when the init changed the base weights. */
  residual?: string;
}

/** `init_lora_weights` as PEFT writes it for each init. */
const INIT_LORA_WEIGHTS: Record<LoraInit, boolean | string> = {
  default: true,
  gaussian: 'gaussian',
  pissa: 'pissa',
  olora: 'olora',
  'corda-ipm': 'corda',
  'corda-kpm': 'corda',
  'lora-ga': 'lora_ga',
};

/** Checks the parameters that need no file access; throws RangeError with a one-line reason. */
export function validateAdapterInit(p: AdapterInitParams): void {
  if (!(LORA_INITS as readonly string[]).includes(p.method)) throw new RangeError(`unknown init method '${p.method}' (${LORA_INITS.join(', ')})`);
  if (!Number.isInteger(p.r) || p.r <= 0) throw new RangeError(`r must be a positive integer, got ${p.r}`);
  if (!Number.isFinite(p.alpha) || p.alpha <= 0) throw new RangeError(`alpha must be a positive number, got ${p.alpha}`);
  if (p.targets.length === 0 || p.targets.some((t) => t.trim() === '')) throw new RangeError('targets must be a non-empty list of module names');
  if (CALIBRATED_INITS.has(p.method) && !p.calib) throw new RangeError(`method '${p.method}' needs calibration data: pass --calib FILE (a safetensors file with calib_input_ids)`);
  if (p.seed !== undefined && !Number.isInteger(p.seed)) throw new RangeError(`seed must be an integer, got ${p.seed}`);
}

/** PEFT 0.21's `LoraConfig` as `save_pretrained` writes it, for a freshly initialised adapter. */
export function peftLoraConfig(model: Model, p: AdapterInitParams, targets: LinearModuleInfo[]): Record<string, unknown> {
  const modulesToSave = adapterModulesToSave(model, []);
  const corda = p.method === 'corda-ipm' || p.method === 'corda-kpm';
  return {
    ...loraConfigFields(model, p.targets, modulesToSave.length ? modulesToSave : null),
    base_model_name_or_path: p.model,
    corda_config: corda
      ? { cache_file: null, corda_method: p.method === 'corda-ipm' ? 'ipm' : 'kpm', covariance_file: null, prune_temporary_fields: true, use_float16_for_covariance: false, verbose: false }
      : null,
    fan_in_fan_out: targets.some((m) => m.fanInFanOut),
    init_lora_weights: INIT_LORA_WEIGHTS[p.method],
    lora_alpha: p.alpha,
    lora_ga_config:
      p.method === 'lora-ga' ? { direction: LORA_GA_DEFAULTS.direction, scale: LORA_GA_DEFAULTS.scale, stable_gamma: LORA_GA_DEFAULTS.stableGamma } : null,
    r: p.r,
    target_modules: [...new Set(p.targets)],
  };
}

/** Reads calibration ids (int32 [samples, tokens]) from a safetensors file; the caller disposes them. */
export async function readCalibIds(file: string, vocab: number): Promise<tf.Tensor2D> {
  const host = await readSafetensors(file);
  const name = host.has('calib_input_ids') ? 'calib_input_ids' : host.has('input_ids') ? 'input_ids' : undefined;
  if (!name) throw new InputError(file, 'calib_input_ids', `tensor missing (found: ${[...host.keys()].join(', ') || 'none'})`);
  const t = host.get(name)!;
  if (!['I64', 'I32', 'I16', 'I8', 'U8'].includes(t.dtype)) throw new InputError(file, name, `expected an integer dtype, got ${t.dtype}`);
  if (t.shape.length !== 2 || t.shape[0] === 0 || t.shape[1] === 0) throw new InputError(file, name, `expected shape [samples, tokens], got [${t.shape.join(', ')}]`);
  const ids = toTf(t) as tf.Tensor2D;
  try {
    await checkTokenRange(file, ids, vocab);
  } catch (e) {
    ids.dispose();
    throw e;
  }
  return ids;
}

export async function runAdapterInit(p: AdapterInitParams, ctx: JobContext): Promise<AdapterInitResult> {
  validateAdapterInit(p);
  await checkAdapterTarget(p.out); // before the compute: a refused --out should not cost an SVD
  const model = await Model.load(modelFolder(p.model));
  let calib: tf.Tensor2D | undefined;
  try {
    const targets = selectLinears(model, { targets: p.targets });
    const scale = p.alpha / p.r;
    if (p.calib && CALIBRATED_INITS.has(p.method)) calib = await readCalibIds(p.calib, model.config.vocabSize);
    throwIfCancelled(ctx.signal);
    ctx.log('info', `adapter-init ${p.method}: r=${p.r}, alpha=${p.alpha}, ${targets.length} modules`);
    const inits = await loraInitProvider(p.method, calib, { seed: p.seed ?? 0 })(model, targets, () => p.r, () => scale);
    throwIfCancelled(ctx.signal);

    const tensors = new Map<string, HostTensor>();
    const residuals = new Map<string, HostTensor>();
    for (const m of targets) {
      const x = inits.get(m.module)!;
      tensors.set(`base_model.model.${m.module}.lora_A.weight`, { dtype: 'F32', shape: [p.r, m.inFeatures], data: x.A });
      tensors.set(`base_model.model.${m.module}.lora_B.weight`, { dtype: 'F32', shape: [m.outFeatures, p.r], data: x.B });
      const shape = m.fanInFanOut ? [m.inFeatures, m.outFeatures] : [m.outFeatures, m.inFeatures];
      residuals.set(`${m.module}.weight`, { dtype: 'F32', shape, data: x.residual });
    }
    // The task head (modules_to_save: a classifier's) is saved as it is: PEFT loads it from the adapter.
    for (const name of moduleToSaveParams(model, adapterModulesToSave(model, []))) tensors.set(`base_model.model.${name}`, await host(model.params.get(name)!));
    // writePeftLora replaces the whole folder, so the residual file goes in after it.
    await writePeftLora(p.out, { config: peftLoraConfig(model, p, targets), tensors });
    let residual: string | undefined;
    if (RESIDUAL_INITS.has(p.method)) {
      residual = join(p.out, RESIDUAL_FILE);
      await writeSafetensors(residual, residuals, { format: 'pt' });
    }
    ctx.progress({ done: 1, total: 1 });
    return { out: p.out, method: p.method, modules: targets.map((m) => m.module), ...(residual ? { residual } : {}) };
  } finally {
    calib?.dispose();
    model.dispose();
  }
}

/** The command line's `--method` names: PEFT's init names, with `lora` for PEFT's default init. */
export const CLI_INIT_METHODS = ['lora', 'gaussian', 'pissa', 'olora', 'corda-ipm', 'corda-kpm', 'lora-ga'] as const;

/** A `--method` value as a LoraInit (`lora` → `default`), or undefined. */
export function parseInitMethod(name: string): LoraInit | undefined {
  if (name === 'lora') return 'default';
  return (LORA_INITS as readonly string[]).includes(name) ? (name as LoraInit) : undefined;
}
