/**
 * The machinery every adapter kind shares: its tensor maps, hooks, layer bookkeeping, per-layer
 * scales (IST), the dropout step, and the parts (merge, unmerge, export) each kind plugs in.
 *
 * Hooks never hold a trainable tensor: they look it up by name through the Forward (so gradients
 * reach the tensors `Model.lossAndGrads` traces, and the optimizer may replace them between steps),
 * falling back to the adapter's own maps when the caller did not pass them as overrides.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { AdapterSpec } from '../../../src/protocol';
import type { HostTensor } from '../io/safetensors';
import type { EmbeddingHook, Forward, Hooks, LinearHook, TapHook } from '../models/forward';
import type { Model } from '../models/model';
import { patternKey } from './targets';
import type { AdapterInstance, TrainingProcedure } from './types';

export type PeftExport = { config: Record<string, unknown>; tensors: Map<string, HostTensor> };

/** A part of an adapter (one kind, or modules_to_save) that folds into base weights. */
export interface MergePart {
  /** Adds the tensors it changes to `out` (base name → new tensor); may read/replace entries others put there. */
  merge(out: Map<string, tf.Tensor>): void;
  /** Reverses merge on `out` (which holds merged tensors), in place. */
  unmerge(out: Map<string, tf.Tensor>): void;
}

export class AdapterCore implements AdapterInstance {
  readonly trainable = new Map<string, tf.Tensor>();
  readonly frozen = new Map<string, tf.Tensor>();
  readonly linearHooks = new Map<string, LinearHook>();
  readonly tapHooks = new Map<string, TapHook>();
  readonly embeddingHooks = new Map<string, EmbeddingHook>();
  readonly hooks: Hooks = { linear: this.linearHooks, taps: this.tapHooks, embeddings: this.embeddingHooks };
  /** Tensor name → transformer block. */
  private readonly layers = new Map<string, number>();
  private readonly effectiveCounts = new Map<string, number>();
  private readonly scales = new Map<number, number>();
  /**
   * Trainable tensors that replace a base parameter under its own name (bitfit, LN, full,
   * modules_to_save, LoRA biases): scaled versions are built for overrides() when a layer scale ≠ 1.
   */
  private readonly replacing = new Set<string>();
  private scaledCache = new Map<string, { src: tf.Tensor; factor: number; out: tf.Tensor }>();
  readonly mergeParts: MergePart[] = [];
  exporter: (() => Promise<PeftExport>) | undefined;
  /** Why this adapter has no PEFT format, when its kind usually has one. */
  noExportReason: string | undefined;
  training: TrainingProcedure | undefined;
  private step = 0;
  private disposed = false;

  constructor(
    readonly model: Model,
    readonly spec: AdapterSpec,
    readonly seed: number,
  ) {}

  // ---- registration (used by the kind builders) --------------------------------------------

  addTrainable(name: string, t: tf.Tensor, layer: number, opts: { replacesBase?: boolean } = {}): void {
    if (this.trainable.has(name) || this.frozen.has(name)) throw new Error(`adapter tensor ${name} registered twice`);
    this.trainable.set(name, tf.keep(t));
    this.layers.set(name, layer);
    if (opts.replacesBase) this.replacing.add(name);
  }

  /** A trainable tensor of which only `count` entries can change (a sparse delta under its mask). */
  countTrainableAs(name: string, count: number): void {
    this.effectiveCounts.set(name, count);
  }

  addFrozen(name: string, t: tf.Tensor, layer: number): void {
    if (this.trainable.has(name) || this.frozen.has(name)) throw new Error(`adapter tensor ${name} registered twice`);
    this.frozen.set(name, tf.keep(t));
    this.layers.set(name, layer);
  }

  addLinearHook(module: string, hook: LinearHook): void {
    if (this.linearHooks.has(module)) throw new Error(`module ${module} is wrapped twice`);
    this.linearHooks.set(module, hook);
  }

  addEmbeddingHook(module: string, hook: EmbeddingHook): void {
    if (this.embeddingHooks.has(module)) throw new Error(`embedding ${module} is wrapped twice`);
    this.embeddingHooks.set(module, hook);
  }

  addTapHook(point: string, hook: TapHook): void {
    if (this.tapHooks.has(point)) throw new Error(`tap point ${point} is used twice`);
    this.tapHooks.set(point, hook);
  }

  /** An adapter tensor as the forward pass sees it (traced override first, then the adapter's own). */
  get(f: Forward, name: string): tf.Tensor {
    if (f.has(name)) return f.p(name);
    const t = this.trainable.get(name) ?? this.frozen.get(name);
    if (!t) throw new Error(`adapter tensor ${name} is missing`);
    return t;
  }

  /** The current value of an adapter tensor (outside a forward pass). */
  tensor(name: string): tf.Tensor {
    const t = this.trainable.get(name) ?? this.frozen.get(name);
    if (!t) throw new Error(`adapter tensor ${name} is missing`);
    return t;
  }

  /** A base parameter as the adapter's forward sees it: a residual in `frozen` replaces the model's. */
  baseParam(name: string): tf.Tensor | undefined {
    return this.frozen.get(name) ?? this.model.params.get(name);
  }

  /** The model's own (original) parameter. */
  originalParam(name: string): tf.Tensor | undefined {
    return this.model.params.get(name);
  }

  scaleOf(layer: number): number {
    return this.scales.get(layer) ?? 1;
  }

  /** A deterministic seed for random draws of module `index` at the current step (dropout). */
  stepSeed(index: number): number {
    // Mix seed, step and index into 31 bits (seedrandom accepts any number).
    let h = (this.seed * 0x9e3779b1) ^ (this.step * 0x85ebca77) ^ (index * 0xc2b2ae3d);
    h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
    h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
    return (h ^ (h >>> 16)) >>> 1;
  }

  // ---- AdapterInstance -------------------------------------------------------------------

  trainableParameterCount(): number {
    let n = 0;
    for (const [name, t] of this.trainable) n += this.effectiveCounts.get(name) ?? t.size;
    return n;
  }

  overrides(): Map<string, tf.Tensor> {
    const m = new Map(this.frozen);
    for (const [k, v] of this.trainable) m.set(k, v);
    for (const name of this.replacing) {
      const factor = this.scaleOf(this.layerOf(name));
      if (factor === 1) continue;
      const src = this.trainable.get(name)!;
      const cached = this.scaledCache.get(name);
      if (cached && cached.src === src && cached.factor === factor) {
        m.set(name, cached.out);
        continue;
      }
      cached?.out.dispose();
      const base = this.baseParam(name);
      const out = tf.keep(tf.tidy(() => (base ? tf.add(base, tf.mul(tf.sub(src, base), factor)) : tf.mul(src, factor))));
      this.scaledCache.set(name, { src, factor, out });
      m.set(name, out);
    }
    return m;
  }

  layerOf(name: string): number {
    return this.layers.get(name) ?? -1;
  }

  setLayerScale(layer: number, factor: number): void {
    if (!Number.isFinite(factor)) throw new RangeError(`layer scale must be finite, got ${factor}`);
    if (factor === 1) this.scales.delete(layer);
    else this.scales.set(layer, factor);
  }

  setStep(step: number): void {
    this.step = step;
  }

  merged(): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    try {
      for (const part of this.mergeParts) part.merge(out);
    } catch (e) {
      for (const t of out.values()) t.dispose();
      throw e;
    }
    return out;
  }

  unmerge(merged: ReadonlyMap<string, tf.Tensor>): Map<string, tf.Tensor> {
    // Work on clones so the caller's tensors survive; parts replace entries (disposing what they replace).
    const out = new Map<string, tf.Tensor>();
    for (const [k, v] of merged) out.set(k, tf.clone(v));
    try {
      for (const part of [...this.mergeParts].reverse()) part.unmerge(out);
    } catch (e) {
      for (const t of out.values()) t.dispose();
      throw e;
    }
    return out;
  }

  peftFormatProblem(): string | undefined {
    if (this.exporter) return undefined;
    return this.noExportReason ?? `a ${this.spec.kind} adapter has no Hugging Face PEFT format (PEFT Lab exports lora, dora, loha, lokr, vera, ia3 and ln-tuning to PEFT)`;
  }

  async exportPeft(): Promise<PeftExport> {
    if (!this.exporter) throw new Error(this.peftFormatProblem());
    const out = await this.exporter();
    const rt = this.model.arch.runtimeName;
    return rt ? runtimeNamed(out, rt) : out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.training?.dispose();
    for (const t of this.trainable.values()) t.dispose();
    for (const t of this.frozen.values()) t.dispose();
    for (const c of this.scaledCache.values()) c.out.dispose();
    this.trainable.clear();
    this.frozen.clear();
    this.scaledCache.clear();
  }
}

/**
 * An export under the model's run-time names (transformers 5's, which PEFT's files use: ViT's
 * modules were renamed): tensor keys, and the module lists and patterns of adapter_config.json.
 */
function runtimeNamed(exp: PeftExport, rt: (path: string) => string): PeftExport {
  const prefix = 'base_model.model.';
  const tensors = new Map([...exp.tensors].map(([k, v]) => [k.startsWith(prefix) ? prefix + rt(k.slice(prefix.length)) : k, v]));
  const config = { ...exp.config };
  const modules = Array.isArray(config.target_modules) ? (config.target_modules as unknown[]).filter((x): x is string => typeof x === 'string') : [];
  for (const key of ['target_modules', 'feedforward_modules', 'modules_to_save']) {
    const v = config[key];
    if (Array.isArray(v)) config[key] = v.map((x) => (typeof x === 'string' ? rt(x) : x));
  }
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    const v = config[key];
    if (!v || typeof v !== 'object' || Array.isArray(v)) continue;
    const entries = Object.entries(v as Record<string, unknown>);
    // AdaLoRA's pattern is keyed by full paths; a rank or α pattern may use short names that only
    // PEFT Lab's names match: written out per module, under the run-time path (which matches itself).
    if (entries.some(([, x]) => Array.isArray(x))) {
      config[key] = Object.fromEntries(entries.map(([k, x]) => [rt(k), x]));
      continue;
    }
    const out: Record<string, unknown> = {};
    for (const m of modules) {
      const k = [m, rt(m)].map((n) => patternKey(entries.map(([p]) => p), n)).find((x) => x !== undefined);
      if (k !== undefined) out[rt(m)] = (v as Record<string, unknown>)[k];
    }
    config[key] = out;
  }
  return { config, tensors };
}

/** Replaces `out[name]` by `value`, disposing the tensor it replaces. */
export function setMerged(out: Map<string, tf.Tensor>, name: string, value: tf.Tensor): void {
  const old = out.get(name);
  out.set(name, value);
  if (old && old !== value) old.dispose();
}

/** The weight a merge starts from: one already in `out` (another part merged it), else the adapter's base. */
export function currentWeight(core: AdapterCore, out: Map<string, tf.Tensor>, name: string): tf.Tensor | undefined {
  return out.get(name) ?? core.baseParam(name);
}

/**
 * A parameter-replacing part (BitFit, LN-tuning, full, modules_to_save, LoRA biases): merging puts
 * the trainable value (at the current layer scale) under the base name; unmerging the original.
 */
export function replacementPart(core: AdapterCore, names: readonly string[]): MergePart {
  return {
    merge(out) {
      for (const n of names) {
        const factor = core.scaleOf(core.layerOf(n));
        const t = core.tensor(n);
        const base = core.originalParam(n);
        setMerged(out, n, tf.tidy(() => (factor === 1 || !base ? tf.clone(t) : tf.add(base, tf.mul(tf.sub(t, base), factor)))));
      }
    },
    unmerge(out) {
      for (const n of names) {
        const base = core.originalParam(n);
        if (base) setMerged(out, n, tf.clone(base));
        else {
          out.get(n)?.dispose();
          out.delete(n);
        }
      }
    },
  };
}

/**
 * A part whose fold adds a weight update to each module's weight: merging adds `delta(module)` (in
 * the stored layout, at the current layer scale), unmerging subtracts it.
 */
export function additiveMergePart<M extends { info: { module: string } }>(core: AdapterCore, modules: readonly M[], delta: (mod: M) => tf.Tensor): MergePart {
  const fold = (out: Map<string, tf.Tensor>, sign: 1 | -1) => {
    for (const mod of modules) {
      const name = `${mod.info.module}.weight`;
      const w = sign === 1 ? currentWeight(core, out, name) : out.get(name);
      if (!w) continue;
      setMerged(out, name, tf.tidy(() => (sign === 1 ? tf.add(w, delta(mod)) : tf.sub(w, delta(mod)))));
    }
  };
  return { merge: (out) => fold(out, 1), unmerge: (out) => fold(out, -1) };
}
