/** Parameter-budget bars (pure): stacked per-layer series and totals for one allocation option. */
import type { BudgetLayerView, BudgetOptionView } from '../../../src/protocol/webview';

export type BudgetScale = 'absolute' | 'share';

export interface BudgetBars {
  labels: string[];
  lora: number[];
  sparse: number[];
  frozen: number[];
}

export interface BudgetTotals {
  lora: number;
  sparse: number;
  frozen: number;
  trainable: number;
  total: number;
  /** trainable / total (0 when total is 0). */
  trainableFraction: number;
  /** trainable / budget: how much of the budget the allocation uses. */
  budgetUse: number;
}

const nonNeg = (v: number) => (Number.isFinite(v) && v > 0 ? v : 0);

/**
 * Stacked series: absolute parameter counts, or each layer's share (0..1) of its own parameters.
 * `includeFrozen` off drops the frozen series (it dwarfs the trainable ones in absolute counts).
 */
export function budgetBars(layers: readonly BudgetLayerView[], scale: BudgetScale = 'absolute', includeFrozen = true): BudgetBars {
  const out: BudgetBars = { labels: [], lora: [], sparse: [], frozen: [] };
  for (const l of layers) {
    const lora = nonNeg(l.lora);
    const sparse = nonNeg(l.sparse);
    const frozen = includeFrozen ? nonNeg(l.frozen) : 0;
    const denom = scale === 'share' ? lora + sparse + nonNeg(l.frozen) : 1;
    const f = (v: number) => (denom > 0 ? v / denom : 0);
    out.labels.push(l.name);
    out.lora.push(f(lora));
    out.sparse.push(f(sparse));
    out.frozen.push(f(frozen));
  }
  return out;
}

export function budgetTotals(option: BudgetOptionView): BudgetTotals {
  let lora = 0;
  let sparse = 0;
  let frozen = 0;
  for (const l of option.layers) {
    lora += nonNeg(l.lora);
    sparse += nonNeg(l.sparse);
    frozen += nonNeg(l.frozen);
  }
  const trainable = lora + sparse;
  const total = trainable + frozen;
  return {
    lora,
    sparse,
    frozen,
    trainable,
    total,
    trainableFraction: total > 0 ? trainable / total : 0,
    budgetUse: option.budget > 0 ? trainable / option.budget : 0,
  };
}
