/**
 * Cost of importance scoring vs training, on the bench's gpt2-tiny-shaped model (bench case `tiny`:
 * d=128, 4 layers, 4 heads, seq 64, batch 16, vocab 256; sidecar/src/bench/bench.ts).
 *
 *   node --import tsx scripts/bench-importance.ts [--backend wasm] [--batches 8] [--warmup 2] [--case tiny]
 *
 * Times, in interleaved rounds (N × repeats samples each, medians), one of: a full fine-tuning step (forward + backward over every parameter + AdamW +
 * reading the loss: the bench's step), a LoRA step (r = 8 on c_attn), and importance scoring
 * (forward + backward over every parameter + on-device accumulation of Σg², Σg; with and without
 * the activation hooks). Prints one JSON line with the ratios (on CPU time for CPU backends, wall
 * time for GPU backends).
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { parseArgs } from 'node:util';
import { initBackend } from '../sidecar/src/backend';
import { benchConfig, CASES } from '../sidecar/src/bench/bench';
import { loraFactory } from '../sidecar/src/adapters/bench-lora';
import { randomModel } from '../sidecar/src/models/init';
import { AdamW } from '../sidecar/src/train/adamw';
import { ImportanceAccumulator } from '../sidecar/src/analysis/importance';
import type { BackendPreference } from '../src/protocol';

const { values } = parseArgs({ options: { backend: { type: 'string', default: 'wasm' }, batches: { type: 'string', default: '8' }, warmup: { type: 'string', default: '2' }, case: { type: 'string', default: 'tiny' }, repeats: { type: 'string', default: '3' } } });

async function main(): Promise<void> {
  const info = await initBackend(values.backend as BackendPreference);
  const c = CASES.find((x) => x.case === values.case)!;
  const N = Number(values.batches);
  const warmup = Number(values.warmup);
  const repeats = Number(values.repeats);
  const model = randomModel(benchConfig(c), 0);
  const ids = tf.tidy(() => tf.slice(tf.randomUniform([c.batch, c.seq], 0, c.vocab, 'int32', 7), [0, 0], [c.batch, c.seq - 1])) as tf.Tensor2D;
  const names = [...model.params.keys()];
  const sync = async (t: tf.Tensor) => (await t.data())[0];

  // Training: a copy of the weights as the trainable set, as full fine-tuning trains them.
  const trainable = new Map([...model.params].map(([n, t]) => [n, tf.keep(tf.clone(t))]));
  const opt = new AdamW({ lr: 1e-5, weightDecay: 0.01 });
  const trainStep = async () => {
    const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, ids, { extra: trainable, training: true });
    opt.step(trainable, grads);
    tf.dispose([...grads.values()]);
    await sync(loss);
    loss.dispose();
  };
  const lora = loraFactory()(model, c.rank, 2 * c.rank, ['c_attn']);
  const loraNames = [...lora.trainable.keys()];
  const loraOpt = new AdamW({ lr: 1e-5 });
  const loraStep = async () => {
    const { loss, grads } = model.lossAndGrads(loraNames, { inputIds: ids }, ids, { hooks: lora.hooks, extra: lora.trainable, training: true });
    loraOpt.step(lora.trainable, grads);
    tf.dispose([...grads.values()]);
    await sync(loss);
    loss.dispose();
  };
  const linear = model.arch.linearModules(model.config).map((m) => m.module);
  const accs = {
    act: new ImportanceAccumulator(names, new Set(['fisher', 'grad-norm', 'taylor'] as const)),
    noAct: new ImportanceAccumulator(names, new Set(['fisher', 'grad-norm', 'taylor'] as const)),
  };
  const actHooks = accs.act.activationHooks(linear);
  // One importance batch; the loss sum is read (the sync a training step also pays) so the time is
  // this batch's on asynchronous backends too.
  const importanceStep = (acc: ImportanceAccumulator, hooks?: ReturnType<ImportanceAccumulator['activationHooks']>) => async () => {
    const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, ids, hooks ? { hooks } : {});
    acc.add(loss, grads);
    await acc.meanLoss();
  };
  const steps = {
    full: trainStep,
    lora: loraStep,
    importance: importanceStep(accs.act, actHooks),
    importanceNoAct: importanceStep(accs.noAct),
  };
  type Key = keyof typeof steps;
  const wall: Record<Key, number[]> = { full: [], lora: [], importance: [], importanceNoAct: [] };
  const cpu: Record<Key, number[]> = { full: [], lora: [], importance: [], importanceNoAct: [] };
  // Interleaved rounds, so load from other processes hits every kind alike; CPU time as well as wall
  // time (the CPU backends run single-threaded, so CPU time is robust to a busy machine).
  for (let round = 0; round < warmup + N * repeats; round++) {
    for (const k of Object.keys(steps) as Key[]) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await steps[k]();
      const dt = performance.now() - t0;
      const dc = process.cpuUsage(c0);
      if (round >= warmup) {
        wall[k].push(dt);
        cpu[k].push((dc.user + dc.system) / 1000);
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const r = (x: number) => Math.round(x * 1000) / 1000;
  const m = (src: Record<Key, number[]>) => Object.fromEntries((Object.keys(src) as Key[]).map((k) => [k, median(src[k])])) as Record<Key, number>;
  const mw = m(wall);
  const mc = m(cpu);
  const gpu = info.name === 'webgpu' || info.name === 'tensorflow-gpu';
  const basis = gpu ? mw : mc;
  process.stdout.write(
    `${JSON.stringify({
      case: c.case,
      backend: info.name,
      device: info.device,
      samples: N * repeats,
      median_wall_ms: Object.fromEntries(Object.entries(mw).map(([k, v]) => [k, r(v)])),
      median_cpu_ms: Object.fromEntries(Object.entries(mc).map(([k, v]) => [k, r(v)])),
      basis: gpu ? 'wall' : 'cpu',
      ratio_vs_full_step: r(basis.importance / basis.full),
      ratio_vs_full_step_no_activations: r(basis.importanceNoAct / basis.full),
      ratio_vs_lora_step: r(basis.importance / basis.lora),
      n_batches_vs_n_full_steps: `${N} importance batches ≈ ${r((N * basis.importance) / 1000)} s vs ${N} training steps ≈ ${r((N * basis.full) / 1000)} s`,
    })}\n`,
  );
  accs.act.dispose();
  accs.noAct.dispose();
  tf.dispose([ids, ...trainable.values()]);
  opt.dispose();
  loraOpt.dispose();
  lora.dispose();
  model.dispose();
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
