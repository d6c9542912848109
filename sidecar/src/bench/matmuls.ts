/**
 * `peft-lab bench --matmuls` (WebGPU): the GEMMs of one training step of a case, each timed alone
 * under every kernel choice, so that one run on a GPU says which tile config and K split each shape
 * wants and how much of the step's matmul time a better choice would save.
 *
 * The shapes are recorded from a real step of the case (matmul.ts recordMatMuls: what the model, the
 * adapter and their gradients ask for, batch broadcasting folded). Each (shape, choice) is run
 * `reps` times back to back after one warm-up call (which compiles the pipeline); the row has the
 * GPU time per call from timestamp queries (null without them) and the wall time per call (the
 * calls queued together, then one fence: so host work overlaps and does not count unless it
 * is the slower side).
 */
import * as tf from '@tensorflow/tfjs-core';
import { CONFIGS, describePlan, forceMatMulConfig, forceMatMulSplitK, parseChoice, recordMatMuls, shapeKey, type MatMulCall } from '../backend/webgpu/matmul';
import { writeJsonAtomic } from '../train/run-folder';
import { benchStep, type BenchCase, type BenchMode, type LoraFactory } from './bench';

/** A distinct matmul of the step and how often the step runs it. */
export interface StepMatMul extends MatMulCall {
  calls: number;
}

export interface MatMulTiming extends StepMatMul {
  case: string;
  mode: BenchMode;
  /** 'auto' (the heuristic), 'tfjs', a tile config, or a tile config with forced K splits ('mid/split4'). */
  choice: string;
  /** What ran (describePlan): for 'auto', the heuristic's pick. */
  plan: string;
  gpu_ms: number | null;
  wall_ms: number;
  /** 2·M·N·K·batch over the GPU time (the wall time without timestamps), in TFLOP/s. */
  tflops: number;
}

/** The matmuls of one training step of the case, in first-call order, with their counts per step. */
export async function stepMatMuls(c: BenchCase, mode: BenchMode, lora?: LoraFactory): Promise<StepMatMul[]> {
  const step = benchStep(c, mode, lora);
  const seen = new Map<string, StepMatMul>();
  recordMatMuls((call) => {
    const key = JSON.stringify(call);
    const row = seen.get(key);
    if (row) row.calls++;
    else seen.set(key, { ...call, calls: 1 });
  });
  try {
    await step.run();
  } finally {
    recordMatMuls(undefined);
    step.dispose();
  }
  return [...seen.values()];
}

/** The kernel choices worth timing for a shape: the heuristic, TF.js's kernel, each tile config
 * that fits the shape (the candidates too), and forced K splits for long K. */
export function choicesFor(m: MatMulCall): string[] {
  const out = ['auto', 'tfjs'];
  const thin = Math.min(m.M, m.N) <= 16;
  for (const name of Object.keys(CONFIGS) as (keyof typeof CONFIGS)[]) {
    // Rank-sized shapes: the thin tile and the 64×64 ones; the rest: every tile but thin.
    if ((name === 'thin') !== thin && !(thin && (name === 'mid' || name === 'mid4'))) continue;
    out.push(name);
    if (name !== 'thin') for (const s of [1, 2, 4, 8]) if (m.K / s >= 256) out.push(`${name}/split${s}`);
  }
  return out;
}

/** Forces a choice (see choicesFor) for the matmuls run inside `fn`. */
async function withChoice<T>(choice: string, fn: () => Promise<T>): Promise<T> {
  const parsed = parseChoice(choice);
  if (!parsed) throw new Error(`unknown matmul choice '${choice}'`);
  if (parsed.config !== 'auto') forceMatMulConfig(parsed.config);
  if (parsed.splits) forceMatMulSplitK(parsed.splits);
  try {
    return await fn();
  } finally {
    forceMatMulConfig(undefined);
    forceMatMulSplitK(undefined);
  }
}

interface Operands {
  a: tf.Tensor;
  b: tf.Tensor;
  bias?: tf.Tensor;
}

function operands(m: MatMulCall): Operands {
  return tf.tidy(() => {
    const lead = m.batch > 1 ? [m.batch] : [];
    return {
      a: tf.randomUniform([...lead, ...(m.ta ? [m.K, m.M] : [m.M, m.K])], -1, 1, 'float32', 1),
      b: tf.randomUniform([...lead, ...(m.tb ? [m.N, m.K] : [m.K, m.N])], -1, 1, 'float32', 2),
      ...(m.bias ? { bias: tf.randomUniform([m.N], -1, 1, 'float32', 3) } : {}),
    };
  });
}

/** Times one shape under one choice: `reps` calls after a warm-up call. */
async function timeOne(m: MatMulCall, { a, b, bias }: Operands, choice: string, reps: number): Promise<{ plan: string; gpu_ms: number | null; wall_ms: number }> {
  const once = () => tf.dispose(bias ? tf.fused.matMul({ a, b, transposeA: m.ta, transposeB: m.tb, bias }) : tf.matMul(a, b, m.ta, m.tb));
  // A fence: a tiny read after the queued work (the queue runs in order).
  const fence = async () => {
    const t = tf.scalar(0);
    await t.data();
    t.dispose();
  };
  return withChoice(choice, async () => {
    const plan = describePlan(m);
    once();
    await fence();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) once();
    await fence();
    const wall_ms = (performance.now() - t0) / reps;
    const timed = await tf.time(() => {
      for (let i = 0; i < reps; i++) once();
    });
    const k = timed.kernelMs;
    const gpu_ms = typeof k === 'number' && Number.isFinite(k) && k > 0 ? k / reps : null;
    return { plan, gpu_ms, wall_ms };
  });
}

/** Every distinct matmul of one step of the case under every choice; `onRow` sees each row as it is made. */
export async function benchMatMuls(c: BenchCase, mode: BenchMode, opts: { reps: number; lora?: LoraFactory; onRow?: (r: MatMulTiming) => void }): Promise<MatMulTiming[]> {
  const rows: MatMulTiming[] = [];
  for (const m of await stepMatMuls(c, mode, opts.lora)) {
    const flop = 2 * m.M * m.N * m.K * m.batch;
    const ops = operands(m);
    try {
      for (const choice of choicesFor(m)) {
        const t = await timeOne(m, ops, choice, opts.reps);
        const row: MatMulTiming = { case: c.case, mode, ...m, choice, ...t, tflops: round(flop / ((t.gpu_ms ?? t.wall_ms) * 1e9)) };
        rows.push(row);
        opts.onRow?.(row);
      }
    } finally {
      tf.dispose(Object.values(ops) as tf.Tensor[]);
    }
  }
  return rows;
}

/** Per step: the matmuls' time under the heuristic and with the best choice per shape (GPU time
 * where there is one), and the shapes where another kernel beats the heuristic's by ≥ 10%. */
export interface MatMulGain {
  shape: string;
  /** shapeKey: the plan's key for this shape. */
  key: string;
  auto: string;
  best: string;
  auto_ms: number;
  best_ms: number;
  calls: number;
}

export function matMulSummary(rows: readonly MatMulTiming[]): { auto_ms: number; best_ms: number; gains: MatMulGain[] } {
  const byShape = new Map<string, MatMulTiming[]>();
  for (const r of rows) {
    const key = shapeKey(r);
    byShape.set(key, [...(byShape.get(key) ?? []), r]);
  }
  let autoMs = 0;
  let bestMs = 0;
  const gains: MatMulGain[] = [];
  for (const [key, rs] of byShape) {
    const ms = (r: MatMulTiming) => r.gpu_ms ?? r.wall_ms;
    const fastest = (xs: MatMulTiming[]) => xs.reduce((x, y) => (ms(y) < ms(x) ? y : x));
    const auto = rs.find((r) => r.choice === 'auto');
    if (!auto) continue;
    // Choices that ran the heuristic's kernel (e.g. 'mid' when it picks mid) are more samples of it.
    const autoBest = fastest(rs.filter((r) => r.plan === auto.plan));
    const best = fastest(rs);
    autoMs += ms(autoBest) * auto.calls;
    bestMs += ms(best) * auto.calls;
    if (best.plan !== auto.plan && ms(best) < 0.9 * ms(autoBest)) gains.push({ shape: shapeName(auto), key, auto: auto.plan, best: best.choice, auto_ms: round(ms(autoBest)), best_ms: round(ms(best)), calls: auto.calls });
  }
  return { auto_ms: round(autoMs), best_ms: round(bestMs), gains };
}

/** The plan file `bench --matmuls --plan-out` writes and PEFT_LAB_WEBGPU_MATMUL_PLAN loads. */
export interface MatMulPlanFile {
  version: 1;
  /** The device it was measured on (a plan is only good for that GPU). */
  device: string;
  createdAt: string;
  /** shapeKey → choice, for the shapes where another kernel beat the heuristic's by ≥ 10%. */
  choices: Record<string, string>;
}

/** One plan from several summaries (cases × modes): a shape in more than one keeps its fastest. */
export function planFrom(gains: readonly MatMulGain[]): Record<string, string> {
  const best = new Map<string, MatMulGain>();
  for (const g of gains) if (!best.has(g.key) || g.best_ms < best.get(g.key)!.best_ms) best.set(g.key, g);
  return Object.fromEntries([...best].map(([k, g]) => [k, g.best]));
}

export function shapeName(m: MatMulCall): string {
  return `${m.batch > 1 ? `${m.batch}×` : ''}${m.ta ? 'Aᵀ' : 'A'}·${m.tb ? 'Bᵀ' : 'B'} ${m.M}×${m.K}×${m.N}${m.bias ? '+bias' : ''}`;
}

const round = (x: number) => Math.round(x * 1000) / 1000;

/** `bench --matmuls`: one JSON line per (shape, choice) on stdout, then one summary line per case
 * and mode; with `table`, the summary as text on stderr. */
export async function matMulsCommand(cases: readonly BenchCase[], modes: readonly BenchMode[], opts: { reps: number; lora?: LoraFactory; table: boolean; planOut?: string; device: string }): Promise<void> {
  const gains: MatMulGain[] = [];
  for (const c of cases) {
    for (const mode of modes) {
      const rows = await benchMatMuls(c, mode, { reps: opts.reps, lora: opts.lora, onRow: (r) => process.stdout.write(`${JSON.stringify(r)}\n`) });
      const summary = matMulSummary(rows);
      gains.push(...summary.gains);
      process.stdout.write(`${JSON.stringify({ case: c.case, mode, summary })}\n`);
      if (!opts.table) continue;
      process.stderr.write(`\n${c.case}/${mode}: matmuls of one step ${summary.auto_ms} ms with the heuristic, ${summary.best_ms} ms with the best choice per shape\n`);
      for (const g of summary.gains) process.stderr.write(`  ${g.shape.padEnd(34)} ×${String(g.calls).padStart(3)}  ${g.auto.padEnd(12)} ${g.auto_ms.toFixed(3).padStart(8)} ms → ${g.best.padEnd(12)} ${g.best_ms.toFixed(3).padStart(8)} ms\n`);
    }
  }
  if (opts.planOut) {
    const file: MatMulPlanFile = { version: 1, device: opts.device, createdAt: new Date().toISOString(), choices: planFrom(gains) };
    await writeJsonAtomic(opts.planOut, file);
    process.stderr.write(`wrote ${opts.planOut}: ${Object.keys(file.choices).length} shapes off the heuristic (use with PEFT_LAB_WEBGPU_MATMUL_PLAN=${opts.planOut})\n`);
  }
}
