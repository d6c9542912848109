/** `peft-lab bench` on the WebGPU backend (a software adapter here): it runs, profiles its kernels,
 * and its loss trajectory is the CPU backend's (same model, data and seed). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, test } from 'node:test';
import { describePlan, shapeKey } from '../../sidecar/src/backend/webgpu/matmul';
import { choicesFor, matMulSummary, planFrom, shapeName, type MatMulPlanFile, type MatMulTiming } from '../../sidecar/src/bench/matmuls';

interface Row {
  backend: string;
  mode: string;
  losses: number[];
  kernels?: { kernel: string; calls: number }[];
  kernel_shapes?: { kernel: string; shapes: string; calls: number }[];
  webgpu?: { host_ms: number; submit_ms: number; read_wait_ms: number; dispatches: number; bind_groups_created: number; submits: number; gpu_pool_mb?: number; matmul_plan?: number };
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
    // tiny: 16 × 64 tokens, d = 128: the c_attn GEMM (x · W + b) by its input shapes.
    const cAttn = row.kernel_shapes!.find((k) => k.kernel === 'PeftLinear' && k.shapes === '1024x128 128x384 384');
    assert.equal(cAttn?.calls, 4, `${row.mode}: c_attn in each of the 4 layers`);
    assert.equal(row.losses.length, 2);
    // Overlapping read-backs count once and submits inside a read wait once: the host's share of the
    // step stays ≥ 0 (it was −348 ms on llvmpipe, where submits run the work).
    assert.ok(row.webgpu && row.webgpu.host_ms >= 0, `${row.mode}: host ${row.webgpu?.host_ms} ms`);
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
  // Submits and the loss read take time of their own, apart from the host's.
  assert.ok(c.submit_ms > 0 && c.read_wait_ms > 0, `submit ${c.submit_ms} ms, read wait ${c.read_wait_ms} ms`);
  assert.ok(c.gpu_pool_mb! > 0, 'the GPU buffer pool size is reported');
  // PEFT_LAB_WEBGPU_FIRST_SUBMIT=1: the first submit of each step (the device idle after the last
  // step's loss read) comes after one dispatch, one more submit per step.
  const early = bench('webgpu', ['--modes', 'lora', '--warmup', '2'], 'gpu-host', { PEFT_LAB_WEBGPU_FIRST_SUBMIT: '1' })[0]!.webgpu!;
  assert.equal(early.dispatches, c.dispatches);
  assert.equal(early.submits, c.submits + 1, `${early.submits} vs ${c.submits} submits`);
});

test('bench --matmuls: each matmul of a real step, with its count per step, under every kernel choice', () => {
  const env = { ...process.env, EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless', PEFT_LAB_DAWN_FLAGS: process.env.PEFT_LAB_DAWN_FLAGS ?? 'backend=opengl' };
  const dir = mkdtempSync(join(tmpdir(), 'peft-matmuls-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const planFile = join(dir, 'plan.json');
  const r = spawnSync(process.execPath, [resolve('dist/cli.js'), 'bench', '--backend', 'webgpu', '--matmuls', '--cases', 'gpu-host', '--modes', 'lora', '--quick', '--json', '--plan-out', planFile], { encoding: 'utf8', env, timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as MatMulTiming | { case: string; mode: string; summary: ReturnType<typeof matMulSummary> });
  const rows = lines.filter((l): l is MatMulTiming => !('summary' in l));
  const summaries = lines.filter((l) => 'summary' in l);
  assert.equal(summaries.length, 1);
  assert.deepEqual(summaries[0], { case: 'gpu-host', mode: 'lora', summary: matMulSummary(rows) });
  const shapes = new Map(rows.filter((x) => x.choice === 'auto').map((x) => [shapeName(x), x]));
  // gpu-host: 8 tokens, d = 48, 12 layers, LoRA r = 8 on c_attn. The frozen c_attn (x·W + b) runs in
  // every layer; the first layer's input gradient is never needed (nothing below it trains).
  assert.equal(shapes.get('A·B 8×48×144+bias')?.calls, 12);
  assert.equal(shapes.get('A·Bᵀ 8×144×48')?.calls, 11);
  for (const [name, s] of shapes) {
    const choices = rows.filter((x) => shapeName(x) === name);
    assert.deepEqual(choices.map((x) => x.choice), choicesFor(s), name);
    for (const x of choices) {
      assert.ok(x.wall_ms > 0 && (x.gpu_ms === null || x.gpu_ms > 0), `${name} ${x.choice}: ${x.wall_ms} ms wall, ${x.gpu_ms} ms GPU`);
      assert.equal(x.plan, x.choice === 'auto' ? describePlan(x) : x.choice.replace('/split1', ''), `${name} ${x.choice}`);
    }
  }
  // The plan file: the summary's faster choices by shape key.
  const plan = JSON.parse(readFileSync(planFile, 'utf8')) as MatMulPlanFile;
  assert.equal(plan.version, 1);
  assert.match(plan.device, /^GPU \(WebGPU: /);
  assert.deepEqual(plan.choices, planFrom(summaries[0]!.summary.gains));
  // A plan that moves every shape of the step off the heuristic (mid ↔ mid4, thin → mid): same losses.
  const everyShape: MatMulPlanFile = { ...plan, choices: Object.fromEntries([...shapes.values()].map((x) => [shapeKey(x), x.plan === 'mid' ? 'mid4' : 'mid'])) };
  writeFileSync(planFile, JSON.stringify(everyShape));
  const planned = bench('webgpu', ['--modes', 'lora'], 'gpu-host', { PEFT_LAB_WEBGPU_MATMUL_PLAN: planFile })[0]!;
  const heuristic = bench('webgpu', ['--modes', 'lora'], 'gpu-host')[0]!;
  assert.deepEqual([planned.webgpu?.matmul_plan, heuristic.webgpu?.matmul_plan], [shapes.size, 0], 'the plan was in effect');
  planned.losses.forEach((l, i) => assert.ok(Math.abs(l - heuristic.losses[i]!) <= 1e-5 * Math.abs(l), `step ${i}: ${l} vs ${heuristic.losses[i]}`));
  const cpu = spawnSync(process.execPath, [resolve('dist/cli.js'), 'bench', '--backend', 'cpu', '--matmuls'], { encoding: 'utf8' });
  assert.equal(cpu.status, 2);
  assert.match(cpu.stderr, /--matmuls times the WebGPU kernels: use --backend webgpu \(this run has cpu\)/);
});
