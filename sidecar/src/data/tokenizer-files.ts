/**
 * A model folder's tokenizer files other than tokenizer.json: tokenizer_config.json (with
 * special_tokens_map.json), and the slow (Python) tokenizers' files, built into the tokenizer.json
 * transformers 5 builds from them: GPT2Tokenizer's vocab.json + merges.txt (OPT's hub folders) and
 * DebertaV2Tokenizer's spm.model (DeBERTa-v3's).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors';
import { PIECE_TYPES, readSentencePieceModel } from './sentencepiece';

export function readJson(file: string): Record<string, unknown> {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new InputError(file, '', `cannot read (${(e as Error).message})`);
  }
}

/** A special token as tokenizer_config.json writes it: a string or an AddedToken object. */
export function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

export const shortJson = (v: unknown) => {
  const t = JSON.stringify(v) ?? String(v);
  return t.length > 40 ? `${t.slice(0, 37)}...` : t;
};

export const SPECIAL_KEYS = ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token'];

/** The special tokens' texts a chat template may write (apply_chat_template passes them by name). */
export function specialTexts(config: Record<string, unknown>, defaults: Record<string, string> = {}): Record<string, string> {
  const out = { ...defaults };
  for (const key of SPECIAL_KEYS) {
    const t = tokenText(config[key]);
    if (t !== undefined) out[key] = t;
  }
  return out;
}

/**
 * tokenizer_config.json, with the special tokens of special_tokens_map.json where it names none
 * (older checkpoints keep BOS/EOS only there; transformers reads both).
 */
export function tokenizerConfig(modelDir: string): Record<string, unknown> {
  const cfgFile = join(modelDir, 'tokenizer_config.json');
  const mapFile = join(modelDir, 'special_tokens_map.json');
  const config = existsSync(cfgFile) ? readJson(cfgFile) : {};
  const map = existsSync(mapFile) ? readJson(mapFile) : {};
  for (const key of SPECIAL_KEYS) if (tokenText(config[key]) === undefined && tokenText(map[key]) !== undefined) config[key] = map[key];
  return config;
}

/** The files of slow (Python) tokenizers, which tokenizer.json replaces. */
export const SLOW_TOKENIZER_FILES = ['vocab.json', 'merges.txt', 'spm.model', 'tokenizer.model', 'sentencepiece.bpe.model', 'vocab.txt'];

/** Slow tokenizer classes built from vocab.json + merges.txt the way GPT2Tokenizer builds them (OPT's, GPT-2's). */
const GPT2_CLASSES = new Set(['GPT2Tokenizer', 'GPT2TokenizerFast']);

/**
 * The tokenizer.json that transformers 5's GPT2Tokenizer builds from vocab.json and merges.txt (a
 * byte-level BPE, ByteLevel pre-tokenizer and decoder), with tokenizer_config.json's add_prefix_space,
 * its added and special tokens, and the post-processor of TokenizersBackend.update_post_processor
 * (BOS first where add_bos_token, EOS last where add_eos_token; a pair's second text of type 1).
 * Undefined where the folder has no such pair of files or names another tokenizer class.
 */
function gpt2TokenizerJson(modelDir: string, config: Record<string, unknown>, modelType: unknown): Record<string, unknown> | undefined {
  const vocabFile = join(modelDir, 'vocab.json');
  const mergesFile = join(modelDir, 'merges.txt');
  if (!existsSync(vocabFile) || !existsSync(mergesFile)) return undefined;
  const cls = config.tokenizer_class;
  // Without a class named, only the models whose tokenizer is GPT2Tokenizer (RoBERTa's files look the same).
  if (cls === undefined ? modelType !== 'gpt2' && modelType !== 'opt' : !(typeof cls === 'string' && GPT2_CLASSES.has(cls))) return undefined;
  const vocab = readJson(vocabFile);
  for (const [token, id] of Object.entries(vocab)) if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new InputError(vocabFile, token, `expected a token id, got ${shortJson(id)}`);
  const merges = readFileSync(mergesFile, 'utf8')
    .split(/\r?\n/)
    .filter((line, i) => line.trim() !== '' && !(i === 0 && line.startsWith('#version')));
  const specials = specialTexts(config, { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>' });
  // Added tokens: tokenizer_config's table, then the special tokens the vocabulary has.
  const added = new Map<number, Record<string, unknown>>();
  const table = config.added_tokens_decoder;
  if (table && typeof table === 'object')
    for (const [id, t] of Object.entries(table as Record<string, Record<string, unknown>>)) if (typeof t?.content === 'string') added.set(Number(id), { id: Number(id), single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...t });
  for (const text of Object.values(specials)) {
    const id = vocab[text];
    if (typeof id === 'number' && !added.has(id)) added.set(id, { id, content: text, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  const bos = config.add_bos_token === true ? specials.bos_token : undefined;
  const eos = config.add_eos_token === true ? specials.eos_token : undefined;
  const special = (t: string, type: number) => ({ SpecialToken: { id: t, type_id: type } });
  const seq = (id: 'A' | 'B', type: number) => ({ Sequence: { id, type_id: type } });
  const around = (id: 'A' | 'B', type: number) => [...(bos ? [special(bos, type)] : []), seq(id, type), ...(eos ? [special(eos, type)] : [])];
  const specialTokens = Object.fromEntries([bos, eos].filter((t): t is string => t !== undefined && typeof vocab[t] === 'number').map((t) => [t, { id: t, ids: [vocab[t]], tokens: [t] }]));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: config.add_prefix_space === true, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...added.values()].sort((a, b) => (a.id as number) - (b.id as number)),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { type: 'TemplateProcessing', single: around('A', 0), pair: [...around('A', 0), ...around('B', 1)], special_tokens: specialTokens },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}

/**
 * The Rust library's Punctuation pre-tokenizer: every punctuation character (ASCII's, and Unicode's
 * P* categories) on its own. Written as a Split, as the JavaScript library's Punctuation keeps a run
 * of them together.
 */
const PUNCTUATION_SPLIT = { type: 'Split', pattern: { Regex: '[\\p{P}!-/:-@\\[-`{-~]' }, behavior: 'Isolated', invert: false };

/** Slow tokenizer classes built from a SentencePiece Unigram model the way DebertaV2Tokenizer builds them. */
const DEBERTA_V2_CLASSES = new Set(['DebertaV2Tokenizer', 'DebertaV2TokenizerFast']);

/**
 * The tokenizer.json that transformers 5's DebertaV2Tokenizer builds from spm.model: a Unigram model
 * of the file's pieces and scores; added tokens for its control and user-defined pieces and for the
 * special tokens (the mask token, absent from DeBERTa-v3's pieces, after them); the normalizer
 * [lowercase when do_lower_case] → runs of whitespace, \n, \r, \t to one space → NFC → strip on the
 * right (transformers 5 leaves the file's precompiled charsmap aside); [punctuation split when
 * split_by_punct] → Metaspace ▁; [CLS] A [SEP] (B [SEP], type 1). Undefined where the folder has no
 * spm.model or names another tokenizer class.
 */
function debertaV2TokenizerJson(modelDir: string, config: Record<string, unknown>, modelType: unknown): Record<string, unknown> | undefined {
  const file = join(modelDir, 'spm.model');
  if (!existsSync(file)) return undefined;
  const cls = config.tokenizer_class;
  if (cls === undefined ? modelType !== 'deberta-v2' : !(typeof cls === 'string' && DEBERTA_V2_CLASSES.has(cls))) return undefined;
  const spm = readSentencePieceModel(file);
  if (spm.modelType !== 1) throw new InputError(file, 'trainer_spec.model_type', `DebertaV2Tokenizer reads a Unigram model; this one is of type ${spm.modelType} (2 is BPE)`);
  const specials = specialTexts(config, { bos_token: '[CLS]', eos_token: '[SEP]', unk_token: '[UNK]', sep_token: '[SEP]', pad_token: '[PAD]', cls_token: '[CLS]', mask_token: '[MASK]' });
  const vocab: [string, number][] = spm.pieces.map((p) => [p.piece, p.score]);
  const index = new Map<string, number>();
  spm.pieces.forEach((p, i) => {
    if (!index.has(p.piece)) index.set(p.piece, i);
  });
  const unk = spm.pieces.findIndex((p) => p.piece === specials.unk_token && p.score === 0);
  const added = new Map<number, Record<string, unknown>>();
  const addedToken = (id: number, content: string, special: boolean) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
  // The file's control and user-defined pieces, unless tokenizer_config.json lists its own additional
  // special tokens (transformers then keeps those instead: a user-defined piece is tokenized as text).
  const ownExtras = Array.isArray(config.additional_special_tokens);
  spm.pieces.forEach((p, id) => {
    if (p.type === PIECE_TYPES.control || (p.type === PIECE_TYPES.userDefined && !ownExtras)) added.set(id, addedToken(id, p.piece, p.type === PIECE_TYPES.control));
  });
  // tokenizer_config.json's table of added tokens keeps its ids (newer hub folders write one).
  const idOf = new Map<string, number>();
  const table = config.added_tokens_decoder;
  if (table && typeof table === 'object' && !Array.isArray(table)) {
    for (const [key, t] of Object.entries(table as Record<string, unknown>)) {
      const id = Number(key);
      const content = tokenText(t);
      if (!Number.isInteger(id) || id < 0 || content === undefined) throw new InputError(join(modelDir, 'tokenizer_config.json'), `added_tokens_decoder.${key}`, 'expected a token id with an added token ({"content": ...})');
      added.set(id, { ...addedToken(id, content, true), ...(t as Record<string, unknown>), id });
      idOf.set(content, id);
    }
  }
  // Then the special tokens, in transformers' order, and the config's additional special tokens:
  // one neither the pieces nor the table has gets the next free id.
  let next = Math.max(vocab.length, ...[...added.keys()].map((id) => id + 1));
  const extra = ownExtras ? (config.additional_special_tokens as unknown[]).map(tokenText).filter((t): t is string => t !== undefined) : [];
  for (const t of [...['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'].map((k) => specials[k]), ...extra]) {
    if (t === undefined || idOf.has(t)) continue;
    const id = index.get(t) ?? next++;
    idOf.set(t, id);
    if (!added.has(id)) added.set(id, addedToken(id, t, true));
  }
  const clsToken = specials.cls_token!;
  const sepToken = specials.sep_token!;
  const special = (t: string, type: number) => ({ SpecialToken: { id: t, type_id: type } });
  const seq = (id: 'A' | 'B', type: number) => ({ Sequence: { id, type_id: type } });
  const prepend = config.add_prefix_space === false ? 'first' : 'always';
  const metaspace = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: prepend, split: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...added.values()].sort((a, b) => (a.id as number) - (b.id as number)),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        ...(config.do_lower_case === true ? [{ type: 'Lowercase' }] : []),
        { type: 'Replace', pattern: { Regex: '\\s{2,}|[\\n\\r\\t]' }, content: ' ' },
        { type: 'NFC' },
        { type: 'Strip', strip_left: false, strip_right: true },
      ],
    },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [...(config.split_by_punct === true ? [PUNCTUATION_SPLIT] : []), metaspace] },
    post_processor: {
      type: 'TemplateProcessing',
      single: [special(clsToken, 0), seq('A', 0), special(sepToken, 0)],
      pair: [special(clsToken, 0), seq('A', 0), special(sepToken, 0), seq('B', 1), special(sepToken, 1)],
      special_tokens: { [clsToken]: { id: clsToken, ids: [idOf.get(clsToken) ?? 0], tokens: [clsToken] }, [sepToken]: { id: sepToken, ids: [idOf.get(sepToken) ?? 0], tokens: [sepToken] } },
    },
    decoder: metaspace,
    model: { type: 'Unigram', unk_id: unk >= 0 ? unk : spm.unkId, vocab, byte_fallback: false },
  };
}

/** A slow tokenizer's files in `modelDir` as the tokenizer.json transformers builds from them, with the file to name in errors. */
export function slowTokenizerJson(modelDir: string, config: Record<string, unknown>, modelType: unknown): { json: Record<string, unknown>; file: string; name: string } | undefined {
  const gpt2 = gpt2TokenizerJson(modelDir, config, modelType);
  if (gpt2) return { json: gpt2, file: join(modelDir, 'vocab.json'), name: 'vocab.json + merges.txt' };
  const deberta = debertaV2TokenizerJson(modelDir, config, modelType);
  if (deberta) return { json: deberta, file: join(modelDir, 'spm.model'), name: 'spm.model' };
  return undefined;
}
