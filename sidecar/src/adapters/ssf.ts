/**
 * SSF (Scale & Shift Features, Lian et al. 2022): y' = γ ⊙ y + β after chosen linear modules and tap
 * points (norm outputs, attention/MLP sub-layer outputs); γ = 1, β = 0 at init. A layer scale f acts
 * as γ' = 1 + f(γ − 1), β' = f β.
 *
 * Merging folds each pair into weights: after a linear module into its weight rows and bias; after
 * a LayerNorm into its weight and bias; after an RMSNorm, γ into its weight and β into the biases of
 * the linear modules that read it (β ↦ W β); after a sub-layer into the sub-layer's output linear.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../models/architecture';
import { currentWeight, setMerged, type AdapterCore } from './core';
import type { TapPoint } from './targets';

export const ssfNames = (point: string) => ({ scale: `${point}.ssf_scale`, shift: `${point}.ssf_shift` });

export interface SsfTargets {
  linears: LinearModuleInfo[];
  taps: TapPoint[];
}

export function addSsf(core: AdapterCore, targets: SsfTargets): void {
  const d = core.model.config.hiddenSize;
  const register = (point: string, layer: number, width: number) => {
    const n = ssfNames(point);
    core.addTrainable(n.scale, tf.ones([width]), layer);
    core.addTrainable(n.shift, tf.zeros([width]), layer);
  };
  /** γ and β as the forward uses them, at the layer scale. */
  const affine = (g: tf.Tensor, b: tf.Tensor, layer: number) => {
    const f = core.scaleOf(layer);
    return f === 1 ? { g, b } : { g: tf.add(tf.mul(tf.sub(g, 1), f), 1), b: tf.mul(b, f) };
  };
  for (const lin of targets.linears) {
    register(lin.module, lin.layer, lin.outFeatures);
    const n = ssfNames(lin.module);
    core.addLinearHook(lin.module, (x, _layer, base, f) => {
      const { g, b } = affine(core.get(f, n.scale), core.get(f, n.shift), lin.layer);
      return tf.add(tf.mul(base(x), g), b) as tf.Tensor2D;
    });
  }
  for (const tap of targets.taps) {
    register(tap.point, tap.layer, d);
    const n = ssfNames(tap.point);
    core.addTapHook(tap.point, (x, f) => {
      const { g, b } = affine(core.get(f, n.scale), core.get(f, n.shift), tap.layer);
      return tf.add(tf.mul(x, g), b);
    });
  }

  const linearInfo = new Map(core.model.arch.linearModules(core.model.config).map((m) => [m.module, m]));
  /** Fresh copies of γ and β at the layer scale (the caller disposes them). */
  const hostAffine = (point: string, layer: number) => {
    const { g, b } = affine(core.tensor(ssfNames(point).scale), core.tensor(ssfNames(point).shift), layer);
    return { g: tf.clone(g), b: tf.clone(b) };
  };
  /** Folds y ↦ γ y + β into a linear module (weight rows of the output, bias). */
  const foldIntoLinear = (out: Map<string, tf.Tensor>, module: string, fanInFanOut: boolean, g: tf.Tensor, b: tf.Tensor, outFeatures: number) => {
    const w = currentWeight(core, out, `${module}.weight`)!;
    setMerged(out, `${module}.weight`, tf.tidy(() => tf.mul(w, fanInFanOut ? tf.reshape(g, [1, -1]) : tf.reshape(g, [-1, 1]))));
    const bias = currentWeight(core, out, `${module}.bias`);
    setMerged(out, `${module}.bias`, tf.tidy(() => tf.add(tf.mul(bias ?? tf.zeros([outFeatures]), g), b)));
  };
  const unfoldLinear = (out: Map<string, tf.Tensor>, module: string, fanInFanOut: boolean, g: tf.Tensor, b: tf.Tensor) => {
    const w = out.get(`${module}.weight`);
    if (w) setMerged(out, `${module}.weight`, tf.tidy(() => tf.div(w, fanInFanOut ? tf.reshape(g, [1, -1]) : tf.reshape(g, [-1, 1]))));
    const bias = out.get(`${module}.bias`);
    if (bias) {
      if (core.originalParam(`${module}.bias`)) setMerged(out, `${module}.bias`, tf.tidy(() => tf.div(tf.sub(bias, b), g)));
      else {
        bias.dispose();
        out.delete(`${module}.bias`);
      }
    }
  };

  core.mergeParts.push({
    merge(out) {
      // Order matters: shifts after an RMSNorm first go into the consumers' biases (through their
      // unmerged weights), then the consumers' own SSF scales the result; sub-layer taps come last.
      for (const tap of targets.taps.filter((t) => t.kind === 'norm')) {
        const { g, b } = tf.tidy(() => hostAffine(tap.point, tap.layer));
        const w = currentWeight(core, out, tap.normWeight!)!;
        const k = tap.normOffset ?? 0; // the norm scales by (k + w): (k + w)·g = k + w'
        setMerged(out, tap.normWeight!, tf.tidy(() => (k ? tf.sub(tf.mul(tf.add(w, k), g), k) : tf.mul(w, g))));
        if (tap.normBias) {
          const nb = currentWeight(core, out, tap.normBias)!;
          setMerged(out, tap.normBias, tf.tidy(() => tf.add(tf.mul(nb, g), b)));
        } else {
          if (!tap.consumers?.length) {
            const nonzero = tf.tidy(() => tf.any(tf.notEqual(b, 0)).dataSync()[0]);
            if (nonzero) throw new Error(`SSF shift at ${tap.point} cannot be merged: this bias-free norm feeds the residual stream (or nothing with a bias), which cannot absorb it`);
          }
          for (const c of tap.consumers ?? []) {
            const info = linearInfo.get(c)!;
            const w = currentWeight(core, out, `${c}.weight`)!;
            const cb = currentWeight(core, out, `${c}.bias`);
            setMerged(out, `${c}.bias`, tf.tidy(() => tf.add(cb ?? tf.zeros([info.outFeatures]), tf.squeeze(tf.matMul(w, tf.reshape(b, [-1, 1]), info.fanInFanOut, false), [1]))));
          }
        }
        tf.dispose([g, b]);
      }
      for (const lin of targets.linears) {
        const { g, b } = tf.tidy(() => hostAffine(lin.module, lin.layer));
        foldIntoLinear(out, lin.module, lin.fanInFanOut, g, b, lin.outFeatures);
        tf.dispose([g, b]);
      }
      for (const tap of targets.taps.filter((t) => t.kind === 'sublayer')) {
        const info = linearInfo.get(tap.outputLinear!)!;
        const { g, b } = tf.tidy(() => hostAffine(tap.point, tap.layer));
        foldIntoLinear(out, info.module, info.fanInFanOut, g, b, info.outFeatures);
        tf.dispose([g, b]);
      }
    },
    unmerge(out) {
      for (const tap of targets.taps.filter((t) => t.kind === 'sublayer').reverse()) {
        const info = linearInfo.get(tap.outputLinear!)!;
        const { g, b } = tf.tidy(() => hostAffine(tap.point, tap.layer));
        unfoldLinear(out, info.module, info.fanInFanOut, g, b);
        tf.dispose([g, b]);
      }
      for (const lin of [...targets.linears].reverse()) {
        const { g, b } = tf.tidy(() => hostAffine(lin.module, lin.layer));
        unfoldLinear(out, lin.module, lin.fanInFanOut, g, b);
        tf.dispose([g, b]);
      }
      for (const tap of targets.taps.filter((t) => t.kind === 'norm').reverse()) {
        const { g, b } = tf.tidy(() => hostAffine(tap.point, tap.layer));
        const w = out.get(tap.normWeight!);
        const k = tap.normOffset ?? 0;
        if (w) setMerged(out, tap.normWeight!, tf.tidy(() => (k ? tf.sub(tf.div(tf.add(w, k), g), k) : tf.div(w, g))));
        if (tap.normBias) {
          const nb = out.get(tap.normBias);
          if (nb) setMerged(out, tap.normBias, tf.tidy(() => tf.div(tf.sub(nb, b), g)));
        } else {
          for (const c of tap.consumers ?? []) {
            const info = linearInfo.get(c)!;
            const cb = out.get(`${c}.bias`);
            const cw = out.get(`${c}.weight`) ?? core.baseParam(`${c}.weight`)!;
            if (!cb) continue;
            if (core.originalParam(`${c}.bias`)) {
              setMerged(out, `${c}.bias`, tf.tidy(() => tf.sub(cb, tf.squeeze(tf.matMul(cw, tf.reshape(b, [-1, 1]), info.fanInFanOut, false), [1]))));
            } else {
              cb.dispose();
              out.delete(`${c}.bias`);
            }
          }
        }
        tf.dispose([g, b]);
      }
    },
  });
}
