/**
 * The training loop behind `peft-lab train`, `peft-lab resume`, `compare` and the 'train' job.
 *
 * Determinism: data order comes from a seeded mulberry32 stream (one permutation per epoch),
 * adapter init and dropout are seeded from the run seed and the step, and nothing else is random.
 * A checkpoint holds everything the next step depends on (trainable tensors, AdamW moments and
 * step, residual base weights, the data-order RNG state, the loss window, early-stopping state),
 * so resuming from it gives results bitwise identical to an uninterrupted run on the same backend.
 *
 * Per step: gradients over `gradientAccumulation` micro-batches (averaged), a finite-loss check,
 * global-norm clipping, the scheduled learning rate, AdamW; then (at their intervals) a metrics
 * record, evaluation, early stopping, a checkpoint; progress; a yield to the event loop.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { formatMetricValue, type MetricRecord, type RunStatus } from '../../../src/protocol';
import { disposeTrainBatch, makeBatch, type BatchOptions } from '../data/batch';
import { loadDataFiles, loadHeldout, modelDataInfo, type Example, type LoadedData } from '../data/dataset';
import { loadTokenizer, type DataTokenizer } from '../data/tokenizer';
import { currentBackend } from '../backend';
import { errorMessage, InputError } from '../errors';
import { numel, writeSafetensors, type HostTensor } from '../io/safetensors';
import { CheckpointReader } from '../io/checkpoint';
import { fromTf } from '../io/tensors';
import { CancelledError, yieldToEventLoop, type JobContext } from '../jobs/context';
import { Model } from '../models/model';
import { baseModelName } from '../spec/load';
import type { RunConfig } from '../spec/types';
import { isEncoder } from '../models/config';
import { headOptions } from '../tasks/base-options';
import { createRunAdapter, saveFinalAdapter, type RunAdapter } from './adapter-bridge';
import { AdamW, type AdamWState } from './adamw';
import { listCheckpoints, readCheckpoint, restoreTensor, writeCheckpoint, type TrainerState } from './checkpoint';
import { evaluate } from './evaluate';
import { describeEstimate, estimateMemory, memoryLimitFor } from './memory';
import { deriveSeed, Rng } from './rng';
import { acquireRunLock } from './run-lock';
import { CHECKPOINTS_DIR, MetricsWriter, readRunConfig, readStatus, SPEC_FILE, truncateMetrics, writeJsonAtomic, writeStatus, ADAPTER_DIR } from './run-folder';
import { lrAt } from './schedule';
import { Ist, istMetricFields, istProbeUpdate, istStepNames, writeIstReports, type IstState } from './ist';

/** Reference logits of the final adapter on a few rows (see writeAdapterCheck). */
export const ADAPTER_CHECK_FILE = 'adapter_check.safetensors';
/** Logits that file holds at most (8 MiB of float32; a tiny model's 4 rows are far below). */
export const ADAPTER_CHECK_LOGITS = 1 << 21;
/** Positions a shortened row keeps at least: the check should still cover attention across tokens. */
const ADAPTER_CHECK_MIN_TOKENS = 8;

/**
 * The rows adapter_check.safetensors holds: all of them, or, for a causal LM whose logits would pass
 * `limit` (4 × 512 positions of Qwen's 151,936-token vocabulary are 1.2 GB), the first positions
 * of each, then fewer rows. The logits are computed on what is kept, so the check stays exact.
 */
export function adapterCheckRows(rows: readonly Example[], vocab: number, limit = ADAPTER_CHECK_LOGITS): Example[] {
  const seq = Math.max(0, ...rows.map((e) => (e.kind === 'image' ? 0 : e.ids.length)));
  if (rows[0]?.kind !== 'lm' || rows.length * seq * vocab <= limit) return [...rows];
  const tokens = Math.min(seq, Math.max(ADAPTER_CHECK_MIN_TOKENS, Math.floor(limit / (rows.length * vocab))));
  const keep = Math.min(rows.length, Math.max(1, Math.floor(limit / (tokens * vocab))));
  return rows.slice(0, keep).map((e) => (e.kind === 'lm' ? { ...e, ids: e.ids.subarray(0, tokens), labels: e.labels.subarray(0, tokens) } : e));
}

export interface TrainRunOptions {
  runDir: string;
  ctx: JobContext;
  /** Measure the loss on `data.heldout` before and after training (forgetting; causal LMs). */
  heldout?: boolean;
  /** Test hook, called after each completed step (after its record, eval and checkpoint). */
  afterStep?: (step: number) => void | Promise<void>;
}

export interface TrainOutcome {
  runDir: string;
  status: RunStatus;
  trainableParams: number;
  metricName?: string;
  /** Wall milliseconds of each training step run in this session (compute only: no eval or checkpoint). */
  stepMs: number[];
  /** Highest resident set size sampled at each step of this session. */
  peakRssMb: number;
  /** Tokens per second over this session's training steps. */
  tokensPerS?: number;
  /** Loss on the held-out text before (base model) and after (with the adapter) training. */
  forgetting?: { before: number; after: number; delta: number };
  memory?: ReturnType<typeof estimateMemory>;
}

/** Steps the progress ETA averages over. */
const ETA_WINDOW = 20;

/** Seconds per step over timestamped marks (oldest first), the first step's warm-up left out once there are more. */
export function secondsPerStep(marks: readonly { t: number; step: number }[]): number {
  const from = marks.length > 2 ? marks[1]! : marks[0]!;
  const last = marks[marks.length - 1]!;
  return (last.t - from.t) / 1000 / Math.max(1, last.step - from.step);
}

/** A failure of the training itself (non-finite loss), reported with the step and last checkpoint. */
export class TrainingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainingError';
  }
}

/** Spec fields that must match to continue a run folder. */
const RESUME_KEYS = [
  'modelDir', 'data', 'adapter', 'optimizer', 'schedule', 'batchSize', 'gradientAccumulation', 'maxGradNorm',
  'steps', 'epochs', 'logEvery', 'evalEvery', 'checkpointEvery', 'seed', 'earlyStopping', 'ist', 'numLabels', 'problemType',
] as const;

export function specDifferences(a: RunConfig, b: RunConfig): string[] {
  const canon = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([p], [q]) => (p < q ? -1 : 1))) : x));
  return RESUME_KEYS.filter((k) => canon(a[k]) !== canon(b[k]));
}

const now = () => new Date().toISOString();
const NO_DECAY = /(\.bias$|norm|(^|\.)ln_|(^|\.)ln\.|layernorm)/i;

/** PEFT's create_loraplus_optimizer default learning rate for LoRA on embeddings (loraplus_lr_embedding). */
export const LORAPLUS_LR_EMBEDDING = 1e-6;

/**
 * LoRA+ (Hayou et al., 2024; PEFT's create_loraplus_optimizer): the lora_B matrices and every
 * one-dimensional trainable tensor (biases, DoRA magnitudes) learn at `ratio` × the learning rate,
 * the rest at it; a LoRA on an embedding (lora_embedding_A/B) at PEFT's 1e-6, scheduled like the
 * others (a scale of 1e-6 / `lr`). No ratio, or 1: plain AdamW.
 */
export function loraPlusScale(ratio: number | undefined, trainable: ReadonlyMap<string, tf.Tensor>, lr: number): (name: string) => number {
  if (ratio === undefined || ratio === 1) return () => 1;
  return (name) => (/\.lora_embedding_[AB]$/.test(name) ? LORAPLUS_LR_EMBEDDING / lr : /(^|\.)lora_B(\.|$)/.test(name) || trainable.get(name)?.rank === 1 ? ratio : 1);
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** Total optimizer steps for the run. */
export function totalStepsFor(cfg: RunConfig, trainRows: number): number {
  if (cfg.steps !== undefined) return cfg.steps;
  const batchesPerEpoch = Math.ceil(trainRows / cfg.batchSize);
  return Math.max(1, Math.ceil(((cfg.epochs ?? 1) * batchesPerEpoch) / cfg.gradientAccumulation));
}

/** Seeded per-epoch permutations; its state is (epoch, position, RNG state at the epoch's start). */
export class DataOrder {
  private readonly rng: Rng;
  private perm: number[] = [];
  epoch = -1;
  pos = 0;
  epochRngState = 0;

  constructor(
    private readonly n: number,
    seed: number,
  ) {
    this.rng = new Rng(deriveSeed(seed, 'data-order'));
  }

  private newEpoch(): void {
    this.epoch++;
    this.epochRngState = this.rng.state;
    this.perm = this.rng.permutation(this.n);
    this.pos = 0;
  }

  /** Indices of the next micro-batch (the last of an epoch may be smaller). */
  next(batchSize: number): number[] {
    if (this.epoch < 0 || this.pos >= this.n) this.newEpoch();
    const out = this.perm.slice(this.pos, this.pos + batchSize);
    this.pos += out.length;
    return out;
  }

  get state(): TrainerState['data'] {
    return { epoch: this.epoch, pos: this.pos, epochRngState: this.epochRngState };
  }

  restore(s: TrainerState['data']): void {
    if (s.epoch < 0) return;
    this.rng.state = s.epochRngState;
    this.epochRngState = s.epochRngState;
    this.perm = this.rng.permutation(this.n);
    this.epoch = s.epoch;
    this.pos = s.pos;
  }
}

function rssMb(): number {
  return Math.round((process.memoryUsage().rss / (1024 * 1024)) * 10) / 10;
}

/**
 * Trains `cfg` into `runDir`, continuing its newest checkpoint when the folder already holds one
 * (the folder's spec.json must then match `cfg`). Writes status.json throughout; throws on failure
 * (status 'failed') and CancelledError on cancellation (status 'cancelled', checkpoint kept).
 */
export async function runTraining(cfg: RunConfig, opts: TrainRunOptions): Promise<TrainOutcome> {
  const runDir = resolve(opts.runDir);
  await fsp.mkdir(runDir, { recursive: true });
  // One trainer per folder (another process, or another job of this one, fails here untouched).
  const lock = await acquireRunLock(runDir);
  try {
    return await trainLocked(cfg, runDir, opts);
  } finally {
    await lock.release();
  }
}

async function trainLocked(cfg: RunConfig, runDir: string, opts: TrainRunOptions): Promise<TrainOutcome> {
  if (existsSync(join(runDir, SPEC_FILE))) {
    const existing = await readRunConfig(runDir);
    const diff = specDifferences(existing, cfg);
    if (diff.length > 0)
      throw new InputError(runDir, SPEC_FILE, `this run folder was started from a different spec (differs in ${diff.join(', ')}); resume it with peft-lab resume, or pick another --run-dir`);
  } else {
    await writeJsonAtomic(join(runDir, SPEC_FILE), cfg);
  }
  const prev = await readStatus(runDir);
  const last = listCheckpoints(runDir).at(-1);
  const status: RunStatus = {
    version: 1,
    state: 'running',
    spec: cfg.specFile,
    name: cfg.name,
    adapter: cfg.adapter.kind,
    step: last?.step ?? 0,
    totalSteps: prev?.totalSteps ?? 0,
    startedAt: prev?.startedAt ?? now(),
    updatedAt: now(),
    pid: process.pid,
    ...(last ? { lastCheckpoint: last.name } : {}),
    ...(prev?.trainableParams !== undefined ? { trainableParams: prev.trainableParams } : {}),
    ...backendField(),
    // A resume keeps what earlier sessions measured (the zero-shot baseline above all: it is not re-run).
    ...(prev?.summary ? { summary: prev.summary } : {}),
  };
  await writeStatus(runDir, status);
  const session = new Session(cfg, runDir, opts, status);
  try {
    return await session.run();
  } catch (e) {
    status.updatedAt = now();
    if (e instanceof CancelledError) {
      status.state = 'cancelled';
      delete status.error;
    } else {
      status.state = 'failed';
      status.error = errorMessage(e);
    }
    delete status.pid;
    await writeStatus(runDir, status).catch(() => undefined);
    throw e;
  } finally {
    await session.dispose();
  }
}

class Session {
  private model: Model | undefined;
  private adapter: RunAdapter | undefined;
  private readonly opt: AdamW;
  private metrics: MetricsWriter | undefined;
  private readonly stepMs: number[] = [];
  private peakRss = 0;
  private sessionTokens = 0;
  private sessionTrainS = 0;

  constructor(
    private readonly cfg: RunConfig,
    private readonly runDir: string,
    private readonly opts: TrainRunOptions,
    private readonly status: RunStatus,
  ) {
    const o = cfg.optimizer;
    this.opt = new AdamW({ lr: o.lr, beta1: o.betas[0], beta2: o.betas[1], eps: o.eps, weightDecay: o.weightDecay });
  }

  private log(level: 'debug' | 'info' | 'warn' | 'error', msg: string): void {
    this.opts.ctx.log(level, `${this.cfg.name}: ${msg}`);
  }

  private async setStatus(patch: Partial<RunStatus>): Promise<void> {
    Object.assign(this.status, patch, { updatedAt: now() });
    await writeStatus(this.runDir, this.status);
  }

  private memoryLimit(): { limitMb: number; why: string } | undefined {
    return memoryLimitFor(this.cfg.memoryLimitMb);
  }

  async run(): Promise<TrainOutcome> {
    const cfg = this.cfg;
    const ctx = this.opts.ctx;
    const limit = this.memoryLimit();

    // Weights alone, from the checkpoint headers, before loading anything.
    if (limit) {
      const reader = await CheckpointReader.open(cfg.modelDir);
      // Stored weights may be 16-bit; they load as float32.
      const f32 = reader.names().reduce((n, name) => n + numel(reader.entry(name).shape) * 4, 0) / (1024 * 1024);
      await reader.close();
      if (f32 > limit.limitMb)
        throw new InputError(cfg.specFile, 'memoryLimitMb', `the model's weights alone need ~${Math.round(f32)} MB as float32, over the ${limit.limitMb} MB limit (${limit.why})`);
    }

    const model = (this.model = await Model.load(cfg.modelDir, headOptions(cfg)));
    for (const key of ['numLabels', 'problemType'] as const)
      if (cfg[key] !== undefined && model.arch.task === 'causal-lm')
        throw new InputError(cfg.specFile, key, `sets a classifier's head; ${model.config.modelType} here is a causal language model (its head is its vocabulary)`);
    if (model.freshHeads.length)
      this.log('warn', `${model.freshHeads.join(', ')}: not in the checkpoint${cfg.numLabels !== undefined ? ` at numLabels ${cfg.numLabels}` : ' (a base model)'}, so initialised as transformers does (random weights, zero biases), trained and saved with the adapter (modules_to_save)`);
    const info = modelDataInfo(model);
    const tok: DataTokenizer | undefined = info.task === 'image-classification' ? undefined : loadTokenizer(cfg.modelDir);
    const data = await loadDataFiles({ data: cfg.data, seed: cfg.seed, specFile: cfg.specFile }, info, tok);
    for (const w of data.warnings) this.log('warn', w);
    for (const w of cfg.warnings ?? []) this.log('warn', w);
    const batchOpts: BatchOptions = {
      padId: tok && tok.padId < info.vocabSize ? tok.padId : 0,
      attentionMask: isEncoder(model.config),
      regression: info.problemType === 'regression',
      multiLabel: info.problemType === 'multi_label_classification',
      ...(model.config.modelType === 'vit' ? { imageSize: model.config.imageSize, numChannels: model.config.numChannels, patchSize: model.config.patchSize } : {}),
    };

    const adapter = (this.adapter = await createRunAdapter(model, cfg, data));
    const trainableParams = adapter.trainableParameterCount();
    const seqLen = data.train.reduce((m, e) => Math.max(m, e.kind === 'image' ? 0 : e.ids.length), 0);
    // Memory counts the tensors as held (a sparse delta is dense), not the parameters that train.
    const heldParams = [...adapter.trainable.values()].reduce((n, t) => n + t.size, 0);
    const mem = estimateMemory({ config: model.config, baseParams: model.parameterCount(), trainableParams: heldParams, batchSize: cfg.batchSize, seqLen });
    if (limit && mem.totalMb > limit.limitMb) {
      throw new InputError(
        cfg.specFile,
        'memoryLimitMb',
        `estimated memory ${Math.round(mem.totalMb)} MB (${describeEstimate(mem)}; batch ${cfg.batchSize} × ${seqLen} tokens) exceeds the limit of ${limit.limitMb} MB (${limit.why}): lower batchSize or data.maxLength, or raise memoryLimitMb`,
      );
    }
    const totalSteps = totalStepsFor(cfg, data.train.length);
    this.log('info', `${data.train.length} training rows, ${data.eval.length} eval rows; ${totalSteps} steps; ${trainableParams} trainable parameters; estimated memory ${Math.round(mem.totalMb)} MB`);

    // A kind's own training procedure (AdaLoRA's rank allocation) needs the step count.
    if (adapter.training) {
      if (cfg.ist?.enabled) throw new InputError(cfg.specFile, 'ist', `IST samples the blocks that train; ${adapter.spec.kind} allocates ranks over all of them: turn one off`);
      const problem = adapter.training.begin(totalSteps);
      if (problem) throw new InputError(cfg.specFile, `adapter.${adapter.spec.kind}`, problem);
    }

    // State: fresh, or from the newest checkpoint.
    const order = new DataOrder(data.train.length, cfg.seed);
    // IST: per-block scores and their RNG, saved in the checkpoint's state.json (`ist`).
    const ist = cfg.ist?.enabled ? new Ist(cfg.ist, model.config.numLayers, deriveSeed(cfg.seed, 'ist')) : undefined;
    let state: TrainerState & { ist?: IstState } = {
      version: 1, step: 0, totalSteps, optimizerStep: 0, data: order.state, lossSum: 0, lossCount: 0,
      tokensSinceLog: 0, tokensTotal: 0, elapsedS: 0, best: null, bad: 0, finished: false,
    };
    const last = listCheckpoints(this.runDir).at(-1);
    if (last) {
      state = await this.restore(last.dir, order);
      if (ist && state.ist) ist.restore(state.ist);
      this.log('info', `resuming from ${last.name}`);
    }
    await truncateMetrics(this.runDir, state.step);
    this.metrics = await MetricsWriter.open(this.runDir);
    await this.setStatus({ step: state.step, totalSteps, trainableParams, ...(last ? { lastCheckpoint: last.name } : {}) });

    let forgettingBefore: number | undefined;
    let heldout: Example[] | undefined;
    if (this.opts.heldout && cfg.data.heldout && tok && info.task === 'causal-lm') {
      heldout = loadHeldout(cfg.data.heldout, tok, info.vocabSize, data.maxLength, cfg.data.textField);
      forgettingBefore = (await evaluate(model, undefined, heldout, cfg.batchSize, batchOpts, ctx.signal)).loss;
    }

    // The zero-shot baseline: eval before the first step of a fresh run (a resume keeps the first one's).
    if (!last && data.eval.length > 0) {
      const ev = await evaluate(model, { hooks: adapter.hooks, overrides: adapter.overrides() }, data.eval, cfg.batchSize, batchOpts, ctx.signal);
      const metric = ev.metric !== undefined ? { baselineEvalMetric: ev.metric } : {};
      await this.setStatus({ summary: { ...this.status.summary, baselineEvalLoss: ev.loss, ...metric } });
      this.log('info', `before training: eval loss ${ev.loss.toFixed(4)}${ev.metric !== undefined ? `, ${data.metricName ?? 'metric'} ${formatMetricValue(data.metricName, ev.metric)}` : ''}`);
    }

    const names = [...adapter.trainable.keys()];
    const accum = cfg.gradientAccumulation;
    // The ETA's pace: the last ETA_WINDOW steps (evaluations and checkpoints among them count), not
    // the whole session, whose first steps carry the kernels' warm-up.
    const paceMarks: { t: number; step: number }[] = [{ t: performance.now(), step: state.step }];
    let lastEval: { loss: number; metric?: number } | undefined;
    let lastLogTime = performance.now();

    while (!state.finished && state.step < totalSteps) {
      if (ctx.signal.aborted) await this.cancel(state);
      const step = state.step + 1;
      const t0 = performance.now();
      let grads: Map<string, tf.Tensor> | undefined;
      // Each micro-batch's loss stays on the device until the one read of the step (below).
      const microLosses: tf.Tensor[] = [];
      let tokens = 0;
      // IST: only the drawn blocks' adapter tensors (and those outside the blocks) train this step.
      const stepNames = ist ? istStepNames(names, adapter, ist.sampleUpdate()) : names;
      try {
        for (let micro = 0; micro < accum; micro++) {
          const idx = order.next(cfg.batchSize);
          const batch = makeBatch(idx.map((i) => data.train[i]!), batchOpts);
          try {
            adapter.setStep((step - 1) * accum + micro);
            const r = model.lossAndGrads(stepNames, batch.inputs, batch.labels, { hooks: adapter.hooks, extra: adapter.overrides(), training: true, ...(adapter.training ? { penalty: adapter.training.penalty } : {}) });
            microLosses.push(r.loss);
            tokens += batch.tokens;
            if (!grads) grads = r.grads;
            else {
              for (const [n, g] of r.grads) {
                const acc = grads.get(n)!;
                grads.set(n, tf.add(acc, g));
                tf.dispose([acc, g]);
              }
            }
          } finally {
            disposeTrainBatch(batch);
          }
        }
        // A gradient replaced in the map (averaged, clipped) is disposed: the map owns what it holds.
        if (accum > 1) {
          for (const [n, g] of grads!) {
            grads!.set(n, tf.tidy(() => tf.div(g, accum)));
            g.dispose();
          }
        }
        // One read per step, of the micro-batch losses and the gradient norm together: on a GPU every
        // read waits for the queue to drain, and the next work starts from an idle device.
        const statsT = tf.tidy(() => tf.concat([...microLosses.map((l) => tf.reshape(l, [1])), tf.reshape(tf.sqrt(tf.addN([...grads!.values()].map((g) => tf.sum(tf.square(g))))), [1])]));
        const stats = await statsT.data();
        statsT.dispose();
        const loss = Array.from(stats.subarray(0, accum)).reduce((a, b) => a + b, 0) / accum;
        const gradNorm = stats[accum]!;
        if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
          const what = !Number.isFinite(loss) ? `loss is ${loss}` : `gradient norm is ${gradNorm} (loss ${loss})`;
          const ck = this.status.lastCheckpoint ? `last good checkpoint: checkpoints/${this.status.lastCheckpoint} (step ${this.status.lastCheckpoint.slice(5)})` : 'no checkpoint was written before it';
          throw new TrainingError(`training diverged at step ${step}: ${what} (lr ${lrAt(step, cfg.optimizer.lr, cfg.schedule, totalSteps)}); ${ck}. Lower optimizer.lr or set maxGradNorm`);
        }
        if (cfg.maxGradNorm > 0) {
          const coef = cfg.maxGradNorm / (gradNorm + 1e-6);
          if (coef < 1) {
            for (const [n, g] of grads!) {
              grads!.set(n, tf.tidy(() => tf.mul(g, coef)));
              g.dispose();
            }
          }
        }
        const lr = lrAt(step, cfg.optimizer.lr, cfg.schedule, totalSteps);
        this.opt.step(adapter.trainable, grads!, lr, (n) => !NO_DECAY.test(n), loraPlusScale(cfg.optimizer.loraPlusRatio, adapter.trainable, cfg.optimizer.lr));
        // After the update, with its gradients (AdaLoRA: score the ranks, mask E to the budget).
        const procedureMetrics = adapter.training ? await adapter.training.afterStep(step, grads!) : {};
        tf.dispose([...grads!.values()]);
        grads = undefined;
        if (ist && step % ist.opts.T === 0) await istProbeUpdate(ist, step, model, adapter, data.train, batchOpts);

        const dt = (performance.now() - t0) / 1000;
        this.stepMs.push(dt * 1000);
        this.sessionTokens += tokens;
        this.sessionTrainS += dt;
        this.peakRss = Math.max(this.peakRss, rssMb());
        state = {
          ...state,
          step,
          optimizerStep: this.opt.state.step,
          ...optimizerStepsOf(this.opt.state),
          data: order.state,
          lossSum: state.lossSum + loss,
          lossCount: state.lossCount + 1,
          tokensSinceLog: state.tokensSinceLog + tokens,
          tokensTotal: state.tokensTotal + tokens,
          elapsedS: state.elapsedS + dt,
          ...(ist ? { ist: ist.state } : {}),
        };

        // Eval, early stopping, metrics record.
        const lastStep = step === totalSteps;
        const evalNow = data.eval.length > 0 && (step % cfg.evalEvery === 0 || lastStep);
        let record: MetricRecord | undefined;
        if (evalNow) {
          const ev = await evaluate(model, { hooks: adapter.hooks, overrides: adapter.overrides() }, data.eval, cfg.batchSize, batchOpts);
          lastEval = { loss: ev.loss, ...(ev.metric !== undefined ? { metric: ev.metric } : {}) };
          if (cfg.earlyStopping) {
            if (state.best === null || ev.loss < state.best - cfg.earlyStopping.minDelta) state = { ...state, best: ev.loss, bad: 0 };
            else state = { ...state, bad: state.bad + 1 };
            if (state.bad >= cfg.earlyStopping.patience) {
              state = { ...state, finished: true, stopReason: `early stopping at step ${step}: eval loss has not improved on ${state.best} for ${state.bad} evaluations` };
              this.log('info', state.stopReason!);
            }
          }
        }
        if (lastStep) state = { ...state, finished: true };
        if (step % cfg.logEvery === 0 || evalNow || state.finished) {
          const windowS = (performance.now() - lastLogTime) / 1000;
          record = {
            step,
            loss: state.lossSum / state.lossCount,
            lr,
            tokens_per_s: windowS > 0 ? Math.round(state.tokensSinceLog / windowS) : 0,
            elapsed_s: Math.round(state.elapsedS * 1000) / 1000,
            grad_norm: gradNorm,
            ...(ist ? istMetricFields(ist) : {}),
            ...procedureMetrics,
            ...(evalNow ? { eval_loss: lastEval!.loss } : {}),
            ...(evalNow && lastEval!.metric !== undefined ? { eval_accuracy: lastEval!.metric } : {}),
          };
          await this.metrics.append(record);
          state = { ...state, lossSum: 0, lossCount: 0, tokensSinceLog: 0 };
          lastLogTime = performance.now();
        }
        if (step % cfg.checkpointEvery === 0 || state.finished) await this.checkpoint(state);
        if (record || step % 10 === 0) {
          await this.setStatus({
            step,
            summary: {
              ...this.status.summary,
              // The last logged loss (a window mean), as metrics.jsonl and comparisons report it.
              ...(record ? { loss: record.loss } : {}),
              ...(lastEval ? { evalLoss: lastEval.loss } : {}),
              ...(lastEval?.metric !== undefined ? { evalMetric: lastEval.metric, metricName: data.metricName! } : {}),
              tokensPerS: Math.round(this.sessionTokens / Math.max(1e-9, this.sessionTrainS)),
            },
          });
        }

        // Progress.
        paceMarks.push({ t: performance.now(), step });
        if (paceMarks.length > ETA_WINDOW + 1) paceMarks.shift();
        const eta = state.finished ? 0 : (totalSteps - step) * secondsPerStep(paceMarks);
        const tps = Math.round(tokens / Math.max(1e-9, dt));
        const metrics: Record<string, number> = { loss, lr, tokens_per_s: tps, eta_s: Math.round(eta) };
        if (lastEval) {
          metrics.eval_loss = lastEval.loss;
          if (lastEval.metric !== undefined) metrics.eval_accuracy = lastEval.metric;
        }
        ctx.progress({
          done: step,
          total: totalSteps,
          message: `step ${step}/${totalSteps} · loss ${loss.toFixed(4)}${lastEval ? ` · eval ${lastEval.loss.toFixed(4)}${lastEval.metric !== undefined ? ` (${data.metricName} ${formatMetricValue(data.metricName, lastEval.metric)})` : ''}` : ''} · lr ${lr.toExponential(2)} · ${tps} tok/s · ETA ${fmtDuration(eta)}`,
          metrics,
          ...(data.metricName ? { metricName: data.metricName } : {}),
        });
      } finally {
        if (grads) tf.dispose([...grads.values()]);
        tf.dispose(microLosses);
      }
      await this.opts.afterStep?.(step);
      await yieldToEventLoop();
    }
    if (ctx.signal.aborted && !state.finished) await this.cancel(state);

    if (ist) await writeIstReports(this.runDir, ist);
    // Final adapter.
    const adapterDir = join(this.runDir, ADAPTER_DIR);
    await saveFinalAdapter(adapterDir, adapter, baseModelName(cfg), this.log.bind(this), model.config);
    await this.writeAdapterCheck(model, adapter, (data.eval.length > 0 ? data.eval : data.train).slice(0, 4), batchOpts);
    let forgetting: TrainOutcome['forgetting'];
    if (heldout && forgettingBefore !== undefined) {
      const after = (await evaluate(model, { hooks: adapter.hooks, overrides: adapter.overrides() }, heldout, cfg.batchSize, batchOpts)).loss;
      forgetting = { before: forgettingBefore, after, delta: after - forgettingBefore };
    }
    const tokensPerS = this.sessionTrainS > 0 ? Math.round(this.sessionTokens / this.sessionTrainS) : undefined;
    this.status.state = 'done';
    delete this.status.pid;
    delete this.status.error;
    const summary = { ...(this.status.summary ?? {}) };
    if (tokensPerS !== undefined) summary.tokensPerS = tokensPerS;
    await this.setStatus({ step: state.step, summary });
    if (state.stopReason) this.log('info', state.stopReason);
    return {
      runDir: this.runDir,
      status: { ...this.status },
      trainableParams,
      ...(data.metricName ? { metricName: data.metricName } : {}),
      stepMs: this.stepMs,
      peakRssMb: Math.max(this.peakRss, rssMb()),
      ...(tokensPerS !== undefined ? { tokensPerS } : {}),
      ...(forgetting ? { forgetting } : {}),
      memory: mem,
    };
  }

  /**
   * `adapter_check.safetensors`: a few rows (`input_ids`, and `pixel_values` for images) with the
   * logits the trained adapter gives in this process, so `peft-lab forward --adapter <run>/adapter`
   * can prove the exported adapter reproduces the run, without Python. A large vocabulary gets
   * fewer positions and rows (adapterCheckRows).
   */
  private async writeAdapterCheck(model: Model, adapter: RunAdapter, rows: Example[], batchOpts: BatchOptions): Promise<void> {
    if (rows.length === 0) return;
    const batch = makeBatch(adapterCheckRows(rows, model.config.vocabSize), batchOpts);
    try {
      const logits = tf.tidy(() => model.forward(batch.inputs, { hooks: adapter.hooks, overrides: adapter.overrides() }));
      const out = new Map<string, HostTensor>([['logits', await fromTf(logits)]]);
      logits.dispose();
      for (const [name, t] of [['input_ids', batch.inputs.inputIds], ['attention_mask', batch.inputs.attentionMask], ['token_type_ids', batch.inputs.tokenTypeIds], ['pixel_values', batch.inputs.pixelValues]] as const)
        if (t) out.set(name, await fromTf(t));
      await writeSafetensors(join(this.runDir, ADAPTER_CHECK_FILE), out);
    } finally {
      disposeTrainBatch(batch);
    }
  }

  private async checkpoint(state: TrainerState): Promise<void> {
    const adapter = this.adapter!;
    const base = new Map([...adapter.frozen].filter(([n]) => this.model!.params.has(n)));
    let name: string;
    try {
      const procedure = adapter.training?.state();
      name = await writeCheckpoint(
        this.runDir,
        { state: procedure ? { ...state, procedure: procedure.json } : state, trainable: adapter.trainable, m: this.opt.state.m, v: this.opt.state.v, base, ...(procedure ? { procedure: procedure.tensors } : {}) },
        this.cfg.keepCheckpoints,
      );
    } catch (e) {
      // A failed write (disk full, ...) leaves no trace: say so, and where a resume will continue.
      const code = (e as NodeJS.ErrnoException).code;
      const prev = this.status.lastCheckpoint ? `the previous checkpoint checkpoints/${this.status.lastCheckpoint} is intact; peft-lab resume continues from it` : 'no earlier checkpoint exists';
      throw new TrainingError(
        `${join(this.runDir, CHECKPOINTS_DIR, `step-${state.step}`)}: cannot write the checkpoint of step ${state.step} (${code === 'ENOSPC' ? 'disk full: ' : ''}${errorMessage(e)}); ${prev}`,
      );
    }
    await this.setStatus({ lastCheckpoint: name, step: state.step });
  }

  /** Keeps a checkpoint of the current step (resume continues exactly here), then ends cancelled. */
  private async cancel(state: TrainerState): Promise<never> {
    if (state.step > 0 && this.status.lastCheckpoint !== `step-${state.step}`) await this.checkpoint(state);
    this.log('info', `cancelled at step ${state.step}${this.status.lastCheckpoint ? `; checkpoint ${this.status.lastCheckpoint} kept` : ''}`);
    throw new CancelledError();
  }

  private async restore(dir: string, order: DataOrder): Promise<TrainerState> {
    const adapter = this.adapter!;
    const ck = await readCheckpoint(dir);
    const file = join(dir, 'adapter.safetensors');
    for (const [name, t] of [...adapter.trainable]) {
      adapter.trainable.set(name, restoreTensor(file, name, ck.trainable.get(name), t));
      t.dispose();
    }
    for (const [name, h] of ck.base) {
      const old = adapter.frozen.get(name);
      if (!old) throw new InputError(join(dir, 'base.safetensors'), name, 'the adapter has no such residual base weight');
      adapter.frozen.set(name, restoreTensor(join(dir, 'base.safetensors'), name, h, old));
      old.dispose();
    }
    this.opt.dispose();
    const m = new Map<string, tf.Tensor>();
    const v = new Map<string, tf.Tensor>();
    const ofile = join(dir, 'optimizer.safetensors');
    for (const [name, t] of adapter.trainable) {
      if (ck.state.optimizerStep === 0) break;
      // IST trains some blocks per step: a tensor not yet drawn has no moments.
      if (this.cfg.ist?.enabled && !ck.m.has(name) && !ck.v.has(name)) continue;
      m.set(name, restoreTensor(ofile, `m.${name}`, ck.m.get(name), t));
      v.set(name, restoreTensor(ofile, `v.${name}`, ck.v.get(name), t));
    }
    const steps = new Map<string, number>();
    for (const name of m.keys()) {
      const t = ck.state.optimizerSteps?.[name] ?? ck.state.optimizerStep;
      if (!Number.isInteger(t) || t < 1 || t > ck.state.optimizerStep) throw new InputError(join(dir, 'state.json'), `optimizerSteps.${name}`, `expected an update count from 1 to ${ck.state.optimizerStep}, got ${String(t)}`);
      steps.set(name, t);
    }
    this.opt.state = { step: ck.state.optimizerStep, steps, m, v };
    try {
      adapter.training?.restore(ck.procedure, ck.state.procedure);
    } catch (e) {
      throw new InputError(join(dir, 'procedure.safetensors'), '', `cannot restore the ${adapter.spec.kind} training state: ${errorMessage(e)}`);
    }
    order.restore(ck.state.data);
    return ck.state;
  }

  async dispose(): Promise<void> {
    await this.metrics?.close().catch(() => undefined);
    this.opt.dispose();
    this.adapter?.dispose();
    this.model?.dispose();
  }
}

export type { LoadedData };

/** The per-tensor update counts for a checkpoint, when any differs from the optimizer's step (IST). */
function optimizerStepsOf(st: AdamWState): { optimizerSteps?: Record<string, number> } {
  const differ = [...st.steps.values()].some((t) => t !== st.step);
  return differ ? { optimizerSteps: Object.fromEntries(st.steps) } : {};
}

/** The status field naming this session's backend (absent before initBackend, as in some tests). */
function backendField(): Pick<RunStatus, 'backend'> {
  const b = currentBackend();
  return b ? { backend: `${b.name}: ${b.device}` } : {};
}
