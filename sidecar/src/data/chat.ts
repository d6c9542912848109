/**
 * Chat rows (`{"messages": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]}`)
 * rendered with the model's chat template, as transformers' apply_chat_template renders them (the
 * Jinja template of tokenizer_config.json or chat_template.jinja, through @huggingface/jinja), and
 * split into segments so that the loss counts the assistant turns only.
 *
 * A model without a template (the bundled byte-level models) gets ChatML written as plain text.
 */
import { Template } from '@huggingface/jinja';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors';

export interface ChatMessage {
  role: string;
  content: string;
}

/** A text span of a rendered conversation, and whether the loss counts it (an assistant turn). */
export interface ChatSegment {
  text: string;
  train: boolean;
}

export interface ChatTemplate {
  /** Where the template came from (a file, or "ChatML (the model has no chat template)"). */
  readonly source: string;
  /**
   * Text that ends an assistant turn when it is not a token of its own (ChatML's `<|im_end|>` on a
   * byte-level model): generation stops there.
   */
  readonly stopText?: string;
  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string;
}

/** ChatML, the fallback: what many chat models use, written as text. */
const CHATML = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * The chat template of a model folder: `chat_template.jinja`, else tokenizer_config.json's
 * `chat_template` (a string, or a list of named templates: the one named "default"), else ChatML.
 * `specials`: the special tokens' texts the template may use (bos_token, eos_token, …).
 */
export function loadChatTemplate(modelDir: string, specials: Readonly<Record<string, string>>): ChatTemplate {
  const jinjaFile = join(modelDir, 'chat_template.jinja');
  const cfgFile = join(modelDir, 'tokenizer_config.json');
  let text: string | undefined;
  let source = 'ChatML (the model has no chat template)';
  let where = '';
  if (existsSync(jinjaFile)) {
    text = readFileSync(jinjaFile, 'utf8');
    source = jinjaFile;
  } else if (existsSync(cfgFile)) {
    let raw: unknown;
    try {
      raw = (JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>).chat_template;
    } catch (e) {
      throw new InputError(cfgFile, '', `cannot read (${(e as Error).message})`);
    }
    if (typeof raw === 'string') text = raw;
    else if (Array.isArray(raw)) {
      const named = raw.find((t: unknown) => (t as { name?: unknown })?.name === 'default') as { template?: unknown } | undefined;
      if (typeof named?.template !== 'string') throw new InputError(cfgFile, 'chat_template', 'a list of templates without one named "default"');
      text = named.template;
    } else if (raw !== undefined && raw !== null) throw new InputError(cfgFile, 'chat_template', 'expected a string or a list of {name, template}');
    if (text !== undefined) {
      source = cfgFile;
      where = 'chat_template';
    }
  }
  let template: Template;
  try {
    template = new Template(text ?? CHATML);
  } catch (e) {
    throw new InputError(source, where, `the chat template does not parse (${(e as Error).message})`);
  }
  return {
    source,
    ...(text === undefined ? { stopText: '<|im_end|>' } : {}),
    render(messages, addGenerationPrompt) {
      try {
        return template.render({ ...specials, messages: messages.map((m) => ({ ...m })), add_generation_prompt: addGenerationPrompt });
      } catch (e) {
        throw new InputError(source, where, `the chat template failed on this conversation (${(e as Error).message})`);
      }
    },
  };
}

/**
 * The messages of a row's field, checked: a non-empty list of {role, content} with string values,
 * with an assistant turn unless `needsAssistant` is false (a conversational prompt).
 */
export function parseMessages(v: unknown, needsAssistant = true): ChatMessage[] | string {
  if (!Array.isArray(v) || v.length === 0) return 'expected a non-empty list of messages {"role", "content"}';
  const out: ChatMessage[] = [];
  for (const [i, m] of v.entries()) {
    if (!m || typeof m !== 'object' || Array.isArray(m)) return `message ${i}: expected an object {"role", "content"}`;
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || role === '') return `message ${i}: "role" must be a non-empty string`;
    if (typeof content !== 'string') return `message ${i}: "content" must be a string`;
    out.push({ role, content });
  }
  if (needsAssistant && !out.some((m) => m.role === 'assistant')) return 'no "assistant" message: nothing to learn from';
  return out;
}

/**
 * The conversation as rendered text in segments: each assistant turn from message `trainFrom` on
 * (what the template writes for it after the generation prompt, end-of-turn tokens included)
 * trains; the rest does not. Needs a template whose renders of a conversation's prefixes are
 * prefixes of its render, as chat templates are; throws a message (for the caller to locate) otherwise.
 */
export function chatSegments(template: ChatTemplate, messages: readonly ChatMessage[], trainFrom = 0): ChatSegment[] {
  const full = template.render(messages, false);
  const segments: ChatSegment[] = [];
  let done = 0;
  const take = (end: number, train: boolean) => {
    if (end > done) segments.push({ text: full.slice(done, end), train });
    done = Math.max(done, end);
  };
  for (const [i, m] of messages.entries()) {
    if (m.role !== 'assistant' || i < trainFrom) continue;
    const before = template.render(messages.slice(0, i), true);
    const through = template.render(messages.slice(0, i + 1), false);
    if (!full.startsWith(before) || !full.startsWith(through) || through.length < before.length || before.length < done)
      throw new Error(`the chat template (${template.source}) does not render message ${i} as a continuation of the messages before it, so its tokens cannot be told apart`);
    take(before.length, false);
    take(through.length, true);
  }
  take(full.length, false);
  return segments;
}
