/**
 * AdamW with PyTorch's semantics (decoupled weight decay applied before the moment update, bias
 * correction, eps outside the square root). Parameters are plain tensors in a map the optimizer
 * updates in place: each step disposes the old tensors and stores the new ones.
 */
import * as tf from '@tensorflow/tfjs-core';
import { adamWStepScalars, fusedAdamW, type AdamWScalars } from '../backend/native/fused';

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}
export const ADAMW_DEFAULTS: AdamWOptions = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

export interface AdamWState {
  /** Optimizer steps taken. */
  step: number;
  /**
   * Updates each tensor has had (PyTorch's per-parameter `state['step']`): bias correction follows
   * each tensor's own count, which differs from `step` when some steps leave tensors out (IST).
   */
  steps: Map<string, number>;
  m: Map<string, tf.Tensor>;
  v: Map<string, tf.Tensor>;
}

export class AdamW {
  readonly opts: AdamWOptions;
  state: AdamWState = { step: 0, steps: new Map(), m: new Map(), v: new Map() };

  constructor(opts: Partial<AdamWOptions> = {}) {
    this.opts = { ...ADAMW_DEFAULTS, ...opts };
  }

  /**
   * One update of `params` (only the names in `grads`) at learning rate `lr`, times `lrScale(name)`
   * for each tensor (LoRA+'s faster B matrices; 1 by default). `decay(name)` says whether weight
   * decay applies (PEFT practice: not to biases and norms when asked).
   */
  step(params: Map<string, tf.Tensor>, grads: ReadonlyMap<string, tf.Tensor>, lr = this.opts.lr, decay: (name: string) => boolean = () => true, lrScale: (name: string) => number = () => 1): void {
    const { beta1, beta2, eps, weightDecay } = this.opts;
    this.state.step++;
    // Tensors grouped by their own update count (one group unless some steps left tensors out) and
    // learning rate (one unless LoRA+ scales some).
    const groups = new Map<string, { t: number; lr: number; grads: Map<string, tf.Tensor> }>();
    for (const [name, g] of grads) {
      const t = (this.state.steps.get(name) ?? 0) + 1;
      const groupLr = lr * lrScale(name);
      const key = `${t}:${groupLr}`;
      let group = groups.get(key);
      if (!group) groups.set(key, (group = { t, lr: groupLr, grads: new Map() }));
      group.grads.set(name, g);
    }
    for (const { t, lr: groupLr, grads: group } of groups.values()) {
      const c1 = 1 - beta1 ** t;
      const c2 = 1 - beta2 ** t;
      const scalars = adamWStepScalars({ lr: groupLr, c1, c2 }, weightDecay);
      try {
        this.update(params, group, { beta1, beta2, eps, lr: groupLr, weightDecay, c1, c2 }, scalars, decay);
      } finally {
        scalars.dispose();
      }
      for (const name of group.keys()) this.state.steps.set(name, t);
    }
  }

  private update(params: Map<string, tf.Tensor>, grads: ReadonlyMap<string, tf.Tensor>, k: Omit<AdamWScalars, 'decay' | 'hasDecay'> & { weightDecay: number }, scalars: tf.Tensor1D, decay: (name: string) => boolean): void {
    const { beta1, beta2, eps, lr, weightDecay, c1, c2 } = k;
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (!p) throw new Error(`AdamW: no parameter ${name}`);
      const m0 = this.state.m.get(name);
      const v0 = this.state.v.get(name);
      const decays = weightDecay > 0 && decay(name);
      // One fused kernel where the backend has it (bitwise equal to the composite below).
      const fused = fusedAdamW(p, g, m0, v0, { beta1, beta2, eps, lr, decay: decays ? 1 - lr * weightDecay : 1, hasDecay: decays, c1, c2, inPlace: true }, scalars);
      const [pNew, m, v] = fused ?? tf.tidy(() => {
        const m = m0 ? tf.add(tf.mul(m0, beta1), tf.mul(g, 1 - beta1)) : tf.mul(g, 1 - beta1);
        const v = v0 ? tf.add(tf.mul(v0, beta2), tf.mul(tf.mul(g, g), 1 - beta2)) : tf.mul(tf.mul(g, g), 1 - beta2);
        const decayed = decays ? tf.mul(p, 1 - lr * weightDecay) : p;
        const update = tf.div(tf.div(m, c1), tf.add(tf.sqrt(tf.div(v, c2)), eps));
        return [tf.sub(decayed, tf.mul(update, lr)), m, v];
      });
      tf.dispose([p, m0, v0].filter((x): x is tf.Tensor => x !== undefined));
      params.set(name, pNew);
      this.state.m.set(name, m);
      this.state.v.set(name, v);
    }
  }

  dispose(): void {
    tf.dispose([...this.state.m.values(), ...this.state.v.values()]);
    this.state = { step: 0, steps: new Map(), m: new Map(), v: new Map() };
  }
}
