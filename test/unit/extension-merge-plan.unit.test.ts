/** "Merge Runs…" → a merge job (src/extension/model/merge-plan.ts): base and data from the runs' spec.json. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jobParamsProblem } from '../../sidecar/src/jobs/manager';
import { MERGE_METHODS } from '../../src/protocol';
import { MERGE_METHOD_INFO, planMerge, planMergedModel, type RunInput } from '../../src/extension/model/merge-plan';

const now = new Date(2025, 0, 2, 3, 4, 5);
const run = (name: string, config: Record<string, unknown> = {}): RunInput => ({
  dir: `/ws/runs/${name}`,
  name,
  config: { modelDir: '/ws/models/base', data: { train: '/ws/data/train.jsonl', eval: '/ws/data/eval.jsonl' }, ...config },
});

describe('merge plan', () => {
  it('merges runs of one base into merge-<method>-<time> beside the first, evaluated on its eval file', () => {
    const plan = planMerge([run('a'), run('b')], 'ties', now, () => false);
    assert.deepEqual(plan, {
      kind: 'merge',
      base: '/ws/models/base',
      runs: ['/ws/runs/a', '/ws/runs/b'],
      method: 'ties',
      data: '/ws/data/train.jsonl',
      eval: '/ws/data/eval.jsonl',
      out: '/ws/runs/merge-ties-20250102-030405',
    });
    assert.equal(jobParamsProblem(plan), undefined, 'a job the sidecar accepts');
    const taken = new Set(['/ws/runs/merge-ties-20250102-030405']);
    assert.equal((planMerge([run('a'), run('b')], 'ties', now, (p) => taken.has(p)) as { out: string }).out, '/ws/runs/merge-ties-20250102-030405-2');
  });

  it('without an eval file: the training data (the job holds a part out); without data, no evaluation', () => {
    const noEval = planMerge([run('a', { data: { train: '/ws/t.jsonl' } })], 'dare', now, () => false);
    assert.ok(typeof noEval === 'object' && noEval.data === '/ws/t.jsonl' && noEval.eval === undefined);
    const noData = planMerge([run('a', { data: {} })], 'compeft', now, () => false);
    assert.ok(typeof noData === 'object' && noData.data === undefined && noData.eval === undefined);
    assert.match(planMerge([run('a', { data: {} }), run('b', { data: {} })], 'soup-greedy', now) as string, /soup-greedy ranks the runs by their eval score, and a names no data/);
  });

  it('refuses runs of different bases, runs without a base, and too few runs for the method', () => {
    assert.equal(planMerge([run('a'), run('b', { modelDir: '/ws/models/other' })], 'soup-uniform', now), 'the runs were trained from different base models (a: /ws/models/base; b: /ws/models/other)');
    assert.equal(planMerge([run('a'), run('b', { modelDir: undefined })], 'soup-uniform', now), 'b has no base model in its spec.json');
    assert.equal(planMerge([run('a')], 'soup-uniform', now), 'soup-uniform merges 2 or more runs; 1 chosen');
    assert.equal(typeof planMerge([run('a')], 'breadcrumbs', now, () => false), 'object', 'one task vector can be masked and applied');
  });

  it('"Export Merged Model…": the run folded into its base (a one-run uniform soup) as <run>-merged in the chosen folder', () => {
    const plan = planMergedModel(run('demo-1'), '/exports');
    assert.deepEqual(plan, { kind: 'merge', base: '/ws/models/base', runs: ['/ws/runs/demo-1'], method: 'soup-uniform', out: '/exports/demo-1-merged' });
    assert.equal(jobParamsProblem(plan), undefined, 'a job the sidecar accepts');
    assert.equal(planMergedModel(run('x', { modelDir: undefined }), '/exports'), 'x has no base model in its spec.json');
  });

  it('describes every method the sidecar has', () => {
    assert.deepEqual(Object.keys(MERGE_METHOD_INFO).sort(), [...MERGE_METHODS].sort());
    for (const m of MERGE_METHODS) assert.ok(MERGE_METHOD_INFO[m].description.length > 10 && MERGE_METHOD_INFO[m].minRuns >= 1, m);
  });
});
