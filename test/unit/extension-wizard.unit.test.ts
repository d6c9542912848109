/**
 * "New Fine-tune…" answers → spec (src/extension/model/wizard.ts). Every spec the wizard can write
 * must pass the sidecar's own validation, and with a bundled task copied into a workspace it must
 * load (paths resolved, the bundled model found).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadSpec, parseSpecText, variantConfig } from '../../sidecar/src/spec/load';
import { firstRowFields } from '../../sidecar/src/data/rows';
import { ADAPTER_KINDS, LORA_INITS } from '../../src/protocol';
import { specLenses } from '../../src/extension/model/codelens';
import { adapterChoices, adapterSpec, buildSpec, buildSpecText, COMPARE_CHOICES, COMPARE_DEFAULTS, dataFields, defaultSpecFileName, initChoices, type WizardAnswers } from '../../src/extension/model/wizard';

const ws = mkdtempSync(join(tmpdir(), 'peft-wizard-'));
after(() => rmSync(ws, { recursive: true, force: true }));

const answers = (over: Partial<WizardAnswers> = {}): WizardAnswers => ({
  specFile: join(ws, 'addition-lora.peft.json'),
  model: { kind: 'bundled', id: 'tiny-gpt' },
  data: { task: 'addition', train: join(ws, 'data', 'addition', 'train.jsonl'), eval: join(ws, 'data', 'addition', 'eval.jsonl'), heldout: join(ws, 'data', 'heldout.jsonl') },
  adapter: 'lora',
  logEvery: 5,
  ...over,
});

describe('wizard → spec', () => {
  it('writes relative paths, the bundled model id and the logging interval', () => {
    const spec = buildSpec(answers({ init: 'pissa' }), ws);
    assert.deepEqual(spec, {
      description: 'lora on the bundled "addition" task',
      model: 'peft-lab/tiny-gpt',
      data: { train: './data/addition/train.jsonl', eval: './data/addition/eval.jsonl', heldout: './data/heldout.jsonl' },
      adapter: { kind: 'lora', r: 8, alpha: 16, dropout: 0.05, init: 'pissa' },
      optimizer: { lr: 1e-3 },
      batchSize: 8,
      logEvery: 5,
      seed: 42,
    });
  });

  it('holds out 10% when there is no eval file, and points at a model folder relatively', () => {
    const spec = buildSpec(answers({ model: { kind: 'folder', path: join(ws, 'models', 'm') }, data: { train: join(ws, 'd', 'rows.csv') } }), join(ws, 'specs'));
    assert.equal(spec.model, '../models/m');
    assert.deepEqual(spec.data, { train: '../d/rows.csv', evalSplit: 0.1 });
    assert.equal(spec.description, undefined);
    assert.equal(buildSpec(answers({ model: { kind: 'hub', id: 'Qwen/Qwen2.5-0.5B' } }), ws).model, 'Qwen/Qwen2.5-0.5B', 'a cached Hugging Face model by its id');
  });

  it('offers the inits each kind takes', () => {
    assert.deepEqual(initChoices('lora'), [...LORA_INITS]);
    assert.deepEqual(initChoices('dora'), ['default', 'gaussian']);
    assert.deepEqual(initChoices('ia3'), []);
    assert.deepEqual(
      adapterChoices().map((c) => c.kind),
      [...ADAPTER_KINDS],
    );
    for (const c of adapterChoices()) assert.ok(c.description.length > 0);
  });

  it('writes a spec the sidecar accepts for every adapter kind and init', () => {
    const combos: [WizardAnswers['adapter'], WizardAnswers['init'] | undefined][] = [];
    for (const kind of ADAPTER_KINDS) {
      const inits = initChoices(kind);
      if (inits.length === 0) combos.push([kind, undefined]);
      for (const init of inits) combos.push([kind, init]);
    }
    for (const [kind, init] of combos) {
      const a = answers({ adapter: kind, ...(init ? { init } : {}), ...(kind === 'sparse' ? { mask: join(ws, 'mask.safetensors') } : {}) });
      const { issues } = parseSpecText(buildSpecText(a, ws), a.specFile);
      assert.deepEqual(issues, [], `${kind}${init ? ` / ${init}` : ''}`);
    }
    assert.deepEqual(adapterSpec('sparse', undefined, './m.safetensors'), { kind: 'sparse', mask: './m.safetensors' });
    assert.deepEqual(adapterSpec('lora', 'default', undefined), { kind: 'lora', r: 8, alpha: 16, dropout: 0.05 }, 'the default init is left out');
  });

  it('loads in a workspace with the bundled task copied in', () => {
    const task = join(ws, 'data', 'addition');
    mkdirSync(task, { recursive: true });
    for (const f of ['train.jsonl', 'eval.jsonl']) copyFileSync(join('media', 'data', 'addition', f), join(task, f));
    copyFileSync(join('media', 'data', 'heldout.jsonl'), join(ws, 'data', 'heldout.jsonl'));
    const a = answers();
    writeFileSync(a.specFile, buildSpecText(a, ws));
    const spec = loadSpec(a.specFile, { workspaceRoot: ws });
    assert.equal(spec.data.train, join(task, 'train.jsonl'));
    assert.equal(spec.modelDir, join(process.cwd(), 'media', 'models', 'tiny-gpt'));
    assert.equal(spec.logEvery, 5);
  });

  it("sets the data fields a chosen file's columns call for (instruction data, question/answer, GLUE's sentence); the spec loads", async () => {
    assert.deepEqual(dataFields(['text']), {});
    assert.deepEqual(dataFields(['prompt', 'completion']), {});
    assert.deepEqual(dataFields(['messages', 'id']), {});
    assert.deepEqual(dataFields(['instruction', 'input', 'output']), { promptTemplate: '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n', completionField: 'output' });
    assert.deepEqual(dataFields(['instruction', 'context', 'response', 'category']), { promptTemplate: '### Instruction:\n{instruction}\n\n### Context:\n{context}\n\n### Response:\n', completionField: 'response' });
    assert.deepEqual(dataFields(['question', 'answer']), { promptTemplate: 'Question: {question}\nAnswer: ', completionField: 'answer' });
    assert.deepEqual(dataFields(['sentence', 'label', 'idx']), { textField: 'sentence' });
    // GLUE's pairs: MRPC / RTE / STS-B, QQP, MNLI, QNLI (its question comes first, not the single-sentence rule).
    assert.deepEqual(dataFields(['sentence1', 'sentence2', 'label', 'idx'], true), { textField: 'sentence1', textPairField: 'sentence2' });
    assert.deepEqual(dataFields(['question1', 'question2', 'label'], true), { textField: 'question1', textPairField: 'question2' });
    assert.deepEqual(dataFields(['premise', 'hypothesis', 'label'], true), { textField: 'premise', textPairField: 'hypothesis' });
    assert.deepEqual(dataFields(['question', 'sentence', 'label'], true), { textField: 'question', textPairField: 'sentence' });
    // A causal LM reads no pairs: no pair field for it.
    assert.deepEqual(dataFields(['sentence1', 'sentence2', 'label']), {});
    // From a file, into a spec the sidecar loads and reads.
    const train = join(ws, 'data', 'alpaca.jsonl');
    mkdirSync(dirname(train), { recursive: true });
    writeFileSync(train, `${JSON.stringify({ instruction: 'Add.', input: '2, 3', output: '5' })}\n`);
    const columns = await firstRowFields(train);
    assert.deepEqual(columns, ['instruction', 'input', 'output']);
    const a = answers({ specFile: join(ws, 'alpaca.peft.json'), data: { train, fields: dataFields(columns!) } });
    writeFileSync(a.specFile, buildSpecText(a, ws));
    const spec = loadSpec(a.specFile, { workspaceRoot: ws });
    assert.equal(spec.data.completionField, 'output');
    assert.match(spec.data.promptTemplate!, /\{instruction\}/);
  });

  it('writes a comparison spec for several adapters: one variant each, full fine-tuning at its own lr', () => {
    const spec = buildSpec(answers({ compare: ['lora', 'dora', 'full'] }), ws);
    assert.equal(spec.adapter, undefined, 'the adapters are the variants\'');
    assert.equal(spec.description, 'lora vs dora vs full on the bundled "addition" task');
    assert.deepEqual(spec.optimizer, { lr: 1e-3 });
    assert.deepEqual(spec.variants, [
      { name: 'lora', adapter: { kind: 'lora', r: 8, alpha: 16, dropout: 0.05 } },
      { name: 'dora', adapter: { kind: 'dora', r: 8, alpha: 16, dropout: 0.05 } },
      { name: 'full', adapter: { kind: 'full' }, optimizer: { lr: 1e-4 } },
    ]);
    // One kind is a plain single-run spec.
    assert.deepEqual(buildSpec(answers({ adapter: 'ia3', compare: ['ia3'] }), ws).adapter, { kind: 'ia3' });
    // The editor offers "Compare variants" on it, not "Fine-tune".
    const text = buildSpecText(answers({ compare: [...COMPARE_DEFAULTS] }), ws);
    assert.deepEqual(specLenses(text).map((l) => l.kind), ['score', 'compare']);
  });

  it('every comparable kind, all in one comparison, passes the sidecar\'s validation and loads as variants', () => {
    assert.ok(!COMPARE_CHOICES.includes('sparse') && COMPARE_CHOICES.length === ADAPTER_KINDS.length - 1);
    const a = answers({ specFile: join(ws, 'all.peft.json'), compare: [...COMPARE_CHOICES] });
    const text = buildSpecText(a, ws);
    assert.deepEqual(parseSpecText(text, a.specFile).issues, []);
    const task = join(ws, 'data', 'addition');
    mkdirSync(task, { recursive: true });
    for (const f of ['train.jsonl', 'eval.jsonl']) copyFileSync(join('media', 'data', 'addition', f), join(task, f));
    copyFileSync(join('media', 'data', 'heldout.jsonl'), join(ws, 'data', 'heldout.jsonl'));
    writeFileSync(a.specFile, text);
    const spec = loadSpec(a.specFile, { workspaceRoot: ws });
    assert.deepEqual(spec.variants!.map((v) => variantConfig(spec, v).adapter.kind), [...COMPARE_CHOICES]);
    assert.deepEqual(spec.variants!.map((v) => variantConfig(spec, v).optimizer.lr), COMPARE_CHOICES.map((k) => (k === 'full' ? 1e-4 : 1e-3)));
  });

  it('names the spec after the task, adapter and init', () => {
    assert.equal(defaultSpecFileName({ adapter: 'lora', init: 'pissa', data: { task: 'addition', train: 'x' } }), 'addition-lora-pissa.peft.json');
    assert.equal(defaultSpecFileName({ adapter: 'ia3', data: { train: '/a/b/my rows.csv' } }), 'my-rows-ia3.peft.json');
    assert.equal(defaultSpecFileName({ adapter: 'lora', init: 'default', data: { task: 't', train: 'x' } }), 't-lora.peft.json');
    assert.equal(defaultSpecFileName({ adapter: 'lora', compare: ['lora', 'ia3'], data: { task: 'source', train: 'x' } }), 'source-compare.peft.json');
  });
});
