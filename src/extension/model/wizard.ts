/**
 * "New Fine-tune…": the answers of the quick picks → a run spec (vscode-free). The spec is what a
 * person would write: paths relative to the spec's folder with forward slashes, only the options
 * the chosen adapter kind uses, nothing the schema would fill in anyway except what was chosen.
 */
import { relative, sep } from 'node:path';
import { ADAPTER_KINDS, LORA_INITS, type AdapterKind, type AdapterSpec, type LoraInit } from '../../protocol';

export const BUNDLED_MODEL_PREFIX = 'peft-lab/';

export const ADAPTER_DESCRIPTIONS: Record<AdapterKind, string> = {
  lora: 'Low-rank update B·A on the target projections',
  dora: 'LoRA with a learned per-column magnitude (weight-decomposed)',
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

/** The learning rate a kind starts from: full fine-tuning moves every weight, so 10× lower. */
export const startingLr = (kind: AdapterKind): number => (kind === 'full' ? 1e-4 : 1e-3);

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

export interface WizardAnswers {
  /** Absolute path of the spec to write. */
  specFile: string;
  model: ModelAnswer;
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
