/**
 * A heatmap drawn on a canvas (chart.js core has no matrix chart): row and column labels, cells
 * coloured along the theme's ramp, pinned rows outlined, hover and keyboard cursor with a tooltip.
 * Hit-testing and normalisation are the pure functions of ../shared/heatmap.
 */
import { formatColor, mix, mostReadable, parseColor, type Rgba } from '../shared/color';
import { cellAt, gridLayout, type GridLayout } from '../shared/heatmap';
import type { Theme } from './theme';

export interface HeatmapData {
  rows: readonly string[];
  cols: readonly string[];
  /** Colour position of each cell, 0..1 (null: no such cell). */
  norm: readonly (readonly (number | null)[])[];
  /** Text for a cell (shown in the cell when it fits, and in the tooltip). */
  text: (row: number, col: number) => string;
  /** Tooltip lines for a cell. */
  tooltip: (row: number, col: number) => string[];
}

export interface HeatmapOptions {
  onPin?: (row: number) => void;
  isPinned?: (row: number) => boolean;
  rowHeight?: number;
  /** Accessible name of the canvas. */
  label: string;
}

export class Heatmap {
  readonly canvas: HTMLCanvasElement;
  readonly tooltip: HTMLDivElement;
  /** Scrolls a grid wider than the panel; the tooltip lives outside it so that it is never clipped. */
  private readonly scroller: HTMLDivElement;
  private data: HeatmapData | undefined;
  private theme: Theme;
  private layout: GridLayout | undefined;
  private hover: { row: number; col: number } | undefined;
  private cursor: { row: number; col: number } | undefined;
  private readonly resize: ResizeObserver;

  constructor(
    readonly container: HTMLElement,
    theme: Theme,
    private readonly opts: HeatmapOptions,
  ) {
    this.theme = theme;
    this.canvas = document.createElement('canvas');
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', opts.label);
    this.tooltip = document.createElement('div');
    this.tooltip.className = 'tooltip';
    this.tooltip.hidden = true;
    this.tooltip.setAttribute('role', 'tooltip');
    this.scroller = document.createElement('div');
    this.scroller.className = 'heatmap-scroll';
    this.scroller.append(this.canvas);
    container.append(this.scroller, this.tooltip);
    this.canvas.addEventListener('mousemove', (e) => {
      const hit = this.hit(e);
      if (hit?.row !== this.hover?.row || hit?.col !== this.hover?.col) {
        this.hover = hit;
        this.draw();
      }
      this.showTooltip(hit, e.offsetX, e.offsetY);
    });
    this.canvas.addEventListener('mouseleave', () => {
      this.hover = undefined;
      this.tooltip.hidden = true;
      this.draw();
    });
    this.canvas.addEventListener('click', (e) => {
      const hit = this.hit(e);
      if (hit) {
        this.cursor = hit;
        opts.onPin?.(hit.row);
      }
    });
    this.canvas.addEventListener('keydown', (e) => this.onKey(e));
    this.canvas.addEventListener('blur', () => {
      this.tooltip.hidden = true;
    });
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(container);
  }

  setData(data: HeatmapData): void {
    this.data = data;
    if (this.cursor && (this.cursor.row >= data.rows.length || this.cursor.col >= data.cols.length)) this.cursor = undefined;
    this.draw();
  }

  setTheme(theme: Theme): void {
    this.theme = theme;
    this.draw();
  }

  private hit(e: MouseEvent): { row: number; col: number } | undefined {
    if (!this.layout || !this.data) return undefined;
    const c = cellAt(this.layout, e.offsetX, e.offsetY);
    return c && this.data.norm[c.row]?.[c.col] !== undefined ? c : undefined;
  }

  private onKey(e: KeyboardEvent): void {
    const d = this.data;
    if (!d || !d.rows.length || !d.cols.length) return;
    const c = this.cursor ?? { row: 0, col: 0 };
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const m = moves[e.key];
    if (m) {
      this.cursor = { row: Math.min(d.rows.length - 1, Math.max(0, c.row + m[0])), col: Math.min(d.cols.length - 1, Math.max(0, c.col + m[1])) };
    } else if (e.key === 'Enter' || e.key === ' ') {
      this.cursor = c;
      this.opts.onPin?.(c.row);
    } else if (e.key === 'Escape') {
      this.cursor = undefined;
      this.tooltip.hidden = true;
      this.draw();
      return;
    } else return;
    e.preventDefault();
    this.draw();
    const l = this.layout;
    if (l && this.cursor) this.showTooltip(this.cursor, l.left + (this.cursor.col + 0.5) * l.cellW, l.top + (this.cursor.row + 1) * l.cellH);
  }

  private showTooltip(cell: { row: number; col: number } | undefined, x: number, y: number): void {
    const d = this.data;
    if (!cell || !d) {
      this.tooltip.hidden = true;
      return;
    }
    this.tooltip.replaceChildren(
      ...d.tooltip(cell.row, cell.col).map((line, i) => {
        const div = document.createElement('div');
        if (i === 0) div.className = 'tooltip-title';
        div.textContent = line;
        return div;
      }),
    );
    this.tooltip.hidden = false;
    // CSSOM positioning (allowed by the CSP, unlike style attributes).
    const maxX = this.container.clientWidth - this.tooltip.offsetWidth - 4;
    const left = x - this.scroller.scrollLeft + this.scroller.offsetLeft;
    this.tooltip.style.left = `${Math.max(0, Math.min(maxX, left + 12))}px`;
    this.tooltip.style.top = `${y + this.scroller.offsetTop + 14}px`;
    this.canvas.setAttribute('aria-description', d.tooltip(cell.row, cell.col).join(', '));
  }

  draw(): void {
    const d = this.data;
    const t = this.theme;
    const ctx = this.canvas.getContext('2d');
    if (!ctx || !d) return;
    const font = `${Math.round(t.fontSize * 0.92)}px ${t.fontFamily}`;
    ctx.font = font;
    const rowLabelW = Math.ceil(Math.max(40, ...d.rows.map((r) => ctx.measureText(r).width))) + 14;
    const width = Math.max(200, this.container.clientWidth);
    const minCell = 36;
    const colW = Math.max(minCell, (width - rowLabelW) / Math.max(1, d.cols.length));
    const colTextW = Math.max(...d.cols.map((c) => ctx.measureText(c).width), 0);
    const rotate = colTextW + 8 > colW;
    const top = rotate ? Math.min(140, Math.ceil(colTextW * 0.72) + 18) : 26;
    const rowH = this.opts.rowHeight ?? 26;
    const totalW = Math.max(width, rowLabelW + colW * d.cols.length);
    const totalH = top + rowH * d.rows.length + 4;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(totalW * dpr);
    this.canvas.height = Math.round(totalH * dpr);
    this.canvas.style.width = `${totalW}px`;
    this.canvas.style.height = `${totalH}px`;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = font;
    ctx.clearRect(0, 0, totalW, totalH);
    const layout = gridLayout(totalW, totalH, d.rows.length, d.cols.length, { left: rowLabelW, top, bottom: 4 });
    this.layout = layout;

    const fg = parseColor(t.fg) ?? { r: 204, g: 204, b: 204, a: 1 };
    const bg = parseColor(t.bg) ?? { r: 30, g: 30, b: 30, a: 1 };
    const black: Rgba = { r: 0, g: 0, b: 0, a: 1 };
    const white: Rgba = { r: 255, g: 255, b: 255, a: 1 };
    let cells = 0;

    // column labels
    ctx.fillStyle = t.fg;
    ctx.textBaseline = 'middle';
    d.cols.forEach((c, j) => {
      const x = layout.left + (j + 0.5) * layout.cellW;
      if (rotate) {
        ctx.save();
        ctx.translate(x, top - 6);
        ctx.rotate(-Math.PI / 4);
        ctx.textAlign = 'left';
        ctx.fillText(c, 0, 0);
        ctx.restore();
      } else {
        ctx.textAlign = 'center';
        ctx.fillText(c, x, top / 2);
      }
    });
    // rows
    d.rows.forEach((r, i) => {
      const y = layout.top + i * layout.cellH;
      const pinned = this.opts.isPinned?.(i) ?? false;
      ctx.textAlign = 'right';
      ctx.fillStyle = pinned ? t.focus : t.fg;
      ctx.font = pinned ? `bold ${font}` : font;
      ctx.fillText(r, rowLabelW - 8, y + layout.cellH / 2);
      ctx.font = font;
      d.cols.forEach((_, j) => {
        const x = layout.left + j * layout.cellW;
        const v = d.norm[i]?.[j];
        if (v === null || v === undefined) {
          ctx.strokeStyle = t.grid;
          ctx.lineWidth = 1;
          ctx.strokeRect(x + 1.5, y + 1.5, layout.cellW - 3, layout.cellH - 3);
          return;
        }
        cells++;
        const color = mix(t.heatLow, t.heatHigh, v);
        ctx.fillStyle = formatColor(color);
        ctx.fillRect(x + 1, y + 1, layout.cellW - 2, layout.cellH - 2);
        const text = d.text(i, j);
        if (text && ctx.measureText(text).width + 6 < layout.cellW) {
          ctx.fillStyle = formatColor(mostReadable(color, [fg, bg, black, white]));
          ctx.textAlign = 'center';
          ctx.fillText(text, x + layout.cellW / 2, y + layout.cellH / 2);
        }
      });
      if (pinned) {
        ctx.strokeStyle = t.focus;
        ctx.lineWidth = 2;
        ctx.strokeRect(layout.left + 1, y + 1, layout.cellW * d.cols.length - 2, layout.cellH - 2);
      }
    });
    const mark = (c: { row: number; col: number } | undefined, dash: number[]) => {
      if (!c) return;
      ctx.save();
      ctx.setLineDash(dash);
      ctx.strokeStyle = t.fg;
      ctx.lineWidth = 2;
      ctx.strokeRect(layout.left + c.col * layout.cellW + 1, layout.top + c.row * layout.cellH + 1, layout.cellW - 2, layout.cellH - 2);
      ctx.restore();
    };
    mark(this.hover, []);
    if (document.activeElement === this.canvas) mark(this.cursor, [4, 3]);
    this.canvas.dataset.rows = String(d.rows.length);
    this.canvas.dataset.cols = String(d.cols.length);
    this.canvas.dataset.cells = String(cells);
    this.canvas.dataset.drawn = cells > 0 ? 'true' : 'false';
  }

  dispose(): void {
    this.resize.disconnect();
  }
}

/** A small horizontal colour bar for the heatmap's legend. */
export function drawColorBar(canvas: HTMLCanvasElement, theme: Theme): void {
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  const w = 160;
  const h = 10;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  for (let x = 0; x < w; x++) {
    ctx.fillStyle = formatColor(mix(theme.heatLow, theme.heatHigh, x / (w - 1)));
    ctx.fillRect(x, 0, 1, h);
  }
  ctx.strokeStyle = theme.border;
  ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
}
