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
import { loadData, type ModelDataInfo } from '../../sidecar/src/data/dataset';
import { loadTokenizer } from '../../sidecar/src/data/tokenizer';
import { f32, writeSafetensors } from '../../sidecar/src/io/safetensors';
import {
  adapterChoices,
  adapterSpec,
  buildSpec,
  buildSpecText,
  checkpointHasHead,
  COMPARE_CHOICES,
  COMPARE_DEFAULTS,
  configNumLabels,
  dataFields,
  dataNumLabels,
  defaultSpecFileName,
  initChoices,
  specNumLabels,
  wizardNumLabels,
  type HeadConfig,
  type WizardAnswers,
} from '../../src/extension/model/wizard';

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
    assert.deepEqual(spec.variants!.map((v) => variantConfig(spec, v).optimizer.lr), COMPARE_CHOICES.map((k) => (k === 'full' ? 1e-4 : k === 'vera' ? 1e-2 : 1e-3)));
  });

  it('names the spec after the task, adapter and init', () => {
    assert.equal(defaultSpecFileName({ adapter: 'lora', init: 'pissa', data: { task: 'addition', train: 'x' } }), 'addition-lora-pissa.peft.json');
    assert.equal(defaultSpecFileName({ adapter: 'ia3', data: { train: '/a/b/my rows.csv' } }), 'my-rows-ia3.peft.json');
    assert.equal(defaultSpecFileName({ adapter: 'lora', init: 'default', data: { task: 't', train: 'x' } }), 't-lora.peft.json');
    assert.equal(defaultSpecFileName({ adapter: 'lora', compare: ['lora', 'ia3'], data: { task: 'source', train: 'x' } }), 'source-compare.peft.json');
  });
});

describe('wizard → numLabels (a classifier head that fits the data)', () => {
  const BERT = { model_type: 'bert', hidden_size: 4, num_attention_heads: 1, num_hidden_layers: 1, intermediate_size: 8, vocab_size: 257, max_position_embeddings: 64 };
  /** A model folder: config.json and a checkpoint with (or without) a classifier of `head` outputs. */
  async function modelFolder(name: string, config: HeadConfig, head: number | undefined): Promise<string> {
    const dir = join(ws, 'models', name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const tensors = { 'bert.embeddings.word_embeddings.weight': f32([257, 4], new Float32Array(257 * 4)) };
    await writeSafetensors(join(dir, 'model.safetensors'), head === undefined ? tensors : { ...tensors, 'classifier.weight': f32([head, 4], new Float32Array(head * 4)), 'classifier.bias': f32([head], new Float32Array(head)) });
    return dir;
  }
  const dataFile = (name: string, text: string): string => {
    const f = join(ws, 'glue', name);
    mkdirSync(dirname(f), { recursive: true });
    writeFileSync(f, text);
    return f;
  };
  const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

  it("sizes config.json's head as transformers does: num_labels, else id2label's size, else 2", () => {
    assert.equal(configNumLabels({ num_labels: 3 }), 3);
    assert.equal(configNumLabels({ id2label: { 0: 'neg', 1: 'neu', 2: 'pos' } }), 3);
    assert.equal(configNumLabels({ model_type: 'bert' }), 2);
  });

  it("reads the data's labels as the loader does: ids, names, a regression's numbers, multi-label lists", () => {
    assert.equal(dataNumLabels([0, 1, 2, 1], {}), 3, "MNLI's ids: the largest + 1");
    assert.equal(dataNumLabels(['0', '2'], {}), 3, 'CSV ids are ids');
    assert.equal(dataNumLabels(['entailment', 'neutral', 'contradiction', 'neutral'], {}), 3);
    assert.equal(dataNumLabels([3.8, 0, 5, 2.25], {}), 1, "STS-B's scores: a regression");
    assert.equal(dataNumLabels([0, 2, -1, -1], {}), 3, "GLUE test rows' −1 (no label) count for nothing");
    assert.equal(dataNumLabels([-1, '-1'], {}), undefined, 'a test split alone has no labels');
    assert.equal(dataNumLabels(['3.8', '1', '0'], {}), 1, 'CSV scores alike');
    assert.equal(dataNumLabels([0, 5, 3], { num_labels: 1 }), 1, 'any numbers, for a model that regresses');
    assert.equal(dataNumLabels([0, 1], { num_labels: 1, problem_type: 'single_label_classification' }), 2);
    assert.equal(dataNumLabels([['a', 'b'], ['c'], '["a"]'], {}), 3, 'multi-label rows count their items');
    // The model's own label table names them all: its head, though the data has fewer.
    assert.equal(dataNumLabels(['positive', 'positive'], { num_labels: 2, label2id: { negative: 0, positive: 1 } }), 2);
    assert.equal(dataNumLabels(['positive'], { num_labels: 2, label2id: { LABEL_0: 0, LABEL_1: 1 } }), 1, 'the default LABEL_k table names nothing');
    assert.equal(dataNumLabels([undefined, null], {}), undefined, 'no labels: nothing to say');
  });

  it("writes numLabels only where config.json's head does not fit, or the checkpoint has none", () => {
    assert.equal(specNumLabels(3, {}, true), 3);
    assert.equal(specNumLabels(1, { num_labels: 2 }, true), 1);
    assert.equal(specNumLabels(2, {}, true), undefined, 'a 2-label head for 2 classes: kept');
    assert.equal(specNumLabels(2, {}, false), 2, 'a base checkpoint: its head is fresh, sized by the spec');
    assert.equal(specNumLabels(2, {}, undefined), undefined, 'an unreadable checkpoint: config.json decides');
    assert.equal(specNumLabels(undefined, {}, false), undefined);
  });

  it('from a model folder and data files: MNLI and STS-B on a 2-label BERT get numLabels, a fitting head none, a base checkpoint its size; the loader takes the data with it and refuses it without', async () => {
    const sst = await modelFolder('sst', { ...BERT, num_labels: 2 }, 2);
    const base = await modelFolder('base', BERT, undefined);
    assert.equal(await checkpointHasHead(sst), true);
    assert.equal(await checkpointHasHead(base), false);
    assert.equal(await checkpointHasHead(join(ws, 'models', 'none')), undefined);
    const mnli = dataFile('mnli.jsonl', jsonl([{ premise: 'a', hypothesis: 'b', label: 0 }, { premise: 'c', hypothesis: 'd', label: 1 }]));
    const mnliEval = dataFile('mnli-eval.jsonl', jsonl([{ premise: 'e', hypothesis: 'f', label: 2 }]));
    const stsb = dataFile('stsb.csv', 'sentence1,sentence2,label\na,b,3.8\nc,d,0.5\ne,f,2.25\n');
    const sst2 = dataFile('sst2.jsonl', jsonl([{ sentence: 'good', label: 1 }, { sentence: 'bad', label: 0 }]));
    assert.equal(await wizardNumLabels(sst, [mnli, mnliEval]), 3, "the eval file's labels count too");
    assert.equal(await wizardNumLabels(sst, [mnli]), undefined, 'ids 0 and 1 fit a 2-label head');
    assert.equal(await wizardNumLabels(sst, [stsb]), 1);
    assert.equal(await wizardNumLabels(sst, [sst2]), undefined);
    assert.equal(await wizardNumLabels(base, [sst2]), 2);
    assert.equal(await wizardNumLabels(base, [dataFile('named.jsonl', jsonl([{ text: 'x', category: 'a' }, { text: 'y', category: 'b' }, { text: 'z', category: 'c' }]))], 'category'), 3, 'the label column as the fields name it');
    const gpt = join(ws, 'models', 'gpt');
    mkdirSync(gpt, { recursive: true });
    writeFileSync(join(gpt, 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
    assert.equal(await wizardNumLabels(gpt, [mnli, mnliEval]), undefined, 'a causal LM has no head to size');
    assert.equal(await wizardNumLabels(sst, [join(ws, 'glue', 'missing.jsonl')]), undefined, 'unreadable data: the run reports it');

    // The loader, with the head Model.load gives for the spec's numLabels (one output: a regression), takes the data; with config.json's 2 it stops, naming numLabels.
    const tok = loadTokenizer(join(ws, 'no-tokenizer'));
    const load = (train: string, fields: Record<string, string>, numLabels: number, ev?: string) => {
      const info: ModelDataInfo = { task: 'sequence-classification', modelType: 'bert', vocabSize: 257, maxPositions: 64, typeVocabSize: 2, numLabels, problemType: numLabels === 1 ? 'regression' : 'single_label_classification' };
      const format = train.endsWith('.csv') ? 'csv' : 'jsonl';
      return loadData({ data: { format, train, ...(ev ? { eval: ev } : {}), textField: 'text', promptField: 'prompt', completionField: 'completion', labelField: 'label', ...fields }, seed: 1, specFile: 'spec.peft.json' }, info, tok);
    };
    const pair = { textField: 'premise', textPairField: 'hypothesis' };
    assert.equal(load(mnli, pair, 3, mnliEval).eval.length, 1);
    assert.throws(() => load(mnli, pair, 2, mnliEval), /numLabels/);
    const row = load(stsb, { textField: 'sentence1', textPairField: 'sentence2' }, 1).train[1]!;
    assert.equal(row.kind === 'cls' ? row.label : undefined, 0.5, "STS-B's score is the target");
    assert.throws(() => load(stsb, { textField: 'sentence1', textPairField: 'sentence2' }, 2), /numLabels/);

    // Into the spec, beside the model, only where it is needed; the sidecar accepts it.
    const a = answers({ specFile: join(ws, 'mnli.peft.json'), model: { kind: 'folder', path: sst }, numLabels: 3, data: { train: mnli, eval: mnliEval, fields: dataFields(['premise', 'hypothesis', 'label'], true) } });
    const spec = buildSpec(a, ws);
    assert.equal(spec.numLabels, 3);
    assert.deepEqual(Object.keys(spec).slice(0, 3), ['model', 'numLabels', 'data']);
    assert.deepEqual(parseSpecText(buildSpecText(a, ws), a.specFile).issues, []);
    assert.equal(loadSpec((writeFileSync(a.specFile, buildSpecText(a, ws)), a.specFile), { workspaceRoot: ws }).numLabels, 3);
    assert.ok(!('numLabels' in buildSpec(answers(), ws)));
  });
});
