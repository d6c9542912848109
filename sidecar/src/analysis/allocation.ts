/**
 * Trainable-parameter budgets from importance scores (methods.md, "SPT" and "Budgets").
 *
 * SPT: take the top-k entries, by sensitivity, of all candidate tensors. A matrix with c selected
 * entries gets a LoRA of rank r (cost r(in + out)) when c ≥ r(in + out)/α, else its c entries train
 * (sparse); a vector (bias, norm) trains whole (cost dim) when c ≥ dim/β, else its c entries. The
 * cost is non-decreasing in k (a tensor switching to LoRA or whole costs at least what its entries
 * did), so a binary search finds the largest k whose cost fits each budget: cost(k) ≤ B < cost(k+1).
 *
 * Rank allocation: LoRA ranks per linear module proportional to the module's importance under a
 * total LoRA parameter budget: ideal r*_m = B·I_m/ΣI / (in_m + out_m), rounded down to the allowed
 * set, then upgraded one step at a time (largest r*_m − r_m first) while the next step fits.
 */
import type { LayerGrid, SptCell, SptDecision } from '../../../src/protocol';
import { GlobalRanking } from './topk';

export interface SptOptions {
  /** LoRA rank r. */
  r: number;
  /** α: LoRA when selected ≥ r(in + out)/α. */
  alphaRatio: number;
  /** β: whole vector when selected ≥ dim/β. */
  beta: number;
}

export const SPT_DEFAULTS: SptOptions = { r: 8, alphaRatio: 10, beta: 5 };

export interface Candidate {
  name: string;
  layer: number;
  type: string;
  shape: number[];
  /** Per-entry sensitivity, row-major. */
  scores: Float32Array;
  /** The linear module it belongs to (weights and biases of linear modules). */
  module?: string;
}

export const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
export const isMatrix = (c: { shape: readonly number[] }) => c.shape.length === 2;

/** SPT's rule for one tensor with `c` selected entries. */
export function sptDecision(c: { shape: readonly number[] }, selected: number, o: SptOptions): { decision: SptDecision; cost: number } {
  if (selected <= 0) return { decision: 'frozen', cost: 0 };
  const size = sizeOf(c.shape);
  if (isMatrix(c)) {
    const lora = o.r * (c.shape[0]! + c.shape[1]!);
    return selected >= lora / o.alphaRatio ? { decision: 'lora', cost: lora } : { decision: 'sparse', cost: selected };
  }
  return selected >= size / o.beta ? { decision: 'full', cost: size } : { decision: 'sparse', cost: selected };
}

export class SptAllocator {
  private readonly ranking: GlobalRanking;

  constructor(
    readonly candidates: readonly Candidate[],
    readonly opts: SptOptions = SPT_DEFAULTS,
  ) {
    this.ranking = new GlobalRanking(candidates.map((c) => c.scores));
  }

  get total(): number {
    return this.ranking.total;
  }

  decisions(k: number): { selected: number; decision: SptDecision; cost: number }[] {
    return this.ranking.counts(k).map((c, i) => ({ selected: c, ...sptDecision(this.candidates[i]!, c, this.opts) }));
  }

  costAt(k: number): number {
    return this.decisions(k).reduce((s, d) => s + d.cost, 0);
  }

  /** The largest k with cost(k) ≤ budget (0 when even one entry costs more). */
  maxK(budget: number): number {
    let lo = 0;
    let hi = this.total;
    if (this.costAt(hi) <= budget) return hi;
    // Invariant: cost(lo) ≤ budget < cost(hi).
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (this.costAt(mid) <= budget) lo = mid;
      else hi = mid;
    }
    return lo;
  }

  /** 0/1 masks of the selected entries (the top-c of each tensor). */
  masks(k: number): Uint8Array[] {
    return this.ranking.masks(k);
  }
}

/**
 * A budget as written: a percentage in (0%, 100%] of `total`, or a whole parameter count in
 * [1, total]. A budget that trains nothing or more than the model is refused, not clamped.
 */
export function parseBudget(s: string, total: number): number {
  const t = s.trim();
  const pct = /^([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)%$/i.exec(t);
  if (pct) {
    const p = Number(pct[1]);
    if (!(p > 0 && p <= 100)) throw new RangeError(`a percentage budget is in (0%, 100%]; got '${s}'`);
    const n = Math.floor((p / 100) * total);
    if (n < 1) throw new RangeError(`${t} of ${total} parameters is less than one parameter`);
    return n;
  }
  const n = Number(t);
  if (!Number.isFinite(n) || n < 0 || t === '') throw new RangeError(`a budget is "0.5%" (of ${total} parameters) or a parameter count; got '${s}'`);
  // A bare fraction is most likely a percentage missing its '%'.
  if (!Number.isInteger(n)) throw new RangeError(`${t} is not a whole number of parameters${n <= 100 ? `: did you mean ${t}%?` : ''}`);
  if (n < 1) throw new RangeError(`a budget of 0 parameters trains nothing; give a count ≥ 1 or a percentage`);
  if (n > total) throw new RangeError(`${t} parameters is more than the model's ${total}`);
  return n;
}

/** File-name-safe label of a budget ("0.5%" → "0.5pct"). */
export const budgetLabel = (s: string) => s.trim().replace(/%$/, 'pct').replace(/[^A-Za-z0-9._-]/g, '_');

export interface RankModule {
  module: string;
  layer: number;
  type: string;
  inFeatures: number;
  outFeatures: number;
  importance: number;
}

export interface RankChoice extends RankModule {
  ideal: number;
  rank: number;
  params: number;
}

/** LoRA ranks from `ranks` (ascending, 0 allowed) proportional to importance, within `budget` parameters. */
export function allocateRanks(modules: readonly RankModule[], budget: number, ranks: readonly number[]): RankChoice[] {
  const set = [...new Set(ranks)].filter((r) => Number.isInteger(r) && r >= 0).sort((a, b) => a - b);
  if (set.length === 0) throw new RangeError('rank set is empty');
  if (set[0] !== 0) set.unshift(0);
  const totalI = modules.reduce((s, m) => s + Math.max(0, m.importance), 0);
  const out: RankChoice[] = modules.map((m) => {
    const width = m.inFeatures + m.outFeatures;
    const ideal = totalI > 0 ? (budget * Math.max(0, m.importance)) / totalI / width : 0;
    const allowed = set.filter((r) => r <= Math.min(m.inFeatures, m.outFeatures));
    const rank = [...allowed].reverse().find((r) => r <= ideal) ?? 0;
    return { ...m, ideal, rank, params: rank * width };
  });
  let spent = out.reduce((s, m) => s + m.params, 0);
  for (;;) {
    let best = -1;
    let bestKey = -Infinity;
    out.forEach((m, i) => {
      const width = m.inFeatures + m.outFeatures;
      const next = set.find((r) => r > m.rank && r <= Math.min(m.inFeatures, m.outFeatures));
      if (next === undefined || spent + (next - m.rank) * width > budget || m.importance <= 0) return;
      const key = m.ideal - m.rank;
      if (key > bestKey || (key === bestKey && m.importance > out[best]!.importance)) {
        best = i;
        bestKey = key;
      }
    });
    if (best < 0) break;
    const m = out[best]!;
    const width = m.inFeatures + m.outFeatures;
    const next = set.find((r) => r > m.rank)!;
    spent += (next - m.rank) * width;
    m.rank = next;
    m.params = next * width;
  }
  return out;
}

/** PEFT's LoRA config fields for per-module ranks: the most common rank as `r`, the others as patterns. */
export function peftRankConfig(choices: readonly { module: string; rank: number }[], alphaPerRank: number): {
  targets: string[];
  r: number;
  alpha: number;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
} {
  const used = choices.filter((c) => c.rank > 0);
  const counts = new Map<number, number>();
  for (const c of used) counts.set(c.rank, (counts.get(c.rank) ?? 0) + 1);
  let r = 0;
  let best = -1;
  for (const [rank, n] of counts) if (n > best || (n === best && rank > r)) [r, best] = [rank, n];
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const c of used) {
    if (c.rank === r) continue;
    rankPattern[c.module] = c.rank;
    alphaPattern[c.module] = alphaPerRank * c.rank;
  }
  return { targets: used.map((c) => c.module), r, alpha: alphaPerRank * r, rankPattern, alphaPattern };
}

export type { LayerGrid, SptCell };
