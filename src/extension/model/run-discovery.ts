/**
 * Finding run folders by looking (vscode-free): file watchers miss files created inside a folder
 * that is itself new on some platforms and remote setups (seen with VS Code 1.96's non-recursive
 * fallback watcher), so the runs model also looks into a few "roots" — the folders that hold run
 * folders — while anything there may change.
 */
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { METRICS_FILE, STATUS_FILE } from './runs';

/** Folders never looked into. */
export const SKIP_DIRS: ReadonlySet<string> = new Set(['node_modules', '.git', 'checkpoints', 'adapter']);

export function isRunDir(dir: string): boolean {
  return existsSync(join(dir, STATUS_FILE)) || existsSync(join(dir, METRICS_FILE));
}

/**
 * Run folders at most `depth` levels below `root` (a run folder's own sub-folders are not searched;
 * nor are node_modules, .git, checkpoints, adapter), except those in `known`. Reads at most
 * `limit` directory entries in all, so a huge folder costs little.
 */
export async function discoverRunDirs(root: string, depth: number, known: ReadonlySet<string>, limit = 2000): Promise<string[]> {
  const found: string[] = [];
  let budget = limit;
  const visit = async (dir: string, left: number): Promise<void> => {
    if (budget <= 0 || left <= 0) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (budget-- <= 0) return;
      if (!e.isDirectory() || SKIP_DIRS.has(e.name)) continue;
      const child = join(dir, e.name);
      if (known.has(child)) continue;
      if (isRunDir(child)) found.push(child);
      else await visit(child, left - 1);
    }
  };
  if (isRunDir(root) && !known.has(root)) return [root];
  await visit(root, depth);
  return found;
}

/** Paths a created-file event may be about that are never run folders (cheap filter before any stat). */
export function ignoredPath(p: string): boolean {
  return /[\\/](node_modules|\.git)([\\/]|$)/.test(p);
}
