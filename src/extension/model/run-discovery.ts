/**
 * Finding run folders by looking (vscode-free): file watchers miss files created inside a folder
 * that is itself new on some platforms and remote setups (seen with VS Code 1.96's non-recursive
 * fallback watcher), so the runs model also looks into a few "roots" — the folders that hold run
 * folders — while anything there may change.
 */
import { existsSync, promises as fsp, type Dirent } from 'node:fs';
import { join } from 'node:path';
import { METRICS_FILE, STATUS_FILE } from './runs';

/** Folders never looked into. */
export const SKIP_DIRS: ReadonlySet<string> = new Set(['node_modules', '.git', 'checkpoints', 'adapter']);

export function isRunDir(dir: string): boolean {
  return existsSync(join(dir, STATUS_FILE)) || existsSync(join(dir, METRICS_FILE));
}

/**
 * Walks the folders at most `depth` levels below `root`, calling `visit` for each entry (a folder
 * is entered when `visit` says so; never node_modules, .git, checkpoints, adapter). Reads at most
 * `limit` directory entries in all, so a huge folder costs little.
 */
export async function walkFolders(root: string, depth: number, visit: (path: string, entry: Dirent) => boolean, limit = 2000): Promise<void> {
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
      if (visit(child, e) && e.isDirectory() && !SKIP_DIRS.has(e.name)) await walk(child, left - 1);
    }
  };
  await walk(root, depth);
}

/**
 * Run folders at most `depth` levels below `root` (a run folder's own sub-folders are not searched),
 * except those in `known`.
 */
export async function discoverRunDirs(root: string, depth: number, known: ReadonlySet<string>, limit = 2000): Promise<string[]> {
  if (isRunDir(root) && !known.has(root)) return [root];
  const found: string[] = [];
  await walkFolders(
    root,
    depth,
    (child, e) => {
      if (!e.isDirectory() || SKIP_DIRS.has(e.name) || known.has(child)) return false;
      if (!isRunDir(child)) return true;
      found.push(child);
      return false;
    },
    limit,
  );
  return found;
}

/** Paths a created-file event may be about that are never run folders (cheap filter before any stat). */
export function ignoredPath(p: string): boolean {
  return /[\\/](node_modules|\.git)([\\/]|$)/.test(p);
}
