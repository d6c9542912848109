/**
 * A whole `peft-lab train` job on WebGPU (the loop, not only a step: gradient norm, clipping, AdamW,
 * AdaLoRA's penalty and rank allocator, logging) against the same job on the CPU backend: the logged
 * losses and gradient norms agree. The bench path alone missed a job-only bug: TF.js's AddN over the
 * gradient list was an invalid pipeline on WebGPU, and every logged loss and norm read back as 0.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, test } from 'node:test';

const root = mkdtempSync(join(tmpdir(), 'peft-wg-train-'));
after(() => process.env.KEEP ? undefined : rmSync(root, { recursive: true, force: true }));

// 24 plain-text rows of the demo task (byte tokens: 48 characters fill maxLength).
const rows = readFileSync(resolve('media/data/source/train.jsonl'), 'utf8').trim().split('\n').slice(0, 24);
writeFileSync(join(root, 'train.jsonl'), rows.map((l) => JSON.stringify({ text: (JSON.parse(l) as { prompt: string }).prompt.slice(0, 60) })).join('\n'));

interface Metric {
  step: number;
  loss: number;
  grad_norm: number;
  adalora_budget?: number;
}

function train(name: string, adapter: object, backend: string): Metric[] {
  const spec = join(root, `${name}.peft.json`);
  writeFileSync(spec, JSON.stringify({ name, model: 'peft-lab/tiny-gpt', data: { train: 'train.jsonl', maxLength: 48 }, adapter, optimizer: { lr: 0.003 }, batchSize: 4, steps: 4, logEvery: 1, checkpointEvery: 2, maxGradNorm: 1, seed: 0 }));
  const runDir = join(root, `${name}-${backend}`);
  const env = { ...process.env, EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless', PEFT_LAB_DAWN_FLAGS: process.env.PEFT_LAB_DAWN_FLAGS ?? 'backend=opengl' };
  const r = spawnSync(process.execPath, [resolve('dist/cli.js'), 'train', spec, '--run-dir', runDir, '--backend', backend], { encoding: 'utf8', env, timeout: 600_000 });
  assert.equal(r.status, 0, `${name} on ${backend}: ${r.stderr.slice(-2000)}`);
  assert.doesNotMatch(r.stderr, /validation|Invalid/, `${name} on ${backend}: no WebGPU validation errors`);
  return readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Metric).filter((m) => m.loss !== undefined);
}

const T3 = ['c_attn', 'c_proj', 'c_fc'];
const jobs: Array<[string, object]> = [
  // c_attn, attn.c_proj, mlp.c_proj, c_fc × 4 layers × (A, B): 32 gradients, past the 8 storage
  // buffers a shader may bind.
  ['lora', { kind: 'lora', r: 4, alpha: 8, targets: T3 }],
  ['adalora', { kind: 'adalora', r: 4, alpha: 8, targets: T3, adalora: { targetR: 2, tinit: 1, tfinal: 1, deltaT: 1 } }],
];
for (const [name, adapter] of jobs) {
  test(`a ${name} train job on WebGPU logs the CPU backend's losses and gradient norms`, () => {
    const cpu = train(name, adapter, 'wasm');
    const gpu = train(name, adapter, 'webgpu');
    assert.deepEqual(gpu.map((m) => m.step), [1, 2, 3, 4]);
    assert.deepEqual(gpu.map((m) => m.step), cpu.map((m) => m.step));
    for (const [i, g] of gpu.entries()) {
      const c = cpu[i]!;
      assert.ok(g.loss > 0.1 && g.grad_norm > 0, `step ${g.step}: loss ${g.loss}, grad norm ${g.grad_norm}`);
      assert.ok(Math.abs(g.loss - c.loss) <= 1e-4 * c.loss, `step ${g.step} loss: ${g.loss} vs ${c.loss}`);
      assert.ok(Math.abs(g.grad_norm - c.grad_norm) <= 1e-3 * c.grad_norm, `step ${g.step} grad norm: ${g.grad_norm} vs ${c.grad_norm}`);
      assert.equal(g.adalora_budget, c.adalora_budget, `step ${g.step}: AdaLoRA budget`);
    }
  });
}
