/** `LoraInitProvider`s: the per-module inits of methods.ts fed with a model's weights and calibration data. */
import type { LoraInit } from '../../../../src/protocol';
import type { LinearModuleInfo } from '../../models/architecture';
import type { Model } from '../../models/model';
import type { LoraInitProvider } from '../types';
import { collectCovariances, estimateGradients, type Calibration } from './calibration';
import { cordaInit, loraGaInit, oloraInit, pissaInit, randomInit, type LoraGaOptions, type LoraInitResult, type StoredWeight } from './methods';

export interface LoraInitOptions {
  /** Seeds the random inits (default, gaussian) and LoRA-GA's randomised SVD. Default 0. */
  seed?: number;
  /** LoRA-GA: PEFT's `LoraGAConfig` (direction, scale, stable_gamma) and the SVD used. */
  loraGa?: LoraGaOptions;
  /** LoRA-GA: rows of the calibration ids per backward pass (default 4). */
  gradBatchRows?: number;
  /** CorDA: rows per forward pass while collecting covariances (default 8; does not change the result). */
  covBatchRows?: number;
}

/** Methods that replace the base weight by a residual. */
export const RESIDUAL_INITS: ReadonlySet<LoraInit> = new Set(['pissa', 'olora', 'corda-ipm', 'corda-kpm', 'lora-ga']);
/** Methods that need calibration ids. */
export const CALIBRATED_INITS: ReadonlySet<LoraInit> = new Set(['corda-ipm', 'corda-kpm', 'lora-ga']);

async function storedWeight(model: Model, m: LinearModuleInfo): Promise<StoredWeight> {
  const t = model.params.get(`${m.module}.weight`);
  if (!t) throw new Error(`parameter ${m.module}.weight is not loaded`);
  const shape = m.fanInFanOut ? [m.inFeatures, m.outFeatures] : [m.outFeatures, m.inFeatures];
  if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1])
    throw new Error(`${m.module}.weight has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  return { data: (await t.data()) as Float32Array, outFeatures: m.outFeatures, inFeatures: m.inFeatures, fanInFanOut: m.fanInFanOut };
}

/** A per-module seed that differs between modules (so equal shapes do not get equal A). */
function moduleSeed(seed: number, module: string): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < module.length; i++) h = Math.imul(h ^ module.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * The provider for a LoRA init: `default` (kaiming-uniform A, B = 0), `gaussian`, `pissa`, `olora`,
 * `corda-ipm` / `corda-kpm` (input covariances from `calib`) and `lora-ga` (gradients from `calib`):
 * calibration samples, an int32 [samples, tokens] tensor or rows of any length; the caller keeps
 * ownership. Residuals of default/gaussian are the unchanged weights.
 */
export const loraInitProvider =
  (method: LoraInit, calib?: Calibration, opts: LoraInitOptions = {}): LoraInitProvider =>
  async (model, targets, rank, scale) => {
    if (CALIBRATED_INITS.has(method) && !calib)
      throw new RangeError(`LoRA init '${method}' needs calibration data (token ids, one sample per row); none was given`);
    if (targets.length === 0) throw new RangeError('LoRA init: no target modules');
    const seed = opts.seed ?? 0;
    let covariances: Map<string, Float64Array> | undefined;
    let grads: Map<string, Float32Array> | undefined;
    if (method === 'corda-ipm' || method === 'corda-kpm') covariances = await collectCovariances(model, targets, calib!, opts.covBatchRows);
    if (method === 'lora-ga') grads = await estimateGradients(model, targets, calib!, opts.gradBatchRows ?? 4);
    const out = new Map<string, LoraInitResult>();
    for (const m of targets) {
      const r = rank(m.module);
      const s = scale(m.module);
      const w = await storedWeight(model, m);
      let res: LoraInitResult;
      try {
        switch (method) {
          case 'default':
          case 'gaussian':
            res = randomInit(w, r, method, moduleSeed(seed, m.module));
            break;
          case 'pissa':
            res = pissaInit(w, r, s);
            break;
          case 'olora':
            res = oloraInit(w, r, s);
            break;
          case 'corda-ipm':
          case 'corda-kpm':
            res = cordaInit(w, r, s, method === 'corda-ipm' ? 'ipm' : 'kpm', covariances!.get(m.module)!);
            break;
          case 'lora-ga':
            res = loraGaInit(w, grads!.get(m.module)!, r, s, { ...opts.loraGa, seed: opts.loraGa?.seed ?? moduleSeed(seed, m.module) });
            break;
          default:
            throw new RangeError(`unknown LoRA init '${String(method)}'`);
        }
      } catch (e) {
        if (e instanceof RangeError) throw new RangeError(`${m.module}: ${e.message}`);
        throw e;
      }
      out.set(m.module, res);
    }
    return out;
  };
