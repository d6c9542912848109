/** Reading rows from JSONL, CSV and Parquet files, each row remembering its file and place for error messages. */
import { parse as parseCsv } from 'csv-parse/sync';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { promises as fsp } from 'node:fs';
import { errorMessage, InputError } from '../errors';
import { readInputFileAsync, readInputText } from '../io/read-input';

export interface Row {
  file: string;
  /** 1-based line of the row (its last line for a CSV record spanning several); a Parquet file's row number. */
  line: number;
  /** What `line` counts: text lines, or a Parquet file's rows. */
  unit?: 'row';
  fields: Record<string, unknown>;
}

/** The data formats whose files hold rows. */
export type RowFormat = 'jsonl' | 'csv' | 'parquet';

/** One JSON object per line; blank lines are skipped. */
export function readJsonl(file: string): Row[] {
  const text = readInputText(file).replace(/^\uFEFF/, '');
  const rows: Row[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new InputError(file, `line ${i + 1}`, `not valid JSON (${(e as Error).message})`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new InputError(file, `line ${i + 1}`, `expected a JSON object, got ${Array.isArray(v) ? 'an array' : JSON.stringify(v)}`);
    rows.push({ file, line: i + 1, fields: v as Record<string, unknown> });
  });
  return rows;
}

/** The rows of a JSONL or CSV data file (Parquet is read asynchronously: readRowsAsync). */
export function readRows(format: RowFormat | 'images', file: string): Row[] {
  if (format === 'parquet') throw new Error(`${file}: Parquet rows are read with readRowsAsync`);
  return format === 'csv' ? readCsv(file) : readJsonl(file);
}

/** The rows of a JSONL, CSV or Parquet data file. */
export async function readRowsAsync(format: RowFormat | 'images', file: string): Promise<Row[]> {
  return format === 'parquet' ? readParquet(file) : readRows(format, file);
}

/**
 * A Parquet file's rows (as Hugging Face datasets and pandas store them: snappy, zstd, gzip, brotli,
 * lz4 or uncompressed pages, the codecs other than snappy from hyparquet-compressors; lists
 * and structs such as chat `messages` come out as arrays and objects). 64-bit integers become
 * numbers where exact (class labels), else strings.
 */
export async function readParquet(file: string): Promise<Row[]> {
  const bytes = await readInputFileAsync(file);
  let objects: Record<string, unknown>[];
  try {
    objects = await parquetReadObjects({ file: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer, compressors });
  } catch (e) {
    throw new InputError(file, '', `not a readable Parquet file (${errorMessage(e)})`);
  }
  return objects.map((o, i) => ({ file, line: i + 1, unit: 'row', fields: plainValue(o) as Record<string, unknown> }));
}

/** bigint → number (exact) or string, through arrays and objects. */
function plainValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Array.isArray(v)) return v.map(plainValue);
  if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainValue(x)]));
  return v;
}

/** A CSV file with a header row; every field is a string. */
export function readCsv(file: string): Row[] {
  const text = readInputText(file);
  let records: { record: Record<string, string>; info: { lines: number } }[];
  try {
    records = parseCsv(text, { columns: true, info: true, bom: true, skip_empty_lines: true, trim: false }) as typeof records;
  } catch (e) {
    const err = e as Error & { lines?: number; code?: string };
    // csv-parse reports an unclosed quote at the end of the file; the user needs where it opened.
    const open = err.code === 'CSV_QUOTE_NOT_CLOSED' ? unclosedQuoteLine(text) : undefined;
    if (open !== undefined) throw new InputError(file, `line ${open}`, 'quote not closed: the quoted field that opens here runs to the end of the file');
    throw new InputError(file, err.lines !== undefined ? `line ${err.lines}` : '', err.message.replace(/^Invalid Record Length: /, '').split('\n')[0]!);
  }
  return records.map(({ record, info }) => ({ file, line: info.lines, fields: record }));
}

/** The 1-based line where the last quote left open at the end of `text` opened, if one is. */
function unclosedQuoteLine(text: string): number | undefined {
  let line = 1;
  let inQuote = false;
  let opened = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') line++;
    else if (c === '"') {
      if (inQuote && text[i + 1] === '"') i++; // "" inside quotes: an escaped quote
      else {
        inQuote = !inQuote;
        if (inQuote) opened = line;
      }
    }
  }
  return inQuote ? opened : undefined;
}

/**
 * The field names of a data file's first row, read cheaply (the first line of JSONL, the CSV
 * header, a Parquet file's schema): what a picker offers. Undefined when it cannot tell.
 */
export async function firstRowFields(file: string): Promise<string[] | undefined> {
  try {
    if (/\.parquet$/iu.test(file)) {
      const rows = await parquetReadObjects({ file: await asyncBufferFromFile(file), rowStart: 0, rowEnd: 1, compressors });
      return rows[0] ? Object.keys(rows[0]) : undefined;
    }
    const head = await headText(file, 1 << 16);
    const line = head.replace(/^\uFEFF/u, '').split(/\r?\n/u).find((l) => l.trim() !== '');
    if (line === undefined) return undefined;
    if (/\.csv$/iu.test(file)) return (parseCsv(line) as string[][])[0];
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? Object.keys(v) : undefined;
  } catch {
    return undefined;
  }
}

/** The first `bytes` of a file as text. */
async function headText(file: string, bytes: number): Promise<string> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}
