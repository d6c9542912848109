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

export const JOB_KINDS = ['forward', 'grads', 'inspect', 'selftest', 'train'] as const;
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
}
/** Fine-tune from a spec file into a run folder; `resume` continues the run folder's last checkpoint. */
export interface TrainJobParams {
  kind: 'train';
  /** Path of the `*.peft.json` spec. */
  spec: string;
  /** Run folder to write (default: a new folder under the runs folder); with `resume`, the folder to continue. */
  runDir?: string;
  resume?: boolean;
}
export type JobParams = ForwardJobParams | GradsJobParams | InspectJobParams | SelftestJobParams | TrainJobParams;

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
}
export const JobProgressNote = notification<JobProgress>('peftLab/job/progress');

/** sidecar → extension: a job ended. Exactly one per started job. */
export type JobEnd =
  | { id: string; state: 'done'; result: JobResult }
  | { id: string; state: 'failed'; error: string }
  | { id: string; state: 'cancelled' };
export const JobEndNote = notification<JobEnd>('peftLab/job/end');

export interface InspectResult {
  architecture: string;
  modelType: string;
  parameters: number;
  byModule: Record<string, number>;
  dtypes: Record<string, number>;
  files: { name: string; bytes: number }[];
}
export type JobResult =
  | { kind: 'forward'; out: string; loss?: number }
  | { kind: 'grads'; out: string; loss: number; tensors: number }
  | { kind: 'inspect'; inspect: InspectResult }
  | { kind: 'selftest'; steps: number; losses: number[] }
  | { kind: 'train'; runDir: string; status: RunStatus };

/** sidecar → extension: a log line for the output channel (stdout is the RPC channel). */
export interface LogMessage {
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
}
export const LogNote = notification<LogMessage>('peftLab/log');

// ---- run specs (`*.peft.json`) ---------------------------------------------------------------

export const ADAPTER_KINDS = ['lora', 'dora', 'ia3', 'ssf', 'bottleneck', 'bitfit', 'ln-tuning', 'loldu', 'svfit', 'full', 'sparse'] as const;
export type AdapterKind = (typeof ADAPTER_KINDS)[number];
export const LORA_INITS = ['default', 'gaussian', 'pissa', 'olora', 'corda-ipm', 'corda-kpm', 'lora-ga'] as const;
export type LoraInit = (typeof LORA_INITS)[number];

/** The adapter part of a run spec. Options a kind does not use are rejected by validation. */
export interface AdapterSpec {
  kind: AdapterKind;
  /** Module short names or full module paths (PEFT's `target_modules`); defaults per architecture. */
  targets?: string[];
  /** LoRA family */
  r?: number;
  alpha?: number;
  dropout?: number;
  rslora?: boolean;
  bias?: 'none' | 'all' | 'lora_only';
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
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
  /** Final (or latest) figures for the runs view's description. */
  summary?: { loss?: number; evalLoss?: number; evalMetric?: number; metricName?: string; tokensPerS?: number };
}

/** One line of `<run folder>/metrics.jsonl`, appended and flushed at every logging step. */
export interface MetricRecord {
  step: number;
  loss: number;
  lr: number;
  tokens_per_s: number;
  elapsed_s: number;
  eval_loss?: number;
  /** Task metric when evaluated (accuracy for classification and exact-match tasks). */
  eval_accuracy?: number;
  /** Any further scalars (e.g. IST scores, grad norm). */
  [extra: string]: number | undefined;
}
