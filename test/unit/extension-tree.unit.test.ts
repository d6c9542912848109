/** The runs view's shape without VS Code (src/extension/model/tree.ts): grouping, labels, descriptions, icons, menus. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RunStatus } from '../../src/protocol';
import type { RunInfo } from '../../src/extension/model/runs';
import { describeRun, displayPath, formatMetric, groupRuns, runContextValue, runIcon, runLabel, runTooltip } from '../../src/extension/model/tree';

function run(name: string, over: Partial<RunInfo> = {}, st: Partial<RunStatus> | null = {}): RunInfo {
  const status: RunStatus | undefined =
    st === null
      ? undefined
      : {
          version: 1,
          state: 'done',
          spec: '/ws/specs/addition.peft.json',
          name: 'addition',
          adapter: 'lora',
          step: 100,
          totalSteps: 100,
          startedAt: `2025-01-0${name.length % 9}T00:00:00Z`,
          updatedAt: '2025-01-09T00:00:00Z',
          ...st,
        };
  return { dir: `/ws/specs/runs/${name}`, name, status, state: status?.state ?? 'unknown', spec: status?.spec, lastMetric: undefined, hasAdapter: false, compareFile: undefined, ...over };
}

describe('runs view: grouping', () => {
  it('groups by spec, alphabetically, with unknown specs last, runs newest first', () => {
    const runs = [
      run('z1', {}, { spec: '/ws/b.peft.json', startedAt: '2025-01-01T00:00:00Z' }),
      run('z2', {}, { spec: '/ws/b.peft.json', startedAt: '2025-01-03T00:00:00Z' }),
      run('orphan', {}, null),
      run('a1', {}, { spec: '/ws/sub/a.peft.json' }),
    ];
    const groups = groupRuns(runs, '/ws');
    assert.deepEqual(
      groups.map((g) => [g.label, g.description, g.runs.map((r) => r.name)]),
      [
        ['a', 'sub', ['a1']],
        ['b', '', ['z2', 'z1']],
        ['Other runs', 'spec unknown', ['orphan']],
      ],
    );
    assert.equal(groups[2]!.spec, undefined);
  });

  it('tells same-named specs apart by folder', () => {
    const groups = groupRuns([run('x', {}, { spec: '/ws/two/s.peft.json' }), run('y', {}, { spec: '/ws/one/s.peft.json' })], '/ws');
    assert.deepEqual(
      groups.map((g) => `${g.label}@${g.description}`),
      ['s@one', 's@two'],
    );
  });

  it('shows paths relative to the workspace, absolute outside it', () => {
    assert.equal(displayPath('/ws/a/b', '/ws'), 'a/b');
    assert.equal(displayPath('/elsewhere/b', '/ws'), '/elsewhere/b');
    assert.equal(displayPath('/ws/a', undefined), '/ws/a');
    assert.equal(displayPath('/ws', '/ws'), '');
  });
});

describe('runs view: items', () => {
  it('describes step/total, loss and the eval metric', () => {
    const r = run('r', { state: 'running' }, { state: 'running', step: 120, totalSteps: 500, summary: { loss: 1.23456, evalMetric: 0.8125, metricName: 'accuracy' } });
    assert.equal(describeRun(r), '120/500 · loss 1.235 · accuracy 81.3%');
  });

  it('falls back to the last metrics record and names unusual states', () => {
    const r = run('r', { state: 'interrupted', lastMetric: { step: 130, loss: 0.5, lr: 0, tokens_per_s: 1, elapsed_s: 1, eval_loss: 0.75 } }, { state: 'running', step: 100, totalSteps: 500 });
    assert.equal(describeRun(r), 'interrupted · 130/500 · loss 0.500 · eval 0.750');
    const acc = run('r', { lastMetric: { step: 10, loss: 2, lr: 0, tokens_per_s: 1, elapsed_s: 1, eval_accuracy: 0.5 } }, { totalSteps: 0, step: 0 });
    // A record alone does not say what its eval_accuracy measured (a regression's r is no percent).
    assert.equal(describeRun(acc), 'step 10 · loss 2.000 · metric 0.500');
    assert.equal(describeRun(run('n', {}, null)), 'starting');
  });

  it('shows right-answer fractions in percent and other metrics as numbers', () => {
    assert.equal(formatMetric('exact_match', 0.25), 'exact_match 25.0%');
    assert.equal(formatMetric('accuracy', 1), 'accuracy 100.0%');
    assert.equal(formatMetric('perplexity', 12.345), 'perplexity 12.35');
  });

  it('labels comparison variants with their comparison folder', () => {
    const r = run('lora', { dir: '/ws/runs/compare-s-20250101-000000/lora', compareFile: '/ws/runs/compare-s-20250101-000000/compare.json' });
    assert.equal(runLabel(r), 'lora — compare 20250101-000000');
    assert.equal(runLabel({ ...r, dir: '/ws/runs/my-cmp/lora' }), 'lora — compare my-cmp');
    assert.equal(runLabel(run('plain')), 'plain');
  });

  it('puts the actions a run offers into its context value', () => {
    assert.equal(runContextValue(run('a', { state: 'running' }, { state: 'running' })), 'run:state-running:cancel');
    assert.equal(runContextValue(run('b', { state: 'interrupted' }, { state: 'running' })), 'run:state-interrupted:resume:delete');
    assert.equal(runContextValue(run('c', { hasAdapter: true, compareFile: '/x/compare.json' })), 'run:state-done:adapter:compare:delete');
    // The menus match flags with /:flag(:|$)/: no flag is a prefix of another.
    const flags = ['cancel', 'resume', 'adapter', 'compare', 'delete'];
    for (const f of flags) for (const g of flags) if (f !== g) assert.ok(!g.startsWith(f));
  });

  it('has an icon per state, spinning while running', () => {
    assert.equal(runIcon('running').id, 'sync~spin');
    assert.equal(runIcon('interrupted').id, 'debug-pause');
    assert.equal(runIcon('failed').color, 'testing.iconFailed');
    for (const s of ['running', 'done', 'failed', 'cancelled', 'interrupted', 'unknown'] as const) assert.ok(runIcon(s).id);
  });

  it('explains interrupted runs and errors in the tooltip', () => {
    const t = runTooltip(run('r', { state: 'interrupted' }, { state: 'running', error: undefined, lastCheckpoint: 'step-100' }), '/ws');
    assert.match(t, /interrupted/);
    assert.match(t, /Resume continues from the last checkpoint/);
    assert.match(t, /`specs\/runs\/r`/);
    assert.match(runTooltip(run('f', { state: 'failed' }, { state: 'failed', error: 'a.jsonl (line 3): bad' }), '/ws'), /Error: a\.jsonl \(line 3\): bad/);
  });

  it('names the backend beside the speed (tokens/s of a GPU and a CPU run do not compare)', () => {
    const gpu = 'webgpu: GPU (WebGPU: nvidia h100)';
    assert.match(runTooltip(run('g', { state: 'done' }, { state: 'done', backend: gpu, summary: { tokensPerS: 43841 } }), '/ws'), /- 43841\.0 tokens\/s on webgpu: GPU \(WebGPU: nvidia h100\)/);
    assert.match(runTooltip(run('g', { state: 'running' }, { state: 'running', backend: gpu }), '/ws'), /- on webgpu: GPU/);
    assert.doesNotMatch(runTooltip(run('o', { state: 'done' }, { state: 'done' }), '/ws'), / on /, 'runs from before the field: nothing');
    assert.doesNotMatch(runTooltip(run('x', { state: 'done' }, { state: 'done', backend: { name: 'webgpu' } as unknown as string }), '/ws'), / on /, 'a damaged field: nothing');
  });
});
