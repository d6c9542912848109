/** `bench --matmuls`: the kernel choices per shape and the per-step summary (pure parts; the WebGPU
 * tier runs the command). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseChoice } from '../../sidecar/src/backend/webgpu/matmul';
import { choicesFor, matMulSummary, planFrom, shapeName, type MatMulTiming } from '../../sidecar/src/bench/matmuls';

const shape = { M: 2048, N: 768, K: 2304, batch: 1, ta: false, tb: true, bias: false };

test('choicesFor: the heuristic, TF.js, every tile config but thin with the K splits that leave ≥ 256 of K each', () => {
  const splits = (name: string) => [name, `${name}/split1`, `${name}/split2`, `${name}/split4`, `${name}/split8`];
  assert.deepEqual(choicesFor(shape), ['auto', 'tfjs', ...['big', 'wide', 'mid', 'big4', 'bigR', 'mid4'].flatMap(splits)]);
  // Rank-8 LoRA shapes: the thin tile (no cross-workgroup splits) and the 64×64 ones.
  assert.deepEqual(choicesFor({ ...shape, N: 8, K: 768 }), ['auto', 'tfjs', 'mid', 'mid/split1', 'mid/split2', 'thin', 'mid4', 'mid4/split1', 'mid4/split2']);
});

function row(choice: string, plan: string, gpu: number | null, wall: number, calls = 2, m = shape): MatMulTiming {
  return { case: 'gpu', mode: 'full', ...m, calls, choice, plan, gpu_ms: gpu, wall_ms: wall, tflops: 0 };
}

test('matMulSummary: per-step time under the heuristic and with the best choice per shape, GPU time first', () => {
  const other = { ...shape, ta: true, tb: false, M: 768, K: 2048 };
  const s = matMulSummary([
    row('auto', 'mid/split4', 0.5, 9, 2),
    row('big', 'big', 0.3, 0.1, 2), // the wall time is not what counts when there is a GPU time
    row('tfjs', 'tfjs', 0.45, 9, 2), // within 10%: not a gain
    row('auto', 'mid', 1, 2, 12, other),
    row('mid/split2', 'mid/split2', 0.75, 2, 12, other),
  ]);
  assert.equal(s.auto_ms, 13); // 0.5 × 2 + 1 × 12
  assert.equal(s.best_ms, 9.6); // 0.3 × 2 + 0.75 × 12
  assert.deepEqual(s.gains, [
    { shape: shapeName(shape), key: '1:nt:2048x2304x768', auto: 'mid/split4', best: 'big', auto_ms: 0.5, best_ms: 0.3, calls: 2 },
    { shape: shapeName(other), key: '1:tn:768x2048x768', auto: 'mid', best: 'mid/split2', auto_ms: 1, best_ms: 0.75, calls: 12 },
  ]);
  assert.equal(shapeName(shape), 'A·Bᵀ 2048×2304×768');
  assert.equal(shapeName({ ...other, batch: 96, bias: true }), '96×Aᵀ·B 768×2048×768+bias');
});

test('matMulSummary: a choice that ran the heuristic\'s own kernel is another sample of it, not a gain', () => {
  const s = matMulSummary([row('auto', 'mid', 1, 1, 2), row('mid', 'mid', 0.5, 1, 2), row('big', 'big', 0.6, 1, 2)]);
  assert.deepEqual([s.auto_ms, s.best_ms, s.gains], [1, 1, []]);
});

test('matMulSummary falls back to wall time without timestamps', () => {
  const s = matMulSummary([row('auto', 'mid', null, 2, 3), row('big', 'big', null, 1, 3)]);
  assert.deepEqual([s.auto_ms, s.best_ms, s.gains.length], [6, 3, 1]);
});

test('planFrom: the faster choices by shape key; a shape measured twice keeps its fastest', () => {
  const g = (key: string, best: string, best_ms: number) => ({ shape: key, key, auto: 'mid', best, auto_ms: 1, best_ms, calls: 1 });
  assert.deepEqual(planFrom([g('1:nn:8x8x8', 'big4', 0.5), g('1:tn:8x8x8', 'tfjs', 0.2), g('1:nn:8x8x8', 'mid4/split2', 0.4)]), { '1:nn:8x8x8': 'mid4/split2', '1:tn:8x8x8': 'tfjs' });
});

test('parseChoice: auto, tfjs, configs with optional K splits; nothing else', () => {
  assert.deepEqual(parseChoice('auto'), { config: 'auto' });
  assert.deepEqual(parseChoice('tfjs'), { config: 'tfjs' });
  assert.equal((parseChoice('big4') as { config: { name: string } }).config.name, 'big4');
  assert.equal(parseChoice('mid/split4')?.splits, 4);
  for (const bad of ['', 'tfjs/split2', 'huge', 'mid/split0', 'mid/split', 'toString', 'mid /split2']) assert.equal(parseChoice(bad), undefined, bad);
});
