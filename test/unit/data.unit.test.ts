/**
 * Data pipeline: JSONL (text, prompt + completion, text + label), CSV, image folders (PNG and
 * JPEG), tokenizers (tokenizer.json through @huggingface/tokenizers, else byte-level), label
 * mapping, truncation, the seeded eval split, batching (padding, label masking, attention masks),
 * and bad rows reported with file, line and field.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as jpeg from 'jpeg-js';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { after, before, describe, test } from 'node:test';
import { initBackend } from '../../sidecar/src/backend';
import { disposeTrainBatch, makeBatch } from '../../sidecar/src/data/batch';
import { pearson } from '../../sidecar/src/train/evaluate';
import { f32, writeSafetensors } from '../../sidecar/src/io/safetensors';
import { disposeBatch, readInputBatch } from '../../sidecar/src/io/tensors';
import { parseConfig, positionLimit } from '../../sidecar/src/models/config';
import { inputLimits } from '../../sidecar/src/models/input-limits';
import { loadData, loadDataFiles, loadHeldout, splitIndices, type Example, type ModelDataInfo } from '../../sidecar/src/data/dataset';
import { decodeImage, listImageFolder, toPixelValues } from '../../sidecar/src/data/images';
import { firstRowFields, readCsv, readJsonl, readParquet, readRows } from '../../sidecar/src/data/rows';
import { parquetWriteFile } from 'hyparquet-writer';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { loadTokenizer, tokenizerMismatch, truncateLongestFirst, type DataTokenizer } from '../../sidecar/src/data/tokenizer';
import { InputError } from '../../sidecar/src/errors';
import { Rng } from '../../sidecar/src/train/rng';
import { byteLevelBpeTokenizer, sentencePieceTokenizer } from '../helpers/tokenizers';
import { parsePromptTemplate, renderPromptTemplate, type TemplatePart } from '../../sidecar/src/data/prompt-template';
import type { DataFormat, DataSpec } from '../../sidecar/src/spec/types';

const root = mkdtempSync(join(tmpdir(), 'peft-lab-data-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(async () => {
  await initBackend('cpu', () => undefined);
});
let n = 0;
const file = (name: string, text: string): string => {
  const d = join(root, `f${n++}`);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, name), text);
  return join(d, name);
};
const jsonl = (rows: unknown[]) => rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

const byte = loadTokenizer(join(root, 'no-model')); // no tokenizer.json → byte-level
const LM: ModelDataInfo = { task: 'causal-lm', modelType: 'gpt2', vocabSize: 257, maxPositions: 64 };
const CLS: ModelDataInfo = { task: 'sequence-classification', modelType: 'bert', vocabSize: 257, maxPositions: 64, numLabels: 3, label2id: { LABEL_0: 0, LABEL_1: 1, LABEL_2: 2 } };

function spec(train: string, extra: Partial<DataSpec> = {}, format: DataFormat = 'jsonl'): DataSpec & { format: DataFormat } {
  return { format, train, textField: 'text', promptField: 'prompt', completionField: 'completion', labelField: 'label', ...extra };
}
const load = (d: DataSpec & { format: DataFormat }, info: ModelDataInfo, tok: DataTokenizer | undefined = byte, seed = 1) => loadData({ data: d, seed, specFile: 'spec.peft.json' }, info, tok);

/** The InputError thrown by `fn`, checked to name `where` in file `f`. */
function inputError(fn: () => unknown, f: string, where: RegExp): InputError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof InputError, `expected an InputError, got ${String(e)}`);
    assert.equal(e.file, f);
    assert.match(e.where, where);
    assert.ok(!e.message.includes('\n'), 'one line');
    return e;
  }
  assert.fail('no error');
}

describe('rows', () => {
  test('JSONL: blank lines skipped, line numbers kept, CRLF tolerated', () => {
    const f = file('a.jsonl', '{"text":"a"}\r\n\n  \n{"text":"b"}\n');
    assert.deepEqual(readJsonl(f).map((r) => [r.line, r.fields.text]), [[1, 'a'], [4, 'b']]);
  });
  test('JSONL: invalid JSON and non-objects name the line', () => {
    const f = file('bad.jsonl', '{"text":"a"}\n{"text": oops}\n');
    assert.match(inputError(() => readJsonl(f), f, /^line 2$/).message, /not valid JSON/);
    const g = file('arr.jsonl', '{"text":"a"}\n[1,2]\n');
    assert.match(inputError(() => readJsonl(g), g, /^line 2$/).message, /expected a JSON object, got an array/);
  });
  test('CSV: header, quoted commas and newlines, line of each record', () => {
    const f = file('a.csv', 'text,label\n"hello, world",pos\n"two\nlines",neg\nplain,pos\n');
    const rows = readCsv(f);
    assert.deepEqual(rows.map((r) => [r.line, r.fields.text, r.fields.label]), [[2, 'hello, world', 'pos'], [4, 'two\nlines', 'neg'], [5, 'plain', 'pos']]);
  });
  test('Parquet (as Hugging Face datasets store it: snappy pages, nested chat messages, int64 labels)', async () => {
    const f = join(root, 'chat.parquet');
    parquetWriteFile({
      filename: f,
      columnData: [
        { name: 'text', data: ['hello', 'world'], type: 'STRING' },
        { name: 'label', data: [1n, 2n], type: 'INT64' },
        { name: 'messages', data: [[{ role: 'user', content: '2+2' }, { role: 'assistant', content: '4' }], [{ role: 'user', content: '3+4' }, { role: 'assistant', content: '7' }]] },
      ],
    });
    const rows = await readParquet(f);
    assert.deepEqual(rows.map((r) => [r.line, r.unit, r.fields.text, r.fields.label]), [[1, 'row', 'hello', 1], [2, 'row', 'world', 2]]);
    assert.deepEqual(rows[0]!.fields.messages, [{ role: 'user', content: '2+2' }, { role: 'assistant', content: '4' }]);
    // Chat rows from Parquet make the examples the same rows from JSONL make.
    const fromJsonl = file('chat-same.jsonl', jsonl(rows.map((r) => ({ messages: r.fields.messages }))));
    const a = await loadDataFiles({ data: spec(f, {}, 'parquet'), seed: 1, specFile: 'spec.peft.json' }, { ...LM, maxPositions: 256 }, byte);
    const b = load(spec(fromJsonl), { ...LM, maxPositions: 256 });
    assert.deepEqual(a.train.map((e) => e.kind === 'lm' && Array.from(e.labels)), b.train.map((e) => e.kind === 'lm' && Array.from(e.labels)));
    // A bad value names the row, a broken file the file.
    const bad = join(root, 'bad.parquet');
    parquetWriteFile({ filename: bad, columnData: [{ name: 'prompt', data: ['a', 'b'], type: 'STRING' }, { name: 'completion', data: ['x', ''], type: 'STRING' }] });
    await assert.rejects(loadDataFiles({ data: spec(bad, {}, 'parquet'), seed: 1, specFile: 's' }, LM, byte), (e: InputError) => e.file === bad && e.where === 'row 2, field "completion"' && /the completion is empty/.test(e.problem));
    // A class label outside the model: its row, as in any other Parquet error.
    const cls = join(root, 'cls.parquet');
    parquetWriteFile({ filename: cls, columnData: [{ name: 'text', data: ['a', 'b'], type: 'STRING' }, { name: 'label', data: [1n, 7n], type: 'INT64' }] });
    await assert.rejects(loadDataFiles({ data: spec(cls, {}, 'parquet'), seed: 1, specFile: 's' }, CLS, byte), (e: InputError) => e.file === cls && e.where === 'row 2, field "label"');
    const junk = file('junk.parquet', 'not parquet at all');
    await assert.rejects(readParquet(junk), (e: InputError) => e.file === junk && /^not a readable Parquet file/.test(e.problem));
    assert.throws(() => readRows('parquet', f), /read with readRowsAsync/);
    // The columns a picker sees, read cheaply from each format.
    assert.deepEqual(await firstRowFields(f), ['text', 'label', 'messages']);
    // Pages in the other codecs pandas and pyarrow write (zstd, gzip, brotli, lz4): read alike.
    for (const [codec, compress] of [['GZIP', (x: Uint8Array) => new Uint8Array(gzipSync(x))], ['BROTLI', (x: Uint8Array) => new Uint8Array(brotliCompressSync(x))]] as const) {
      const z = join(root, `${codec}.parquet`);
      parquetWriteFile({ filename: z, codec, compressors: { [codec]: compress }, columnData: [{ name: 'text', data: ['zipped', 'rows'], type: 'STRING' }, { name: 'label', data: [0n, 1n], type: 'INT64' }] });
      assert.deepEqual((await readParquet(z)).map((r) => [r.fields.text, r.fields.label]), [['zipped', 0], ['rows', 1]], codec);
      assert.deepEqual(await firstRowFields(z), ['text', 'label'], codec);
    }
    assert.deepEqual(await firstRowFields(file('cols.csv', '\uFEFFquestion,answer\nq,a\n')), ['question', 'answer']);
    assert.deepEqual(await firstRowFields(file('cols.jsonl', '\n{"instruction":"x","output":"y"}\n')), ['instruction', 'output']);
    assert.equal(await firstRowFields(file('empty.jsonl', '')), undefined);
    assert.equal(await firstRowFields(junk), undefined);
  });

  test('CSV: a bad record names its line', () => {
    const f = file('bad.csv', 'text,label\nok,1\ntoo,many,fields\n');
    inputError(() => readCsv(f), f, /^line 3$/);
    const g = file('quote.csv', 'text,label\nok,1\n"unclosed,1\n');
    inputError(() => readCsv(g), g, /^line \d+$/);
  });
  test('CSV: an unclosed quote names the line where it opens, not the end of the file', () => {
    // Quoted newlines and "" escapes before it must not throw the line count off.
    const f = file('open.csv', 'text,label\n"two\nlines",1\n"say ""hi""",2\n"",3\n"opens here,4\nok,5\nok,6\nok,7\n');
    const e = inputError(() => readCsv(f), f, /^line 6$/);
    assert.match(e.message, /quote not closed/);
    const g = file('open2.csv', 'text,label\nok,1\nok,2\n"x ""y"" z\n\n\nok,3\n');
    inputError(() => readCsv(g), g, /^line 4$/);
  });
});

describe('examples', () => {
  test('text rows: labels are the ids (the loss shifts them)', () => {
    const d = load(spec(file('t.jsonl', jsonl([{ text: 'hello' }, { text: 'hi!' }]))), LM);
    assert.equal(d.task, 'causal-lm');
    assert.equal(d.metricName, undefined, 'plain text has no task metric');
    const e = d.train[0]!;
    assert.ok(e.kind === 'lm');
    assert.deepEqual([...e.ids], [...Buffer.from('hello')]);
    assert.deepEqual([...e.labels], [...e.ids]);
    assert.equal(d.maxLength, 64);
  });

  test('prompt + completion: −100 on the prompt, EOS ends the completion when the model has it', () => {
    const d = load(spec(file('pc.jsonl', jsonl([{ prompt: '1+1=', completion: '2' }]))), LM);
    const e = d.train[0]!;
    assert.ok(e.kind === 'lm' && e.completion);
    assert.deepEqual([...e.ids], [...Buffer.from('1+1=2'), 256]);
    assert.deepEqual([...e.labels], [-100, -100, -100, -100, 50, 256]);
    assert.equal(d.metricName, undefined, 'no eval rows, so no metric');
    // A 128-token model cannot hold the byte tokenizer's EOS (256): no EOS, and a warning.
    const small = load(spec(file('pc2.jsonl', jsonl([{ prompt: 'a', completion: 'b' }]))), { ...LM, vocabSize: 128 });
    const s = small.train[0]!;
    assert.ok(s.kind === 'lm');
    assert.deepEqual([...s.labels], [-100, 98]);
    assert.match(small.warnings.join(' '), /end-of-sequence id 256 is not in the model's vocabulary of 128/);
  });

  test('prompt + completion are tokenized together, as TRL: no "▁" of the completion\'s own, one EOS even when the completion ends with it', () => {
    const dir = sentencePieceTokenizer(root, 'sp-pc', { bos: true });
    const tok = loadTokenizer(dir);
    const f = file('pc.jsonl', jsonl([{ prompt: 'Q: 2+2 A:', completion: ' 4' }, { prompt: 'Q: 1+1 A:', completion: ' 2</s>' }]));
    const rows = load(spec(f), { ...LM, vocabSize: tok.vocabSize }, tok).train;
    const row = (s: string) => rows.find((e) => e.kind === 'lm' && tok.decode(Array.from(e.ids)).startsWith(s));
    const [a, b] = [row('Q: 1+1'), row('Q: 2+2')];
    assert.ok(a?.kind === 'lm' && b?.kind === 'lm');
    const joint = tok.encode('Q: 1+1 A: 2', true);
    assert.deepEqual(Array.from(a.ids), [...joint, tok.eosId!], 'the ids of the whole text (BOS first), then EOS');
    assert.equal(tok.decode(Array.from(a.ids)), 'Q: 1+1 A: 2', 'one space before the answer, not two');
    const start = tok.encode('Q: 1+1 A:', true).length;
    assert.deepEqual(Array.from(a.labels), Array.from(a.ids).map((id, i) => (i < start ? -100 : id)));
    assert.deepEqual(Array.from(b.ids).slice(-3), [...tok.encode(' 4', false).slice(-2), tok.eosId!], '"</s>" in the completion is the EOS: not added twice');
    assert.equal(Array.from(b.ids).filter((id) => id === tok.eosId).length, 1);
  });

  test('promptTemplate: Alpaca rows (instruction, input, output) make their prompt from several fields', () => {
    const template = '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n';
    const f = file('alpaca.jsonl', jsonl([{ instruction: 'Add {a} and b.', input: '2, 3', output: '5' }]));
    const e = load(spec(f, { promptTemplate: template, completionField: 'output' }), { ...LM, maxPositions: 256 }).train[0]!;
    assert.ok(e.kind === 'lm');
    const prompt = '### Instruction:\nAdd {a} and b.\n\n### Input:\n2, 3\n\n### Response:\n';
    assert.deepEqual(Array.from(e.ids), [...Buffer.from(`${prompt}5`), byte.eosId!], 'a brace in a field is text, not a placeholder');
    assert.deepEqual(Array.from(e.labels).filter((l) => l !== -100), [...Buffer.from('5'), byte.eosId!], 'the loss on the completion and EOS only');
    const bad = file('alpaca-bad.jsonl', jsonl([{ instruction: 'x', input: 'y', output: 'z' }, { instruction: 'x', output: 'z' }]));
    assert.match(inputError(() => load(spec(bad, { promptTemplate: template, completionField: 'output' }), LM), bad, /^line 2$/).message, /missing field "input"/);
  });

  test('a token the model lacks is reported against the field that holds it (the prompt is tokenized alone first)', () => {
    const f = file('pc-bad.jsonl', jsonl([{ prompt: 'café is', completion: ' good' }]));
    assert.match(inputError(() => load(spec(f), { ...LM, vocabSize: 128 }), f, /^line 1, field "prompt"$/).message, /token id 195 is outside the model's vocabulary of 128/);
  });

  test('promptTemplate syntax: {field}, {{ and }} for braces; what is wrong says where', () => {
    assert.deepEqual(parsePromptTemplate('Q: {q} {{x}}\nA:'), [{ text: 'Q: ' }, { field: 'q' }, { text: ' {x}\nA:' }]);
    assert.equal(renderPromptTemplate(parsePromptTemplate('{a}-{b}') as TemplatePart[], (f) => f.toUpperCase()), 'A-B');
    assert.equal(parsePromptTemplate('Q: {q'), '"{" at character 4 is not closed (write "{{" for a literal brace)');
    assert.equal(parsePromptTemplate('Q: q}'), '"}" at character 5 closes nothing (write "}}" for a literal brace)');
    assert.equal(parsePromptTemplate('Q: { q }'), '"{ q }" at character 4 is not a field name');
    assert.match(parsePromptTemplate('no fields {{here}}') as string, /^names no field/);
  });

  test('the byte-level fallback under a model with a real vocabulary warns: its tokenizer.json is missing', () => {
    const f = file('plain.jsonl', jsonl([{ text: 'hello world' }]));
    assert.deepEqual(load(spec(f), LM).warnings, [], 'the bundled byte-level models: no warning');
    const w = load(spec(f), { ...LM, vocabSize: 151936 }).warnings;
    assert.equal(w.length, 1);
    assert.match(w[0]!, /no tokenizer\.json beside the model's config\.json: text is read as UTF-8 bytes \(ids 0–256\), but the model has a vocabulary of 151936 tokens/);
  });

  test('custom field names, truncation with a count, rows with nothing to learn dropped', () => {
    const f = file('long.jsonl', jsonl([{ q: 'abc', a: 'defgh' }, { q: 'abcdefghij', a: 'x' }, { q: 'ab', a: 'c' }]));
    const d = load(spec(f, { promptField: 'q', completionField: 'a', maxLength: 6 }), LM);
    assert.equal(d.train.length, 2);
    assert.equal(d.truncated, 2);
    assert.equal(d.dropped, 1, 'the row whose prompt fills the max length is dropped');
    const e = d.train[0]!;
    assert.ok(e.kind === 'lm');
    assert.equal(e.ids.length, 6);
    assert.deepEqual([...e.labels], [-100, -100, -100, 100, 101, 102]);
    assert.match(d.warnings.join(' '), /2 rows were truncated to 6 tokens/);
    assert.match(d.warnings.join(' '), /1 row was dropped/);
    // Nothing left to train on: the count is the training file's, not the eval file's too.
    const none = file('all-long.jsonl', jsonl([{ q: 'abcdefghij', a: 'x' }, { q: 'abcdefghij', a: 'y' }]));
    const e2 = inputError(() => load(spec(none, { promptField: 'q', completionField: 'a', maxLength: 6, eval: none }), LM), none, /^$/);
    assert.match(e2.message, /no usable rows \(2 dropped as too short after truncation to 6 tokens\)/);
  });

  test('max length above the model positions is a spec error', () => {
    const f = file('x.jsonl', jsonl([{ text: 'ab' }]));
    const e = inputError(() => load(spec(f, { maxLength: 100 }), LM), 'spec.peft.json', /data\.maxLength/);
    assert.match(e.message, /more than the model's 64 positions/);
    // A model without a position limit (dynamic NTK RoPE stretches past max_position_embeddings) takes any length.
    const d = load(spec(f, { maxLength: 100 }), { ...LM, maxPositions: undefined });
    assert.equal(d.train.length, 1);
  });

  test('position limits: max_position_embeddings, none under dynamic NTK RoPE', () => {
    const llama = { model_type: 'llama', hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 32, vocab_size: 300, max_position_embeddings: 32 };
    assert.equal(positionLimit(parseConfig(llama, 'c.json')), 32);
    assert.equal(positionLimit(parseConfig({ ...llama, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, 'c.json')), undefined);
    assert.equal(positionLimit(parseConfig({ ...llama, model_type: 'gpt_neox', intermediate_size: 32, rotary_pct: 0.5, rope_scaling: { type: 'dynamic', factor: 2 } }, 'c.json')), undefined);
  });

  test('bad rows name the file, line and field', () => {
    const f1 = file('a.jsonl', jsonl([{ text: 'ok' }, { text: 42 }]));
    assert.match(inputError(() => load(spec(f1), LM), f1, /^line 2, field "text"$/).message, /expected a string, got 42/);
    const f2 = file('b.jsonl', jsonl([{ text: 'ok' }, {}, { text: 'x' }]));
    assert.match(inputError(() => load(spec(f2), LM), f2, /^line 2$/).message, /needs "text", "prompt" and "completion", or "messages"/);
    const f3 = file('c.jsonl', jsonl([{ prompt: 'a' }]));
    assert.match(inputError(() => load(spec(f3), LM), f3, /^line 1$/).message, /missing field "completion"/);
    const f4 = file('d.jsonl', jsonl([{ text: '' }]));
    assert.match(inputError(() => load(spec(f4), LM), f4, /^line 1, field "text"$/).message, /empty/);
    const f5 = file('e.jsonl', jsonl([{ text: 'ok' }, { text: 'héllo' }]));
    const e5 = inputError(() => load(spec(f5), { ...LM, vocabSize: 128 }), f5, /^line 2, field "text"$/);
    assert.match(e5.message, /token id 195 is outside the model's vocabulary of 128/);
  });

  test('classification: integer labels, string labels by sorted name, by a real label2id', () => {
    const ints = load(spec(file('i.jsonl', jsonl([{ text: 'a', label: 2 }, { text: 'b', label: 0 }]))), CLS);
    assert.deepEqual(ints.train.map((e) => (e.kind === 'cls' ? e.label : -1)), [2, 0]);
    assert.equal(ints.metricName, 'accuracy');
    const names = load(spec(file('s.jsonl', jsonl([{ text: 'a', label: 'pos' }, { text: 'b', label: 'neg' }, { text: 'c', label: 'neu' }]))), CLS);
    assert.deepEqual(names.train.map((e) => (e.kind === 'cls' ? e.label : -1)), [2, 0, 1]);
    assert.deepEqual(names.labelNames, ['neg', 'neu', 'pos']);
    const real = { ...CLS, label2id: { negative: 0, neutral: 1, positive: 2 } };
    const mapped = load(spec(file('m.jsonl', jsonl([{ text: 'a', label: 'positive' }, { text: 'b', label: 'negative' }]))), real);
    assert.deepEqual(mapped.train.map((e) => (e.kind === 'cls' ? e.label : -1)), [2, 0]);
    const fu = file('u.jsonl', jsonl([{ text: 'a', label: 'positive' }, { text: 'b', label: 'meh' }]));
    assert.match(inputError(() => load(spec(fu), real), fu, /^line 2, field "label"$/).message, /"meh" is not in the model's label2id/);
    const fr = file('r.jsonl', jsonl([{ text: 'a', label: 7 }]));
    assert.match(inputError(() => load(spec(fr), CLS), fr, /^line 1, field "label"$/).message, /label 7 is not a class id of this model \(0\.\.2\)/);
    const fm = file('many.jsonl', jsonl(['a', 'b', 'c', 'd'].map((l) => ({ text: 'x', label: l }))));
    assert.match(inputError(() => load(spec(fm), CLS), fm, /field "label"/).message, /4 distinct labels .* 3 outputs/);
  });

  test('regression (problem_type "regression", one output): numbers or numeric strings as float targets, Pearson r as the metric', () => {
    const REG: ModelDataInfo = { ...CLS, numLabels: 1, problemType: 'regression' };
    const d = load(spec(file('sts.jsonl', jsonl([{ text: 'a', label: 4.25 }, { text: 'b', label: '0.5' }, { text: 'c', label: -1 }]))), REG);
    assert.deepEqual(d.train.map((e) => (e.kind === 'cls' ? e.label : NaN)), [4.25, 0.5, -1]);
    assert.equal(d.metricName, 'pearson');
    assert.equal(d.labelNames, undefined);
    const b = makeBatch(d.train, { padId: 0, attentionMask: true, regression: true });
    assert.equal(b.labels.dtype, 'float32');
    assert.deepEqual(Array.from(b.labels.dataSync()), [4.25, 0.5, -1]);
    disposeTrainBatch(b);
    const bad = file('bad-sts.jsonl', jsonl([{ text: 'a', label: 1 }, { text: 'b', label: 'high' }]));
    assert.match(inputError(() => load(spec(bad), REG), bad, /^line 2, field "label"$/).message, /a regression model needs a number here, got "high"/);
    const two = file('two.jsonl', jsonl([{ text: 'a', label: 1 }]));
    assert.match(inputError(() => load(spec(two), { ...REG, numLabels: 2 }), two, /field "label"/).message, /regresses 2 values per row/);
    assert.deepEqual([pearson([1, 2, 3], [2, 4, 6]), pearson([1, 2, 3], [3, 2, 1]), pearson([1, 1], [1, 2]), pearson([1], [1])], [1, -1, undefined, undefined]);
  });

  test('multi-label rows (problem_type "multi_label_classification"): lists of names or ids (in CSV as JSON text), a lone label, none; 0/1 targets [B, C]; subset accuracy', () => {
    const MULTI: ModelDataInfo = { ...CLS, problemType: 'multi_label_classification' };
    const d = load(spec(file('ml.jsonl', jsonl([{ text: 'a', label: ['joy', 'fear'] }, { text: 'b', label: 'anger' }, { text: 'c', label: [] }]))), MULTI);
    assert.deepEqual(d.labelNames, ['anger', 'fear', 'joy']);
    assert.deepEqual(d.train.map((e) => (e.kind === 'cls' ? Array.from(e.targets!) : [])), [[0, 1, 1], [1, 0, 0], [0, 0, 0]]);
    assert.equal(d.metricName, 'subset_accuracy');
    const b = makeBatch(d.train, { padId: 0, attentionMask: true, multiLabel: true });
    assert.deepEqual([b.labels.shape, b.labels.dtype], [[3, 3], 'float32']);
    disposeTrainBatch(b);
    const csv = load(spec(file('ml.csv', 'text,label\na,"[0, 2]"\nb,1\n'), {}, 'csv'), MULTI);
    assert.deepEqual(csv.train.map((e) => (e.kind === 'cls' ? Array.from(e.targets!) : [])), [[1, 0, 1], [0, 1, 0]]);
    const bad = file('ml-bad.csv', 'text,label\na,"[0, 2"\n');
    assert.match(inputError(() => load(spec(bad, {}, 'csv'), MULTI), bad, /^line 2, field "label"$/).message, /expected a JSON list of labels/);
    const far = file('ml-far.jsonl', jsonl([{ text: 'a', label: [0, 5] }]));
    assert.match(inputError(() => load(spec(far), MULTI), far, /^line 1, field "label"$/).message, /label 5 is not a class id of this model \(0\.\.2\)/);
  });

  test('batch files (forward/grads/importance --inputs): a regression takes float labels, a classifier class ids only', async () => {
    const f = join(root, 'reg-batch.safetensors');
    await writeSafetensors(f, new Map([['input_ids', { dtype: 'I32', shape: [2, 3], data: Int32Array.from([1, 2, 3, 4, 5, 6]) }], ['labels', f32([2], Float32Array.from([0.25, 4.5]))]]));
    const cfg = (patch: Record<string, unknown>) => parseConfig({ model_type: 'bert', hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 16, vocab_size: 10, ...patch }, 'c.json');
    const b = await readInputBatch(f, 'tokens', inputLimits(cfg({ num_labels: 1 })));
    assert.deepEqual(Array.from(b.labels!.dataSync()), [0.25, 4.5]);
    disposeBatch(b);
    await assert.rejects(readInputBatch(f, 'tokens', inputLimits(cfg({ num_labels: 3 }))), (e: InputError) => e.where === 'labels' && /expected an integer dtype, got F32/.test(e.problem));
  });

  test('batch files for causal LMs: right-padded attention masks only (left padding or gaps are named at the element); encoders take any', async () => {
    const write = async (name: string, mask: number[]) => {
      const f = join(root, name);
      await writeSafetensors(f, new Map([['input_ids', { dtype: 'I32', shape: [2, 4], data: Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]) }], ['attention_mask', { dtype: 'I32', shape: [2, 4], data: Int32Array.from(mask) }]]));
      return f;
    };
    const lm = inputLimits(parseConfig({ model_type: 'gpt_neox', hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 16, vocab_size: 10, rotary_pct: 0.5 }, 'c.json'));
    const right = await readInputBatch(await write('right.safetensors', [1, 1, 1, 1, 1, 1, 0, 0]), 'tokens', lm);
    disposeBatch(right);
    const left = await write('left.safetensors', [1, 1, 1, 1, 0, 0, 1, 1]);
    await assert.rejects(readInputBatch(left, 'tokens', lm), (e: InputError) => e.file === left && e.where === 'attention_mask[1, 2]' && /right-padded rows/.test(e.problem));
    const bert = inputLimits(parseConfig({ model_type: 'bert', hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 16, vocab_size: 10 }, 'c.json'));
    disposeBatch(await readInputBatch(left, 'tokens', bert));
  });

  test('CSV classification with numeric label strings', () => {
    const f = file('c.csv', 'label,text\n1,"good, really"\n0,bad\n');
    const d = load(spec(f, {}, 'csv'), CLS);
    assert.deepEqual(d.train.map((e) => (e.kind === 'cls' ? [e.label, Buffer.from(e.ids).toString()] : [])), [[1, 'good, really'], [0, 'bad']]);
    const g = file('bad.csv', 'label,text\n1,ok\n1,\n');
    assert.match(inputError(() => load(spec(g, {}, 'csv'), CLS), g, /^line 3, field "text"$/).message, /empty/);
  });

  test('eval split: seeded, disjoint, covering, stable under the same seed', () => {
    const a = splitIndices(50, 0.2, 7);
    assert.equal(a.eval.length, 10);
    assert.deepEqual([...a.train, ...a.eval].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
    assert.deepEqual(splitIndices(50, 0.2, 7), a);
    assert.notDeepEqual(splitIndices(50, 0.2, 8).eval, a.eval);
    const d = load(spec(file('split.jsonl', jsonl(Array.from({ length: 20 }, (_, i) => ({ prompt: `${i}=`, completion: `${i}` })))), { evalSplit: 0.25 }), LM);
    assert.equal(d.train.length, 15);
    assert.equal(d.eval.length, 5);
    assert.equal(d.metricName, 'exact_match', 'chat eval rows report exact match of the assistant turns');
  });

  test('held-out text: JSONL rows or plain-text chunks', () => {
    const j = loadHeldout(file('h.jsonl', jsonl([{ text: 'abcdef' }, { text: 'x' }, { text: 'gh' }])), byte, 257, 4);
    assert.deepEqual(j.map((e) => (e.kind === 'lm' ? e.ids.length : -1)), [4, 2]);
    const t = loadHeldout(file('h.txt', 'abcdefghij'), byte, 257, 4);
    assert.deepEqual(t.map((e) => (e.kind === 'lm' ? Buffer.from(e.ids).toString() : '')), ['abcd', 'efgh', 'ij']);
  });
});

describe('tokenizer.json', () => {
  test('loads through @huggingface/tokenizers: specials from the post-processor, pad from tokenizer_config', () => {
    const dir = join(root, 'hf-tok');
    mkdirSync(dir, { recursive: true });
    const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({
        version: '1.0',
        truncation: null,
        padding: null,
        added_tokens: [special(0, '[UNK]'), special(1, '[PAD]'), special(2, '[CLS]'), special(3, '[SEP]')],
        normalizer: { type: 'Lowercase' },
        pre_tokenizer: { type: 'Whitespace' },
        post_processor: {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
          pair: [],
          special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
        },
        decoder: null,
        model: { type: 'WordLevel', vocab: { '[UNK]': 0, '[PAD]': 1, '[CLS]': 2, '[SEP]': 3, good: 4, movie: 5, bad: 6, '!': 7 }, unk_token: '[UNK]' },
      }),
    );
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: '[PAD]', unk_token: '[UNK]' }));
    const tok = loadTokenizer(dir);
    assert.equal(tok.name, 'tokenizer.json');
    assert.equal(tok.padId, 1);
    assert.equal(tok.vocabSize, 8);
    assert.deepEqual(tok.encode('Good movie!', true), [2, 4, 5, 7, 3]);
    assert.deepEqual(tok.encode('bad', false), [6]);
    const d = load(spec(file('cls.jsonl', jsonl([{ text: 'good movie', label: 1 }, { text: 'bad movie !', label: 0 }]))), { ...CLS, vocabSize: 8 }, tok);
    const b = makeBatch(d.train, { padId: tok.padId, attentionMask: true });
    assert.deepEqual(b.inputs.inputIds!.arraySync(), [[2, 4, 5, 3, 1], [2, 6, 5, 7, 3]]);
    assert.deepEqual(b.inputs.attentionMask!.arraySync(), [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]);
    disposeTrainBatch(b);
  });
});

describe('vocab.json + merges.txt (GPT2Tokenizer’s files, as OPT’s hub folders have them)', () => {
  /** GPT-2's bytes_to_unicode: each byte's printable stand-in in the byte-level vocabulary. */
  const byteChars = (): string[] => {
    const keep = [...Array(256).keys()].filter((b) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174);
    let n = 0;
    return [...Array(256).keys()].map((b) => String.fromCodePoint(keep.includes(b) ? b : 256 + n++));
  };
  const write = (name: string, config: Record<string, unknown>) => {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    const vocab: Record<string, number> = Object.fromEntries(byteChars().map((c, i) => [c, i]));
    for (const t of ['Ġt', 'he', 'Ġthe', '</s>', '<pad>']) vocab[t] = Object.keys(vocab).length;
    writeFileSync(join(dir, 'vocab.json'), JSON.stringify(vocab));
    writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\nĠ t\nh e\nĠt he\n');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    return { dir, vocab };
  };

  test('BPE merges over byte-level pieces; BOS first where add_bos_token; a pair’s second text of type 1; add_prefix_space; specials matched whole', () => {
    const { dir, vocab } = write('gpt2-slow', { tokenizer_class: 'GPT2Tokenizer', bos_token: '</s>', eos_token: '</s>', pad_token: '<pad>', add_bos_token: true });
    const tok = loadTokenizer(dir);
    assert.equal(tok.name, 'vocab.json + merges.txt');
    const id = (t: string) => vocab[t]!;
    assert.deepEqual(tok.encode(' the theme', false), [id('Ġthe'), id('Ġthe'), id('m'), id('e')]);
    assert.deepEqual(tok.encode(' the', true), [id('</s>'), id('Ġthe')], 'add_bos_token: </s> first, as OPT');
    assert.deepEqual(tok.encode('the</s>', false), [id('t'), id('he'), id('</s>')], 'a special token in the text is one id');
    assert.equal(tok.eosId, id('</s>'));
    assert.equal(tok.padId, id('<pad>'));
    assert.equal(tok.decode([id('Ġthe'), id('Ġthe'), id('m'), id('e')]), ' the theme');
    assert.equal(tok.decode([]), '', 'nothing to decode (a reply that is only the end of text) is no error');
    const spaced = loadTokenizer(write('gpt2-slow-prefix', { tokenizer_class: 'GPT2Tokenizer', add_prefix_space: true }).dir);
    assert.deepEqual(spaced.encode('the', false), [id('Ġthe')], 'add_prefix_space: a leading space');
    assert.equal(tokenizerMismatch(tok, 50272), undefined);
    // clean_up_tokenization_spaces: transformers 5 leaves a BPE model's text alone unless told it may corrupt it.
    const comma = [id('Ġthe'), id('Ġ'), id(',')];
    assert.equal(loadTokenizer(write('gpt2-cleanup', { tokenizer_class: 'GPT2Tokenizer', clean_up_tokenization_spaces: true }).dir).decode(comma), ' the ,');
    const forced = { tokenizer_class: 'GPT2Tokenizer', clean_up_tokenization_spaces: true, clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output: true };
    assert.equal(loadTokenizer(write('gpt2-cleanup-forced', forced).dir).decode(comma), ' the,');
  });

  test('another tokenizer class (RoBERTa’s files look the same), or none beside a model that is not GPT-2 or OPT, is not guessed at: the byte-level fallback warns', () => {
    const tok = loadTokenizer(write('roberta-slow', { tokenizer_class: 'RobertaTokenizer' }).dir);
    assert.equal(tok.name, 'byte-level');
    assert.match(tokenizerMismatch(tok, 50265)!, /vocab\.json, merges\.txt/);
    // No class named: GPT2Tokenizer's files only beside a GPT-2 or OPT config.json.
    const unnamed = write('unnamed-slow', {}).dir;
    writeFileSync(join(unnamed, 'config.json'), JSON.stringify({ model_type: 'roberta' }));
    assert.equal(loadTokenizer(unnamed).name, 'byte-level');
    writeFileSync(join(unnamed, 'config.json'), JSON.stringify({ model_type: 'opt' }));
    assert.equal(loadTokenizer(unnamed).name, 'vocab.json + merges.txt');
  });
});

describe('no tokenizer.json', () => {
  test('a folder with only a slow tokenizer’s files that are not read (an spm.model of no named DeBERTa tokenizer, as T5’s) gets a warning that says how to write tokenizer.json', () => {
    const dir = join(root, 'slow-tok');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'spm.model'), 'x');
    const tok = loadTokenizer(dir);
    assert.equal(tok.name, 'byte-level');
    assert.match(tokenizerMismatch(tok, 128100)!, /the folder has spm\.model \(a slow tokenizer's files, not read here\): write tokenizer\.json with transformers, AutoTokenizer\.from_pretrained\(folder\)\.save_pretrained\(folder\)/);
    assert.match(tokenizerMismatch(byte, 50272)!, /copy the model's tokenizer files into its folder$/);
    assert.equal(tokenizerMismatch(byte, 300), undefined, 'a byte-sized vocabulary is what the bytes are for');
  });
});

describe('sentence pairs (GLUE-style classifier rows)', () => {
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const vocab = { '[UNK]': 0, '[PAD]': 1, '[CLS]': 2, '[SEP]': 3, good: 4, movie: 5, bad: 6, '!': 7, a: 8, b: 9, c: 10, d: 11 };
  /** A WordLevel tokenizer.json with `post` as its post-processor (BERT's template, or RoBERTa's). */
  const tokenizer = (name: string, post: unknown, specials: string[]) => {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    const v = Object.fromEntries(Object.entries(vocab).map(([t, i]) => [specials[i] ?? t, i]));
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({
        version: '1.0', truncation: null, padding: null,
        added_tokens: specials.map((t, i) => special(i, t)),
        normalizer: { type: 'Lowercase' }, pre_tokenizer: { type: 'Whitespace' }, post_processor: post, decoder: null,
        model: { type: 'WordLevel', vocab: v, unk_token: specials[0] },
      }),
    );
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: specials[1], unk_token: specials[0] }));
    return loadTokenizer(dir);
  };
  const S = (id: string, type_id = 0) => ({ SpecialToken: { id, type_id } });
  const bertTok = () =>
    tokenizer(
      'bert-pair',
      {
        type: 'TemplateProcessing',
        single: [S('[CLS]'), { Sequence: { id: 'A', type_id: 0 } }, S('[SEP]')],
        pair: [S('[CLS]'), { Sequence: { id: 'A', type_id: 0 } }, S('[SEP]'), { Sequence: { id: 'B', type_id: 1 } }, S('[SEP]', 1)],
        special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
      },
      ['[UNK]', '[PAD]', '[CLS]', '[SEP]'],
    );
  const PAIR: ModelDataInfo = { ...CLS, vocabSize: 12, typeVocabSize: 2 };

  test("BERT's template: [CLS] a [SEP] b [SEP], token types 0 then 1, in the batch beside the mask", () => {
    const tok = bertTok();
    assert.deepEqual(tok.encodeForClassifier('Good movie', 'bad !', 64), { ids: [2, 4, 5, 3, 6, 7, 3], typeIds: [0, 0, 0, 0, 1, 1, 1], truncated: false });
    // A single text has no types beyond 0, and its ids are encode()'s.
    assert.deepEqual(tok.encodeForClassifier('good movie', undefined, 64), { ids: tok.encode('good movie', true), truncated: false });
    const f = file('pairs.jsonl', jsonl([{ sentence1: 'good movie', sentence2: 'bad', label: 1 }, { sentence1: 'bad', sentence2: 'good movie !', label: 0 }]));
    const d = load(spec(f, { textField: 'sentence1', textPairField: 'sentence2' }), PAIR, tok);
    const b = makeBatch(d.train, { padId: tok.padId, attentionMask: true });
    assert.deepEqual(b.inputs.inputIds!.arraySync(), [[2, 4, 5, 3, 6, 3, 1], [2, 6, 3, 4, 5, 7, 3]]);
    assert.deepEqual(b.inputs.tokenTypeIds!.arraySync(), [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]]);
    assert.deepEqual(b.inputs.attentionMask!.arraySync(), [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]);
    disposeTrainBatch(b);
  });

  test("RoBERTa's template: <s> a </s></s> b </s>, all type 0 (no token types in the batch)", () => {
    const tok = tokenizer('roberta-pair', { type: 'RobertaProcessing', sep: ['</s>', 3], cls: ['<s>', 2], trim_offsets: true, add_prefix_space: false }, ['<unk>', '<pad>', '<s>', '</s>']);
    assert.deepEqual(tok.encodeForClassifier('good movie', 'bad', 64), { ids: [2, 4, 5, 3, 3, 6, 3], truncated: false });
    const d = load(spec(file('rp.jsonl', jsonl([{ premise: 'good', hypothesis: 'bad', label: 2 }])), { textField: 'premise', textPairField: 'hypothesis' }), PAIR, tok);
    const b = makeBatch(d.train, { padId: tok.padId, attentionMask: true });
    assert.equal(b.inputs.tokenTypeIds, undefined);
    disposeTrainBatch(b);
  });

  test('ids as encode() gives them (a normalized added token, an unknown word); no token types where model_input_names leaves them out', () => {
    const dir = join(root, 'added-normalized');
    mkdirSync(dir, { recursive: true });
    const post = {
      type: 'TemplateProcessing',
      single: [S('[CLS]'), { Sequence: { id: 'A', type_id: 0 } }, S('[SEP]')],
      pair: [S('[CLS]'), { Sequence: { id: 'A', type_id: 0 } }, S('[SEP]'), { Sequence: { id: 'B', type_id: 1 } }, S('[SEP]', 1)],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
    };
    const added = { id: 12, content: 'NewWord', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false };
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({
        version: '1.0', truncation: null, padding: null,
        added_tokens: [...['[UNK]', '[PAD]', '[CLS]', '[SEP]'].map((t, i) => special(i, t)), added],
        normalizer: { type: 'Lowercase' }, pre_tokenizer: { type: 'Whitespace' }, post_processor: post, decoder: null,
        model: { type: 'WordLevel', vocab: vocab, unk_token: '[UNK]' },
      }),
    );
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: '[PAD]', unk_token: '[UNK]', model_input_names: ['input_ids', 'attention_mask'] }));
    const tok = loadTokenizer(dir);
    const want = tok.encode('good NewWord zebra', true);
    assert.equal(want[2], 12);
    assert.deepEqual(tok.encodeForClassifier('good NewWord zebra', undefined, 64).ids, want);
    assert.deepEqual(tok.encodeForClassifier('good NewWord zebra', 'bad', 64), { ids: [...want, 6, 3], truncated: false });
  });

  test("truncation as the fast tokenizers' longest_first: the longer text first, then half each; the template stays", () => {
    const tok = bertTok();
    const cut = (a: string, b: string | undefined, max: number) => tok.encodeForClassifier(a, b, max);
    // 4 + 1 tokens in 6 − 3 template tokens: the longer loses 2.
    assert.deepEqual(cut('a b c d', 'bad', 6), { ids: [2, 8, 9, 3, 6, 3], typeIds: [0, 0, 0, 0, 1, 1], truncated: true });
    // 4 + 4 in 8 − 3 = 5: the first keeps ⌊5/2⌋ = 2, the second 3 (transformers' fast BERT tokenizer gives the same).
    assert.deepEqual(cut('a b c d', 'd c b a', 8).ids, [2, 8, 9, 3, 11, 10, 9, 3]);
    // One text: [SEP] kept at the end (the old cut dropped it).
    assert.deepEqual(cut('a b c d', undefined, 4).ids, [2, 8, 9, 3]);
    assert.throws(() => cut('a', 'b', 4), /maxLength 4 leaves no room for the text: the tokenizer's template adds 3 tokens to a pair/);
    assert.deepEqual(truncateLongestFirst([1, 2, 3], [4, 5, 6, 7, 8, 9], 5), [[1, 2], [4, 5, 6]]);
    assert.deepEqual(truncateLongestFirst([1, 2, 3, 4, 5, 6], [7], 5), [[1, 2, 3, 4], [7]]);
    // Counted in the truncation warning.
    const d = load(spec(file('long.jsonl', jsonl([{ s1: 'a b c d', s2: 'd c b a', label: 0 }])), { textField: 's1', textPairField: 's2', maxLength: 8 }), PAIR, tok);
    assert.equal(d.truncated, 1);
  });

  test('errors: an empty or missing second text names its field; a pair for a causal LM, or types the model lacks, say why', () => {
    const tok = bertTok();
    const f = file('bad-pair.jsonl', jsonl([{ s1: 'good', s2: 'bad', label: 0 }, { s1: 'good', s2: '', label: 1 }]));
    assert.match(inputError(() => load(spec(f, { textField: 's1', textPairField: 's2' }), PAIR, tok), f, /^line 2, field "s2"$/).message, /empty/);
    const g = file('missing-pair.jsonl', jsonl([{ s1: 'good', label: 0 }]));
    assert.match(inputError(() => load(spec(g, { textField: 's1', textPairField: 's2' }), PAIR, tok), g, /^line 1$/).message, /missing field "s2"/);
    assert.throws(() => load(spec(f, { textPairField: 's2' }), LM), (e: InputError) => e.where === 'data.textPairField' && /for sequence classifiers .* put both texts in a promptTemplate/.test(e.problem));
    // A model without token type embeddings (DistilBERT: type_vocab_size 0) takes none, as its tokenizer gives none.
    const untyped = load(spec(file('untyped.jsonl', jsonl([{ s1: 'good', s2: 'bad', label: 0 }])), { textField: 's1', textPairField: 's2' }), { ...PAIR, typeVocabSize: 0 }, tok);
    assert.equal(untyped.train[0]!.kind === 'cls' && untyped.train[0]!.typeIds, undefined);
    // Nor does one with a single type (RoBERTa's, XLM-R's type_vocab_size 1).
    const single = load(spec(file('single.jsonl', jsonl([{ s1: 'good', s2: 'bad', label: 0 }])), { textField: 's1', textPairField: 's2' }), { ...PAIR, typeVocabSize: 1 }, tok);
    assert.equal(single.train[0]!.kind === 'cls' && single.train[0]!.typeIds, undefined);
    // A template whose types pass the model's: named.
    const three = tokenizer('type-2', { type: 'TemplateProcessing', single: [{ Sequence: { id: 'A', type_id: 0 } }], pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 2 } }], special_tokens: {} }, ['[UNK]', '[PAD]', '[CLS]', '[SEP]']);
    assert.match(inputError(() => load(spec(f, { textField: 's1', textPairField: 's2' }), PAIR, three), f, /^line 1, field "s2"$/).message, /token type 2, but the model has 2 token types/);
  });
});

describe('special_tokens_map.json', () => {
  test('names the special tokens tokenizer_config.json leaves out (EOS ends completions, templates see it)', () => {
    const dir = sentencePieceTokenizer(root, 'sp-map', { bos: false, config: {} });
    assert.equal(loadTokenizer(dir).eosId, undefined, 'without either file there is no EOS');
    writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: '<s>', eos_token: { content: '</s>', lstrip: false } }));
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}');
    const tok = loadTokenizer(dir);
    assert.equal(tok.eosId, 2);
    assert.equal(tok.chatTemplate().render([{ role: 'user', content: 'hi' }], false), '<s>hi</s>');
    // tokenizer_config.json wins where it names one.
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<unk>' }));
    assert.equal(loadTokenizer(dir).eosId, 0);
  });
});

describe('chat rows', () => {
  const convo = [
    { role: 'system', content: 'Add.' },
    { role: 'user', content: '2+2' },
    { role: 'assistant', content: '4' },
    { role: 'user', content: '3+4' },
    { role: 'assistant', content: '7' },
  ];
  /** The text of the ids whose label counts, per maximal run. */
  const trained = (tok: DataTokenizer, e: Example) => {
    assert.ok(e.kind === 'lm');
    const runs: string[] = [];
    const cur: number[] = [];
    e.labels.forEach((l, i) => {
      if (l !== -100) {
        assert.equal(l, e.ids[i]);
        cur.push(l);
      } else if (cur.length) runs.push(tok.decode(cur.splice(0)));
    });
    if (cur.length) runs.push(tok.decode(cur));
    return runs;
  };

  test('no chat template: ChatML as text; the loss on the assistant turns (end-of-turn included) only', () => {
    const f = file('chat.jsonl', jsonl([{ messages: convo }]));
    const d = load(spec(f, { maxLength: 256, eval: f }), { ...LM, maxPositions: 256 });
    const e = d.train[0]!;
    assert.ok(e.kind === 'lm' && e.completion);
    assert.equal(byte.decode(Array.from(e.ids)), '<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n2+2<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+4<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n');
    assert.deepEqual(trained(byte, e), ['4<|im_end|>\n', '7<|im_end|>\n']);
    assert.equal(d.metricName, 'exact_match', 'chat eval rows report exact match of the assistant turns');
  });

  test("the model's template (tokenizer_config.json, or chat_template.jinja first) with its special tokens", () => {
    const dir = join(root, 'chat-model');
    mkdirSync(dir, { recursive: true });
    const zephyr = '{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}';
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'default', template: zephyr }] }));
    const tok = loadTokenizer(dir); // byte-level ids, eos_token <|endoftext|>
    const d = load(spec(file('chat.jsonl', jsonl([{ conv: convo.slice(1, 3) }])), { messagesField: 'conv' }), LM, tok);
    const e = d.train[0]!;
    assert.ok(e.kind === 'lm');
    // eos_token written by the template is the special id (256), as HF tokenizers match added tokens.
    const bytes = (t: string) => Array.from(Buffer.from(t));
    assert.deepEqual(Array.from(e.ids), [...bytes('<|user|>\n2+2'), 256, 10, ...bytes('<|assistant|>\n4'), 256, 10]);
    assert.deepEqual(Array.from(e.labels).filter((l) => l !== -100), [...bytes('4'), 256, 10], 'the answer, EOS and the newline train');
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}');
    const tok2 = loadTokenizer(dir);
    const d2 = load(spec(file('chat.jsonl', jsonl([{ messages: convo.slice(1, 3) }]))), LM, tok2);
    assert.deepEqual(trained(tok2, d2.train[0]!), ['4\n']);
    // A byte-level model's template gets bos_token too (GPT-2's: <|endoftext|>, the special id).
    assert.equal(d2.train[0]!.kind === 'lm' && d2.train[0]!.ids[0], 256);
  });

  test('a SentencePiece-style tokenizer (Llama-2 normalizer) tokenizes the conversation whole, as apply_chat_template', () => {
    const dir = sentencePieceTokenizer(root, 'sp-model', { bos: false });
    writeFileSync(join(dir, 'chat_template.jinja'), "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}");
    const tok = loadTokenizer(dir);
    const d = load(spec(file('chat.jsonl', jsonl([{ messages: convo.slice(1, 3) }]))), { ...LM, vocabSize: tok.vocabSize }, tok);
    const e = d.train[0]!;
    assert.ok(e.kind === 'lm');
    // Exactly the ids of the rendered text encoded at once (each piece alone would gain a "▁").
    assert.deepEqual(Array.from(e.ids), tok.encode('<s>[INST] 2+2 [/INST] 4 </s>', false));
    assert.deepEqual(Array.from(e.labels).filter((l) => l !== -100), tok.encode(' 4 </s>', false).slice(1), 'the answer and EOS train (the piece after "[/INST]")');
  });

  test('a token that byte-level BPE merges across the prompt/answer boundary ("Ġ4") trains, as transformers\' assistant mask', () => {
    const dir = byteLevelBpeTokenizer(root, 'bl-model', ['Ġ 4']);
    writeFileSync(join(dir, 'chat_template.jinja'), "{% for m in messages %}{% if m.role == 'user' %}User: {{ m.content }}\n{% else %}Assistant: {{ m.content }}{{ eos_token }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}");
    const tok = loadTokenizer(dir);
    const e = load(spec(file('chat.jsonl', jsonl([{ messages: convo.slice(1, 3) }]))), { ...LM, vocabSize: tok.vocabSize }, tok).train[0]!;
    assert.ok(e.kind === 'lm');
    const merged = tok.encode(' 4', false);
    assert.equal(merged.length, 1, 'the fixture merges " 4" into one token');
    assert.deepEqual(Array.from(e.labels).filter((l) => l !== -100), [merged[0]!, tok.eosId!, ...tok.encode('\n', false)], 'the answer token (merged with the space before it), EOS and the newline');
  });

  test("TRL's conversational prompt + completion (lists of messages): only the completion's turns train", () => {
    const f = file('conv-pc.jsonl', jsonl([{ prompt: convo.slice(0, 4), completion: convo.slice(4) }]));
    const e = load(spec(f), { ...LM, maxPositions: 256 }).train[0]!;
    const whole = load(spec(file('conv.jsonl', jsonl([{ messages: convo }]))), { ...LM, maxPositions: 256 }).train[0]!;
    assert.ok(e.kind === 'lm' && whole.kind === 'lm');
    assert.deepEqual(Array.from(e.ids), Array.from(whole.ids), 'the same conversation, rendered whole');
    assert.deepEqual(trained(byte, e), ['7<|im_end|>\n'], 'the earlier assistant turn is prompt');
    assert.deepEqual(trained(byte, whole), ['4<|im_end|>\n', '7<|im_end|>\n']);
    const bad = file('conv-bad.jsonl', jsonl([{ prompt: convo.slice(0, 2), completion: 'seven' }]));
    assert.match(inputError(() => load(spec(bad), LM), bad, /^line 1, field "completion"$/).message, /expected a list of messages/);
  });

  test('CSV: the messages cell holds the list as JSON', () => {
    const cell = JSON.stringify(convo.slice(1, 3)).replace(/"/g, '""');
    const f = file('chat.csv', `messages\n"${cell}"\n`);
    const d = load(spec(f, {}, 'csv'), { ...LM, maxPositions: 256 });
    assert.deepEqual(trained(byte, d.train[0]!), ['4<|im_end|>\n']);
    const bad = file('bad.csv', 'messages\nhello\n');
    assert.match(inputError(() => load(spec(bad, {}, 'csv'), LM), bad, /^line 2, field "messages"$/).message, /expected a list of messages \(JSON, in a CSV cell\)/);
  });

  test('bad conversations and templates name the file, the line and the field', () => {
    const bad: [unknown, RegExp][] = [
      [{ messages: 'hi' }, /expected a list of messages/],
      [{ messages: {} }, /non-empty list of messages/],
      [{ messages: [{ role: 'user', content: 'hi' }] }, /no "assistant" message/],
      [{ messages: [{ role: 'user' }, { role: 'assistant', content: 'x' }] }, /message 0: "content" must be a string/],
    ];
    for (const [row, msg] of bad) {
      const f = file('bad.jsonl', jsonl([{ messages: convo }, row]));
      assert.match(inputError(() => load(spec(f), LM), f, /^line 2, field "messages"$/).message, msg);
    }
    const dir = join(root, 'raising-model');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'chat_template.jinja'), "{% if messages[0].role != 'system' %}{{ raise_exception('a system message comes first') }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}");
    const f = file('chat.jsonl', jsonl([{ messages: convo.slice(1, 3) }]));
    assert.match(inputError(() => load(spec(f), LM, loadTokenizer(dir)), f, /^line 1, field "messages"$/).message, /chat_template\.jinja.*a system message comes first/);
    // A template whose render of a prefix is not a prefix of the whole (it numbers from the end).
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ messages|length }}{% for m in messages %}{{ m.content }}{% endfor %}');
    assert.match(inputError(() => load(spec(f), LM, loadTokenizer(dir)), f, /^line 1/).message, /does not render message 1 as a continuation/);
  });
});

describe('batching', () => {
  test('language-model rows: right padding, −100 labels on padding and prompts, token count', () => {
    const ex: Example[] = [
      { kind: 'lm', ids: Int32Array.from([5, 6, 7]), labels: Int32Array.from([-100, 6, 7]), completion: true, source: 'a:1' },
      { kind: 'lm', ids: Int32Array.from([8]), labels: Int32Array.from([8]), completion: false, source: 'a:2' },
    ];
    const before = tf.memory().numTensors;
    const b = makeBatch(ex, { padId: 0, attentionMask: false });
    assert.deepEqual(b.inputs.inputIds!.arraySync(), [[5, 6, 7], [8, 0, 0]]);
    assert.deepEqual(b.labels.arraySync(), [[-100, 6, 7], [8, -100, -100]]);
    assert.equal(b.inputs.attentionMask, undefined, 'causal models need no mask');
    assert.equal(b.tokens, 4);
    assert.equal(b.size, 2);
    disposeTrainBatch(b);
    assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
  });
  test('classification rows: labels [B], attention mask for encoders', () => {
    const ex: Example[] = [
      { kind: 'cls', ids: Int32Array.from([1, 2]), label: 2, source: 'a:1' },
      { kind: 'cls', ids: Int32Array.from([3, 4, 5]), label: 0, source: 'a:2' },
    ];
    const b = makeBatch(ex, { padId: 9, attentionMask: true });
    assert.deepEqual(b.inputs.inputIds!.arraySync(), [[1, 2, 9], [3, 4, 5]]);
    assert.deepEqual(b.inputs.attentionMask!.arraySync(), [[1, 1, 0], [1, 1, 1]]);
    assert.deepEqual(b.labels.arraySync(), [2, 0]);
    disposeTrainBatch(b);
  });
});

describe('image folders', () => {
  function png(path: string, w: number, h: number, rgb: (x: number, y: number) => [number, number, number]): void {
    const p = new PNG({ width: w, height: h });
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const [r, g, b] = rgb(x, y);
        p.data.set([r, g, b, 255], (y * w + x) * 4);
      }
    writeFileSync(path, PNG.sync.write(p));
  }
  function jpg(path: string, w: number, h: number, v: number): void {
    const data = Buffer.alloc(w * h * 4, v);
    writeFileSync(path, jpeg.encode({ data, width: w, height: h }, 95).data);
  }

  test('classes from sorted sub-folders; PNG and JPEG decode; resize and normalise', () => {
    const dir = join(root, 'imgs');
    mkdirSync(join(dir, 'cat'), { recursive: true });
    mkdirSync(join(dir, 'dog'), { recursive: true });
    png(join(dir, 'dog', 'a.png'), 8, 8, () => [255, 0, 128]);
    jpg(join(dir, 'cat', 'b.jpg'), 16, 16, 200);
    writeFileSync(join(dir, 'cat', 'notes.txt'), 'ignored');
    const { classes, items } = listImageFolder(dir);
    assert.deepEqual(classes, ['cat', 'dog']);
    assert.deepEqual(items.map((i) => i.className), ['cat', 'dog']);
    const px = toPixelValues(decodeImage(join(dir, 'dog', 'a.png')), 4, 3);
    assert.equal(px.length, 3 * 16);
    assert.ok(px.slice(0, 16).every((v) => v === 1), 'red 255 → +1');
    assert.ok(px.slice(16, 32).every((v) => v === -1), 'green 0 → −1');
    assert.ok(px.slice(32).every((v) => Math.abs(v - (128 / 255 - 0.5) / 0.5) < 1e-6));
    const j = toPixelValues(decodeImage(join(dir, 'cat', 'b.jpg')), 4, 3);
    assert.ok(j.every((v) => Math.abs(v - (200 / 255 - 0.5) / 0.5) < 0.03), 'JPEG within compression error');

    const info: ModelDataInfo = { task: 'image-classification', modelType: 'vit', vocabSize: 0, numLabels: 10, imageSize: 4, numChannels: 3, label2id: { LABEL_0: 0 } };
    const d = load(spec(dir, {}, 'images'), info, undefined);
    assert.deepEqual(d.train.map((e) => (e.kind === 'image' ? e.label : -1)), [0, 1]);
    assert.deepEqual(d.labelNames, ['cat', 'dog']);
    const b = makeBatch(d.train, { padId: 0, attentionMask: false, imageSize: 4, numChannels: 3, patchSize: 2 });
    assert.deepEqual(b.inputs.pixelValues!.shape, [2, 3, 4, 4]);
    assert.deepEqual(b.labels.arraySync(), [0, 1]);
    assert.equal(b.tokens, 2 * 5);
    disposeTrainBatch(b);
  });

  test('bilinear resize uses half-pixel centres', () => {
    // 2×1 image, black and white: upscaled to 4 wide → 0, 0.25, 0.75, 1 of white.
    const img = { width: 2, height: 1, data: Uint8Array.from([0, 0, 0, 255, 255, 255, 255, 255]) };
    const px = toPixelValues(img, 4, 1, 0, 1);
    assert.deepEqual([...px.slice(0, 4)].map((v) => Math.round(v * 100) / 100), [0, 0.25, 0.75, 1]);
  });

  test('a corrupt image names the file; an empty folder is refused', () => {
    const dir = join(root, 'bad-imgs');
    mkdirSync(join(dir, 'a'), { recursive: true });
    const f = join(dir, 'a', 'x.png');
    writeFileSync(f, Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]));
    assert.match(inputError(() => decodeImage(f), f, /^$/).message, /cannot decode the PNG image/);
    const g = join(dir, 'a', 'y.jpg');
    writeFileSync(g, 'not an image');
    assert.match(inputError(() => decodeImage(g), g, /^$/).message, /not a PNG or JPEG/);
    const empty = join(root, 'empty-imgs');
    mkdirSync(empty);
    inputError(() => listImageFolder(empty), empty, /^$/);
  });
});

describe('seeded RNG', () => {
  test('mulberry32 is deterministic, its state restores exactly, permutations are permutations', () => {
    const a = new Rng(123);
    const first = [a.nextU32(), a.nextU32()];
    const saved = a.state;
    const next = [a.nextU32(), a.nextU32()];
    const b = new Rng(123);
    assert.deepEqual([b.nextU32(), b.nextU32()], first);
    b.state = saved;
    assert.deepEqual([b.nextU32(), b.nextU32()], next);
    const p = new Rng(5).permutation(100);
    assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
    assert.notDeepEqual(p, Array.from({ length: 100 }, (_, i) => i));
  });
});
