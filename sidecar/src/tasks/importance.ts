/**
 * `peft-lab importance` and the 'importance' job: per-parameter Fisher / gradient-norm / Taylor
 * scores (and mean input activations of linear modules) over N batches, written as
 * `scores.safetensors` + `importance.json` (see ../analysis/importance.ts for the definitions).
 */
import { baseLoadOptions, headOptions } from './base-options';
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { IMPORTANCE_METHODS, type ImportanceJobParams, type ImportanceMethod, type ImportanceReport, type JobResult } from '../../../src/protocol';
import type { AdapterInstance } from '../adapters';
import { currentBackend } from '../backend';
import { makeBatch, disposeTrainBatch } from '../data/batch';
import { InputError } from '../errors';
import { writeSafetensors } from '../io/safetensors';
import { disposeBatch, readInputBatch, type InputBatch } from '../io/tensors';
import { inputLimits } from '../models/input-limits';
import { throwIfCancelled, yieldToEventLoop, type JobContext } from '../jobs/context';
import type { ModelInputs } from '../models/architecture';
import { Model } from '../models/model';
import { batchIndices, dataSpecFor, loadAnalysisData, lossTokens } from '../analysis/data';
import { loadAnyAdapter } from '../analysis/finetuned';
import { moduleTypeMap, moduleTypes, typeOfPath } from '../analysis/grid';
import { ImportanceAccumulator, METHOD_ORDER, summarize, type ScoreTarget } from '../analysis/importance';
import { cliTrainContext } from './train';
import { modelFolder } from '../spec/hub-cache';
import { parseSpecText } from '../spec/load';
import type { DataFormat, DataSpec, RunSpec } from '../spec/types';

export const IMPORTANCE_JSON = 'importance.json';
export const SCORES_FILE = 'scores.safetensors';

export function parseMethods(s: string | readonly string[] | undefined): ImportanceMethod[] {
  // adalora on request: its two moving averages cost two more tensors the size of the model.
  if (s === undefined) return METHOD_ORDER.filter((m) => m !== 'adalora');
  const list = (typeof s === 'string' ? s.split(',') : [...s]).map((x) => x.trim()).filter(Boolean);
  const bad = list.filter((m) => !(IMPORTANCE_METHODS as readonly string[]).includes(m));
  if (bad.length || list.length === 0) throw new RangeError(`--method must be a comma-separated list of ${IMPORTANCE_METHODS.join(', ')}; got '${[s].flat().join(',')}'`);
  return METHOD_ORDER.filter((m) => list.includes(m));
}

/** One batch as the model takes it; `release` disposes what this batch alone owns. */
interface Batch {
  inputs: ModelInputs;
  labels: tf.Tensor;
  rows: number;
  tokens: number;
  release(): void;
}

interface BatchSource {
  count: number;
  get(i: number): Batch;
  dispose(): void;
}

/** Rows of one safetensors batch, split into chunks of `batchSize`, cycled over `batches`. */
async function inputsSource(model: Model, file: string, batches: number | undefined, batchSize: number | undefined): Promise<BatchSource> {
  const b: InputBatch = await readInputBatch(file, model.arch.inputKind, inputLimits(model.config));
  try {
    if (!b.labels) throw new InputError(file, 'labels', 'tensor missing: importance needs labels');
  } catch (e) {
    disposeBatch(b);
    throw e;
  }
  const labels = b.labels!;
  const rows = (b.inputs.inputIds ?? b.inputs.pixelValues)!.shape[0];
  const size = Math.min(batchSize ?? rows, rows);
  const nChunks = Math.ceil(rows / size);
  const labelData = await labels.data();
  const perRow = labels.rank === 2 ? labels.shape[1]! : 1;
  const tokensOf = (start: number, n: number) => {
    if (labels.rank !== 2) return n;
    let c = 0;
    for (let r = start; r < start + n; r++) for (let t = 1; t < perRow; t++) if (labelData[r * perRow + t] !== -100) c++;
    return c;
  };
  return {
    count: batches ?? nChunks,
    get(i) {
      const start = (i % nChunks) * size;
      const n = Math.min(size, rows - start);
      if (nChunks === 1) return { inputs: b.inputs, labels, rows: n, tokens: tokensOf(0, n), release: () => undefined };
      const cut = <T extends tf.Tensor>(t: T | undefined): T | undefined => (t ? (tf.slice(t, start, n) as T) : undefined);
      const inputs: ModelInputs = {};
      const ids = cut(b.inputs.inputIds);
      const am = cut(b.inputs.attentionMask);
      const tt = cut(b.inputs.tokenTypeIds);
      const px = cut(b.inputs.pixelValues);
      if (ids) inputs.inputIds = ids;
      if (am) inputs.attentionMask = am;
      if (tt) inputs.tokenTypeIds = tt;
      if (px) inputs.pixelValues = px;
      const lab = tf.slice(labels, start, n);
      return { inputs, labels: lab, rows: n, tokens: tokensOf(start, n), release: () => tf.dispose([ids, am, tt, px, lab].filter((t): t is tf.Tensor => t !== undefined)) };
    },
    dispose: () => disposeBatch(b),
  };
}

/**
 * How the rows of `file` are read: as the spec's training reads them (its field names, prompt
 * template, max length) when the scores are for a spec, else with the default fields.
 */
export function dataSpecForScores(file: string, specFile: string | undefined): DataSpec & { format: DataFormat } {
  const base = dataSpecFor(file);
  const spec = specFile === undefined ? undefined : readScoresSpec(specFile);
  if (!spec) return base; // no spec, or one the run would refuse: the scores use the defaults
  const { textField, textPairField, promptField, completionField, messagesField, labelField, promptTemplate, maxLength, format } = spec.data;
  return { ...base, textField, promptField, completionField, labelField, ...(textPairField ? { textPairField } : {}), ...(messagesField ? { messagesField } : {}), ...(promptTemplate ? { promptTemplate } : {}), ...(maxLength ? { maxLength } : {}), ...(format ? { format } : {}) };
}

/** The spec a scoring is for, parsed; undefined where it has problems (the run would refuse it). */
function readScoresSpec(specFile: string): RunSpec | undefined {
  let text: string;
  try {
    text = readFileSync(specFile, 'utf8');
  } catch (e) {
    throw new InputError(specFile, '', `cannot read the spec (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const { spec, issues } = parseSpecText(text, specFile);
  return spec && !issues.length ? spec : undefined;
}

async function dataSource(model: Model, file: string, specFile: string | undefined, batches: number, batchSize: number, seed: number): Promise<BatchSource> {
  const { data, batchOpts } = await loadAnalysisData(model, dataSpecForScores(file, specFile), seed);
  const examples = [...data.train, ...data.eval];
  const order = batchIndices(examples.length, batches, batchSize, seed, 'importance');
  return {
    count: batches,
    get(i) {
      const ex = order[i]!.map((j) => examples[j]!);
      const tb = makeBatch(ex, batchOpts);
      return { inputs: tb.inputs, labels: tb.labels, rows: tb.size, tokens: ex.reduce((n, e) => n + lossTokens(e), 0), release: () => disposeTrainBatch(tb) };
    },
    dispose: () => undefined,
  };
}

export async function runImportance(p: ImportanceJobParams, ctx: JobContext): Promise<JobResult & { kind: 'importance' }> {
  if ((p.data === undefined) === (p.inputs === undefined)) throw new InputError('', 'importance', 'give exactly one of --data and --inputs');
  const methods = parseMethods(p.methods);
  const t0 = performance.now();
  // The head as the run has it: the adapter's, else the spec's numLabels / problemType (a scoring before training).
  const spec = !p.adapter && p.spec !== undefined && existsSync(p.spec) ? readScoresSpec(p.spec) : undefined;
  const model = await Model.load(modelFolder(p.model), spec ? headOptions(spec) : await baseLoadOptions(p.adapter));
  let adapter: AdapterInstance | undefined;
  let source: BatchSource | undefined;
  let acc: ImportanceAccumulator | undefined;
  try {
    if (p.adapter) adapter = await loadAnyAdapter(model, p.adapter);
    source = p.inputs
      ? await inputsSource(model, p.inputs, p.batches, p.batchSize)
      : await dataSource(model, p.data!, p.spec, p.batches ?? 16, p.batchSize ?? 32, p.seed ?? 0);
    const info = model.paramInfo();
    const typeMap = moduleTypeMap(info);
    const targets: ScoreTarget[] = info.filter((x) => model.params.has(x.name)).map((x) => ({ name: x.name, source: 'base', layer: x.layer, type: x.type }));
    const extra = adapter?.overrides();
    if (adapter) {
      const have = new Set(targets.map((t) => t.name));
      // An empty tensor (an AdaLoRA module with every rank pruned) takes no part in the loss: nothing to score.
      for (const [n, t] of adapter.trainable) if (!have.has(n) && t.size > 0) targets.push({ name: n, source: 'adapter', layer: adapter.layerOf(n), type: typeOfPath(typeMap, n) });
    }
    const names = targets.map((t) => t.name);
    const value = (n: string): tf.Tensor => extra?.get(n) ?? model.params.get(n)!;
    acc = new ImportanceAccumulator(names, new Set(methods), value);
    const linear = model.arch.linearModules(model.config).map((m) => ({ module: m.module, layer: m.layer, type: typeMap.get(m.module)?.type ?? m.name, inFeatures: m.inFeatures }));
    const hooks = p.activations === false ? adapter?.hooks : acc.activationHooks(linear.map((m) => m.module), adapter?.hooks);
    let rows = 0;
    let tokens = 0;
    const total = source.count;
    for (let i = 0; i < total; i++) {
      throwIfCancelled(ctx.signal);
      const b = source.get(i);
      try {
        const { loss, grads } = model.lossAndGrads(names, b.inputs, b.labels, { ...(hooks ? { hooks } : {}), ...(extra ? { extra } : {}) });
        acc.add(loss, grads);
      } finally {
        b.release();
      }
      rows += b.rows;
      tokens += b.tokens;
      reportProgress(ctx, t0, i + 1, total, `batch ${i + 1}/${total}`);
      await yieldToEventLoop();
    }
    throwIfCancelled(ctx.signal);
    const meanLoss = await acc.meanLoss();
    const outs = await summarize(acc, targets, value, { numLayers: model.config.numLayers, columns: moduleTypes(info) }, linear);
    const out = resolve(p.out);
    await fsp.mkdir(out, { recursive: true });
    await writeSafetensors(join(out, SCORES_FILE), outs.scores, { format: 'pt', peft_lab: 'importance', methods: methods.join(',') });
    const report: ImportanceReport = {
      version: 1,
      model: modelFolder(p.model),
      ...(p.spec ? { spec: resolve(p.spec) } : {}),
      ...(p.adapter ? { adapter: resolve(p.adapter) } : {}),
      ...(p.data ? { data: resolve(p.data) } : {}),
      ...(p.inputs ? { inputs: resolve(p.inputs) } : {}),
      methods,
      batches: acc.batches,
      examples: rows,
      tokens,
      meanLoss,
      totalParams: model.parameterCount(),
      scoresFile: SCORES_FILE,
      tensors: outs.tensors,
      grids: outs.grids,
      ...(outs.gradNormGrid ? { gradNormGrid: outs.gradNormGrid } : {}),
      ...(outs.adapterGrids ? { adapterGrids: outs.adapterGrids } : {}),
      numel: outs.numel,
      ...(outs.activations ? { activations: outs.activations } : {}),
      seconds: Math.round(performance.now() - t0) / 1000,
      ...(currentBackend() ? { backend: currentBackend()!.name } : {}),
    };
    await fsp.writeFile(join(out, IMPORTANCE_JSON), `${JSON.stringify(report)}\n`, 'utf8');
    return { kind: 'importance', out, report };
  } finally {
    acc?.dispose();
    source?.dispose();
    adapter?.dispose();
    model.dispose();
  }
}

/** Progress with an ETA from the average time per unit so far. */
export function reportProgress(ctx: JobContext, t0: number, done: number, total: number, message: string, metrics: Record<string, number> = {}): void {
  const per = (performance.now() - t0) / 1000 / Math.max(1, done);
  ctx.progress({ done, total, message, metrics: { ...metrics, eta_s: Math.round(per * Math.max(0, total - done)) } });
}

// ---- command line ------------------------------------------------------------------------------

type Values = Record<string, string | boolean | string[] | undefined>;

/** A usage problem: the CLI prints it with the command's usage and exits 2. */
export class AnalysisUsageError extends Error {
  readonly code = 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE';
}

export function str(v: Values, key: string, required = true): string | undefined {
  const x = v[key];
  if (Array.isArray(x)) return x[x.length - 1];
  if (typeof x === 'string' && x !== '') return x;
  if (required) throw new AnalysisUsageError(`--${key} is required`);
  return undefined;
}

export function list(v: Values, key: string): string[] {
  const x = v[key];
  const xs = Array.isArray(x) ? x : typeof x === 'string' ? [x] : [];
  return xs.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
}

export function int(v: Values, key: string, min = 1): number | undefined {
  const s = str(v, key, false);
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new AnalysisUsageError(`--${key} must be an integer ≥ ${min}, got '${s}'`);
  return n;
}

export function num(v: Values, key: string): number | undefined {
  const s = str(v, key, false);
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!Number.isFinite(n)) throw new AnalysisUsageError(`--${key} must be a number, got '${s}'`);
  return n;
}

/** Runs a job function with the command-line context (Ctrl-C cancels, progress on stderr). */
export async function runCli<R>(verbose: boolean, fn: (ctx: JobContext) => Promise<R>): Promise<R> {
  const { ctx, close } = cliTrainContext(verbose, '', 'cancelling...');
  try {
    return await fn(ctx);
  } finally {
    close();
  }
}

export const IMPORTANCE_USAGE = 'importance --model DIR [--adapter DIR] (--data FILE [--spec SPEC.peft.json] | --inputs FILE) [--method fisher,grad-norm,taylor[,adalora]] [--batches N] [--batch-size B] [--no-activations] [--seed N] --out DIR';

export async function importanceCommand(v: Values): Promise<void> {
  let methods: ImportanceMethod[];
  try {
    methods = parseMethods(str(v, 'method', false));
  } catch (e) {
    throw new AnalysisUsageError((e as Error).message);
  }
  const data = str(v, 'data', false);
  const inputs = str(v, 'inputs', false);
  if ((data === undefined) === (inputs === undefined)) throw new AnalysisUsageError('give exactly one of --data FILE and --inputs FILE');
  const p: ImportanceJobParams = { kind: 'importance', model: str(v, 'model')!, out: str(v, 'out')!, methods };
  const adapter = str(v, 'adapter', false);
  if (adapter) p.adapter = adapter;
  if (data) p.data = data;
  if (inputs) p.inputs = inputs;
  // The spec the scores are for: its data settings (fields, prompt template) read the rows.
  const spec = str(v, 'spec', false);
  if (spec) p.spec = spec;
  const batches = int(v, 'batches');
  const bs = int(v, 'batch-size');
  const seed = int(v, 'seed', 0);
  if (batches !== undefined) p.batches = batches;
  if (bs !== undefined) p.batchSize = bs;
  if (seed !== undefined) p.seed = seed;
  if (v['no-activations'] === true) p.activations = false;
  const r = await runCli(v.verbose === true, (ctx) => runImportance(p, ctx));
  const rep = r.report;
  process.stderr.write(`${rep.batches} batches, ${rep.examples} rows, mean loss ${rep.meanLoss.toFixed(4)}, ${rep.tensors.length} tensors, ${rep.seconds}s\n`);
  process.stdout.write(`wrote ${join(r.out, SCORES_FILE)} and ${join(r.out, IMPORTANCE_JSON)}\n`);
}
