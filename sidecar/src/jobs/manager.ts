/**
 * Runs long jobs off the request path: `start` answers with an id at once, the job runs later on
 * the event loop, reports progress, and ends with exactly one end event (done / failed / cancelled).
 * A failing job is an event, never a crash: every runner error is caught and turned into a
 * one-line message.
 */
import { inspect } from 'node:util';
import { InputError, WASM_ABORT } from '../errors';
import type { JobEnd, JobKind, JobParams, JobProgress, JobResult, JobSummary, LogMessage } from '../../../src/protocol';
import { JOB_KINDS } from '../../../src/protocol';
import { analysisJobProblem } from '../analysis/params-check';
import { CancelledError, type JobContext } from './context';

export type JobRunner = (params: JobParams, ctx: JobContext) => Promise<JobResult>;

/** Where the manager reports. Called synchronously; a throwing sink is logged and otherwise ignored. */
export interface JobEvents {
  progress(p: JobProgress): void;
  end(e: JobEnd): void;
  log(level: LogMessage['level'], message: string): void;
}

export interface JobManagerOptions {
  /** Jobs running at once; the rest wait as `queued`. Default 1 (one TF.js backend, one device). */
  concurrency?: number;
  /** Finished jobs kept for `list()`. Default 20. */
  keepFinished?: number;
}

interface Job {
  readonly summary: JobSummary;
  readonly params: JobParams;
  readonly controller: AbortController;
  /** Set once the end event has been emitted: nothing about the job is reported after it. */
  ended: boolean;
  /** Resolves when the runner has settled (or at once for a job that never ran). */
  settled: Promise<void>;
}

export class JobManager {
  private readonly jobs = new Map<string, Job>();
  private readonly queue: Job[] = [];
  private running = 0;
  private seq = 0;
  private readonly concurrency: number;
  private readonly keepFinished: number;

  constructor(
    private readonly runner: JobRunner,
    private readonly events: JobEvents,
    options: JobManagerOptions = {},
  ) {
    this.concurrency = Math.max(1, options.concurrency ?? 1);
    this.keepFinished = Math.max(0, options.keepFinished ?? 20);
  }

  /** Queues a job and returns its id; the runner starts on a later turn of the event loop. */
  start(params: JobParams): string {
    const id = `job-${++this.seq}`;
    const job: Job = {
      summary: { id, kind: params.kind, state: 'queued', startedAt: new Date().toISOString() },
      params,
      controller: new AbortController(),
      ended: false,
      settled: Promise.resolve(),
    };
    this.jobs.set(id, job);
    this.queue.push(job);
    this.pump();
    return id;
  }

  /** Requests cancellation. False for an unknown id or a job that has already ended. */
  cancel(id: string): boolean {
    const job = this.jobs.get(id);
    if (!job || job.ended) return false;
    const queued = this.queue.indexOf(job);
    if (queued >= 0) {
      this.queue.splice(queued, 1);
      job.controller.abort();
      this.finish(job, { id, state: 'cancelled' });
      return true;
    }
    job.controller.abort();
    return true;
  }

  /**
   * Cancels every job and waits up to `graceMs` for running ones to stop; any still running then
   * is reported cancelled anyway (its runner's later outcome is dropped). Used at shutdown.
   */
  async cancelAll(graceMs = 2000): Promise<void> {
    const live = [...this.jobs.values()].filter((j) => !j.ended);
    for (const job of live) this.cancel(job.summary.id);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.all(live.map((j) => j.settled)), timeout]);
    clearTimeout(timer);
    for (const job of live) {
      if (!job.ended) {
        this.events.log('warn', `job ${job.summary.id} did not stop within ${graceMs} ms; reported cancelled`);
        this.finish(job, { id: job.summary.id, state: 'cancelled' });
      }
    }
  }

  list(): JobSummary[] {
    return [...this.jobs.values()].map((j) => ({ ...j.summary }));
  }

  get(id: string): JobSummary | undefined {
    const job = this.jobs.get(id);
    return job && { ...job.summary };
  }

  get activeCount(): number {
    return [...this.jobs.values()].filter((j) => !j.ended).length;
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      job.summary.state = 'running';
      job.settled = new Promise<void>((resolve) => {
        // A later turn: the caller's reply to `start` goes out before any progress of the job.
        setImmediate(() => {
          // execute() reports every outcome itself and never rejects.
          void this.execute(job).finally(() => {
            this.running--;
            resolve();
            this.pump();
          });
        });
      });
    }
  }

  private async execute(job: Job): Promise<void> {
    const { id } = job.summary;
    const signal = job.controller.signal;
    if (signal.aborted) {
      this.finish(job, { id, state: 'cancelled' });
      return;
    }
    const ctx: JobContext = {
      signal,
      progress: (p) => {
        if (!job.ended) this.emit(() => this.events.progress({ ...p, id }));
      },
      log: (level, message) => {
        if (!job.ended) this.emit(() => this.events.log(level, `[${id}] ${message}`));
      },
    };
    try {
      const result = await this.runner(job.params, ctx);
      this.finish(job, { id, state: 'done', result });
    } catch (err) {
      if (err instanceof CancelledError || signal.aborted) {
        this.finish(job, { id, state: 'cancelled' });
      } else {
        const error = oneLine(err);
        if (err instanceof Error && err.stack) this.emit(() => this.events.log('debug', `[${id}] ${err.stack}`));
        const problems = err instanceof InputError && err.problems.length > 1 ? { problems: err.problems } : {};
        this.finish(job, { id, state: 'failed', error, ...problems });
      }
    }
  }

  private finish(job: Job, end: JobEnd): void {
    if (job.ended) return;
    job.ended = true;
    job.summary.state = end.state;
    this.emit(() => this.events.end(end));
    this.prune();
  }

  private prune(): void {
    const finished = [...this.jobs.values()].filter((j) => j.ended);
    for (const job of finished.slice(0, Math.max(0, finished.length - this.keepFinished))) this.jobs.delete(job.summary.id);
  }

  private emit(send: () => void): void {
    try {
      send();
    } catch (err) {
      try {
        this.events.log('error', `job event could not be reported: ${oneLine(err)}`);
      } catch {
        // The sink itself is broken; nothing left to report to.
      }
    }
  }
}

/** Built-in error names that say something the message alone does not ("TypeError: x is not a function"). */
const NAMED_ERRORS = new Set(['TypeError', 'RangeError', 'ReferenceError', 'SyntaxError', 'EvalError', 'URIError']);

/** An error as one line: its message (prefixed by the name for built-in JS errors), whitespace collapsed, capped. */
export function oneLine(err: unknown, max = 500): string {
  let text: string;
  if (err instanceof Error) text = NAMED_ERRORS.has(err.name) ? `${err.name}: ${err.message}` : err.message;
  else if (typeof err === 'string') text = err;
  else text = inspect(err, { breakLength: Infinity, depth: 2 });
  if (/^Aborted\(/u.test(text)) text = WASM_ABORT;
  text = text.replace(/\s+/g, ' ').trim() || (err instanceof Error ? err.name : 'unknown error');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Checks a `StartJob` params value from the wire against the protocol's shapes.
 * Returns why it is not valid `JobParams`, or undefined when it is.
 */
export function jobParamsProblem(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'job params must be an object';
  const p = v as Record<string, unknown>;
  if (typeof p.kind !== 'string' || !(JOB_KINDS as readonly string[]).includes(p.kind)) {
    return `unknown job kind ${JSON.stringify(p.kind)} (expected one of ${JOB_KINDS.join(', ')})`;
  }
  const str = (key: string, optional = false): string | undefined =>
    (optional && p[key] === undefined) || (typeof p[key] === 'string' && p[key] !== '')
      ? undefined
      : `${p.kind} job: '${key}' must be a non-empty string`;
  const bool = (key: string): string | undefined =>
    p[key] === undefined || typeof p[key] === 'boolean' ? undefined : `${p.kind} job: '${key}' must be a boolean`;
  const kind = p.kind as JobKind;
  switch (kind) {
    case 'forward':
      return str('model') ?? str('inputs') ?? str('out') ?? str('adapter', true);
    case 'grads':
      return str('model') ?? str('inputs') ?? str('out');
    case 'inspect':
      return str('model');
    case 'selftest':
      if (!Number.isInteger(p.steps) || (p.steps as number) < 1) return `selftest job: 'steps' must be a positive integer`;
      if (p.failWith !== undefined && typeof p.failWith !== 'string') return `selftest job: 'failWith' must be a string`;
      if (p.delayMs !== undefined && !(typeof p.delayMs === 'number' && Number.isFinite(p.delayMs) && p.delayMs >= 0)) {
        return `selftest job: 'delayMs' must be a non-negative number`;
      }
      return undefined;
    case 'train':
      return str('spec') ?? str('runDir', true) ?? bool('resume') ?? str('workspaceRoot', true);
    case 'compare':
      return str('spec') ?? str('outDir', true) ?? str('workspaceRoot', true);
    case 'importance':
    case 'allocate':
    case 'localize':
    case 'merge':
    case 'evaluate':
      return analysisJobProblem(p);
    case 'generate': {
      const num = (key: string, ok: (x: number) => boolean, what: string) => (p[key] === undefined || (typeof p[key] === 'number' && ok(p[key] as number)) ? undefined : `generate job: '${key}' must be ${what}`);
      if ((p.run === undefined) === (p.model === undefined)) return `generate job: give exactly one of 'run' and 'model'`;
      return (
        str('run', true) ?? str('model', true) ?? str('adapter', true) ?? (typeof p.prompt === 'string' ? undefined : `generate job: 'prompt' must be a string`) ?? str('pair', true) ?? bool('chat') ?? bool('compareBase') ??
        num('maxNewTokens', (x) => Number.isInteger(x) && x >= 1, 'an integer ≥ 1') ?? num('temperature', (x) => x >= 0 && Number.isFinite(x), 'a number ≥ 0') ?? num('topP', (x) => x > 0 && x <= 1, 'in (0, 1]') ??
        num('topK', (x) => Number.isInteger(x) && x >= 0, 'an integer ≥ 0') ??
        num('seed', (x) => Number.isInteger(x) && x >= 0, 'an integer ≥ 0')
      );
    }
    default: {
      // A new kind in the protocol must be checked here: this stops compiling until it is.
      const unchecked: never = kind;
      return `job kind ${String(unchecked)} has no parameter check`;
    }
  }
}
