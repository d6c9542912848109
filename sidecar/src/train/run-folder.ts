/**
 * The run folder contract (see RunStatus / MetricRecord in the protocol):
 *   spec.json          the resolved spec (RunConfig) the run trains with
 *   status.json        RunStatus, replaced atomically (temp file + rename)
 *   metrics.jsonl      one MetricRecord per logged step, appended and fsync'd
 *   checkpoints/step-N resumable checkpoints (see checkpoint.ts), the newest few kept
 *   adapter/           the final adapter in PEFT format
 */
import { existsSync, mkdirSync, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { MetricRecord, RunStatus } from '../../../src/protocol';
import { RUN_STATES } from '../../../src/protocol';
import { InputError } from '../errors';
import type { RunConfig } from '../spec/types';
import { writeAtomic } from '../io/atomic';

export const SPEC_FILE = 'spec.json';
export const STATUS_FILE = 'status.json';
export const METRICS_FILE = 'metrics.jsonl';
export const CHECKPOINTS_DIR = 'checkpoints';
export const ADAPTER_DIR = 'adapter';

/** Writes a file atomically: temp file beside it, fsync, rename over it. */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  await writeAtomic(path, [Buffer.from(text, 'utf8')]);
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

export async function writeStatus(runDir: string, status: RunStatus): Promise<void> {
  await writeJsonAtomic(join(runDir, STATUS_FILE), status);
}

export async function readStatus(runDir: string): Promise<RunStatus | undefined> {
  try {
    const s = JSON.parse(await fsp.readFile(join(runDir, STATUS_FILE), 'utf8')) as RunStatus;
    return s && typeof s === 'object' && (RUN_STATES as readonly string[]).includes(s.state) ? s : undefined;
  } catch {
    return undefined;
  }
}

export async function readRunConfig(runDir: string): Promise<RunConfig> {
  const file = join(runDir, SPEC_FILE);
  let v: RunConfig;
  try {
    v = JSON.parse(await fsp.readFile(file, 'utf8')) as RunConfig;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(file, '', code === 'ENOENT' ? `not a run folder (no ${SPEC_FILE})` : `cannot read (${code ?? (e as Error).message})`);
  }
  if (!v || v.version !== 1 || typeof v.modelDir !== 'string' || !v.adapter || !v.data) throw new InputError(file, '', 'not a PEFT Lab run spec (version 1)');
  return v;
}

/** Appends metric records, one JSON line each, fsync'd after every append. */
export class MetricsWriter {
  private constructor(private fh: FileHandle | undefined) {}

  static async open(runDir: string): Promise<MetricsWriter> {
    return new MetricsWriter(await fsp.open(join(runDir, METRICS_FILE), 'a'));
  }

  async append(r: MetricRecord): Promise<void> {
    if (!this.fh) throw new Error('metrics file is closed');
    await this.fh.write(`${JSON.stringify(r)}\n`);
    await this.fh.sync();
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }
}

export async function readMetrics(runDir: string): Promise<MetricRecord[]> {
  let text: string;
  try {
    text = await fsp.readFile(join(runDir, METRICS_FILE), 'utf8');
  } catch {
    return [];
  }
  const out: MetricRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as MetricRecord);
    } catch {
      /* a torn last line from a killed process */
    }
  }
  return out;
}

/** Keeps the records of steps ≤ `step` (and drops a torn last line), atomically. */
export async function truncateMetrics(runDir: string, step: number): Promise<void> {
  const file = join(runDir, METRICS_FILE);
  if (!existsSync(file)) return;
  const kept = (await readMetrics(runDir)).filter((r) => r.step <= step);
  await writeFileAtomic(file, kept.map((r) => `${JSON.stringify(r)}\n`).join(''));
}

/**
 * A new run folder under `runsDir`: `<name>-YYYYMMDD-HHMMSS`, suffixed `-2`, `-3`... when taken. With
 * `claim`, the folder is created here (mkdir fails on an existing one), so two runs of one spec started
 * in the same second each get their own folder instead of racing for one.
 */
export function newRunDir(runsDir: string, name: string, now = new Date(), opts: { claim?: boolean } = {}): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}-${p(now.getHours())}${p(now.getMinutes())}${p(now.getSeconds())}`;
  if (opts.claim) mkdirSync(runsDir, { recursive: true });
  for (let i = 1; ; i++) {
    const dir = join(runsDir, i === 1 ? `${name}-${stamp}` : `${name}-${stamp}-${i}`);
    if (!opts.claim) {
      if (!existsSync(dir)) return dir;
      continue;
    }
    try {
      mkdirSync(dir);
      return dir;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}
