/**
 * The runs view's run-folder model (src/extension/model/runs.ts): effective state (running with a
 * dead or ended process → interrupted), metrics parsing (torn lines), reading a run folder from its
 * tail, ordering, which runs can be resumed and how. Temporary folders only; no VS Code.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { JobParams, MetricRecord, RunStatus } from '../../src/protocol';
import { canResume, deletionPlan, jobRunning, trainsRuns, compareRunsNewestFirst, effectiveState, isPidAlive, isRunStatus, parseMetrics, readLastMetric, readRun, resumePlan, type RunInfo } from '../../src/extension/model/runs';

const root = mkdtempSync(join(tmpdir(), 'peft-runs-'));
after(() => rmSync(root, { recursive: true, force: true }));

function status(over: Partial<RunStatus> = {}): RunStatus {
  return {
    version: 1,
    state: 'running',
    spec: '/ws/a.peft.json',
    name: 'a',
    adapter: 'lora',
    step: 40,
    totalSteps: 100,
    startedAt: '2025-01-01T10:00:00.000Z',
    updatedAt: '2025-01-01T10:05:00.000Z',
    pid: 4242,
    ...over,
  };
}

const metric = (step: number, loss: number, extra: Partial<MetricRecord> = {}): MetricRecord => ({ step, loss, lr: 1e-3, tokens_per_s: 100, elapsed_s: step, ...extra });

describe('effective run state', () => {
  const alive = (pids: number[]) => (pid: number) => pids.includes(pid);

  it('keeps running while the pid lives', () => {
    assert.equal(effectiveState(status(), alive([4242])), 'running');
  });
  it('is interrupted when the pid is dead', () => {
    assert.equal(effectiveState(status(), alive([])), 'interrupted');
  });
  it('is interrupted when the status has no pid', () => {
    assert.equal(effectiveState(status({ pid: undefined }), alive([4242])), 'interrupted');
  });
  it('is interrupted when the pid belongs to a sidecar that ended (restarted), even if the pid was reused', () => {
    assert.equal(effectiveState(status(), alive([4242]), new Set([4242])), 'interrupted');
  });
  it('leaves finished states alone, whatever the pid', () => {
    for (const state of ['done', 'failed', 'cancelled', 'interrupted'] as const) assert.equal(effectiveState(status({ state }), alive([])), state);
  });
  it('is unknown without a status', () => {
    assert.equal(effectiveState(undefined, alive([])), 'unknown');
  });
  it('sees this process as alive and a nonsense pid as dead', () => {
    assert.equal(isPidAlive(process.pid), true);
    assert.equal(isPidAlive(-1), false);
    assert.equal(isPidAlive(0), false);
  });
});

describe('status and metrics files', () => {
  it('accepts only version-1 statuses with a known state', () => {
    assert.equal(isRunStatus(status()), true);
    assert.equal(isRunStatus({ ...status(), version: 2 }), false);
    assert.equal(isRunStatus({ ...status(), state: 'paused' }), false);
    assert.equal(isRunStatus(null), false);
  });

  it('skips blank, malformed and torn lines', () => {
    const text = `${JSON.stringify(metric(10, 2))}\n\nnot json\n{"nostep":1}\n${JSON.stringify(metric(20, 1.5))}\n{"step":30,"lo`;
    assert.deepEqual(
      parseMetrics(text).map((r) => r.step),
      [10, 20],
    );
  });

  it('reads the last whole record from the tail of a long file', async () => {
    const file = join(root, 'long.jsonl');
    const lines = Array.from({ length: 3000 }, (_, i) => JSON.stringify(metric(i + 1, 5 - i / 1000, { eval_loss: i })));
    writeFileSync(file, `${lines.join('\n')}\n{"step":3001,"loss":`);
    const last = await readLastMetric(file, 256);
    assert.equal(last?.step, 3000);
    assert.equal(last?.eval_loss, 2999);
  });

  it('widens the tail window until it holds a whole line', async () => {
    const file = join(root, 'wide.jsonl');
    writeFileSync(file, `${JSON.stringify(metric(1, 1, { note: 1, ...Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`k${i}`, i])) }))}\n`);
    assert.equal((await readLastMetric(file, 64))?.step, 1);
  });

  it('gives undefined for a missing or empty metrics file', async () => {
    assert.equal(await readLastMetric(join(root, 'nope.jsonl')), undefined);
    writeFileSync(join(root, 'empty.jsonl'), '');
    assert.equal(await readLastMetric(join(root, 'empty.jsonl')), undefined);
  });
});

describe('reading a run folder', () => {
  it('reads status, last metric, adapter and comparison membership', async () => {
    const cmp = join(root, 'compare-x-20250101-100000');
    const dir = join(cmp, 'lora-r8');
    mkdirSync(join(dir, 'adapter'), { recursive: true });
    writeFileSync(join(cmp, 'compare.json'), '{}');
    writeFileSync(join(dir, 'status.json'), JSON.stringify(status({ state: 'done', pid: undefined })));
    writeFileSync(join(dir, 'metrics.jsonl'), `${JSON.stringify(metric(10, 2))}\n${JSON.stringify(metric(20, 1))}\n`);
    const run = await readRun(dir, { isAlive: () => false });
    assert.ok(run);
    assert.equal(run.name, 'lora-r8');
    assert.equal(run.state, 'done');
    assert.equal(run.spec, '/ws/a.peft.json');
    assert.equal(run.lastMetric?.step, 20);
    assert.equal(run.hasAdapter, true);
    assert.equal(run.hasRunSpec, false);
    assert.equal(run.compareFile, join(cmp, 'compare.json'));
    writeFileSync(join(dir, 'spec.json'), '{}');
    assert.equal((await readRun(dir, { isAlive: () => false }))?.hasRunSpec, true);
  });

  it('shows a killed run as interrupted', async () => {
    const dir = join(root, 'killed');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'status.json'), JSON.stringify(status({ pid: 999_999 })));
    const run = await readRun(dir, { isAlive: () => false });
    assert.equal(run?.state, 'interrupted');
    assert.equal(run?.status?.state, 'running', 'the file still says running');
  });

  it('is not a run folder without a status or metrics', async () => {
    const dir = join(root, 'other');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'status.json'), '{"ok":true}');
    assert.equal(await readRun(dir), undefined);
    assert.equal(await readRun(join(root, 'missing')), undefined);
  });

  it('is a starting run (state unknown) with metrics but no status yet', async () => {
    const dir = join(root, 'fresh');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'metrics.jsonl'), `${JSON.stringify(metric(1, 3))}\n`);
    const run = await readRun(dir);
    assert.equal(run?.state, 'unknown');
    assert.equal(run?.spec, undefined);
  });
});

describe('ordering and resuming', () => {
  const info = (name: string, over: Partial<RunInfo> = {}, st: Partial<RunStatus> = {}): RunInfo => ({
    dir: `/ws/runs/${name}`,
    name,
    status: status(st),
    state: 'done',
    spec: '/ws/a.peft.json',
    lastMetric: undefined,
    hasAdapter: false,
    compareFile: undefined,
    ...over,
  });

  it('sorts newest first by start time, then by name', () => {
    const runs = [
      info('a-20250101-100000', {}, { startedAt: '2025-01-01T10:00:00Z' }),
      info('a-20250102-100000', {}, { startedAt: '2025-01-02T10:00:00Z' }),
      info('b', { status: undefined }),
      info('c', { status: undefined }),
    ];
    assert.deepEqual(
      [...runs].sort(compareRunsNewestFirst).map((r) => r.name),
      ['a-20250102-100000', 'a-20250101-100000', 'c', 'b'],
    );
  });

  it('resumes interrupted and cancelled runs, and failed runs with a checkpoint', () => {
    assert.equal(canResume(info('x', { state: 'interrupted' })), true);
    assert.equal(canResume(info('x', { state: 'cancelled' })), true);
    assert.equal(canResume(info('x', { state: 'failed' })), false);
    assert.equal(canResume(info('x', { state: 'failed' }, { state: 'failed', lastCheckpoint: 'step-100' })), true);
    assert.equal(canResume({ ...info('x', { state: 'interrupted' }), hasRunSpec: false }), false, 'no spec.json: nothing to continue from');
    assert.equal(canResume(info('x', { state: 'running' })), false);
    assert.equal(canResume(info('x', { state: 'done' })), false);
  });

  it('resumes a variant of a comparison as the whole comparison, other runs alone', () => {
    const there = (...paths: string[]) => (p: string) => paths.includes(p);
    const variant = info('ia3', { dir: '/ws/runs/compare-c-1/ia3', spec: '/ws/c.peft.json', compareFile: '/ws/runs/compare-c-1/compare.json', state: 'cancelled' });
    assert.deepEqual(resumePlan(variant, there('/ws/c.peft.json')), { kind: 'compare', specFile: '/ws/c.peft.json', dir: '/ws/runs/compare-c-1' });
    // The comparison's spec is gone: the variant alone, from its own spec.json.
    assert.deepEqual(resumePlan(variant, there()), { kind: 'train', specFile: '/ws/runs/compare-c-1/ia3/spec.json', dir: '/ws/runs/compare-c-1/ia3' });
    const single = info('a-1', { state: 'interrupted' });
    assert.deepEqual(resumePlan(single, there('/ws/a.peft.json')), { kind: 'train', specFile: '/ws/a.peft.json', dir: '/ws/runs/a-1' });
    assert.deepEqual(resumePlan(single, there()), { kind: 'train', specFile: '/ws/runs/a-1/spec.json', dir: '/ws/runs/a-1' });
  });

  it('finds the job that runs a run folder: its train job, or the comparison whose folder holds the variant', () => {
    const jobs: { id: string; params: JobParams }[] = [
      { id: 'i', params: { kind: 'importance', model: '/m', out: '/ws/runs/imp' } as JobParams },
      { id: 'c', params: { kind: 'compare', spec: '/ws/c.peft.json', outDir: '/ws/runs/compare-c-1' } },
      { id: 't', params: { kind: 'train', spec: '/ws/a.peft.json', runDir: '/ws/runs/a-1' } },
    ];
    assert.equal(jobRunning(jobs, '/ws/runs/a-1')?.id, 't');
    assert.equal(jobRunning(jobs, '/ws/runs/compare-c-1/ia3')?.id, 'c', 'a variant: its comparison');
    assert.equal(jobRunning(jobs, '/ws/runs/compare-c-10/ia3'), undefined, 'not a sibling sharing a prefix');
    assert.equal(jobRunning(jobs, '/ws/runs/b-1'), undefined);
    assert.deepEqual(jobs.filter(trainsRuns).map((j) => j.id), ['c', 't']);
  });

  it('Delete Run…: deletes what is not running, says why a running run stays, and nothing for a dismissed pick', () => {
    assert.deepEqual(deletionPlan([]), { runs: [] }, 'a dismissed pick (or no run): nothing to say');
    const done = info('a-1');
    const running = info('b-1', { state: 'running' });
    assert.deepEqual(deletionPlan([done]), { runs: [done] });
    assert.deepEqual(deletionPlan([running]), { runs: [], refused: 'b-1 is running; cancel it before deleting it.' });
    assert.deepEqual(deletionPlan([done, running, info('c-1', { state: 'running' })]), { runs: [done], refused: '2 of these runs are running; cancel them before deleting them.' });
  });
});
