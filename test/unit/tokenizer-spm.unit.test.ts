/**
 * DeBERTa-v3's hub folders hold spm.model, not tokenizer.json: the SentencePiece file is read
 * (sentencepiece.ts) and built into the tokenizer transformers 5's DebertaV2Tokenizer builds from it.
 * The references (test/fixtures/tokenizers/deberta-v3-spm/refs.json) are that tokenizer's ids, token
 * types and decoded text, for three tokenizer_config.json variants
 * (scripts/fixtures/make_spm_tokenizer_fixture.py).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { InputError } from '../../sidecar/src/errors';
import { PIECE_TYPES, readSentencePieceModel } from '../../sidecar/src/data/sentencepiece';
import { loadTokenizer, tokenizerMismatch } from '../../sidecar/src/data/tokenizer';

const FIXTURE = join(__dirname, '..', 'fixtures', 'tokenizers', 'deberta-v3-spm');
const tmp = mkdtempSync(join(tmpdir(), 'tokenizer-spm-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Case {
  text: string;
  pair: string | null;
  ids: number[];
  type_ids: number[];
  decoded: string;
}
interface Variant {
  config: Record<string, unknown>;
  vocab_size: number;
  cases: Case[];
  truncated: { text: string; pair: string; max_length: number; ids: number[]; type_ids: number[] };
}
const REFS = JSON.parse(readFileSync(join(FIXTURE, 'refs.json'), 'utf8')) as Record<string, Variant>;

/** The fixture folder with another tokenizer_config.json. */
function folder(name: string, config: Record<string, unknown>): string {
  const dir = join(tmp, name);
  cpSync(FIXTURE, dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

describe('DeBERTa-v3 spm.model', () => {
  it('reads the SentencePiece file: pieces, scores, types, trainer ids, normalizer name', () => {
    const m = readSentencePieceModel(join(FIXTURE, 'spm.model'));
    assert.equal(m.pieces.length, 120);
    assert.deepEqual(m.pieces.slice(0, 5).map((p) => [p.piece, p.type]), [['[PAD]', PIECE_TYPES.control], ['[CLS]', PIECE_TYPES.control], ['[SEP]', PIECE_TYPES.control], ['[UNK]', PIECE_TYPES.unknown], ['<sep2>', PIECE_TYPES.userDefined]]);
    assert.ok(m.pieces.slice(5).every((p) => p.type === PIECE_TYPES.normal && p.score < 0 && Number.isFinite(p.score)));
    assert.deepEqual([m.modelType, m.unkId, m.bosId, m.eosId, m.padId, m.byteFallback, m.normalizer], [1, 3, 1, 2, 0, false, 'nmt_nfkc']);
  });

  for (const [name, v] of Object.entries(REFS)) {
    it(`${name} (${JSON.stringify(v.config)}): transformers 5's ids, token types and decoded text`, () => {
      const tok = loadTokenizer(folder(name, v.config));
      assert.equal(tok.name, 'spm.model');
      assert.equal(tok.vocabSize, v.vocab_size);
      assert.equal(tok.padId, 0);
      assert.equal(tokenizerMismatch(tok, 128), undefined);
      for (const c of v.cases) {
        const where = JSON.stringify([c.text, c.pair]);
        if (c.pair === null) assert.deepEqual(tok.encode(c.text, true), c.ids, where);
        const enc = tok.encodeForClassifier(c.text, c.pair ?? undefined, 512);
        assert.deepEqual(enc.ids, c.ids, where);
        assert.deepEqual(enc.typeIds ?? c.ids.map(() => 0), c.type_ids, where);
        assert.equal(enc.truncated, false);
        assert.equal(tok.decode(c.ids), c.decoded, where);
      }
      const t = v.truncated;
      const cut = tok.encodeForClassifier(t.text, t.pair, t.max_length);
      assert.deepEqual([cut.ids, cut.typeIds, cut.truncated], [t.ids, t.type_ids, true]);
    });
  }

  it('decoding cleans up spaces before punctuation only where tokenizer_config.json asks (transformers 5\'s default is not to)', () => {
    const ids = REFS.punct!.cases[1]!.ids;
    assert.match(loadTokenizer(folder('plain', REFS.punct!.config)).decode(ids), /fox , jumps/);
    assert.match(loadTokenizer(folder('clean', { ...REFS.punct!.config, clean_up_tokenization_spaces: true })).decode(ids), /fox, jumps/);
  });

  it('another tokenizer class named beside spm.model is not built as DeBERTa\'s (the byte-level fallback says what the folder has)', () => {
    const tok = loadTokenizer(folder('t5', { tokenizer_class: 'T5Tokenizer' }));
    assert.equal(tok.name, 'byte-level');
    assert.match(tokenizerMismatch(tok, 32000)!, /the folder has spm\.model \(a slow tokenizer's files, not read here\)/);
  });

  it('a damaged file is an error naming the file and the byte, never a crash or a hang', () => {
    const bytes = readFileSync(join(FIXTURE, 'spm.model'));
    const dir = join(tmp, 'damaged');
    cpSync(FIXTURE, dir, { recursive: true });
    const file = join(dir, 'spm.model');
    const cases: [string, Buffer, RegExp][] = [
      ['cut short', bytes.subarray(0, 1000), /\(byte \d+\): not a SentencePiece model: a field of \d+ bytes runs past the end/],
      ['empty', Buffer.alloc(0), /not a SentencePiece model: it holds no pieces/],
      ['a group wire type', Buffer.from([0x0b, 0x00]), /wire type 3 \(field 1\)/],
      ['an endless number', Buffer.from([0x08, ...Array(11).fill(0xff)]), /a number longer than 10 bytes/],
      ['a piece that is not text', Buffer.from([0x0a, 0x03, 0x0a, 0x01, 0xff]), /field 1 is not UTF-8 text/],
    ];
    for (const [what, data, msg] of cases) {
      writeFileSync(file, data);
      assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof InputError && e.file === file && msg.test(e.message), what);
    }
    // Random damage anywhere: an InputError, or a tokenizer that still loads.
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < 200; i++) {
      const copy = Buffer.from(bytes.subarray(0, 4000 + Math.floor(rand() * 2000)));
      for (let k = 0; k < 3; k++) copy[Math.floor(rand() * copy.length)] = Math.floor(rand() * 256);
      writeFileSync(file, copy);
      try {
        loadTokenizer(dir).encode('the quick brown fox', true);
      } catch (e) {
        assert.ok(e instanceof InputError, `mutation ${i}: ${String(e)}`);
      }
    }
  });
});
