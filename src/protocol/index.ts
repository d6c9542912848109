/**
 * The one protocol module: every message that crosses a process or webview boundary.
 * Imported by the extension, the sidecar and the webviews; imports neither `vscode` nor TF.js,
 * so each message is a plain method name plus phantom types that the typed send helpers use.
 */

/** A request: direction extension → sidecar unless its doc comment says otherwise. */
export interface RequestDef<P, R> {
  readonly method: string;
  /** Phantom fields: never set, only carry the types. */
  readonly _params?: P;
  readonly _result?: R;
}
export interface NotificationDef<P> {
  readonly method: string;
  readonly _params?: P;
}
const request = <P, R>(method: string): RequestDef<P, R> => ({ method });
const notification = <P>(method: string): NotificationDef<P> => ({ method });

export type ParamsOf<T> = T extends RequestDef<infer P, unknown> ? P : T extends NotificationDef<infer P> ? P : never;
export type ResultOf<T> = T extends RequestDef<unknown, infer R> ? R : never;

// ---- backends ------------------------------------------------------------------------------

export const BACKENDS = ['tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];
export type BackendPreference = BackendName | 'auto';
export const isBackendPreference = (v: unknown): v is BackendPreference =>
  v === 'auto' || (typeof v === 'string' && (BACKENDS as readonly string[]).includes(v));

export interface BackendInfo {
  name: BackendName;
  /** Human-readable device, e.g. "CPU, 1 thread (WebAssembly SIMD)" or a GPU adapter name. */
  device: string;
  /** Backends tried before this one, with why each was not used. */
  skipped: { name: BackendName; reason: string }[];
}

// ---- status / lifecycle --------------------------------------------------------------------

export interface StatusResult {
  version: string;
  node: string;
  tfjs: string;
  backend: BackendInfo;
  pid: number;
  jobs: JobSummary[];
  memory: { rssMb: number; numTensors: number; numBytes: number };
}
export const Status = request<Record<string, never>, StatusResult>('peftLab/status');
/** Stops running jobs (each marked cancelled) and exits after replying. */
export const Shutdown = request<Record<string, never>, { ok: true }>('peftLab/shutdown');

// ---- long-running jobs: start → progress notifications → result; cancellable ----------------

export const JOB_KINDS = ['forward', 'grads', 'inspect', 'selftest', 'train', 'compare', 'importance', 'allocate', 'localize', 'merge', 'evaluate', 'generate'] as const;
export type JobKind = (typeof JOB_KINDS)[number];
export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export interface ForwardJobParams {
  kind: 'forward';
  model: string;
  adapter?: string;
  inputs: string;
  out: string;
}
export interface GradsJobParams {
  kind: 'grads';
  model: string;
  inputs: string;
  out: string;
}
export interface InspectJobParams {
  kind: 'inspect';
  model: string;
}
/** Runs `steps` fine-tuning steps on a synthetic batch: used to test the job pattern end to end. */
export interface SelftestJobParams {
  kind: 'selftest';
  steps: number;
  /** Milliseconds to wait between steps (tests use it to cancel mid-job). */
  delayMs?: number;
  /** Fails after the steps with an error of this message (tests: what a backend abort does). */
  failWith?: string;
}
/** Fine-tune from a spec file into a run folder; `resume` continues the run folder's last checkpoint. */
export interface TrainJobParams {
  kind: 'train';
  /** Path of the `*.peft.json` spec. */
  spec: string;
  /** Run folder to write (default: a new folder under the runs folder); with `resume`, the folder to continue. */
  runDir?: string;
  resume?: boolean;
  /** Folder the spec's paths may not leave (the workspace folder); default: the spec's folder. */
  workspaceRoot?: string;
}
/**
 * Fine-tune every entry of a spec's `variants` (one model, data and seed; an adapter and training
 * overrides each) into its own run folder inside one compare folder, which gets `compare.json`.
 * Progress counts steps over all variants (the totals of variants not yet started estimated from
 * the current one); its message names the variant.
 */
export interface CompareJobParams {
  kind: 'compare';
  /** Path of the `*.peft.json` spec with `variants`. */
  spec: string;
  /** Compare folder (default: a new `compare-<name>-<time>` under the spec's runs folder). */
  outDir?: string;
  /** Folder the spec's paths may not leave (the workspace folder); default: the spec's folder. */
  workspaceRoot?: string;
}
export type JobParams =
  | ForwardJobParams
  | GradsJobParams
  | InspectJobParams
  | SelftestJobParams
  | TrainJobParams
  | CompareJobParams
  | ImportanceJobParams
  | AllocateJobParams
  | LocalizeJobParams
  | MergeJobParams
  | EvaluateJobParams
  | GenerateJobParams;

export interface JobSummary {
  id: string;
  kind: JobKind;
  state: JobState;
  startedAt: string;
}
export const StartJob = request<JobParams, { id: string }>('peftLab/job/start');
export const CancelJob = request<{ id: string }, { cancelled: boolean }>('peftLab/job/cancel');

/** sidecar → extension: progress of a running job. */
export interface JobProgress {
  id: string;
  /** Work done and total, in the job's own units (steps, batches, tensors). */
  done: number;
  total: number;
  message?: string;
  /** Scalars a chart can plot (e.g. loss). */
  metrics?: Record<string, number>;
  /** What `metrics.eval_accuracy` measures (accuracy, exact_match, pearson). */
  metricName?: string;
}
export const JobProgressNote = notification<JobProgress>('peftLab/job/progress');

/** sidecar → extension: a job ended. Exactly one per started job. */
export type JobEnd =
  | { id: string; state: 'done'; result: JobResult }
  | {
      id: string;
      state: 'failed';
      error: string;
      /** A bad input's problems, each its own line in the error's form (`file (path at line:col): message`): a spec's several. */
      problems?: string[];
    }
  | { id: string; state: 'cancelled' };
export const JobEndNote = notification<JobEnd>('peftLab/job/end');

export interface InspectResult {
  architecture: string;
  modelType: string;
  parameters: number;
  byModule: Record<string, number>;
  dtypes: Record<string, number>;
  files: { name: string; bytes: number }[];
  /** A classifier head the checkpoint lacks (a base model): a run starts it fresh and trains it. */
  freshHeads?: string[];
}
export type JobResult =
  | { kind: 'forward'; out: string; loss?: number }
  | { kind: 'grads'; out: string; loss: number; tensors: number }
  | { kind: 'inspect'; inspect: InspectResult }
  | { kind: 'selftest'; steps: number; losses: number[] }
  | { kind: 'train'; runDir: string; status: RunStatus }
  /** `variants`: each variant's end state and, for a failed one, why (the rest is in compare.json). */
  | { kind: 'compare'; compareFile: string; variants: { name: string; state: RunState; error?: string }[] }
  | { kind: 'importance'; out: string; report: ImportanceReport }
  | { kind: 'allocate'; out: string; report: AllocationReport }
  | { kind: 'localize'; out: string; report: LocalizeReport }
  | { kind: 'merge'; out: string; report: MergeReport }
  | { kind: 'evaluate'; out: string; report: EvaluateReport }
  | { kind: 'generate'; result: GenerateResult };

/** sidecar → extension: a log line for the output channel (stdout is the RPC channel). */
export interface LogMessage {
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
}
export const LogNote = notification<LogMessage>('peftLab/log');

// ---- run specs (`*.peft.json`) ---------------------------------------------------------------

export const ADAPTER_KINDS = ['lora', 'dora', 'adalora', 'loha', 'lokr', 'vera', 'oft', 'hra', 'ia3', 'ssf', 'bottleneck', 'bitfit', 'ln-tuning', 'loldu', 'svfit', 'full', 'sparse'] as const;
export type AdapterKind = (typeof ADAPTER_KINDS)[number];
export const LORA_INITS = ['default', 'gaussian', 'pissa', 'olora', 'corda-ipm', 'corda-kpm', 'lora-ga'] as const;
export type LoraInit = (typeof LORA_INITS)[number];

/**
 * AdaLoRA's schedule (PEFT's AdaLoraConfig; total_step is the run's): the budget falls from r to
 * targetR ranks per module, as a cubic, between step tinit and tfinal steps before the end, masking
 * every deltaT steps; beta1 and beta2 smooth the sensitivity and its uncertainty; orthRegWeight
 * weighs the orthogonality penalty.
 */
export interface AdaloraOptions {
  targetR?: number;
  tinit?: number;
  tfinal?: number;
  deltaT?: number;
  beta1?: number;
  beta2?: number;
  orthRegWeight?: number;
}

/** The adapter part of a run spec. Options a kind does not use are rejected by validation. */
export interface AdapterSpec {
  kind: AdapterKind;
  /** Module short names or full module paths (PEFT's `target_modules`); defaults per architecture. */
  targets?: string[];
  /** Transformer blocks (0-based) the adapter acts in (PEFT's `layers_to_transform`); default all. */
  layers?: number[];
  /** LoRA family (LoHa, LoKr: r and alpha, rankPattern, alphaPattern; VeRA: r, dropout, bias) */
  r?: number;
  alpha?: number;
  dropout?: number;
  rslora?: boolean;
  bias?: 'none' | 'all' | 'lora_only';
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /** LoKr: also factor the first Kronecker factor into a low-rank product (PEFT's decompose_both). */
  decomposeBoth?: boolean;
  /** LoKr: the size of the first Kronecker factor's dimensions where it divides them (PEFT's decompose_factor; default −1: near the square root). */
  decomposeFactor?: number;
  /** HRA: one reflection by the Gram–Schmidt basis of the vectors instead of r in turn (PEFT's apply_GS). */
  gramSchmidt?: boolean;
  /** OFT: the size of the rotation blocks (PEFT's oft_block_size; default 32, adjusted to divide the input size). */
  blockSize?: number;
  /** AdaLoRA's rank allocation (r is its initial rank, init_r); PEFT's AdaLoraConfig defaults. */
  adalora?: AdaloraOptions;
  init?: LoraInit;
  /** CorDA / LoRA-GA calibration: number of training rows to use (default 32 / 8). */
  calibRows?: number;
  /** bottleneck adapter width */
  bottleneck?: number;
  /** sparse update: a safetensors file of 0/1 masks named like the base tensors */
  mask?: string;
  /** PEFT `modules_to_save`: modules trained in full beside the adapter (e.g. a classifier). */
  modulesToSave?: string[];
}

// ---- run folders (written by the sidecar, read by the extension's runs view and dashboards) ----

/**
 * `<run folder>/status.json`, replaced atomically. A reader that finds `running` with a `pid` that
 * is no longer alive shows the run as interrupted (and offers Resume).
 */
export const RUN_STATES = ['running', 'done', 'failed', 'cancelled', 'interrupted'] as const;
export type RunState = (typeof RUN_STATES)[number];
export interface RunStatus {
  version: 1;
  state: RunState;
  /** Absolute path of the spec the run was started from. */
  spec: string;
  name: string;
  adapter: AdapterKind;
  step: number;
  totalSteps: number;
  startedAt: string;
  updatedAt: string;
  pid?: number;
  /** One line, naming the file and place where the input was at fault. */
  error?: string;
  /** Folder name under `checkpoints/` of the newest complete checkpoint. */
  lastCheckpoint?: string;
  trainableParams?: number;
  /** The compute backend of the latest session, as `name: device` (`webgpu: GPU (WebGPU: nvidia …)`,
   * `wasm: CPU (…, 1 thread)`): tokens/s of runs on different backends do not compare. */
  backend?: string;
  /** Final (or latest) figures for the runs view's description. */
  summary?: {
    loss?: number;
    evalLoss?: number;
    evalMetric?: number;
    metricName?: string;
    tokensPerS?: number;
    /** Eval figures before the first step (the zero-shot baseline the fine-tune is measured against). */
    baselineEvalLoss?: number;
    baselineEvalMetric?: number;
  };
}

/**
 * The task metrics runs report (as `eval_accuracy` in metrics.jsonl, named by `metricName`): the
 * fraction of right answers (accuracy; exact match of completions; subset accuracy, every label of a
 * multi-label row right), or for a regression the Pearson correlation of predictions and targets.
 */
export type MetricName = 'accuracy' | 'exact_match' | 'pearson' | 'subset_accuracy';

/** Whether a metric is a fraction of right answers (read in percent). Unknown names: yes, as before names were kept. */
export function metricIsFraction(name: string | undefined): boolean {
  return name === undefined || /accuracy|exact_match|^acc$|^em$/i.test(name);
}

/** A metric's value as people read it: 87.5% for a fraction, 0.873 for a correlation. */
export function formatMetricValue(name: string | undefined, value: number): string {
  if (!Number.isFinite(value)) return String(value);
  return metricIsFraction(name) ? `${(value * 100).toFixed(1)}%` : value.toFixed(3);
}

/** One line of `<run folder>/metrics.jsonl`, appended and flushed at every logging step. */
export interface MetricRecord {
  step: number;
  loss: number;
  lr: number;
  tokens_per_s: number;
  elapsed_s: number;
  eval_loss?: number;
  /** Task metric when evaluated (accuracy for classification and exact-match tasks; the Pearson correlation for a regression: see the run's metricName). */
  eval_accuracy?: number;
  /** Any further scalars (e.g. IST scores, grad norm). */
  [extra: string]: number | undefined;
}

// ---- webview panels: host ↔ webview messages and the panels' view models live in ./webview ----
export type { HostToWebview, WebviewToHost, HostMessage, WebviewMessage, PanelKind, PanelState } from './webview';

// ---- analysis jobs: importance maps, budget allocation, skill localization, task vectors ------

/**
 * A layers × module-types table, the shape of every heatmap: `values[i][j]` is row `rows[i]`
 * (transformer block `layers[i]`, or −1 for the "embeddings/head" row: embeddings, final norm,
 * LM head, pooler, classifier) and column `columns[j]` (a module type from the architecture's
 * parameter list: `c_attn`, `q_proj`, `norm`, ...). `null` where the layer has no such tensor.
 */
export interface LayerGrid<T = number | null> {
  rows: string[];
  layers: number[];
  columns: string[];
  values: T[][];
}

export const IMPORTANCE_METHODS = ['fisher', 'grad-norm', 'taylor', 'adalora'] as const;
export type ImportanceMethod = (typeof IMPORTANCE_METHODS)[number];

/**
 * Per-parameter importance over N batches (g_b = gradient of batch b's mean loss):
 *  - `fisher`: Σ_b g_b² (empirical Fisher; SPT's sensitivity),
 *  - `grad-norm`: |Σ_b g_b| per entry (the tensor's ‖Σ_b g_b‖₂ is reported as `gradNorm`),
 *  - `taylor`: |Σ_b w ⊙ g_b| = |w ⊙ Σ_b g_b| (first-order Taylor estimate of the loss change when an
 *    entry is zeroed, summed over the batches before the absolute value).
 */
export interface ImportanceJobParams {
  kind: 'importance';
  model: string;
  /** The run spec the scores are for ("Score layers"): recorded in the report, and passed on to its allocations. */
  spec?: string;
  /** A PEFT adapter folder, or a run folder (its `adapter/`): its trainable tensors are scored too. */
  adapter?: string;
  /** JSONL / CSV rows (text, prompt + completion, or text + label) ... */
  data?: string;
  /** ... or one safetensors batch (input_ids / pixel_values + labels), split into rows of `batchSize`. */
  inputs?: string;
  /** Default: all three. */
  methods?: ImportanceMethod[];
  /** Default 16 with `data`; with `inputs`, the number of chunks of the file. */
  batches?: number;
  /** Default 32 with `data`; with `inputs`, the whole file. */
  batchSize?: number;
  /** Mean |input| of every linear module (default true). */
  activations?: boolean;
  /** Data order (default 0). */
  seed?: number;
  /** Output folder: scores.safetensors + importance.json. */
  out: string;
}

export interface ImportanceTensor {
  name: string;
  source: 'base' | 'adapter';
  layer: number;
  type: string;
  shape: number[];
  numel: number;
  /** Σ over the entries of each method's per-entry score. */
  totals: Partial<Record<ImportanceMethod, number>>;
  /** ‖Σ_b g_b‖₂ (with grad-norm). */
  gradNorm?: number;
}

export interface ImportanceGrids {
  /** Σ of the per-entry scores of the cell's tensors. */
  sum: LayerGrid;
  /** sum / number of entries: comparable across module sizes. */
  mean: LayerGrid;
}

export interface ImportanceReport {
  version: 1;
  model: string;
  /** The run spec the scores were made for, when known. */
  spec?: string;
  adapter?: string;
  data?: string;
  inputs?: string;
  methods: ImportanceMethod[];
  batches: number;
  /** Rows seen (with repeats when batches × batchSize exceeds the data). */
  examples: number;
  /** Loss-bearing tokens (LM) or rows (classification) seen. */
  tokens: number;
  meanLoss: number;
  /** Parameters of the base model (tied copies once). */
  totalParams: number;
  /** `scores.safetensors` beside this file: `<method>.<tensor name>` (same shape as the tensor), `activation.<module>` ([1]: mean |input|). */
  scoresFile: string;
  tensors: ImportanceTensor[];
  /** Base-model tensors, per method. */
  grids: Partial<Record<ImportanceMethod, ImportanceGrids>>;
  /** L2 norm of the cell's Σ_b g_b (with grad-norm). */
  gradNormGrid?: LayerGrid;
  /** Adapter tensors, per method, in the cells of the modules they attach to. */
  adapterGrids?: Partial<Record<ImportanceMethod, ImportanceGrids>>;
  /** Entries per cell (base tensors). */
  numel: LayerGrid;
  /** Mean |x| of each linear module's input over every entry of every batch (padding included). */
  activations?: { modules: { module: string; layer: number; type: string; inFeatures: number; meanAbs: number }[]; grid: LayerGrid };
  seconds: number;
  backend?: string;
}

/** SPT's per-tensor decision: LoRA (matrices), the whole tensor (vectors), some entries, or nothing. */
export type SptDecision = 'lora' | 'full' | 'sparse' | 'frozen';

export interface AllocateJobParams {
  kind: 'allocate';
  /** importance.json or scores.safetensors of an importance folder (both are read). */
  importance: string;
  /** Each "0.5%" (of the model's parameters) or an absolute count. */
  budgets: string[];
  /** Score used as sensitivity (default fisher). */
  method?: ImportanceMethod;
  /** SPT: LoRA rank r (8), α (10: LoRA when selected ≥ r(in+out)/α), β (5: whole vector when selected ≥ dim/β). */
  r?: number;
  alphaRatio?: number;
  beta?: number;
  /** LoRA α of the modules SPT gives LoRA (default 2r). */
  loraAlpha?: number;
  /** `all` (default): every tensor of the transformer blocks; `linear`: weights and biases of linear modules only. */
  candidates?: 'all' | 'linear';
  /** Rank allocation: allowed ranks (default 0,2,4,8,16) and α/r (default 2). */
  ranks?: number[];
  rankScale?: number;
  /** Output JSON file; mask files are written beside it. */
  out: string;
}

export interface SptCell {
  decision: SptDecision;
  /** Entries among the top-k. */
  selected: number;
  /** Trainable parameters it costs. */
  cost: number;
  size: number;
}

export interface SptTensorDecision {
  name: string;
  layer: number;
  type: string;
  shape: number[];
  kind: 'matrix' | 'vector';
  /** The linear module it belongs to, when it does. */
  module?: string;
  selected: number;
  decision: SptDecision;
  cost: number;
}

/**
 * What a run spec's `"allocation"` takes: a LoRA part (PEFT `target_modules` / `r` / `lora_alpha` /
 * `rank_pattern` / `alpha_pattern`, full module paths as keys) and a sparse part (0/1 masks named like
 * the base tensors, for the `sparse` adapter kind). Paths are absolute.
 */
export interface AllocationSpec {
  method: 'spt' | 'rank';
  budget: string;
  /** Trainable parameters the allocation costs. */
  trainableParams: number;
  lora?: { targets: string[]; r: number; alpha: number; rankPattern: Record<string, number>; alphaPattern: Record<string, number>; params: number };
  /** Weights and biases of linear modules (what the `sparse` adapter accepts). */
  sparse?: { mask: string; tensors: number; params: number };
  /** Norm parameters SPT selected (the `sparse` adapter does not take them): their masks in a separate file. */
  norms?: { mask: string; tensors: string[]; params: number };
}

export interface SptBudgetResult {
  budget: string;
  /** Parameter budget. */
  target: number;
  /** Top-k entries taken: the largest k whose cost fits the budget (cost(k + 1) > target). */
  k: number;
  cost: number;
  /** Cost of k + 1 entries (null when k is every candidate entry). */
  nextCost: number | null;
  loraModules: number;
  loraParams: number;
  sparseParams: number;
  vectorParams: number;
  /** Weight matrices: decision, selected entries, cost. */
  grid: LayerGrid<SptCell | null>;
  /** Parameters trained in vectors (biases, norms) per cell. */
  vectorGrid: LayerGrid;
  tensors: SptTensorDecision[];
  allocation: AllocationSpec;
}

export interface RankBudgetResult {
  budget: string;
  target: number;
  params: number;
  modules: { module: string; layer: number; type: string; importance: number; ideal: number; rank: number; params: number }[];
  /** Rank per linear module (null: no linear module of that type). */
  grid: LayerGrid;
  allocation: AllocationSpec;
}

export interface AllocationReport {
  version: 1;
  importance: string;
  /** The run spec of the importance report, when it names one ("Train with this allocation" derives from it). */
  spec?: string;
  method: ImportanceMethod;
  candidates: 'all' | 'linear';
  params: { r: number; alphaRatio: number; beta: number; loraAlpha: number; ranks: number[]; rankScale: number };
  totalParams: number;
  candidateParams: number;
  spt: SptBudgetResult[];
  rank: RankBudgetResult[];
}

export interface LocalizeJobParams {
  kind: 'localize';
  base: string;
  /** Run folders (θ_ft = base with the run's adapter merged) ... */
  runs?: string[];
  /** ... or fully fine-tuned model folders. */
  finetuned?: string[];
  /** JSONL/CSV rows; default: each run's own training data (and its eval split). */
  data?: string;
  /** Validation rows (default: the data's eval file, else a 20% seeded split). */
  eval?: string;
  /** Sparsity levels ρ (fraction of candidate parameters in the base mask), default [1e-4, 1e-3, 1e-2]. */
  sparsity?: number[];
  epochs?: number;
  lr?: number;
  /** Sigmoid bias b (default 10). */
  bias?: number;
  batchSize?: number;
  /** Batches per epoch for the mask gradient (default: the whole training set). */
  batches?: number;
  /** Rows used for training/validation at most (default 256 each). */
  maxRows?: number;
  seed?: number;
  out: string;
}

export interface GraftEval {
  loss: number;
  /** accuracy / exact match, when the data has a task metric */
  metric?: number;
  /** Expected calibration error, 15 equal-width bins of the predicted (max) probability of each label / answer token; NaN (null in JSON) for a regression, which predicts no probability. */
  ece: number;
  /** Label tokens (LM) or rows (classification) evaluated. */
  count: number;
}

export interface GraftLevel {
  sparsity: number;
  /** Mask file (U8 0/1, named like the base tensors). */
  mask: string;
  /** Entries grafted by the rounded best mask; candidate and model parameter counts. */
  grafted: number;
  candidates: number;
  fraction: number;
  fractionOfModel: number;
  /** Entries of the base mask γ (⌊ρN⌋). */
  baseMask: number;
  bestEpoch: number;
  curve: { epoch: number; grafted: number; trainLoss: number; valLoss: number; trainMetric?: number; valMetric?: number }[];
  train: GraftEval;
  validation: GraftEval;
  /** (m_graft − m_base) / (m_ft − m_base) on the validation rows (null when the fine-tune did not change m). */
  recovered: { metric: number | null; loss: number | null };
  recoveredTrain: { metric: number | null; loss: number | null };
  /** Mask density per block (grafted / entries). */
  layerDensity: { layer: number; density: number; grafted: number }[];
  density: LayerGrid;
}

export interface LocalizeRunReport {
  name: string;
  /** Run folder or fine-tuned model folder. */
  source: string;
  metricName?: string;
  trainRows: number;
  validationRows: number;
  /** Non-candidate tensors that differ and are taken from the fine-tune in every graft (a new classifier head). */
  carried: string[];
  base: { train: GraftEval; validation: GraftEval };
  finetuned: { train: GraftEval; validation: GraftEval };
  levels: GraftLevel[];
}

export interface MaskOverlap {
  a: string;
  b: string;
  sparsity?: number;
  jaccard: number;
  perLayer: { layer: number; jaccard: number; a: number; b: number; both: number }[];
  grid: LayerGrid;
}

export interface LocalizeReport {
  version: 1;
  base: string;
  options: { epochs: number; lr: number; bias: number; batchSize: number; seed: number };
  runs: LocalizeRunReport[];
  overlap?: MaskOverlap[];
}

export const MERGE_METHODS = ['breadcrumbs', 'compeft', 'soup-uniform', 'soup-greedy', 'ties', 'dare', 'dare-ties'] as const;
export type MergeMethod = (typeof MERGE_METHODS)[number];

export interface MergeJobParams {
  kind: 'merge';
  base: string;
  /** Run folders (base + merged adapter) or fine-tuned model folders. */
  runs: string[];
  method: MergeMethod;
  /** Per-run weights (default 1 each) and a global scale λ (default 1). */
  weights?: number[];
  lambda?: number;
  /** TIES / DARE: fraction kept (default 0.2 for TIES, 0.5 for DARE); ComPEFT: fraction kept (default 0.1). */
  density?: number;
  /** Breadcrumbs: top β and bottom γ fractions of |τ| masked out per tensor (default 0.01, 0.85). */
  top?: number;
  bottom?: number;
  /** ComPEFT: scale α (default 1). */
  alpha?: number;
  seed?: number;
  /** Data for soup-greedy (required) and for the before/after metric of ComPEFT and the merge. */
  data?: string;
  eval?: string;
  out: string;
}

export interface MergeEval {
  loss: number;
  metric?: number;
}

export interface MergeReport {
  version: 1;
  method: MergeMethod;
  base: string;
  runs: string[];
  options: Record<string, number | string>;
  /** Folder with config.json + model.safetensors. */
  out: string;
  params: number;
  /** Entries where the merged model differs from the base. */
  changed: number;
  perTensor: { name: string; changed: number; numel: number }[];
  compeft?: { run: string; kept: number; numel: number; denseBytes: number; compressedBytes: number; ratio: number; before?: MergeEval; after?: MergeEval }[];
  soup?: { order: string[]; scores: number[]; included: string[]; soupScores: number[] };
  eval?: { base?: MergeEval; runs?: MergeEval[]; merged: MergeEval; metricName?: string };
}

// ---- evaluation of runs on other data -------------------------------------------------------------

/** Scores fine-tuned runs, and their base, on rows they were not trained on (the training loop's loss and metric, plus calibration). */
export interface EvaluateJobParams {
  kind: 'evaluate';
  /** Run folders: each scored as its base model with the run's adapter merged, and as the base alone. */
  runs: string[];
  /** JSONL / CSV rows, read with each run's own data settings (fields, max length, labels). */
  data: string;
  /** Rows scored at most (default: all). */
  maxRows?: number;
  batchSize?: number;
  /** Report JSON file. */
  out: string;
}

export interface EvaluateRunReport {
  name: string;
  /** Run folder. */
  source: string;
  metricName?: string;
  /** The base model (with the run's classification head, for classifiers: the base has none of its own). */
  base: GraftEval;
  finetuned: GraftEval;
}

export interface EvaluateReport {
  version: 1;
  data: string;
  rows: number;
  runs: EvaluateRunReport[];
}

/** One line per run, as the command line and the editor say it: fine-tuned vs base, loss, metric, calibration. */
export function describeEvaluation(r: EvaluateRunReport): string {
  const metric = (e: GraftEval) => (e.metric !== undefined ? `, ${r.metricName ?? 'metric'} ${formatMetricValue(r.metricName, e.metric)}` : '');
  const ece = (e: GraftEval) => (Number.isFinite(e.ece) ? `, ECE ${e.ece.toFixed(3)}` : '');
  return `${r.name}: loss ${r.finetuned.loss.toFixed(4)}${metric(r.finetuned)}${ece(r.finetuned)} (base: loss ${r.base.loss.toFixed(4)}${metric(r.base)})`;
}

// ---- text generation (trying a model) -------------------------------------------------------------

/**
 * Text from a causal language model, or a text classifier's classes for the prompt: a fine-tuned
 * run (its base + adapter), or a model folder (with an adapter).
 */
export interface GenerateJobParams {
  kind: 'generate';
  /** A run folder (its base model and final adapter). */
  run?: string;
  /** A model folder, when there is no run; `adapter`: an adapter folder on it. */
  model?: string;
  adapter?: string;
  prompt: string;
  /** A text classifier trained on sentence pairs (data.textPairField): the second text, paired with `prompt`. */
  pair?: string;
  /**
   * The prompt as one user message through the model's chat template (with the generation prompt).
   * Default: whether the run trained on chat rows (a model folder: no).
   */
  chat?: boolean;
  /** Default 64. */
  maxNewTokens?: number;
  /** 0 (the default): greedy; else sampling at this temperature. */
  temperature?: number;
  /** Nucleus sampling: the smallest set of tokens with this much probability (default 1: all). */
  topP?: number;
  /** Sampling from the k most probable tokens only, before top-p, as transformers' top_k (default 50; 0: all). */
  topK?: number;
  /** transformers' repetition_penalty: tokens already in the sequence (prompt included) score lower; 1 (the default): none. */
  repetitionPenalty?: number;
  seed?: number;
  /** Also the base model's text for the same prompt and seed (a run or an adapter only). */
  compareBase?: boolean;
}

export interface GenerateOutput {
  /** "fine-tuned", "base", or "model". */
  label: string;
  /** The new text only (the prompt not repeated); a text classifier's: the predicted class. */
  text: string;
  /** New tokens (0 for a classifier). */
  tokens: number;
  /** Why it stopped: the end-of-sequence token, or the token limit (absent for a classifier). */
  stop?: 'eos' | 'length';
  /** A text classifier's classes, most probable first. */
  classes?: { name: string; p: number }[];
  /** A regression model's prediction (its one output). */
  value?: number;
}

export interface GenerateResult {
  prompt: string;
  /** The second text of a sentence pair, when given. */
  pair?: string;
  /** The text the model was given (the prompt through the chat template, when chat). */
  input: string;
  chat: boolean;
  outputs: GenerateOutput[];
}
