/**
 * Fused WGSL kernels for the WebGPU backend, registered under the same names as the native CPU
 * kernels (backend/native/fused.ts), so the model code takes the same fused path on either
 * backend, with the same gradients (registered once, backend-independent). Each family lives in its
 * own module; this one registers them all.
 */
import { registerFusedGradients } from '../native/kernels';
import { registerAddNKernel } from './addn';
import { registerAttentionKernels, setAttentionBackwardTiles } from './attention';
import { registerElementwiseKernels } from './elementwise';
import { readFileSync } from 'node:fs';
import { CONFIGS, forceMatMulConfig, forceMatMulSplitK, registerMatMulKernels, setMatMulPlan } from './matmul';

/** Registers (idempotently) the fused kernels on the webgpu backend. */
export function registerWebGpuKernels(): void {
  registerElementwiseKernels();
  registerAddNKernel();
  registerMatMulKernels();
  registerAttentionKernels();
  registerFusedGradients();
  applyTuning(process.env.PEFT_LAB_WEBGPU_TUNE);
  loadMatMulPlan(process.env.PEFT_LAB_WEBGPU_MATMUL_PLAN);
}

/** PEFT_LAB_WEBGPU_MATMUL_PLAN: a plan file of `bench --matmuls --plan-out` (per-shape kernel choices
 * measured on this GPU). Returns how many shapes it sets. */
export function loadMatMulPlan(file: string | undefined): number {
  if (!file) {
    setMatMulPlan(undefined);
    return 0;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`PEFT_LAB_WEBGPU_MATMUL_PLAN: ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const choices = (parsed as { version?: unknown; choices?: unknown } | null)?.choices;
  if ((parsed as { version?: unknown } | null)?.version !== 1 || typeof choices !== 'object' || choices === null || Array.isArray(choices) || !Object.values(choices).every((c) => typeof c === 'string')) {
    throw new Error(`PEFT_LAB_WEBGPU_MATMUL_PLAN: ${file}: not a matmul plan (version 1 with "choices": { shape: choice })`);
  }
  try {
    setMatMulPlan(choices as Record<string, string>);
  } catch (e) {
    throw new Error(`PEFT_LAB_WEBGPU_MATMUL_PLAN: ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return Object.keys(choices).length;
}

/**
 * Measurement knobs (PEFT_LAB_WEBGPU_TUNE, comma-separated) for comparing kernel choices on a GPU in
 * one run: `matmul=tfjs` (TF.js's own matmuls) or `matmul=<config>` (that tile config of matmul.ts's
 * CONFIGS for every matmul), `splitk=N` (K splits; 1 = none),
 * `attn=ROWSxTILE` (attention backward tiles). Returns what it applied; unknown items throw.
 */
export function applyTuning(spec: string | undefined): string[] {
  const applied: string[] = [];
  for (const item of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const [key, value = ''] = item.split('=');
    if (key === 'matmul' && value === 'tfjs') forceMatMulConfig('tfjs');
    else if (key === 'matmul' && Object.hasOwn(CONFIGS, value)) forceMatMulConfig(CONFIGS[value as keyof typeof CONFIGS]);
    else if (key === 'splitk' && /^[1-9]\d*$/.test(value)) forceMatMulSplitK(Number(value));
    else if (key === 'attn' && /^\d+x\d+$/.test(value)) {
      const [rows, tile] = value.split('x').map(Number);
      setAttentionBackwardTiles({ rows: rows!, tile: tile! });
    } else throw new Error(`PEFT_LAB_WEBGPU_TUNE: unknown item '${item}' (matmul=tfjs|${Object.keys(CONFIGS).join('|')}, splitk=N, attn=ROWSxTILE)`);
    applied.push(item);
  }
  return applied;
}
