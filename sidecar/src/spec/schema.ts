/**
 * Validates a parsed JSON tree (jsonc-parser nodes, which carry offsets) against the subset of
 * JSON Schema draft-07 that `schemas/peft-spec.schema.json` uses: type, properties,
 * additionalProperties, required, enum, minimum/maximum (exclusive too), minLength/maxLength,
 * pattern, items, minItems/maxItems and local `$ref`s. The published schema is the single source
 * of the spec's structure; checks that cross fields live in load.ts.
 *
 * The schema also states those cross-field rules for editors (`anyOf`, `allOf` with `if`/`then`,
 * `dependencies`, `false` for an option a kind does not take). They are not evaluated here on
 * purpose: load.ts checks the same rules and says more (which option, which kind takes what, the
 * key to underline), where a draft-07 validator could only say "Property r is not allowed".
 */
import type { Node } from 'jsonc-parser/lib/esm/main.js';

export interface JsonSchema {
  $ref?: string;
  type?: string | string[];
  description?: string;
  default?: unknown;
  properties?: Record<string, JsonSchema>;
  additionalProperties?: boolean | JsonSchema;
  required?: string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  definitions?: Record<string, JsonSchema>;
}

/** One problem: where (JSON path and the node's offset/length) and what. */
export interface SpecIssue {
  /** JSON path like `data.maxLength` or `variants[1].adapter.r`; '' for the root. */
  path: string;
  offset: number;
  length: number;
  message: string;
}

export type PathSegment = string | number;

export function formatPath(segs: readonly PathSegment[]): string {
  let out = '';
  for (const s of segs) out += typeof s === 'number' ? `[${s}]` : /^[A-Za-z_$][\w$]*$/.test(s) ? (out ? `.${s}` : s) : `[${JSON.stringify(s)}]`;
  return out;
}

export function resolveRef(root: JsonSchema, s: JsonSchema): JsonSchema {
  let cur = s;
  for (let guard = 0; cur.$ref && guard < 16; guard++) {
    const m = /^#\/definitions\/(.+)$/.exec(cur.$ref);
    const next = m ? root.definitions?.[m[1]!] : undefined;
    if (!next) throw new Error(`schema: unresolvable $ref ${cur.$ref}`);
    cur = next;
  }
  return cur;
}

/** Edit distance with adjacent transpositions (optimal string alignment), case-insensitive, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  const d: number[][] = Array.from({ length: x.length + 1 }, (_, i) => Array.from({ length: y.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      const cost = x[i - 1] === y[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && x[i - 1] === y[j - 2] && x[i - 2] === y[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[x.length]![y.length]!;
}

/** The closest candidate, if close enough to be a likely typo. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  for (const c of candidates) {
    const w = norm(word);
    const k = norm(c);
    // A prefix counts as one edit only when both are words (else "rankPatern" would suggest "r").
    const d = w === k ? 0 : Math.min(w.length, k.length) >= 3 && (k.startsWith(w) || w.startsWith(k)) ? 1 : editDistance(word, c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  return best !== undefined && bestD <= limit ? best : undefined;
}

const show = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

function nodeType(n: Node): string {
  if (n.type === 'number') return Number.isInteger(n.value) ? 'integer' : 'number';
  return n.type;
}

const TYPE_WORDS: Record<string, string> = {
  object: 'an object',
  array: 'an array',
  string: 'a string',
  number: 'a number',
  integer: 'an integer',
  boolean: 'true or false',
  null: 'null',
};

function describeNode(n: Node): string {
  switch (n.type) {
    case 'object':
      return 'an object';
    case 'array':
      return 'an array';
    default:
      return show(n.value);
  }
}

export function validateNode(root: JsonSchema, schema: JsonSchema, node: Node, path: PathSegment[], issues: SpecIssue[]): void {
  const s = resolveRef(root, schema);
  const at = (n: Node, message: string, p: PathSegment[] = path) => issues.push({ path: formatPath(p), offset: n.offset, length: n.length, message });

  // JSON allows 1e309; it parses to Infinity, which spec.json (JSON) would write back as null.
  if (node.type === 'number' && !Number.isFinite(node.value)) {
    at(node, `must be a finite number; ${String(node.value)} is out of range`);
    return;
  }
  if (s.type) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    const t = nodeType(node);
    const ok = types.includes(t) || (t === 'integer' && types.includes('number'));
    if (!ok) {
      at(node, `expected ${types.map((x) => TYPE_WORDS[x] ?? x).join(' or ')}, got ${describeNode(node)}`);
      return;
    }
  }
  if (s.enum && !s.enum.some((e) => e === node.value)) {
    const hint = typeof node.value === 'string' ? didYouMean(node.value, s.enum.filter((e): e is string => typeof e === 'string')) : undefined;
    at(node, `must be one of ${s.enum.map(show).join(', ')}; got ${describeNode(node)}${hint ? ` (did you mean ${show(hint)}?)` : ''}`);
    return;
  }
  if (node.type === 'number') {
    const v = node.value as number;
    if (s.minimum !== undefined && v < s.minimum) at(node, `must be ≥ ${s.minimum}, got ${v}`);
    else if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) at(node, `must be > ${s.exclusiveMinimum}, got ${v}`);
    else if (s.maximum !== undefined && v > s.maximum) at(node, `must be ≤ ${s.maximum}, got ${v}`);
    else if (s.exclusiveMaximum !== undefined && v >= s.exclusiveMaximum) at(node, `must be < ${s.exclusiveMaximum}, got ${v}`);
  }
  if (node.type === 'string') {
    const v = node.value as string;
    if (s.minLength !== undefined && v.length < s.minLength) at(node, s.minLength === 1 ? 'must not be empty' : `must have at least ${s.minLength} characters`);
    else if (s.maxLength !== undefined && v.length > s.maxLength) at(node, `must have at most ${s.maxLength} characters`);
    else if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) at(node, `${show(v)} does not match ${s.pattern}`);
  }
  if (node.type === 'array') {
    const items = node.children ?? [];
    if (s.minItems !== undefined && items.length < s.minItems) at(node, `needs at least ${s.minItems} item${s.minItems === 1 ? '' : 's'}, got ${items.length}`);
    if (s.maxItems !== undefined && items.length > s.maxItems) at(node, `takes at most ${s.maxItems} items, got ${items.length}`);
    if (s.items) items.forEach((child, i) => validateNode(root, s.items!, child, [...path, i], issues));
  }
  if (node.type === 'object') {
    const seen = new Set<string>();
    const props = s.properties ?? {};
    const known = Object.keys(props);
    for (const prop of node.children ?? []) {
      const [keyNode, valueNode] = prop.children ?? [];
      if (!keyNode) continue;
      const key = keyNode.value as string;
      const p = [...path, key];
      if (seen.has(key)) {
        at(keyNode, `duplicate key ${show(key)}`, p);
        continue;
      }
      seen.add(key);
      const sub = Object.prototype.hasOwnProperty.call(props, key) ? props[key] : undefined;
      if (sub) {
        if (valueNode) validateNode(root, sub, valueNode, p, issues);
      } else if (s.additionalProperties === false) {
        const hint = didYouMean(key, known);
        at(keyNode, `unknown key ${show(key)}${hint ? ` (did you mean ${show(hint)}?)` : known.length ? ` (allowed: ${known.join(', ')})` : ''}`, p);
      } else if (typeof s.additionalProperties === 'object' && valueNode) {
        validateNode(root, s.additionalProperties, valueNode, p, issues);
      }
    }
    for (const req of s.required ?? []) if (!seen.has(req)) at(node, `missing required key ${show(req)}`);
  }
}
