/** The memory limit a run is checked against: spec, then the extension's setting, then the backend's default. */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { estimateMemory, memoryLimitFor } from '../../sidecar/src/train/memory';
import { parseConfig } from '../../sidecar/src/models/config';
import { CHUNK_LOGITS, CHUNKED_LOSS_LOGITS } from '../../sidecar/src/models/model';

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

test("the estimate: a large vocabulary's logits count one slice when the loss goes by slices; Llama-layout blocks keep more than GPT-2's", () => {
  const qwen = parseConfig({ model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936 }, 'c.json');
  const est = (batchSize: number, seqLen: number) => estimateMemory({ config: qwen, baseParams: 494e6, trainableParams: 540672, batchSize, seqLen });
  // 1 × 128 tokens: 19 Mi logits, all held; 8 × 128: 156 Mi, above the limit: one 16 Mi slice is.
  assert.ok(1 * 128 * 151936 <= CHUNKED_LOSS_LOGITS && 8 * 128 * 151936 > CHUNKED_LOSS_LOGITS && CHUNK_LOGITS < 128 * 151936);
  assert.ok(est(8, 128).activationsMb < 8 * est(1, 128).activationsMb, 'the logits of 8 rows are not 8 × those of one');
  // The measured case: 1 × 250 tokens of Qwen2.5-0.5B aborts the 3.6 GiB wasm heap: the estimate refuses it.
  assert.ok(est(1, 250).totalMb > 3500 && est(1, 128).totalMb < 3500);
  const gpt2Like = parseConfig({ model_type: 'gpt2', n_embd: 896, n_inner: 4864, n_layer: 24, n_head: 14, vocab_size: 151936, n_positions: 1024 }, 'c.json');
  assert.ok(estimateMemory({ config: gpt2Like, baseParams: 494e6, trainableParams: 540672, batchSize: 1, seqLen: 250 }).activationsMb < est(1, 250).activationsMb);
});
