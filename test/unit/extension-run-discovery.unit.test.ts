/** Looking for run folders without a file watcher (src/extension/model/run-discovery.ts). */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { discoverRunDirs, ignoredBelow, ignoredPath, isRunDir, skippedFolder } from '../../src/extension/model/run-discovery';

const root = mkdtempSync(join(tmpdir(), 'peft-discovery-'));
after(() => rmSync(root, { recursive: true, force: true }));

function run(...parts: string[]): string {
  const dir = join(root, ...parts);
  mkdirSync(join(dir, 'checkpoints', 'step-10'), { recursive: true });
  writeFileSync(join(dir, 'status.json'), '{}');
  // A run's own sub-folders are never searched: this one must not be found.
  writeFileSync(join(dir, 'checkpoints', 'step-10', 'status.json'), '{}');
  return dir;
}

describe('run folder discovery', () => {
  const a = run('runs', 'a-20250101-000000');
  const v1 = run('runs', 'compare-x-20250101-000000', 'lora');
  const v2 = run('runs', 'compare-x-20250101-000000', 'ia3');
  mkdirSync(join(root, 'runs', 'node_modules', 'pkg'), { recursive: true });
  writeFileSync(join(root, 'runs', 'node_modules', 'pkg', 'status.json'), '{}');
  const m = join(root, 'runs', 'metrics-only');
  mkdirSync(m);
  writeFileSync(join(m, 'metrics.jsonl'), '');

  it('finds run folders and comparison variants within the depth', async () => {
    assert.deepEqual((await discoverRunDirs(join(root, 'runs'), 2, new Set())).sort(), [a, v2, v1, m].sort());
    assert.deepEqual((await discoverRunDirs(join(root, 'runs'), 1, new Set())).sort(), [a, m].sort());
    assert.deepEqual((await discoverRunDirs(root, 3, new Set())).sort(), [a, v2, v1, m].sort());
  });

  it('skips known runs, node_modules and what a run folder holds', async () => {
    assert.deepEqual((await discoverRunDirs(join(root, 'runs'), 2, new Set([a, v1]))).sort(), [v2, m].sort());
  });

  it('skips hidden folders and virtual environments, but finds runs under .peft-lab', async () => {
    const ws = join(root, 'ws');
    const inHome = run('ws', '.peft-lab', 'runs', 'a-1');
    for (const skipped of [['.venv', 'lib'], ['venv', 'lib'], ['.cache', 'x'], ['site-packages', 'x']]) run('ws', ...skipped);
    assert.deepEqual(await discoverRunDirs(ws, 3, new Set()), [inHome]);
    assert.ok(skippedFolder('.venv') && skippedFolder('node_modules') && skippedFolder('__pycache__'));
    assert.ok(!skippedFolder('.peft-lab') && !skippedFolder('runs'));
  });

  it('returns the root itself when it is a run folder, and nothing for a missing folder', async () => {
    assert.deepEqual(await discoverRunDirs(a, 2, new Set()), [a]);
    assert.deepEqual(await discoverRunDirs(a, 2, new Set([a])), []);
    assert.deepEqual(await discoverRunDirs(join(root, 'nope'), 2, new Set()), []);
    assert.equal(await isRunDir(a), true);
    assert.equal(await isRunDir(root), false);
  });

  it('stops after reading `limit` entries', async () => {
    assert.ok((await discoverRunDirs(join(root, 'runs'), 2, new Set(), 1)).length <= 1);
  });

  it('ignores file events under node_modules, .git and virtual environments', () => {
    assert.equal(ignoredPath('/ws/node_modules/x'), true);
    assert.equal(ignoredPath('/ws/.git'), true);
    assert.equal(ignoredPath('/ws/.venv/lib/x/status.json'), true);
    assert.equal(ignoredPath('/ws/.peft-lab/runs'), false);
    assert.equal(ignoredPath('/ws/runs/a'), false);
  });

  it('looks into a folder created in the runs folder unless it is hidden or an environment below it (the runs folder may itself be hidden)', () => {
    assert.equal(ignoredBelow('/home/u/.cache/runs', '/home/u/.cache/runs/a-1'), false);
    assert.equal(ignoredBelow('/ws/.peft-lab/runs', '/ws/.peft-lab/runs/compare-x/lora'), false);
    assert.equal(ignoredBelow('/ws/runs', '/ws/runs/.tmp-a'), true);
    assert.equal(ignoredBelow('/ws/runs', '/ws/runs/x/node_modules'), true);
  });
});
