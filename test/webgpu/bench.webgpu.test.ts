/** `peft-lab bench` on the WebGPU backend (a software adapter here): it runs, profiles its kernels,
 * and its loss trajectory is the CPU backend's (same model, data and seed). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { test } from 'node:test';

interface Row {
  backend: string;
  mode: string;
  losses: number[];
  kernels?: { kernel: string; calls: number }[];
  webgpu?: { host_ms: number; dispatches: number; bind_groups_created: number; submits: number; gpu_pool_mb?: number };
}

function bench(backend: string, extra: string[] = [], cases = 'tiny', moreEnv: Record<string, string> = {}): Row[] {
  const env = { ...process.env, ...moreEnv, EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless', PEFT_LAB_DAWN_FLAGS: process.env.PEFT_LAB_DAWN_FLAGS ?? 'backend=opengl' };
  const r = spawnSync(process.execPath, [resolve('dist/cli.js'), 'bench', '--backend', backend, '--cases', cases, '--steps', '1', '--warmup', '1', '--json', ...extra], { encoding: 'utf8', env, timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Row);
}

test('bench --backend webgpu: fused kernels in the profile, losses equal to the CPU backend', () => {
  const gpu = bench('webgpu', ['--kernels']);
  const cpu = bench('wasm');
  assert.deepEqual(gpu.map((r) => `${r.backend}/${r.mode}`), ['webgpu/full', 'webgpu/lora']);
  for (const [i, row] of gpu.entries()) {
    const names = new Set(row.kernels!.map((k) => k.kernel));
    for (const k of ['PeftLinear', 'PeftAttentionQkv', 'PeftAttentionQkvGrad', 'PeftLayerNorm', 'PeftSoftmaxCrossEntropy', 'PeftAdamW']) assert.ok(names.has(k), `${row.mode}: ${k} ran`);
    assert.equal(row.losses.length, 2);
    row.losses.forEach((l, s) => assert.ok(Math.abs(l - cpu[i]!.losses[s]!) <= 2e-5 * Math.abs(l), `${row.mode} step ${s}: ${l} vs ${cpu[i]!.losses[s]}`));
  }
});

test('bench gpu-host on webgpu reports the host side of a step: dispatches recorded, bind groups reused, host time', () => {
  const rows = bench('webgpu', ['--modes', 'lora', '--warmup', '2'], 'gpu-host');
  assert.equal(rows.length, 1);
  const c = rows[0]!.webgpu;
  assert.ok(c, 'webgpu counters in the row');
  // 12 layers: several hundred dispatches, in a few submits, and after two warm-up steps no new bind groups.
  assert.ok(c.dispatches > 300, `dispatches ${c.dispatches}`);
  assert.ok(c.submits >= 1 && c.submits < c.dispatches / 10, `submits ${c.submits}`);
  assert.equal(c.bind_groups_created, 0);
  assert.ok(c.host_ms > 0);
  assert.ok(c.gpu_pool_mb! > 0, 'the GPU buffer pool size is reported');
  // PEFT_LAB_WEBGPU_FIRST_SUBMIT=1: the first submit of each step (the device idle after the last
  // step's loss read) comes after one dispatch, one more submit per step.
  const early = bench('webgpu', ['--modes', 'lora', '--warmup', '2'], 'gpu-host', { PEFT_LAB_WEBGPU_FIRST_SUBMIT: '1' })[0]!.webgpu!;
  assert.equal(early.dispatches, c.dispatches);
  assert.equal(early.submits, c.submits + 1, `${early.submits} vs ${c.submits} submits`);
});
