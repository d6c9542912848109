/**
 * From a sidecar error line to a diagnostic range (vscode-free). The sidecar's input errors name
 * the file, the JSON path and the line:column, in one of these shapes:
 *
 *   /ws/a.peft.json (adapter.r at 4:10): must be ≥ 1 (and 2 more problems)     InputError / SpecError
 *   /ws/a.peft.json (4:10): JSON syntax error: …                               no path
 *   /ws/a.peft.json (variants): compare needs "variants" …                     a path without position
 *   /ws/a.peft.json:4:10: …                                                    compiler style
 *
 * Positions are 1-based in messages, 0-based in the ranges returned (as VS Code's).
 */
import { createScanner, findNodeAtLocation, parseTree, type Node } from 'jsonc-parser/lib/esm/main.js';

export type PathSegment = string | number;

export interface SpecErrorLocation {
  file: string;
  /** 1-based, when the message gives a position. */
  line?: number;
  column?: number;
  /** The JSON path as written (e.g. `variants[0].adapter.r`), when given. */
  path?: string;
  message: string;
}

export interface Position {
  line: number;
  character: number;
}
export interface Range {
  start: Position;
  end: Position;
}

const PAREN = /^(.+?) \(([^()]*)\): (.*)$/s;
const COMPILER = /^(.+?):(\d+):(\d+):?\s+(.*)$/s;
const AT = /^(?:(.*) at )?(\d+):(\d+)$/;
/** Data files: `line 5` or `line 5, field "completion"`. */
const LINE = /^line (\d+)(?:, (.*))?$/;

/** Parses one error line; undefined when it names no file. */
export function parseSpecError(text: string): SpecErrorLocation | undefined {
  const line = text.trim();
  const p = PAREN.exec(line);
  if (p) {
    const [, file, where, message] = p as unknown as [string, string, string, string];
    const at = AT.exec(where.trim());
    if (at) {
      const [, path, l, c] = at;
      return { file, ...(path ? { path } : {}), line: Number(l), column: Number(c), message };
    }
    const ln = LINE.exec(where.trim());
    if (ln) return { file, line: Number(ln[1]), ...(ln[2] ? { path: ln[2] } : {}), message };
    // A where that is a JSON path (or a tensor name): kept as the path.
    return where.trim() ? { file, path: where.trim(), message } : { file, message };
  }
  const c = COMPILER.exec(line);
  if (c) {
    const [, file, l, col, message] = c as unknown as [string, string, string, string, string];
    return { file, line: Number(l), column: Number(col), message };
  }
  return undefined;
}

/** `adapter.r`, `variants[0].adapter`, `data["odd key"]` → segments; undefined when not a path. */
export function parseJsonPath(path: string): PathSegment[] | undefined {
  const out: PathSegment[] = [];
  const re = /(?:^|\.)([A-Za-z_$][\w$-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/gy;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(path)) !== null) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else out.push(JSON.parse(m[3]!) as string);
    end = re.lastIndex;
  }
  return end === path.length && out.length > 0 ? out : undefined;
}

/** Offset of a 1-based line/column, clamped to the text. */
export function offsetAt(text: string, line: number, column: number): number {
  let offset = 0;
  for (let l = 1; l < line; l++) {
    const nl = text.indexOf('\n', offset);
    if (nl < 0) return text.length;
    offset = nl + 1;
  }
  const lineEnd = text.indexOf('\n', offset);
  const max = lineEnd < 0 ? text.length : lineEnd;
  return Math.min(offset + Math.max(0, column - 1), max);
}

/** 0-based position of an offset. */
export function positionAt(text: string, offset: number): Position {
  let line = 0;
  let start = 0;
  const end = Math.min(offset, text.length);
  for (let i = 0; i < end; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      start = i + 1;
    }
  }
  return { line, character: end - start };
}

/** The JSON token (string with quotes, number, literal, punctuation) starting at or after `offset`. */
function tokenAt(text: string, offset: number): { offset: number; length: number } {
  const scanner = createScanner(text, true);
  scanner.setPosition(offset);
  scanner.scan();
  const start = scanner.getTokenOffset();
  const length = scanner.getTokenLength();
  // Only the token on the same line as the position counts; past the line, mark the position itself.
  if (length === 0 || text.slice(offset, start).includes('\n')) return { offset, length: 0 };
  return { offset: start, length };
}

function nodeRange(root: Node, path: PathSegment[]): { offset: number; length: number } | undefined {
  // The deepest node that exists along the path.
  for (let n = path.length; n >= 0; n--) {
    const node = findNodeAtLocation(root, path.slice(0, n));
    if (!node) continue;
    // A whole object or array is too much to underline: its key, or its opening bracket.
    if (node.type === 'object' || node.type === 'array') {
      const key = node.parent?.type === 'property' ? node.parent.children?.[0] : undefined;
      return key ? { offset: key.offset, length: key.length } : { offset: node.offset, length: 1 };
    }
    return { offset: node.offset, length: node.length };
  }
  return undefined;
}

/**
 * The range to mark in `text` for an error: the token at its line:column; else the node at its JSON
 * path; else the first character of the file.
 */
export function diagnosticRange(text: string, loc: SpecErrorLocation): Range {
  let span: { offset: number; length: number } | undefined;
  if (loc.line !== undefined && loc.column === undefined) {
    // A line without a column: the line's text, without its indentation.
    const start = offsetAt(text, loc.line, 1);
    const lineEnd = text.indexOf('\n', start);
    const lineText = text.slice(start, lineEnd < 0 ? text.length : lineEnd).replace(/\r$/, '');
    const indent = lineText.length - lineText.trimStart().length;
    span = { offset: start + indent, length: lineText.length - indent };
  } else if (loc.line !== undefined) {
    span = tokenAt(text, offsetAt(text, loc.line, loc.column ?? 1));
  } else if (loc.path) {
    const segs = parseJsonPath(loc.path);
    const root = segs ? parseTree(text, [], { allowTrailingComma: true }) : undefined;
    if (root && segs) span = nodeRange(root, segs);
  }
  span ??= { offset: 0, length: Math.min(1, text.length) };
  return { start: positionAt(text, span.offset), end: positionAt(text, span.offset + span.length) };
}
