/**
 * The tokenizer of a model folder: Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) through
 * @huggingface/tokenizers when present, else the byte-level tokenizer (ids 0–255 = UTF-8 bytes).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors';
import { ByteTokenizer } from './byte-tokenizer';

export interface DataTokenizer {
  /** 'tokenizer.json' or 'byte-level'. */
  readonly name: string;
  readonly vocabSize: number;
  /** End of sequence, if the tokenizer has one. */
  readonly eosId: number | undefined;
  readonly padId: number;
  /** Ids of `text`; `specials` adds the tokenizer's template tokens (BOS, [CLS]/[SEP]). */
  encode(text: string, specials: boolean): number[];
  decode(ids: number[]): string;
}

function readJson(file: string): Record<string, unknown> {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new InputError(file, '', `cannot read (${(e as Error).message})`);
  }
}

/** A special token as tokenizer_config.json writes it: a string or an AddedToken object. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

export function loadTokenizer(modelDir: string): DataTokenizer {
  const file = join(modelDir, 'tokenizer.json');
  const modelConfig = existsSync(join(modelDir, 'config.json')) ? readJson(join(modelDir, 'config.json')) : {};
  if (!existsSync(file)) {
    const b = new ByteTokenizer();
    return {
      name: 'byte-level',
      vocabSize: b.vocabSize,
      eosId: b.eosId,
      padId: b.padId,
      encode: (text) => b.encode(text),
      decode: (ids) => b.decode(ids),
    };
  }
  const json = readJson(file);
  const cfgFile = join(modelDir, 'tokenizer_config.json');
  const config = existsSync(cfgFile) ? readJson(cfgFile) : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new InputError(file, '', `cannot load the tokenizer (${(e as Error).message})`);
  }
  const idOf = (key: string, configKey: string): number | undefined => {
    const t = tokenText(config[key]);
    const id = t !== undefined ? tok.token_to_id(t) : undefined;
    if (id !== undefined) return id;
    const c = modelConfig[configKey];
    return typeof c === 'number' && Number.isInteger(c) ? c : undefined;
  };
  const eosId = idOf('eos_token', 'eos_token_id');
  const padId = idOf('pad_token', 'pad_token_id') ?? eosId ?? 0;
  const vocabSize = tok.get_vocab(true).size;
  return {
    name: 'tokenizer.json',
    vocabSize,
    eosId,
    padId,
    encode(text, specials) {
      const ids = tok.encode(text, { add_special_tokens: specials }).ids;
      const bad = ids.findIndex((i) => typeof i !== 'number');
      if (bad >= 0) throw new Error(`token ${JSON.stringify(tok.encode(text, { add_special_tokens: specials }).tokens[bad])} has no id in ${file} (no unknown token defined)`);
      return ids;
    },
    decode: (ids) => tok.decode(ids, { skip_special_tokens: true }),
  };
}
