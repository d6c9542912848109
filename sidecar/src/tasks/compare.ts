/**
 * `peft-lab compare SPEC`: trains each of the spec's `variants` (an adapter plus optional training
 * overrides, over the spec's one model, data and seed) into its own run folder under a compare
 * folder, then writes `compare.json`: per variant the trainable parameters, final train/eval loss
 * and metric, the loss curve, median step time, tokens/s, peak RSS, and forgetting (the loss on
 * `data.heldout` before vs after training).
 *
 * Variants run one after another in this process, so peak RSS is the process's resident set
 * sampled during that variant's steps (it includes what earlier variants left allocated).
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { formatMetricValue, type AdapterSpec, type CompareJobParams, type JobResult, type RunState } from '../../../src/protocol';
import { errorMessage, InputError } from '../errors';
import { CancelledError, type JobContext } from '../jobs/context';
import { loadSpec, variantConfig, type LoadSpecOptions } from '../spec/load';
import { newRunDir, readMetrics, readStatus, writeJsonAtomic } from '../train/run-folder';
import { runTraining, type TrainOutcome } from '../train/trainer';
import { cliTrainContext, initCliBackend } from './train';

export const COMPARE_FILE = 'compare.json';

export interface CompareVariant {
  name: string;
  runDir: string;
  state: RunState;
  adapter: AdapterSpec;
  trainableParams?: number;
  steps?: number;
  finalLoss?: number;
  finalEvalLoss?: number;
  finalMetric?: number;
  metricName?: string;
  curve: { step: number; loss: number; eval_loss?: number }[];
  medianStepMs?: number;
  tokensPerS?: number;
  peakRssMb?: number;
  /** Loss on data.heldout before (base model) and after (with the adapter); null without heldout data. */
  forgetting: { before: number; after: number; delta: number } | null;
  error?: string;
}

export interface CompareResult {
  version: 1;
  spec: string;
  name: string;
  model: string;
  seed: number;
  createdAt: string;
  backend: string;
  variants: CompareVariant[];
}

export function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface CompareOptions extends LoadSpecOptions {
  /** Compare folder (default `<runsDir>/compare-<name>-<time>`); an existing one resumes its variants. */
  outDir?: string;
  ctx: JobContext;
  /** Backend name for the report. */
  backend?: string;
}

async function variantEntry(name: string, runDir: string, adapter: AdapterSpec, out: TrainOutcome | undefined, error?: string): Promise<CompareVariant> {
  const metrics = await readMetrics(runDir);
  const status = await readStatus(runDir);
  const lastEval = [...metrics].reverse().find((r) => r.eval_loss !== undefined);
  const v: CompareVariant = {
    name,
    runDir,
    state: status?.state ?? 'failed',
    adapter,
    curve: metrics.map((r) => ({ step: r.step, loss: r.loss, ...(r.eval_loss !== undefined ? { eval_loss: r.eval_loss } : {}) })),
    forgetting: out?.forgetting ?? null,
  };
  const tp = out?.trainableParams ?? status?.trainableParams;
  if (tp !== undefined) v.trainableParams = tp;
  if (status) v.steps = status.step;
  if (metrics.length) v.finalLoss = metrics.at(-1)!.loss;
  if (lastEval) {
    v.finalEvalLoss = lastEval.eval_loss!;
    if (lastEval.eval_accuracy !== undefined) v.finalMetric = lastEval.eval_accuracy;
  }
  // A variant that failed or was cancelled has no outcome: its status names the metric.
  const metricName = out?.metricName ?? status?.summary?.metricName;
  if (metricName) v.metricName = metricName;
  const med = out ? median(out.stepMs) : undefined;
  if (med !== undefined) v.medianStepMs = Math.round(med * 100) / 100;
  if (out?.tokensPerS !== undefined) v.tokensPerS = out.tokensPerS;
  if (out) v.peakRssMb = out.peakRssMb;
  if (error) v.error = error;
  return v;
}

export async function runCompare(specFile: string, opts: CompareOptions): Promise<{ dir: string; result: CompareResult }> {
  const spec = loadSpec(specFile, opts);
  if (!spec.variants || spec.variants.length === 0) throw new InputError(spec.specFile, 'variants', 'compare needs "variants": a list of { "name", "adapter", ...overrides }');
  const dir = opts.outDir ? resolve(opts.outDir) : newRunDir(spec.runsDir, `compare-${spec.name}`, new Date(), { claim: true });
  await fsp.mkdir(dir, { recursive: true });
  const before = await previousSpeeds(join(dir, COMPARE_FILE));
  const result: CompareResult = {
    version: 1,
    spec: spec.specFile,
    name: spec.name,
    model: spec.model,
    seed: spec.seed,
    createdAt: new Date().toISOString(),
    backend: opts.backend ?? '',
    variants: [],
  };
  const write = () => writeJsonAtomic(join(dir, COMPARE_FILE), result);
  const n = spec.variants.length;
  const overall = overallProgress(n);
  for (const [i, v] of spec.variants.entries()) {
    const cfg = variantConfig(spec, v);
    const runDir = join(dir, v.name);
    const ctx: JobContext = {
      signal: opts.ctx.signal,
      log: opts.ctx.log,
      progress: (p) => opts.ctx.progress({ ...p, ...overall(i, p.done, p.total), message: `[${v.name} ${i + 1}/${n}] ${p.message ?? ''}`.trimEnd() }),
    };
    opts.ctx.log('info', `variant ${i + 1}/${n}: ${v.name} (${v.adapter.kind}) → ${runDir}`);
    try {
      const out = await runTraining(cfg, { runDir, ctx, heldout: true });
      const entry = await variantEntry(v.name, runDir, v.adapter, out);
      // Resumed with nothing left to train: this process timed no step, the earlier one did.
      if (entry.medianStepMs === undefined) Object.assign(entry, before.get(v.name));
      result.variants.push(entry);
    } catch (e) {
      if (e instanceof CancelledError) {
        if (existsSync(runDir)) result.variants.push(await variantEntry(v.name, runDir, v.adapter, undefined));
        await write();
        throw e;
      }
      opts.ctx.log('error', `variant ${v.name} failed: ${errorMessage(e)}`);
      result.variants.push(await variantEntry(v.name, runDir, v.adapter, undefined, errorMessage(e)));
    }
    await write();
  }
  return { dir, result };
}

/** Step time and throughput per variant from an earlier compare.json in the folder (a resumed
 * comparison keeps them for variants it does not train again); empty without a readable one. */
async function previousSpeeds(file: string): Promise<Map<string, Pick<CompareVariant, 'medianStepMs' | 'tokensPerS'>>> {
  const speeds = new Map<string, Pick<CompareVariant, 'medianStepMs' | 'tokensPerS'>>();
  let old: unknown;
  try {
    old = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch {
    return speeds;
  }
  const variants = (old as { variants?: unknown } | null)?.variants;
  for (const v of Array.isArray(variants) ? (variants as Partial<CompareVariant>[]) : []) {
    if (typeof v?.name === 'string' && typeof v.medianStepMs === 'number') speeds.set(v.name, { medianStepMs: v.medianStepMs, ...(typeof v.tokensPerS === 'number' ? { tokensPerS: v.tokensPerS } : {}) });
  }
  return speeds;
}

/**
 * Steps over all variants: the finished variants' totals plus the current one's progress, out of
 * the finished totals plus the current total for it and each variant still to come (an estimate
 * until they start, since variants may override the step count). A variant that ends early (a
 * failure) counts what it did.
 */
export function overallProgress(variants: number): (index: number, done: number, total: number) => { done: number; total: number } {
  let finished = 0;
  let current = -1;
  let last = { done: 0, total: 0 };
  return (index, done, total) => {
    if (index !== current) {
      if (current >= 0) finished += last.done;
      current = index;
    }
    last = { done, total };
    return { done: finished + done, total: finished + total * (variants - index) };
  };
}

/** The `compare` sidecar job: runCompare with the job's context; the variants' states in the result. */
export async function runCompareJob(p: CompareJobParams, ctx: JobContext): Promise<JobResult & { kind: 'compare' }> {
  const { dir, result } = await runCompare(p.spec, {
    ctx,
    backend: tf.getBackend(),
    ...(p.outDir ? { outDir: p.outDir } : {}),
    ...(p.workspaceRoot ? { workspaceRoot: p.workspaceRoot } : {}),
  });
  ctx.log('info', `compared ${result.variants.length} variants → ${join(dir, COMPARE_FILE)}`);
  return { kind: 'compare', compareFile: join(dir, COMPARE_FILE), variants: result.variants.map((v) => ({ name: v.name, state: v.state, ...(v.error ? { error: v.error } : {}) })) };
}

function formatTable(r: CompareResult): string {
  const head = ['variant', 'kind', 'trainable', 'loss', 'eval', 'metric', 'step ms', 'tok/s', 'rss MB', 'forget Δ'];
  const rows = r.variants.map((v) => [
    v.name,
    v.adapter.kind,
    String(v.trainableParams ?? '-'),
    v.finalLoss?.toFixed(4) ?? '-',
    v.finalEvalLoss?.toFixed(4) ?? '-',
    v.finalMetric !== undefined ? formatMetricValue(v.metricName, v.finalMetric) : '-',
    v.medianStepMs?.toFixed(1) ?? '-',
    String(v.tokensPerS ?? '-'),
    String(v.peakRssMb ?? '-'),
    v.forgetting ? (v.forgetting.delta >= 0 ? '+' : '') + v.forgetting.delta.toFixed(4) : v.error ? `failed: ${v.error.slice(0, 40)}` : '-',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  return [head, ...rows].map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n');
}

/** `peft-lab compare SPEC [--out DIR] [--workspace DIR]` */
export async function compareCommand(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<void> {
  const specFile = positionals[0];
  if (!specFile) throw new InputError('', '', 'a spec file (*.peft.json) with "variants" is required');
  const verbose = values.verbose === true;
  const spec = loadSpec(specFile, typeof values.workspace === 'string' ? { workspaceRoot: values.workspace } : {});
  await initCliBackend(values.backend, spec.backend, verbose);
  const { ctx, close } = cliTrainContext(verbose);
  const logCtx: JobContext = { ...ctx, log: (level, m) => (level === 'info' ? process.stderr.write(`${m}\n`) : ctx.log(level, m)) };
  try {
    const { dir, result } = await runCompare(specFile, {
      ctx: logCtx,
      backend: tf.getBackend(),
      ...(typeof values.out === 'string' ? { outDir: values.out } : {}),
      ...(typeof values.workspace === 'string' ? { workspaceRoot: values.workspace } : {}),
    });
    close();
    process.stderr.write(`${formatTable(result)}\n`);
    process.stdout.write(`${join(dir, COMPARE_FILE)}\n`);
  } catch (e) {
    close();
    if (e instanceof CancelledError) throw new Error('cancelled; the finished variants are in compare.json');
    throw e;
  }
}
