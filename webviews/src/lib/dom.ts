/**
 * Element building without innerHTML (no markup from data ever reaches the parser) and without
 * style attributes (the CSP forbids inline styles; CSSOM properties set from script are fine).
 */
type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | undefined | null>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'style') throw new Error('inline styles are not allowed by the CSP: use a class');
    el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, ...children);
  return el;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: Child[]): void {
  clear(el);
  append(el, ...children);
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
}

/** A labelled control: `<label>text <control></label>`. */
export function labelled(text: string, control: HTMLElement, attrs: Attrs = {}): HTMLLabelElement {
  return h('label', { class: 'control', ...attrs }, h('span', { class: 'control-label' }, text), control);
}

export function select<V extends string>(options: readonly { value: V; label: string }[], value: V, onChange: (v: V) => void, attrs: Attrs = {}): HTMLSelectElement {
  const el = h('select', attrs, ...options.map((o) => h('option', { value: o.value, selected: o.value === value }, o.label)));
  el.value = value;
  el.addEventListener('change', () => onChange(el.value as V));
  return el;
}

export function checkbox(checked: boolean, onChange: (v: boolean) => void, attrs: Attrs = {}): HTMLInputElement {
  const el = h('input', { type: 'checkbox', ...attrs });
  el.checked = checked;
  el.addEventListener('change', () => onChange(el.checked));
  return el;
}

export function button(text: string, onClick: () => void, attrs: Attrs = {}): HTMLButtonElement {
  const el = h('button', { type: 'button', ...attrs }, text);
  el.addEventListener('click', onClick);
  return el;
}
