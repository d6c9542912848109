/** Restoring a panel's UI settings from saved webview state (pure). */

/** Saved values replace defaults only where the type matches (a stale or tampered state cannot break the panel). */
export function mergeUI<UI extends object>(defaults: UI, saved: Record<string, unknown> | undefined): UI {
  const out = { ...defaults } as Record<string, unknown>;
  if (saved) {
    for (const [k, d] of Object.entries(defaults)) {
      const v = saved[k];
      if (v === undefined || v === null) continue;
      if (Array.isArray(d) ? Array.isArray(v) : typeof v === typeof d && !Array.isArray(v)) {
        if (typeof v === 'number' && !Number.isFinite(v)) continue;
        out[k] = v;
      }
    }
  }
  return out as UI;
}
