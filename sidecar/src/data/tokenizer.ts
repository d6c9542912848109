/**
 * The tokenizer of a model folder: Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) through
 * @huggingface/tokenizers when present, else a slow tokenizer's files built into the same
 * (tokenizer-files.ts: GPT2Tokenizer's vocab.json + merges.txt, DebertaV2Tokenizer's spm.model), else
 * the byte-level tokenizer (ids 0–255 = UTF-8 bytes).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage, InputError } from '../errors';
import { ByteTokenizer } from './byte-tokenizer';
import { loadChatTemplate, type ChatTemplate } from './chat';
import { readJson, shortJson, SLOW_TOKENIZER_FILES, slowTokenizerJson, specialTexts, tokenizerConfig, tokenText } from './tokenizer-files';

export interface DataTokenizer {
  /** 'tokenizer.json' or 'byte-level'. */
  readonly name: string;
  /** byte-level: a slow tokenizer's files found in the folder instead of a tokenizer.json (vocab.json and merges.txt, spm.model, …). */
  readonly slowFiles?: readonly string[];
  readonly vocabSize: number;
  /** End of sequence, if the tokenizer has one. */
  readonly eosId: number | undefined;
  readonly padId: number;
  /** Ids of `text`; `specials` adds the tokenizer's template tokens (BOS, [CLS]/[SEP]). */
  encode(text: string, specials: boolean): number[];
  /**
   * A classifier's input: `text`, or `text` and `pair` as the tokenizer pairs them (BERT's
   * [CLS] a [SEP] b [SEP] with token types 0 then 1, RoBERTa's <s> a </s></s> b </s>), within
   * `maxLength` tokens, template tokens included: what transformers' tokenizer(text, pair,
   * truncation=True) gives (truncateLongestFirst).
   */
  encodeForClassifier(text: string, pair: string | undefined, maxLength: number): ClassifierEncoding;
  decode(ids: number[]): string;
  /** The model's chat template (read on first use), with this tokenizer's special tokens. */
  chatTemplate(): ChatTemplate;
}

export interface ClassifierEncoding {
  ids: number[];
  /** Token types (segment ids) where the template gives any other than 0. */
  typeIds?: number[];
  /** Whether tokens were dropped to fit. */
  truncated: boolean;
}

/**
 * Two token lists cut to `budget` tokens together as Hugging Face tokenizers' `longest_first`
 * truncation cuts them (the fast tokenizers transformers uses): the longer is cut to what the shorter
 * leaves, or, when that is not enough, the shorter keeps ⌊budget / 2⌋ and the longer the rest. One
 * list: its first `budget` tokens.
 */
export function truncateLongestFirst<T>(a: readonly T[], b: readonly T[] | undefined, budget: number): [T[], T[] | undefined] {
  if (b === undefined) return [a.slice(0, budget), undefined];
  if (a.length + b.length <= budget) return [[...a], [...b]];
  const swap = a.length > b.length;
  let short = Math.min(a.length, b.length);
  let long = short > budget ? short : Math.max(short, budget - short);
  if (short + long > budget) {
    short = Math.floor(budget / 2);
    long = short + (budget % 2);
  }
  const [na, nb] = swap ? [long, short] : [short, long];
  return [a.slice(0, na), b.slice(0, nb)];
}

/** Fewer template tokens than this leaves no room for text (a pair needs one token of each). */
function noRoom(maxLength: number, templateTokens: number, pair: boolean): string | undefined {
  const need = templateTokens + (pair ? 2 : 1);
  return maxLength < need ? `maxLength ${maxLength} leaves no room for the text: the tokenizer's template adds ${templateTokens} tokens${pair ? ' to a pair' : ''}` : undefined;
}

/** A lazily loaded chat template of `modelDir`. */
function lazyChat(modelDir: string, specials: Record<string, string>): () => ChatTemplate {
  let t: ChatTemplate | undefined;
  return () => (t ??= loadChatTemplate(modelDir, specials));
}

/**
 * Token ids index arrays inside the tokenizers library: one absurd id in a corrupt file (1e9) makes
 * it allocate and walk a billion slots. Real vocabularies stay far below this.
 */
export const MAX_TOKEN_ID = 1 << 22;

/** The first vocab or added-token entry whose id is not an integer in [0, MAX_TOKEN_ID). */
function badTokenId(json: Record<string, unknown>): { where: string; problem: string } | undefined {
  const check = (id: unknown, token: unknown, where: string) =>
    typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < MAX_TOKEN_ID ? undefined : { where, problem: `token ${shortJson(token)} has the id ${shortJson(id)}, not an integer in [0, ${MAX_TOKEN_ID})` };
  const model = json.model as { vocab?: unknown } | null | undefined;
  if (model && typeof model === 'object' && model.vocab && typeof model.vocab === 'object' && !Array.isArray(model.vocab)) {
    for (const [token, id] of Object.entries(model.vocab)) {
      const p = check(id, token, 'model.vocab');
      if (p) return p;
    }
  }
  if (Array.isArray(json.added_tokens)) {
    for (const a of json.added_tokens as unknown[]) {
      if (a && typeof a === 'object') {
        const p = check((a as { id?: unknown }).id, (a as { content?: unknown }).content, 'added_tokens');
        if (p) return p;
      }
    }
  }
  return undefined;
}

/**
 * A warning when the byte-level fallback reads text for a model built for a real vocabulary (a
 * folder copied without its tokenizer.json): the ids train and generate, but mean nothing to it.
 */
export function tokenizerMismatch(tok: DataTokenizer, modelVocab: number): string | undefined {
  if (tok.name !== 'byte-level' || modelVocab <= 2 * tok.vocabSize) return undefined;
  const what = `no tokenizer.json beside the model's config.json: text is read as UTF-8 bytes (ids 0–${tok.vocabSize - 1}), but the model has a vocabulary of ${modelVocab} tokens`;
  // Slow tokenizers' files PEFT Lab does not build (T5's, Llama-1's spm models): transformers writes tokenizer.json from them.
  if (tok.slowFiles?.length)
    return `${what}; the folder has ${tok.slowFiles.join(', ')} (a slow tokenizer's files, not read here): write tokenizer.json with transformers, AutoTokenizer.from_pretrained(folder).save_pretrained(folder)`;
  return `${what}; copy the model's tokenizer files into its folder`;
}

export function loadTokenizer(modelDir: string): DataTokenizer {
  const modelConfig = existsSync(join(modelDir, 'config.json')) ? readJson(join(modelDir, 'config.json')) : {};
  let file = join(modelDir, 'tokenizer.json');
  let json: Record<string, unknown> | undefined = existsSync(file) ? readJson(file) : undefined;
  let name = 'tokenizer.json';
  if (!json) {
    const slow = slowTokenizerJson(modelDir, tokenizerConfig(modelDir), modelConfig.model_type);
    if (slow) ({ json, file, name } = slow);
  }
  if (!json) {
    const b = new ByteTokenizer();
    // GPT-2's convention (the bundled models' tokenizer_config.json says so too): BOS = EOS = <|endoftext|>.
    const specials = specialTexts(tokenizerConfig(modelDir), { bos_token: b.eosToken, eos_token: b.eosToken });
    const slowFiles = SLOW_TOKENIZER_FILES.filter((f) => existsSync(join(modelDir, f)));
    return {
      name: 'byte-level',
      ...(slowFiles.length ? { slowFiles } : {}),
      vocabSize: b.vocabSize,
      eosId: b.eosId,
      padId: b.padId,
      encode: (text) => b.encode(text),
      // No template: a pair is joined by the end-of-text byte token.
      encodeForClassifier(text, pair, maxLength) {
        const a = b.encode(text);
        const second = pair === undefined ? undefined : b.encode(pair);
        const joiner = second ? 1 : 0;
        const problem = noRoom(maxLength, joiner, second !== undefined);
        if (problem) throw new Error(problem);
        const [ta, tb] = truncateLongestFirst(a, second, maxLength - joiner);
        return { ids: tb ? [...ta, b.eosId, ...tb] : ta, truncated: ta.length + (tb?.length ?? 0) < a.length + (second?.length ?? 0) };
      },
      decode: (ids) => b.decode(ids),
      chatTemplate: lazyChat(modelDir, specials),
    };
  }
  const badId = badTokenId(json);
  if (badId) throw new InputError(file, badId.where, badId.problem);
  const config = tokenizerConfig(modelDir);
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
  const specials = specialTexts(config);
  const addedIds = new Map([...tok.get_added_tokens_decoder()].map(([id, t]) => [t.content, id]));
  // transformers 5 removes spaces before punctuation only where the config asks (the library's default
  // is to), and never for a BPE model unless told it may corrupt the text.
  const bpe = (json.model as { type?: unknown } | null | undefined)?.type === 'BPE';
  const cleanUp = config.clean_up_tokenization_spaces === true && (!bpe || config.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output === true);
  // The post-processor puts the template tokens around one text or two (ByteLevel's hands a pair back unjoined).
  const wrap = tok.post_processor as unknown as ((a: string[], b: string[] | null, specials: boolean) => { tokens: string[]; tokens_pair?: string[]; token_type_ids?: number[] }) | null;
  // RoBERTa's tokenizers, and any whose model_input_names leave them out, give the model no token types, whatever the template's.
  const inputNames = config.model_input_names;
  const typed = (tok.post_processor?.config as { type?: unknown } | undefined)?.type !== 'RobertaProcessing' && !(Array.isArray(inputNames) && !inputNames.includes('token_type_ids'));
  const templated = (x: string[], y: string[] | undefined) => {
    const o = wrap ? wrap(x, y ?? null, true) : { tokens: [...x, ...(y ?? [])] };
    return { tokens: [...o.tokens, ...(o.tokens_pair ?? [])], types: typed && 'token_type_ids' in o ? o.token_type_ids : undefined };
  };
  return {
    name,
    vocabSize,
    eosId,
    padId,
    encode(text, specials) {
      // A damaged tokenizer.json may load and only fail here: name it, whatever the library throws.
      let enc: { ids: unknown[]; tokens: string[] };
      try {
        enc = tok.encode(text, { add_special_tokens: specials });
      } catch (e) {
        throw new InputError(file, '', `cannot encode text with this tokenizer (${errorMessage(e)})`);
      }
      const bad = enc.ids.findIndex((i) => !Number.isInteger(i));
      if (bad >= 0) throw new InputError(file, '', `token ${shortJson(enc.tokens[bad])} has ${enc.ids[bad] === undefined ? 'no id' : `the id ${shortJson(enc.ids[bad])}`} (no unknown token defined, or a broken vocab)`);
      return enc.ids as number[];
    },
    encodeForClassifier(text, pair, maxLength) {
      // The texts' own tokens, then the template around them (cut first when too long), as
      // tokenizer(text, pair, truncation=True) does; ids as encode() maps tokens.
      let encA: { ids: unknown[]; tokens: string[] };
      let encB: { ids: unknown[]; tokens: string[] } | undefined;
      try {
        encA = tok.encode(text, { add_special_tokens: false });
        encB = pair === undefined ? undefined : tok.encode(pair, { add_special_tokens: false });
      } catch (e) {
        throw new InputError(file, '', `cannot encode text with this tokenizer (${errorMessage(e)})`);
      }
      // Each text's tokens with the ids encode() gave them (normalized added tokens, the unknown token).
      const idOf = new Map<string, unknown>();
      for (const e of [encA, encB]) e?.tokens.forEach((t, i) => idOf.set(t, e.ids[i]));
      const a = encA.tokens;
      const b = encB?.tokens;
      const whole = templated(a, b);
      let out = whole;
      if (whole.tokens.length > maxLength) {
        const template = whole.tokens.length - a.length - (b?.length ?? 0);
        const problem = noRoom(maxLength, template, b !== undefined);
        if (problem) throw new Error(problem);
        const [ta, tb] = truncateLongestFirst(a, b, maxLength - template);
        out = templated(ta, tb);
      }
      const ids = out.tokens.map((t) => {
        const id = idOf.get(t) ?? addedIds.get(t) ?? tok.token_to_id(t);
        if (!Number.isInteger(id)) throw new InputError(file, '', `token ${shortJson(t)} has no id (no unknown token defined, or a broken vocab)`);
        return id as number;
      });
      return { ids, ...(out.types?.some((x) => x !== 0) ? { typeIds: out.types } : {}), truncated: out !== whole };
    },
    decode(ids) {
      // The library refuses an empty list (a reply that is only the end of text).
      if (ids.length === 0) return '';
      try {
        return tok.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: cleanUp });
      } catch (e) {
        throw new InputError(file, '', `cannot decode ids with this tokenizer (${errorMessage(e)})`);
      }
    },
    chatTemplate: lazyChat(modelDir, specials),
  };
}
