/**
 * One writer per run folder: `<run folder>/.lock` holds the pid (and host) of the process whose
 * trainer owns the folder, created with `wx` (fails if it exists) and removed when the run ends.
 * A lock whose pid is dead (a SIGKILLed run) is stale and taken over; a live one makes a second
 * trainer, in another process or in the same sidecar, fail at once with "run folder is in use by
 * pid N" before it writes anything.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { InputError } from '../errors';

export const LOCK_FILE = '.lock';

interface LockInfo {
  pid: number;
  host: string;
  token: string;
  startedAt: string;
}

/** Lock files this process holds (one trainer per folder inside the process, too). */
const held = new Set<string>();

export interface RunLock {
  readonly file: string;
  /** Removes the lock, if it is still ours. Idempotent. */
  release(): Promise<void>;
}

/**
 * Whether a process with this pid exists (EPERM: it exists but belongs to someone else). A zombie
 * (killed, not yet reaped by its parent) answers kill(pid, 0) like a live process, yet will never
 * touch the folder again: on Linux its /proc state says so.
 */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return !isDeadState(procState(pid));
}

/** The state letter in /proc/PID/stat (Linux), or undefined where there is none to read. */
function procState(pid: number): string | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    return procStatState(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined; // gone meanwhile, or no /proc: trust kill()
  }
}

/** The state field of a /proc/PID/stat line: after the command name, which may hold spaces and ')'. */
export function procStatState(stat: string): string | undefined {
  const end = stat.lastIndexOf(')');
  return end < 0 ? undefined : /^\s*(\S)/.exec(stat.slice(end + 1))?.[1];
}

/** Z: zombie, X: dead (being reaped). */
const isDeadState = (state: string | undefined) => state === 'Z' || state === 'X';

function parseLock(text: string): LockInfo | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (v && typeof v.pid === 'number' && typeof v.token === 'string') return { pid: v.pid, host: typeof v.host === 'string' ? v.host : '', token: v.token, startedAt: String(v.startedAt ?? '') };
  } catch {
    /* torn or foreign */
  }
  return undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Takes the run folder's lock for this process, or throws an InputError naming the folder and the
 * pid that holds it. The folder must exist.
 */
export async function acquireRunLock(runDir: string): Promise<RunLock> {
  const dir = resolve(runDir);
  const file = join(dir, LOCK_FILE);
  const mine: LockInfo = { pid: process.pid, host: hostname(), token: randomBytes(8).toString('hex'), startedAt: new Date().toISOString() };
  const busy = (pid: number, extra = '') =>
    new InputError(
      dir,
      '',
      `run folder is in use by pid ${pid}${extra} (${LOCK_FILE}): wait for that run to end or stop it, or pick another run folder${pid === process.pid ? '' : ` (if pid ${pid} is no PEFT Lab run, delete ${LOCK_FILE})`}`,
    );

  for (let attempt = 0; attempt < 20; attempt++) {
    if (held.has(file)) throw busy(process.pid, ', another job of this process');
    try {
      const fh = await fsp.open(file, 'wx', 0o644);
      try {
        await fh.writeFile(`${JSON.stringify(mine)}\n`, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      held.add(file);
      let released = false;
      return {
        file,
        async release() {
          if (released) return;
          released = true;
          held.delete(file);
          try {
            const now = parseLock(await fsp.readFile(file, 'utf8'));
            if (now?.token === mine.token) await fsp.rm(file, { force: true });
          } catch {
            /* already gone */
          }
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new InputError(dir, '', `cannot create the run folder lock ${LOCK_FILE} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    }
    // Someone holds (or held) it: live owner → busy; dead owner or unreadable lock → stale, take over.
    let text: string;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch {
      continue; // removed meanwhile: try again
    }
    const info = parseLock(text);
    if (!info) {
      // A lock being written right now reads empty for an instant; one that stays unreadable is debris.
      if (attempt < 3) {
        await sleep(25);
        continue;
      }
    } else if (info.host && info.host !== mine.host) {
      throw busy(info.pid, ` on host ${info.host}`);
    } else if (info.pid !== process.pid && pidAlive(info.pid)) {
      throw busy(info.pid);
    }
    // Stale: remove it only if it is still the lock we judged (never a fresh one another process just took).
    try {
      if ((await fsp.readFile(file, 'utf8')) === text) await fsp.rm(file, { force: true });
    } catch {
      /* gone already */
    }
  }
  throw new InputError(dir, '', `could not take the run folder lock ${LOCK_FILE} (it keeps changing hands)`);
}
