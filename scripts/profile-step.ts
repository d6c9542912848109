/**
 * Per-kernel time breakdown of the bench's training step (the same Model, LoRA adapter and AdamW as
 * `peft-lab bench`): every kernel registered for the active backend is wrapped with a timer
 * (exclusive time: a kernel that calls another registered kernel is charged only its own part),
 * then a few steps are run after warm-up and the kernels are listed by total time.
 *
 * Usage: npx tsx scripts/profile-step.ts [--cases tiny,small] [--modes full,lora] [--steps 3]
 *        [--warmup 2] [--backend wasm] [--top 25] [--shapes]
 * `--shapes` splits each kernel by its input shapes. `--cpu` measures process CPU time instead of
 * wall time (steadier on a shared machine; the native kernels run single-threaded by default).
 * PEFT_LAB_NATIVE=0 disables the native addon.
 */
import * as tf from '@tensorflow/tfjs-core';
import { parseArgs } from 'node:util';
import { loraFactory } from '../sidecar/src/adapters/bench-lora';
import { initBackend } from '../sidecar/src/backend';
import { benchConfig, CASES, type BenchMode } from '../sidecar/src/bench/bench';
import { randomModel } from '../sidecar/src/models/init';
import { AdamW } from '../sidecar/src/train/adamw';
import type { BackendPreference } from '../src/protocol';

const { values: v } = parseArgs({
  options: {
    cases: { type: 'string', default: 'tiny,small' },
    modes: { type: 'string', default: 'full,lora' },
    steps: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '2' },
    backend: { type: 'string', default: 'wasm' },
    top: { type: 'string', default: '25' },
    shapes: { type: 'boolean', default: false },
    cpu: { type: 'boolean', default: false },
  },
});

/** Milliseconds: wall clock, or this process's CPU time with --cpu. */
const now = v.cpu
  ? () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    }
  : () => performance.now();

interface Stat {
  ms: number;
  count: number;
}
const stats = new Map<string, Stat>();
let recording = false;
const stack: number[] = []; // time spent in nested kernels, per open frame

function instrument(backendName: string): void {
  for (const k of tf.getKernelsForBackend(backendName)) {
    const inner = k.kernelFunc;
    tf.unregisterKernel(k.kernelName, backendName);
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        if (!recording) return inner(args);
        stack.push(0);
        const t0 = now();
        try {
          return inner(args);
        } finally {
          const total = now() - t0;
          const nested = stack.pop()!;
          if (stack.length) stack[stack.length - 1]! += total;
          let key = k.kernelName;
          if (v.shapes) key += ' ' + Object.values(args.inputs).map((t) => `[${(t as tf.TensorInfo)?.shape ?? ''}]`).join('');
          const s = stats.get(key) ?? { ms: 0, count: 0 };
          s.ms += total - nested;
          s.count++;
          stats.set(key, s);
        }
      },
    });
  }
}

async function main(): Promise<void> {
  const info = await initBackend(v.backend as BackendPreference, () => {});
  process.stdout.write(`backend ${info.name}: ${info.device}; timing: ${v.cpu ? 'process CPU time' : 'wall clock'}\n`);
  instrument(tf.getBackend());
  const steps = Number(v.steps);
  const warmup = Number(v.warmup);
  const top = Number(v.top);
  for (const caseName of v.cases!.split(',')) {
    const c = CASES.find((x) => x.case === caseName);
    if (!c) throw new Error(`unknown case ${caseName}`);
    for (const mode of v.modes!.split(',') as BenchMode[]) {
      const model = randomModel(benchConfig(c), 0);
      const inputIds = tf.keep(tf.tidy(() => tf.randomUniform([c.batch, c.seq - 1], 0, c.vocab, 'int32', 7))) as tf.Tensor2D;
      const opt = new AdamW({ lr: 1e-4, weightDecay: 0.01 });
      const adapter = mode === 'lora' ? loraFactory()(model, c.rank, 2 * c.rank, ['c_attn']) : undefined;
      const trainable = adapter ? adapter.trainable : model.params;
      const names = [...trainable.keys()];
      const phase = { fwdBwd: 0, opt: 0, read: 0 };
      const step = async (rec: boolean) => {
        recording = rec;
        const t0 = now();
        const { loss, grads } = model.lossAndGrads(names, { inputIds }, inputIds, { hooks: adapter?.hooks, extra: adapter?.trainable, training: true });
        const t1 = now();
        opt.step(trainable, grads);
        tf.dispose([...grads.values()]);
        const t2 = now();
        await loss.data();
        loss.dispose();
        const t3 = now();
        recording = false;
        if (rec) {
          phase.fwdBwd += t1 - t0;
          phase.opt += t2 - t1;
          phase.read += t3 - t2;
        }
        return t3 - t0;
      };
      const fwdOnly = async () => {
        const t0 = now();
        const l = tf.tidy(() => model.loss(model.forward({ inputIds }, { hooks: adapter?.hooks, overrides: adapter?.trainable, training: true }), inputIds));
        await l.data();
        l.dispose();
        return now() - t0;
      };
      for (let i = 0; i < warmup; i++) await step(false);
      stats.clear();
      const tensorsBefore = tf.memory().numTensors;
      let total = 0;
      for (let i = 0; i < steps; i++) total += await step(true);
      const leaked = tf.memory().numTensors - tensorsBefore;
      let fwd = 0;
      for (let i = 0; i < steps; i++) fwd += await fwdOnly();
      const kernelMs = [...stats.values()].reduce((a, s) => a + s.ms, 0);
      const kernelCount = [...stats.values()].reduce((a, s) => a + s.count, 0);
      process.stdout.write(
        `\n== ${c.case} ${mode}: step ${(total / steps).toFixed(1)} ms (forward+backward ${(phase.fwdBwd / steps).toFixed(1)}, AdamW ${(phase.opt / steps).toFixed(1)}, loss read ${(phase.read / steps).toFixed(1)}); ` +
          `forward alone ${(fwd / steps).toFixed(1)} ms; kernels ${(kernelMs / steps).toFixed(1)} ms in ${Math.round(kernelCount / steps)} calls/step; ` +
          `other (JS, tape) ${((total - kernelMs) / steps).toFixed(1)} ms; tensors leaked/step ${leaked / steps}\n`,
      );
      const rows = [...stats.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, top);
      process.stdout.write(`${'kernel'.padEnd(v.shapes ? 60 : 24)} ${'ms/step'.padStart(8)} ${'%'.padStart(5)} ${'calls/step'.padStart(10)}\n`);
      for (const [k, s] of rows)
        process.stdout.write(
          `${k.slice(0, v.shapes ? 60 : 24).padEnd(v.shapes ? 60 : 24)} ${(s.ms / steps).toFixed(2).padStart(8)} ${((100 * s.ms) / total).toFixed(1).padStart(5)} ${(s.count / steps).toFixed(0).padStart(10)}\n`,
        );
      tf.dispose(inputIds);
      opt.dispose();
      adapter?.dispose();
      model.dispose();
    }
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
