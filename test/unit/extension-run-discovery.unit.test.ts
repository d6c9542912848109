/** Looking for run folders without a file watcher (src/extension/model/run-discovery.ts). */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { discoverRunDirs, ignoredPath, isRunDir } from '../../src/extension/model/run-discovery';

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

  it('returns the root itself when it is a run folder, and nothing for a missing folder', async () => {
    assert.deepEqual(await discoverRunDirs(a, 2, new Set()), [a]);
    assert.deepEqual(await discoverRunDirs(a, 2, new Set([a])), []);
    assert.deepEqual(await discoverRunDirs(join(root, 'nope'), 2, new Set()), []);
    assert.equal(isRunDir(a), true);
    assert.equal(isRunDir(root), false);
  });

  it('stops after reading `limit` entries', async () => {
    assert.ok((await discoverRunDirs(join(root, 'runs'), 2, new Set(), 1)).length <= 1);
  });

  it('ignores created paths under node_modules and .git only', () => {
    assert.equal(ignoredPath('/ws/node_modules/x'), true);
    assert.equal(ignoredPath('/ws/.git'), true);
    assert.equal(ignoredPath('/ws/.peft-lab/runs'), false);
    assert.equal(ignoredPath('/ws/runs/a'), false);
  });
});
