/** Heatmap shaping: normalisation modes, layout and hit-testing, layer ranking, timeline frames. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cellAt, frameIndex, gridLayout, normalizeGrid, rankLayers } from '../../webviews/src/shared/heatmap';

describe('webview heatmap: normalisation', () => {
  const grid = [
    [1, 3, null],
    [5, 9, 2],
  ];

  it('scales the whole grid into [0, 1], keeping holes and padding ragged rows', () => {
    assert.deepEqual(normalizeGrid(grid, 'global'), [
      [0, 0.25, null],
      [0.5, 1, 0.125],
    ]);
    assert.deepEqual(normalizeGrid([[1], [2, 3]], 'global'), [
      [0, null],
      [0.5, 1],
    ]);
  });

  it('per layer (row) and per module type (column)', () => {
    assert.deepEqual(normalizeGrid(grid, 'layer'), [
      [0, 1, null],
      [3 / 7, 1, 0],
    ]);
    assert.deepEqual(normalizeGrid(grid, 'module'), [
      [0, 0, null],
      [1, 1, 1],
    ]);
  });

  it('a constant range maps to 1 (positive) or 0; non-finite values are holes', () => {
    assert.deepEqual(normalizeGrid([[2, 2]], 'global'), [[1, 1]]);
    assert.deepEqual(normalizeGrid([[0, 0]], 'global'), [[0, 0]]);
    assert.deepEqual(normalizeGrid([[NaN, 1, Infinity, 3]], 'global'), [[null, 0, null, 1]]);
  });

  it('log compresses decades: equal ratios get near-equal steps', () => {
    const n = normalizeGrid([[1e-6, 1e-4, 1e-2]], 'global', true)[0]!;
    assert.equal(n[0], 0);
    assert.equal(n[2], 1);
    assert.ok(n[1]! > 0.4 && n[1]! < 0.6, String(n[1]));
    assert.equal(normalizeGrid([[1e-6, 1e-4, 1e-2]], 'global', false)[0]![1]! < 0.02, true);
  });
});

describe('webview heatmap: layout and hit-testing', () => {
  const l = gridLayout(500, 230, 4, 3, { left: 80, top: 30 });

  it('fills the area after the label margins', () => {
    assert.equal(l.cellW, 140);
    assert.equal(l.cellH, 50);
  });

  it('finds the cell under a point, nothing outside', () => {
    assert.deepEqual(cellAt(l, 80, 30), { row: 0, col: 0 });
    assert.deepEqual(cellAt(l, 499, 229), { row: 3, col: 2 });
    assert.deepEqual(cellAt(l, 221, 81), { row: 1, col: 1 });
    assert.equal(cellAt(l, 79, 100), undefined);
    assert.equal(cellAt(l, 200, 20), undefined);
    assert.equal(cellAt(l, 500, 100), undefined);
    assert.equal(cellAt(gridLayout(0, 0, 0, 0, { left: 0, top: 0 }), 0, 0), undefined);
  });
});

describe('webview heatmap: ranking and frames', () => {
  it('ranks layers by their total (ties by index)', () => {
    assert.deepEqual(
      rankLayers([
        [1, null],
        [2, 2],
        [4, NaN],
        [0, 4],
      ]),
      [
        { layer: 0, total: 1, rank: 4 },
        { layer: 1, total: 4, rank: 1 },
        { layer: 2, total: 4, rank: 2 },
        { layer: 3, total: 4, rank: 3 },
      ],
    );
  });

  it('picks the nearest timeline frame, or the last', () => {
    assert.equal(frameIndex([10, 20, 40], undefined), 2);
    assert.equal(frameIndex([10, 20, 40], 26), 1);
    assert.equal(frameIndex([10, 20, 40], 1000), 2);
    assert.equal(frameIndex([], 5), -1);
  });
});
