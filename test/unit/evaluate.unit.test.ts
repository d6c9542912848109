/**
 * The `evaluate` job: a run (base + its adapter) and its base, scored on a data file. Reference: the
 * training loop's own evaluation of the same rows (the run's final eval figures and its zero-shot
 * baseline in status.json), so scoring a run on its eval file must reproduce them.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { describeEvaluation, type EvaluateReport, type RunStatus } from '../../src/protocol';
import { initBackend } from '../../sidecar/src/backend';
import { CancelledError, cliContext, type JobContext } from '../../sidecar/src/jobs/context';
import { jobParamsProblem } from '../../sidecar/src/jobs/manager';
import { runJob } from '../../sidecar/src/jobs/runners';
import { loadSpec, runConfig } from '../../sidecar/src/spec/load';
import { runTraining } from '../../sidecar/src/train/trainer';

const REPO = resolve(__dirname, '..', '..');
const root = mkdtempSync(join(tmpdir(), 'peft-lab-evaluate-'));
after(() => rmSync(root, { recursive: true, force: true }));
const ctx = () => ({ signal: new AbortController().signal, progress: () => undefined, log: () => undefined });
const rows = (file: string, n: number) => readFileSync(join(REPO, 'media/data/addition', file), 'utf8').trim().split('\n').slice(0, n);

let runDir = '';
let status: RunStatus;
before(async () => {
  await initBackend('wasm', () => undefined);
  // Spec paths stay inside the spec's folder: the bundled model is copied there.
  cpSync(join(REPO, 'media/models/tiny-gpt'), join(root, 'tiny-gpt'), { recursive: true });
  writeFileSync(join(root, 'train.jsonl'), `${rows('train.jsonl', 48).join('\n')}\n`);
  writeFileSync(join(root, 'eval.jsonl'), `${rows('eval.jsonl', 20).join('\n')}\n`);
  const spec = join(root, 'add.peft.json');
  writeFileSync(
    spec,
    JSON.stringify({
      model: 'tiny-gpt',
      data: { train: 'train.jsonl', eval: 'eval.jsonl', maxLength: 48 },
      adapter: { kind: 'lora', r: 4, alpha: 8 },
      optimizer: { lr: 0.01 },
      batchSize: 8,
      steps: 6,
      evalEvery: 6,
      logEvery: 3,
    }),
  );
  runDir = join(root, 'runs', 'add');
  status = (await runTraining(runConfig(loadSpec(spec)), { runDir, ctx: ctx() })).status;
  assert.equal(status.state, 'done');
});

describe('evaluate job', () => {
  it("scoring a run on its own eval file reproduces the trainer's final eval and zero-shot baseline", async () => {
    const out = join(root, 'eval-report.json');
    const before = tf.memory().numTensors;
    const seen: number[] = [];
    const r = await runJob({ kind: 'evaluate', runs: [runDir], data: join(root, 'eval.jsonl'), batchSize: 3, out }, { ...cliContext(), progress: (p) => seen.push(p.done) });
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
    assert.equal(r.kind, 'evaluate');
    const report = JSON.parse(readFileSync(out, 'utf8')) as EvaluateReport;
    assert.deepEqual(report, JSON.parse(JSON.stringify(r.kind === 'evaluate' ? r.report : undefined)));
    assert.equal(report.rows, 20);
    assert.deepEqual(seen, [1]);
    const [run] = report.runs;
    assert.equal(run!.name, 'add');
    assert.equal(run!.metricName, 'exact_match');
    const s = status.summary!;
    const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
    near(run!.finetuned.loss, s.evalLoss!, 'fine-tuned loss');
    near(run!.base.loss, s.baselineEvalLoss!, 'base loss');
    assert.equal(run!.finetuned.metric, s.evalMetric);
    assert.equal(run!.base.metric, s.baselineEvalMetric);
    assert.ok(run!.finetuned.loss < run!.base.loss, 'the fine-tune learned something');
    assert.ok(run!.finetuned.ece >= 0 && run!.finetuned.ece <= 1);
    assert.match(describeEvaluation(run!), /^add: loss \d\.\d{4}, exact_match \d+\.\d%, ECE \d\.\d{3} \(base: loss \d\.\d{4}, exact_match \d+\.\d%\)$/);
  });

  it("adapters that don't fold into the base (bottleneck; SSF on Llama's bias-free linears) score as in training; merge refuses what it cannot fold", async () => {
    cpSync(join(REPO, '..', 'shared', 'fixtures', 'hf', 'llama-tiny'), join(root, 'llama-tiny'), { recursive: true });
    for (const [name, model, adapter] of [['bottleneck', 'tiny-gpt', { kind: 'bottleneck' }], ['ssf-llama', 'llama-tiny', { kind: 'ssf' }]] as const) {
      const spec = join(root, `${name}.peft.json`);
      writeFileSync(spec, JSON.stringify({ model, data: { train: 'train.jsonl', eval: 'eval.jsonl', maxLength: 48 }, adapter, optimizer: { lr: 0.01 }, batchSize: 8, steps: 3, evalEvery: 3, logEvery: 3 }));
      const dir = join(root, 'runs', name);
      const st = (await runTraining(runConfig(loadSpec(spec)), { runDir: dir, ctx: ctx() })).status;
      const r = await runJob({ kind: 'evaluate', runs: [dir], data: join(root, 'eval.jsonl'), out: join(root, `${name}.json`) }, cliContext());
      assert.ok(r.kind === 'evaluate');
      const got = r.report.runs[0]!;
      assert.ok(Math.abs(got.finetuned.loss - st.summary!.evalLoss!) <= 1e-5 * st.summary!.evalLoss!, `${name}: ${got.finetuned.loss} vs the trainer's ${st.summary!.evalLoss}`);
      assert.ok(Math.abs(got.base.loss - st.summary!.baselineEvalLoss!) <= 1e-5 * st.summary!.baselineEvalLoss!, `${name} base`);
      if (name === 'ssf-llama')
        await assert.rejects(
          runJob({ kind: 'merge', base: join(root, 'llama-tiny'), runs: [dir], method: 'soup-uniform', out: join(root, 'never') }, cliContext()),
          /adapter\): folding this ssf adapter in adds \d+ tensor\(s\) the base model does not have \(model\.layers\.0\..*\.bias/,
        );
    }
  });

  it('maxRows scores the first rows only; the same run twice is scored twice', async () => {
    const r = await runJob({ kind: 'evaluate', runs: [runDir, runDir], data: join(root, 'train.jsonl'), maxRows: 5, out: join(root, 'few.json') }, cliContext());
    assert.ok(r.kind === 'evaluate');
    assert.equal(r.report.rows, 5);
    assert.equal(r.report.runs.length, 2);
    assert.deepEqual(r.report.runs[0], r.report.runs[1]);
  });

  it('checks its params and names the file at fault', async () => {
    assert.equal(jobParamsProblem({ kind: 'evaluate', runs: ['r'], data: 'd.jsonl', out: 'o.json' }), undefined);
    assert.match(jobParamsProblem({ kind: 'evaluate', runs: [], data: 'd', out: 'o' })!, /'runs' must be a non-empty array/);
    assert.match(jobParamsProblem({ kind: 'evaluate', runs: ['r'], out: 'o' })!, /'data' must be a non-empty string/);
    assert.match(jobParamsProblem({ kind: 'evaluate', runs: ['r'], data: 'd', out: 'o', maxRows: 0 })!, /'maxRows' must be an integer ≥ 1/);
    await assert.rejects(runJob({ kind: 'evaluate', runs: [root], data: join(root, 'eval.jsonl'), out: join(root, 'x.json') }, cliContext()), /spec\.json.*not a run folder/);
    const bad = join(root, 'bad.jsonl');
    writeFileSync(bad, '{"prompt": "1+1=", "completion": "2"}\n{"prompt": \n');
    await assert.rejects(runJob({ kind: 'evaluate', runs: [runDir], data: bad, out: join(root, 'y.json') }, cliContext()), /bad\.jsonl.*(line 2|:2)/);
  });

  it("a classifier: the fine-tune's figures are the trainer's, and the base's its zero-shot baseline (with the checkpoint's head)", async () => {
    cpSync(join(REPO, '..', 'shared', 'fixtures', 'hf', 'bert-cls-tiny'), join(root, 'bert-cls-tiny'), { recursive: true });
    const cls = (i: number) => JSON.stringify({ text: i % 2 ? 'good fun film' : 'bad dull film', label: i % 2 ? 'pos' : 'neg' });
    writeFileSync(join(root, 'cls-train.jsonl'), Array.from({ length: 12 }, (_, i) => cls(i)).join('\n'));
    writeFileSync(join(root, 'cls-eval.jsonl'), Array.from({ length: 6 }, (_, i) => cls(i + 1)).join('\n'));
    const spec = join(root, 'cls.peft.json');
    writeFileSync(spec, JSON.stringify({ model: 'bert-cls-tiny', data: { train: 'cls-train.jsonl', eval: 'cls-eval.jsonl', maxLength: 16 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, optimizer: { lr: 0.01 }, batchSize: 4, steps: 3, evalEvery: 3 }));
    const dir = join(root, 'runs', 'cls');
    const s = (await runTraining(runConfig(loadSpec(spec)), { runDir: dir, ctx: ctx() })).status.summary!;
    const r = await runJob({ kind: 'evaluate', runs: [dir], data: join(root, 'cls-eval.jsonl'), out: join(root, 'cls-eval-report.json') }, cliContext());
    assert.ok(r.kind === 'evaluate');
    const run = r.report.runs[0]!;
    assert.equal(run.metricName, 'accuracy');
    assert.ok(Math.abs(run.finetuned.loss - s.evalLoss!) <= 1e-5 * Math.max(1, s.evalLoss!), `${run.finetuned.loss} vs ${s.evalLoss}`);
    assert.equal(run.finetuned.metric, s.evalMetric);
    assert.ok(Number.isFinite(run.base.loss) && run.base.metric !== undefined);
    // The base checkpoint has its own head: the base is scored with it, as the trainer's zero-shot baseline.
    assert.ok(Math.abs(run.base.loss - s.baselineEvalLoss!) <= 1e-5 * Math.max(1, s.baselineEvalLoss!), `${run.base.loss} vs ${s.baselineEvalLoss}`);
    // A file with one of the classes only numbers its labels as the training data did: "pos" rows
    // score as the same rows with the class id the run learned for "pos" (1 of neg, pos).
    writeFileSync(join(root, 'cls-pos.jsonl'), Array.from({ length: 4 }, () => cls(1)).join('\n'));
    writeFileSync(join(root, 'cls-pos-ids.jsonl'), Array.from({ length: 4 }, () => JSON.stringify({ text: 'good fun film', label: 1 })).join('\n'));
    const score = async (file: string) => {
      const e = await runJob({ kind: 'evaluate', runs: [dir], data: join(root, file), out: join(root, `${file}.json`) }, cliContext());
      return e.kind === 'evaluate' ? e.report.runs[0]!.finetuned : undefined;
    };
    assert.deepEqual(await score('cls-pos.jsonl'), await score('cls-pos-ids.jsonl'));
    writeFileSync(join(root, 'cls-new.jsonl'), [cls(1), JSON.stringify({ text: 'so so film', label: 'meh' })].join('\n'));
    await assert.rejects(score('cls-new.jsonl'), /cls-new\.jsonl.*label "meh" is not one the run was trained on \(neg, pos\)/);
  });

  it('stops when cancelled, releasing its tensors', async () => {
    const ac = new AbortController();
    ac.abort();
    const c: JobContext = { signal: ac.signal, log: () => undefined, progress: () => undefined };
    const before = tf.memory().numTensors;
    await assert.rejects(runJob({ kind: 'evaluate', runs: [runDir], data: join(root, 'eval.jsonl'), out: join(root, 'z.json') }, c), CancelledError);
    assert.equal(tf.memory().numTensors, before);
  });
});
