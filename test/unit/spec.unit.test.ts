/**
 * Run specs (`*.peft.json`): schema validation with JSON path + line:column for each class of
 * error, "did you mean" for unknown keys, defaults, path resolution and refusal of escapes from the
 * workspace root (`..`, absolute paths, symbolic links), bundled model ids, variants.
 */
import Ajv from 'ajv';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ADAPTER_KINDS, BACKENDS, LORA_INITS, type AdapterSpec } from '../../src/protocol';
import { adapterOptionProblems } from '../../sidecar/src/spec/adapter-options';
import { loadSpec, parseSpecText, readAllocationFile, runConfig, SPEC_SCHEMA, SpecError, variantConfig } from '../../sidecar/src/spec/load';
import { lineColumn } from '../../sidecar/src/io/json';
import { resolveRef } from '../../sidecar/src/spec/schema';
import { DATA_FORMATS, SCHEDULES } from '../../sidecar/src/spec/types';
import { specFieldProblems } from '../../sidecar/src/spec/field-check';

const root = mkdtempSync(join(tmpdir(), 'peft-lab-spec-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/** A workspace with a fake model folder and data files; returns its folder. */
function workspace(): string {
  const ws = join(root, `ws${n++}`);
  mkdirSync(join(ws, 'model'), { recursive: true });
  writeFileSync(join(ws, 'model', 'config.json'), '{"model_type":"gpt2"}');
  mkdirSync(join(ws, 'data', 'imgs', 'cat'), { recursive: true });
  writeFileSync(join(ws, 'data', 'train.jsonl'), '{"text":"a"}\n');
  writeFileSync(join(ws, 'data', 'eval.jsonl'), '{"text":"b"}\n');
  writeFileSync(join(ws, 'data', 'train.csv'), 'text,label\na,0\n');
  return ws;
}

function writeSpec(dir: string, text: string, name = 'run.peft.json'): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

const BASE = { model: 'model', data: { train: 'data/train.jsonl' }, adapter: { kind: 'lora', r: 4 } };

/** Line and column (1-based) of the first occurrence of `needle` in `text`. */
function at(text: string, needle: string): string {
  const i = text.indexOf(needle);
  assert.ok(i >= 0, `${needle} not in the text`);
  const { line, column } = lineColumn(text, i);
  return `${line}:${column}`;
}

/** Offset of the key `"name"` (its first occurrence), where an issue about that key points. */
const key = (name: string) => (text: string) => text.indexOf(`"${name}"`);

/**
 * Whether a draft-07 validator (an editor's; ajv here) accepts `v` against the published schema or
 * one of its definitions: every keyword, the conditional ones included, which the sidecar's
 * validateNode leaves to load.ts.
 */
const ajv = new Ajv({ strict: false, allErrors: false });
ajv.addSchema(SPEC_SCHEMA as object, 'spec');
const schemaAccepts = (definition: string | undefined, v: unknown): boolean => ajv.validate({ $ref: definition ? `spec#/definitions/${definition}` : 'spec' }, v);

/** A checker of `e`'s issue at a path: its message, and its place in `text` (where `needle` starts). */
function issueAt(text: string, e: SpecError): (path: string, re: RegExp, needle: string) => void {
  const byPath = new Map(e.issues.map((i) => [i.path, i]));
  return (path, re, needle) => {
    const i = byPath.get(path);
    assert.ok(i, `no issue at ${path}: ${JSON.stringify(e.issues)}`);
    assert.match(i.message, re);
    assert.equal(`${i.line}:${i.column}`, at(text, needle), `location of ${path}`);
  };
}

/** The SpecError thrown by loading `text`. */
function specError(text: string, opts: Parameters<typeof loadSpec>[1] = {}, dir = workspace()): SpecError {
  const f = writeSpec(dir, text);
  try {
    loadSpec(f, opts);
  } catch (e) {
    assert.ok(e instanceof SpecError, `expected a SpecError, got ${String(e)}`);
    return e;
  }
  assert.fail('the spec was accepted');
}

describe('spec validation', () => {
  test('data.promptTemplate: a template that does not parse is an error at its place; a good one loads', () => {
    const text = JSON.stringify({ ...BASE, data: { train: 'data/train.jsonl', promptTemplate: 'Q: {question\nA:' } }, null, 2);
    issueAt(text, specError(text))('data.promptTemplate', /"\{" at character 4 is not closed/, '"Q: {question');
    const ws = workspace();
    const ok = loadSpec(writeSpec(ws, JSON.stringify({ ...BASE, data: { train: 'data/train.jsonl', promptTemplate: '{instruction}\n{input}\n', completionField: 'output' } })));
    assert.equal(ok.data.promptTemplate, '{instruction}\n{input}\n');
    assert.ok(schemaAccepts(undefined, { ...BASE, data: { train: 'data/train.jsonl', promptTemplate: '{q}' } }));
  });

  test('optimizer.loraPlusRatio (LoRA+) is read; a ratio below 1 is refused at its key', () => {
    const ws = workspace();
    const s = loadSpec(writeSpec(ws, JSON.stringify({ ...BASE, optimizer: { lr: 2e-4, loraPlusRatio: 16 } }), 'plus.peft.json'));
    assert.equal(s.optimizer.loraPlusRatio, 16);
    assert.throws(() => loadSpec(writeSpec(ws, JSON.stringify({ ...BASE, optimizer: { loraPlusRatio: 0.5 } }), 'minus.peft.json')), /optimizer\.loraPlusRatio/);
  });

  test('a valid spec loads with defaults filled and paths resolved', () => {
    const ws = workspace();
    const f = writeSpec(ws, JSON.stringify({ ...BASE, data: { train: 'data/train.jsonl', eval: 'data/eval.jsonl' } }, null, 2), 'my-run.peft.json');
    const s = loadSpec(f);
    assert.equal(s.name, 'my-run');
    assert.equal(s.modelDir, join(ws, 'model'));
    assert.equal(s.data.train, join(ws, 'data/train.jsonl'));
    assert.equal(s.data.eval, join(ws, 'data/eval.jsonl'));
    assert.equal(s.data.format, 'jsonl');
    assert.equal(s.data.textField, 'text');
    assert.deepEqual(s.optimizer, { lr: 0.001, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
    assert.equal(s.schedule.type, 'cosine');
    assert.equal(s.batchSize, 8);
    assert.equal(s.gradientAccumulation, 1);
    assert.equal(s.keepCheckpoints, 2);
    assert.equal(s.seed, 42);
    assert.equal(s.runsDir, join(ws, 'runs'));
    assert.deepEqual(s.adapter, { kind: 'lora', r: 4 }, 'adapter options are not filled (each kind has its own defaults)');
    const cfg = runConfig(s);
    assert.equal(cfg.version, 1);
    assert.equal((cfg as { variants?: unknown }).variants, undefined);
  });

  test('CSV, Parquet and image-folder formats are inferred from the train path', () => {
    const ws = workspace();
    assert.equal(loadSpec(writeSpec(ws, JSON.stringify({ ...BASE, data: { train: 'data/train.csv' } }))).data.format, 'csv');
    writeFileSync(join(ws, 'data', 'train.parquet'), 'PAR1');
    assert.equal(loadSpec(writeSpec(ws, JSON.stringify({ ...BASE, data: { train: 'data/train.parquet' } }))).data.format, 'parquet');
    assert.equal(loadSpec(writeSpec(ws, JSON.stringify({ ...BASE, data: { train: 'data/imgs' } }))).data.format, 'images');
    const text = JSON.stringify({ ...BASE, data: { train: 'model/config.txt' } });
    writeFileSync(join(ws, 'model/config.txt'), 'x');
    const e = specError(text, {}, ws);
    assert.match(e.message, /cannot tell the data format/);
    assert.equal(e.issues[0]!.path, 'data.train');
  });

  test('JSON syntax errors give line:column', () => {
    const text = '{\n  "model": "model",\n  "steps": 10,,\n}';
    const e = specError(text);
    assert.equal(`${e.issues[0]!.line}:${e.issues[0]!.column}`, '3:15');
    assert.match(e.message, /JSON syntax error: property name expected$/);
    assert.match(e.message, /run\.peft\.json \(3:15\)/);
  });

  test('comments are refused (the spec is JSON)', () => {
    const e = specError('{\n  // a comment\n  "model": "model"\n}');
    assert.match(e.message, /invalid comment token/);
    assert.equal(e.issues[0]!.line, 2);
  });

  test('unknown keys name the path and line:column, with "did you mean"', () => {
    const text = JSON.stringify({ ...BASE, batchsize: 4, optimizer: { lr: 0.1, weight_decay: 0 } }, null, 2);
    const e = specError(text);
    assert.equal(e.issues.length, 2);
    const [a, b] = e.issues;
    assert.equal(a!.path, 'batchsize');
    assert.equal(`${a!.line}:${a!.column}`, at(text, '"batchsize"'));
    assert.match(a!.message, /unknown key "batchsize" \(did you mean "batchSize"\?\)/);
    assert.equal(b!.path, 'optimizer.weight_decay');
    assert.equal(`${b!.line}:${b!.column}`, at(text, '"weight_decay"'));
    assert.match(b!.message, /did you mean "weightDecay"/);
    assert.match(e.message, new RegExp(`\\(batchsize at ${at(text, '"batchsize"')}\\): unknown key .* \\(and 1 more problem: optimizer\\.weight_decay at ${at(text, '"weight_decay"')}: unknown key "weight_decay" \\(did you mean "weightDecay"\\?\\)\\)$`));
  });

  test('the message lists every problem (the command line prints only the message), on one line', () => {
    const text = JSON.stringify({ ...BASE, data: { train: 'data/train.jsonl', eval: 'data/eval.jsonl', evalSplit: 0.1 }, steps: 10, epochs: 2, schedule: { warmupSteps: 2, warmupRatio: 0.1 } }, null, 2);
    const e = specError(text);
    assert.equal(e.issues.length, 3);
    const [first, ...rest] = e.issues;
    assert.equal(e.where, `${first!.path} at ${first!.line}:${first!.column}`);
    assert.ok(e.message.includes(`: ${first!.message} (and 2 more problems: `), e.message);
    for (const i of rest) assert.ok(e.message.includes(`${i.path} at ${i.line}:${i.column}: ${i.message}`), `${i.path} in ${e.message}`);
    assert.ok(!e.message.includes('\n'));
    assert.doesNotMatch(specError(JSON.stringify({ ...BASE, steps: 0 })).message, /more problem/);
  });

  test('"did you mean" does not offer a one-letter key for a misspelt long one', () => {
    // "rankPatern" starts with "r": a prefix match used to tie with the real near miss and win.
    const e = specError(JSON.stringify({ ...BASE, adapter: { kind: 'lora', rankPatern: { c_attn: 4 } } }));
    assert.equal(e.issues[0]!.message, 'unknown key "rankPatern" (did you mean "rankPattern"?)');
  });

  test('an unknown key with no close match lists the allowed keys', () => {
    const e = specError(JSON.stringify({ ...BASE, earlyStopping: { zzzzzz: 1 }, data: { train: 'data/train.jsonl', evalSplit: 0.5 } }));
    assert.equal(e.issues[0]!.path, 'earlyStopping.zzzzzz');
    assert.match(e.issues[0]!.message, /allowed: patience, minDelta/);
  });

  test('wrong types, enums, ranges and missing keys', () => {
    const text = JSON.stringify(
      {
        model: 'model',
        data: { maxLength: 1 },
        adapter: { kind: 'lorra' },
        schedule: { type: 'cos' },
        steps: 'ten',
        batchSize: 0,
        optimizer: { betas: [0.9] },
      },
      null,
      2,
    );
    const expect = issueAt(text, specError(text));
    expect('data', /missing required key "train"/, '{\n    "maxLength"');
    expect('data.maxLength', /must be ≥ 2, got 1/, '1\n');
    expect('adapter.kind', /must be one of .*"lora".*did you mean "lora"\?/, '"lorra"');
    expect('schedule.type', /did you mean "cosine"/, '"cos"');
    expect('steps', /expected an integer, got "ten"/, '"ten"');
    expect('batchSize', /must be ≥ 1, got 0/, '0,');
    expect('optimizer.betas', /needs at least 2 items, got 1/, '[\n');
  });

  test('a fractional step count is not an integer', () => {
    const e = specError(JSON.stringify({ ...BASE, steps: 2.5 }));
    assert.equal(e.issues[0]!.path, 'steps');
    assert.match(e.issues[0]!.message, /expected an integer, got 2\.5/);
  });

  test('cross-field rules: steps vs epochs, eval vs evalSplit, warmup, early stopping, adapter options', () => {
    const text = JSON.stringify(
      {
        model: 'model',
        data: { train: 'data/train.jsonl', eval: 'data/eval.jsonl', evalSplit: 0.1 },
        adapter: { kind: 'ia3', r: 8 },
        steps: 10,
        epochs: 2,
        schedule: { warmupSteps: 2, warmupRatio: 0.1 },
      },
      null,
      2,
    );
    const e = specError(text);
    const paths = e.issues.map((i) => i.path).sort();
    assert.deepEqual(paths, ['adapter.r', 'data.evalSplit', 'epochs', 'schedule.warmupRatio']);
    const r = e.issues.find((i) => i.path === 'adapter.r')!;
    assert.match(r.message, /option "r" is not used by adapter kind "ia3" \(its options: targets, modulesToSave\)/);
    assert.equal(`${r.line}:${r.column}`, at(text, '"r"'));
    assert.equal(`${e.issues.find((i) => i.path === 'epochs')!.line}`, at(text, '"epochs"').split(':')[0]);

    const e2 = specError(JSON.stringify({ ...BASE, earlyStopping: { patience: 2 } }));
    assert.equal(e2.issues[0]!.path, 'earlyStopping');
    assert.match(e2.message, /needs an eval set/);

    const e3 = specError(JSON.stringify({ ...BASE, adapter: { kind: 'lora', calibRows: 4 } }));
    assert.match(e3.message, /"calibRows" is only used by the calibrated inits/);
    const e4 = specError(JSON.stringify({ ...BASE, adapter: { kind: 'sparse' } }));
    assert.match(e4.message, /needs "mask"/);
    const e5 = specError(JSON.stringify({ model: 'model', data: { train: 'data/train.jsonl' } }));
    assert.match(e5.message, /missing required key "adapter"/);
  });

  test('variants: validated each, names unique, overrides merged', () => {
    const ws = workspace();
    const bad = JSON.stringify({ ...BASE, variants: [{ name: 'a', adapter: { kind: 'bitfit', r: 2 } }, { name: 'a', adapter: { kind: 'lora' } }, { adapter: { kind: 'lora' } }] }, null, 2);
    const e = specError(bad, {}, ws);
    assert.deepEqual(e.issues.map((i) => i.path), ['variants[2]']);
    assert.match(e.issues[0]!.message, /missing required key "name"/);
    const e2 = specError(JSON.stringify({ ...BASE, variants: [{ name: 'a', adapter: { kind: 'bitfit', r: 2 } }, { name: 'a', adapter: { kind: 'lora' } }] }), {}, ws);
    assert.deepEqual(e2.issues.map((i) => i.path).sort(), ['variants[0].adapter.r', 'variants[1].name']);

    const f = writeSpec(ws, JSON.stringify({ ...BASE, optimizer: { lr: 0.01 }, schedule: { warmupRatio: 0.1 }, steps: 5, variants: [{ name: 'big-lr', adapter: { kind: 'lora', r: 8 }, optimizer: { lr: 0.5 }, schedule: { warmupSteps: 1 }, epochs: 2 }] }));
    const s = loadSpec(f);
    const v = variantConfig(s, s.variants![0]!);
    assert.equal(v.name, 'big-lr');
    assert.equal(v.variant, 'big-lr');
    assert.deepEqual(v.adapter, { kind: 'lora', r: 8 });
    assert.equal(v.optimizer.lr, 0.5);
    assert.equal(v.optimizer.eps, 1e-8, 'unset optimizer fields come from the base spec');
    assert.deepEqual(v.schedule, { type: 'cosine', warmupSteps: 1 });
    assert.equal(v.steps, undefined);
    assert.equal(v.epochs, 2);
  });

  test('paths that leave the workspace root are refused: "..", absolute, symbolic links', () => {
    const outside = mkdtempSync(join(root, 'outside-'));
    writeFileSync(join(outside, 'x.jsonl'), '{"text":"a"}\n');
    const ws = workspace();
    const e1 = specError(JSON.stringify({ ...BASE, data: { train: `../${outside.split('/').pop()}/x.jsonl` } }), {}, ws);
    assert.equal(e1.issues[0]!.path, 'data.train');
    assert.match(e1.message, /outside the workspace root/);
    // How to allow it, in the message itself (--workspace was documented only in --help).
    assert.match(e1.issues[0]!.message, /\(paths may not leave it; pass --workspace DIR to widen it, or in VS Code open a folder that holds the spec and this path\)$/);
    const e2 = specError(JSON.stringify({ ...BASE, data: { train: join(outside, 'x.jsonl') } }), {}, ws);
    assert.match(e2.message, /outside the workspace root/);
    symlinkSync(outside, join(ws, 'link'));
    const e3 = specError(JSON.stringify({ ...BASE, data: { train: 'link/x.jsonl' } }), {}, ws);
    assert.match(e3.message, /symbolic link .* outside the workspace root .*pass --workspace DIR to widen it/);
    const e4 = specError(JSON.stringify({ ...BASE, runsDir: '../runs' }), {}, ws);
    assert.equal(e4.issues[0]!.path, 'runsDir');
    // A wider workspace root admits the same path.
    const f = writeSpec(ws, JSON.stringify({ ...BASE, data: { train: `../${outside.split('/').pop()}/x.jsonl` } }));
    assert.equal(loadSpec(f, { workspaceRoot: root }).data.train, join(outside, 'x.jsonl'));
  });

  test('missing files and non-model folders are reported at their key', () => {
    const ws = workspace();
    mkdirSync(join(ws, 'empty'));
    const text = JSON.stringify({ ...BASE, model: 'empty', data: { train: 'data/nope.jsonl' } }, null, 2);
    const e = specError(text, {}, ws);
    assert.deepEqual(e.issues.map((i) => i.path), ['model', 'data.train']);
    assert.match(e.issues[0]!.message, /not a Hugging Face model folder \(no config.json\)/);
    assert.match(e.issues[1]!.message, /training data not found/);
    assert.equal(`${e.issues[1]!.line}:${e.issues[1]!.column}`, at(text, '"data/nope.jsonl"'));
  });

  test('bundled model ids resolve to media/models, and unknown ones list what is bundled', () => {
    const ws = workspace();
    const bundled = join(root, `bundled${n++}`);
    mkdirSync(join(bundled, 'tiny-gpt'), { recursive: true });
    writeFileSync(join(bundled, 'tiny-gpt', 'config.json'), '{}');
    const f = writeSpec(ws, JSON.stringify({ ...BASE, model: 'peft-lab/tiny-gpt' }));
    assert.equal(loadSpec(f, { bundledModelsDir: bundled }).modelDir, join(bundled, 'tiny-gpt'));
    const e = specError(JSON.stringify({ ...BASE, model: 'peft-lab/nope' }), { bundledModelsDir: bundled }, ws);
    assert.match(e.message, /no bundled model "nope" .*bundled: peft-lab\/tiny-gpt/);
  });

  test('rules the schema also states for editors: an editor rejects the spec, the sidecar gives its own message', () => {
    // [spec, JSON path, the text whose offset the issue points at, the sidecar's message]
    const kindOptions = (kind: string, options: string) => `(its options: ${options})`.replace(/^/, `adapter kind "${kind}" `);
    const cases: [Record<string, unknown>, string, (t: string) => number, string][] = [
      [{ ...BASE, adapter: { kind: 'ia3', r: 4 } }, 'adapter.r', key('r'), `option "r" is not used by ${kindOptions('ia3', 'targets, modulesToSave')}`],
      [{ ...BASE, adapter: { kind: 'full', targets: ['c_attn'] } }, 'adapter.targets', key('targets'), 'option "targets" is not used by adapter kind "full" (it takes no options)'],
      [{ ...BASE, adapter: { kind: 'full', modulesToSave: ['score'] } }, 'adapter.modulesToSave', key('modulesToSave'), 'option "modulesToSave" is not used by adapter kind "full" (it takes no options)'],
      [{ ...BASE, adapter: { kind: 'bottleneck', bottleneck: 4, r: 2 } }, 'adapter.r', key('r'), `option "r" is not used by ${kindOptions('bottleneck', 'targets, bottleneck, modulesToSave')}`],
      [{ ...BASE, adapter: { kind: 'dora', init: 'pissa' } }, 'adapter.init', key('init'), 'init "pissa" is not available with DoRA (use "default" or "gaussian")'],
      [{ ...BASE, adapter: { kind: 'lora', calibRows: 4 } }, 'adapter.calibRows', key('calibRows'), '"calibRows" is only used by the calibrated inits (corda-ipm, corda-kpm, lora-ga)'],
      [{ ...BASE, adapter: { kind: 'lora', init: 'pissa', calibRows: 4 } }, 'adapter.calibRows', key('calibRows'), '"calibRows" is only used by the calibrated inits (corda-ipm, corda-kpm, lora-ga)'],
      [{ ...BASE, adapter: { kind: 'sparse' } }, 'adapter', (t) => t.indexOf('{', t.indexOf('"adapter"')), 'adapter kind "sparse" needs "mask" (a safetensors file of 0/1 masks)'],
      [{ model: 'model', data: { train: 'data/train.jsonl' } }, '', () => 0, 'missing required key "adapter" (or "allocation", or "variants" for peft-lab compare)'],
      [{ ...BASE, steps: 10, epochs: 2 }, 'epochs', key('epochs'), 'give "steps" or "epochs", not both'],
      [{ ...BASE, variants: [{ name: 'a', adapter: { kind: 'lora' }, steps: 10, epochs: 2 }] }, 'variants[0].epochs', key('epochs'), 'give "steps" or "epochs", not both'],
      [{ ...BASE, data: { train: 'data/train.jsonl', eval: 'data/eval.jsonl', evalSplit: 0.1 } }, 'data.evalSplit', key('evalSplit'), 'give "eval" or "evalSplit", not both'],
      [{ ...BASE, schedule: { warmupSteps: 2, warmupRatio: 0.1 } }, 'schedule.warmupRatio', key('warmupRatio'), 'give "warmupSteps" or "warmupRatio", not both'],
      [{ ...BASE, earlyStopping: { patience: 2 } }, 'earlyStopping', key('earlyStopping'), 'early stopping needs an eval set: set "data.eval" or "data.evalSplit"'],
    ];
    const ws = workspace();
    for (const [spec, path, offset, message] of cases) {
      const text = JSON.stringify(spec, null, 2);
      assert.equal(schemaAccepts(undefined, spec), false, `the schema accepts ${text}`);
      const e = specError(text, {}, ws);
      assert.deepEqual(e.issues.map((i) => i.path), [path], text);
      const { line, column } = lineColumn(text, offset(text));
      assert.equal(e.where, `${path ? `${path} at ` : ''}${line}:${column}`, text);
      assert.equal(e.problem, message, text);
    }
  });

  test('unknown keys in an inline allocation are refused, with "did you mean"', () => {
    const allocation = { method: 'rank', budget: '1%', trainableparams: 10, bogus: 1, lora: { targets: ['c_attn'], r: 2, alpha: 4, rankPatern: { c_attn: 4 } } };
    const text = JSON.stringify({ ...BASE, allocation }, null, 2);
    const expect = issueAt(text, specError(text));
    expect('allocation.trainableparams', /^unknown key "trainableparams" \(did you mean "trainableParams"\?\)$/, '"trainableparams"');
    expect('allocation.bogus', /^unknown key "bogus" \(allowed: method, budget, trainableParams, lora, sparse, norms\)$/, '"bogus"');
    expect('allocation.lora.rankPatern', /did you mean "rankPattern"/, '"rankPatern"');
    assert.equal(schemaAccepts(undefined, { ...BASE, allocation: { method: 'spt', budget: '1%', trainableParams: 1, sparse: { mask: 'm.safetensors' }, bogus: 1 } }), false);

    // An allocation file is read against the same definition.
    const ws = workspace();
    const file = JSON.stringify({ method: 'rank', budget: '1%', trainableParams: 10, lora: { targets: ['c_attn'], r: 2, alpha: 4 }, note: 'x' }, null, 2);
    writeFileSync(join(ws, 'a.json'), file);
    assert.deepEqual(readAllocationFile(join(ws, 'a.json')).problems, [`${join(ws, 'a.json')} note at ${at(file, '"note"')}: unknown key "note" (allowed: method, budget, trainableParams, lora, sparse, norms)`]);
  });

  test('parseSpecText reports every problem with offsets, without touching the file system', () => {
    const { issues } = parseSpecText('{"model": 3, "data": {"train": "x"}, "adapter": {"kind": "lora"}, "seed": -1}', 'x.peft.json');
    assert.deepEqual(issues.map((i) => i.path), ['model', 'seed']);
    assert.equal(issues[0]!.offset, 10);
  });
});

describe('the published schema', () => {
  const def = (name: string) => resolveRef(SPEC_SCHEMA, { $ref: `#/definitions/${name}` });
  test('is draft-07 with descriptions on every property', () => {
    assert.equal((SPEC_SCHEMA as { $schema?: string }).$schema, 'http://json-schema.org/draft-07/schema#');
    const walk = (props: Record<string, { description?: string; $ref?: string }> | undefined, where: string) => {
      for (const [k, v] of Object.entries(props ?? {})) if (!v.$ref && k !== '$schema') assert.ok(v.description, `${where}.${k} has a description`);
    };
    walk(SPEC_SCHEMA.properties, '');
    for (const d of ['data', 'adapter', 'optimizer', 'schedule', 'earlyStopping']) walk(def(d).properties, d);
  });
  test('enums match the protocol and the sidecar types', () => {
    assert.deepEqual(def('adapter').properties!.kind!.enum, [...ADAPTER_KINDS]);
    assert.deepEqual(def('adapter').properties!.init!.enum, [...LORA_INITS]);
    assert.deepEqual(SPEC_SCHEMA.properties!.backend!.enum, ['auto', ...BACKENDS]);
    assert.deepEqual(def('data').properties!.format!.enum, [...DATA_FORMATS]);
    assert.deepEqual(def('schedule').properties!.type!.enum, [...SCHEDULES]);
  });

  test('an editor accepts the same adapter options per kind as the sidecar (adapter-options.ts)', () => {
    const SAMPLE: Record<Exclude<keyof AdapterSpec, 'kind'>, unknown> = {
      targets: ['c_attn'], r: 4, alpha: 8, dropout: 0.1, rslora: true, bias: 'all', rankPattern: { c_attn: 2 }, alphaPattern: { c_attn: 4 },
      init: 'gaussian', calibRows: 4, bottleneck: 16, mask: 'm.safetensors', modulesToSave: ['score'], decomposeBoth: true, decomposeFactor: 4,
      adalora: { targetR: 2, tinit: 1 },
      layers: [0, 2],
      blockSize: 8,
      gramSchmidt: true,
    };
    const adapters: Record<string, unknown>[] = [];
    for (const kind of ADAPTER_KINDS) {
      for (const base of [{ kind }, { kind, mask: 'm.safetensors' }]) {
        adapters.push(base);
        for (const [k, v] of Object.entries(SAMPLE)) adapters.push({ ...base, [k]: v });
        for (const init of LORA_INITS) adapters.push({ ...base, init }, { ...base, init, calibRows: 8 });
      }
    }
    const disagree = adapters.filter((a) => schemaAccepts('adapter', a) !== (adapterOptionProblems(a as unknown as AdapterSpec).length === 0));
    assert.deepEqual(disagree, []);
    assert.ok(adapters.some((a) => adapterOptionProblems(a as unknown as AdapterSpec).length > 0) && adapters.some((a) => adapterOptionProblems(a as unknown as AdapterSpec).length === 0));
  });

  test('an editor accepts the specs the sidecar accepts (the shipped examples, allocations, variants)', () => {
    const specs: unknown[] = [
      BASE,
      JSON.parse(readFileSync('media/demo.peft.json', 'utf8')),
      JSON.parse(readFileSync('test/fixtures/workspace/addition-lora.peft.json', 'utf8')),
      { ...BASE, data: { train: 'data/train.jsonl', evalSplit: 0.2 }, earlyStopping: { patience: 2 }, epochs: 2, schedule: { warmupSteps: 3 } },
      { ...BASE, adapter: { kind: 'lora', init: 'corda-kpm', calibRows: 16 } },
      { model: 'model', data: { train: 'data/train.jsonl' }, allocation: 'a.rank-1pct.allocation.json' },
      { model: 'model', data: { train: 'data/train.jsonl' }, allocation: { method: 'spt', budget: '1%', trainableParams: 9, lora: { targets: ['c_attn'], r: 2, alpha: 4, rankPattern: {}, alphaPattern: {}, params: 5 }, sparse: { mask: 'm.safetensors', tensors: 1, params: 4 }, norms: { mask: 'n.safetensors', tensors: ['ln_f.weight'], params: 0 } } },
      { model: 'model', data: { train: 'data/train.jsonl' }, steps: 5, variants: [{ name: 'a', adapter: { kind: 'full' }, epochs: 1 }, { name: 'b', adapter: { kind: 'sparse', mask: 'm.safetensors' }, schedule: { warmupRatio: 0.1 } }] },
    ];
    for (const spec of specs) {
      const text = JSON.stringify(spec);
      assert.deepEqual(parseSpecText(text, 'x.peft.json').issues, [], text);
      assert.ok(schemaAccepts(undefined, spec), `the schema rejects ${text}`);
    }
  });

  test('uses only keywords validateNode checks, outside the cross-field rules written for editors', () => {
    // A keyword validateNode does not know would go unchecked by the sidecar without a word.
    const CHECKED = ['$ref', 'type', 'properties', 'additionalProperties', 'required', 'enum', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength', 'maxLength', 'pattern', 'items', 'minItems', 'maxItems', 'definitions'];
    const ANNOTATIONS = ['$schema', '$id', 'title', 'description', 'default'];
    // Mirrors of load.ts's checks, which give the better messages (tested above).
    const EDITOR_ONLY = ['anyOf', 'allOf', 'dependencies'];
    const walk = (s: Record<string, unknown>, where: string): void => {
      for (const [k, v] of Object.entries(s)) {
        assert.ok([...CHECKED, ...ANNOTATIONS, ...EDITOR_ONLY].includes(k), `${where}: keyword ${k}`);
        if (k === 'properties' || k === 'definitions') for (const [name, sub] of Object.entries(v as Record<string, Record<string, unknown>>)) walk(sub, `${where}.${name}`);
        if ((k === 'items' || k === 'additionalProperties') && typeof v === 'object') walk(v as Record<string, unknown>, `${where}.${k}`);
      }
    };
    walk(SPEC_SCHEMA as unknown as Record<string, unknown>, '#');
  });
});

describe('field check (what the editor marks on save beyond the schema)', () => {
  test('a second text or template field missing from the data\'s columns, and classifier keys on a decoder, at their keys', async () => {
    const ws = workspace();
    mkdirSync(join(ws, 'bert'));
    writeFileSync(join(ws, 'bert', 'config.json'), JSON.stringify({ model_type: 'bert', hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 16, vocab_size: 10 }));
    mkdirSync(join(ws, 'gpt'));
    writeFileSync(join(ws, 'gpt', 'config.json'), JSON.stringify({ model_type: 'gpt2', n_embd: 8, n_head: 2, n_layer: 1, vocab_size: 10, n_positions: 16 }));
    writeFileSync(join(ws, 'data', 'mnli.jsonl'), '{"premise":"a","hypothesis":"b","label":0}\n');
    const problems = async (spec: Record<string, unknown>) => (await specFieldProblems(loadSpec(writeSpec(ws, JSON.stringify(spec)), { workspaceRoot: ws }))).map((e) => `${e.where}: ${e.problem}`);
    assert.deepEqual(await problems({ ...BASE, model: 'bert', data: { train: 'data/mnli.jsonl', textField: 'premise', textPairField: 'hypotesis' } }), ['data.textPairField: "hypotesis" is not a column of ' + join(ws, 'data', 'mnli.jsonl') + ' (columns: premise, hypothesis, label)']);
    assert.deepEqual(await problems({ ...BASE, model: 'bert', data: { train: 'data/mnli.jsonl', textField: 'premise', textPairField: 'hypothesis' } }), []);
    assert.match((await problems({ ...BASE, model: 'gpt', data: { train: 'data/mnli.jsonl', promptTemplate: '{premise} => {hypothesis} {lable}' } })).join('\n'), /^data\.promptTemplate: \{lable\} is not a column/);
    assert.deepEqual(await problems({ ...BASE, model: 'gpt', numLabels: 3 }), ['numLabels: is for classifiers; gpt2 here is a causal language model']);
  });

  test('every data field the spec writes is checked against the train and eval files\' columns; defaulted ones are not', async () => {
    const ws = workspace();
    mkdirSync(join(ws, 'bert'));
    writeFileSync(join(ws, 'bert', 'config.json'), JSON.stringify({ model_type: 'bert', hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 16, vocab_size: 10 }));
    writeFileSync(join(ws, 'data', 'sst.jsonl'), '{"sentence":"a","label":0}\n');
    writeFileSync(join(ws, 'data', 'sst-eval.jsonl'), '{"sentence":"b","lbl":1}\n');
    writeFileSync(join(ws, 'data', 'chat.jsonl'), '{"messages":[{"role":"user","content":"hi"}]}\n');
    const train = join(ws, 'data', 'sst.jsonl');
    const problems = async (spec: Record<string, unknown>) => (await specFieldProblems(loadSpec(writeSpec(ws, JSON.stringify(spec)), { workspaceRoot: ws }))).map((e) => `${e.where}: ${e.problem}`);
    const bert = (data: Record<string, unknown>) => ({ ...BASE, model: 'bert', data: { train: 'data/sst.jsonl', ...data } });
    // Written and not a column: marked at its key, naming the file and its columns.
    assert.deepEqual(await problems(bert({ textField: 'sentence', labelField: 'lbl' })), [`data.labelField: "lbl" is not a column of ${train} (columns: sentence, label)`]);
    assert.deepEqual(await problems(bert({ textField: 'sentense' })), [`data.textField: "sentense" is not a column of ${train} (columns: sentence, label)`]);
    assert.deepEqual(await problems(bert({ textField: 'sentence', labelField: 'label' })), []);
    // Prompt, completion and messages fields alike (a causal LM's).
    assert.deepEqual(await problems({ ...BASE, data: { train: 'data/train.jsonl', promptField: 'q', completionField: 'a', messagesField: 'conversation' } }), [
      `data.promptField: "q" is not a column of ${join(ws, 'data', 'train.jsonl')} (columns: text)`,
      `data.completionField: "a" is not a column of ${join(ws, 'data', 'train.jsonl')} (columns: text)`,
      `data.messagesField: "conversation" is not a column of ${join(ws, 'data', 'train.jsonl')} (columns: text)`,
    ]);
    // Defaults (text, prompt, completion, messages, label) are the loader's to find row by row: a chat file, a file without "text", no marks.
    assert.deepEqual(await problems({ ...BASE, data: { train: 'data/chat.jsonl' } }), []);
    assert.deepEqual(await problems({ ...BASE, data: { train: 'data/sst.jsonl' } }), []);
    // The eval file is checked the same way, at the same key.
    assert.deepEqual(await problems(bert({ textField: 'sentence', labelField: 'label', eval: 'data/sst-eval.jsonl' })), [
      `data.labelField: "label" is not a column of ${join(ws, 'data', 'sst-eval.jsonl')} (columns: sentence, lbl)`,
    ]);
    // CSV headers are columns too.
    assert.deepEqual(await problems({ ...BASE, model: 'bert', data: { train: 'data/train.csv', labelField: 'class' } }), [`data.labelField: "class" is not a column of ${join(ws, 'data', 'train.csv')} (columns: text, label)`]);
  });
});

