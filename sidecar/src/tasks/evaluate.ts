/**
 * `evaluate`: fine-tuned runs, and their base, scored on rows of a data file (a test set, another
 * task, text the fine-tune should not forget). The same loss and task metric as the training loop's
 * evaluation (../train/evaluate.ts), plus the expected calibration error. Rows are read with each
 * run's own data settings (its fields, maximum length and class numbering: analysis/data.ts
 * loadDataAsRun), so a run is scored on what it would have seen had this been its eval file.
 */
import * as tf from '@tensorflow/tfjs-core';
import { promises as fsp } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { describeEvaluation, type EvaluateJobParams, type EvaluateReport, type EvaluateRunReport, type JobResult } from '../../../src/protocol';
import { InputError } from '../errors';
import { throwIfCancelled, type JobContext } from '../jobs/context';
import { Model } from '../models/model';
import { readRunConfig } from '../train/run-folder';
import { baseLoadOptions } from './base-options';
import { loadDataAsRun } from '../analysis/data';
import { evaluateDetailed } from '../analysis/evaluation';
import { loadAnyAdapter } from '../analysis/finetuned';
import { AnalysisUsageError, int, list, runCli, str } from './importance';

export async function runEvaluate(p: EvaluateJobParams, ctx: JobContext): Promise<JobResult & { kind: 'evaluate' }> {
  if (p.runs.length === 0) throw new InputError('', 'runs', 'give one or more run folders');
  const batchSize = p.batchSize ?? 16;
  const out = resolve(p.out);
  const runs: EvaluateRunReport[] = [];
  let rows = 0;
  // Runs of one base share its loaded weights.
  let model: Model | undefined;
  let loadedKey = '';
  try {
    for (const [i, dir] of p.runs.entries()) {
      throwIfCancelled(ctx.signal);
      const modelDir = resolve((await readRunConfig(dir)).modelDir);
      const opts = await baseLoadOptions(dir);
      // Runs of one base and one head size share the loaded weights.
      const key = `${modelDir}\0${opts.numLabels ?? ''}`;
      if (!model || key !== loadedKey) {
        model?.dispose();
        model = undefined;
        model = await Model.load(modelDir, opts);
        loadedKey = key;
      }
      // This file's rows, all of them (no eval split of their own), read as the run reads its data.
      const data = await loadDataAsRun(model, dir, resolve(p.data));
      const examples = data.data.train.slice(0, p.maxRows ?? Infinity);
      if (examples.length === 0) throw new InputError(p.data, '', 'no rows to score');
      rows = examples.length;
      // Applied as in training (hooks), not folded in: every adapter kind scores, bottlenecks included.
      const adapter = await loadAnyAdapter(model, dir);
      try {
        const overrides = adapter.overrides();
        // A head the base checkpoint lacks (a fresh classifier) is the run's own: it goes with the base's score too.
        // A base with its own head is scored with it, as the trainer's zero-shot baseline is.
        const carried = new Map<string, tf.Tensor>();
        const fresh = new Set(model.freshHeads);
        if (model.arch.task !== 'causal-lm') for (const x of model.paramInfo()) if (x.type === 'head' && fresh.has(x.name) && overrides.has(x.name)) carried.set(x.name, overrides.get(x.name)!);
        const base = await evaluateDetailed(model, carried.size ? { overrides: carried } : undefined, examples, batchSize, data.batchOpts, ctx.signal);
        const finetuned = await evaluateDetailed(model, { hooks: adapter.hooks, overrides }, examples, batchSize, data.batchOpts, ctx.signal);
        throwIfCancelled(ctx.signal);
        // As the loader names it for eval rows (these rows were loaded as a training file).
        const metricName = data.data.task !== 'causal-lm' ? data.data.metricName : examples.some((e) => e.kind === 'lm' && e.completion) ? 'exact_match' : undefined;
        runs.push({ name: basename(resolve(dir)), source: resolve(dir), ...(metricName ? { metricName } : {}), base, finetuned });
      } finally {
        adapter.dispose();
      }
      ctx.progress({ done: i + 1, total: p.runs.length, message: `${basename(resolve(dir))}: loss ${runs.at(-1)!.finetuned.loss.toFixed(4)} (base ${runs.at(-1)!.base.loss.toFixed(4)})` });
    }
  } finally {
    model?.dispose();
  }
  const report: EvaluateReport = { version: 1, data: resolve(p.data), rows, runs };
  await fsp.mkdir(dirname(out), { recursive: true });
  await fsp.writeFile(out, `${JSON.stringify(report, null, 1)}\n`, 'utf8');
  return { kind: 'evaluate', out, report };
}

// ---- command line ------------------------------------------------------------------------------

export const EVALUATE_USAGE = 'evaluate --run RUN_DIR [--run RUN_DIR]… --data FILE [--max-rows N] [--batch-size 16] --out FILE';

export async function evaluateCommand(v: Record<string, string | boolean | string[] | undefined>): Promise<void> {
  const runs = list(v, 'run');
  if (runs.length === 0) throw new AnalysisUsageError('--run RUN_DIR is required (once per run)');
  const p: EvaluateJobParams = { kind: 'evaluate', runs, data: str(v, 'data')!, out: str(v, 'out')! };
  const maxRows = int(v, 'max-rows');
  if (maxRows !== undefined) p.maxRows = maxRows;
  const batchSize = int(v, 'batch-size');
  if (batchSize !== undefined) p.batchSize = batchSize;
  const r = await runCli(v.verbose === true, (ctx) => runEvaluate(p, ctx));
  for (const run of r.report.runs) process.stdout.write(`${describeEvaluation(run)}\n`);
  process.stdout.write(`${r.report.rows} rows of ${r.report.data}; wrote ${r.out}\n`);
}
