/**
 * Host ↔ webview messages of the chart panels, as one mapping per direction (message name →
 * payload type), and the panels' input view models. Plain JSON only (structured-clone safe).
 *
 * Every message is an envelope `{ type, payload }`. Each payload type has a runtime schema
 * below, typed so that the compiler checks the schema against the declared payload type; both
 * sides validate what they receive with `validateMessage` and drop (and log) what does not match.
 *
 * VS Code serialises messages as JSON, which has no NaN or ±Infinity (they arrive as null): so a
 * number here is finite, and a value that may be missing or non-finite (a diverged loss) is
 * declared `number | null` and sent as null. The host validates before sending, with the schemas
 * the webview validates with, so what one side sends the other accepts.
 *
 * No `vscode`, no DOM, no Node imports: compiled into the extension and into every webview bundle.
 */
import { ADAPTER_KINDS, RUN_STATES, type RunStatus } from './index';

// ---- panels ---------------------------------------------------------------------------------------

/** Panel kinds; each is a bundle `dist/webviews/<kind>.js` (+ `.css`) and a webview view type `peftLab.<kind>`. */
export const PANEL_KINDS = ['dashboard', 'importance', 'budget', 'comparison', 'localization', 'evaluation'] as const;
export type PanelKind = (typeof PANEL_KINDS)[number];
export const panelViewType = (kind: PanelKind): string => `peftLab.${kind}`;

/**
 * What a webview keeps with `setState` and the host gets back in `deserializeWebviewPanel`:
 * the input files (run folders, JSON files) to re-read, and the panel's own UI settings, which
 * only the webview interprets (it merges them over its defaults).
 */
export interface PanelState {
  sources: string[];
  ui?: Record<string, unknown>;
}

// ---- dashboard ------------------------------------------------------------------------------------

/**
 * One line of `metrics.jsonl` (a MetricRecord) as the dashboard gets it: a value that is not a
 * finite number (written as null for a NaN, missing from the line, or out of range) is null.
 */
export interface DashboardRecord {
  step: number;
  loss: number | null;
  lr: number | null;
  tokens_per_s: number | null;
  elapsed_s: number | null;
  eval_loss?: number | null;
  eval_accuracy?: number | null;
  [extra: string]: number | null | undefined;
}

export interface DashboardRun {
  /** Absolute run folder path: the run's identity in every dashboard message. */
  id: string;
  /** Short name for legends (the folder name). */
  label: string;
  /** `status.json`, when readable. */
  status?: RunStatus;
  /** Every record of `metrics.jsonl` so far. */
  records: DashboardRecord[];
}

// ---- layer importance -----------------------------------------------------------------------------

export interface ImportanceMethodView {
  /** `fisher`, `grad-norm`, `taylor`, `ist`, or whatever the file names. */
  id: string;
  label: string;
  /** scores[layer][module]; null where that layer has no such module. */
  scores: (number | null)[][];
  /** Scores over training (IST), oldest first; `scores` is then the last frame. */
  timeline?: { step: number; scores: (number | null)[][] }[];
}
export interface ImportanceView {
  /** The importance file shown. */
  source: string;
  model?: string;
  /** Row labels: one per layer (index order). */
  layers: string[];
  /** Column labels: module types (q_proj, c_attn, mlp.c_fc, ...). */
  modules: string[];
  methods: ImportanceMethodView[];
  /** Free-text notes from the file (data rows used, task), shown under the title. */
  notes?: string[];
}

// ---- parameter budget -----------------------------------------------------------------------------

export interface BudgetLayerView {
  /** Layer label (module path or layer index). */
  name: string;
  /** LoRA parameters (r × (in + out) summed over the layer's targets). */
  lora: number;
  /** Sparse update entries. */
  sparse: number;
  /** Parameters left frozen. */
  frozen: number;
  /** Rank per module, for the tooltip. */
  ranks?: Record<string, number>;
}
export interface BudgetOptionView {
  /** Label for the selector, e.g. "0.5% · 4.3k params". */
  label: string;
  /** The budget in trainable parameters. */
  budget: number;
  /** Key passed back in `budget/train` (the allocation's id or index in the file). */
  key: string;
  layers: BudgetLayerView[];
}
export interface BudgetView {
  source: string;
  /** The spec the allocation was computed for, when the file names it ("Train with this allocation" needs it). */
  spec?: string;
  model?: string;
  method?: string;
  /** Parameters of the whole model. */
  totalParams?: number;
  options: BudgetOptionView[];
}

// ---- adapter comparison ---------------------------------------------------------------------------

export interface ComparisonRowView {
  name: string;
  kind: string;
  state: string;
  runDir: string;
  trainableParams?: number;
  finalLoss?: number;
  finalEvalLoss?: number;
  finalMetric?: number;
  metricName?: string;
  /** Held-out loss after minus before (positive: forgot). */
  forgetting?: number;
  tokensPerS?: number;
  peakRssMb?: number;
  medianStepMs?: number;
  error?: string;
  /** Loss per logged step; null where it was not finite (a diverged run), drawn as a gap. */
  curve: { step: number; loss: number | null; eval_loss?: number | null }[];
}
export interface ComparisonView {
  source: string;
  name: string;
  model: string;
  backend?: string;
  createdAt?: string;
  rows: ComparisonRowView[];
}

// ---- skill localization ---------------------------------------------------------------------------

export interface LocalizationLevelView {
  /** Sparsity ρ of the base mask (fraction of candidate parameters). */
  sparsity: number;
  /** Fraction of the model's parameters grafted (null: the report did not say). */
  fraction: number | null;
  grafted: number;
  /** Fraction of the fine-tuning gain the graft recovers on validation rows: by the task metric and by the loss (null when undefined). */
  recoveredMetric: number | null;
  recoveredLoss: number | null;
  /** Mask density (grafted / entries) per transformer block. */
  density: { layer: number; density: number }[];
}
export interface LocalizationTaskView {
  name: string;
  /** Run folder or fine-tuned model folder. */
  source: string;
  metricName?: string;
  levels: LocalizationLevelView[];
}
export interface LocalizationView {
  source: string;
  base?: string;
  tasks: LocalizationTaskView[];
  /** Mask overlap (Jaccard) between tasks, one matrix per sparsity level (null: the file did not say). */
  overlap: { sparsity: number | null; tasks: string[]; matrix: (number | null)[][] }[];
}

/** An evaluation report (`peft-lab evaluate`, "Evaluate on Data…"): each run and its base on one data file. */
export interface EvaluationScoreView {
  /** null where the report had none (a diverged run). */
  loss: number | null;
  metric?: number;
  ece: number | null;
}
export interface EvaluationRunView {
  name: string;
  source: string;
  metricName?: string;
  base: EvaluationScoreView;
  finetuned: EvaluationScoreView;
}
export interface EvaluationView {
  source: string;
  data: string;
  rows: number;
  runs: EvaluationRunView[];
}

// ---- messages -------------------------------------------------------------------------------------

/** host → webview. */
export interface HostToWebview {
  /** The dashboard's runs, replacing whatever it showed (first load, reload, a run folder truncated). */
  'dashboard/runs': { runs: DashboardRun[] };
  /** Records appended to one run's metrics.jsonl since the last message. */
  'dashboard/append': { runId: string; records: DashboardRecord[] };
  /** A run's status.json changed. */
  'dashboard/status': { runId: string; status: RunStatus };
  'importance/data': ImportanceView;
  'budget/data': BudgetView;
  /** Answer to `budget/train`. */
  'budget/trained': { ok: boolean; message: string; specPath?: string };
  /** Answer to `importance/allocate` (ok: the budget panel opened on the new allocation). */
  'importance/allocated': { ok: boolean; message: string };
  'comparison/data': ComparisonView;
  'localization/data': LocalizationView;
  'evaluation/data': EvaluationView;
  /**
   * The input could not be read or parsed: shown in place of the charts. `sources`: the panel's
   * inputs, kept in its state like data's, so that after a reload it opens on the same file.
   */
  'panel/error': { message: string; sources?: string[] };
}

/** webview → host. */
export interface WebviewToHost {
  /** The script ran and listens: the host sends (or re-sends) the data. */
  'panel/ready': { kind: PanelKind };
  /** Something went wrong in the webview (dropped message, script error): goes to the output channel. */
  'panel/log': { level: 'info' | 'warn' | 'error'; message: string };
  /** Ask the host to pick more run folders to overlay. */
  'dashboard/addRuns': Record<string, never>;
  'dashboard/removeRun': { runId: string };
  /** "Train with this allocation" for the option with this key. */
  'budget/train': { key: string };
  /** "Allocate a parameter budget…" from the scores of this method (the one the heatmap shows). */
  'importance/allocate': { method: string };
  /** Open a file or folder the panel names (a run folder, a spec). */
  'panel/open': { path: string };
}

export type MessageOf<M> = { [K in keyof M & string]: { type: K; payload: M[K] } }[keyof M & string];
export type HostMessage = MessageOf<HostToWebview>;
export type WebviewMessage = MessageOf<WebviewToHost>;

// ---- runtime schemas ------------------------------------------------------------------------------

/** A runtime check of an unknown value; `_t` is a phantom carrying the type it proves. */
export interface Schema<T> {
  /** undefined when `v` conforms, else one line naming the place and the problem. */
  readonly check: (v: unknown, path: string) => string | undefined;
  readonly optional?: true;
  readonly _t?: () => T;
}
export type Infer<S> = S extends Schema<infer T> ? T : never;
type Shape = Record<string, Schema<unknown>>;
type OptionalKeys<S extends Shape> = { [K in keyof S]: S[K] extends { optional: true } ? K : never }[keyof S];
type Flat<T> = { [K in keyof T]: T[K] };
type ObjectOf<S extends Shape> = Flat<{ [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> }>;

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);
const at = (path: string, key: string | number): string => (typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key);

export const s = {
  string: { check: (v, p) => (typeof v === 'string' ? undefined : `${p || 'value'}: expected a string, got ${describe(v)}`) } as Schema<string>,
  /** A finite number: JSON carries nothing else (NaN and ±Infinity become null), so `s.nullable(s.number)` where a value may be non-finite. */
  number: {
    check: (v, p) => (typeof v !== 'number' ? `${p || 'value'}: expected a number, got ${describe(v)}` : Number.isFinite(v) ? undefined : `${p || 'value'}: expected a finite number (JSON has no ${String(v)}), got ${String(v)}`),
  } as Schema<number>,
  finite: { check: (v, p) => (typeof v === 'number' && Number.isFinite(v) ? undefined : `${p || 'value'}: expected a finite number, got ${String(v)}`) } as Schema<number>,
  boolean: { check: (v, p) => (typeof v === 'boolean' ? undefined : `${p || 'value'}: expected a boolean, got ${describe(v)}`) } as Schema<boolean>,
  /** Any plain object (its contents are the receiver's business). */
  anyObject: {
    check: (v, p) => (typeof v === 'object' && v !== null && !Array.isArray(v) ? undefined : `${p || 'value'}: expected an object, got ${describe(v)}`),
  } as Schema<Record<string, unknown>>,
  literal<const L extends string | number | boolean>(...values: L[]): Schema<L> {
    return { check: (v, p) => ((values as unknown[]).includes(v) ? undefined : `${p || 'value'}: expected ${values.map((x) => JSON.stringify(x)).join(' | ')}, got ${JSON.stringify(v) ?? 'undefined'}`) };
  },
  nullable<T>(inner: Schema<T>): Schema<T | null> {
    return { check: (v, p) => (v === null ? undefined : inner.check(v, p)) };
  },
  optional<T>(inner: Schema<T>): Schema<T> & { optional: true } {
    return { check: (v, p) => (v === undefined ? undefined : inner.check(v, p)), optional: true };
  },
  array<T>(item: Schema<T>, maxLength = 1_000_000): Schema<T[]> {
    return {
      check: (v, p) => {
        if (!Array.isArray(v)) return `${p || 'value'}: expected an array, got ${describe(v)}`;
        if (v.length > maxLength) return `${p || 'value'}: more than ${maxLength} items`;
        for (let i = 0; i < v.length; i++) {
          const problem = item.check(v[i], at(p, i));
          if (problem) return problem;
        }
        return undefined;
      },
    };
  },
  /** A plain object with exactly these keys (optional ones may be absent); unknown keys are refused. */
  object<S extends Shape>(shape: S): Schema<ObjectOf<S>> {
    return {
      check: (v, p) => {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) return `${p || 'value'}: expected an object, got ${describe(v)}`;
        const o = v as Record<string, unknown>;
        for (const key of Object.keys(o)) if (!(key in shape)) return `${at(p, key)}: unexpected key`;
        for (const [key, sub] of Object.entries(shape)) {
          if (o[key] === undefined && !sub.optional) return `${at(p, key)}: missing`;
          const problem = sub.check(o[key], at(p, key));
          if (problem) return problem;
        }
        return undefined;
      },
    };
  },
  /** An object whose listed keys follow `shape` and whose other keys all follow `rest`. */
  record<S extends Shape, R>(shape: S, rest: Schema<R>): Schema<ObjectOf<S> & Record<string, R | Infer<S[keyof S]>>> {
    return {
      check: (v, p) => {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) return `${p || 'value'}: expected an object, got ${describe(v)}`;
        const o = v as Record<string, unknown>;
        for (const [key, sub] of Object.entries(shape)) {
          if (o[key] === undefined && !sub.optional) return `${at(p, key)}: missing`;
          const problem = sub.check(o[key], at(p, key));
          if (problem) return problem;
        }
        for (const [key, value] of Object.entries(o)) {
          if (key in shape) continue;
          const problem = rest.check(value, at(p, key));
          if (problem) return problem;
        }
        return undefined;
      },
    };
  },
} satisfies Record<string, unknown>;

const grid = s.array(s.array(s.nullable(s.number)));

const maybe = s.nullable(s.number);

export const dashboardRecordSchema: Schema<DashboardRecord> = s.record({ step: s.number, loss: maybe, lr: maybe, tokens_per_s: maybe, elapsed_s: maybe }, s.optional(maybe));

export const runStatusSchema: Schema<RunStatus> = s.object({
  version: s.literal(1),
  state: s.literal(...RUN_STATES),
  spec: s.string,
  name: s.string,
  adapter: s.literal(...ADAPTER_KINDS),
  step: s.number,
  totalSteps: s.number,
  startedAt: s.string,
  updatedAt: s.string,
  pid: s.optional(s.number),
  error: s.optional(s.string),
  lastCheckpoint: s.optional(s.string),
  trainableParams: s.optional(s.number),
  backend: s.optional(s.string),
  summary: s.optional(
    s.object({
      loss: s.optional(s.number),
      evalLoss: s.optional(s.number),
      evalMetric: s.optional(s.number),
      metricName: s.optional(s.string),
      tokensPerS: s.optional(s.number),
    }),
  ),
});

export const dashboardRunSchema: Schema<DashboardRun> = s.object({
  id: s.string,
  label: s.string,
  status: s.optional(runStatusSchema),
  records: s.array(dashboardRecordSchema),
});

export const importanceViewSchema: Schema<ImportanceView> = s.object({
  source: s.string,
  model: s.optional(s.string),
  layers: s.array(s.string),
  modules: s.array(s.string),
  methods: s.array(
    s.object({
      id: s.string,
      label: s.string,
      scores: grid,
      timeline: s.optional(s.array(s.object({ step: s.number, scores: grid }))),
    }),
  ),
  notes: s.optional(s.array(s.string)),
});

export const budgetViewSchema: Schema<BudgetView> = s.object({
  source: s.string,
  spec: s.optional(s.string),
  model: s.optional(s.string),
  method: s.optional(s.string),
  totalParams: s.optional(s.number),
  options: s.array(
    s.object({
      label: s.string,
      budget: s.number,
      key: s.string,
      layers: s.array(
        s.object({
          name: s.string,
          lora: s.number,
          sparse: s.number,
          frozen: s.number,
          ranks: s.optional(s.record({}, s.number)),
        }),
      ),
    }),
  ),
});

export const comparisonViewSchema: Schema<ComparisonView> = s.object({
  source: s.string,
  name: s.string,
  model: s.string,
  backend: s.optional(s.string),
  createdAt: s.optional(s.string),
  rows: s.array(
    s.object({
      name: s.string,
      kind: s.string,
      state: s.string,
      runDir: s.string,
      trainableParams: s.optional(s.number),
      finalLoss: s.optional(s.number),
      finalEvalLoss: s.optional(s.number),
      finalMetric: s.optional(s.number),
      metricName: s.optional(s.string),
      forgetting: s.optional(s.number),
      tokensPerS: s.optional(s.number),
      peakRssMb: s.optional(s.number),
      medianStepMs: s.optional(s.number),
      error: s.optional(s.string),
      curve: s.array(s.object({ step: s.number, loss: maybe, eval_loss: s.optional(maybe) })),
    }),
  ),
});

export const localizationViewSchema: Schema<LocalizationView> = s.object({
  source: s.string,
  base: s.optional(s.string),
  tasks: s.array(
    s.object({
      name: s.string,
      source: s.string,
      metricName: s.optional(s.string),
      levels: s.array(
        s.object({
          sparsity: s.number,
          fraction: maybe,
          grafted: s.number,
          recoveredMetric: s.nullable(s.number),
          recoveredLoss: s.nullable(s.number),
          density: s.array(s.object({ layer: s.number, density: s.number })),
        }),
      ),
    }),
  ),
  overlap: s.array(s.object({ sparsity: s.nullable(s.number), tasks: s.array(s.string), matrix: grid })),
});

const evaluationScore = s.object({ loss: maybe, metric: s.optional(s.number), ece: maybe });
export const evaluationViewSchema: Schema<EvaluationView> = s.object({
  source: s.string,
  data: s.string,
  rows: s.number,
  runs: s.array(s.object({ name: s.string, source: s.string, metricName: s.optional(s.string), base: evaluationScore, finetuned: evaluationScore })),
});

export const panelStateSchema: Schema<PanelState> = s.object({
  sources: s.array(s.string, 64),
  ui: s.optional(s.anyObject),
});

export const HOST_TO_WEBVIEW: { readonly [K in keyof HostToWebview]: Schema<HostToWebview[K]> } = {
  'dashboard/runs': s.object({ runs: s.array(dashboardRunSchema, 64) }),
  'dashboard/append': s.object({ runId: s.string, records: s.array(dashboardRecordSchema) }),
  'dashboard/status': s.object({ runId: s.string, status: runStatusSchema }),
  'importance/data': importanceViewSchema,
  'budget/data': budgetViewSchema,
  'budget/trained': s.object({ ok: s.boolean, message: s.string, specPath: s.optional(s.string) }),
  'importance/allocated': s.object({ ok: s.boolean, message: s.string }),
  'comparison/data': comparisonViewSchema,
  'localization/data': localizationViewSchema,
  'evaluation/data': evaluationViewSchema,
  'panel/error': s.object({ message: s.string, sources: s.optional(s.array(s.string, 64)) }),
};

export const WEBVIEW_TO_HOST: { readonly [K in keyof WebviewToHost]: Schema<WebviewToHost[K]> } = {
  'panel/ready': s.object({ kind: s.literal(...PANEL_KINDS) }),
  'panel/log': s.object({ level: s.literal('info', 'warn', 'error'), message: s.string }),
  'dashboard/addRuns': s.object({}) as Schema<Record<string, never>>,
  'dashboard/removeRun': s.object({ runId: s.string }),
  'budget/train': s.object({ key: s.string }),
  'importance/allocate': s.object({ method: s.string }),
  'panel/open': s.object({ path: s.string }),
};

export type Validated<M> = { ok: true; message: MessageOf<M> } | { ok: false; problem: string };

/**
 * Checks an envelope against a direction's schemas (`HOST_TO_WEBVIEW` in the webview,
 * `WEBVIEW_TO_HOST` in the host). Never throws.
 */
export function validateMessage<M>(schemas: { readonly [K in keyof M]: Schema<M[K]> }, v: unknown): Validated<M> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, problem: `message: expected an object, got ${describe(v)}` };
  const { type, payload, ...rest } = v as { type?: unknown; payload?: unknown };
  const extra = Object.keys(rest);
  if (extra.length) return { ok: false, problem: `message: unexpected key ${extra[0]}` };
  if (typeof type !== 'string' || !Object.prototype.hasOwnProperty.call(schemas, type)) return { ok: false, problem: `message: unknown type ${JSON.stringify(type) ?? 'undefined'}` };
  const schema = (schemas as Record<string, Schema<unknown>>)[type]!;
  const problem = schema.check(payload, `${type}.payload`);
  if (problem) return { ok: false, problem };
  return { ok: true, message: { type, payload } as MessageOf<M> };
}
