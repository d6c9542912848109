/**
 * Run folders as the extension sees them (vscode-free, unit-testable): reading a run folder, its
 * effective state (a `running` run whose process is gone is `interrupted`), and ordering.
 *
 * The folder contract (written by the sidecar or `peft-lab train`): `status.json` (RunStatus,
 * replaced atomically), `metrics.jsonl` (one MetricRecord per line, appended; the last line may be
 * torn by a killed process), `spec.json`, `checkpoints/step-N/`, `adapter/`. A comparison writes
 * `compare.json` in a folder whose sub-folders are the variants' run folders.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { RUN_STATES, type JobParams, type MetricRecord, type RunState, type RunStatus } from '../../protocol';
import { isUnder } from './paths';

export const STATUS_FILE = 'status.json';
export const METRICS_FILE = 'metrics.jsonl';
export const ADAPTER_DIR = 'adapter';
export const RUN_SPEC_FILE = 'spec.json';
export const COMPARE_FILE = 'compare.json';

export type RunViewState = RunState | 'unknown';

/** One run folder. */
export interface RunInfo {
  /** Absolute path of the run folder. */
  dir: string;
  /** The folder's name. */
  name: string;
  /** `status.json`, or undefined while it is missing or unreadable (a run being created). */
  status: RunStatus | undefined;
  /** Effective state: `status.state`, except `running` whose process is gone → `interrupted`. */
  state: RunViewState;
  /** Absolute path of the spec the run came from (from status.json), if known. */
  spec: string | undefined;
  /** The newest whole line of `metrics.jsonl`, if any. */
  lastMetric: MetricRecord | undefined;
  /** Whether `adapter/` exists (the run can be exported). */
  hasAdapter: boolean;
  /** Whether `spec.json` exists (what Resume continues from); undefined when not looked at. */
  hasRunSpec?: boolean;
  /** `compare.json` of the comparison this run is a variant of, if any. */
  compareFile: string | undefined;
}

export function isRunStatus(v: unknown): v is RunStatus {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Partial<RunStatus>;
  return s.version === 1 && typeof s.state === 'string' && (RUN_STATES as readonly string[]).includes(s.state) && typeof s.step === 'number';
}

/** Whether a process with this pid exists (EPERM: it exists, owned by someone else). */
export function isPidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The state to show. `running` stays `running` only while its process lives: a run whose `pid` is
 * gone, missing, or known to have ended (a sidecar that crashed and was restarted: its old pid is
 * in `endedPids`, which also guards against pid reuse) is `interrupted`.
 */
export function effectiveState(status: RunStatus | undefined, isAlive: (pid: number) => boolean, endedPids?: ReadonlySet<number>): RunViewState {
  if (!status) return 'unknown';
  if (status.state !== 'running') return status.state;
  const pid = status.pid;
  if (pid === undefined || endedPids?.has(pid) || !isAlive(pid)) return 'interrupted';
  return 'running';
}

/** Parses JSONL metric text: blank, malformed and torn lines are skipped. */
export function parseMetrics(text: string): MetricRecord[] {
  const out: MetricRecord[] = [];
  for (const line of text.split('\n')) {
    const r = parseMetricLine(line);
    if (r) out.push(r);
  }
  return out;
}

function parseMetricLine(line: string): MetricRecord | undefined {
  if (!line.trim()) return undefined;
  try {
    const v = JSON.parse(line) as unknown;
    return typeof v === 'object' && v !== null && typeof (v as MetricRecord).step === 'number' ? (v as MetricRecord) : undefined;
  } catch {
    return undefined;
  }
}

/** Every record of `<dir>/metrics.jsonl`; [] when it is absent. */
export async function readMetricsFile(dir: string): Promise<MetricRecord[]> {
  try {
    return parseMetrics(await fsp.readFile(join(dir, METRICS_FILE), 'utf8'));
  } catch {
    return [];
  }
}

/** The newest whole record of a metrics file, read from its tail only (files grow long). */
export async function readLastMetric(file: string, tailBytes = 16 * 1024): Promise<MetricRecord | undefined> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(file, 'r');
    const { size } = await fh.stat();
    let want = Math.min(size, tailBytes);
    for (;;) {
      const buf = Buffer.alloc(want);
      await fh.read(buf, 0, want, size - want);
      const lines = buf.toString('utf8').split('\n');
      // The first line may be cut by the window (unless the window starts the file).
      const whole = want === size ? lines : lines.slice(1);
      for (let i = whole.length - 1; i >= 0; i--) {
        const r = parseMetricLine(whole[i]!);
        if (r) return r;
      }
      if (want === size) return undefined;
      want = Math.min(size, want * 4);
    }
  } catch {
    return undefined;
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

export async function readStatusFile(dir: string): Promise<RunStatus | undefined> {
  try {
    const v = JSON.parse(await fsp.readFile(join(dir, STATUS_FILE), 'utf8')) as unknown;
    return isRunStatus(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a path exists (asynchronously: the runs model reads folders on every poll). */
export const pathExists = (p: string): Promise<boolean> => fsp.access(p).then(() => true, () => false);

export interface ReadRunOptions {
  isAlive?: (pid: number) => boolean;
  endedPids?: ReadonlySet<number>;
}

/** Reads one run folder; undefined when it is not one (no readable RunStatus, no metrics). */
export async function readRun(dir: string, opts: ReadRunOptions = {}): Promise<RunInfo | undefined> {
  const compareFile = join(dirname(dir), COMPARE_FILE);
  const [status, lastMetric, hasAdapter, hasRunSpec, inComparison] = await Promise.all([
    readStatusFile(dir),
    readLastMetric(join(dir, METRICS_FILE)),
    pathExists(join(dir, ADAPTER_DIR)),
    pathExists(join(dir, RUN_SPEC_FILE)),
    pathExists(compareFile),
  ]);
  if (!status && !lastMetric) return undefined;
  return {
    dir,
    name: basename(dir),
    status,
    state: effectiveState(status, opts.isAlive ?? isPidAlive, opts.endedPids),
    spec: status?.spec || undefined,
    lastMetric,
    hasAdapter,
    hasRunSpec,
    compareFile: inComparison ? compareFile : undefined,
  };
}

/** Newest first: by `startedAt`, then by folder name (which carries a time stamp) descending. */
export function compareRunsNewestFirst(a: RunInfo, b: RunInfo): number {
  const ta = a.status?.startedAt ?? '';
  const tb = b.status?.startedAt ?? '';
  if (ta !== tb) return ta < tb ? 1 : -1;
  return a.name < b.name ? 1 : a.name > b.name ? -1 : 0;
}

/**
 * Whether a run can be resumed: interrupted or cancelled (it continues from its last checkpoint, or
 * from the start in the same folder without one), or failed after writing a checkpoint.
 */
export function canResume(run: RunInfo): boolean {
  if (run.hasRunSpec === false) return false; // a folder without the run's spec.json has nothing to continue from
  if (run.state === 'interrupted' || run.state === 'cancelled') return true;
  return run.state === 'failed' && !!run.status?.lastCheckpoint;
}

/**
 * What Resume does with a run: a variant of a comparison whose spec is still there continues the
 * whole comparison in its folder (this variant from its checkpoint, the ones not yet run after it,
 * finished ones at once), so that compare.json is complete; any other run continues alone, from its
 * spec, or from its own spec.json when the spec file is gone.
 */
export function resumePlan(run: RunInfo, exists: (p: string) => boolean): { kind: 'compare'; specFile: string; dir: string } | { kind: 'train'; specFile: string; dir: string } {
  const specThere = !!run.spec && exists(run.spec);
  if (run.compareFile && specThere) return { kind: 'compare', specFile: run.spec!, dir: dirname(run.compareFile) };
  return { kind: 'train', specFile: specThere ? run.spec! : join(run.dir, 'spec.json'), dir: run.dir };
}

/** Whether a job trains run folders: a fine-tune, or a comparison training its variants. */
export const trainsRuns = (job: { params: JobParams }): boolean => job.params.kind === 'train' || job.params.kind === 'compare';

/**
 * The job that runs a run folder, among a sidecar's jobs: the train job of that folder, else the
 * compare job whose compare folder holds it (a variant runs inside its comparison's job, so
 * cancelling the variant cancels the comparison).
 */
export function jobRunning<J extends { params: JobParams }>(jobs: readonly J[], runDir: string): J | undefined {
  const dir = resolve(runDir);
  const train = jobs.find((j) => j.params.kind === 'train' && j.params.runDir !== undefined && resolve(j.params.runDir) === dir);
  return train ?? jobs.find((j) => j.params.kind === 'compare' && j.params.outDir !== undefined && isUnder(resolve(j.params.outDir), dir));
}

/**
 * What "Delete Run…" does with the runs chosen: deletes those not running, and says why the running
 * ones stay. Nothing chosen (a dismissed pick) is nothing to do and nothing to say.
 */
export function deletionPlan(chosen: readonly RunInfo[]): { runs: RunInfo[]; refused?: string } {
  const runs = chosen.filter((r) => r.state !== 'running');
  const running = chosen.filter((r) => r.state === 'running');
  if (!running.length) return { runs };
  const refused = running.length === 1 ? `${running[0]!.name} is running; cancel it before deleting it.` : `${running.length} of these runs are running; cancel them before deleting them.`;
  return { runs, refused };
}

/** The run's data.textPairField (from its spec.json), when it trained a classifier on sentence pairs. */
export function pairFieldOf(runDir: string): string | undefined {
  try {
    const spec = JSON.parse(readFileSync(join(runDir, RUN_SPEC_FILE), 'utf8')) as { data?: { textPairField?: unknown } };
    return typeof spec.data?.textPairField === 'string' ? spec.data.textPairField : undefined;
  } catch {
    return undefined; // no readable spec: a single text, as before
  }
}
