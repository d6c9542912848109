/** Dashboard data shaping: EMA smoothing, series by step or time, log-scale filtering, progress and ETA. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RunStatus } from '../../src/protocol';
import type { DashboardRecord } from '../../src/protocol/webview';
import { drawnCount, fieldPoints, formatDuration, forScale, progressOf, smoothPoints, xOf } from '../../webviews/src/shared/series';
import { emaSmooth } from '../../webviews/src/shared/smoothing';

const rec = (step: number, loss: number | null, extra: Partial<DashboardRecord> = {}): DashboardRecord => ({ step, loss, lr: 0.001, tokens_per_s: 100, elapsed_s: step * 0.5, ...extra });
const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

describe('webview series: EMA smoothing', () => {
  it('weight 0 is the identity, and a constant series stays constant (debiased)', () => {
    assert.deepEqual(emaSmooth([3, 1, 2], 0), [3, 1, 2]);
    for (const v of emaSmooth([5, 5, 5, 5], 0.9)) close(v, 5);
  });

  it('matches the debiased recurrence and starts at the first value', () => {
    const w = 0.6;
    const xs = [4, 2, 8, 1];
    const out = emaSmooth(xs, w);
    let last = 0;
    let deb = 0;
    xs.forEach((x, i) => {
      last = last * w + (1 - w) * x;
      deb = deb * w + (1 - w);
      close(out[i]!, last / deb);
    });
    close(out[0]!, 4);
  });

  it('keeps NaN as a gap without disturbing the average; clamps the weight', () => {
    const out = emaSmooth([1, NaN, 1, Infinity], 0.5);
    assert.ok(Number.isNaN(out[1]!) && Number.isNaN(out[3]!));
    close(out[2]!, 1);
    assert.deepEqual(emaSmooth([1, 2], -3), [1, 2]);
    assert.ok(emaSmooth([0, 10], 5).every(Number.isFinite));
  });
});

describe('webview series: points', () => {
  it('takes one field by step or time, skips records without it, last record per x wins, sorted; null is a gap', () => {
    const rs = [rec(2, 3, { eval_loss: 2.9 }), rec(1, 4), rec(3, null), rec(2, 2.5)];
    assert.deepEqual(fieldPoints(rs, 'loss', 'step'), [
      { x: 1, y: 4 },
      { x: 2, y: 2.5 },
      { x: 3, y: null },
    ]);
    assert.equal(drawnCount(fieldPoints(rs, 'loss', 'step')), 2);
    assert.deepEqual(fieldPoints(rs, 'eval_loss', 'step'), [{ x: 2, y: 2.9 }]);
    assert.deepEqual(fieldPoints(rs, 'loss', 'time'), [
      { x: 0.5, y: 4 },
      { x: 1, y: 2.5 },
      { x: 1.5, y: null },
    ]);
    assert.ok(Number.isNaN(xOf({ ...rec(1, 1), elapsed_s: null }, 'time')));
  });

  it('smooths y only; log scale drops values ≤ 0', () => {
    const pts = [
      { x: 1, y: 2 },
      { x: 2, y: 0 },
      { x: 3, y: -1 },
    ];
    assert.deepEqual(
      smoothPoints(pts, 0).map((p) => p.x),
      [1, 2, 3],
    );
    assert.deepEqual(forScale(pts, true), [{ x: 1, y: 2 }]);
    assert.equal(forScale(pts, false).length, 3);
    // a gap stays a gap, smoothed or on a log scale, and does not disturb the average
    const gap = [{ x: 1, y: 2 }, { x: 2, y: null }, { x: 3, y: 2 }];
    assert.deepEqual(smoothPoints(gap, 0.5), gap);
    assert.deepEqual(forScale(gap, true), gap);
  });
});

describe('webview series: progress and ETA', () => {
  const status = (over: Partial<RunStatus>): RunStatus => ({ version: 1, state: 'running', spec: '', name: 'r', adapter: 'lora', step: 0, totalSteps: 100, startedAt: '', updatedAt: '', ...over });

  it('estimates the time left from the recent step rate', () => {
    const rs = Array.from({ length: 30 }, (_, i) => rec(i + 1, 1, { elapsed_s: 10 + (i + 1) * 0.5, eval_loss: i === 9 ? 0.8 : undefined }));
    const p = progressOf(rs, status({ step: 30 }), 20);
    assert.equal(p.step, 30);
    assert.equal(p.total, 100);
    close(p.fraction, 0.3);
    close(p.etaS!, 70 * 0.5, 1e-9);
    assert.equal(p.evalLoss, 0.8);
  });

  it('has no ETA when finished, unknown or not running; takes the larger of status and records', () => {
    assert.equal(progressOf([rec(1, 1), rec(2, 1)], status({ state: 'done', step: 2, totalSteps: 2 })).etaS, undefined);
    assert.equal(progressOf([rec(1, 1)], undefined).etaS, undefined);
    assert.equal(progressOf([rec(5, 1), rec(6, 1)], status({ state: 'interrupted', step: 6 })).etaS, undefined);
    const p = progressOf([rec(7, 1)], status({ step: 3, totalSteps: 5 }));
    assert.equal(p.step, 7);
    assert.equal(p.total, 7);
    assert.equal(p.fraction, 1);
    // a diverged last record (null loss) still has progress and an ETA
    const d = progressOf([rec(1, 2), rec(2, null)], status({ step: 2, totalSteps: 4 }));
    assert.equal(d.loss, undefined);
    close(d.etaS!, 1);
  });

  it('formats durations', () => {
    assert.equal(formatDuration(12.4), '12s');
    assert.equal(formatDuration(187), '3m 07s');
    assert.equal(formatDuration(3720), '1h 02m');
    assert.equal(formatDuration(NaN), '–');
  });
});
