/**
 * The training loop on tiny models (../shared/fixtures/hf) and tiny generated data, on the wasm
 * backend: loss falls (LoRA and full), runs are deterministic (same seed → same metrics and a
 * bitwise-identical adapter), a killed or cancelled run resumes to the same bits with every logged
 * step once, a diverging run fails naming the step and the last good checkpoint, the memory
 * estimate refuses, early stopping, classification (BERT, ViT) and `compare`.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { after, before, describe, test } from 'node:test';
import type { JobProgress, MetricRecord, RunStatus } from '../../src/protocol';
import { initBackend } from '../../sidecar/src/backend';
import type { Example } from '../../sidecar/src/data/dataset';
import { InputError } from '../../sidecar/src/errors';
import { CancelledError, type JobContext } from '../../sidecar/src/jobs/context';
import { loadSpec, runConfig } from '../../sidecar/src/spec/load';
import type { RunConfig } from '../../sidecar/src/spec/types';
import { overallProgress, runCompare, type CompareResult } from '../../sidecar/src/tasks/compare';
import { listCheckpoints } from '../../sidecar/src/train/checkpoint';
import { readMetrics, readRunConfig } from '../../sidecar/src/train/run-folder';
import { lrAt } from '../../sidecar/src/train/schedule';
import { ADAPTER_CHECK_FILE, ADAPTER_CHECK_LOGITS, adapterCheckRows, runTraining, secondsPerStep, specDifferences, totalStepsFor, TrainingError } from '../../sidecar/src/train/trainer';
import { runMerge } from '../../sidecar/src/tasks/merge';
import { f32, readSafetensors, toFloat32, writeSafetensors } from '../../sidecar/src/io/safetensors';
import { toTf } from '../../sidecar/src/io/tensors';
import { Model } from '../../sidecar/src/models/model';
import { loadAdapterHooks } from '../../sidecar/src/tasks/adapter-hooks';
import { loadAnalysisData } from '../../sidecar/src/analysis/data';
import { disposeTrainBatch, makeBatch } from '../../sidecar/src/data/batch';
import { evaluate, pearson } from '../../sidecar/src/train/evaluate';
import { runGenerate } from '../../sidecar/src/tasks/generate';
import { runImportance } from '../../sidecar/src/tasks/importance';
import { baseLoadOptions } from '../../sidecar/src/tasks/base-options';
import { currentBackend } from '../../sidecar/src/backend';

const FIXTURES = join(__dirname, '../../../shared/fixtures/hf');
const root = mkdtempSync(join(tmpdir(), 'peft-lab-train-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(async () => {
  await initBackend('wasm', () => undefined);
  for (const m of ['gpt2-tiny', 'bert-cls-tiny', 'vit-tiny']) cpSync(join(FIXTURES, m), join(root, m), { recursive: true });
  const words = ['the cat sat', 'a dog ran', 'the bird flew', 'my fish swam'];
  writeFileSync(join(root, 'text.jsonl'), Array.from({ length: 24 }, (_, i) => JSON.stringify({ text: `${words[i % 4]} on day ${i % 3}.` })).join('\n'));
  writeFileSync(join(root, 'add.jsonl'), Array.from({ length: 24 }, (_, i) => JSON.stringify({ prompt: `${i % 5}+${i % 3}=`, completion: `${(i % 5) + (i % 3)}` })).join('\n'));
  writeFileSync(join(root, 'cls.jsonl'), Array.from({ length: 12 }, (_, i) => JSON.stringify({ text: i % 2 ? 'good fun film' : 'bad dull film', label: i % 2 ? 'pos' : 'neg' })).join('\n'));
  writeFileSync(join(root, 'heldout.jsonl'), ['call me ishmael.', 'some years ago.', 'never mind how long.'].map((t) => JSON.stringify({ text: t })).join('\n'));
  for (const [c, rgb] of [['red', [255, 0, 0]], ['blue', [0, 0, 255]]] as const) {
    mkdirSync(join(root, 'imgs', c), { recursive: true });
    for (let k = 0; k < 3; k++) {
      const p = new PNG({ width: 8, height: 8 });
      for (let i = 0; i < 64; i++) p.data.set([rgb[0], rgb[1] + k * 20, rgb[2], 255], i * 4);
      writeFileSync(join(root, 'imgs', c, `${k}.png`), PNG.sync.write(p));
    }
  }
});

let n = 0;
/** Writes a spec into the shared workspace and returns its run configuration. */
function config(spec: Record<string, unknown>): RunConfig {
  const f = join(root, `s${n++}.peft.json`);
  writeFileSync(f, JSON.stringify({ model: 'gpt2-tiny', data: { train: 'text.jsonl', maxLength: 24 }, adapter: { kind: 'lora', r: 4, alpha: 8 }, optimizer: { lr: 0.05 }, schedule: { type: 'constant' }, batchSize: 4, ...spec }));
  return runConfig(loadSpec(f));
}

interface Recorder {
  ctx: JobContext;
  progress: Omit<JobProgress, 'id'>[];
  logs: string[];
  abort(): void;
}
function recorder(): Recorder {
  const ac = new AbortController();
  const r: Recorder = {
    progress: [],
    logs: [],
    abort: () => ac.abort(),
    ctx: { signal: ac.signal, progress: (p) => r.progress.push(p), log: (level, m) => r.logs.push(`${level}: ${m}`) },
  };
  return r;
}
const runDir = () => join(root, 'runs', `r${n++}`);
const status = (dir: string) => JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')) as RunStatus;
const adapterBytes = (dir: string) => readFileSync(join(dir, 'adapter', 'adapter_model.safetensors'));
/** Metric records without the wall-clock fields. */
const numbers = (ms: MetricRecord[]) => ms.map(({ tokens_per_s: _t, elapsed_s: _e, ...rest }) => rest);

async function rejects<T extends Error>(p: Promise<unknown>, cls: new (...a: never[]) => T): Promise<T> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    return e as T;
  }
  assert.fail(`expected ${cls.name}`);
}

/** The run's exported adapter, loaded as `forward --adapter` loads it, gives the run's own reference logits (adapter_check.safetensors). */
async function assertLoadsToCheck(cfg: RunConfig, dir: string): Promise<void> {
  const check = await readSafetensors(join(dir, ADAPTER_CHECK_FILE));
  const model = await Model.load(cfg.modelDir);
  const loaded = await loadAdapterHooks(model, join(dir, 'adapter'));
  try {
    const ids = toTf(check.get('input_ids')!) as tf.Tensor2D;
    const got = tf.tidy(() => model.forward({ inputIds: ids, attentionMask: check.has('attention_mask') ? (toTf(check.get('attention_mask')!) as tf.Tensor2D) : undefined }, { hooks: loaded.hooks, overrides: loaded.params }).dataSync() as Float32Array);
    ids.dispose();
    const want = check.get('logits')!.data as Float32Array;
    assert.ok(got.every((x, i) => Math.abs(x - want[i]!) <= 1e-4 * (1 + Math.abs(want[i]!))), `logits of the loaded adapter of ${dir}`);
  } finally {
    loaded.dispose();
    model.dispose();
  }
}

describe('training', () => {
  // One reference run (LoRA, 8 steps, checkpoint every 3) shared by the determinism and resume tests.
  const RESUME_SPEC = { steps: 8, logEvery: 1, evalEvery: 4, checkpointEvery: 3, data: { train: 'add.jsonl', evalSplit: 0.25, maxLength: 24 } };
  let reference: { dir: string; cfg: RunConfig } | undefined;
  async function referenceRun(): Promise<{ dir: string; cfg: RunConfig }> {
    if (reference) return reference;
    const cfg = config(RESUME_SPEC);
    const dir = runDir();
    await runTraining(cfg, { runDir: dir, ctx: recorder().ctx });
    return (reference = { dir, cfg });
  }

  test('LoRA: the loss falls; the run folder holds spec, status, metrics, the last 2 checkpoints, the adapter', async () => {
    const cfg = config({ steps: 12, logEvery: 2, evalEvery: 6, checkpointEvery: 3, data: { train: 'text.jsonl', evalSplit: 0.2, maxLength: 24 } });
    const dir = runDir();
    const rec = recorder();
    const out = await runTraining(cfg, { runDir: dir, ctx: rec.ctx });
    const m = await readMetrics(dir);
    assert.deepEqual(m.map((r) => r.step), [2, 4, 6, 8, 10, 12]);
    assert.ok(m.at(-1)!.loss < m[0]!.loss - 0.1, `loss falls: ${m.map((r) => r.loss.toFixed(3)).join(' ')}`);
    assert.ok(m.every((r) => r.lr === 0.05 && r.tokens_per_s > 0 && r.elapsed_s > 0));
    assert.deepEqual(m.filter((r) => r.eval_loss !== undefined).map((r) => r.step), [6, 12]);
    const s = status(dir);
    assert.equal(s.state, 'done');
    assert.equal(s.step, 12);
    assert.equal(s.totalSteps, 12);
    assert.equal(s.adapter, 'lora');
    assert.equal(s.trainableParams, out.trainableParams);
    // The backend that trained it, so tokens/s is read against it.
    const b = currentBackend()!;
    assert.equal(s.backend, `${b.name}: ${b.device}`);
    assert.equal(s.lastCheckpoint, 'step-12');
    assert.equal(s.pid, undefined);
    assert.ok(Number.isFinite(s.summary?.loss) && Number.isFinite(s.summary?.evalLoss));
    // The final loss is the last logged one (the mean over steps 11–12), as compare.json reports it.
    assert.equal(s.summary!.loss, m.at(-1)!.loss);
    assert.equal(s.summary!.evalLoss, m.at(-1)!.eval_loss);
    assert.deepEqual(listCheckpoints(dir).map((c) => c.name), ['step-9', 'step-12'], 'the newest 2 checkpoints are kept');
    assert.deepEqual(readdirSync(join(dir, 'checkpoints', 'step-12')).sort(), ['adapter.safetensors', 'optimizer.safetensors', 'state.json']);
    const peft = JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(peft.peft_type, 'LORA');
    assert.equal(peft.r, 4);
    assert.match(readFileSync(join(dir, 'adapter', 'README.md'), 'utf8'), /library_name: peft[\s\S]*AutoModelForCausalLM\.from_pretrained\([^,)]*\)\nmodel = PeftModel\.from_pretrained/);
    assert.equal((await readRunConfig(dir)).adapter.kind, 'lora');
    // Progress: every step, increasing, with the metrics the extension charts.
    assert.deepEqual(rec.progress.map((p) => p.done), Array.from({ length: 12 }, (_, i) => i + 1));
    assert.ok(rec.progress.every((p) => p.total === 12 && Number.isFinite(p.metrics?.loss) && p.metrics?.lr === 0.05 && p.metrics.tokens_per_s! > 0));
    assert.match(rec.progress.at(-1)!.message!, /step 12\/12 · loss \d\.\d{4} · eval \d\.\d{4} · lr 5\.00e-2 · \d+ tok\/s · ETA 0s/);
    assert.ok(rec.progress.at(-1)!.metrics!.eval_loss! > 0);
  });

  test('same seed twice: identical metrics and a bitwise-identical adapter', async () => {
    const a = await referenceRun();
    const dirB = runDir();
    await runTraining(a.cfg, { runDir: dirB, ctx: recorder().ctx });
    const ma = await readMetrics(a.dir);
    assert.equal(ma.length, 8);
    assert.deepEqual(numbers(await readMetrics(dirB)), numbers(ma));
    assert.ok(ma.some((r) => r.eval_accuracy !== undefined), 'prompt/completion eval reports exact match');
    assert.ok(adapterBytes(a.dir).equals(adapterBytes(dirB)), 'adapter_model.safetensors is bitwise identical');
  });

  test('a run killed after a checkpoint resumes to the same bits, each logged step once', async () => {
    const ref = await referenceRun();
    const dir = runDir();
    const kill = new Error('simulated kill');
    await assert.rejects(runTraining(ref.cfg, { runDir: dir, ctx: recorder().ctx, afterStep: (s) => { if (s === 5) throw kill; } }), (e) => e === kill);
    assert.equal(listCheckpoints(dir).at(-1)!.name, 'step-3');
    assert.deepEqual((await readMetrics(dir)).map((r) => r.step), [1, 2, 3, 4, 5]);
    // What a kill leaves: status "running" with a dead pid, and maybe a torn last line.
    writeFileSync(join(dir, 'status.json'), JSON.stringify({ ...status(dir), state: 'running', pid: 999999, error: undefined }));
    appendFileSync(join(dir, 'metrics.jsonl'), '{"step":6,"lo');
    const rec = recorder();
    await runTraining(await readRunConfig(dir), { runDir: dir, ctx: rec.ctx });
    assert.ok(rec.logs.some((l) => /resuming from step-3/.test(l)));
    assert.deepEqual(rec.progress.map((p) => p.done), [4, 5, 6, 7, 8]);
    const m = await readMetrics(dir);
    assert.deepEqual(m.map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8], 'every logged step exactly once, in order');
    assert.deepEqual(numbers(m), numbers(await readMetrics(ref.dir)));
    assert.ok(adapterBytes(dir).equals(adapterBytes(ref.dir)), 'final adapter bitwise equal to the uninterrupted run');
    assert.equal(status(dir).state, 'done');
    // The summary as the uninterrupted run's: the zero-shot baseline measured before the kill is kept.
    const { tokensPerS: _a, ...got } = status(dir).summary!;
    const { tokensPerS: _b, ...want } = status(ref.dir).summary!;
    assert.ok(Number.isFinite(want.baselineEvalLoss));
    assert.deepEqual(got, want);
  });

  test('cancellation ends "cancelled" with a checkpoint of that step; resuming finishes identically', async () => {
    const ref = await referenceRun();
    const dir = runDir();
    const rec = recorder();
    await rejects(runTraining(ref.cfg, { runDir: dir, ctx: rec.ctx, afterStep: (s) => { if (s === 4) rec.abort(); } }), CancelledError);
    const s = status(dir);
    assert.equal(s.state, 'cancelled');
    assert.equal(s.lastCheckpoint, 'step-4');
    assert.equal(s.step, 4);
    assert.ok(existsSync(join(dir, 'checkpoints', 'step-4', 'state.json')));
    // Re-running the same spec on the same folder continues it.
    await runTraining(ref.cfg, { runDir: dir, ctx: recorder().ctx });
    assert.deepEqual(numbers(await readMetrics(dir)), numbers(await readMetrics(ref.dir)));
    assert.ok(adapterBytes(dir).equals(adapterBytes(ref.dir)));
  });

  test('an init that changes the base (PiSSA) checkpoints its residual weights and resumes to the same bits', async () => {
    const cfg = config({ adapter: { kind: 'lora', r: 2, alpha: 2, init: 'pissa' }, steps: 4, logEvery: 1, checkpointEvery: 2, optimizer: { lr: 0.01 } });
    const ref = runDir();
    await runTraining(cfg, { runDir: ref, ctx: recorder().ctx });
    const dir = runDir();
    await assert.rejects(runTraining(cfg, { runDir: dir, ctx: recorder().ctx, afterStep: (s) => { if (s === 3) throw new Error('kill'); } }));
    assert.ok(existsSync(join(dir, 'checkpoints', 'step-2', 'base.safetensors')), 'residual base weights are in the checkpoint');
    await runTraining(cfg, { runDir: dir, ctx: recorder().ctx });
    assert.ok(adapterBytes(dir).equals(adapterBytes(ref)));
    const peft = JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(peft.r, 4, 'exported as a plain LoRA of rank 2r on the original base');
  });

  test('a run folder started from a different spec is not continued', async () => {
    const ref = await referenceRun();
    const other = config({ ...RESUME_SPEC, steps: 9 });
    const e = await rejects(runTraining(other, { runDir: ref.dir, ctx: recorder().ctx }), InputError);
    assert.match(e.message, /started from a different spec \(differs in steps\)/);
  });

  test('a step reads the device once (micro-batch losses and the gradient norm together), with accumulation too', async () => {
    const cfg = config({ steps: 5, gradientAccumulation: 3, maxGradNorm: 1, logEvery: 100, evalEvery: 100, checkpointEvery: 100 });
    // The engine's reads (a backend's read may call its readSync: counted once here).
    const backend = tf.engine() as unknown as { read(id: object): Promise<unknown>; readSync(id: object): unknown };
    const read = backend.read;
    const readSync = backend.readSync;
    let reads = 0;
    const perStep: number[] = [];
    backend.read = function (this: unknown, id: object) {
      reads++;
      return read.call(this, id);
    };
    backend.readSync = function (this: unknown, id: object) {
      reads++;
      return readSync.call(this, id);
    };
    try {
      await runTraining(cfg, {
        runDir: runDir(),
        ctx: recorder().ctx,
        afterStep: (s) => {
          perStep.push(reads);
          reads = 0;
          void s;
        },
      });
    } finally {
      backend.read = read;
      backend.readSync = readSync;
    }
    // The last step also writes the final checkpoint; the steps before it only train.
    assert.deepEqual(perStep.slice(0, 4), [1, 1, 1, 1]);
  });

  test('a diverging loss (lr 1e30) fails naming the step and the last good checkpoint', async () => {
    const cfg = config({ steps: 6, checkpointEvery: 1, optimizer: { lr: 1e30 }, maxGradNorm: 0 });
    const dir = runDir();
    const e = await rejects(runTraining(cfg, { runDir: dir, ctx: recorder().ctx }), TrainingError);
    const m = /diverged at step (\d+): (loss|gradient norm) is (NaN|Infinity|-Infinity)/.exec(e.message);
    assert.ok(m, e.message);
    const step = Number(m[1]);
    assert.ok(step >= 2, 'the first steps were finite');
    assert.match(e.message, new RegExp(`last good checkpoint: checkpoints/step-${step - 1} \\(step ${step - 1}\\)`));
    const s = status(dir);
    assert.equal(s.state, 'failed');
    assert.equal(s.error, e.message);
    assert.equal(s.lastCheckpoint, `step-${step - 1}`);
  });

  test('the memory estimate refuses a run over the limit', async () => {
    const cfg = config({ steps: 2, memoryLimitMb: 1 });
    const dir = runDir();
    const e = await rejects(runTraining(cfg, { runDir: dir, ctx: recorder().ctx }), InputError);
    assert.match(e.message, /memoryLimitMb\): estimated memory \d+ MB \(weights [\d.]+ MB, adapter [\d.]+ MB, gradients [\d.]+ MB, optimizer state [\d.]+ MB, activations [\d.]+ MB; batch 4 × \d+ tokens\) exceeds the limit of 1 MB/);
    assert.equal(status(dir).state, 'failed');
    assert.ok(!existsSync(join(dir, 'checkpoints')));
  });

  test("the ETA's pace leaves the first step's warm-up out (seconds per step over the marks after it)", () => {
    // A 3 s first step (kernels compiling), then 0.1 s steps.
    const marks = [{ t: 0, step: 0 }, { t: 3000, step: 1 }, { t: 3100, step: 2 }, { t: 3200, step: 3 }];
    assert.equal(secondsPerStep(marks), 0.1);
    assert.equal(secondsPerStep(marks.slice(0, 2)), 3, 'one step: all there is');
  });

  test('adapter_check.safetensors keeps a tiny model\'s rows whole, and bounds a real vocabulary\'s logits by fewer positions, then fewer rows', () => {
    const row = (len: number): Example => {
      const ids = Int32Array.from({ length: len }, (_, i) => i);
      return { kind: 'lm', ids, labels: ids, completion: false, source: 'x' };
    };
    const rows = [row(300), row(120), row(40), row(7)];
    const shape = (vocab: number) => {
      const kept = adapterCheckRows(rows, vocab);
      const seq = Math.max(...kept.map((e) => (e.kind === 'lm' ? e.ids.length : 0)));
      return { rows: kept.length, seq, logits: kept.length * seq * vocab };
    };
    assert.deepEqual(adapterCheckRows(rows, 257), rows, 'tiny-gpt: all of every row');
    // GPT-2's 50,257: 4 rows of 10 positions (2 Mi logits at most).
    assert.deepEqual(shape(50257), { rows: 4, seq: 10, logits: 2010280 });
    // Qwen's 151,936: one row of at least 8 positions (4.9 MB instead of 4 × 300 × 151,936 × 4 B = 729 MB).
    assert.deepEqual(shape(151936), { rows: 1, seq: 8, logits: 1215488 });
    assert.ok(shape(151936).logits <= ADAPTER_CHECK_LOGITS);
    const kept = adapterCheckRows(rows, 151936)[0]!;
    assert.ok(kept.kind === 'lm' && kept.ids.every((v, i) => v === i) && kept.labels.length === 8, 'a prefix of the first row');
    const cls: Example[] = [{ kind: 'cls', ids: Int32Array.from({ length: 500 }), label: 1, source: 'x' }];
    assert.deepEqual(adapterCheckRows(cls, 1e6), cls, 'a classifier\'s logits are per row, not per position');
  });

  test('full fine-tuning, gradient accumulation and epochs', async () => {
    const cfg = config({ adapter: { kind: 'full' }, epochs: 2, gradientAccumulation: 2, batchSize: 6, logEvery: 1, optimizer: { lr: 0.01 } });
    assert.equal(totalStepsFor(cfg, 24), 4);
    const dir = runDir();
    const out = await runTraining(cfg, { runDir: dir, ctx: recorder().ctx });
    assert.equal(out.status.totalSteps, 4);
    assert.equal(out.trainableParams, 212352);
    const m = await readMetrics(dir);
    assert.ok(m.at(-1)!.loss < m[0]!.loss, `loss falls: ${m.map((r) => r.loss.toFixed(3)).join(' ')}`);
    const peft = JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(peft.peft_type, 'PEFT_LAB', 'kinds PEFT lacks are saved in PEFT Lab format');
    // `forward --adapter` reads that format too: the run's own reference logits come back.
    await assertLoadsToCheck(cfg, dir);
  });

  test('LoHa, LoKr and VeRA train; VeRA saves PEFT\'s VERA, LoHa and LoKr on GPT-2\'s Conv1D PEFT Lab\'s format (PEFT has none); each loads back', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ kind: 'loha', r: 4, alpha: 8 }, 'PEFT_LAB'],
      [{ kind: 'lokr', r: 2, alpha: 4, targets: ['c_fc'] }, 'PEFT_LAB'],
      [{ kind: 'vera', r: 16 }, 'VERA'],
    ];
    for (const [adapter, peftType] of cases) {
      const cfg = config({ adapter, steps: 10, logEvery: 5, optimizer: { lr: adapter.kind === 'vera' ? 0.2 : 0.05 } });
      const dir = runDir();
      const rec = recorder();
      await runTraining(cfg, { runDir: dir, ctx: rec.ctx });
      const m = await readMetrics(dir);
      assert.ok(m.at(-1)!.loss < m[0]!.loss, `${String(adapter.kind)}: loss falls: ${m.map((r) => r.loss.toFixed(3)).join(' ')}`);
      const peft = JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(peft.peft_type, peftType);
      if (peftType === 'PEFT_LAB') assert.ok(rec.logs.some((l) => /PEFT has no Lo(Ha|Kr) for transformers' Conv1D modules \(transformer\.h\.0\./.test(l)), rec.logs.join('\n'));
      await assertLoadsToCheck(cfg, dir);
    }
  });

  test('AdaLoRA: the rank budget falls to its target while training; PEFT\'s ADALORA with its rank pattern; a killed run resumes to the same bits', async () => {
    // gpt2-tiny: c_attn in 4 blocks, 4 ranks each (16) → 2 each (8) over steps 2–6, fixed from step 6.
    const spec = { adapter: { kind: 'adalora', r: 4, alpha: 8, adalora: { targetR: 2, tinit: 1, tfinal: 2 } }, steps: 8, logEvery: 1, checkpointEvery: 3 };
    const cfg = config(spec);
    const dir = runDir();
    await runTraining(cfg, { runDir: dir, ctx: recorder().ctx });
    const budgets = (await readMetrics(dir)).map((r) => r.adalora_budget);
    assert.deepEqual([budgets[0], budgets.at(-1)], [16, 8]);
    assert.ok(budgets.every((b, i) => i === 0 || b! <= budgets[i - 1]!), `the budget never grows: ${budgets.join(' ')}`);
    const peft = JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual([peft.peft_type, peft.init_r, peft.target_r, peft.total_step], ['ADALORA', 4, 2, 8]);
    const pattern = peft.rank_pattern as Record<string, boolean[]>;
    assert.equal(Object.keys(pattern).length, 4);
    assert.equal(Object.values(pattern).flat().filter(Boolean).length, 8, 'the kept ranks are the target budget');
    const file = await readSafetensors(join(dir, 'adapter', 'adapter_model.safetensors'));
    for (const [k, keep] of Object.entries(pattern)) assert.deepEqual(file.get(`base_model.model.${k}`)!.shape, [keep.filter(Boolean).length, 1], `${k} holds the kept ranks only`);
    await assertLoadsToCheck(cfg, dir);
    // Killed after the checkpoint of step 3 (the allocator's scores are in it), resumed: the same adapter.
    const dir2 = runDir();
    const kill = new Error('simulated kill');
    await assert.rejects(runTraining(cfg, { runDir: dir2, ctx: recorder().ctx, afterStep: (st) => { if (st === 5) throw kill; } }), (e) => e === kill);
    assert.ok(existsSync(join(dir2, 'checkpoints', 'step-3', 'procedure.safetensors')));
    await runTraining(await readRunConfig(dir2), { runDir: dir2, ctx: recorder().ctx });
    assert.ok(adapterBytes(dir2).equals(adapterBytes(dir)), 'resumed AdaLoRA run: bitwise the same adapter');
    assert.deepEqual(numbers(await readMetrics(dir2)), numbers(await readMetrics(dir)));
    // The schedule must leave steps to allocate in.
    await assert.rejects(runTraining(config({ ...spec, adapter: { ...spec.adapter, adalora: { tinit: 6, tfinal: 2 } } }), { runDir: runDir(), ctx: recorder().ctx }), (e: unknown) => e instanceof InputError && e.where === 'adapter.adalora' && /tinit \(6\) must be below the run's 8 steps less tfinal \(2\)/.test(e.message));
  });

  test('adapter option problems found once the model is loaded name the option: a tied head or an unknown module in modulesToSave, targets only inside modulesToSave, a block that does not exist', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ kind: 'lora', modulesToSave: ['lm_head'] }, 'adapter.modulesToSave', /modulesToSave names lm_head, which is tied to transformer\.wte \(one table for both\)/],
      [{ kind: 'lora', modulesToSave: ['nonexistent_head'] }, 'adapter.modulesToSave', /which matches no module of this gpt2 model/],
      [{ kind: 'lora', targets: ['wte'], modulesToSave: ['wte'] }, 'adapter.targets', /name only transformer\.wte, which modulesToSave trains whole/],
      [{ kind: 'vera', layers: [9] }, 'adapter.layers', /layers: block 9 does not exist \(this gpt2 model has blocks 0 to 3\)/],
    ];
    for (const [adapter, where, msg] of cases) {
      const e = await rejects(runTraining(config({ adapter, steps: 1 }), { runDir: runDir(), ctx: recorder().ctx }), InputError);
      assert.equal(e.where, where, JSON.stringify(adapter));
      assert.match(e.message, msg);
    }
  });

  test('early stopping ends the run when the eval loss stops improving', async () => {
    const cfg = config({ steps: 20, evalEvery: 1, logEvery: 5, earlyStopping: { patience: 2, minDelta: 100 }, data: { train: 'text.jsonl', evalSplit: 0.2, maxLength: 24 } });
    const dir = runDir();
    const rec = recorder();
    const out = await runTraining(cfg, { runDir: dir, ctx: rec.ctx });
    assert.equal(out.status.state, 'done');
    assert.equal(out.status.step, 3, 'best at step 1, two evaluations without a 100-point improvement');
    assert.equal(status(dir).lastCheckpoint, 'step-3');
    assert.ok(rec.logs.some((l) => /early stopping at step 3/.test(l)));
    assert.deepEqual((await readMetrics(dir)).map((r) => r.step), [1, 2, 3]);
  });

  test('schedules: warmup then cosine / linear decay (transformers semantics)', () => {
    assert.equal(lrAt(1, 1, { type: 'cosine', warmupSteps: 2 }, 10), 0);
    assert.equal(lrAt(2, 1, { type: 'cosine', warmupSteps: 2 }, 10), 0.5);
    assert.equal(lrAt(3, 1, { type: 'cosine', warmupSteps: 2 }, 10), 1);
    assert.ok(Math.abs(lrAt(7, 1, { type: 'cosine', warmupSteps: 2 }, 10) - 0.5) < 1e-12);
    assert.equal(lrAt(7, 1, { type: 'linear', warmupRatio: 0.2 }, 10), 0.5);
    assert.equal(lrAt(9, 2, { type: 'constant' }, 10), 2);
  });

  test('sequence classification (BERT) reports eval accuracy', async () => {
    const cfg = config({ model: 'bert-cls-tiny', data: { train: 'cls.jsonl', evalSplit: 0.25, maxLength: 16 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, steps: 3, logEvery: 1, evalEvery: 3 });
    const out = await runTraining(cfg, { runDir: runDir(), ctx: recorder().ctx });
    assert.equal(out.metricName, 'accuracy');
    assert.ok(out.status.summary!.evalMetric! >= 0 && out.status.summary!.evalMetric! <= 1);
    assert.equal(out.status.summary!.metricName, 'accuracy');
  });

  test('regression (STS-B-like sentence pairs, num_labels 1): float targets, MSE loss, Pearson r as the metric, the adapter check with token types', async () => {
    // bert-cls-tiny as a one-output regression model (its classifier's first row).
    const dir = join(root, 'bert-reg');
    cpSync(join(root, 'bert-cls-tiny'), dir, { recursive: true });
    const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...c, num_labels: 1, id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 }, problem_type: 'regression' }));
    const w = await readSafetensors(join(dir, 'model.safetensors'));
    const cw = w.get('classifier.weight')!;
    w.set('classifier.weight', f32([1, cw.shape[1]!], toFloat32(cw).slice(0, cw.shape[1])));
    w.set('classifier.bias', f32([1], toFloat32(w.get('classifier.bias')!).slice(0, 1)));
    await writeSafetensors(join(dir, 'model.safetensors'), w);
    // A BERT-style tokenizer: [CLS] a [SEP] b [SEP], token types 0 then 1.
    const words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'a', 'cat', 'dog', 'the', 'sun', 'moon', 'red', 'blue', 'car'];
    const S = (id: string, type_id: number) => ({ SpecialToken: { id, type_id } });
    const A = (type_id: number, id = 'A') => ({ Sequence: { id, type_id } });
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({
        version: '1.0', truncation: null, padding: null,
        added_tokens: words.slice(0, 4).map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
        normalizer: null, pre_tokenizer: { type: 'Whitespace' }, decoder: null,
        post_processor: { type: 'TemplateProcessing', single: [S('[CLS]', 0), A(0), S('[SEP]', 0)], pair: [S('[CLS]', 0), A(0), S('[SEP]', 0), A(1, 'B'), S('[SEP]', 1)], special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } } },
        model: { type: 'WordLevel', vocab: Object.fromEntries(words.map((t, i) => [t, i])), unk_token: '[UNK]' },
      }),
    );
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: '[PAD]', unk_token: '[UNK]' }));
    const pairs = ['a cat', 'a dog', 'the sun', 'the moon', 'red car', 'blue car'];
    writeFileSync(join(root, 'sts.jsonl'), Array.from({ length: 24 }, (_, i) => JSON.stringify({ sentence1: pairs[i % 6], sentence2: pairs[(i * 5) % 6], label: String(((i % 6) * 5) / 6) })).join('\n'));
    const cfg = config({ model: 'bert-reg', data: { train: 'sts.jsonl', textField: 'sentence1', textPairField: 'sentence2', evalSplit: 0.25, maxLength: 32 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, steps: 4, logEvery: 1, evalEvery: 4 });
    const run = runDir();
    const out = await runTraining(cfg, { runDir: run, ctx: recorder().ctx });
    assert.equal(out.metricName, 'pearson');
    const r = out.status.summary!.evalMetric!;
    assert.ok(r >= -1 && r <= 1, `Pearson r ${r}`);
    assert.ok(Number.isFinite(out.status.summary!.evalLoss!));
    // The exported adapter reproduces the run's outputs on rows that carry token types.
    const check = await readSafetensors(join(run, ADAPTER_CHECK_FILE));
    assert.ok(check.has('token_type_ids'), 'pairs keep their token types in the check file');
    const model = await Model.load(dir);
    const loaded = await loadAdapterHooks(model, join(run, 'adapter'));
    try {
      const t = (k: string) => toTf(check.get(k)!) as tf.Tensor2D;
      const inputs = { inputIds: t('input_ids'), attentionMask: t('attention_mask'), tokenTypeIds: t('token_type_ids') };
      const got = tf.tidy(() => model.forward(inputs, { hooks: loaded.hooks, overrides: loaded.params }).dataSync() as Float32Array);
      const without = tf.tidy(() => model.forward({ ...inputs, tokenTypeIds: undefined }, { hooks: loaded.hooks, overrides: loaded.params }).dataSync() as Float32Array);
      tf.dispose(Object.values(inputs));
      const want = check.get('logits')!.data as Float32Array;
      assert.equal(want.length, check.get('input_ids')!.shape[0], 'one value per row');
      assert.ok(got.every((x, i) => Math.abs(x - want[i]!) <= 1e-4 * (1 + Math.abs(want[i]!))), 'the adapter reproduces the run');
      assert.ok(without.some((x, i) => Math.abs(x - want[i]!) > 1e-4), 'the token types matter to these values');
      // The eval metric is the Pearson r of the predictions, row by row, with the targets; the loss their MSE.
      const { data, batchOpts } = await loadAnalysisData(model, cfg.data, cfg.seed);
      const rows = data.eval;
      const adapter = { hooks: loaded.hooks, overrides: loaded.params };
      const ev = await evaluate(model, adapter, rows, 4, batchOpts);
      const one = rows.map((e) => {
        const b = makeBatch([e], batchOpts);
        const y = tf.tidy(() => model.forward(b.inputs, adapter).dataSync()[0]!);
        disposeTrainBatch(b);
        return y;
      });
      const targets = rows.map((e) => (e.kind === 'cls' ? e.label : NaN));
      assert.ok(Math.abs(ev.metric! - pearson(one, targets)!) < 1e-5, `r ${ev.metric} vs ${pearson(one, targets)}`);
      const mse = one.reduce((a, y, i) => a + (y - targets[i]!) ** 2, 0) / rows.length;
      assert.ok(Math.abs(ev.loss - mse) < 1e-5 * (1 + mse), `loss ${ev.loss} vs MSE ${mse}`);
      // Trying the run: the pair's value, with its token types (as the forward gives it); without the second text, a warning.
      const rec = recorder();
      const tried = await runGenerate({ kind: 'generate', run, prompt: 'a cat', pair: 'the moon' }, rec.ctx);
      assert.ok(tried.kind === 'generate');
      const value = tried.result.outputs[0]!.value!;
      const direct = tf.tidy(() => model.forward({ inputIds: tf.tensor2d([[2, 4, 5, 3, 7, 9, 3]], [1, 7], 'int32'), tokenTypeIds: tf.tensor2d([[0, 0, 0, 0, 1, 1, 1]], [1, 7], 'int32') }, adapter).dataSync()[0]!);
      assert.ok(Math.abs(value - direct) < 1e-5, `tried ${value} vs ${direct}`);
      const single = recorder();
      await runGenerate({ kind: 'generate', run, prompt: 'a cat' }, single.ctx);
      assert.ok(single.logs.some((l) => /trained on text pairs .* give the second text too/.test(l)), single.logs.join('\n'));
    } finally {
      loaded.dispose();
      model.dispose();
    }
  });

  test('a base checkpoint without its classifier (bert-base-uncased): the run warns, trains the fresh head, and exports it in modules_to_save', async () => {
    const dir = join(root, 'bert-base');
    cpSync(join(root, 'bert-cls-tiny'), dir, { recursive: true });
    const w = await readSafetensors(join(dir, 'model.safetensors'));
    w.delete('classifier.weight');
    w.delete('classifier.bias');
    await writeSafetensors(join(dir, 'model.safetensors'), w);
    const cfg = config({ model: 'bert-base', data: { train: 'cls.jsonl', evalSplit: 0.25, maxLength: 16 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, steps: 3, logEvery: 1 });
    const run = runDir();
    const rec = recorder();
    await runTraining(cfg, { runDir: run, ctx: rec.ctx });
    assert.ok(rec.logs.some((l) => /classifier\.weight, classifier\.bias: not in the checkpoint \(a base model\).* trained and saved with the adapter/.test(l)), rec.logs.join('\n'));
    const saved = await readSafetensors(join(run, 'adapter', 'adapter_model.safetensors'));
    assert.ok([...saved.keys()].some((k) => k.startsWith('base_model.model.classifier.')), [...saved.keys()].join(', '));
    const ac = JSON.parse(readFileSync(join(run, 'adapter', 'adapter_config.json'), 'utf8')) as { modules_to_save: string[] };
    assert.ok(ac.modules_to_save.includes('classifier'));
    // The model card says how PEFT loads it: the base built with the run's head size (num_labels is in no PEFT file).
    const card = readFileSync(join(run, 'adapter', 'README.md'), 'utf8');
    assert.match(card, /^---\nbase_model: ".*bert-base"\nlibrary_name: peft\n/);
    assert.match(card, /AutoModelForSequenceClassification\.from_pretrained\(".*bert-base", num_labels=\d+\)/);
  });

  test('numLabels: a 3-class task on a base without a head, a 3-class head replaced by 2, a regression (1); the run’s later jobs load the same head size', async () => {
    writeFileSync(join(root, 'cls3.jsonl'), Array.from({ length: 12 }, (_, i) => JSON.stringify({ text: ['good fun film', 'bad dull film', 'a film'][i % 3], label: ['pos', 'neg', 'neu'][i % 3] })).join('\n'));
    const dir = join(root, 'bert-base-3');
    cpSync(join(root, 'bert-cls-tiny'), dir, { recursive: true });
    const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    // A base model's config: transformers' default of 2 labels, no head in the checkpoint.
    const { id2label: _i, label2id: _l, ...bare } = c;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(bare));
    const w = await readSafetensors(join(dir, 'model.safetensors'));
    w.delete('classifier.weight');
    w.delete('classifier.bias');
    await writeSafetensors(join(dir, 'model.safetensors'), w);
    const spec = { model: 'bert-base-3', data: { train: 'cls3.jsonl', evalSplit: 0.25, maxLength: 16 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, steps: 2, logEvery: 1 };
    await assert.rejects(runTraining(config(spec), { runDir: runDir(), ctx: recorder().ctx }), (e: InputError) => /3 distinct labels .* 2 outputs: give the spec "numLabels": 3/.test(e.message));
    // Numbers in a CSV are strings: a regression, not classes.
    writeFileSync(join(root, 'sts.csv'), 'text,label\ngood fun film,4.5\nbad dull film,0.25\na film,2.75\n');
    await assert.rejects(runTraining(config({ ...spec, data: { train: 'sts.csv', maxLength: 16 } }), { runDir: runDir(), ctx: recorder().ctx }), (e: InputError) => /labels such as "4\.5" are numbers, not classes: a regression .* "numLabels": 1/.test(e.message));
    const run = runDir();
    const cfg3spec = config({ ...spec, numLabels: 3 });
    // Score Layers before training reads the spec's head size too.
    await runImportance({ kind: 'importance', model: join(root, 'bert-base-3'), spec: cfg3spec.specFile, data: join(root, 'cls3.jsonl'), methods: ['fisher'], batches: 1, batchSize: 4, out: join(root, 'imp-3') }, recorder().ctx);
    const out = await runTraining(cfg3spec, { runDir: run, ctx: recorder().ctx });
    assert.equal(out.status.state, 'done');
    // Evaluate and Try the Model load the base with the run's head size.
    const tried = await runGenerate({ kind: 'generate', run, prompt: 'good fun film' }, recorder().ctx);
    assert.ok(tried.kind === 'generate' && tried.result.outputs[0]!.classes!.length === 3);
    assert.deepEqual(await baseLoadOptions(run), { numLabels: 3 });
    assert.deepEqual(await baseLoadOptions(join(run, 'adapter')), { numLabels: 3 }, 'a bare adapter folder: from the head it saved');
    // A resume from a spec with another numLabels is refused by name; a merge of the run writes a config.json its head loads with.
    const cfg3 = await readRunConfig(run);
    assert.deepEqual(specDifferences(cfg3, { ...cfg3, numLabels: 4 }), ['numLabels']);
    const merged = join(root, 'merged-3');
    await runMerge({ kind: 'merge', base: join(root, 'bert-base-3'), runs: [run], method: 'soup-uniform', out: merged }, recorder().ctx);
    const m3 = await Model.load(merged);
    assert.deepEqual(m3.params.get('classifier.weight')!.shape, [3, 64]);
    m3.dispose();
    // TIES trims task vectors, but a fresh head's is the whole trained head: the merge averages those.
    const run2 = runDir();
    await runTraining(config({ ...spec, numLabels: 3, seed: 5 }), { runDir: run2, ctx: recorder().ctx });
    const tiesOut = join(root, 'merged-ties');
    await runMerge({ kind: 'merge', base: join(root, 'bert-base-3'), runs: [run, run2], method: 'ties', out: tiesOut }, recorder().ctx);
    const headOf = async (f: string) => toFloat32([...(await readSafetensors(f))].find(([k]) => k.endsWith('classifier.weight'))![1]);
    const [h1, h2, hm] = [await headOf(join(run, 'adapter', 'adapter_model.safetensors')), await headOf(join(run2, 'adapter', 'adapter_model.safetensors')), await headOf(join(tiesOut, 'model.safetensors'))];
    assert.ok(hm.every((x, i) => Math.abs(x - (h1[i]! + h2[i]!) / 2) < 1e-6), 'the merged head is the runs’ average');
    // A run with another head size does not merge with these.
    const four = runDir();
    await runTraining(config({ ...spec, data: { train: 'cls3.jsonl', maxLength: 16 }, numLabels: 4, steps: 1 }), { runDir: four, ctx: recorder().ctx });
    await assert.rejects(runMerge({ kind: 'merge', base: join(root, 'bert-base-3'), runs: [run, four], method: 'ties', out: join(root, 'merged-mixed') }, recorder().ctx), (e: InputError) => e.where === 'runs' && /has another head \(numLabels 4.* runs merge only with one head/.test(e.problem));
    // A causal LM has no classifier head to size.
    await assert.rejects(runTraining(config({ steps: 1, numLabels: 3 }), { runDir: runDir(), ctx: recorder().ctx }), (e: InputError) => e.where === 'numLabels' && /causal language model/.test(e.problem));
    // A bare base (no adapter): its fresh head is random, and generation says so.
    const untrained = recorder();
    await runGenerate({ kind: 'generate', model: join(root, 'bert-base-3'), prompt: 'good' }, untrained.ctx);
    assert.ok(untrained.logs.some((l) => /not in the checkpoint, so untrained \(random\)/.test(l)), untrained.logs.join('\n'));
    // bert-cls-tiny's own 3-class head, replaced by a fresh 2-class one; 1 output: a regression.
    const two = await Model.load(join(root, 'bert-cls-tiny'), { numLabels: 2 });
    assert.deepEqual([two.params.get('classifier.weight')!.shape, [...two.freshHeads].sort()], [[2, 64], ['classifier.bias', 'classifier.weight']]);
    two.dispose();
    const one = await Model.load(join(root, 'bert-cls-tiny'), { numLabels: 1 });
    assert.ok('problemType' in one.config && one.config.problemType === 'regression');
    one.dispose();
  });

  test('multi-label (spec problemType): a BCE head on label lists, subset accuracy as the metric (as the rows say), classes past 0.5 when trying the run', async () => {
    const tags = [['fun'], ['dull', 'long'], ['fun', 'long'], []];
    writeFileSync(join(root, 'tags.jsonl'), Array.from({ length: 16 }, (_, i) => JSON.stringify({ text: ['good fun film', 'bad dull long film', 'a fun long film', 'a film'][i % 4], label: tags[i % 4] })).join('\n'));
    const cfg = config({ model: 'bert-cls-tiny', problemType: 'multi_label_classification', data: { train: 'tags.jsonl', evalSplit: 0.25, maxLength: 16 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, optimizer: { lr: 0.05 }, steps: 6, logEvery: 1, evalEvery: 6 });
    const run = runDir();
    const out = await runTraining(cfg, { runDir: run, ctx: recorder().ctx });
    assert.equal(out.metricName, 'subset_accuracy');
    const model = await Model.load(cfg.modelDir, await baseLoadOptions(run));
    const loaded = await loadAdapterHooks(model, join(run, 'adapter'));
    try {
      assert.ok('problemType' in model.config && model.config.problemType === 'multi_label_classification');
      const { data, batchOpts } = await loadAnalysisData(model, cfg.data, cfg.seed);
      const adapter = { hooks: loaded.hooks, overrides: loaded.params };
      const ev = await evaluate(model, adapter, data.eval, 4, batchOpts);
      // Row by row: right when every class's logit is on the side of 0 its target says.
      const right = data.eval.filter((e) => {
        const b = makeBatch([e], batchOpts);
        const z = tf.tidy(() => model.forward(b.inputs, adapter).dataSync() as Float32Array);
        disposeTrainBatch(b);
        return e.kind === 'cls' && Array.from(z).every((x, k) => x > 0 === e.targets![k]! > 0.5);
      }).length;
      assert.equal(ev.metric, right / data.eval.length);
      assert.equal(out.status.summary!.evalMetric, ev.metric);
    } finally {
      loaded.dispose();
      model.dispose();
    }
    const tried = await runGenerate({ kind: 'generate', run, prompt: 'a fun long film' }, recorder().ctx);
    assert.ok(tried.kind === 'generate');
    const o = tried.result.outputs[0]!;
    assert.deepEqual(o.text, o.classes!.filter((c) => c.p > 0.5).map((c) => c.name).join(', ') || '(none)');
  });

  test('image classification (ViT) from a folder of PNGs', async () => {
    const cfg = config({ model: 'vit-tiny', data: { train: 'imgs', evalSplit: 0.34 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, steps: 2, batchSize: 2, logEvery: 1 });
    const dir = runDir();
    const out = await runTraining(cfg, { runDir: dir, ctx: recorder().ctx });
    assert.equal(out.status.state, 'done');
    const m = await readMetrics(dir);
    assert.ok(m.at(-1)!.eval_accuracy !== undefined);
  });
});

describe('compare', () => {
  test('overallProgress: steps over all variants, later ones estimated from the current one', () => {
    const overall = overallProgress(3);
    assert.deepEqual(overall(0, 1, 10), { done: 1, total: 30 });
    assert.deepEqual(overall(0, 10, 10), { done: 10, total: 30 });
    assert.deepEqual(overall(1, 1, 4), { done: 11, total: 18 });
    assert.deepEqual(overall(1, 3, 4), { done: 13, total: 18 }, 'a variant that stops at 3 of 4 (failed) counts 3');
    assert.deepEqual(overall(2, 2, 5), { done: 15, total: 18 });
  });

  test('runs each variant into its own folder and writes compare.json', async () => {
    const f = join(root, 'cmp.peft.json');
    writeFileSync(
      f,
      JSON.stringify({
        model: 'gpt2-tiny',
        data: { train: 'add.jsonl', evalSplit: 0.25, maxLength: 24, heldout: 'heldout.jsonl' },
        optimizer: { lr: 0.05 },
        schedule: { type: 'constant' },
        steps: 3,
        batchSize: 4,
        logEvery: 1,
        variants: [
          { name: 'lora-r2', adapter: { kind: 'lora', r: 2, alpha: 4 } },
          { name: 'bitfit', adapter: { kind: 'bitfit' }, steps: 2 },
          { name: 'broken', adapter: { kind: 'lora', targets: ['no_such_module'] } },
        ],
      }),
    );
    const out = join(root, 'cmp-out');
    const rec = recorder();
    const { dir, result } = await runCompare(f, { outDir: out, ctx: rec.ctx });
    assert.equal(dir, out);
    // Progress counts steps over all variants: 3 + 2 (the broken one fails before its first step).
    const done = rec.progress.map((p) => p.done);
    assert.deepEqual(done, [1, 2, 3, 4, 5]);
    assert.deepEqual(rec.progress.map((p) => p.total), [9, 9, 9, 7, 7], 'the totals of variants not yet started are estimated from the current one');
    assert.match(rec.progress[3]!.message!, /^\[bitfit 2\/3\] step 1\/2 · loss /);
    const saved = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as CompareResult;
    assert.deepEqual(saved, JSON.parse(JSON.stringify(result)));
    assert.deepEqual(saved.variants.map((v) => [v.name, v.state]), [['lora-r2', 'done'], ['bitfit', 'done'], ['broken', 'failed']]);
    const [lora, bitfit, broken] = saved.variants;
    for (const v of [lora!, bitfit!]) {
      assert.ok(v.trainableParams! > 0);
      assert.ok(Number.isFinite(v.finalLoss) && Number.isFinite(v.finalEvalLoss));
      assert.equal(v.metricName, 'exact_match');
      assert.ok(v.finalMetric !== undefined);
      assert.ok(v.medianStepMs! > 0 && v.tokensPerS! > 0 && v.peakRssMb! > 0);
      assert.ok(v.forgetting && Number.isFinite(v.forgetting.before) && Number.isFinite(v.forgetting.after));
      assert.ok(Math.abs(v.forgetting.delta - (v.forgetting.after - v.forgetting.before)) < 1e-9);
      assert.ok(existsSync(join(out, v.name, 'adapter', 'adapter_config.json')));
    }
    assert.equal(lora!.forgetting!.before, bitfit!.forgetting!.before, 'the same base model before training');
    assert.deepEqual(lora!.curve.map((p) => p.step), [1, 2, 3]);
    assert.deepEqual(bitfit!.curve.map((p) => p.step), [1, 2], 'a variant may override steps');
    assert.ok(lora!.curve.at(-1)!.eval_loss !== undefined);
    assert.match(broken!.error!, /adapter\.targets\): target modules .*no_such_module.* match no linear module/);
    assert.equal(broken!.curve.length, 0);

    // Again in the same folder: nothing left to train, and nothing measured is lost.
    const again = await runCompare(f, { outDir: out, ctx: recorder().ctx });
    for (const [i, v] of again.result.variants.slice(0, 2).entries()) {
      const first = saved.variants[i]!;
      assert.deepEqual([v.name, v.state, v.steps, v.finalLoss, v.medianStepMs, v.tokensPerS, v.forgetting], [first.name, 'done', first.steps, first.finalLoss, first.medianStepMs, first.tokensPerS, first.forgetting], v.name);
    }
  });
});
