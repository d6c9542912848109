/**
 * Watching files the panels show: `fs.watch` for prompt updates (debounced: a writer's temp file +
 * rename or several appends fire once), plus a slow stat poll, because `fs.watch` misses changes on
 * some file systems (network mounts, some containers) and cannot watch what does not exist yet.
 */
import { watch, type FSWatcher, promises as fsp } from 'node:fs';
import type * as vscode from 'vscode';

export interface WatchOptions {
  debounceMs?: number;
  pollMs?: number;
}

/** Calls `onChange` (debounced) when anything at or inside these paths may have changed. */
export function watchPaths(paths: readonly string[], onChange: () => void, opts: WatchOptions = {}): vscode.Disposable {
  const debounceMs = opts.debounceMs ?? 80;
  let timer: NodeJS.Timeout | undefined;
  let disposed = false;
  const fire = () => {
    if (disposed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      if (!disposed) onChange();
    }, debounceMs);
  };
  const watchers = new Map<string, FSWatcher>();
  const attach = (p: string) => {
    if (watchers.has(p)) return;
    try {
      const w = watch(p, { persistent: false }, fire);
      w.on('error', () => {
        w.close();
        watchers.delete(p);
      });
      watchers.set(p, w);
    } catch {
      /* not there yet: the poll attaches later */
    }
  };
  const signatures = new Map<string, string>();
  const poll = async () => {
    for (const p of paths) {
      attach(p);
      let sig = 'missing';
      try {
        const st = await fsp.stat(p);
        sig = `${st.size}:${st.mtimeMs}`;
        if (st.isDirectory()) {
          // A directory's mtime does not change when a file inside is appended to: look one level in.
          for (const f of await fsp.readdir(p)) {
            const s = await fsp.stat(`${p}/${f}`).catch(() => undefined);
            if (s?.isFile()) sig += `|${f}:${s.size}:${s.mtimeMs}`;
          }
        }
      } catch {
        /* missing */
      }
      if (signatures.has(p) && signatures.get(p) !== sig) fire();
      signatures.set(p, sig);
    }
  };
  paths.forEach(attach);
  void poll();
  const interval = setInterval(() => void poll(), opts.pollMs ?? 1000);
  return {
    dispose() {
      disposed = true;
      clearInterval(interval);
      if (timer) clearTimeout(timer);
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}
