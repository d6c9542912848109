/**
 * LoHa and LoKr (the LyCORIS family) on linear modules, as Hugging Face PEFT computes them
 * (`loha/layer.py`, `lokr/layer.py`): the update is a weight ΔW [out, in] made of small factors,
 *
 *   LoHa:  ΔW = s · (w1_a·w1_b) ⊙ (w2_a·w2_b)      w1_a, w2_a [out, r]; w1_b, w2_b [r, in]
 *   LoKr:  ΔW = s · W1 ⊗ W2 (Kronecker product)    W1 [a, c] = lokr_w1 or w1_a·w1_b; W2 [b, d] likewise
 *
 * with s = α/r, and for LoKr out = a·b, in = c·d as PEFT's `factorization` splits them; then
 * y = base(x) + x·ΔWᵀ. LoKr is applied without forming ΔW: (W1 ⊗ W2)·vec(X) = vec(W1·X·W2ᵀ) for an
 * input row viewed as X [c, d], which costs c·d·(a + b) per row instead of a·b·c·d.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LinearModuleInfo } from '../models/architecture';
import { additiveMergePart, type AdapterCore } from './core';

/** A module whose update is a weight built from named factors. */
export interface DeltaModule {
  info: LinearModuleInfo;
  r: number;
  alpha: number;
  /** s = α / r */
  scale: number;
  /** Factor tensors by PEFT's name for them (`hada_w1_a`, `lokr_w1`, ...); the core owns them once added. */
  factors: Map<string, tf.Tensor>;
}

type Factor = (name: string) => tf.Tensor2D;

/** How a LyCORIS method builds its update from a module's factors (both without the scale s). */
export interface DeltaMethod {
  /** ΔW / s as [out, in]. */
  delta(factor: Factor, mod: DeltaModule): tf.Tensor2D;
  /** x·(ΔW / s)ᵀ for x [N, in]. */
  apply(x: tf.Tensor2D, factor: Factor, mod: DeltaModule): tf.Tensor2D;
}

/** PyTorch's kaiming_uniform_(a=√5) for a [rows, fanIn] tensor: U(−1/√fanIn, 1/√fanIn). */
export function kaimingUniform(shape: [number, number], seed: number): tf.Tensor2D {
  const bound = 1 / Math.sqrt(shape[1]);
  return tf.randomUniform(shape, -bound, bound, 'float32', seed) as tf.Tensor2D;
}

// ---- LoHa -----------------------------------------------------------------------------------

export const LOHA_FACTORS = ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'] as const;

export const LOHA: DeltaMethod = {
  delta: (f) => tf.mul(tf.matMul(f('hada_w1_a'), f('hada_w1_b')), tf.matMul(f('hada_w2_a'), f('hada_w2_b'))) as tf.Tensor2D,
  apply(x, f, mod) {
    // The Hadamard product has no low-rank form: form ΔW, as PEFT does.
    return tf.matMul(x, LOHA.delta(f, mod), false, true);
  },
};

/** PEFT's LoHa init: w1_a, w1_b, w2_a Kaiming-uniform, w2_b zero (so ΔW starts at 0). */
export function lohaFactors(info: LinearModuleInfo, r: number, seed: number): Map<string, tf.Tensor> {
  const { outFeatures: out, inFeatures: inF } = info;
  return new Map<string, tf.Tensor>([
    ['hada_w1_a', kaimingUniform([out, r], seed)],
    ['hada_w1_b', kaimingUniform([r, inF], seed + 1)],
    ['hada_w2_a', kaimingUniform([out, r], seed + 2)],
    ['hada_w2_b', tf.zeros([r, inF])],
  ]);
}

/** The LoHa factor shapes of a module. */
export function lohaShapes(info: LinearModuleInfo, r: number): Map<string, [number, number]> {
  const { outFeatures: out, inFeatures: inF } = info;
  return new Map<string, [number, number]>([
    ['hada_w1_a', [out, r]],
    ['hada_w1_b', [r, inF]],
    ['hada_w2_a', [out, r]],
    ['hada_w2_b', [r, inF]],
  ]);
}

// ---- LoKr -----------------------------------------------------------------------------------

/**
 * PEFT's (LyCORIS's) `factorization`: dimension = m·n; [factor, dimension / factor] when `factor`
 * divides it (in that order, even when factor is the larger), else the pair with m ≤ n nearest the
 * square root with m ≤ factor (factor −1: no bound).
 */
export function factorization(dimension: number, factor = -1): [number, number] {
  if (factor > 0 && dimension % factor === 0) return [factor, dimension / factor];
  const bound = factor === -1 ? dimension : factor;
  let m = 1;
  let n = dimension;
  const length = m + n;
  while (m < n) {
    let next = m + 1;
    while (dimension % next !== 0) next++;
    const nextN = dimension / next;
    if (next + nextN > length || next > bound) break;
    m = next;
    n = nextN;
  }
  return m > n ? [n, m] : [m, n];
}

export interface LokrLayout {
  /** W1 [a, c], W2 [b, d]: out = a·b, in = c·d. */
  a: number;
  b: number;
  c: number;
  d: number;
  /** W1 whole (`lokr_w1`) rather than `lokr_w1_a`·`lokr_w1_b`; the same for W2. */
  wholeW1: boolean;
  wholeW2: boolean;
}

/** PEFT's LoKr layout of a linear module (LoKrLayer.update_layer). */
export function lokrLayout(info: LinearModuleInfo, r: number, decomposeBoth: boolean, decomposeFactor: number): LokrLayout {
  const [c, d] = factorization(info.inFeatures, decomposeFactor);
  const [a, b] = factorization(info.outFeatures, decomposeFactor);
  return { a, b, c, d, wholeW1: !(decomposeBoth && r < Math.max(a, c) / 2), wholeW2: !(r < Math.max(b, d) / 2) };
}

/** The LoKr factor shapes of a module. */
export function lokrShapes(layout: LokrLayout, r: number): Map<string, [number, number]> {
  const { a, b, c, d } = layout;
  const out = new Map<string, [number, number]>();
  if (layout.wholeW1) out.set('lokr_w1', [a, c]);
  else out.set('lokr_w1_a', [a, r]).set('lokr_w1_b', [r, c]);
  if (layout.wholeW2) out.set('lokr_w2', [b, d]);
  else out.set('lokr_w2_a', [b, r]).set('lokr_w2_b', [r, d]);
  return out;
}

/** PEFT's LoKr init: W1 zero (w1_a zero, w1_b Kaiming-uniform), W2 Kaiming-uniform. */
export function lokrFactors(layout: LokrLayout, r: number, seed: number): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  let i = 0;
  for (const [name, shape] of lokrShapes(layout, r)) {
    const zero = name === 'lokr_w1' || name === 'lokr_w1_a';
    out.set(name, zero ? tf.zeros(shape) : kaimingUniform(shape, seed + i));
    i++;
  }
  return out;
}

function lokrParts(f: Factor, mod: DeltaModule): { w1: tf.Tensor2D; w2: tf.Tensor2D } {
  const has = (n: string) => mod.factors.has(n);
  const w1 = has('lokr_w1') ? f('lokr_w1') : (tf.matMul(f('lokr_w1_a'), f('lokr_w1_b')) as tf.Tensor2D);
  const w2 = has('lokr_w2') ? f('lokr_w2') : (tf.matMul(f('lokr_w2_a'), f('lokr_w2_b')) as tf.Tensor2D);
  return { w1, w2 };
}

export const LOKR: DeltaMethod = {
  delta(f, mod) {
    const { w1, w2 } = lokrParts(f, mod);
    const [a, c] = w1.shape;
    const [b, d] = w2.shape;
    // kron(W1, W2)[i·b + k, j·d + l] = W1[i, j]·W2[k, l]
    return tf.reshape(tf.mul(tf.reshape(w1, [a, 1, c, 1]), tf.reshape(w2, [1, b, 1, d])), [a * b, c * d]) as tf.Tensor2D;
  },
  apply(x, f, mod) {
    const { w1, w2 } = lokrParts(f, mod);
    const [a, c] = w1.shape;
    const [b, d] = w2.shape;
    const n = x.shape[0];
    // X [n, c, d] → X·W1ᵀ over c: [n, d, a] → ·W2ᵀ over d: [n, a, b].
    const xt = tf.reshape(tf.transpose(tf.reshape(x, [n, c, d]), [0, 2, 1]), [n * d, c]);
    const u = tf.reshape(tf.transpose(tf.reshape(tf.matMul(xt, w1, false, true), [n, d, a]), [0, 2, 1]), [n * a, d]);
    return tf.reshape(tf.matMul(u, w2, false, true), [n, a * b]) as tf.Tensor2D;
  },
};

// ---- shared: registration, hooks, merge ------------------------------------------------------

export const factorName = (module: string, factor: string) => `${module}.${factor}`;

/**
 * Registers the modules' factors (trainable), hooks and merge part on `core`; takes ownership of
 * the factor tensors.
 */
export function addDeltaModules(core: AdapterCore, modules: DeltaModule[], method: DeltaMethod): void {
  for (const mod of modules) {
    const m = mod.info.module;
    for (const [name, t] of mod.factors) core.addTrainable(factorName(m, name), t, mod.info.layer);
    core.addLinearHook(m, (x, _layer, base, f) => {
      const y = base(x);
      const s = mod.scale * core.scaleOf(mod.info.layer);
      if (s === 0) return y;
      const d = method.apply(x, (name) => core.get(f, factorName(m, name)) as tf.Tensor2D, mod);
      return tf.add(y, s === 1 ? d : tf.mul(d, s));
    });
  }
  core.mergeParts.push(additiveMergePart(core, modules, (mod) => storedDelta(core, method, mod)));
}

/** f·s·ΔW in the module's stored layout. */
function storedDelta(core: AdapterCore, method: DeltaMethod, mod: DeltaModule): tf.Tensor {
  const d = tf.mul(method.delta((name) => core.tensor(factorName(mod.info.module, name)) as tf.Tensor2D, mod), mod.scale * core.scaleOf(mod.info.layer));
  return mod.info.fanInFanOut ? tf.transpose(d) : d;
}
