/**
 * Fuzzing model-folder tokenizers (sidecar/src/data/tokenizer.ts): `tokenizer.json` of four model
 * types (byte-level BPE, WordPiece, Unigram, WordLevel) mutated — truncated or damaged JSON, wrong
 * or missing model type, missing or mistyped vocab, bad ids, huge and malformed merge lists, broken
 * normalizers / pre-tokenizers / post-processors / decoders, absurd nesting — plus broken
 * `tokenizer_config.json` and `config.json` beside it. Every case must end, within a time bound, in
 * a tokenizer whose ids are integers (and a data set built with it checked against the vocabulary)
 * or in a one-line InputError naming the tokenizer's file (or, for a row it cannot encode, the data
 * file and line, with the tokenizer's file in the message).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadData, loadHeldout } from '../../sidecar/src/data/dataset';
import { loadTokenizer } from '../../sidecar/src/data/tokenizer';
import { InputError } from '../../sidecar/src/errors';
import { fuzzCases, int, pick, rng, Tally } from '../helpers/fuzz';

const root = mkdtempSync(join(tmpdir(), 'peft-fuzz-tok-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** CPU milliseconds of this process since `t0`: a per-case bound that a loaded machine does not break. */
const cpuMs = (t0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(t0);
  return (c.user + c.system) / 1000;
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const special = (id: number, content: string): Obj => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** GPT-2's byte → printable character table. */
function byteChars(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (bs.includes(b)) continue;
    bs.push(b);
    cs.push(256 + n++);
  }
  const out: string[] = [];
  bs.forEach((b, i) => (out[b] = String.fromCharCode(cs[i]!)));
  return out;
}

function bpe(): Obj {
  const chars = byteChars();
  const vocab: Obj = {};
  chars.forEach((c, i) => (vocab[c] = i));
  const merges = ['Ġ t', 't h', 'th e', 'Ġt he', 'a t', 'c at', 'Ġ c', 'Ġc at', 's at', 'Ġ s', 'Ġs at'];
  for (const m of merges) vocab[m.replace(' ', '')] = Object.keys(vocab).length;
  vocab['<|endoftext|>'] = Object.keys(vocab).length;
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(vocab['<|endoftext|>'] as number, '<|endoftext|>')],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}
function wordpiece(): Obj {
  const vocab: Obj = {};
  for (const t of ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'the', 'cat', 'sat', '##s', '##at', 'c', 's', 'a', 't', 'h', 'e', '.', 'good', 'film']) vocab[t] = Object.keys(vocab).length;
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: ['[PAD]', '[UNK]', '[CLS]', '[SEP]'].map((t, i) => special(i, t)),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }], pair: [], special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } } },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}
function unigram(): Obj {
  const pieces: Json[] = [['<unk>', 0], ['<s>', 0], ['</s>', 0], ['▁the', -1], ['▁cat', -2], ['▁sat', -2], ['▁', -3], ...'abcdefghijklmnopqrstuvwxyz.'.split('').map((c, i) => [c, -5 - i / 10])];
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 0, vocab: pieces, byte_fallback: false },
  };
}
function wordlevel(): Obj {
  const vocab: Obj = { '[UNK]': 0, '[PAD]': 1 };
  for (const w of ['the', 'cat', 'sat', 'good', 'film', '.']) vocab[w] = Object.keys(vocab).length;
  return { version: '1.0', added_tokens: [special(0, '[UNK]'), special(1, '[PAD]')], normalizer: { type: 'Lowercase' }, pre_tokenizer: { type: 'Whitespace' }, post_processor: null, decoder: null, model: { type: 'WordLevel', vocab, unk_token: '[UNK]' } };
}
const BASES: Record<string, () => Obj> = { bpe, wordpiece, unigram, wordlevel };
const CONFIGS: Record<string, Obj> = {
  bpe: { eos_token: '<|endoftext|>', bos_token: '<|endoftext|>' },
  wordpiece: { pad_token: '[PAD]', unk_token: '[UNK]', cls_token: '[CLS]', sep_token: '[SEP]' },
  unigram: { eos_token: '</s>', unk_token: '<unk>', pad_token: { content: '<unk>' } },
  wordlevel: { pad_token: '[PAD]' },
};

const JUNK: Json[] = [null, true, 0, -1, 1.5, 'x', '', [], {}, [1, 2], { type: 'Nope' }, [[]], [null], { a: { b: {} } }];
const COMPONENTS = ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder'];
const COMPONENT_JUNK: Json[] = [
  { type: 'Nope' }, { type: 'Sequence' }, { type: 'Sequence', normalizers: null }, { type: 'Sequence', pretokenizers: [null] }, { type: 'Replace', pattern: { Regex: '(' }, content: 'x' },
  { type: 'Replace', pattern: { Regex: '(a+)+$' }, content: 'x' }, { type: 'Split', pattern: { Regex: '[' }, behavior: 'Isolated' }, { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '[NOPE]', type_id: 0 } }], special_tokens: {} },
  { type: 'TemplateProcessing', single: null }, { type: 'ByteLevel' }, { type: 'Metaspace' }, { type: 'Precompiled', precompiled_charsmap: 'not base64' }, { type: 'BertProcessing', sep: ['[SEP]'], cls: null }, 'ByteLevel', 7, [],
];

type Mutation = (r: () => number, t: Obj, kind: string) => { tokenizer: string | Buffer; config?: string; modelConfig?: string };
const j = (v: Json) => JSON.stringify(v);
const MUTATIONS: Record<string, Mutation> = {
  truncated: (r, t) => { const s = j(t); return { tokenizer: s.slice(0, int(r, 0, s.length - 1)) }; },
  strayBytes: (r, t) => { const b = Buffer.from(j(t)); for (let i = 0; i < int(r, 1, 6); i++) b[int(r, 0, b.length - 1)] = pick(r, [0x22, 0x2c, 0x7b, 0x7d, 0x5b, 0x5d, 0x00, 0xff, int(r, 0, 255)]); return { tokenizer: b }; },
  wrongModelType: (r, t) => { (t.model as Obj).type = pick(r, ['Foo', '', 'bpe', 'WordPiece', 'Unigram', 'BPE', 'WordLevel', 'Legacy', 123, null, ['BPE']] as Json[]); return { tokenizer: j(t) }; },
  noModelType: (r, t) => { delete (t.model as Obj).type; if (r() < 0.5) delete (t.model as Obj).unk_token; return { tokenizer: j(t) }; },
  missingVocab: (r, t) => { const m = t.model as Obj; if (r() < 0.4) delete m.vocab; else m.vocab = pick(r, [null, [], {}, 'x', [[1, 2]], [['a']], { a: 'b' }, 7] as Json[]); return { tokenizer: j(t) }; },
  badVocabIds: (r, t) => {
    const m = t.model as Obj;
    if (Array.isArray(m.vocab)) (m.vocab as Json[])[int(r, 0, (m.vocab as Json[]).length - 1)] = pick(r, [['x', 'NaN'], ['x'], [null, 1], 'x', ['x', Number.POSITIVE_INFINITY]] as Json[]);
    else if (m.vocab && typeof m.vocab === 'object') {
      const keys = Object.keys(m.vocab as Obj);
      for (let i = 0; i < int(r, 1, 4); i++) (m.vocab as Obj)[pick(r, keys)] = pick(r, [-1, 1.5, 1e9, 2 ** 32, '3', null, 0, keys.length + 5] as Json[]);
    }
    return { tokenizer: j(t) };
  },
  hugeMerges: (r, t, kind) => {
    const m = t.model as Obj;
    const n = pick(r, [10_000, 100_000]);
    const style = pick(r, ['unknown', 'pairs', 'known']);
    const chars = Object.keys((bpe().model as Obj).vocab as Obj).slice(0, 200);
    m.merges = Array.from({ length: n }, (_, i) => (style === 'unknown' ? `z${i} y${i}` : style === 'pairs' ? [`${chars[i % 200]}`, `${chars[(i * 7) % 200]}`] : `${chars[i % 200]} ${chars[(i * 7) % 200]}`));
    if (kind !== 'bpe' && r() < 0.5) m.type = 'BPE';
    return { tokenizer: j(t) };
  },
  badMerges: (r, t) => { (t.model as Obj).merges = pick(r, [null, 'a b', 7, {}, [null], ['a'], ['a b c'], [['a']], [['a', 'b', 'c']], [1, 2], [''], [' '], ['Ġ t', 'Ġ t']] as Json[]); return { tokenizer: j(t) }; },
  deleteKey: (r, t) => { delete t[pick(r, ['model', 'added_tokens', ...COMPONENTS, 'version'])]; return { tokenizer: j(t) }; },
  junkComponent: (r, t) => { t[pick(r, COMPONENTS)] = structuredClone(pick(r, COMPONENT_JUNK)); return { tokenizer: j(t) }; },
  junkTopLevel: (r, t) => { t[pick(r, ['model', 'added_tokens', ...COMPONENTS, 'truncation', 'padding'])] = structuredClone(pick(r, JUNK)); return { tokenizer: j(t) }; },
  badAddedTokens: (r, t) => { t.added_tokens = pick(r, [[{}], [{ id: 'x', content: 'y' }], [{ id: -1, content: 'z', special: true }], [{ id: 5, content: '' }], [{ id: 1e9, content: 'big', special: true }], [null], [{ id: 0 }]] as Json[]); return { tokenizer: j(t) }; },
  deepNesting: (r, t) => {
    const depth = pick(r, [100, 10_000]);
    let n: Json = { type: 'Lowercase' };
    for (let i = 0; i < depth; i++) n = { type: 'Sequence', normalizers: [n] };
    t.normalizer = n;
    try {
      return { tokenizer: j(t) };
    } catch {
      return { tokenizer: '{"model":' + '['.repeat(depth) + ']'.repeat(depth) + '}' };
    }
  },
  badConfig: (r, t) => ({ tokenizer: j(t), config: pick(r, ['{"eos_token": ', '[]', 'null', '{"eos_token": 5}', '{"eos_token": {"content": 7}}', '{"pad_token": "missing"}', '{"eos_token": {"content": "[SEP]"}, "pad_token": null}', '\u0000']) }),
  badModelConfig: (r, t) => ({ tokenizer: j(t), modelConfig: pick(r, ['{"eos_token_id": ', '[]', '{"eos_token_id": -1, "pad_token_id": 1.5}', '{"eos_token_id": 99999}', '"x"', '{"pad_token_id": "0"}']) }),
  notJsonObject: (r) => ({ tokenizer: pick(r, ['', '[]', 'null', '1', '"tok"', 'true', '\ufeff{}', '{}']) }),
};

const TEXTS = ['the cat sat.', '', ' ', 'The Cat SAT', 'héllo wörld', '🙂 emoji', '\u0000\u0001', 'a'.repeat(3000), '\ud800 lone surrogate', 'z y x w'];

describe('fuzz: tokenizer.json', () => {
  const tally = new Tally('tokenizer.json');
  const byKind = new Map<string, Map<string, number>>();
  after(() => {
    process.stderr.write(`${tally.summary()}\n`);
    process.stderr.write(`tokenizer.json by mutation: ${[...byKind].map(([k, m]) => `${k} [${[...m].map(([o, c]) => `${o} ${c}`).join(', ')}]`).join('; ')}\n`);
  });

  const N = fuzzCases(1200);
  it(`${N} mutated tokenizer folders encode to integer ids or fail with a one-line InputError naming the file`, () => {
    const r = rng(31337);
    const kinds = Object.keys(MUTATIONS);
    const dir = join(root, 'model');
    const data = join(root, 'data.jsonl');
    const heldout = join(root, 'heldout.txt');
    mkdirSync(dir, { recursive: true });
    writeFileSync(data, ['the cat sat.', 'The cat sat', 'the film . good'].map((text) => JSON.stringify({ text })).join('\n'));
    writeFileSync(heldout, 'the cat sat. '.repeat(20));
    let slowest = 0;
    let encodeErrors = 0;
    for (let i = 0; i < N; i++) {
      const kind = kinds[i % kinds.length]!;
      const baseKind = pick(r, Object.keys(BASES));
      const m = MUTATIONS[kind]!(r, BASES[baseKind]!(), baseKind);
      const tokFile = join(dir, 'tokenizer.json');
      const cfgFile = join(dir, 'tokenizer_config.json');
      const modelCfg = join(dir, 'config.json');
      writeFileSync(tokFile, m.tokenizer);
      writeFileSync(cfgFile, m.config ?? JSON.stringify(CONFIGS[baseKind]));
      writeFileSync(modelCfg, m.modelConfig ?? '{"model_type": "gpt2"}');
      const caseId = `case ${i} (${baseKind}, ${kind})`;
      const t0 = process.cpuUsage();
      let outcome: string;
      try {
        const tok = loadTokenizer(dir);
        assert.ok(Number.isInteger(tok.vocabSize) && tok.vocabSize >= 0, `${caseId}: vocab size ${tok.vocabSize}`);
        // Any text: integer ids, or (e.g. a word with no id and no unknown token) an InputError naming tokenizer.json.
        for (const text of TEXTS) {
          for (const specials of [true, false]) {
            let ids: number[];
            try {
              ids = tok.encode(text, specials);
            } catch (e) {
              assert.ok(e instanceof InputError && e.file === tokFile && !e.message.includes('\n') && e.message.length < 400, `${caseId}: encode(${JSON.stringify(text.slice(0, 20))}) threw ${String(e).slice(0, 300)}`);
              encodeErrors++;
              continue;
            }
            assert.ok(Array.isArray(ids) && ids.every((x) => Number.isInteger(x) && x >= 0), `${caseId}: encode(${JSON.stringify(text.slice(0, 20))}) gave ${JSON.stringify(ids.slice(0, 10))}`);
            try {
              assert.equal(typeof tok.decode(ids), 'string');
            } catch (e) {
              assert.ok(e instanceof InputError && e.file === tokFile, `${caseId}: decode threw ${String(e).slice(0, 300)}`);
            }
          }
        }
        // As the trainer uses it: rows checked against a model vocabulary, and held-out text.
        const vocabSize = Math.max(1, tok.vocabSize);
        const d = loadData({ data: { format: 'jsonl', train: data, textField: 'text', promptField: 'prompt', completionField: 'completion', labelField: 'label' }, seed: 1, specFile: join(root, 'spec.peft.json') }, { task: 'causal-lm', modelType: 'gpt2', vocabSize, maxPositions: 64 }, tok);
        for (const e of d.train) if (e.kind === 'lm') assert.ok(e.ids.every((x) => x >= 0 && x < vocabSize), `${caseId}: id outside the vocabulary`);
        loadHeldout(heldout, tok, vocabSize, 16);
        tally.ok();
        outcome = 'valid';
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        const msg = e instanceof Error ? e.message : '';
        const files = [tokFile, cfgFile, modelCfg, data, heldout];
        const file = files.find((f) => msg.startsWith(f)) ?? tokFile;
        tally.error(e, file, ['InputError'], caseId);
        // A failure at a data row or the held-out text still names the tokenizer when it is the tokenizer's fault.
        const ie = e as InputError;
        outcome = ie.file === tokFile ? 'InputError tokenizer.json' : ie.file === cfgFile ? 'InputError tokenizer_config.json' : ie.file === modelCfg ? 'InputError config.json' : 'InputError at a data row';
      }
      const ms = cpuMs(t0);
      slowest = Math.max(slowest, ms);
      assert.ok(ms < 5000, `${caseId} took ${Math.round(ms)} ms of CPU`);
      const c = byKind.get(kind) ?? new Map<string, number>();
      c.set(outcome, (c.get(outcome) ?? 0) + 1);
      byKind.set(kind, c);
    }
    process.stderr.write(`tokenizer.json: slowest case ${Math.round(slowest)} ms of CPU; ${encodeErrors} texts refused by loaded tokenizers (InputError naming tokenizer.json)\n`);
    assert.ok((tally.counts.get('valid') ?? 0) > N / 20, 'some mutations leave a working tokenizer');
    assert.ok((tally.counts.get('InputError') ?? 0) > N / 3);
  });
});
