/** JSON files read by the loaders (config.json and the like): syntax errors located by line:column. */
import { parse, printParseErrorCode, type ParseError, type ParseErrorCode } from 'jsonc-parser/lib/esm/main.js';
import { InputError } from '../errors';

/**
 * Parses `text` (read from `file`) as strict JSON. A syntax error becomes an InputError shaped like a
 * spec's, `FILE (LINE:COLUMN): JSON syntax error: …`, which the extension turns into a diagnostic.
 */
export function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    if (text.trim() === '') throw new InputError(file, '', 'the file is empty');
    // JSON.parse gives a character offset at best: jsonc-parser (strict settings) finds the place.
    const errors: ParseError[] = [];
    try {
      parse(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
    } catch {
      /* absurd nesting overflows its recursion: keep JSON.parse's message */
    }
    const first = errors[0];
    if (!first) throw new InputError(file, '', `invalid JSON: ${(e as Error).message}`);
    const lc = lineColumn(text, first.offset);
    throw new InputError(file, `${lc.line}:${lc.column}`, `JSON syntax error: ${describeParseError(first.error)}`);
  }
}

/** 1-based line and column of an offset. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let start = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      start = i + 1;
    }
  }
  return { line, column: offset - start + 1 };
}

/** jsonc-parser's error code in words ("CommaExpected" → "comma expected"). */
export function describeParseError(code: ParseErrorCode): string {
  return printParseErrorCode(code)
    .replace(/([a-z])([A-Z])/gu, '$1 $2')
    .toLowerCase();
}
