/**
 * Task-vector arithmetic on host arrays (methods.md, "Task-vector tools"). A task vector is
 * τ_t = θ_t − θ_base per tensor; each function takes the τ_t of one tensor and returns the merged
 * τ (the model is θ_base + merged τ).
 *
 *  - Breadcrumbs: per tensor, mask out the top β and bottom γ fractions of |τ_t|; Σ_t λ·w_t·m_t⊙τ_t.
 *  - ComPEFT: keep the top-k (density) magnitudes of τ, replace them by sign(τ)·α·σ(τ), σ the
 *    (population) standard deviation of the whole original τ: a ternary tensor with one scale.
 *  - TIES (PEFT's `ties`): trim each τ_t to its top density fraction by magnitude, elect the sign
 *    per entry as the sign of Σ_t trimmed τ_t (≥ 0 → +), then the disjoint mean of the weighted
 *    τ_t that agree with it (Σ agreeing / number agreeing, at least 1); times λ.
 *  - DARE (PEFT's `dare_linear`): keep each entry with probability density (seeded Bernoulli),
 *    rescale by 1/density, Σ_t w_t·τ_t'; times λ. `dare-ties`: the same pruning, then TIES's
 *    sign election and disjoint merge.
 *  - Soups: θ = mean_t θ_t, i.e. merged τ = mean_t τ_t.
 * Selections of "the k largest" are exact (ties by index), with k = ⌊fraction·n⌋ as PEFT's int().
 */
import { deriveSeed, Rng } from '../train/rng';
import { absolute, GlobalRanking } from './topk';

export type Vec = Float32Array;

const kOf = (fraction: number, n: number) => Math.max(0, Math.min(n, Math.floor(fraction * n + 1e-9)));

function check(taus: readonly Vec[], weights?: readonly number[]): number {
  if (taus.length === 0) throw new RangeError('no task vectors');
  const n = taus[0]!.length;
  if (taus.some((t) => t.length !== n)) throw new RangeError('task vectors of different sizes');
  if (weights && weights.length !== taus.length) throw new RangeError(`${weights.length} weights for ${taus.length} task vectors`);
  return n;
}

/** Keep-mask of Breadcrumbs: drops the ⌊top·n⌋ largest and ⌊bottom·n⌋ smallest |τ| entries. */
export function breadcrumbsMask(tau: Vec, top: number, bottom: number): Uint8Array {
  const n = tau.length;
  const r = new GlobalRanking([absolute(tau)]);
  const high = r.masks(kOf(top, n))[0]!;
  const keepAbove = r.masks(n - kOf(bottom, n))[0]!;
  const m = new Uint8Array(n);
  for (let i = 0; i < n; i++) m[i] = keepAbove[i]! && !high[i]! ? 1 : 0;
  return m;
}

export function breadcrumbs(taus: readonly Vec[], opts: { weights?: readonly number[]; lambda?: number; top: number; bottom: number }): Vec {
  const n = check(taus, opts.weights);
  const lambda = opts.lambda ?? 1;
  const out = new Float32Array(n);
  taus.forEach((tau, t) => {
    const m = breadcrumbsMask(tau, opts.top, opts.bottom);
    const w = lambda * (opts.weights?.[t] ?? 1);
    for (let i = 0; i < n; i++) if (m[i]) out[i]! += w * tau[i]!;
  });
  return out;
}

export function populationStd(x: Vec): number {
  if (x.length === 0) return 0;
  let mean = 0;
  for (let i = 0; i < x.length; i++) mean += x[i]!;
  mean /= x.length;
  let v = 0;
  for (let i = 0; i < x.length; i++) v += (x[i]! - mean) ** 2;
  return Math.sqrt(v / x.length);
}

/** ComPEFT of one tensor: ternary sign(τ)·α·σ(τ) on the top-k magnitudes. */
export function compeft(tau: Vec, density: number, alpha = 1): { values: Vec; kept: number; scale: number } {
  const n = tau.length;
  const k = kOf(density, n);
  const mask = new GlobalRanking([absolute(tau)]).masks(k)[0]!;
  const scale = alpha * populationStd(tau);
  const values = new Float32Array(n);
  let kept = 0;
  for (let i = 0; i < n; i++) {
    if (!mask[i] || tau[i] === 0) continue;
    values[i] = Math.sign(tau[i]!) * scale;
    kept++;
  }
  return { values, kept, scale };
}

/** Bytes of a ComPEFT tensor: positions (a bitmap or k indices, the smaller), k sign bits, one float32 scale. */
export function compeftBytes(n: number, kept: number): number {
  const indexBits = Math.max(1, Math.ceil(Math.log2(Math.max(2, n))));
  return Math.ceil((Math.min(n, kept * indexBits) + kept) / 8) + 4;
}

/** PEFT's magnitude prune: the top ⌊density·n⌋ |τ| kept. */
export function magnitudePrune(tau: Vec, density: number): Vec {
  const mask = new GlobalRanking([absolute(tau)]).masks(kOf(density, tau.length))[0]!;
  return tau.map((v, i) => (mask[i] ? v : 0));
}

/** PEFT's random prune with rescale: keep with probability `density` (seeded), divide by density. */
export function randomPrune(tau: Vec, density: number, rng: Rng): Vec {
  if (density <= 0) return new Float32Array(tau.length);
  return tau.map((v) => (rng.next() < density ? v / density : 0));
}

/** TIES's sign election (method "total") and disjoint merge of already-pruned vectors, with weights. */
export function disjointMerge(pruned: readonly Vec[], weights?: readonly number[]): Vec {
  const n = check(pruned, weights);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let total = 0;
    for (const p of pruned) total += p[i]!;
    const sign = total >= 0 ? 1 : -1;
    let sum = 0;
    let count = 0;
    pruned.forEach((p, t) => {
      if (Math.sign(p[i]!) === sign) {
        sum += p[i]! * (weights?.[t] ?? 1);
        count++;
      }
    });
    out[i] = sum / Math.max(1, count);
  }
  return out;
}

export function ties(taus: readonly Vec[], opts: { weights?: readonly number[]; lambda?: number; density: number }): Vec {
  check(taus, opts.weights);
  const merged = disjointMerge(taus.map((t) => magnitudePrune(t, opts.density)), opts.weights);
  const l = opts.lambda ?? 1;
  return l === 1 ? merged : merged.map((v) => v * l);
}

/** A seeded stream per (seed, task, tensor): DARE's masks do not depend on tensor order. */
export const dareRng = (seed: number, task: number, tensor: string) => new Rng(deriveSeed(seed, `dare:${task}:${tensor}`));

export function dare(taus: readonly Vec[], opts: { weights?: readonly number[]; lambda?: number; density: number; rng: (task: number) => Rng; ties?: boolean }): Vec {
  const n = check(taus, opts.weights);
  const pruned = taus.map((t, i) => randomPrune(t, opts.density, opts.rng(i)));
  const l = opts.lambda ?? 1;
  if (opts.ties) {
    const m = disjointMerge(pruned, opts.weights);
    return l === 1 ? m : m.map((v) => v * l);
  }
  const out = new Float32Array(n);
  pruned.forEach((p, t) => {
    const w = l * (opts.weights?.[t] ?? 1);
    for (let i = 0; i < n; i++) out[i]! += w * p[i]!;
  });
  return out;
}

/** Uniform soup of task vectors (θ = mean θ_t ⇔ τ = mean τ_t). */
export function average(taus: readonly Vec[]): Vec {
  const n = check(taus);
  const out = new Float32Array(n);
  for (const t of taus) for (let i = 0; i < n; i++) out[i]! += t[i]!;
  for (let i = 0; i < n; i++) out[i]! /= taus.length;
  return out;
}

/** Entries that differ from zero. */
export function nonzero(x: Vec): number {
  let c = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== 0) c++;
  return c;
}
