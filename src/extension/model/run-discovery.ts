/**
 * Finding run folders by looking (vscode-free): file watchers miss files created inside a folder
 * that is itself new on some platforms and remote setups (seen with VS Code 1.96's non-recursive
 * fallback watcher), so the runs model also looks into a few "roots" — the folders that hold run
 * folders — while anything there may change.
 */
import { promises as fsp, type Dirent } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { METRICS_FILE, pathExists, STATUS_FILE } from './runs';

/** Folders never looked into: dependencies, virtual environments, VCS data, and what a run folder holds. */
export const SKIP_DIRS: ReadonlySet<string> = new Set(['node_modules', '.git', 'venv', '__pycache__', 'site-packages', 'checkpoints', 'adapter']);

/** The one hidden folder runs live in (`npm run demo` and the runsFolder setting's example use `.peft-lab/runs`). */
const RUNS_HOME = '.peft-lab';

/** Whether a folder of this name is never looked into: SKIP_DIRS, and hidden folders (`.venv`, `.cache`, ...) but `.peft-lab`. */
export function skippedFolder(name: string): boolean {
  return SKIP_DIRS.has(name) || (name.startsWith('.') && name !== RUNS_HOME);
}

export async function isRunDir(dir: string): Promise<boolean> {
  return (await pathExists(join(dir, STATUS_FILE))) || pathExists(join(dir, METRICS_FILE));
}

/**
 * Walks the folders at most `depth` levels below `root`, calling `visit` for each entry (a folder
 * is entered when `visit` says so; never one `skippedFolder` names). Reads at most `limit`
 * directory entries in all, so a huge folder costs little.
 */
export async function walkFolders(root: string, depth: number, visit: (path: string, entry: Dirent) => boolean | Promise<boolean>, limit = 2000): Promise<void> {
  let budget = limit;
  const walk = async (dir: string, left: number): Promise<void> => {
    if (budget <= 0 || left <= 0) return;
    let entries: Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (budget-- <= 0) return;
      const child = join(dir, e.name);
      if ((await visit(child, e)) && e.isDirectory() && !skippedFolder(e.name)) await walk(child, left - 1);
    }
  };
  await walk(root, depth);
}

/**
 * Run folders at most `depth` levels below `root` (a run folder's own sub-folders are not searched),
 * except those in `known`.
 */
export async function discoverRunDirs(root: string, depth: number, known: ReadonlySet<string>, limit = 2000): Promise<string[]> {
  if ((await isRunDir(root)) && !known.has(root)) return [root];
  const found: string[] = [];
  await walkFolders(
    root,
    depth,
    async (child, e) => {
      if (!e.isDirectory() || skippedFolder(e.name) || known.has(child)) return false;
      if (!(await isRunDir(child))) return true;
      found.push(child);
      return false;
    },
    limit,
  );
  return found;
}

/** Paths a file event may be about that are never run folders (cheap filter before any stat). */
export function ignoredPath(p: string): boolean {
  return /[\\/](node_modules|\.git|\.?venv|__pycache__|site-packages)([\\/]|$)/.test(p);
}

/** Whether a path created below `base` (the runs folder) is in a folder never looked into; only the part below `base` counts. */
export function ignoredBelow(base: string, p: string): boolean {
  const rel = relative(base, p);
  return rel.split(sep).some((part) => part !== '' && part !== '..' && skippedFolder(part));
}
