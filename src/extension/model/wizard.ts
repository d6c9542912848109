/**
 * "New Fine-tune…": the answers of the quick picks → a run spec (vscode-free). The spec is what a
 * person would write: paths relative to the spec's folder with forward slashes, only the options
 * the chosen adapter kind uses, nothing the schema would fill in anyway except what was chosen.
 */
import { readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { ADAPTER_KINDS, LORA_INITS, type AdapterKind, type AdapterSpec, type LoraInit } from '../../protocol';
import { readRowsAsync } from '../../../sidecar/src/data/rows';
import { CheckpointReader } from '../../../sidecar/src/io/checkpoint';
import { TEXT_CLASSIFIER_TYPES } from '../../../sidecar/src/models/config';
import { HEAD_WEIGHT } from '../../../sidecar/src/tasks/base-options';

export const BUNDLED_MODEL_PREFIX = 'peft-lab/';

export const ADAPTER_DESCRIPTIONS: Record<AdapterKind, string> = {
  lora: 'Low-rank update B·A on the target projections',
  dora: 'LoRA with a learned per-column magnitude (weight-decomposed)',
  adalora: 'SVD-shaped LoRA whose ranks are pruned to a budget while training',
  loha: 'Hadamard product of two low-rank updates (LyCORIS LoHa)',
  lokr: 'Kronecker product of two small factors (LyCORIS LoKr)',
  vera: 'Shared frozen random projections, trained scaling vectors (fewest parameters)',
  oft: 'Block-diagonal orthogonal rotation of each target\'s input (OFT)',
  hra: 'Householder reflections of each target\'s input (HRA)',
  ia3: 'Learned rescaling of keys, values and MLP activations',
  ssf: 'Learned scale and shift after each target module',
  bottleneck: 'Small down/up MLP adapters inside each block',
  bitfit: 'Train the biases only',
  'ln-tuning': 'Train the LayerNorm parameters only',
  loldu: 'Lower-diagonal-upper decomposition, diagonal trained',
  svfit: 'Train the top singular values of each target weight',
  full: 'Every parameter (baseline)',
  sparse: 'Train the weights selected by a 0/1 mask file',
};

export const INIT_DESCRIPTIONS: Record<LoraInit, string> = {
  default: 'A Kaiming-uniform, B zero (PEFT default)',
  gaussian: 'A Gaussian, B zero',
  pissa: 'Principal singular vectors of W (base weight becomes the residual)',
  olora: 'Orthonormal QR factors of W',
  'corda-ipm': 'Context-oriented decomposition, instruction-previewed (calibration rows)',
  'corda-kpm': 'Context-oriented decomposition, knowledge-preserving (calibration rows)',
  'lora-ga': 'Aligned with the full fine-tune gradient (calibration rows)',
};

/** The LoRA inits a kind takes (DoRA only the two plain ones); [] for kinds without inits. */
export function initChoices(kind: AdapterKind): LoraInit[] {
  if (kind === 'lora') return [...LORA_INITS];
  if (kind === 'dora') return ['default', 'gaussian'];
  return [];
}

export function adapterChoices(): { kind: AdapterKind; description: string }[] {
  return ADAPTER_KINDS.map((kind) => ({ kind, description: ADAPTER_DESCRIPTIONS[kind] }));
}

/** The kinds a comparison can hold (a sparse update needs its own mask file), and the ones picked at first. */
export const COMPARE_CHOICES: readonly AdapterKind[] = ADAPTER_KINDS.filter((k) => k !== 'sparse');
export const COMPARE_DEFAULTS: readonly AdapterKind[] = ['lora', 'dora', 'ia3'];

/**
 * The learning rate a kind starts from: full fine-tuning moves every weight, so 10× lower; VeRA
 * trains only scaling vectors on random projections, so 10× higher (the paper's range).
 */
export const startingLr = (kind: AdapterKind): number => (kind === 'full' ? 1e-4 : kind === 'vera' ? 1e-2 : 1e-3);

/** A bundled model, a folder, or a Hugging Face id in the local hub cache. */
export type ModelAnswer = { kind: 'bundled'; id: string } | { kind: 'folder'; path: string } | { kind: 'hub'; id: string };
/** Data files as they will be in the workspace (bundled tasks are copied there first). */
export interface DataAnswer {
  train: string;
  eval?: string;
  heldout?: string;
  /** The bundled task it came from, if any. */
  task?: string;
  /** Field settings for the data's columns (`dataFields`), written into the spec's data. */
  fields?: Record<string, string>;
}

const ALPACA = '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n';
const ALPACA_NO_INPUT = '### Instruction:\n{instruction}\n\n### Response:\n';
const DOLLY = '### Instruction:\n{instruction}\n\n### Context:\n{context}\n\n### Response:\n';

/**
 * Data settings for a file's columns where the defaults (text; prompt + completion; messages;
 * text + label) do not fit: instruction data (Alpaca's instruction/input/output, Dolly's
 * instruction/context/response) through a prompt template, question/answer pairs, GLUE's sentence
 * and sentence pairs.
 */
export function dataFields(columns: readonly string[], classifier = false): Record<string, string> {
  const has = (c: string) => columns.includes(c);
  if (has('messages') || has('text') || (has('prompt') && has('completion'))) return {};
  if (has('instruction') && has('output')) return { promptTemplate: has('input') ? ALPACA : ALPACA_NO_INPUT, completionField: 'output' };
  if (has('instruction') && has('response')) return { promptTemplate: has('context') ? DOLLY : ALPACA_NO_INPUT, completionField: 'response' };
  if (has('question') && has('answer')) return { promptTemplate: 'Question: {question}\nAnswer: ', completionField: 'answer' };
  // GLUE's sentence pairs (MRPC, RTE, STS-B; QQP; MNLI; QNLI), for a classifier (a causal LM reads no pairs).
  if (classifier)
    for (const [a, b] of [['sentence1', 'sentence2'], ['question1', 'question2'], ['premise', 'hypothesis'], ['question', 'sentence']] as const)
      if (has(a) && has(b) && has('label')) return { textField: a, textPairField: b };
  if (has('sentence') && has('label')) return { textField: 'sentence' };
  return {};
}

/** config.json as read for its classifier head (num_labels, id2label, label2id, problem_type). */
export type HeadConfig = Record<string, unknown>;

/** A classifier's head size as transformers sizes it from config.json: num_labels, else id2label's size, else 2. */
export function configNumLabels(config: HeadConfig): number {
  if (typeof config.num_labels === 'number') return config.num_labels;
  const table = config.id2label;
  if (table && typeof table === 'object') return Math.max(1, Object.keys(table).length);
  return 2; // PretrainedConfig's default
}

/** Whether config.json's head regresses: its problem_type, else one output (as transformers infers it). */
function configRegresses(config: HeadConfig): boolean {
  const p = config.problem_type;
  return p === 'regression' || ((p === undefined || p === null) && configNumLabels(config) === 1);
}

/** The label names of config.json's label2id, unless it is the default LABEL_k table (which names nothing). */
function configLabelNames(config: HeadConfig): string[] | undefined {
  const table = config.label2id;
  if (!table || typeof table !== 'object') return undefined;
  const names = Object.keys(table);
  return names.every((n) => /^LABEL_\d+$/.test(n)) ? undefined : names;
}

/** A multi-label row's list, given as a list or (CSV) as JSON text; anything else is one label. */
function labelItems(v: unknown): unknown[] {
  if (Array.isArray(v)) return v;
  if (typeof v === 'string' && v.trim().startsWith('[')) {
    try {
      const list = JSON.parse(v) as unknown;
      if (Array.isArray(list)) return list;
    } catch {
      /* a name that starts with a bracket */
    }
  }
  return [v];
}

/**
 * The head size a data file's labels call for, read as the data loader reads them: 1 for a
 * regression (numbers that are not all class ids, as STS-B's 3.8; any numbers for a model that
 * regresses already), else the classes: integer ids up to the largest + 1, names one each (all
 * named by the model's own label table: at least its size). Undefined when no row has a label.
 */
export function dataNumLabels(labels: readonly unknown[], config: HeadConfig): number | undefined {
  const names = new Set<string>();
  let maxId = -1;
  let any = false;
  let numeric = true;
  let fractional = false;
  for (const v of labels.flatMap(labelItems)) {
    if (v === undefined || v === null) continue; // a row without its label: the loader names it
    if (v === -1 || v === '-1') continue; // GLUE's test splits mark unlabelled rows with −1
    any = true;
    const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
    if (!Number.isFinite(n)) {
      numeric = false;
      if (typeof v === 'string') names.add(v);
    } else if (Number.isInteger(n) && n >= 0 && (typeof v === 'number' || /^\d+$/.test(v as string))) maxId = Math.max(maxId, n);
    // "1.0" in a CSV is no class id to the loader (it is a name, or with the others numbers, a regression's value).
    else fractional = true;
  }
  if (!any) return undefined;
  if (numeric && (fractional || configRegresses(config))) return 1;
  const table = configLabelNames(config);
  const named = table !== undefined && names.size > 0 && [...names].every((n) => table.includes(n)) ? configNumLabels(config) : names.size;
  return Math.max(named, maxId + 1);
}

/**
 * The spec's numLabels: the data's head size where it differs from config.json's, or where the
 * checkpoint has no head (a base model, whose head starts fresh anyway); none where config.json's
 * head fits the data, so a fine-tuned classifier keeps its trained head.
 */
export function specNumLabels(dataLabels: number | undefined, config: HeadConfig, hasHead: boolean | undefined): number | undefined {
  if (dataLabels === undefined) return undefined;
  return dataLabels !== configNumLabels(config) || hasHead === false ? dataLabels : undefined;
}

/** Whether a model folder's checkpoint holds a classifier's output layer; undefined when it cannot be read. */
export async function checkpointHasHead(dir: string): Promise<boolean | undefined> {
  let reader: CheckpointReader;
  try {
    reader = await CheckpointReader.open(dir);
  } catch {
    return undefined; // no readable checkpoint (the run names the problem): the head cannot be told
  }
  try {
    return reader.names().some((n) => HEAD_WEIGHT.test(n));
  } finally {
    await reader.close();
  }
}

/**
 * The numLabels a new spec needs for a text classifier in `modelDir` trained on `files` (labels in
 * `labelField`); undefined for other models, where config.json's head fits, or where the files
 * cannot be read (the run reports them).
 */
export async function wizardNumLabels(modelDir: string | undefined, files: readonly string[], labelField = 'label'): Promise<number | undefined> {
  if (!modelDir) return undefined;
  let config: HeadConfig;
  try {
    const raw = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as unknown;
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return undefined;
    config = raw as HeadConfig;
  } catch {
    return undefined;
  }
  if (!(TEXT_CLASSIFIER_TYPES as readonly unknown[]).includes(config.model_type)) return undefined;
  const labels: unknown[] = [];
  try {
    for (const f of files) {
      const format = /\.csv$/i.test(f) ? 'csv' : /\.parquet$/i.test(f) ? 'parquet' : 'jsonl';
      for (const r of await readRowsAsync(format, f)) labels.push(r.fields[labelField]);
    }
  } catch {
    return undefined;
  }
  return specNumLabels(dataNumLabels(labels, config), config, await checkpointHasHead(modelDir));
}

export interface WizardAnswers {
  /** Absolute path of the spec to write. */
  specFile: string;
  model: ModelAnswer;
  /** Classifiers: the head size for the data where config.json's does not fit it (wizardNumLabels). */
  numLabels?: number;
  data: DataAnswer;
  /** The adapter of a single run; with `compare`, the first of them. */
  adapter: AdapterKind;
  /** Two or more kinds: a comparison spec (`variants`, one run per kind, "Compare variants"). */
  compare?: AdapterKind[];
  init?: LoraInit;
  /** Sparse update: the mask file (absolute). */
  mask?: string;
  /** `logEvery` (the peftLab.logEvery setting). */
  logEvery: number;
  steps?: number;
}

function rel(fromDir: string, p: string): string {
  const r = relative(fromDir, p).split(sep).join('/');
  return r.startsWith('.') ? r : `./${r}`;
}

/** The adapter part: the kind plus the usual starting options of its family. */
export function adapterSpec(kind: AdapterKind, init: LoraInit | undefined, mask: string | undefined): AdapterSpec {
  switch (kind) {
    case 'lora':
    case 'dora':
      return { kind, r: 8, alpha: 16, dropout: 0.05, ...(init && init !== 'default' ? { init } : {}) };
    case 'adalora':
      return { kind, r: 12, alpha: 32, adalora: { targetR: 8 } };
    case 'loha':
    case 'lokr':
      return { kind, r: 8, alpha: 8 };
    case 'vera':
      return { kind, r: 256 };
    case 'loldu':
    case 'svfit':
      return { kind, r: 8 };
    case 'sparse':
      return { kind, ...(mask ? { mask } : {}) };
    default:
      return { kind };
  }
}

/** The spec object for the answers. */
export function buildSpec(a: WizardAnswers, specDir: string): Record<string, unknown> {
  const model =
    a.model.kind === 'bundled' ? `${BUNDLED_MODEL_PREFIX}${a.model.id.replace(/^peft-lab\//, '')}` : a.model.kind === 'hub' ? a.model.id : rel(specDir, a.model.path);
  const data: Record<string, unknown> = { train: rel(specDir, a.data.train), ...(a.data.fields ?? {}) };
  if (a.data.eval) data.eval = rel(specDir, a.data.eval);
  else data.evalSplit = 0.1;
  if (a.data.heldout) data.heldout = rel(specDir, a.data.heldout);
  const kinds = a.compare && a.compare.length > 1 ? a.compare : undefined;
  const what = kinds ? kinds.join(' vs ') : a.adapter;
  const lr = startingLr(kinds?.[0] ?? a.adapter);
  const spec: Record<string, unknown> = {
    ...(a.data.task ? { description: `${what} on the bundled "${a.data.task}" task` } : {}),
    model,
    ...(a.numLabels !== undefined ? { numLabels: a.numLabels } : {}),
    data,
    ...(kinds ? {} : { adapter: adapterSpec(a.adapter, a.init, a.mask ? rel(specDir, a.mask) : undefined) }),
    optimizer: { lr },
    batchSize: 8,
    ...(a.steps !== undefined ? { steps: a.steps } : {}),
    logEvery: a.logEvery,
    seed: 42,
  };
  // One model, data set and seed; each variant its adapter and, where it starts elsewhere, its lr.
  if (kinds) spec.variants = kinds.map((kind) => ({ name: kind, adapter: adapterSpec(kind, undefined, undefined), ...(startingLr(kind) !== lr ? { optimizer: { lr: startingLr(kind) } } : {}) }));
  return spec;
}

export function buildSpecText(a: WizardAnswers, specDir: string): string {
  return `${JSON.stringify(buildSpec(a, specDir), null, 2)}\n`;
}

/** A file name for the new spec: `<task or data>-<adapter>[-<init>].peft.json`, `<task or data>-compare.peft.json`. */
export function defaultSpecFileName(a: Pick<WizardAnswers, 'adapter' | 'init' | 'data' | 'compare'>): string {
  const base = a.data.task ?? (a.data.train.split(/[\\/]/).pop() ?? 'data').replace(/\.[^.]*$/, '');
  const init = a.init && a.init !== 'default' ? `-${a.init}` : '';
  const what = a.compare && a.compare.length > 1 ? 'compare' : `${a.adapter}${init}`;
  return `${base}-${what}.peft.json`.replace(/[^A-Za-z0-9._-]+/g, '-');
}
