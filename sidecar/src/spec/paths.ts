/** Resolving a spec's paths against its folder, refusing any that leave the workspace root. */
import { existsSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';

/** Whether `p` is `root` or lies under it (both absolute and normalised). */
export function isInside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/** realpath of the nearest existing ancestor, with the missing tail appended. */
export function realpathLoose(p: string): string {
  let cur = resolve(p);
  const tail: string[] = [];
  for (;;) {
    if (existsSync(cur)) {
      try {
        return join(realpathSync.native(cur), ...tail.reverse());
      } catch {
        /* fall through to the parent */
      }
    }
    const parent = dirname(cur);
    if (parent === cur) return join(cur, ...tail.reverse());
    tail.push(cur.slice(parent.length).replace(/^[\\/]+/, ''));
    cur = parent;
  }
}

export type Resolved = { ok: true; path: string } | { ok: false; problem: string };

/** How to admit such a path: the root is the spec's folder unless the CLI's --workspace (or VS Code's workspace folder) sets it. */
const WIDEN = 'paths may not leave it; pass --workspace DIR to widen it, or in VS Code open a folder that holds the spec and this path';

/**
 * `p` resolved against `base`; refused when it leaves `root`, lexically (`..`, an absolute path
 * elsewhere) or through a symbolic link.
 */
export function resolveInside(root: string, base: string, p: string): Resolved {
  const abs = resolve(base, p);
  const rootAbs = resolve(root);
  if (!isInside(rootAbs, abs)) {
    return { ok: false, problem: `${JSON.stringify(p)} resolves to ${abs}, outside the workspace root ${rootAbs} (${WIDEN})` };
  }
  const real = realpathLoose(abs);
  const rootReal = realpathLoose(rootAbs);
  if (!isInside(rootReal, real)) {
    return { ok: false, problem: `${JSON.stringify(p)} leads through a symbolic link to ${real}, outside the workspace root ${rootReal} (${WIDEN})` };
  }
  return { ok: true, path: abs };
}
