/**
 * Command arguments to file system paths (pure). Panel commands are run from the palette (no
 * arguments), from other commands (strings or `Uri`s), from explorer menus (`uri`, `uri[]`) and
 * from the runs view (a tree item or run info carrying its folder), possibly several selected.
 */

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

function pathOf(v: unknown, depth: number): string[] {
  if (depth > 3 || v === undefined || v === null) return [];
  if (typeof v === 'string') return v.trim() ? [v.startsWith('file://') ? decodeURIComponent(v.slice('file://'.length)) : v] : [];
  if (Array.isArray(v)) return v.flatMap((x) => pathOf(x, depth + 1));
  if (!isObject(v)) return [];
  // vscode.Uri: fsPath is the file system path (`path` is the URI path, not the same on Windows).
  if (typeof v.fsPath === 'string' && typeof v.scheme === 'string') return v.scheme === 'file' || v.scheme === 'vscode-remote' ? [v.fsPath] : [];
  for (const key of ['runDir', 'dir', 'file', 'source']) if (typeof v[key] === 'string') return [v[key] as string];
  for (const key of ['resourceUri', 'uri', 'run', 'info']) if (v[key] !== undefined) return pathOf(v[key], depth + 1);
  if (typeof v.path === 'string') return [v.path];
  return [];
}

/**
 * The distinct paths named by a command's arguments, in order. A tree view passes
 * `(clicked, selected[])`: when `selected` holds several items they win over `clicked`.
 */
export function pathsFromArgs(args: readonly unknown[]): string[] {
  const [first, second] = args;
  const chosen = Array.isArray(second) && second.length > 1 ? pathOf(second, 0) : [...pathOf(first, 0), ...(Array.isArray(second) ? [] : args.slice(1).flatMap((a) => pathOf(a, 0)))];
  return [...new Set(chosen)];
}
