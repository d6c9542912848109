/**
 * `peft-lab merge` and the 'merge' job: task-vector merges of several fine-tunes of one base
 * (run folders with their adapter folded in, or fine-tuned model folders) into a loadable model
 * folder (config.json and tokenizer files copied, model.safetensors) plus `merge.json`.
 * See ../analysis/task-vectors.ts for the methods.
 */
import { baseLoadOptions } from './base-options';
import * as tf from '@tensorflow/tfjs-core';
import { copyFileSync, existsSync, promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { formatMetricValue, MERGE_METHODS, type JobResult, type MergeEval, type MergeJobParams, type MergeMethod, type MergeReport } from '../../../src/protocol';
import { InputError } from '../errors';
import { float32ToBfloat16, float32ToFloat16, writeSafetensors, type DType, type HostTensor } from '../io/safetensors';
import { CheckpointReader } from '../io/checkpoint';
import { throwIfCancelled, yieldToEventLoop, type JobContext } from '../jobs/context';
import { Model, withoutTaskPrefix } from '../models/model';
import { loadDataAsRun, type AnalysisData } from '../analysis/data';
import { evaluateDetailed, scoreOf } from '../analysis/evaluation';
import { loadFinetuned } from '../analysis/finetuned';
import { average, breadcrumbs, compeft, compeftBytes, dare, dareRng, nonzero, ties, type Vec } from '../analysis/task-vectors';
import { AnalysisUsageError, list, num, int, runCli, str } from './importance';
import { modelFolder } from '../spec/hub-cache';
import { checkMergeOutput, MERGE_JSON, MODEL_FILES_COPIED } from './merge-output';

export { MERGE_JSON } from './merge-output';

interface TaskVectors {
  names: string[];
  base: Map<string, Vec>;
  shapes: Map<string, number[]>;
  /** τ_t per changed tensor (absent: 0). */
  taus: Map<string, Vec>[];
  runs: string[];
  /** Head tensors the base checkpoint lacked (Model.freshHeads): their τ runs from a random start. */
  fresh: ReadonlySet<string>;
}

/** The dtype each parameter has in a model folder's checkpoint (F32 where it cannot tell). */
async function storedDtypes(dir: string): Promise<(name: string) => DType> {
  const reader = await CheckpointReader.open(dir);
  try {
    const of = new Map(reader.names().map((n) => [n, reader.entry(n).dtype]));
    return (name) => of.get(name) ?? of.get(withoutTaskPrefix(name)) ?? 'F32';
  } finally {
    await reader.close();
  }
}

/** float32 values as a tensor of a 16-bit float dtype where the base had one; else float32. */
function inDtype(data: Float32Array, shape: number[], dtype: DType): HostTensor {
  if (dtype === 'BF16') return { dtype, shape, data: float32ToBfloat16(data) };
  if (dtype === 'F16') return { dtype, shape, data: float32ToFloat16(data) };
  return { dtype: 'F32', shape, data };
}

async function hostOf(t: tf.Tensor): Promise<Float32Array> {
  const d = await t.data();
  return d instanceof Float32Array ? Float32Array.from(d) : Float32Array.from(d as ArrayLike<number>);
}

async function taskVectors(model: Model, runs: readonly string[], ctx: JobContext): Promise<TaskVectors> {
  const base = new Map<string, Vec>();
  const shapes = new Map<string, number[]>();
  for (const [n, t] of model.params) {
    base.set(n, await hostOf(t));
    shapes.set(n, [...t.shape]);
  }
  const taus: Map<string, Vec>[] = [];
  const names = new Set<string>();
  for (const run of runs) {
    throwIfCancelled(ctx.signal);
    const ft = await loadFinetuned(model, run);
    try {
      const m = new Map<string, Vec>();
      for (const [n, t] of ft.params) {
        const b = base.get(n)!;
        const v = await hostOf(t);
        for (let i = 0; i < v.length; i++) v[i]! -= b[i]!;
        if (nonzero(v) === 0) continue;
        m.set(n, v);
        names.add(n);
      }
      taus.push(m);
    } finally {
      ft.dispose();
    }
    await yieldToEventLoop();
  }
  const order = [...model.params.keys()].filter((n) => names.has(n));
  return { names: order, base, shapes, taus, runs: runs.map((r) => resolve(r)), fresh: new Set(model.freshHeads) };
}

/** Σ wᵢ·τᵢ / Σ wᵢ. */
function weightedAverage(taus: readonly Vec[], weights: readonly number[]): Vec {
  const total = weights.reduce((a, b) => a + b, 0);
  const m = new Float32Array(taus[0]!.length);
  taus.forEach((tau, i) => {
    const w = weights[i]! / total;
    for (let j = 0; j < m.length; j++) m[j]! += w * tau[j]!;
  });
  return m;
}

const tauOf = (tv: TaskVectors, t: number, name: string): Vec => tv.taus[t]!.get(name) ?? new Float32Array(tv.base.get(name)!.length);

/** The merged τ of every changed tensor for the given runs (indices into tv.runs). */
function mergeTaus(tv: TaskVectors, method: MergeMethod, which: readonly number[], p: MergeJobParams): Map<string, Vec> {
  const out = new Map<string, Vec>();
  const weights = which.map((t) => p.weights?.[t] ?? 1);
  const lambda = p.lambda ?? 1;
  const seed = p.seed ?? 0;
  for (const name of tv.names) {
    const taus = which.map((t) => tauOf(tv, t, name));
    let m: Vec;
    // A fresh head's τ is all of a trained head, not a sparse task direction: averaged (weighted), never trimmed or rescaled.
    if (tv.fresh.has(name)) {
      out.set(name, weightedAverage(taus, method === 'soup-uniform' || method === 'soup-greedy' ? taus.map(() => 1) : weights));
      continue;
    }
    switch (method) {
      case 'soup-uniform':
      case 'soup-greedy':
        m = average(taus);
        break;
      case 'breadcrumbs':
        m = breadcrumbs(taus, { weights, lambda, top: p.top ?? 0.01, bottom: p.bottom ?? 0.85 });
        break;
      case 'compeft': {
        m = new Float32Array(taus[0]!.length);
        taus.forEach((tau, i) => {
          const c = compeft(tau, p.density ?? 0.1, p.alpha ?? 1);
          const w = lambda * weights[i]!;
          for (let j = 0; j < m.length; j++) m[j]! += w * c.values[j]!;
        });
        break;
      }
      case 'ties':
        m = ties(taus, { weights, lambda, density: p.density ?? 0.2 });
        break;
      case 'dare':
      case 'dare-ties':
        m = dare(taus, { weights, lambda, density: p.density ?? 0.5, rng: (i) => dareRng(seed, which[i]!, name), ties: method === 'dare-ties' });
        break;
      default: {
        const never: never = method;
        throw new Error(`unknown merge method ${String(never)}`);
      }
    }
    out.set(name, m);
  }
  return out;
}

/** θ_base + τ for the changed tensors, as kept tensors (caller disposes). */
function overridesOf(tv: TaskVectors, taus: ReadonlyMap<string, Vec>): Map<string, tf.Tensor> {
  const m = new Map<string, tf.Tensor>();
  for (const [n, tau] of taus) {
    const b = tv.base.get(n)!;
    m.set(n, tf.keep(tf.tensor(b.map((v, i) => v + tau[i]!), tv.shapes.get(n)!, 'float32')));
  }
  return m;
}

async function evalWith(model: Model, tv: TaskVectors, taus: ReadonlyMap<string, Vec> | undefined, data: AnalysisData, rows: AnalysisData['data']['eval'], batchSize: number, signal: AbortSignal): Promise<MergeEval> {
  const ov = taus ? overridesOf(tv, taus) : undefined;
  try {
    const e = await evaluateDetailed(model, ov ? { overrides: ov } : undefined, rows, batchSize, data.batchOpts, signal);
    return { loss: e.loss, ...(e.metric !== undefined ? { metric: e.metric } : {}) };
  } finally {
    if (ov) tf.dispose([...ov.values()]);
  }
}

/** Option ranges, and options the method would ignore (an error rather than a silent no-op). */
function checkMergeOptions(p: MergeJobParams): void {
  const soup = p.method === 'soup-uniform' || p.method === 'soup-greedy';
  if (soup && p.weights) throw new InputError('', 'weights', `${p.method} averages the runs with equal weights; weights apply to breadcrumbs, compeft, ties and dare`);
  if (soup && p.lambda !== undefined) throw new InputError('', 'lambda', `${p.method} averages the fine-tuned weights; lambda (the task-vector scale) applies to the other methods`);
  const usesDensity = ['compeft', 'ties', 'dare', 'dare-ties'].includes(p.method);
  if (p.density !== undefined && !usesDensity) throw new InputError('', 'density', `${p.method} takes no density (compeft, ties and dare do)`);
  if (p.density !== undefined && !(p.density > 0 && p.density <= 1)) throw new InputError('', 'density', `must be in (0, 1], got ${p.density}`);
  if ((p.top !== undefined || p.bottom !== undefined) && p.method !== 'breadcrumbs') throw new InputError('', p.top !== undefined ? 'top' : 'bottom', 'only breadcrumbs masks the top and bottom fractions');
  for (const [key, x] of [['top', p.top], ['bottom', p.bottom]] as const) if (x !== undefined && !(x >= 0 && x < 1)) throw new InputError('', key, `must be in [0, 1), got ${x}`);
  if ((p.top ?? 0.01) + (p.bottom ?? 0.85) >= 1) throw new InputError('', 'bottom', `top + bottom must be below 1 (nothing would be kept), got ${(p.top ?? 0.01) + (p.bottom ?? 0.85)}`);
  if (p.alpha !== undefined && p.method !== 'compeft') throw new InputError('', 'alpha', 'only compeft takes alpha (its scale)');
  if (p.lambda !== undefined && !Number.isFinite(p.lambda)) throw new InputError('', 'lambda', `must be a number, got ${p.lambda}`);
  if (p.seed !== undefined && !p.method.startsWith('dare')) throw new InputError('', 'seed', 'only dare draws at random');
}

/**
 * config.json of a merged classifier whose head the runs resized (the spec's numLabels): num_labels,
 * a label table of that size and, for one output, problem_type "regression", so that this folder
 * loads (here and in transformers) with the head it holds.
 */
async function resizeHeadConfig(file: string, model: Model): Promise<void> {
  if (!('numLabels' in model.config) || !existsSync(file)) return;
  const raw = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
  const n = model.config.numLabels;
  const had = typeof raw.num_labels === 'number' ? raw.num_labels : raw.id2label && typeof raw.id2label === 'object' ? Object.keys(raw.id2label).length : 2;
  if (had === n) return;
  const names = Array.from({ length: n }, (_, i) => `LABEL_${i}`);
  const out = { ...raw, num_labels: n, id2label: Object.fromEntries(names.map((l, i) => [String(i), l])), label2id: Object.fromEntries(names.map((l, i) => [l, i])), problem_type: model.config.problemType };
  await fsp.writeFile(file, `${JSON.stringify(out, null, 2)}\n`, 'utf8');
}

export async function runMerge(p: MergeJobParams, ctx: JobContext): Promise<JobResult & { kind: 'merge' }> {
  if (!(MERGE_METHODS as readonly string[]).includes(p.method)) throw new InputError('', 'method', `must be one of ${MERGE_METHODS.join(', ')}`);
  if (p.runs.length === 0) throw new InputError('', 'runs', 'at least one run is needed');
  if (p.weights && p.weights.length !== p.runs.length) throw new InputError('', 'weights', `${p.weights.length} weights for ${p.runs.length} runs`);
  if (p.method === 'soup-greedy' && !p.data) throw new InputError('', 'data', 'soup-greedy needs --data (it orders and keeps models by their validation score)');
  checkMergeOptions(p);
  await checkMergeOutput(p); // before the compute: a refused folder should not cost the merge
  // One head for all: runs trained with other head sizes or losses (the spec's numLabels, problemType) do not merge.
  const heads = await Promise.all(p.runs.map((r) => baseLoadOptions(r)));
  const differs = heads.findIndex((h) => h.numLabels !== heads[0]!.numLabels || h.problemType !== heads[0]!.problemType);
  if (differs > 0) throw new InputError('', 'runs', `${p.runs[differs]} has another head (numLabels ${heads[differs]!.numLabels ?? 'as config.json'}, problemType ${heads[differs]!.problemType ?? 'as config.json'}) than ${p.runs[0]} (numLabels ${heads[0]!.numLabels ?? 'as config.json'}, problemType ${heads[0]!.problemType ?? 'as config.json'}): runs merge only with one head`);
  const model = await Model.load(modelFolder(p.base), heads[0]!);
  try {
    const tv = await taskVectors(model, p.runs, ctx);
    const batchSize = 16;
    let data: AnalysisData | undefined;
    let rows: AnalysisData['data']['eval'] = [];
    if (p.data) {
      // Read as the first run reads its data (fields, length, class numbering) when it is a run folder.
      data = await loadDataAsRun(model, p.runs[0], p.data, p.eval ? { eval: p.eval } : { evalSplit: 0.2 }, p.seed ?? 0);
      rows = (data.data.eval.length ? data.data.eval : data.data.train).slice(0, 256);
    }
    const all = tv.runs.map((_, i) => i);
    const report: MergeReport = {
      version: 1,
      method: p.method,
      base: modelFolder(p.base),
      runs: tv.runs,
      options: {},
      out: resolve(p.out),
      params: model.parameterCount(),
      changed: 0,
      perTensor: [],
    };
    const opt = report.options;
    if (p.lambda !== undefined) opt.lambda = p.lambda;
    if (p.weights) opt.weights = p.weights.join(',');
    if (p.method === 'breadcrumbs') Object.assign(opt, { top: p.top ?? 0.01, bottom: p.bottom ?? 0.85 });
    if (p.method === 'compeft') Object.assign(opt, { density: p.density ?? 0.1, alpha: p.alpha ?? 1 });
    if (p.method === 'ties') opt.density = p.density ?? 0.2;
    if (p.method === 'dare' || p.method === 'dare-ties') Object.assign(opt, { density: p.density ?? 0.5, seed: p.seed ?? 0 });

    let which = all;
    if (p.method === 'soup-greedy') {
      let scored = 0;
      const soup = await greedySoup(
        all.length,
        async (t) => {
          throwIfCancelled(ctx.signal);
          const single = new Map(tv.names.map((n) => [n, tauOf(tv, t, n)]));
          const s = scoreOf(await evalWith(model, tv, single, data!, rows, batchSize, ctx.signal));
          ctx.progress({ done: ++scored, total: 2 * all.length, message: `scoring ${tv.runs[t]}` });
          return s;
        },
        async (ingredients) => {
          throwIfCancelled(ctx.signal);
          const s = scoreOf(await evalWith(model, tv, mergeTaus(tv, 'soup-uniform', ingredients, p), data!, rows, batchSize, ctx.signal));
          ctx.progress({ done: ++scored, total: 2 * all.length, message: `soup of ${ingredients.length}` });
          return s;
        },
      );
      which = soup.included;
      const { order, scores, soupScores } = soup;
      report.soup = { order: order.map((t) => tv.runs[t]!), scores: order.map((t) => scores[t]!), included: which.map((t) => tv.runs[t]!), soupScores };
    }
    throwIfCancelled(ctx.signal);
    const merged = mergeTaus(tv, p.method, which, p);
    if (p.method === 'compeft') {
      report.compeft = [];
      for (const t of all) {
        let kept = 0;
        let numel = 0;
        let bytes = 0;
        const compressed = new Map<string, Vec>();
        for (const n of tv.names) {
          const tau = tauOf(tv, t, n);
          const c = compeft(tau, p.density ?? 0.1, p.alpha ?? 1);
          kept += c.kept;
          numel += tau.length;
          bytes += compeftBytes(tau.length, c.kept);
          compressed.set(n, c.values);
        }
        const entry: NonNullable<MergeReport['compeft']>[number] = { run: tv.runs[t]!, kept, numel, denseBytes: 4 * numel, compressedBytes: bytes, ratio: bytes > 0 ? (4 * numel) / bytes : 0 };
        if (data) {
          entry.before = await evalWith(model, tv, new Map(tv.names.map((n) => [n, tauOf(tv, t, n)])), data, rows, batchSize, ctx.signal);
          entry.after = await evalWith(model, tv, compressed, data, rows, batchSize, ctx.signal);
        }
        report.compeft.push(entry);
      }
    }
    // The merged model folder.
    throwIfCancelled(ctx.signal);
    const out = resolve(p.out);
    await fsp.mkdir(out, { recursive: true });
    // Each tensor in the base checkpoint's dtype (bf16 stays bf16), as merge_and_unload + save_pretrained keep it.
    const stored = await storedDtypes(report.base);
    const tensors = new Map<string, HostTensor>();
    for (const [n, b] of tv.base) {
      const tau = merged.get(n);
      const data = tau ? b.map((v, i) => v + tau[i]!) : b;
      tensors.set(n, inDtype(data, tv.shapes.get(n)!, stored(n)));
      if (tau) {
        const c = nonzero(tau);
        report.changed += c;
        report.perTensor.push({ name: n, changed: c, numel: b.length });
      }
    }
    await writeSafetensors(join(out, 'model.safetensors'), tensors, { format: 'pt', peft_lab: `merge:${p.method}` });
    for (const f of MODEL_FILES_COPIED) if (existsSync(join(report.base, f))) copyFileSync(join(report.base, f), join(out, f));
    await resizeHeadConfig(join(out, 'config.json'), model);
    if (data) {
      const ev: NonNullable<MergeReport['eval']> = { merged: await evalWith(model, tv, merged, data, rows, batchSize, ctx.signal) };
      ev.base = await evalWith(model, tv, undefined, data, rows, batchSize, ctx.signal);
      ev.runs = [];
      for (const t of all) ev.runs.push(await evalWith(model, tv, new Map(tv.names.map((n) => [n, tauOf(tv, t, n)])), data, rows, batchSize, ctx.signal));
      if (data.data.metricName) ev.metricName = data.data.metricName;
      report.eval = ev;
    }
    throwIfCancelled(ctx.signal);
    await fsp.writeFile(join(out, MERGE_JSON), `${JSON.stringify(report, null, 1)}\n`, 'utf8');
    ctx.progress({ done: 1, total: 1, message: `merged ${tv.runs.length} runs (${p.method})` });
    return { kind: 'merge', out, report };
  } finally {
    model.dispose();
  }
}

// ---- command line ------------------------------------------------------------------------------

export const MERGE_USAGE = `merge --base DIR --runs A,B,… --method ${MERGE_METHODS.join('|')} [--weights 1,1,…] [--lambda 1] [--density F] [--top 0.01 --bottom 0.85] [--alpha 1] [--seed N] [--data FILE [--eval FILE]] --out DIR`;

export async function mergeCommand(v: Record<string, string | boolean | string[] | undefined>): Promise<void> {
  const method = str(v, 'method')!;
  if (!(MERGE_METHODS as readonly string[]).includes(method)) throw new AnalysisUsageError(`--method must be one of ${MERGE_METHODS.join(', ')}`);
  const runs = list(v, 'runs');
  if (runs.length === 0) throw new AnalysisUsageError('--runs is required');
  const p: MergeJobParams = { kind: 'merge', base: str(v, 'base')!, runs, method: method as MergeMethod, out: str(v, 'out')! };
  const weights = list(v, 'weights').map(Number);
  if (weights.length) {
    if (weights.some((w) => !Number.isFinite(w))) throw new AnalysisUsageError('--weights must be numbers');
    p.weights = weights;
  }
  for (const [key, field] of [['lambda', 'lambda'], ['density', 'density'], ['top', 'top'], ['bottom', 'bottom'], ['alpha', 'alpha']] as const) {
    const x = num(v, key);
    if (x !== undefined) p[field] = x;
  }
  const drop = num(v, 'drop');
  if (drop !== undefined) p.density = 1 - drop;
  const seed = int(v, 'seed', 0);
  if (seed !== undefined) p.seed = seed;
  const data = str(v, 'data', false);
  const ev = str(v, 'eval', false);
  if (data) p.data = data;
  if (ev) p.eval = ev;
  const r = await runCli(v.verbose === true, (ctx) => runMerge(p, ctx));
  const rep = r.report;
  const bits = [`${rep.changed} of ${rep.params} parameters differ from the base`];
  if (rep.compeft) for (const c of rep.compeft) bits.push(`ComPEFT ${c.run}: ${c.kept}/${c.numel} kept, ${c.ratio.toFixed(1)}× smaller`);
  if (rep.soup) bits.push(`greedy soup of ${rep.soup.included.length}/${rep.runs.length}`);
  if (rep.eval) bits.push(`merged: loss ${rep.eval.merged.loss.toFixed(4)}${rep.eval.merged.metric !== undefined ? `, ${rep.eval.metricName ?? 'metric'} ${formatMetricValue(rep.eval.metricName, rep.eval.merged.metric)}` : ''}`);
  process.stderr.write(`${bits.join('; ')}\n`);
  process.stdout.write(`wrote ${r.out}\n`);
}

/**
 * Greedy soup (Wortsman et al. 2022): ingredients sorted by their own validation score, best first;
 * each is added when the soup with it scores at least as well as the soup without it, else skipped
 * (and the next one tried). `score(i)`: one ingredient alone; `soupScore(set)`: a uniform soup.
 */
export async function greedySoup(n: number, score: (i: number) => Promise<number>, soupScore: (ingredients: number[]) => Promise<number>): Promise<{ order: number[]; scores: number[]; included: number[]; soupScores: number[] }> {
  const scores: number[] = [];
  for (let i = 0; i < n; i++) scores.push(await score(i));
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  let included = [order[0]!];
  let best = scores[order[0]!]!;
  const soupScores = [best];
  for (const t of order.slice(1)) {
    const s = await soupScore([...included, t]);
    soupScores.push(s);
    if (s >= best) {
      included = [...included, t];
      best = s;
    }
  }
  return { order, scores, included, soupScores };
}
