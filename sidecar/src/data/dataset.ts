/**
 * Turning a run's data files into examples for the model's task:
 *  - causal LM, `text` rows: labels = ids (the loss shifts them);
 *  - causal LM, `prompt` + `completion` rows: labels −100 on the prompt (loss on the completion only),
 *    the completion ends with EOS when the model's vocabulary has it;
 *  - causal LM, chat rows (`messages`: {role, content} turns): rendered with the model's chat
 *    template (./chat.ts), labels −100 outside the assistant turns;
 *  - sequence classification, `text` + `label`: an integer id, or a name mapped through the model's
 *    label2id (or, when that is the default LABEL_k table, the sorted set of names in the data);
 *  - image classification, an image folder: the class folder names map the same way.
 * Rows longer than the max length are truncated (counted, for a warning). Any bad row is an
 * InputError naming the file, the line and the field.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DataFormat, DataSpec } from '../spec/types';
import { InputError } from '../errors';
import { readInputText } from '../io/read-input';
import type { Model } from '../models/model';
import { isEncoder, positionLimit, type ProblemType } from '../models/config';
import type { MetricName } from '../../../src/protocol';
import { deriveSeed, Rng } from '../train/rng';
import { listImageFolder } from './images';
import { readJsonl, readRows, readRowsAsync, type Row } from './rows';
import { chatSegments, parseMessages, type ChatMessage, type ChatSegment } from './chat';
import { parsePromptTemplate, renderPromptTemplate, type TemplatePart } from './prompt-template';
import { tokenizerMismatch, type ClassifierEncoding, type DataTokenizer } from './tokenizer';

export type Task = 'causal-lm' | 'sequence-classification' | 'image-classification';

export type Example =
  | { kind: 'lm'; ids: Int32Array; labels: Int32Array; /** prompt + completion row */ completion: boolean; source: string }
  | {
      kind: 'cls';
      ids: Int32Array;
      /** Token types (a text pair's segments), where not all 0. */
      typeIds?: Int32Array;
      /** A class id, or a regression model's target value (STS-B's similarity score); −1 for multi-label rows. */
      label: number;
      /** Multi-label rows: 1 for each class the row has, 0 for the others. */
      targets?: Float32Array;
      source: string;
    }
  | { kind: 'image'; file: string; label: number; source: string };

/** What the data pipeline needs to know about the model. */
export interface ModelDataInfo {
  task: Task;
  modelType: string;
  vocabSize: number;
  maxPositions?: number;
  numLabels?: number;
  /** Token types the model embeds (BERT's type_vocab_size). */
  typeVocabSize?: number;
  /** Classifiers: transformers' problem_type (regression: one value per row, the MSE loss). */
  problemType?: ProblemType;
  imageSize?: number;
  numChannels?: number;
  /** From config.json; undefined or the default LABEL_k table means "use the sorted names". */
  label2id?: Record<string, number>;
}

export function modelDataInfo(model: Model): ModelDataInfo {
  const c = model.config;
  const info: ModelDataInfo = { task: model.arch.task, modelType: c.modelType, vocabSize: c.vocabSize };
  const limit = positionLimit(c);
  if (limit !== undefined) info.maxPositions = limit;
  if ('numLabels' in c) info.numLabels = c.numLabels;
  if ('typeVocabSize' in c) info.typeVocabSize = c.typeVocabSize;
  if ('problemType' in c) info.problemType = c.problemType;
  // RoBERTa's positions start at pad_token_id + 1: fewer tokens fit.
  if (isEncoder(c) && 'positionsAfterPadding' in c && c.positionsAfterPadding) info.maxPositions = c.maxPositions - c.padTokenId! - 1;
  if (c.modelType === 'vit') {
    info.imageSize = c.imageSize;
    info.numChannels = c.numChannels;
  }
  if (model.dir) {
    try {
      const raw = JSON.parse(readFileSync(join(model.dir, 'config.json'), 'utf8')) as { label2id?: unknown };
      // A label table of another size than the head (the spec's numLabels resized it) names nothing.
      if (raw.label2id && typeof raw.label2id === 'object' && Object.keys(raw.label2id).length === info.numLabels) info.label2id = raw.label2id as Record<string, number>;
    } catch {
      /* Model.load has read it already; a problem here only loses label names */
    }
  }
  return info;
}

export interface LoadedData {
  task: Task;
  train: Example[];
  eval: Example[];
  /** Name of the task metric reported as eval_accuracy, if the task has one (pearson: the correlation of a regression's predictions with its targets). */
  metricName?: MetricName;
  maxLength: number;
  /** Class names by id (classification), when the labels were given by name (not integer ids only). */
  labelNames?: string[];
  /** Rows cut to the max length; rows dropped (no completion token left, or under 2 tokens). */
  truncated: number;
  dropped: number;
  warnings: string[];
}

const show = (v: unknown) => (JSON.stringify(v) ?? String(v)).slice(0, 60);

function isDefaultLabelTable(l2i: Record<string, number> | undefined): boolean {
  return !l2i || Object.keys(l2i).every((k) => /^LABEL_\d+$/.test(k));
}

class Builder {
  truncated = 0;
  dropped = 0;
  readonly warnings: string[] = [];
  private eosWarned = false;
  private readonly template: TemplatePart[] | undefined;

  constructor(
    private readonly spec: DataSpec,
    private readonly info: ModelDataInfo,
    private readonly tok: DataTokenizer | undefined,
    readonly maxLength: number,
  ) {
    if (spec.promptTemplate !== undefined) {
      const t = parsePromptTemplate(spec.promptTemplate);
      if (typeof t === 'string') throw new InputError('', 'data.promptTemplate', t);
      this.template = t;
    }
  }

  private where(r: Row, field?: string): string {
    return rowPlace(r, field);
  }

  string(r: Row, field: string): string {
    const v = r.fields[field];
    if (v === undefined) throw new InputError(r.file, this.where(r), `missing field ${show(field)} (fields: ${Object.keys(r.fields).join(', ') || 'none'})`);
    if (typeof v !== 'string') throw new InputError(r.file, this.where(r, field), `expected a string, got ${show(v)}`);
    return v;
  }

  private encode(r: Row, field: string, text: string, specials: boolean): number[] {
    let ids: number[];
    try {
      ids = this.tok!.encode(text, specials);
    } catch (e) {
      throw new InputError(r.file, this.where(r, field), (e as Error).message);
    }
    this.checkIds(r, field, ids);
    return ids;
  }

  /** Token ids outside the model's vocabulary name the tokenizer (a byte-level fallback on a small model, a mismatched tokenizer.json). */
  private checkIds(r: Row, field: string, ids: readonly number[]): void {
    const bad = ids.find((i) => i < 0 || i >= this.info.vocabSize);
    if (bad !== undefined) {
      throw new InputError(
        r.file,
        this.where(r, field),
        `token id ${bad} is outside the model's vocabulary of ${this.info.vocabSize} (the ${this.tok!.name} tokenizer has ${this.tok!.vocabSize} ids${this.tok!.name === 'byte-level' ? '; non-ASCII bytes need a model with 256+ tokens' : ''})`,
      );
    }
  }

  /** The messages of a row's field; a CSV cell holds the list as JSON text. */
  private messages(r: Row, field: string, needsAssistant: boolean): ChatMessage[] {
    const raw = r.fields[field];
    let value: unknown = raw;
    if (typeof raw === 'string') {
      try {
        value = JSON.parse(raw);
      } catch {
        throw new InputError(r.file, this.where(r, field), `expected a list of messages (JSON, in a CSV cell), got ${show(raw)}`);
      }
    }
    const messages = parseMessages(value, needsAssistant);
    if (typeof messages === 'string') throw new InputError(r.file, this.where(r, field), messages);
    return messages;
  }

  /**
   * A chat row: the rendered conversation, the loss on the assistant turns (labels −100 elsewhere).
   * A conversational prompt + completion (TRL's format: both lists of messages) trains on the
   * completion's assistant turns only; `field` is the completion's there.
   */
  private chat(r: Row, field: string, prompt: ChatMessage[] = []): Example | undefined {
    const messages = [...prompt, ...this.messages(r, field, true)];
    const template = this.tok!.chatTemplate();
    let segments: ChatSegment[];
    try {
      segments = chatSegments(template, messages, prompt.length);
    } catch (e) {
      // The row is the place to look (the message names the template's file when it is at fault).
      throw new InputError(r.file, this.where(r, field), (e as Error).message);
    }
    // The whole conversation is tokenized at once, as apply_chat_template does (a SentencePiece
    // tokenizer would prepend "▁" to each piece encoded alone). Rendered text carries the
    // template's special tokens as text: none are added again.
    const text = segments.map((seg) => seg.text).join('');
    const ids = this.encode(r, field, text, false);
    const labels = ids.map(() => -100);
    let at = 0;
    for (const seg of segments) {
      const from = at;
      at += seg.text.length;
      if (!seg.train) continue;
      // As transformers' assistant mask: every token overlapping the turn's text, a token that
      // byte-level BPE merged across a boundary ("Assistant: " + "4" → "Ġ4") included.
      const start = from === 0 ? 0 : tokensBefore(this.encode(r, field, text.slice(0, from), false), ids);
      const end = at === text.length ? ids.length : tokensThrough(this.encode(r, field, text.slice(0, at), false), ids);
      for (let i = start; i < end; i++) labels[i] = ids[i]!;
    }
    return this.masked(ids, labels, `${r.file}:${r.line}`);
  }

  /** A row whose loss counts some tokens only (labels −100 elsewhere), cut to the max length; undefined when none is left to learn. */
  private masked(ids: number[], labels: number[], source: string): Example | undefined {
    if (ids.length > this.maxLength) {
      this.truncated++;
      ids = ids.slice(0, this.maxLength);
      labels = labels.slice(0, this.maxLength);
    }
    // The loss at position t predicts token t from t-1: a label at position 0 never counts.
    if (!labels.slice(1).some((l) => l !== -100)) {
      this.dropped++;
      return undefined;
    }
    return { kind: 'lm', ids: Int32Array.from(ids), labels: Int32Array.from(labels), completion: true, source };
  }

  lm(r: Row): Example | undefined {
    const s = this.spec;
    const source = `${r.file}:${r.line}`;
    const messagesField = s.messagesField ?? 'messages';
    if (r.fields[messagesField] !== undefined) return this.chat(r, messagesField);
    if (!this.template && Array.isArray(r.fields[s.promptField])) return this.chat(r, s.completionField, this.messages(r, s.promptField, false));
    if (this.template || r.fields[s.promptField] !== undefined || r.fields[s.completionField] !== undefined) {
      const prompt = this.template ? renderPromptTemplate(this.template, (field) => this.string(r, field)) : this.string(r, s.promptField);
      const completion = this.string(r, s.completionField);
      if (completion === '') throw new InputError(r.file, this.where(r, s.completionField), 'the completion is empty');
      // Prompt and completion are tokenized together, as TRL's SFTTrainer does (a SentencePiece
      // tokenizer would give the completion alone a "▁" of its own); the loss starts at the first
      // token the prompt alone does not have (one merged across the boundary counts as completion).
      // The prompt alone first: a problem in it is reported against its own field.
      const promptIds = this.encode(r, this.template ? 'promptTemplate' : s.promptField, prompt, true);
      const ids = this.encode(r, s.completionField, prompt + completion, true);
      const start = tokensBefore(promptIds, ids);
      const eos = this.tok!.eosId;
      if (eos !== undefined && eos < this.info.vocabSize) {
        if (ids[ids.length - 1] !== eos) ids.push(eos); // a completion may end with the EOS text already
      } else if (!this.eosWarned) {
        this.eosWarned = true;
        this.warnings.push(`the tokenizer's end-of-sequence id ${eos ?? '(none)'} is not in the model's vocabulary of ${this.info.vocabSize}: completions are not terminated`);
      }
      return this.masked(ids, ids.map((id, i) => (i < start ? -100 : id)), source);
    }
    if (r.fields[s.textField] === undefined)
      throw new InputError(r.file, this.where(r), `needs ${show(s.textField)}, ${show(s.promptField)} and ${show(s.completionField)}, or ${show(messagesField)} (fields: ${Object.keys(r.fields).join(', ') || 'none'})`);
    const text = this.string(r, s.textField);
    if (text === '') throw new InputError(r.file, this.where(r, s.textField), 'the text is empty');
    let ids = this.encode(r, s.textField, text, true);
    if (ids.length > this.maxLength) {
      this.truncated++;
      ids = ids.slice(0, this.maxLength);
    }
    if (ids.length < 2) {
      this.dropped++;
      return undefined;
    }
    return { kind: 'lm', ids: Int32Array.from(ids), labels: Int32Array.from(ids), completion: false, source };
  }

  /** A classifier's input: the text (and the pair's second text), template tokens kept when cut to the max length. */
  clsIds(r: Row): { ids: Int32Array; typeIds?: Int32Array } {
    const field = this.spec.textField;
    const text = this.string(r, field);
    if (text === '') throw new InputError(r.file, this.where(r, field), 'the text is empty');
    const pairField = this.spec.textPairField;
    const pair = pairField === undefined ? undefined : this.string(r, pairField);
    if (pair === '') throw new InputError(r.file, this.where(r, pairField), 'the text is empty');
    let enc: ClassifierEncoding;
    try {
      enc = this.tok!.encodeForClassifier(text, pair, this.maxLength);
    } catch (e) {
      throw new InputError(r.file, this.where(r, field), (e as Error).message);
    }
    this.checkIds(r, field, enc.ids);
    if (enc.truncated) this.truncated++;
    // A model with one token type or none (RoBERTa, XLM-R, DistilBERT) takes none, as its tokenizer returns none.
    const types = this.info.typeVocabSize ?? 0;
    const typeIds = types > 1 ? enc.typeIds : undefined;
    const badType = typeIds?.find((t) => t >= types);
    if (badType !== undefined) throw new InputError(r.file, this.where(r, pairField ?? field), `the tokenizer gives token type ${badType}, but the model has ${types} token types (type_vocab_size)`);
    return { ids: Int32Array.from(enc.ids), ...(typeIds ? { typeIds: Int32Array.from(typeIds) } : {}) };
  }
}

/** A multi-label row's labels: a list (in CSV, as JSON text), or one label alone; an empty list is a row of no class. */
function labelList(r: Row, field: string): unknown[] {
  const v = r.fields[field];
  if (v === undefined) throw new InputError(r.file, rowPlace(r), `missing field ${show(field)} (fields: ${Object.keys(r.fields).join(', ') || 'none'})`);
  if (Array.isArray(v)) return v;
  if (typeof v === 'string' && v.trim().startsWith('[')) {
    try {
      const parsed = JSON.parse(v) as unknown;
      if (Array.isArray(parsed)) return parsed;
    } catch {
      /* not JSON: reported below */
    }
    throw new InputError(r.file, rowPlace(r, field), `expected a JSON list of labels, got ${show(v)}`);
  }
  return [v];
}

/** A regression row's target: a finite number, or a numeric string (a CSV cell). */
function regressionTarget(r: Row, field: string): number {
  const v = r.fields[field];
  if (v === undefined) throw new InputError(r.file, rowPlace(r), `missing field ${show(field)} (fields: ${Object.keys(r.fields).join(', ') || 'none'})`);
  const x = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new InputError(r.file, rowPlace(r, field), `a regression model needs a number here, got ${show(v)}`);
  return x;
}

/** Where a row is, for errors: `line 5, field "label"` (a Parquet file's: `row 5, …`). */
function rowPlace(r: Row, field?: string): string {
  return `${r.unit ?? 'line'} ${r.line}${field ? `, field ${show(field)}` : ''}`;
}

/** How many of `whole`'s tokens the text before a boundary (tokenized alone: `before`) has entirely: their common prefix. */
function tokensBefore(before: readonly number[], whole: readonly number[]): number {
  let n = 0;
  while (n < before.length && n < whole.length && before[n] === whole[n]) n++;
  return n;
}

/** How many of `whole`'s tokens hold some text up to a boundary (`upTo`, that text tokenized alone): one more where a token straddles it. */
function tokensThrough(upTo: readonly number[], whole: readonly number[]): number {
  const n = tokensBefore(upTo, whole);
  return n === upTo.length ? n : Math.min(n + 1, whole.length);
}

/** Maps raw labels (integers, names) to class ids, consistently over train and eval. */
class LabelMap {
  readonly names: string[];
  /** Whether the ids come from names (the data's strings or the model's label2id), not only from integer labels. */
  readonly named: boolean;
  private readonly byName: Map<string, number>;
  private readonly useModelTable: boolean;

  constructor(
    private readonly info: ModelDataInfo,
    /** Every string label seen in the data. */
    stringLabels: Iterable<string>,
  ) {
    const n = info.numLabels ?? 0;
    this.useModelTable = !isDefaultLabelTable(info.label2id);
    if (this.useModelTable) {
      this.byName = new Map(Object.entries(info.label2id!));
      this.names = Array.from({ length: n }, (_, i) => [...this.byName].find(([, id]) => id === i)?.[0] ?? `LABEL_${i}`);
    } else {
      const sorted = [...new Set(stringLabels)].sort();
      this.byName = new Map(sorted.map((s, i) => [s, i]));
      this.names = sorted.length ? sorted : Array.from({ length: n }, (_, i) => info.label2id ? `LABEL_${i}` : String(i));
    }
    this.named = this.useModelTable || this.byName.size > 0;
  }

  get size(): number {
    return this.byName.size;
  }

  map(raw: unknown, file: string, where: string): number {
    const n = this.info.numLabels ?? 0;
    if (typeof raw === 'number') {
      if (!Number.isInteger(raw) || raw < 0 || raw >= n)
        throw new InputError(file, where, `label ${raw} is not a class id of this model (0..${n - 1}); the spec's "numLabels" sizes the head (1 for a regression's values)`);
      return raw;
    }
    if (typeof raw === 'string') {
      const id = this.byName.get(raw);
      if (id !== undefined) {
        if (id >= n) throw new InputError(file, where, `label ${show(raw)} maps to class ${id}, but the model has ${n} labels`);
        return id;
      }
      if (/^\d+$/.test(raw)) return this.map(Number(raw), file, where);
      throw new InputError(file, where, `label ${show(raw)} is not in the model's label2id (${[...this.byName.keys()].join(', ')})`);
    }
    throw new InputError(file, where, `expected an integer class id or a label name, got ${show(raw)}`);
  }
}

/** Indices held out for evaluation: a seeded draw of ⌈fraction·n⌉ rows (at least 1, at most n − 1). */
export function splitIndices(n: number, fraction: number, seed: number): { train: number[]; eval: number[] } {
  if (n < 2) return { train: Array.from({ length: n }, (_, i) => i), eval: [] };
  const k = Math.min(n - 1, Math.max(1, Math.round(fraction * n)));
  const perm = new Rng(deriveSeed(seed, 'eval-split')).permutation(n);
  const evalSet = new Set(perm.slice(0, k));
  const train: number[] = [];
  const ev: number[] = [];
  for (let i = 0; i < n; i++) (evalSet.has(i) ? ev : train).push(i);
  return { train, eval: ev };
}

export interface LoadDataOptions {
  data: DataSpec & { format: DataFormat };
  seed: number;
  /** For errors about the spec itself (max length). */
  specFile: string;
}

/** The max length: the spec's (within the model's positions, where it has a limit), else the model's positions capped at 512. */
export function maxLengthFor(data: DataSpec, info: ModelDataInfo, specFile: string): number {
  const cap = info.maxPositions;
  if (data.maxLength !== undefined) {
    if (cap !== undefined && data.maxLength > cap) throw new InputError(specFile, 'data.maxLength', `${data.maxLength} is more than the model's ${cap} positions`);
    return data.maxLength;
  }
  return Math.min(cap ?? 512, 512);
}

/** loadData with the rows read first, whatever the format (Parquet is read asynchronously). */
export async function loadDataFiles(opts: LoadDataOptions, info: ModelDataInfo, tok: DataTokenizer | undefined): Promise<LoadedData> {
  const { data } = opts;
  if (data.format === 'images') return loadData(opts, info, tok);
  const rows = { train: await readRowsAsync(data.format, data.train), eval: data.eval ? await readRowsAsync(data.format, data.eval) : [] };
  return loadData(opts, info, tok, rows);
}

/** The examples of a spec's data; `rows`: its files' rows already read (else read here: JSONL, CSV). */
export function loadData(opts: LoadDataOptions, info: ModelDataInfo, tok: DataTokenizer | undefined, rows?: { train: Row[]; eval: Row[] }): LoadedData {
  const { data, seed, specFile } = opts;
  const task = info.task;
  if (task === 'image-classification' && data.format !== 'images') throw new InputError(specFile, 'data.format', `a ${info.modelType} image classifier needs an image folder (format "images"), got ${data.format}`);
  if (task !== 'image-classification' && data.format === 'images') throw new InputError(specFile, 'data.format', `image folders need an image model; ${info.modelType} reads text`);
  if (task !== 'sequence-classification' && data.textPairField !== undefined)
    throw new InputError(specFile, 'data.textPairField', `a second text per row is for sequence classifiers (BERT, RoBERTa, XLM-R, DistilBERT, DeBERTa, ModernBERT); ${info.modelType} ${task === 'causal-lm' ? 'is a causal language model: put both texts in a promptTemplate' : 'reads images'}`);
  if (task !== 'image-classification' && !tok) throw new Error('a text task needs a tokenizer');
  const maxLength = task === 'image-classification' ? 0 : maxLengthFor(data, info, specFile);
  const b = new Builder(data, info, tok, maxLength);
  const mismatch = tok && tokenizerMismatch(tok, info.vocabSize);
  if (mismatch) b.warnings.push(mismatch);

  let train: Example[];
  let ev: Example[];
  let labelNames: string[] | undefined;
  let trainDropped = 0;
  if (task === 'image-classification') {
    const t = listImageFolder(data.train);
    const e = data.eval ? listImageFolder(data.eval) : undefined;
    const labels = new LabelMap(info, [...t.classes, ...(e?.classes ?? [])]);
    const toEx = (it: { file: string; className: string }): Example => ({ kind: 'image', file: it.file, label: labels.map(it.className, it.file, 'class folder'), source: it.file });
    train = t.items.map(toEx);
    ev = e ? e.items.map(toEx) : [];
    labelNames = labels.named ? labels.names : undefined;
  } else {
    const trainRows = rows?.train ?? readRows(data.format, data.train);
    if (trainRows.length === 0) throw new InputError(data.train, '', 'no rows');
    const evalRows = rows?.eval ?? (data.eval ? readRows(data.format, data.eval) : []);
    if (data.eval && evalRows.length === 0) throw new InputError(data.eval, '', 'no rows');
    if (task === 'causal-lm') {
      train = trainRows.map((r) => b.lm(r)).filter((x): x is Example => !!x);
      trainDropped = b.dropped;
      ev = evalRows.map((r) => b.lm(r)).filter((x): x is Example => !!x);
    } else if (info.problemType === 'regression') {
      const field = data.labelField;
      if ((info.numLabels ?? 1) !== 1) throw new InputError(data.train, `field ${show(field)}`, `the model regresses ${info.numLabels} values per row; one (num_labels 1, as STS-B) is supported`);
      const toEx = (r: Row): Example => ({ kind: 'cls', ...b.clsIds(r), label: regressionTarget(r, field), source: `${r.file}:${r.line}` });
      train = trainRows.map(toEx);
      ev = evalRows.map(toEx);
    } else if (info.problemType === 'multi_label_classification') {
      const field = data.labelField;
      const lists = new Map<Row, unknown[]>();
      const strings: string[] = [];
      for (const r of [...trainRows, ...evalRows]) {
        const list = labelList(r, field);
        lists.set(r, list);
        for (const v of list) if (typeof v === 'string' && !/^\d+$/.test(v)) strings.push(v);
      }
      const labels = new LabelMap(info, strings);
      if (labels.size > (info.numLabels ?? 0) && strings.length > 0)
        throw new InputError(data.train, `field ${show(field)}`, `${labels.size} distinct labels (${labels.names.join(', ')}) but the model has ${info.numLabels} outputs: give the spec "numLabels": ${labels.size}`);
      const toEx = (r: Row): Example => {
        const targets = new Float32Array(info.numLabels ?? 0);
        for (const v of lists.get(r)!) targets[labels.map(v, r.file, rowPlace(r, field))] = 1;
        return { kind: 'cls', ...b.clsIds(r), label: -1, targets, source: `${r.file}:${r.line}` };
      };
      train = trainRows.map(toEx);
      ev = evalRows.map(toEx);
      labelNames = labels.named ? labels.names : undefined;
    } else {
      const field = data.labelField;
      const strings: string[] = [];
      for (const r of [...trainRows, ...evalRows]) {
        const v = r.fields[field];
        if (v === undefined) throw new InputError(r.file, rowPlace(r), `missing field ${show(field)} (fields: ${Object.keys(r.fields).join(', ') || 'none'})`);
        if (typeof v === 'string' && !/^\d+$/.test(v)) strings.push(v);
      }
      const labels = new LabelMap(info, strings);
      if (labels.size > (info.numLabels ?? 0) && strings.length > 0)
        throw new InputError(
          data.train,
          `field ${show(field)}`,
          strings.every((l) => Number.isFinite(Number(l)))
            ? `labels such as ${show(strings[0])} are numbers, not classes: a regression (STS-B's scores) needs the spec "numLabels": 1`
            : `${labels.size} distinct labels (${labels.names.slice(0, 8).join(', ')}${labels.size > 8 ? ', …' : ''}) but the model has ${info.numLabels} outputs: give the spec "numLabels": ${labels.size} (a fresh head of that size)`,
        );
      const toEx = (r: Row): Example => ({ kind: 'cls', ...b.clsIds(r), label: labels.map(r.fields[field], r.file, rowPlace(r, field)), source: `${r.file}:${r.line}` });
      train = trainRows.map(toEx);
      ev = evalRows.map(toEx);
      labelNames = labels.named ? labels.names : undefined;
    }
  }
  if (train.length === 0) throw new InputError(data.train, '', `no usable rows (${trainDropped} dropped as too short after truncation to ${maxLength} tokens)`);
  if (!data.eval && data.evalSplit !== undefined) {
    const s = splitIndices(train.length, data.evalSplit, seed);
    const all = train;
    train = s.train.map((i) => all[i]!);
    ev = s.eval.map((i) => all[i]!);
  }
  if (b.truncated > 0) b.warnings.push(`${b.truncated} row${b.truncated === 1 ? ' was' : 's were'} truncated to ${maxLength} tokens`);
  if (b.dropped > 0) b.warnings.push(`${b.dropped} row${b.dropped === 1 ? ' was' : 's were'} dropped (no trainable token left within ${maxLength} tokens)`);
  const metricName: MetricName | undefined =
    task === 'causal-lm'
      ? ev.some((e) => e.kind === 'lm' && e.completion)
        ? 'exact_match'
        : undefined
      : info.problemType === 'regression'
        ? 'pearson'
        : info.problemType === 'multi_label_classification'
          ? 'subset_accuracy'
          : 'accuracy';
  return {
    task,
    train,
    eval: ev,
    ...(metricName ? { metricName } : {}),
    maxLength,
    ...(labelNames ? { labelNames } : {}),
    truncated: b.truncated,
    dropped: b.dropped,
    warnings: b.warnings,
  };
}

/**
 * Held-out text for the forgetting measure: a JSONL file (one text per row, in `textField`) gives one
 * example per row, cut to `maxLength` tokens; any other file is plain text, cut into consecutive
 * chunks of `maxLength` tokens. At most `maxRows` examples.
 */
export function loadHeldout(file: string, tok: DataTokenizer, vocabSize: number, maxLength: number, textField = 'text', maxRows = 64): Example[] {
  const out: Example[] = [];
  const check = (ids: number[], where: string) => {
    const bad = ids.find((i) => i < 0 || i >= vocabSize);
    if (bad !== undefined) throw new InputError(file, where, `token id ${bad} is outside the model's vocabulary of ${vocabSize}`);
  };
  if (/\.(jsonl|ndjson|json)$/i.test(file)) {
    for (const r of readJsonl(file)) {
      if (out.length >= maxRows) break;
      const v = r.fields[textField];
      if (typeof v !== 'string') throw new InputError(file, `line ${r.line}, field ${show(textField)}`, `expected a string, got ${show(v)}`);
      const ids = tok.encode(v, true).slice(0, maxLength);
      check(ids, `line ${r.line}, field ${show(textField)}`);
      if (ids.length >= 2) out.push({ kind: 'lm', ids: Int32Array.from(ids), labels: Int32Array.from(ids), completion: false, source: `${file}:${r.line}` });
    }
  } else {
    const text = readInputText(file);
    const ids = tok.encode(text, false);
    check(ids, '');
    for (let i = 0; i + 2 <= ids.length && out.length < maxRows; i += maxLength) {
      const chunk = Int32Array.from(ids.slice(i, i + maxLength));
      if (chunk.length >= 2) out.push({ kind: 'lm', ids: chunk, labels: chunk, completion: false, source: `${file}:chunk ${out.length}` });
    }
  }
  if (out.length === 0) throw new InputError(file, '', 'no held-out text of at least 2 tokens');
  return out;
}
