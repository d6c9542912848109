/**
 * Fuzzing the data pipeline (sidecar/src/data/): JSONL and CSV files with bad UTF-8, empty rows,
 * missing or mistyped fields, labels out of range, CSV quoting errors, broken JSON lines, stray
 * bytes and truncation, plus 10 MB single lines; image folders with corrupt PNG / JPEG files
 * (truncated, flipped bytes, absurd dimensions, bad CRCs) and odd folder layouts (dangling links,
 * files where folders belong). Every case must end, within a time bound, in examples that keep the
 * pipeline's promises (ids inside the vocabulary, rows within the max length, labels inside the
 * model's classes, finite pixels of the right size) or in a one-line InputError naming the file
 * (and, for a row, its line).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as jpeg from 'jpeg-js';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { PNG } from 'pngjs';
import { after, before, describe, it } from 'node:test';
import { initBackend } from '../../sidecar/src/backend';
import { disposeTrainBatch, makeBatch } from '../../sidecar/src/data/batch';
import { loadData, type Example, type LoadedData, type ModelDataInfo } from '../../sidecar/src/data/dataset';
import { decodeImage, toPixelValues } from '../../sidecar/src/data/images';
import { loadTokenizer, type DataTokenizer } from '../../sidecar/src/data/tokenizer';
import { InputError } from '../../sidecar/src/errors';
import type { DataFormat, DataSpec } from '../../sidecar/src/spec/types';
import { fuzzCases, int, pick, rng, Tally } from '../helpers/fuzz';

const root = mkdtempSync(join(tmpdir(), 'peft-fuzz-data-'));
after(() => rmSync(root, { recursive: true, force: true }));
const SPEC_FILE = join(root, 'spec.peft.json');

let byte: DataTokenizer;
let words: DataTokenizer;
before(async () => {
  await initBackend('cpu', () => undefined);
  byte = loadTokenizer(join(root, 'no-model'));
  const wl = join(root, 'wordlevel');
  mkdirSync(wl);
  const vocab: Record<string, number> = { '[UNK]': 0, '[PAD]': 1, '[CLS]': 2, '[SEP]': 3 };
  for (const w of ['good', 'bad', 'film', 'fun', 'dull', 'the', 'a', 'cat', 'sat', '+', '=', ...'0123456789']) vocab[w] = Object.keys(vocab).length;
  writeFileSync(
    join(wl, 'tokenizer.json'),
    JSON.stringify({
      version: '1.0',
      added_tokens: ['[UNK]', '[PAD]', '[CLS]', '[SEP]'].map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      normalizer: { type: 'Lowercase' },
      pre_tokenizer: { type: 'Whitespace' },
      post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }], pair: [], special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } } },
      decoder: null,
      model: { type: 'WordLevel', vocab, unk_token: '[UNK]' },
    }),
  );
  writeFileSync(join(wl, 'tokenizer_config.json'), JSON.stringify({ pad_token: '[PAD]', eos_token: '[SEP]' }));
  words = loadTokenizer(wl);
});

// ---- rows ------------------------------------------------------------------------------------

interface Setup {
  name: string;
  info: ModelDataInfo;
  tok: () => DataTokenizer;
  format: 'jsonl' | 'csv';
  rows: (r: () => number) => Record<string, unknown>[];
  extra?: Partial<DataSpec>;
}
const WORDS = ['the cat sat', 'a good film', 'bad dull film', 'fun', 'the the the'];
const SETUPS: Setup[] = [
  { name: 'lm-text', info: { task: 'causal-lm', modelType: 'gpt2', vocabSize: 128, maxPositions: 24 }, tok: () => byte, format: 'jsonl', rows: (r) => [{ text: `${pick(r, WORDS)} ${int(r, 0, 99)}` }] },
  { name: 'lm-prompt', info: { task: 'causal-lm', modelType: 'gpt2', vocabSize: 257, maxPositions: 16 }, tok: () => byte, format: 'jsonl', rows: (r) => [{ prompt: `${int(r, 0, 9)}+${int(r, 0, 9)}=`, completion: `${int(r, 0, 18)}` }], extra: { evalSplit: 0.25 } },
  { name: 'lm-words', info: { task: 'causal-lm', modelType: 'llama', vocabSize: 30, maxPositions: 12 }, tok: () => words, format: 'jsonl', rows: (r) => [{ text: pick(r, WORDS) }] },
  { name: 'cls-names', info: { task: 'sequence-classification', modelType: 'bert', vocabSize: 257, maxPositions: 32, numLabels: 3, label2id: { LABEL_0: 0, LABEL_1: 1, LABEL_2: 2 } }, tok: () => byte, format: 'jsonl', rows: (r) => [{ text: pick(r, WORDS), label: pick(r, ['pos', 'neg']) }] },
  { name: 'cls-ids', info: { task: 'sequence-classification', modelType: 'bert', vocabSize: 30, maxPositions: 8, numLabels: 2, label2id: { neg: 0, pos: 1 } }, tok: () => words, format: 'jsonl', rows: (r) => [{ text: pick(r, WORDS), label: int(r, 0, 1) }] },
  { name: 'csv-cls', info: { task: 'sequence-classification', modelType: 'bert', vocabSize: 257, maxPositions: 32, numLabels: 3 }, tok: () => byte, format: 'csv', rows: (r) => [{ text: pick(r, WORDS), label: String(int(r, 0, 2)) }] },
  { name: 'csv-prompt', info: { task: 'causal-lm', modelType: 'gpt2', vocabSize: 257, maxPositions: 20 }, tok: () => byte, format: 'csv', rows: (r) => [{ prompt: `q${int(r, 0, 9)}, "x"`, completion: `a${int(r, 0, 9)}` }] },
];

function csvCell(v: unknown): string {
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
function serialize(format: 'jsonl' | 'csv', rows: Record<string, unknown>[]): string {
  if (format === 'jsonl') return rows.map((x) => JSON.stringify(x)).join('\n') + '\n';
  const cols = [...new Set(rows.flatMap((x) => Object.keys(x)))];
  return [cols.join(','), ...rows.map((x) => cols.map((c) => (x[c] === undefined ? '' : csvCell(x[c]))).join(','))].join('\n') + '\n';
}

const BAD_UTF8 = [[0xff], [0xfe, 0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0x80, 0x80], [0xe2, 0x82]];
const BAD_LABELS: unknown[] = [-1, 3, 99, 1.5, '9', '', null, true, 'LABEL_7', 'neg ', 'POS', [], {}, 2 ** 53, -0, '01', '1e3', 'pos\u0000'];
const BAD_TEXT: unknown[] = [null, 1, true, [], {}, ['a'], '', ' ', '\u0000', '\ud800', 'é', '🙂', 'x'.repeat(500)];
const CSV_DAMAGE = ['"', '"unclosed,1', 'a"b,1', '"a""b",1', 'x,y,z,w', 'only', ',', '\r', '"q"x,1', '""', 'a,"b\nc', '\ufeffb,1', '\u0000,1'];
const JSONL_DAMAGE = ['[1,2]', '1', 'null', '"str"', '{"text": "a"', '{"text": NaN}', '// c', '{"text":"a"}{"text":"b"}', '{"text": 1e400}', '{,}', '{"text":"a",}', '\ufeff{"text":"b"}', '{"label": 1e309, "text": "a"}'];

type RowMutation = (r: () => number, s: Setup, rows: Record<string, unknown>[]) => string | Buffer;
const ROW_MUTATIONS: Record<string, RowMutation> = {
  badUtf8: (r, s, rows) => {
    const b = Buffer.from(serialize(s.format, rows));
    const at = int(r, 0, b.length - 1);
    return Buffer.concat([b.subarray(0, at), Buffer.from(pick(r, BAD_UTF8)), b.subarray(at)]);
  },
  emptyRows: (r, s, rows) => {
    const lines = serialize(s.format, rows).split('\n');
    for (let i = 0; i < int(r, 1, 4); i++) lines.splice(int(r, s.format === 'csv' ? 1 : 0, lines.length), 0, pick(r, ['', ' ', '\r', '{}', '\t', '{"text":""}', ',', ',,', '""']));
    return r() < 0.1 ? lines.map(() => '').join('\n') : lines.join('\n');
  },
  missingField: (r, s, rows) => {
    const row = pick(r, rows);
    delete row[pick(r, Object.keys(row))];
    return serialize(s.format, rows);
  },
  wrongType: (r, s, rows) => {
    const row = pick(r, rows);
    row[pick(r, Object.keys(row))] = structuredClone(pick(r, BAD_TEXT));
    return serialize(s.format, rows);
  },
  badLabel: (r, s, rows) => {
    const row = pick(r, rows);
    row.label = structuredClone(pick(r, BAD_LABELS));
    return serialize(s.format, rows);
  },
  renamedField: (r, s, rows) => serialize(s.format, rows.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [r() < 0.3 ? pick(r, [k.toUpperCase(), `${k} `, '', 'txt']) : k, v])))),
  brokenLine: (r, s, rows) => {
    const lines = serialize(s.format, rows).split('\n');
    lines.splice(int(r, s.format === 'csv' ? 1 : 0, lines.length - 1), 0, s.format === 'csv' ? pick(r, CSV_DAMAGE) : pick(r, JSONL_DAMAGE));
    return lines.join(r() < 0.2 ? '\r\n' : '\n');
  },
  csvHeader: (r, s, rows) => {
    const lines = serialize('csv', rows).split('\n');
    lines[0] = pick(r, ['', 'text,text', 'text,label,label', '"text', 'a,b', '\ufefftext,label', 'text;label', ',', lines[0]!.toUpperCase()]);
    return s.format === 'csv' ? lines.join('\n') : serialize(s.format, rows);
  },
  truncate: (r, s, rows) => {
    const b = Buffer.from(serialize(s.format, rows));
    return b.subarray(0, int(r, 0, b.length - 1));
  },
  strayBytes: (r, s, rows) => {
    const b = Buffer.from(serialize(s.format, rows));
    for (let i = 0; i < int(r, 1, 6); i++) b[int(r, 0, b.length - 1)] = pick(r, [0x00, 0x22, 0x2c, 0x0a, 0x0d, 0x7b, 0x7d, 0x5c, 0xff, int(r, 0, 255)]);
    return b;
  },
  longRows: (r, s, rows) => {
    const row = pick(r, rows);
    const k = pick(r, Object.keys(row).filter((x) => x !== 'label'));
    row[k] = `${String(row[k])} ${'the cat sat '.repeat(int(r, 10, 2000))}`;
    return serialize(s.format, rows);
  },
  manyRows: (r, s, rows) => serialize(s.format, Array.from({ length: pick(r, [1, 2, 5000]) }, (_, i) => rows[i % rows.length]!)),
};

function checkLoaded(d: LoadedData, s: Setup, caseId: string): void {
  assert.ok(d.train.length > 0, `${caseId}: no training rows but no error`);
  const n = s.info.numLabels ?? 0;
  for (const e of [...d.train, ...d.eval]) {
    assert.notEqual(e.kind, 'image');
    if (e.kind === 'image') continue;
    assert.ok(e.ids.length >= 1 && e.ids.length <= d.maxLength, `${caseId}: row of ${e.ids.length} tokens (max ${d.maxLength})`);
    for (const id of e.ids) assert.ok(Number.isInteger(id) && id >= 0 && id < s.info.vocabSize, `${caseId}: token id ${id} outside the vocabulary`);
    if (e.kind === 'lm') {
      assert.equal(e.labels.length, e.ids.length);
      for (const l of e.labels) assert.ok(l === -100 || (l >= 0 && l < s.info.vocabSize), `${caseId}: label ${l}`);
      assert.ok([...e.labels].slice(1).some((l) => l !== -100), `${caseId}: a row with nothing to learn`);
    } else assert.ok(Number.isInteger(e.label) && e.label >= 0 && e.label < n, `${caseId}: class ${e.label} of ${n}`);
  }
}

/** CPU milliseconds of this process since `t0`: a per-case bound that a loaded machine does not break. */
const cpuMs = (t0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(t0);
  return (c.user + c.system) / 1000;
};

/** The file an error names (train, eval, or the spec for spec-level problems). */
const named = (e: unknown, files: string[]): string => files.find((f) => e instanceof Error && e.message.includes(f)) ?? files[0]!;

describe('fuzz: data rows (JSONL, CSV)', () => {
  const tally = new Tally('data rows');
  const byKind = new Map<string, Map<string, number>>();
  after(() => {
    process.stderr.write(`${tally.summary()}\n`);
    process.stderr.write(`data rows by mutation: ${[...byKind].map(([k, m]) => `${k} [${[...m].map(([o, c]) => `${o} ${c}`).join(', ')}]`).join('; ')}\n`);
  });

  const N = fuzzCases(3000);
  it(`${N} mutated data files give checked examples or a one-line InputError naming the file (and line)`, () => {
    const r = rng(4242);
    const kinds = Object.keys(ROW_MUTATIONS);
    const dir = join(root, 'rows');
    mkdirSync(dir, { recursive: true });
    for (let i = 0; i < N; i++) {
      const kind = kinds[i % kinds.length]!;
      const s = pick(r, SETUPS);
      const rows = Array.from({ length: int(r, 1, 12) }, () => s.rows(r)[0]!);
      const train = join(dir, `train.${s.format}`);
      const ev = join(dir, `eval.${s.format}`);
      writeFileSync(train, ROW_MUTATIONS[kind]!(r, s, rows));
      const useEval = r() < 0.25;
      if (useEval) writeFileSync(ev, ROW_MUTATIONS[pick(r, kinds)]!(r, s, Array.from({ length: int(r, 1, 4) }, () => s.rows(r)[0]!)));
      const data: DataSpec & { format: DataFormat } = { format: s.format, train, textField: 'text', promptField: 'prompt', completionField: 'completion', labelField: 'label', ...s.extra, ...(useEval ? { eval: ev, evalSplit: undefined } : {}) };
      if (r() < 0.05) data.maxLength = pick(r, [2, 3, 1000]);
      const caseId = `case ${i} (${s.name}, ${kind})`;
      const t0 = process.cpuUsage();
      let outcome: string;
      try {
        checkLoaded(loadData({ data, seed: i, specFile: SPEC_FILE }, s.info, s.tok()), s, caseId);
        tally.ok();
        outcome = 'valid';
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        tally.error(e, named(e, [train, ev, SPEC_FILE]), ['InputError'], caseId);
        const ie = e as InputError;
        // A problem inside a row names its line (a problem of the whole set, like too many distinct labels, names the field).
        if (/field|not valid JSON|expected a JSON object|label|token id/.test(ie.problem) && !/distinct labels/.test(ie.problem) && ie.file !== SPEC_FILE) assert.match(ie.where, /line \d+/, `${caseId}: ${ie.message}`);
        outcome = ie.where.startsWith('line') ? 'InputError at a line' : 'InputError';
      }
      const ms = cpuMs(t0);
      assert.ok(ms < 2000, `${caseId} took ${Math.round(ms)} ms of CPU`);
      const m = byKind.get(kind) ?? new Map<string, number>();
      m.set(outcome, (m.get(outcome) ?? 0) + 1);
      byKind.set(kind, m);
    }
    assert.ok((tally.counts.get('InputError') ?? 0) > N / 4);
    assert.ok((tally.counts.get('valid') ?? 0) > N / 20, 'some mutations leave valid data');
  });

  it('10 MB single lines (JSONL text, JSONL prompt, CSV field, word tokenizer) are truncated or refused in time', () => {
    const big = 'the cat sat on the mat. '.repeat(Math.ceil((10 * 1024 * 1024) / 24));
    const cases: [string, Setup, string][] = [
      ['jsonl text', SETUPS[0]!, JSON.stringify({ text: big }) + '\n' + JSON.stringify({ text: 'short one' })],
      ['jsonl prompt', SETUPS[1]!, JSON.stringify({ prompt: big, completion: '4' }) + '\n' + JSON.stringify({ prompt: '1+1=', completion: '2' })],
      ['csv field', SETUPS[5]!, `text,label\n"${big}",1\nshort,0\n`],
      ['words', SETUPS[2]!, JSON.stringify({ text: big }) + '\n'],
      ['no newline, not JSON', SETUPS[0]!, 'x'.repeat(10 * 1024 * 1024)],
    ];
    for (const [name, s, content] of cases) {
      const f = join(root, `big-${name.replace(/\W/g, '-')}.${s.format}`);
      writeFileSync(f, content);
      const t0 = process.cpuUsage();
      try {
        const d = loadData({ data: { format: s.format, train: f, textField: 'text', promptField: 'prompt', completionField: 'completion', labelField: 'label' }, seed: 1, specFile: SPEC_FILE }, s.info, s.tok());
        checkLoaded(d, s, name);
        assert.ok(d.truncated >= 1 || d.dropped >= 1, `${name}: the 10 MB row was neither truncated nor dropped`);
        tally.ok();
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        tally.error(e, f, ['InputError'], name);
      }
      const ms = cpuMs(t0);
      process.stderr.write(`data rows: 10 MB line (${name}): ${Math.round(ms)} ms of CPU\n`);
      assert.ok(ms < 10_000, `${name} took ${Math.round(ms)} ms of CPU`);
    }
  });
});

// ---- images ------------------------------------------------------------------------------------

function pngBytes(r: () => number): Buffer {
  const w = int(r, 1, 12);
  const h = int(r, 1, 12);
  const p = new PNG({ width: w, height: h });
  for (let i = 0; i < w * h * 4; i++) p.data[i] = int(r, 0, 255);
  return PNG.sync.write(p, pick(r, [{}, { colorType: 2 }, { colorType: 0, inputColorType: 6 }, { colorType: 6, bitDepth: 16 }]));
}
function jpegBytes(r: () => number): Buffer {
  const w = int(r, 1, 16);
  const h = int(r, 1, 16);
  const data = Buffer.alloc(w * h * 4);
  for (let i = 0; i < data.length; i++) data[i] = int(r, 0, 255);
  return Buffer.from(jpeg.encode({ data, width: w, height: h }, int(r, 10, 100)).data);
}

/** CRC-32 as PNG chunks use it. */
function crc32(buf: Buffer): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
/** A PNG with the given IHDR fields and (optionally) a tiny valid IDAT: dimensions may be absurd. */
function pngWithHeader(w: number, h: number, bitDepth: number, colorType: number, idat: Buffer): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w >>> 0, 0);
  ihdr.writeUInt32BE(h >>> 0, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]);
}
/** Sets a baseline JPEG's frame size (SOF0) to w × h. */
function jpegWithSize(src: Buffer, w: number, h: number): Buffer {
  const b = Buffer.from(src);
  for (let i = 2; i + 9 < b.length; ) {
    if (b[i] !== 0xff) break;
    const marker = b[i + 1]!;
    const len = b.readUInt16BE(i + 2);
    if (marker === 0xc0 || marker === 0xc2) {
      b.writeUInt16BE(h & 0xffff, i + 5);
      b.writeUInt16BE(w & 0xffff, i + 7);
      break;
    }
    i += 2 + len;
  }
  return b;
}

type ImageMutation = (r: () => number) => Buffer;
const IMAGE_MUTATIONS: Record<string, ImageMutation> = {
  pngTruncated: (r) => { const b = pngBytes(r); return b.subarray(0, int(r, 0, b.length - 1)); },
  pngFlipped: (r) => { const b = pngBytes(r); for (let i = 0; i < int(r, 1, 8); i++) b[int(r, 8, b.length - 1)] = int(r, 0, 255); return b; },
  pngHugeDims: (r) => pngWithHeader(pick(r, [0, 1, 65535, 100_000, 2 ** 31 - 1, 2 ** 32 - 1]), pick(r, [0, 1, 65535, 100_000, 2 ** 31 - 1]), 8, 6, deflateSync(Buffer.alloc(int(r, 0, 64)))),
  pngBadHeader: (r) => pngWithHeader(int(r, 1, 8), int(r, 1, 8), pick(r, [0, 3, 5, 7, 8, 16, 32, 255]), pick(r, [1, 2, 3, 4, 5, 6, 7, 255]), deflateSync(Buffer.alloc(int(r, 0, 400), int(r, 0, 255)))),
  pngBadIdat: (r) => pngWithHeader(int(r, 1, 8), int(r, 1, 8), 8, 2, Buffer.from(Array.from({ length: int(r, 0, 64) }, () => int(r, 0, 255)))),
  pngBadCrc: (r) => { const b = pngBytes(r); b[29] = (b[29]! + 1) & 0xff; return b; },
  jpegTruncated: (r) => { const b = jpegBytes(r); return b.subarray(0, int(r, 0, b.length - 1)); },
  jpegFlipped: (r) => { const b = jpegBytes(r); for (let i = 0; i < int(r, 1, 8); i++) b[int(r, 3, b.length - 1)] = int(r, 0, 255); return b; },
  jpegHugeDims: (r) => jpegWithSize(jpegBytes(r), pick(r, [0, 1, 8000, 20_000, 65535]), pick(r, [0, 1, 8000, 20_000, 65535])),
  wrongSignature: (r) => pick(r, [Buffer.alloc(0), Buffer.from('not an image'), Buffer.from([0x89, 0x50]), Buffer.from([0xff, 0xd8]), Buffer.from('GIF89a....'), Buffer.from([0xff, 0xd8, 0xff])]),
};

describe('fuzz: image files', () => {
  const tally = new Tally('images');
  const byKind = new Map<string, Map<string, number>>();
  after(() => {
    process.stderr.write(`${tally.summary()}\n`);
    process.stderr.write(`images by mutation: ${[...byKind].map(([k, m]) => `${k} [${[...m].map(([o, c]) => `${o} ${c}`).join(', ')}]`).join('; ')}\n`);
  });

  const N = fuzzCases(1500);
  it(`${N} corrupt PNG / JPEG files decode to finite pixels or fail with a one-line InputError naming the file`, () => {
    const r = rng(77);
    const kinds = Object.keys(IMAGE_MUTATIONS);
    const dir = join(root, 'img');
    mkdirSync(dir, { recursive: true });
    let slowest = 0;
    for (let i = 0; i < N; i++) {
      const kind = kinds[i % kinds.length]!;
      const f = join(dir, `x.${pick(r, ['png', 'jpg', 'jpeg', 'PNG'])}`);
      writeFileSync(f, IMAGE_MUTATIONS[kind]!(r));
      const caseId = `case ${i} (${kind})`;
      const t0 = process.cpuUsage();
      let outcome: string;
      try {
        const img = decodeImage(f);
        assert.ok(img.width > 0 && img.height > 0 && img.data.length >= img.width * img.height * 4, `${caseId}: ${img.width}×${img.height} with ${img.data.length} bytes`);
        const px = toPixelValues(img, 8, pick(r, [1, 3]));
        assert.ok(px.every(Number.isFinite), `${caseId}: non-finite pixels`);
        tally.ok();
        outcome = 'valid';
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        tally.error(e, f, ['InputError'], caseId);
        outcome = 'InputError';
      }
      const ms = cpuMs(t0);
      slowest = Math.max(slowest, ms);
      assert.ok(ms < 2000, `${caseId} took ${Math.round(ms)} ms of CPU`);
      const m = byKind.get(kind) ?? new Map<string, number>();
      m.set(outcome, (m.get(outcome) ?? 0) + 1);
      byKind.set(kind, m);
    }
    process.stderr.write(`images: slowest case ${Math.round(slowest)} ms of CPU\n`);
    assert.ok((tally.counts.get('InputError') ?? 0) > N / 3);
  });

  it('image folders with odd layouts load and batch, or fail with an InputError naming the path', () => {
    const info: ModelDataInfo = { task: 'image-classification', modelType: 'vit', vocabSize: 0, numLabels: 3, imageSize: 4, numChannels: 3, label2id: { LABEL_0: 0 } };
    const r = rng(5);
    const layouts: Record<string, (d: string) => void> = {
      danglingLink: (d) => { mkdirSync(join(d, 'a')); writeFileSync(join(d, 'a', '1.png'), pngBytes(r)); symlinkSync(join(root, 'nowhere'), join(d, 'b')); },
      danglingImageLink: (d) => { mkdirSync(join(d, 'a')); symlinkSync(join(root, 'nowhere.png'), join(d, 'a', '1.png')); },
      fileAsClass: (d) => { mkdirSync(join(d, 'a')); writeFileSync(join(d, 'a', '1.png'), pngBytes(r)); writeFileSync(join(d, 'b'), 'x'); },
      folderAsImage: (d) => { mkdirSync(join(d, 'a', '1.png'), { recursive: true }); },
      emptyClasses: (d) => { mkdirSync(join(d, 'a')); mkdirSync(join(d, 'b')); },
      tooManyClasses: (d) => { for (const c of ['a', 'b', 'c', 'd']) { mkdirSync(join(d, c)); writeFileSync(join(d, c, '1.png'), pngBytes(r)); } },
      corruptImage: (d) => { mkdirSync(join(d, 'a')); writeFileSync(join(d, 'a', '1.jpg'), jpegBytes(r).subarray(0, 20)); },
      hiddenOnly: (d) => { mkdirSync(join(d, '.git')); writeFileSync(join(d, '.git', '1.png'), pngBytes(r)); },
      notAFolder: (d) => { rmSync(d, { recursive: true }); writeFileSync(d, 'x'); },
      missing: (d) => { rmSync(d, { recursive: true }); },
      valid: (d) => { for (const c of ['cat', 'dog']) { mkdirSync(join(d, c)); writeFileSync(join(d, c, '1.png'), pngBytes(r)); writeFileSync(join(d, c, '2.jpg'), jpegBytes(r)); } },
    };
    for (const [name, make] of Object.entries(layouts)) {
      const d = join(root, 'folders', name);
      mkdirSync(d, { recursive: true });
      make(d);
      try {
        const data = loadData({ data: { format: 'images', train: d, textField: 'text', promptField: 'prompt', completionField: 'completion', labelField: 'label' }, seed: 1, specFile: SPEC_FILE }, info, undefined);
        const b = makeBatch(data.train as Example[], { padId: 0, attentionMask: false, imageSize: 4, numChannels: 3, patchSize: 2 });
        assert.ok(b.inputs.pixelValues!.dataSync().every(Number.isFinite));
        disposeTrainBatch(b);
        tally.ok();
        assert.ok(name === 'valid' || name === 'fileAsClass', `${name}: loaded`);
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        tally.error(e, d, ['InputError'], name);
      }
    }
    assert.equal(tf.memory().numTensors, 0, 'no tensors left by failed batches');
  });
});
