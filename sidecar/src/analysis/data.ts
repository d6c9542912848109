/**
 * Data for the analysis commands: a JSONL/CSV file given on the command line (the spec schema's
 * default field names: text, prompt + completion, label, or read as a run reads its data), or a
 * run's own data spec; batches as the training loop makes them; and the count of loss-bearing
 * tokens of an example.
 */
import { extname, join } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { disposeTrainBatch, makeBatch, type BatchOptions, type TrainBatch } from '../data/batch';
import { loadDataFiles, modelDataInfo, type Example, type LoadedData } from '../data/dataset';
import { loadTokenizer } from '../data/tokenizer';
import { InputError } from '../errors';
import type { Model } from '../models/model';
import type { DataFormat, DataSpec } from '../spec/types';
import { deriveSeed, Rng } from '../train/rng';
import { readRunConfig, SPEC_FILE } from '../train/run-folder';
import { isEncoder } from '../models/config';

export const DEFAULT_FIELDS = { textField: 'text', promptField: 'prompt', completionField: 'completion', messagesField: 'messages', labelField: 'label' } as const;

export function inferDataFormat(path: string): DataFormat {
  try {
    if (statSync(path).isDirectory()) return 'images';
  } catch {
    throw new InputError(path, '', 'no such file or folder');
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.jsonl' || ext === '.json' || ext === '.ndjson') return 'jsonl';
  if (ext === '.parquet') return 'parquet';
  throw new InputError(path, '', 'cannot tell the data format from the name (expected .jsonl, .csv, .parquet or an image folder)');
}

/** A data spec for a file named on the command line. */
export function dataSpecFor(train: string, opts: { eval?: string; evalSplit?: number } = {}): DataSpec & { format: DataFormat } {
  return {
    format: inferDataFormat(train),
    train,
    ...(opts.eval ? { eval: opts.eval } : {}),
    ...(opts.evalSplit !== undefined && !opts.eval ? { evalSplit: opts.evalSplit } : {}),
    ...DEFAULT_FIELDS,
  };
}

export interface AnalysisData {
  data: LoadedData;
  batchOpts: BatchOptions;
}

/** Loads and tokenizes rows for `model` exactly as the training loop does. */
export async function loadAnalysisData(model: Model, spec: DataSpec & { format: DataFormat }, seed = 0): Promise<AnalysisData> {
  const info = modelDataInfo(model);
  const tok = info.task === 'image-classification' ? undefined : loadTokenizer(model.dir);
  const data = await loadDataFiles({ data: spec, seed, specFile: spec.train }, info, tok);
  const batchOpts: BatchOptions = {
    padId: tok && tok.padId < info.vocabSize ? tok.padId : 0,
    attentionMask: isEncoder(model.config),
    regression: info.problemType === 'regression',
    multiLabel: info.problemType === 'multi_label_classification',
    ...(model.config.modelType === 'vit' ? { imageSize: model.config.imageSize, numChannels: model.config.numChannels, patchSize: model.config.patchSize } : {}),
  };
  return { data, batchOpts };
}

/**
 * Rows of a data file (with an eval file, or a seeded split, when asked) read as a run reads its
 * own data: its fields and maximum length, and its classes numbered as its training data numbered
 * them. (A file's own load numbers class names by those it sees, sorted: a file with a subset of
 * the classes would number them differently.) Not a run folder: the default fields.
 */
export async function loadDataAsRun(model: Model, runDir: string | undefined, train: string, opts: { eval?: string; evalSplit?: number } = {}, seed = 0): Promise<AnalysisData> {
  if (!runDir || !existsSync(join(runDir, SPEC_FILE))) return await loadAnalysisData(model, dataSpecFor(train, opts), seed);
  const cfg = await readRunConfig(runDir);
  const { eval: _eval, evalSplit: _split, heldout: _heldout, ...settings } = cfg.data;
  const split = opts.eval ? { eval: opts.eval } : opts.evalSplit !== undefined ? { evalSplit: opts.evalSplit } : {};
  const d = await loadAnalysisData(model, { ...settings, train, format: inferDataFormat(train), ...split }, seed);
  const names = d.data.labelNames;
  if (model.arch.task === 'causal-lm' || !names) return d; // integer class ids mean the same class in both
  const trained = (await loadAnalysisData(model, cfg.data, seed)).data.labelNames;
  const where = settings.format === 'images' ? 'class folder' : `field "${settings.labelField}"`;
  if (!trained) throw new InputError(train, where, 'the run was trained on integer class ids, so names cannot be matched to its classes: give class ids');
  const id = new Map(trained.map((n, i) => [n, i]));
  const relabel = (e: Example): Example => {
    if (e.kind === 'lm') return e;
    if (e.kind === 'cls' && e.targets) {
      // Multi-label: each class this file names, at the run's index for that name.
      const targets = new Float32Array(e.targets.length);
      e.targets.forEach((v, k) => {
        if (!v) return;
        const to = id.get(names[k]!);
        if (to === undefined) throw new InputError(e.source, where, `label "${names[k]}" is not one the run was trained on (${trained.join(', ')})`);
        targets[to] = 1;
      });
      return { ...e, targets };
    }
    const to = id.get(names[e.label]!);
    if (to === undefined) throw new InputError(e.source, where, `label "${names[e.label]}" is not one the run was trained on (${trained.join(', ')})`);
    return { ...e, label: to };
  };
  return { ...d, data: { ...d.data, train: d.data.train.map(relabel), eval: d.data.eval.map(relabel), labelNames: trained } };
}

/** Tokens the loss averages over: label tokens after the shift (LM), or 1 (a classified row). */
export function lossTokens(e: Example): number {
  if (e.kind !== 'lm') return 1;
  let n = 0;
  for (let t = 1; t < e.labels.length; t++) if (e.labels[t] !== -100) n++;
  return n;
}

/** A seeded order over the examples, cycling when more rows are asked for than there are. */
export function batchIndices(n: number, batches: number, batchSize: number, seed: number, purpose = 'analysis'): number[][] {
  const perm = new Rng(deriveSeed(seed, purpose)).permutation(n);
  const out: number[][] = [];
  const size = Math.min(batchSize, n);
  for (let b = 0; b < batches; b++) out.push(Array.from({ length: size }, (_, j) => perm[(b * size + j) % n]!));
  return out;
}

/** Consecutive batches of the examples (the last may be smaller), at most `limit`. */
export function chunks<T>(xs: readonly T[], size: number, limit = Infinity): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length && out.length < limit; i += size) out.push(xs.slice(i, i + size));
  return out;
}

/** Runs `fn` on a batch made from `examples` and disposes the batch. */
export async function withBatch<R>(examples: readonly Example[], opts: BatchOptions, fn: (b: TrainBatch) => Promise<R> | R): Promise<R> {
  const b = makeBatch(examples, opts);
  try {
    return await fn(b);
  } finally {
    disposeTrainBatch(b);
  }
}
