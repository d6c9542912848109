/** Run specs (`*.peft.json`) as the sidecar uses them: as written (defaults filled) and resolved. */
import type { AdapterSpec, AllocationSpec, BackendPreference } from '../../../src/protocol';
import type { IstOptions } from '../train/ist';

export const DATA_FORMATS = ['jsonl', 'csv', 'parquet', 'images'] as const;
export type DataFormat = (typeof DATA_FORMATS)[number];
export const SCHEDULES = ['cosine', 'linear', 'constant'] as const;
export type ScheduleType = (typeof SCHEDULES)[number];

export interface DataSpec {
  format?: DataFormat;
  train: string;
  eval?: string;
  evalSplit?: number;
  maxLength?: number;
  textField: string;
  /** Sequence classifiers: a second text per row, paired with the first as the tokenizer pairs them (GLUE's sentence2, hypothesis, question2). */
  textPairField?: string;
  promptField: string;
  /** A prompt made from several fields (`{field}` each; `{{`, `}}` for braces), in place of `promptField`. */
  promptTemplate?: string;
  completionField: string;
  /** Chat rows' field (a list of {role, content}); absent in run folders written before chat rows: "messages". */
  messagesField?: string;
  labelField: string;
  heldout?: string;
}

export interface OptimizerSpec {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  /** LoRA+: lora_B matrices and 1-D tensors learn at lr × this ratio. */
  loraPlusRatio?: number;
}

export interface ScheduleSpec {
  type: ScheduleType;
  warmupSteps?: number;
  warmupRatio?: number;
}

export interface EarlyStoppingSpec {
  patience: number;
  minDelta: number;
}

/** What a variant of a comparison may change. */
export interface TrainingOverrides {
  optimizer?: OptimizerSpec;
  schedule?: ScheduleSpec;
  batchSize?: number;
  gradientAccumulation?: number;
  maxGradNorm?: number;
  steps?: number;
  epochs?: number;
}

export interface VariantSpec extends TrainingOverrides {
  name: string;
  description?: string;
  adapter: AdapterSpec;
}

/** A spec as written, with the schema's defaults filled in (paths still as written). */
export interface RunSpec {
  name: string;
  description?: string;
  model: string;
  /** Classifiers: the head's outputs in place of config.json's (transformers' num_labels). */
  numLabels?: number;
  /** Classifiers: the loss in place of config.json's problem_type. */
  problemType?: 'single_label_classification' | 'regression' | 'multi_label_classification';
  data: DataSpec;
  adapter?: AdapterSpec;
  optimizer: OptimizerSpec;
  schedule: ScheduleSpec;
  batchSize: number;
  gradientAccumulation: number;
  maxGradNorm: number;
  steps?: number;
  epochs?: number;
  logEvery: number;
  evalEvery: number;
  checkpointEvery: number;
  keepCheckpoints: number;
  seed: number;
  backend: BackendPreference;
  earlyStopping?: EarlyStoppingSpec;
  runsDir: string;
  memoryLimitMb?: number;
  variants?: VariantSpec[];
  /** A budget from `peft-lab allocate`: a JSON file (relative to the spec) or the entry inline; it configures the adapter. */
  allocation?: string | AllocationSpec;
  /** IST (importance-aware sparse tuning), defaults filled. */
  ist?: IstOptions;
}

/** A loaded spec: every path absolute and checked, the data format decided. */
export interface ResolvedSpec extends RunSpec {
  /** Absolute path of the spec file. */
  specFile: string;
  workspaceRoot: string;
  /** Absolute model folder (a bundled id resolved to the extension's media/models). */
  modelDir: string;
  data: DataSpec & { format: DataFormat };
  /** Notes from loading (e.g. an allocation part that will not train); the trainer logs them. */
  warnings?: string[];
}

/**
 * One run's configuration, as written to `<run folder>/spec.json`: a resolved spec with exactly one
 * adapter (a variant's overrides applied) and no variants. A resume reads it back from there.
 */
export interface RunConfig extends Omit<ResolvedSpec, 'variants' | 'adapter'> {
  version: 1;
  adapter: AdapterSpec;
  /** The variant's name when the run is part of a comparison. */
  variant?: string;
}
