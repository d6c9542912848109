/** `peft-lab bench` runs (one step per case, as CI checks it; timings are for `npm run bench`, not tests). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { test } from 'node:test';

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
