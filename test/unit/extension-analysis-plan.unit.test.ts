/** "Allocate Parameter Budget…", "Localize Skill…" and "Evaluate on Data…" → allocate / localize / evaluate jobs (src/extension/model/analysis-plan.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jobParamsProblem } from '../../sidecar/src/jobs/manager';
import { DEFAULT_BUDGETS, DEFAULT_EPOCHS, DEFAULT_SPARSITY, parseBudgets, parseEpochs, parseSparsity, planAllocate, planEvaluate, planLocalize } from '../../src/extension/model/analysis-plan';
import type { RunInput } from '../../src/extension/model/merge-plan';

const now = new Date(2025, 0, 2, 3, 4, 5);
const run = (config: unknown = { modelDir: '/ws/models/base', data: { train: '/ws/data/train.jsonl' } }): RunInput => ({ dir: '/ws/runs/demo-1', name: 'demo-1', config });

describe('allocation plan', () => {
  it('budgets: percentages and counts, commas or spaces; the defaults parse', () => {
    assert.deepEqual(parseBudgets('0.5%, 1%  20000,.25%,1e-1%'), ['0.5%', '1%', '20000', '.25%', '1e-1%']);
    assert.deepEqual(parseBudgets(DEFAULT_BUDGETS), ['0.1%', '0.5%', '1%']);
    assert.match(parseBudgets(' ') as string, /one or more budgets/);
    assert.match(parseBudgets('1%, half') as string, /'half' is not a budget/);
    assert.match(parseBudgets('-5') as string, /'-5' is not a budget/);
    assert.match(parseBudgets('1.5') as string, /'1.5' is not a budget/, 'a count is whole');
    assert.match(parseBudgets('150%') as string, /at most 100%/);
  });

  it('writes allocation.json beside the importance report (then -2, -3), with the method the panel shows', () => {
    const plan = planAllocate('/ws/runs/importance-a/importance.json', '0.5%, 1%', 'taylor', () => false);
    assert.deepEqual(plan, { kind: 'allocate', importance: '/ws/runs/importance-a/importance.json', budgets: ['0.5%', '1%'], method: 'taylor', out: '/ws/runs/importance-a/allocation.json' });
    assert.equal(jobParamsProblem(plan), undefined, 'a job the sidecar accepts');
    const taken = new Set(['/ws/runs/importance-a/allocation.json', '/ws/runs/importance-a/allocation-2.json']);
    assert.equal((planAllocate('/ws/runs/importance-a/importance.json', '1%', undefined, (p) => taken.has(p)) as { out: string }).out, '/ws/runs/importance-a/allocation-3.json');
  });

  it('panel views map to their method; views the allocator does not take leave its default', () => {
    const method = (id: string | undefined) => (planAllocate('/i/importance.json', '1%', id, () => false) as { method?: string }).method;
    assert.equal(method('fisher:sum'), 'fisher');
    assert.equal(method('grad-norm:l2'), 'grad-norm');
    assert.equal(method('adapter:taylor'), undefined);
    assert.equal(method('ist'), undefined);
    assert.equal(method('activations'), undefined);
    assert.equal(method(undefined), undefined);
    assert.match(planAllocate('/i/importance.json', 'lots', 'fisher') as string, /'lots' is not a budget/);
  });
});

describe('localization plan', () => {
  it('sparsity levels in (0, 1] and whole epochs; the defaults parse', () => {
    assert.deepEqual(parseSparsity(DEFAULT_SPARSITY), [1e-4, 1e-3, 1e-2]);
    assert.deepEqual(parseSparsity('0.001 1'), [0.001, 1]);
    for (const bad of ['0', '2', '-1e-3', 'x', 'NaN']) assert.match(parseSparsity(`1e-3, ${bad}`) as string, new RegExp(`'${bad}' is not a sparsity level`), bad);
    assert.match(parseSparsity('') as string, /one or more sparsity levels/);
    assert.equal(parseEpochs(DEFAULT_EPOCHS), 10);
    assert.equal(parseEpochs(' 3 '), 3);
    for (const bad of ['0', '2.5', '', 'ten', '1001']) assert.match(parseEpochs(bad) as string, /not a number of epochs/, bad);
  });

  it('localizes a run against its own base into localize-<run>-<time>/ beside it', () => {
    const plan = planLocalize(run(), '1e-3', '2', now, () => false);
    assert.deepEqual(plan, { kind: 'localize', base: '/ws/models/base', runs: ['/ws/runs/demo-1'], sparsity: [1e-3], epochs: 2, out: '/ws/runs/localize-demo-1-20250102-030405' });
    assert.equal(jobParamsProblem(plan), undefined, 'a job the sidecar accepts');
    const taken = (p: string) => p === '/ws/runs/localize-demo-1-20250102-030405';
    assert.equal((planLocalize(run(), '1e-3', '2', now, taken) as { out: string }).out, '/ws/runs/localize-demo-1-20250102-030405-2');
  });

  it('refuses a run without a base model and bad inputs, saying which', () => {
    assert.match(planLocalize(run({ data: {} }), '1e-3', '2', now) as string, /demo-1 has no base model in its spec\.json/);
    assert.match(planLocalize(run(null), '1e-3', '2', now) as string, /no base model/);
    assert.match(planLocalize(run(), '5', '2', now) as string, /'5' is not a sparsity level/);
    assert.match(planLocalize(run(), '1e-3', '0', now) as string, /not a number of epochs/);
  });
});

describe('evaluation plan', () => {
  it('scores the runs on the file into eval-<data>-<time>/evaluation.json beside the first run', () => {
    const plan = planEvaluate([{ dir: '/ws/runs/a' }, { dir: '/ws/other/b' }], '/ws/data/test set.jsonl', now, () => false);
    assert.deepEqual(plan, { kind: 'evaluate', runs: ['/ws/runs/a', '/ws/other/b'], data: '/ws/data/test set.jsonl', out: '/ws/runs/eval-test_set-20250102-030405/evaluation.json' });
    assert.equal(jobParamsProblem(plan), undefined, 'a job the sidecar accepts');
    const taken = (p: string) => p === '/ws/runs/eval-test_set-20250102-030405';
    assert.equal((planEvaluate([{ dir: '/ws/runs/a' }], '/ws/data/test set.jsonl', now, taken) as { out: string }).out, '/ws/runs/eval-test_set-20250102-030405-2/evaluation.json');
    assert.equal(planEvaluate([], '/d.jsonl', now), 'no run chosen');
  });
});
