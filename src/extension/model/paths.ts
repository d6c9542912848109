/**
 * Path containment (vscode-free). By `path.relative`, which knows the platform's separators and
 * drive letters: a `${dir}/` prefix test fails on Windows, where paths use backslashes.
 */
import * as nodePath from 'node:path';

/** The parts of `node:path` used here (`path.win32` in tests). */
export type PathApi = Pick<typeof nodePath, 'relative' | 'isAbsolute' | 'sep'>;

/** Whether `p` is `parent` or inside it. */
export function isUnder(parent: string, p: string, path: PathApi = nodePath): boolean {
  const rel = path.relative(parent, p);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** Whether `p` is one of `roots` or inside one (empty roots, which `relative` would read as the cwd, never match). */
export function isWithinAny(roots: readonly string[], p: string, path: PathApi = nodePath): boolean {
  return roots.some((r) => r !== '' && isUnder(r, p, path));
}
