/**
 * Colour arithmetic for theme colours read from CSS variables (pure): parse `#rgb`, `#rrggbb`,
 * `#rrggbbaa`, `rgb()`/`rgba()`, mix, add alpha, relative luminance and contrast.
 */
export interface Rgba {
  r: number;
  g: number;
  b: number;
  a: number;
}

export function parseColor(text: string | undefined): Rgba | undefined {
  if (!text) return undefined;
  const t = text.trim().toLowerCase();
  let m = /^#([0-9a-f]{3,4})$/.exec(t);
  if (m) {
    const h = m[1]!;
    const c = (i: number) => parseInt(h[i]! + h[i]!, 16);
    return { r: c(0), g: c(1), b: c(2), a: h.length === 4 ? c(3) / 255 : 1 };
  }
  m = /^#([0-9a-f]{6})([0-9a-f]{2})?$/.exec(t);
  if (m) {
    const h = m[1]!;
    return { r: parseInt(h.slice(0, 2), 16), g: parseInt(h.slice(2, 4), 16), b: parseInt(h.slice(4, 6), 16), a: m[2] ? parseInt(m[2], 16) / 255 : 1 };
  }
  m = /^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+%?))?\s*\)$/.exec(t);
  if (m) {
    const alpha = m[4] === undefined ? 1 : m[4].endsWith('%') ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
    return { r: +m[1]!, g: +m[2]!, b: +m[3]!, a: Math.min(1, Math.max(0, alpha)) };
  }
  return undefined;
}

export function formatColor(c: Rgba): string {
  const r = (x: number) => Math.round(Math.min(255, Math.max(0, x)));
  return c.a >= 1 ? `rgb(${r(c.r)}, ${r(c.g)}, ${r(c.b)})` : `rgba(${r(c.r)}, ${r(c.g)}, ${r(c.b)}, ${Math.round(c.a * 1000) / 1000})`;
}

/** The colour with its alpha multiplied by `alpha`; unparseable colours come back unchanged. */
export function withAlpha(color: string, alpha: number): string {
  const c = parseColor(color);
  return c ? formatColor({ ...c, a: c.a * alpha }) : color;
}

/** Linear mix: t = 0 gives `a`, t = 1 gives `b`. */
export function mix(a: Rgba, b: Rgba, t: number): Rgba {
  const u = Math.min(1, Math.max(0, t));
  return { r: a.r + (b.r - a.r) * u, g: a.g + (b.g - a.g) * u, b: a.b + (b.b - a.b) * u, a: a.a + (b.a - a.a) * u };
}

/** WCAG relative luminance (alpha ignored). */
export function luminance(c: Rgba): number {
  const ch = (v: number) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * ch(c.r) + 0.7152 * ch(c.g) + 0.0722 * ch(c.b);
}

/** WCAG contrast ratio, 1..21. */
export function contrast(a: Rgba, b: Rgba): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number];
  return (hi + 0.05) / (lo + 0.05);
}

/** Of the candidates, the one with the best contrast against `background`. */
export function mostReadable(background: Rgba, candidates: readonly Rgba[]): Rgba {
  let best = candidates[0]!;
  for (const c of candidates) if (contrast(c, background) > contrast(best, background)) best = c;
  return best;
}
