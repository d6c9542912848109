/** The memory limit a run is checked against: spec, then the extension's setting, then the backend's default. */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { memoryLimitFor } from '../../sidecar/src/train/memory';

const saved = process.env.PEFT_LAB_MEMORY_LIMIT_MB;
afterEach(() => {
  if (saved === undefined) delete process.env.PEFT_LAB_MEMORY_LIMIT_MB;
  else process.env.PEFT_LAB_MEMORY_LIMIT_MB = saved;
});

test('the peftLab.sidecar.memoryLimitMb setting (PEFT_LAB_MEMORY_LIMIT_MB) applies when the spec sets none', () => {
  process.env.PEFT_LAB_MEMORY_LIMIT_MB = '1200';
  assert.deepEqual(memoryLimitFor(undefined, 'wasm'), { limitMb: 1200, why: 'the peftLab.sidecar.memoryLimitMb setting' });
  assert.equal(memoryLimitFor(800, 'wasm')?.limitMb, 800, 'the spec wins over the setting');
});

test('the setting cannot lift the wasm heap bound; an invalid value falls back to the default', () => {
  delete process.env.PEFT_LAB_MEMORY_LIMIT_MB;
  const byDefault = memoryLimitFor(undefined, 'wasm');
  process.env.PEFT_LAB_MEMORY_LIMIT_MB = '100000';
  assert.ok(memoryLimitFor(undefined, 'wasm')!.limitMb < 4096);
  process.env.PEFT_LAB_MEMORY_LIMIT_MB = 'lots';
  assert.deepEqual(memoryLimitFor(undefined, 'wasm'), byDefault);
});
