/** Model folders holding small but real Hugging Face tokenizer.json files, in the shapes of the usual families. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/**
 * A model folder with a Llama-2-style SentencePiece tokenizer.json (the "▁" normalizer; one token per
 * character) and, with `bos`, a post-processor that puts <s> first, as Llama's does.
 */
export function sentencePieceTokenizer(root: string, name: string, o: { bos: boolean; config?: Record<string, unknown> }): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const chars = ['▁', ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).filter((c) => c !== ' ')];
  const vocab = Object.fromEntries([['<unk>', 0], ['<s>', 1], ['</s>', 2], ...chars.map((c, i) => [c, 3 + i])]);
  const bosFirst = { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } };
  writeFileSync(
    join(dir, 'tokenizer.json'),
    JSON.stringify({
      version: '1.0', truncation: null, padding: null,
      added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
      normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null, post_processor: o.bos ? bosFirst : null,
      decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
      model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: false, vocab, merges: [] },
    }),
  );
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(o.config ?? { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }));
  return dir;
}

/**
 * A model folder with a GPT-2-style byte-level BPE tokenizer.json over printable ASCII ("Ġ" = space),
 * EOS </s>, the given merges, and `specials` as added special tokens after the vocabulary.
 */
export function byteLevelBpeTokenizer(root: string, name: string, merges: string[], specials: string[] = []): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const chars = [...Array.from({ length: 94 }, (_, i) => String.fromCharCode(33 + i)), 'Ġ', 'Ċ'];
  const vocab: Record<string, number> = { '</s>': 0 };
  for (const t of [...chars, ...merges.map((m) => m.replace(' ', '')), ...specials]) vocab[t] = Object.keys(vocab).length;
  writeFileSync(
    join(dir, 'tokenizer.json'),
    JSON.stringify({
      version: '1.0', truncation: null, padding: null,
      added_tokens: [special(0, '</s>'), ...specials.map((t) => special(vocab[t]!, t))],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
    }),
  );
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '</s>' }));
  return dir;
}
