/**
 * AdaLoRA (Zhang et al., 2023) as Hugging Face PEFT computes it (`adalora/layer.py`, `model.py`):
 * an SVD-shaped update per linear module, with A [r, in] (P's rows), E [r, 1] (the singular values)
 * and B [out, r] (Q's columns):
 *
 *   y = base(x) + (dropout(x)·(A ⊙ E)ᵀ·Bᵀ) · α / (r₀ + 1e-5)        (r₀ = init_r, fixed)
 *
 * trained with an orthogonality penalty, w · mean over the A and B matrices of ‖AAᵀ − I‖_F and
 * ‖BᵀB − I‖_F, and a budget: after each optimizer step the RankAllocator smooths each entry's
 * sensitivity |p ⊙ g| (β₁) and its uncertainty (β₂), scores each singular value as its own score plus
 * the mean scores of its row of A and column of B, and zeroes the E entries below the budget's
 * threshold. The budget falls from init_r to target_r per module as a cubic between tinit and
 * total_step − tfinal, when the pattern is fixed; PEFT saves only the kept ranks, with that pattern.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensor } from '../io/safetensors';
import { toTf } from '../io/tensors';
import type { LinearModuleInfo } from '../models/architecture';
import { additiveMergePart, type AdapterCore } from './core';
import { tfSeed } from '../train/rng';

export const adaloraNames = (module: string) => ({ A: `${module}.lora_A`, E: `${module}.lora_E`, B: `${module}.lora_B` });

export interface AdaloraModule {
  info: LinearModuleInfo;
  /** [r, in] */
  A: tf.Tensor2D;
  /** [r, 1] */
  E: tf.Tensor2D;
  /** [out, r] */
  B: tf.Tensor2D;
}

/** PEFT's AdaLoraConfig schedule (total_step is the run's step count). */
export interface AdaloraSchedule {
  initR: number;
  targetR: number;
  tinit: number;
  tfinal: number;
  deltaT: number;
  beta1: number;
  beta2: number;
  orthRegWeight: number;
}

export const ADALORA_DEFAULTS: AdaloraSchedule = { initR: 12, targetR: 8, tinit: 0, tfinal: 0, deltaT: 1, beta1: 0.85, beta2: 0.85, orthRegWeight: 0.5 };

/** PEFT's init: A, B ~ N(0, 0.02²), E = 0. */
export function adaloraInit(info: LinearModuleInfo, r: number, seed: number): AdaloraModule {
  return {
    info,
    A: tf.randomNormal([r, info.inFeatures], 0, 0.02, 'float32', tfSeed(seed)) as tf.Tensor2D,
    E: tf.zeros([r, 1]),
    B: tf.randomNormal([info.outFeatures, r], 0, 0.02, 'float32', tfSeed(seed + 1)) as tf.Tensor2D,
  };
}

/** The scale α / (r₀ + 1e-5) of every module (PEFT's scaling is α, or r₀ when α ≤ 0). */
export function adaloraScale(alpha: number, initR: number): number {
  return (alpha > 0 ? alpha : initR) / (initR + 1e-5);
}

/** Registers the modules (trainable A, E, B), hooks and merge part; takes ownership of the tensors. */
export function addAdalora(core: AdapterCore, modules: AdaloraModule[], opts: { scale: number; dropout: number }): void {
  modules.forEach((mod, index) => {
    const n = adaloraNames(mod.info.module);
    const layer = mod.info.layer;
    core.addTrainable(n.A, mod.A, layer);
    core.addTrainable(n.E, mod.E, layer);
    core.addTrainable(n.B, mod.B, layer);
    if (mod.A.shape[0] === 0) return; // every rank pruned: nothing to add
    core.addLinearHook(mod.info.module, (x, _layer, base, f) => {
      const y = base(x);
      const s = opts.scale * core.scaleOf(layer);
      if (s === 0) return y;
      const xd = f.training && opts.dropout > 0 ? (tf.dropout(x, opts.dropout, undefined, core.stepSeed(index)) as tf.Tensor2D) : x;
      const h = tf.matMul(xd, tf.mul(core.get(f, n.A), core.get(f, n.E)), false, true);
      return tf.add(y, tf.mul(tf.matMul(h, core.get(f, n.B), false, true), s));
    });
  });
  core.mergeParts.push(
    // A module whose every rank was pruned adds nothing (and a matmul over an empty dimension is not defined everywhere).
    additiveMergePart(core, modules.filter((m) => m.A.shape[0] > 0), (mod) => {
      const n = adaloraNames(mod.info.module);
      const d = tf.mul(tf.matMul(core.tensor(n.B), tf.mul(core.tensor(n.A), core.tensor(n.E))), opts.scale * core.scaleOf(mod.info.layer));
      return mod.info.fanInFanOut ? tf.transpose(d) : d;
    }),
  );
}

/** w · mean over the modules' A and B of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F (PEFT's AdaLoraModel.forward). */
export function orthogonalityPenalty(modules: readonly string[], get: (name: string) => tf.Tensor, weight: number): tf.Scalar {
  return tf.tidy(() => {
    const terms: tf.Scalar[] = [];
    for (const m of modules) {
      const n = adaloraNames(m);
      const A = get(n.A);
      const B = get(n.B);
      const r = A.shape[0]!;
      if (r === 0) continue;
      const eye = tf.eye(r);
      terms.push(tf.norm(tf.sub(tf.matMul(A, A, false, true), eye)) as tf.Scalar);
      terms.push(tf.norm(tf.sub(tf.matMul(B, B, true, false), eye)) as tf.Scalar);
    }
    if (terms.length === 0) return tf.scalar(0);
    return tf.mul(tf.div(tf.addN(terms), terms.length), weight) as tf.Scalar;
  });
}

/** What the allocator did at a step: the budget, and whether E was masked to it. */
export interface AllocationStep {
  budget: number;
  masked: boolean;
}

/** The allocator's state in a checkpoint: the smoothed scores (tensors) and the fixed pattern (JSON). */
export interface AllocatorState {
  tensors: Map<string, tf.Tensor>;
  rankPattern: Record<string, boolean[]> | null;
}

/**
 * PEFT's RankAllocator with AdaLoraModel.update_and_allocate's phases. Call `afterStep` after each
 * optimizer step with its gradients; it replaces masked E tensors in `trainable`.
 */
export class RankAllocator {
  private readonly ipt = new Map<string, tf.Tensor>();
  private readonly unc = new Map<string, tf.Tensor>();
  /** Module → kept ranks, once fixed (at total_step − tfinal). */
  rankPattern: Record<string, boolean[]> | null = null;
  readonly initBudget: number;
  readonly targetBudget: number;

  constructor(
    readonly modules: readonly string[],
    private readonly ranks: ReadonlyMap<string, number>,
    readonly schedule: AdaloraSchedule,
    readonly totalSteps: number,
  ) {
    this.initBudget = modules.reduce((s, m) => s + ranks.get(m)!, 0);
    this.targetBudget = schedule.targetR * modules.length;
  }

  /** PEFT's budget_schedule: the budget at `step`, and whether to mask at it. */
  budgetAt(step: number): AllocationStep {
    const { tinit, tfinal, deltaT } = this.schedule;
    const total = this.totalSteps;
    if (step <= tinit) return { budget: this.initBudget, masked: false };
    if (step > total - tfinal) return { budget: this.targetBudget, masked: true };
    const mul = 1 - (step - tinit) / (total - tfinal - tinit);
    return { budget: Math.trunc((this.initBudget - this.targetBudget) * mul ** 3 + this.targetBudget), masked: step % deltaT === 0 };
  }

  /** update_and_allocate(step): smooth the scores, and mask E to the budget where the schedule says. */
  async afterStep(step: number, trainable: Map<string, tf.Tensor>, grads: ReadonlyMap<string, tf.Tensor>): Promise<AllocationStep> {
    const fixAt = this.totalSteps - this.schedule.tfinal;
    const at = this.budgetAt(step);
    if (step < fixAt) {
      this.updateScores(trainable, grads);
      if (at.masked) await this.maskToBudget(trainable, at.budget);
      return at;
    }
    if (step === fixAt) {
      this.rankPattern = await this.maskToBudget(trainable, at.budget);
      tf.dispose([...this.ipt.values(), ...this.unc.values()]);
      this.ipt.clear();
      this.unc.clear();
      return { ...at, masked: true };
    }
    if (this.rankPattern) this.applyPattern(trainable, this.rankPattern);
    return { budget: this.targetBudget, masked: true };
  }

  private updateScores(trainable: ReadonlyMap<string, tf.Tensor>, grads: ReadonlyMap<string, tf.Tensor>): void {
    const { beta1, beta2 } = this.schedule;
    for (const m of this.modules) {
      for (const name of Object.values(adaloraNames(m))) {
        const g = grads.get(name);
        if (!g) continue;
        const prevI = this.ipt.get(name);
        const prevU = this.unc.get(name);
        const [i, u] = tf.tidy(() => {
          const now = tf.abs(tf.mul(trainable.get(name)!, g));
          const i = prevI ? tf.add(tf.mul(prevI, beta1), tf.mul(now, 1 - beta1)) : tf.mul(now, 1 - beta1);
          const du = tf.abs(tf.sub(now, i));
          const u = prevU ? tf.add(tf.mul(prevU, beta2), tf.mul(du, 1 - beta2)) : tf.mul(du, 1 - beta2);
          return [tf.keep(i), tf.keep(u)];
        });
        prevI?.dispose();
        prevU?.dispose();
        this.ipt.set(name, i!);
        this.unc.set(name, u!);
      }
    }
  }

  /** Each singular value's score: its own, plus the mean over its row of A and its column of B. */
  private tripletScores(m: string): tf.Tensor1D {
    const n = adaloraNames(m);
    const score = (name: string) => tf.mul(this.ipt.get(name)!, this.unc.get(name)!);
    return tf.tidy(() => tf.addN([tf.reshape(score(n.E), [-1]), tf.mean(score(n.A), 1), tf.mean(score(n.B), 0)]) as tf.Tensor1D);
  }

  /** mask_to_budget: E entries scoring at or below the (initBudget − budget)-th smallest score become 0. */
  private async maskToBudget(trainable: Map<string, tf.Tensor>, budget: number): Promise<Record<string, boolean[]>> {
    const scores = new Map<string, Float32Array>();
    for (const m of this.modules) {
      if (!this.ipt.has(adaloraNames(m).E)) return this.keepAll();
      const t = this.tripletScores(m);
      scores.set(m, (await t.data()) as Float32Array);
      t.dispose();
    }
    const k = this.initBudget - budget;
    if (k <= 0) return this.keepAll();
    const all = Float64Array.from([...scores.values()].flatMap((s) => [...s])).sort();
    const threshold = all[k - 1]!;
    const pattern: Record<string, boolean[]> = {};
    for (const [m, s] of scores) pattern[m] = Array.from(s, (v) => !(v <= threshold));
    this.applyPattern(trainable, pattern);
    return pattern;
  }

  private keepAll(): Record<string, boolean[]> {
    return Object.fromEntries(this.modules.map((m) => [m, Array<boolean>(this.ranks.get(m)!).fill(true)]));
  }

  private applyPattern(trainable: Map<string, tf.Tensor>, pattern: Record<string, boolean[]>): void {
    for (const m of this.modules) {
      const name = adaloraNames(m).E;
      const keep = pattern[m];
      const old = trainable.get(name)!;
      if (!keep) continue;
      trainable.set(name, tf.keep(tf.tidy(() => tf.mul(old, tf.tensor2d(keep.map((b) => (b ? 1 : 0)), [keep.length, 1])))));
      old.dispose();
    }
  }

  state(): AllocatorState {
    const tensors = new Map<string, tf.Tensor>();
    for (const [n, t] of this.ipt) tensors.set(`ipt.${n}`, t);
    for (const [n, t] of this.unc) tensors.set(`unc.${n}`, t);
    return { tensors, rankPattern: this.rankPattern };
  }

  /** Restores state() from a checkpoint; throws naming the tensor or module that does not fit this adapter. */
  restore(tensors: ReadonlyMap<string, HostTensor>, rankPattern: Record<string, boolean[]> | null, shapeOf: (name: string) => readonly number[] | undefined): void {
    for (const [k, h] of tensors) {
      const name = k.replace(/^(ipt|unc)\./, '');
      const shape = shapeOf(name);
      if (name === k || !shape) throw new Error(`${k}: not a score of this adapter's tensors`);
      if (shape.length !== h.shape.length || shape.some((d, i) => d !== h.shape[i])) throw new Error(`${k}: shape [${h.shape.join(', ')}] differs from the tensor's [${shape.join(', ')}]`);
    }
    for (const [m, keep] of Object.entries(rankPattern ?? {}))
      if (!this.ranks.has(m) || keep.length !== this.ranks.get(m)) throw new Error(`rank pattern of ${m}: not one of this adapter's modules at rank ${this.ranks.get(m) ?? '?'}`);
    this.dispose();
    for (const [k, h] of tensors) (k.startsWith('ipt.') ? this.ipt : this.unc).set(k.slice(4), tf.keep(toTf(h)));
    this.rankPattern = rankPattern;
  }

  dispose(): void {
    tf.dispose([...this.ipt.values(), ...this.unc.values()]);
    this.ipt.clear();
    this.unc.clear();
  }
}
