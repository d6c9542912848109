/**
 * Fuzzing run specs (`*.peft.json`, sidecar/src/spec/): seeded mutations of valid specs — wrong
 * types, unknown keys (also `__proto__`), out-of-range and non-finite numbers, missing keys, missing
 * files, paths that leave the workspace (`..`, absolute, through symbolic links), and raw text damage
 * (truncation, stray bytes, deep nesting, invalid UTF-8). Every case must end, within a time bound,
 * in a spec that keeps the loader's promises (every path inside the workspace, also after
 * resolving links; every number finite, so spec.json round-trips) or in a one-line SpecError /
 * InputError naming the spec file and the place.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InputError } from '../../sidecar/src/errors';
import { loadSpec, runConfig, SpecError, variantConfig } from '../../sidecar/src/spec/load';
import { isInside, realpathLoose } from '../../sidecar/src/spec/paths';
import type { ResolvedSpec } from '../../sidecar/src/spec/types';
import { fuzzCases, int, pick, rng, Tally } from '../helpers/fuzz';

const root = mkdtempSync(join(tmpdir(), 'peft-fuzz-spec-'));
after(() => rmSync(root, { recursive: true, force: true }));
const ws = join(root, 'ws');
const outside = join(root, 'outside');
const bundled = join(root, 'bundled');

before(() => {
  for (const d of ['model', 'data/imgs/cat', 'sub/deeper']) mkdirSync(join(ws, d), { recursive: true });
  writeFileSync(join(ws, 'model', 'config.json'), '{"model_type":"gpt2"}');
  writeFileSync(join(ws, 'data', 'train.jsonl'), '{"text":"a b"}\n');
  writeFileSync(join(ws, 'data', 'eval.jsonl'), '{"text":"c d"}\n');
  writeFileSync(join(ws, 'data', 'train.csv'), 'text,label\na,0\n');
  writeFileSync(join(ws, 'data', 'heldout.txt'), 'some held-out text');
  writeFileSync(join(ws, 'data', 'mask.safetensors'), '');
  mkdirSync(join(outside, 'model'), { recursive: true });
  writeFileSync(join(outside, 'secret.jsonl'), '{"text":"secret"}\n');
  writeFileSync(join(outside, 'model', 'config.json'), '{"model_type":"gpt2"}');
  mkdirSync(join(bundled, 'tiny-gpt'), { recursive: true });
  writeFileSync(join(bundled, 'tiny-gpt', 'config.json'), '{"model_type":"gpt2"}');
  symlinkSync(outside, join(ws, 'link-out'));
  symlinkSync(join(ws, 'data'), join(ws, 'link-in'));
  symlinkSync(join(root, 'does-not-exist'), join(ws, 'dangling'));
  symlinkSync(join(outside, 'secret.jsonl'), join(ws, 'data', 'secret-link.jsonl'));
  symlinkSync('../../link-out', join(ws, 'sub', 'deeper', 'up-and-out'));
});

/** CPU milliseconds of this process since `t0`: a per-case bound that a loaded machine does not break. */
const cpuMs = (t0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(t0);
  return (c.user + c.system) / 1000;
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const BASES: Record<string, Json>[] = [
  { model: 'model', data: { train: 'data/train.jsonl', eval: 'data/eval.jsonl', maxLength: 16 }, adapter: { kind: 'lora', r: 4, alpha: 8, targets: ['c_attn'] }, optimizer: { lr: 0.01, betas: [0.9, 0.99] }, steps: 10, seed: 3 },
  { model: 'model', data: { train: 'data/train.csv', evalSplit: 0.2 }, adapter: { kind: 'ia3' }, epochs: 2, schedule: { type: 'linear', warmupRatio: 0.1 }, earlyStopping: { patience: 2 } },
  { model: 'peft-lab/tiny-gpt', data: { train: 'data/imgs' }, adapter: { kind: 'sparse', mask: 'data/mask.safetensors' }, runsDir: 'sub/runs', memoryLimitMb: 100 },
  {
    model: 'model',
    data: { train: 'data/train.jsonl', heldout: 'data/heldout.txt' },
    variants: [
      { name: 'a', adapter: { kind: 'lora', r: 2, rankPattern: { c_attn: 4 } }, steps: 3 },
      { name: 'b', adapter: { kind: 'bottleneck', bottleneck: 8 }, optimizer: { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 } },
    ],
  },
];

const PATH_KEYS: string[][] = [['model'], ['data', 'train'], ['data', 'eval'], ['data', 'heldout'], ['runsDir'], ['adapter', 'mask']];
const BAD_PATHS = [
  '../outside/secret.jsonl', '../../etc/passwd', '/etc/passwd', join(outside, 'secret.jsonl'), outside, 'link-out/secret.jsonl', 'link-out', 'link-out/model',
  'data/../../outside/secret.jsonl', 'data/secret-link.jsonl', 'sub/deeper/up-and-out/secret.jsonl', 'sub/deeper/up-and-out', 'dangling', 'dangling/x.jsonl',
  'data/missing.jsonl', 'data', 'data/train.jsonl/', 'model/config.json', '', '.', '..', 'a\u0000b', 'x'.repeat(5000), '~/x', 'C:\\Windows\\x.jsonl', '\\\\server\\share\\x',
  'link-in/train.jsonl', join(ws, 'data', 'train.jsonl'), './data/./train.jsonl', 'sub/../data/train.jsonl', 'peft-lab/../../outside', 'peft-lab/tiny-gpt', 'peft-lab/none', 'peft-lab/',
];
const WRONG_VALUES: Json[] = [null, true, false, 0, -1, 1.5, 'x', '', [], {}, [1, 2], { a: 1 }, 'lora', [null], [[]]];
const NUMBERS = ['-1', '0', '-0', '0.5', '1e309', '-1e309', '1e308', '9007199254740993', '1e-320', '1e9', '4294967296', '4097', '1', '2', '1.0', '3e2'];
const UNKNOWN_KEYS = ['stpes', 'lR', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'x'.repeat(300), '', 'model ', 'Model', 'valueOf', 'kind2'];
const NUMERIC_PATHS: (string | number)[][] = [
  ['batchSize'], ['gradientAccumulation'], ['maxGradNorm'], ['steps'], ['epochs'], ['logEvery'], ['evalEvery'], ['checkpointEvery'], ['keepCheckpoints'], ['seed'], ['memoryLimitMb'],
  ['data', 'evalSplit'], ['data', 'maxLength'], ['adapter', 'r'], ['adapter', 'alpha'], ['adapter', 'dropout'], ['adapter', 'calibRows'], ['adapter', 'bottleneck'],
  ['optimizer', 'lr'], ['optimizer', 'eps'], ['optimizer', 'weightDecay'], ['optimizer', 'betas', 0], ['schedule', 'warmupSteps'], ['schedule', 'warmupRatio'],
  ['earlyStopping', 'patience'], ['earlyStopping', 'minDelta'], ['adapter', 'rankPattern', 'c_attn'], ['variants', 0, 'steps'], ['variants', 1, 'optimizer', 'lr'],
];

/** Every (path → value) in a JSON value, objects and arrays included. */
function paths(v: Json, p: (string | number)[] = []): (string | number)[][] {
  const out = [p];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...p, i])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...p, k]));
  return out;
}
function setAt(obj: Record<string, Json>, p: (string | number)[], value: Json | undefined): void {
  let cur: Json = obj;
  for (const k of p.slice(0, -1)) {
    const next: Json | undefined = (cur as Record<string, Json>)[k as string];
    if (next === undefined || next === null || typeof next !== 'object') (cur as Record<string, Json>)[k as string] = typeof p[p.indexOf(k) + 1] === 'number' ? [] : {};
    cur = (cur as Record<string, Json>)[k as string]!;
  }
  const last = p[p.length - 1]!;
  if (value === undefined) {
    if (Array.isArray(cur)) cur.splice(last as number, 1);
    else delete (cur as Record<string, Json>)[last as string];
  } else if (last === '__proto__') Object.defineProperty(cur, last, { value, enumerable: true, writable: true, configurable: true });
  else (cur as Record<string, Json>)[last as string] = value;
}

/** A spec's text: JSON, with numeric placeholders ("@@N:1e309@@") written as raw number literals. */
const text = (spec: Json): string => JSON.stringify(spec, null, 1).replace(/"@@N:([^@]+)@@"/g, '$1');

type Mutation = (r: () => number, s: Record<string, Json>) => string | Buffer;
const MUTATIONS: Record<string, Mutation> = {
  wrongType: (r, s) => {
    const ps = paths(s).filter((p) => p.length > 0);
    for (let i = 0; i < int(r, 1, 2); i++) setAt(s, pick(r, ps), structuredClone(pick(r, WRONG_VALUES)));
    return text(s);
  },
  unknownKey: (r, s) => {
    const objs = paths(s).filter((p) => { let v: Json = s; for (const k of p) v = (v as Record<string, Json>)[k as string]!; return !!v && typeof v === 'object' && !Array.isArray(v); });
    setAt(s, [...pick(r, objs), pick(r, UNKNOWN_KEYS)], pick(r, WRONG_VALUES));
    return text(s);
  },
  outOfRange: (r, s) => {
    for (let i = 0; i < int(r, 1, 2); i++) setAt(s, pick(r, NUMERIC_PATHS), `@@N:${pick(r, NUMBERS)}@@`);
    return text(s);
  },
  deleteKey: (r, s) => {
    const ps = paths(s).filter((p) => p.length > 0);
    for (let i = 0; i < int(r, 1, 3); i++) setAt(s, pick(r, ps), undefined);
    return text(s);
  },
  badPath: (r, s) => {
    const key = pick(r, PATH_KEYS);
    if (key[0] === 'adapter' && key[1] === 'mask') s.adapter = { kind: 'sparse' };
    setAt(s, key, pick(r, BAD_PATHS));
    if (key[1] === 'eval') setAt(s, ['data', 'evalSplit'], undefined);
    return text(s);
  },
  missingFile: (r, s) => {
    setAt(s, pick(r, PATH_KEYS.slice(0, 4)), `data/missing-${int(r, 0, 99)}.jsonl`);
    if ((s.data as Record<string, Json>).evalSplit !== undefined) setAt(s, ['data', 'eval'], undefined);
    return text(s);
  },
  truncate: (r, s) => {
    const t = text(s);
    return t.slice(0, int(r, 0, t.length - 1));
  },
  strayBytes: (r, s) => {
    const b = Buffer.from(text(s));
    for (let i = 0; i < int(r, 1, 4); i++) b[int(r, 0, b.length - 1)] = pick(r, [0x00, 0x22, 0x2c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0xff, 0xc3, 0x0a, 0x5c, int(r, 0, 255)]);
    return b;
  },
  syntax: (r, s) => {
    const t = text(s);
    const i = t.indexOf('\n', int(r, 0, t.length - 1));
    const cut = i < 0 ? t.length - 1 : i;
    return t.slice(0, cut) + pick(r, [' // comment', ',', ',,', '/* x */', ' "dup": 1,', '\u00a0', '\ufeff', ' NaN', ' Infinity', " 'single'", ' undefined', ' 0x10', ' +1', ' .5']) + t.slice(cut);
  },
  deepNesting: (r, s) => {
    const depth = pick(r, [100, 1000, 10_000, 100_000]);
    const [open, close] = pick(r, [['[', ']'], ['{"a":', '}']]);
    const where = pick(r, ['root', 'data', 'unknown', 'rankPattern']);
    const deep = open.repeat(depth) + '1' + close.repeat(depth);
    if (where === 'root') return deep;
    const holder = where === 'rankPattern' ? '"adapter": {"kind": "lora", "rankPattern": {"c_attn": ' : where === 'data' ? '"data": {"train": ' : '"zzz": ';
    const rest = text(s).replace(/^\{/, '');
    return `{${holder}${deep}${where === 'root' ? '' : where === 'unknown' ? '' : '}'}, ${rest}`;
  },
  huge: (r, s) => {
    const n = pick(r, [1000, 20_000]);
    if (r() < 0.5) setAt(s, ['adapter', 'targets'], Array.from({ length: n }, (_, i) => `m${i}`));
    else setAt(s, ['description'], 'x'.repeat(n * 10));
    return text(s);
  },
  invalidUtf8: (r, s) => {
    const t = text(s);
    const i = t.indexOf('"', int(r, 0, t.length - 1));
    const at = i < 0 ? 1 : i + 1;
    return Buffer.concat([Buffer.from(t.slice(0, at)), Buffer.from(pick(r, [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0x80]])), Buffer.from(t.slice(at))]);
  },
  empty: (r) => pick(r, ['', ' ', '\n', 'null', '[]', '1', '"spec"', '{}', 'true', '\ufeff{}']),
};

/** What a loaded spec promises the trainer. */
function checkValid(spec: ResolvedSpec, caseId: string): void {
  const rootReal = realpathLoose(ws);
  const inside = (p: string | undefined, what: string) => {
    if (p === undefined) return;
    assert.ok(isInside(ws, p), `${caseId}: ${what} ${p} is outside the workspace`);
    assert.ok(isInside(rootReal, realpathLoose(p)), `${caseId}: ${what} ${p} leads outside the workspace through a link`);
  };
  if (!spec.model.startsWith('peft-lab/')) inside(spec.modelDir, 'model');
  else assert.ok(isInside(bundled, spec.modelDir), `${caseId}: bundled model ${spec.modelDir} outside the bundled folder`);
  inside(spec.data.train, 'data.train');
  inside(spec.data.eval, 'data.eval');
  inside(spec.data.heldout, 'data.heldout');
  inside(spec.runsDir, 'runsDir');
  inside(spec.adapter?.mask, 'adapter.mask');
  for (const v of spec.variants ?? []) inside(v.adapter.mask, 'variant mask');
  // spec.json is JSON: a non-finite number would come back as null on resume; the schema has no null.
  const walk = (v: unknown, p: string): void => {
    assert.ok(v !== null, `${caseId}: ${p} is null in a loaded spec`);
    if (typeof v === 'number') assert.ok(Number.isFinite(v), `${caseId}: ${p} is ${v} (not finite) in a loaded spec`);
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, `${p}.${k}`);
  };
  walk(spec, 'spec');
  // What the trainer and compare take from it.
  if (spec.adapter) runConfig(spec);
  for (const v of spec.variants ?? []) variantConfig(spec, v);
}

describe('fuzz: run specs', () => {
  const tally = new Tally('run specs');
  const byKind = new Map<string, Map<string, number>>();
  after(() => {
    process.stderr.write(`${tally.summary()}\n`);
    process.stderr.write(`run specs by mutation: ${[...byKind].map(([k, m]) => `${k} [${[...m].map(([o, n]) => `${o} ${n}`).join(', ')}]`).join('; ')}\n`);
  });

  const N = fuzzCases(3000);
  it(`${N} mutated specs load with every path inside the workspace, or fail with a one-line SpecError naming the file and place`, () => {
    const r = rng(1129);
    const kinds = Object.keys(MUTATIONS);
    let slowest = 0;
    for (let i = 0; i < N; i++) {
      const kind = kinds[i % kinds.length]!;
      const base = structuredClone(pick(r, BASES));
      const content = MUTATIONS[kind]!(r, base);
      const file = join(ws, pick(r, ['run.peft.json', 'sub/nested.peft.json']));
      writeFileSync(file, content);
      const caseId = `case ${i} (${kind})`;
      const t0 = process.cpuUsage();
      let outcome: string;
      try {
        const spec = loadSpec(file, { workspaceRoot: ws, bundledModelsDir: bundled });
        checkValid(spec, caseId);
        tally.ok();
        outcome = 'valid';
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        tally.error(e, file, ['SpecError', 'InputError'], caseId);
        if (e instanceof SpecError) {
          // The place: a JSON path (or the root) and line:column inside the file.
          assert.match(e.where, /^(.+ at )?\d+:\d+$/, `${caseId}: no line:column in ${e.message}`);
          const bad = e.issues.find((x) => !(x.line >= 1 && x.column >= 1 && x.message.length > 0 && !x.message.includes('\n')));
          assert.equal(bad, undefined, `${caseId}: bad issue ${JSON.stringify(bad)}`);
        } else assert.ok(e instanceof InputError);
        outcome = (e as Error).name;
      }
      const ms = cpuMs(t0);
      slowest = Math.max(slowest, ms);
      assert.ok(ms < 2000, `${caseId} took ${Math.round(ms)} ms of CPU`);
      const m = byKind.get(kind) ?? new Map<string, number>();
      m.set(outcome, (m.get(outcome) ?? 0) + 1);
      m.set('ms', (m.get('ms') ?? 0) + Math.round(ms));
      byKind.set(kind, m);
    }
    process.stderr.write(`run specs: slowest case ${Math.round(slowest)} ms of CPU\n`);
    // The mutations bite: most cases are refused, and each escape family was refused at least once.
    assert.ok((tally.counts.get('valid') ?? 0) < N / 2);
    assert.ok((byKind.get('badPath')?.get('SpecError') ?? 0) > 0);
  });

  it('regressions found by fuzzing: 1e309, absurd nesting, a control character in a path', () => {
    const file = join(ws, 'reg.peft.json');
    const load = (text: string) => {
      writeFileSync(file, text);
      try {
        loadSpec(file, { workspaceRoot: ws });
      } catch (e) {
        assert.ok(e instanceof SpecError, String(e));
        assert.ok(!e.message.includes('\n') && e.issues.every((i) => !i.message.includes('\n')), e.message);
        return e.message;
      }
      return assert.fail('accepted');
    };
    // JSON's 1e309 is Infinity: refused, not written back to spec.json as null.
    assert.match(load('{"model": "model", "data": {"train": "data/train.jsonl"}, "adapter": {"kind": "lora"}, "optimizer": {"lr": 1e309}}'), /optimizer\.lr at 1:\d+\): must be a finite number; Infinity is out of range/);
    // 100 000 levels of nesting: a SpecError, not a stack overflow.
    assert.match(load(`{"a": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`), /\(1:\d+\): nested more than 64 levels deep/);
    // A "\n" escape in a path: the problem names it escaped, on one line.
    assert.match(load('{"model": "model", "data": {"train": "data/tra\\nin.jsonl"}, "adapter": {"kind": "lora"}}'), /training data not found: .*tra\\nin\.jsonl/);
  });

  it('escapes are refused at their key: "..", absolute, a symbolic link out, a link inside a link', () => {
    const cases: [string, RegExp][] = [
      ['../outside/secret.jsonl', /outside the workspace root/],
      [join(outside, 'secret.jsonl'), /outside the workspace root/],
      ['link-out/secret.jsonl', /leads through a symbolic link .* outside the workspace root/],
      ['data/secret-link.jsonl', /leads through a symbolic link .* outside the workspace root/],
      ['sub/deeper/up-and-out/secret.jsonl', /leads through a symbolic link .* outside the workspace root/],
    ];
    for (const [p, re] of cases) {
      const file = join(ws, 'esc.peft.json');
      writeFileSync(file, JSON.stringify({ model: 'model', data: { train: p }, adapter: { kind: 'lora' } }));
      assert.throws(() => loadSpec(file, { workspaceRoot: ws }), (e: unknown) => e instanceof SpecError && /data\.train at 1:\d+/.test(e.where) && re.test(e.message), p);
    }
  });
});
