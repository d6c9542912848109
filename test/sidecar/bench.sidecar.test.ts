/** `peft-lab bench` runs (one step per case, as CI checks it; timings are for `npm run bench`, not tests). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { loadNativeAddon } from '../../sidecar/src/backend/native/addon';

test('bench --quick prints one JSON line per CPU case with the fields the issue names', () => {
  const r = spawnSync(process.execPath, [resolve('dist/cli.js'), 'bench', '--quick', '--json'], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(rows.map((x) => `${x.case}/${x.mode}`), ['tiny/full', 'tiny/lora', 'small/full', 'small/lora']);
  for (const x of rows) {
    for (const k of ['backend', 'threads', 'step_ms', 'tokens_per_s', 'peak_rss_mb']) assert.ok(x[k] !== undefined, `${x.case}/${x.mode} lacks ${k}`);
    assert.ok((x.step_ms as number) > 0 && (x.tokens_per_s as number) > 0);
  }
  // LoRA keeps optimizer state for the adapter only: far fewer trainable parameters than full fine-tuning.
  const tiny = (mode: string) => rows.find((x) => x.case === 'tiny' && x.mode === mode)!;
  assert.ok((tiny('lora').trainable as number) * 10 < (tiny('full').trainable as number));
});

test('bench compares at one thread unless --threads (or PEFT_LAB_THREADS) asks for more; a bad count is refused', () => {
  const run = (extra: string[]) => spawnSync(process.execPath, [resolve('dist/cli.js'), 'bench', '--quick', '--json', '--cases', 'tiny', '--modes', 'lora', ...extra], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, PEFT_LAB_THREADS: '' } });
  const threads = (extra: string[]) => {
    const r = run(extra);
    assert.equal(r.status, 0, r.stderr);
    return (JSON.parse(r.stdout.trim()) as { threads: number }).threads;
  };
  assert.equal(threads([]), 1);
  // The native kernels take the count; the wasm backend alone is single-threaded under Node.
  assert.equal(threads(['--threads', '2']), loadNativeAddon().addon ? 2 : 1);
  const bad = run(['--threads', '0']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--threads/);
});
