/**
 * Colours from VS Code's theme CSS variables, read at run time and re-read when the theme changes
 * (VS Code swaps the body's `vscode-light` / `vscode-dark` / `vscode-high-contrast` class and
 * rewrites the variables on <html>).
 */
import { mix, parseColor, withAlpha, type Rgba } from '../shared/color';

export type ThemeKind = 'light' | 'dark' | 'high-contrast' | 'high-contrast-light';

export interface Theme {
  kind: ThemeKind;
  /** Text, muted text, background, chart grid lines, borders, focus ring. */
  fg: string;
  muted: string;
  bg: string;
  grid: string;
  border: string;
  focus: string;
  fontFamily: string;
  fontSize: number;
  /** Series colours in order (blue, orange, green, purple, red, yellow). */
  series: string[];
  /** Heatmap ramp ends: low (near the background) and high (the accent). */
  heatLow: Rgba;
  heatHigh: Rgba;
  /** Line width for data (thicker in high contrast). */
  lineWidth: number;
}

const css = (name: string): string => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || getComputedStyle(document.body).getPropertyValue(name).trim();

export function themeKind(): ThemeKind {
  const c = document.body.classList;
  if (c.contains('vscode-high-contrast-light')) return 'high-contrast-light';
  if (c.contains('vscode-high-contrast')) return 'high-contrast';
  if (c.contains('vscode-light')) return 'light';
  return 'dark';
}

export function readTheme(): Theme {
  const kind = themeKind();
  const light = kind === 'light' || kind === 'high-contrast-light';
  const hc = kind.startsWith('high-contrast');
  const pick = (names: string[], fallback: string) => {
    for (const n of names) {
      const v = css(n);
      if (v) return v;
    }
    return fallback;
  };
  const fg = pick(['--vscode-editor-foreground', '--vscode-foreground'], light ? '#1f1f1f' : '#cccccc');
  const bg = pick(['--vscode-editor-background'], light ? '#ffffff' : '#1e1e1e');
  const border = pick(['--vscode-contrastBorder', '--vscode-panel-border', '--vscode-widget-border'], light ? '#d0d0d0' : '#3c3c3c');
  const series = [
    pick(['--vscode-charts-blue'], light ? '#1a85ff' : '#3794ff'),
    pick(['--vscode-charts-orange'], '#d18616'),
    pick(['--vscode-charts-green'], light ? '#388a34' : '#89d185'),
    pick(['--vscode-charts-purple'], light ? '#652d90' : '#b180d7'),
    pick(['--vscode-charts-red'], light ? '#e51400' : '#f14c4c'),
    pick(['--vscode-charts-yellow'], light ? '#bf8803' : '#cca700'),
  ];
  const bgRgb = parseColor(bg) ?? (light ? { r: 255, g: 255, b: 255, a: 1 } : { r: 30, g: 30, b: 30, a: 1 });
  const accent = parseColor(series[0]) ?? { r: 55, g: 148, b: 255, a: 1 };
  const fgRgb = parseColor(fg) ?? { r: 204, g: 204, b: 204, a: 1 };
  return {
    kind,
    fg,
    muted: pick(['--vscode-descriptionForeground'], fg),
    bg,
    // Grid lines recede behind the data (full strength in high contrast).
    grid: hc ? pick(['--vscode-charts-lines'], fg) : withAlpha(pick(['--vscode-charts-lines'], light ? 'rgba(0, 0, 0, 0.6)' : 'rgba(255, 255, 255, 0.6)'), 0.45),
    border,
    focus: pick(['--vscode-focusBorder'], series[0]!),
    fontFamily: pick(['--vscode-font-family'], 'sans-serif'),
    fontSize: parseFloat(pick(['--vscode-font-size'], '13')) || 13,
    series,
    // The ramp starts a little off the background so that a zero cell is still visible against it.
    heatLow: mix(bgRgb, fgRgb, hc ? 0.15 : 0.06),
    heatHigh: accent,
    lineWidth: hc ? 2.5 : 1.75,
  };
}

/** Calls `onChange` (once per animation frame at most) when the theme class or variables change. */
export function watchTheme(onChange: (t: Theme) => void): void {
  let pending = false;
  const fire = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      onChange(readTheme());
    });
  };
  const observer = new MutationObserver(fire);
  observer.observe(document.body, { attributes: true, attributeFilter: ['class', 'data-vscode-theme-kind'] });
  observer.observe(document.documentElement, { attributes: true, attributeFilter: ['style', 'class'] });
}
