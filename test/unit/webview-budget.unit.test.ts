/** Parameter-budget bars and totals; comparison-table sorting; colours and formatting. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BudgetOptionView } from '../../src/protocol/webview';
import { budgetBars, budgetTotals } from '../../webviews/src/shared/budget';
import { contrast, mix, mostReadable, parseColor, withAlpha } from '../../webviews/src/shared/color';
import { formatCount, formatPercent, formatValue, isNiceLogTick } from '../../webviews/src/shared/format';
import { mergeUI } from '../../webviews/src/shared/state';
import { bestIndex, nextSort, sortRows } from '../../webviews/src/shared/table';

const option: BudgetOptionView = {
  label: 'SPT 1%',
  budget: 1000,
  key: 'spt:1%',
  layers: [
    { name: 'layer 0', lora: 600, sparse: 100, frozen: 9300 },
    { name: 'layer 1', lora: 0, sparse: 50, frozen: 9950 },
    { name: 'layer 2', lora: -5, sparse: NaN, frozen: 10000 },
  ],
};

describe('webview budget: bars and totals', () => {
  it('absolute counts, with or without the frozen series', () => {
    assert.deepEqual(budgetBars(option.layers, 'absolute', true), {
      labels: ['layer 0', 'layer 1', 'layer 2'],
      lora: [600, 0, 0],
      sparse: [100, 50, 0],
      frozen: [9300, 9950, 10000],
    });
    assert.deepEqual(budgetBars(option.layers, 'absolute', false).frozen, [0, 0, 0]);
  });

  it('share of each layer (frozen counted in the denominator even when hidden)', () => {
    const b = budgetBars(option.layers, 'share', false);
    assert.deepEqual(b.lora, [0.06, 0, 0]);
    assert.deepEqual(b.sparse, [0.01, 0.005, 0]);
    const withFrozen = budgetBars(option.layers, 'share', true);
    withFrozen.labels.forEach((_, i) => assert.ok(Math.abs(withFrozen.lora[i]! + withFrozen.sparse[i]! + withFrozen.frozen[i]! - 1) < 1e-12));
  });

  it('totals: trainable = LoRA + sparse; fractions of the model and of the budget', () => {
    const t = budgetTotals(option);
    assert.deepEqual({ lora: t.lora, sparse: t.sparse, frozen: t.frozen, trainable: t.trainable, total: t.total }, { lora: 600, sparse: 150, frozen: 29250, trainable: 750, total: 30000 });
    assert.equal(t.trainableFraction, 0.025);
    assert.equal(t.budgetUse, 0.75);
    assert.equal(budgetTotals({ ...option, budget: 0, layers: [] }).budgetUse, 0);
  });
});

describe('webview table: sorting', () => {
  const rows = [
    { n: 'b', v: 2 as number | undefined },
    { n: 'a10', v: undefined },
    { n: 'a2', v: 1 },
    { n: 'c', v: 2 },
    { n: 'd', v: NaN },
  ];

  it('is stable and puts missing values last in both directions', () => {
    assert.deepEqual(
      sortRows(rows, (r) => r.v, 'asc').map((r) => r.n),
      ['a2', 'b', 'c', 'a10', 'd'],
    );
    assert.deepEqual(
      sortRows(rows, (r) => r.v, 'desc').map((r) => r.n),
      ['b', 'c', 'a2', 'a10', 'd'],
    );
  });

  it('sorts strings with numeric collation', () => {
    assert.deepEqual(
      sortRows(rows, (r) => r.n, 'asc').map((r) => r.n),
      ['a2', 'a10', 'b', 'c', 'd'],
    );
  });

  it('finds the best row of a column and flips the sort on a second click', () => {
    assert.equal(bestIndex(rows, (r) => r.v, 'lower'), 2);
    assert.equal(bestIndex(rows, (r) => r.v, 'higher'), 0);
    assert.equal(bestIndex([{ v: undefined }], (r) => r.v, 'lower'), -1);
    assert.equal(bestIndex([{ v: 0 }, { v: 0 }], (r) => r.v, 'higher'), -1, 'a tie has no best');
    assert.equal(bestIndex([{ v: undefined }, { v: 3 }], (r) => r.v, 'higher'), 1);
    assert.deepEqual(nextSort(undefined, 'loss'), { key: 'loss', dir: 'asc' });
    assert.deepEqual(nextSort({ key: 'loss', dir: 'asc' }, 'loss'), { key: 'loss', dir: 'desc' });
    assert.deepEqual(nextSort({ key: 'loss', dir: 'desc' }, 'tps', 'desc'), { key: 'tps', dir: 'desc' });
  });
});

describe('webview colours, formatting, saved UI state', () => {
  it('parses the colour forms VS Code themes use', () => {
    assert.deepEqual(parseColor('#1a85ff'), { r: 26, g: 133, b: 255, a: 1 });
    assert.deepEqual(parseColor('#fff8'), { r: 255, g: 255, b: 255, a: 0x88 / 255 });
    assert.deepEqual(parseColor('#00000080'), { r: 0, g: 0, b: 0, a: 128 / 255 });
    assert.deepEqual(parseColor('rgba(10, 20, 30, 0.5)'), { r: 10, g: 20, b: 30, a: 0.5 });
    assert.deepEqual(parseColor('rgb(10 20 30 / 50%)'), { r: 10, g: 20, b: 30, a: 0.5 });
    assert.equal(parseColor('var(--x)'), undefined);
    assert.equal(withAlpha('#ff0000', 0.25), 'rgba(255, 0, 0, 0.25)');
    assert.equal(withAlpha('currentColor', 0.25), 'currentColor');
  });

  it('mixes and picks the most readable text colour', () => {
    const black = { r: 0, g: 0, b: 0, a: 1 };
    const white = { r: 255, g: 255, b: 255, a: 1 };
    assert.deepEqual(mix(black, white, 0.5), { r: 127.5, g: 127.5, b: 127.5, a: 1 });
    assert.ok(Math.abs(contrast(black, white) - 21) < 1e-9);
    assert.equal(mostReadable({ r: 30, g: 30, b: 30, a: 1 }, [black, white]), white);
    assert.equal(mostReadable({ r: 240, g: 240, b: 200, a: 1 }, [black, white]), black);
  });

  it('formats counts, values and percentages; labels 1-2-5 log ticks', () => {
    assert.equal(formatCount(8192), '8.19k');
    assert.equal(formatCount(859008), '859k');
    assert.equal(formatCount(4_300_000), '4.3M');
    assert.equal(formatCount(undefined), '–');
    assert.equal(formatValue(3.96961426), '3.97');
    assert.equal(formatValue(0.0000236), '2.36e-5');
    assert.equal(formatValue(NaN), '–');
    assert.equal(formatPercent(0.1234), '12.3%');
    assert.deepEqual([0.001, 0.002, 0.003, 0.005, 0.01, 0.07].map(isNiceLogTick), [true, true, false, true, true, false]);
  });

  it('restores saved UI settings only where the type matches', () => {
    const defaults = { smoothing: 0.6, logScale: false, xAxis: 'step', pinned: [] as string[] };
    assert.deepEqual(mergeUI(defaults, { smoothing: 0.9, logScale: 'yes', xAxis: 'time', pinned: ['layer 1'], extra: 1 }), { smoothing: 0.9, logScale: false, xAxis: 'time', pinned: ['layer 1'] });
    assert.deepEqual(mergeUI(defaults, { smoothing: NaN, pinned: 'layer 1' }), defaults);
    assert.deepEqual(mergeUI(defaults, undefined), defaults);
  });
});
