/**
 * `peft-lab bench`: times the project's real training step (the same Model, adapters and AdamW the
 * sidecar trains with) on the cases of ../shared/bench/README.md, one JSON line per case.
 *
 * PEFT_LAB_BENCH_CLOCK=cpu times steps in process CPU time instead of wall-clock time, for both this
 * process and the PyTorch anchor (its time.perf_counter is swapped for time.process_time): steadier
 * on a shared, oversubscribed machine, and equal to wall time when nothing else runs. It is only
 * meaningful with one thread (each side's CPU time then is its one thread's time).
 */
import * as tf from '@tensorflow/tfjs-core';
import { spawnSync } from 'node:child_process';
import { loadNativeAddon } from '../backend/native/addon';
import { nativeKernelsRegistered } from '../backend/native/kernels';
import { dispatchStats } from '../backend/webgpu/dispatch';
import { matMulPlanSize } from '../backend/webgpu/matmul';
import { gpt2Config, type Gpt2Config } from '../models/config';
import { randomModel } from '../models/init';
import { AdamW } from '../train/adamw';

export interface BenchCase {
  case: string;
  d: number;
  layers: number;
  heads: number;
  seq: number;
  batch: number;
  vocab: number;
  rank: number;
  gpu?: boolean;
  /** Run only when named in --cases. */
  onRequest?: boolean;
}
export const CASES: BenchCase[] = [
  { case: 'tiny', d: 128, layers: 4, heads: 4, seq: 65, batch: 16, vocab: 256, rank: 8 },
  { case: 'small', d: 256, layers: 4, heads: 4, seq: 129, batch: 8, vocab: 256, rank: 8 },
  { case: 'gpu', d: 768, layers: 12, heads: 12, seq: 257, batch: 8, vocab: 8192, rank: 8, gpu: true },
  // The gpu case's layers and heads at toy sizes: the same fused kernels with almost no arithmetic
  // (somewhat fewer dispatches: its small matmuls need no split-K sums), so with Dawn's null device
  // (PEFT_LAB_DAWN_FLAGS=backend=null) its step time is the host's cost of a step.
  { case: 'gpu-host', d: 48, layers: 12, heads: 12, seq: 9, batch: 1, vocab: 64, rank: 8, gpu: true, onRequest: true },
];
export type BenchMode = 'full' | 'lora';

export interface BenchResult {
  case: string;
  mode: BenchMode;
  backend: string;
  threads: number;
  step_ms: number;
  tokens_per_s: number;
  /** Process RSS high-water mark (cumulative over the cases run before in this process: the wasm heap never shrinks). */
  peak_rss_mb: number;
  /** Peak bytes of live tensors (parameters, optimizer state, activations, gradients) during one step of this case (tf.profile). */
  peak_tensor_mb: number;
  steps: number;
  trainable: number;
  /** Floats of AdamW state (m and v) after the run: 2 × trainable (none for frozen weights). */
  optimizer_state: number;
  /** 'wall' (default) or 'cpu' (PEFT_LAB_BENCH_CLOCK=cpu). */
  clock: BenchClock;
  /** The loss of every step, warm-up included: the same model, data and seed on every backend, so
   * two backends' trajectories check each other's numerics. */
  losses: number[];
  torch_tokens_per_s?: number;
  ratio?: number;
  /** WebGPU only: the host's share of a step (medians over the timed steps). */
  webgpu?: WebGpuStepCounters;
  /** With `kernels: true`: time per kernel in the profiled step, largest first (GPU time on WebGPU with timestamp queries). */
  kernels?: KernelTime[];
  /** With `kernels: true`: the 40 largest (kernel, input shapes) pairs of that step: which calls of a kernel cost the time. */
  kernel_shapes?: KernelTime[];
}

export interface WebGpuStepCounters {
  /** Step time outside queue.submit and read-back waits: recording, bookkeeping, TF.js's engine. */
  host_ms: number;
  /** Time inside queue.submit: the WebGPU implementation turning recorded passes into the driver's commands. */
  submit_ms: number;
  /** Time waiting for read-backs (the GPU finishing the step's work, when the host is ahead of it). */
  read_wait_ms: number;
  dispatches: number;
  /** Bind groups created (the rest came from dispatch.ts's cache). */
  bind_groups_created: number;
  submits: number;
  /** Tensors written from host values (constants made during the step). */
  uploads: number;
  /** GPU memory TF.js's buffer pool holds after the case (MB): live tensors plus freed buffers kept
   * for reuse, cumulative over the cases run before in this process (the pool never shrinks). */
  gpu_pool_mb?: number;
  /** Matmul shapes on a measured choice (PEFT_LAB_WEBGPU_MATMUL_PLAN) instead of the heuristic. */
  matmul_plan?: number;
}

export interface KernelTime {
  kernel: string;
  /** With byShape: the input shapes, e.g. '2048x768 768x2304'. */
  shapes?: string;
  calls: number;
  /** Total time of its calls; null where the backend's timer gave no valid times (kernelTimes). */
  ms: number | null;
}

/** The threads the step runs on: the native kernels' pool when they are in use (PEFT_LAB_THREADS;
 * 1 by default), else the caller's count (the wasm backend is single-threaded under Node). */
export function benchThreads(requested: number): number {
  if (tf.getBackend() !== 'wasm' || !nativeKernelsRegistered()) return requested;
  return loadNativeAddon().addon?.info().threads ?? requested;
}

export type BenchClock = 'wall' | 'cpu';
export const benchClock = (): BenchClock => (process.env.PEFT_LAB_BENCH_CLOCK === 'cpu' ? 'cpu' : 'wall');
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** The bench README's model: GPT-2 layout, tied embeddings, learned positions for seq − 1 tokens. */
export function benchConfig(c: BenchCase): Gpt2Config {
  return gpt2Config({ d: c.d, layers: c.layers, heads: c.heads, vocab: c.vocab, positions: c.seq });
}

export type LoraFactory = (model: ReturnType<typeof randomModel>, rank: number, alpha: number, targets: string[]) => {
  trainable: Map<string, tf.Tensor>;
  hooks: import('../models/forward').Hooks;
  dispose(): void;
};

/** One case's model, batch, trainable set and optimizer, ready to step; dispose() frees them all. */
export interface BenchStep {
  /** forward + backward + AdamW update + reading the loss: the anchor's step. Returns the loss. */
  run(): Promise<number>;
  trainable: Map<string, tf.Tensor>;
  optimizer: AdamW;
  dispose(): void;
}

export function benchStep(c: BenchCase, mode: BenchMode, lora?: LoraFactory): BenchStep {
  const model = randomModel(benchConfig(c), 0);
  const ids = tf.tidy(() => tf.randomUniform([c.batch, c.seq], 0, c.vocab, 'int32', 7));
  // The model sees seq − 1 positions, as the anchor's m(x[:, :-1]); labels = inputs, shifted inside the loss.
  const inputIds = tf.keep(tf.slice(ids, [0, 0], [c.batch, c.seq - 1])) as tf.Tensor2D;
  const labels = inputIds;
  const optimizer = new AdamW({ lr: 1e-4, weightDecay: 0.01 });
  let adapter: ReturnType<LoraFactory> | undefined;
  let trainable: Map<string, tf.Tensor>;
  if (mode === 'lora') {
    if (!lora) throw new Error('LoRA benchmark needs the adapter module');
    adapter = lora(model, c.rank, 2 * c.rank, ['c_attn']);
    trainable = adapter.trainable;
  } else {
    trainable = model.params;
  }
  const names = [...trainable.keys()];
  return {
    trainable,
    optimizer,
    async run() {
      const { loss, grads } = model.lossAndGrads(names, { inputIds }, labels, { hooks: adapter?.hooks, extra: adapter?.trainable, training: true });
      optimizer.step(trainable, grads);
      tf.dispose([...grads.values()]);
      const v = (await loss.data())[0]!;
      loss.dispose();
      return v;
    },
    dispose() {
      tf.dispose([ids, inputIds]);
      optimizer.dispose();
      adapter?.dispose();
      model.dispose();
    },
  };
}

export async function benchCase(c: BenchCase, mode: BenchMode, opts: { steps: number; warmup: number; threads: number; backend: string; lora?: LoraFactory; kernels?: boolean }): Promise<BenchResult> {
  const step = benchStep(c, mode, opts.lora);
  const trainableCount = [...step.trainable.values()].reduce((n, t) => n + t.size, 0);
  let peakRss = process.memoryUsage().rss;
  let peakTensorBytes = 0;
  let optimizerState = 0;
  let kernels: KernelTime[] | undefined;
  let kernelShapes: KernelTime[] | undefined;
  const times: number[] = [];
  const losses: number[] = [];
  const clock = benchClock();
  const now = clock === 'cpu' ? cpuMs : () => performance.now();
  const gpuStats = dispatchStats(tf.backend());
  const gpuSteps: WebGpuStepCounters[] = [];
  try {
    for (let i = 0; i < opts.warmup + opts.steps; i++) {
      const before = gpuStats && { ...gpuStats };
      const w0 = performance.now();
      const t0 = now();
      const lossValue = await step.run();
      times.push(now() - t0);
      if (gpuStats && before && i >= opts.warmup) {
        gpuSteps.push({
          host_ms: performance.now() - w0 - (gpuStats.submitMs - before.submitMs) - (gpuStats.readWaitMs - before.readWaitMs),
          submit_ms: gpuStats.submitMs - before.submitMs,
          read_wait_ms: gpuStats.readWaitMs - before.readWaitMs,
          dispatches: gpuStats.dispatches + gpuStats.fallbacks - before.dispatches - before.fallbacks,
          bind_groups_created: gpuStats.bindGroupsCreated - before.bindGroupsCreated,
          submits: gpuStats.submits - before.submits,
          uploads: gpuStats.uploads - before.uploads,
        });
      }
      losses.push(lossValue);
      if (!Number.isFinite(lossValue)) throw new Error(`bench ${c.case}/${mode}: loss ${lossValue}`);
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }
    // One more, untimed step under tf.profile for the peak of live tensor memory within a step (and
    // the kernel times). Without the per-kernel NaN check, which reads every output back.
    const check = tf.env().getBool('CHECK_COMPUTATION_FOR_ERRORS');
    tf.env().set('CHECK_COMPUTATION_FOR_ERRORS', false);
    let profile: Awaited<ReturnType<typeof tf.profile>>;
    try {
      profile = await tf.profile(async () => void (await step.run()));
    } finally {
      tf.env().set('CHECK_COMPUTATION_FOR_ERRORS', check);
    }
    peakTensorBytes = profile.peakBytes;
    if (opts.kernels) {
      kernels = kernelTimes(profile);
      kernelShapes = kernelTimes(profile, { byShape: true }).slice(0, 40);
    }
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    for (const t of [...step.optimizer.state.m.values(), ...step.optimizer.state.v.values()]) optimizerState += t.size;
  } finally {
    step.dispose();
  }
  const timed = times.slice(opts.warmup).sort((a, b) => a - b);
  const median = timed[Math.floor(timed.length / 2)]!;
  return {
    case: c.case,
    mode,
    backend: opts.backend,
    threads: benchThreads(opts.threads),
    step_ms: round(median),
    tokens_per_s: Math.round((c.batch * (c.seq - 1)) / (median / 1000)),
    peak_rss_mb: Math.round(peakRss / 2 ** 20),
    peak_tensor_mb: Math.round((peakTensorBytes / 2 ** 20) * 10) / 10,
    steps: timed.length,
    trainable: trainableCount,
    optimizer_state: optimizerState,
    clock,
    losses: losses.map((l) => Math.round(l * 1e6) / 1e6),
    ...(gpuSteps.length ? { webgpu: { ...medianCounters(gpuSteps), ...gpuPool(), matmul_plan: matMulPlanSize() } } : {}),
    ...(kernels ? { kernels } : {}),
    ...(kernelShapes ? { kernel_shapes: kernelShapes } : {}),
  };
}

const round = (x: number) => Math.round(x * 100) / 100;
/** The webgpu backend's pool size (tf.memory() there reports numBytesAllocatedInGPU). */
function gpuPool(): { gpu_pool_mb?: number } {
  const bytes = (tf.memory() as tf.MemoryInfo & { numBytesAllocatedInGPU?: number }).numBytesAllocatedInGPU;
  return bytes === undefined ? {} : { gpu_pool_mb: Math.round(bytes / 2 ** 20) };
}
const medianOf = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
function medianCounters(steps: WebGpuStepCounters[]): WebGpuStepCounters {
  return {
    host_ms: round(medianOf(steps.map((s) => s.host_ms))),
    submit_ms: round(medianOf(steps.map((s) => s.submit_ms))),
    read_wait_ms: round(medianOf(steps.map((s) => s.read_wait_ms))),
    dispatches: medianOf(steps.map((s) => s.dispatches)),
    bind_groups_created: medianOf(steps.map((s) => s.bind_groups_created)),
    submits: medianOf(steps.map((s) => s.submits)),
    uploads: medianOf(steps.map((s) => s.uploads)),
  };
}

/** Kernel time per kernel name, largest first. Kernels that run other kernels (composites) count
 * their own time only where the backend reports it that way; tf.profile lists every invocation. */
export function kernelTimes(profile: Awaited<ReturnType<typeof tf.profile>>, opts: { byShape?: boolean } = {}): KernelTime[] {
  // A timer that is not there (no timestamp queries) reports 0 or an error string; Dawn's null
  // device resolves its timestamp queries to garbage (negative totals of −1e8 ms). One invalid time
  // makes the whole profile unusable, so all times become null rather than a misleading table.
  const valid = profile.kernels.every((k) => typeof k.kernelTimeMs !== 'number' || (Number.isFinite(k.kernelTimeMs) && k.kernelTimeMs >= 0));
  const by = new Map<string, { kernel: string; shapes?: string; calls: number; ms: number }>();
  for (const k of profile.kernels) {
    const shapes = opts.byShape ? k.inputShapes.map((s) => (s ?? []).join('x') || 'scalar').join(' ') : undefined;
    const key = shapes === undefined ? k.name : `${k.name} ${shapes}`;
    const row = by.get(key) ?? { kernel: k.name, ...(shapes !== undefined ? { shapes } : {}), calls: 0, ms: 0 };
    row.calls++;
    row.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    by.set(key, row);
  }
  const rows = [...by.values()].sort((a, b) => (valid ? b.ms - a.ms : 0) || b.calls - a.calls);
  return rows.map((r) => ({ ...r, ms: valid ? round(r.ms) : null }));
}

/**
 * The anchor's environment: its thread count enforced on every pool. `torch.set_num_threads` sizes
 * PyTorch's OpenMP pool only; Debian's torch calls OpenBLAS (libopenblas0-pthread), whose own pool
 * defaults to every core, so `--threads 1` alone still ran each GEMM on 2 threads here (process
 * CPU time 1.7× wall time). The BLAS pools get the same count.
 */
export function anchorEnv(threads: number, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const n = String(threads);
  return { ...base, OPENBLAS_NUM_THREADS: n, OMP_NUM_THREADS: n, MKL_NUM_THREADS: n };
}

/** Runs the PyTorch anchor for one case; undefined when it cannot run here. */
export function runAnchor(anchor: string, python: string, c: BenchCase, mode: BenchMode, threads: number, steps: number): { tokens_per_s: number; step_ms: number } | { error: string } {
  // PyTorch gets the same thread count as the step it is compared with.
  threads = Math.max(threads, c.gpu ? threads : benchThreads(threads));
  const args = [anchor, '--mode', mode, '--d', `${c.d}`, '--layers', `${c.layers}`, '--heads', `${c.heads}`, '--seq', `${c.seq}`, '--batch', `${c.batch}`, '--vocab', `${c.vocab}`, '--rank', `${c.rank}`, '--steps', `${steps}`, '--threads', `${threads}`];
  if (c.gpu) args.push('--device', 'cuda');
  if (benchClock() === 'cpu') {
    // The same script with time.perf_counter → time.process_time (its own CPU time).
    const shim = 'import runpy, sys, time; time.perf_counter = time.process_time; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")';
    args.unshift('-c', shim);
  }
  const r = spawnSync(python, args, { encoding: 'utf8', timeout: 600_000, env: anchorEnv(threads) });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').pop()! };
  const line = r.stdout.trim().split('\n').pop()!;
  const j = JSON.parse(line) as { tokens_per_s: number; step_ms: number };
  return { tokens_per_s: j.tokens_per_s, step_ms: j.step_ms };
}
