/**
 * `generate`: text from a causal language model, to try a fine-tune (and its base, side by side);
 * for a text classifier, its classes for the prompt.
 * Greedy by default, else temperature, top-k and nucleus (top-p) sampling from a seeded generator; stops
 * at the end-of-sequence token or after maxNewTokens. A run trained on chat rows gets its prompt
 * as a user message through the model's chat template.
 *
 * Each step runs the new token alone against the keys and values of the tokens before it (a
 * KvCache); the window is the model's positions (once full, each step reruns the last window).
 */
import * as tf from '@tensorflow/tfjs-core';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { GenerateJobParams, GenerateOutput, GenerateResult, JobResult } from '../../../src/protocol';
import { loadAnyAdapter } from '../analysis/finetuned';
import { loadAnalysisData } from '../analysis/data';
import { modelDataInfo } from '../data/dataset';
import { parsePromptTemplate, renderPromptTemplate } from '../data/prompt-template';
import { readRowsAsync } from '../data/rows';
import { loadTokenizer, tokenizerMismatch, type DataTokenizer } from '../data/tokenizer';
import type { DataFormat, RunConfig } from '../spec/types';
import { InputError } from '../errors';
import { throwIfCancelled, yieldToEventLoop, type JobContext } from '../jobs/context';
import { headLogits, type ModelInputs } from '../models/architecture';
import { positionLimit } from '../models/config';
import type { Hooks } from '../models/forward';
import { KvCache } from '../models/kv-cache';
import { Model } from '../models/model';
import { Rng } from '../train/rng';
import { readRunConfig } from '../train/run-folder';
import { baseLoadOptions } from './base-options';
import { AnalysisUsageError, int, num, runCli, str } from './importance';
import { modelFolder } from '../spec/hub-cache';

/** topK 50: transformers' GenerationConfig default when sampling. */
export const GENERATE_DEFAULTS = { maxNewTokens: 64, temperature: 0, topP: 1, topK: 50, repetitionPenalty: 1, seed: 0 } as const;

/**
 * transformers' RepetitionPenaltyLogitsProcessor, in place: the logit of each token already in `seq`
 * is divided by `penalty` where positive and multiplied by it where negative (so it drops either way).
 */
export function applyRepetitionPenalty(logits: Float32Array, seq: readonly number[], penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(seq)) {
    const z = logits[id];
    if (z !== undefined) logits[id] = z < 0 ? z * penalty : z / penalty;
  }
}

/**
 * The next token from one position's logits: the argmax at temperature 0; else a draw from
 * softmax(logits / T) restricted to the smallest set of tokens whose probability reaches topP.
 */
export function sampleNext(logits: ArrayLike<number>, temperature: number, topP: number, rng: Rng, topK = 0): number {
  const n = logits.length;
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]!);
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp((logits[i]! - max) / temperature);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);
  // transformers' order: top-k first, then the nucleus within it (its probabilities renormalised).
  const limit = topK > 0 ? Math.min(topK, n) : n;
  if (limit < n) {
    sum = 0;
    for (let k = 0; k < limit; k++) sum += p[order[k]!]!;
  }
  // The nucleus: tokens in order of probability until their mass reaches topP (at least one; a
  // relative 1e-9 keeps rounding from adding a token when the mass meets topP exactly).
  let kept = 0;
  let mass = 0;
  while (kept < limit && (kept === 0 || mass < topP * sum * (1 - 1e-9))) mass += p[order[kept++]!]!;
  let u = rng.next() * mass;
  for (let k = 0; k < kept; k++) {
    u -= p[order[k]!]!;
    if (u < 0) return order[k]!;
  }
  return order[kept - 1]!;
}

interface Weights {
  hooks?: Hooks;
  overrides?: ReadonlyMap<string, tf.Tensor>;
}

/**
 * Logits [V] of the last position of a one-row batch. A causal LM with a trunk puts only that row
 * through the head: a long prompt's first step would otherwise make T × V logits to keep one row.
 */
export function lastLogits(model: Model, inputs: ModelInputs, weights: Weights): tf.Tensor1D {
  const trunk = model.trunk(inputs, weights);
  if (!trunk) {
    const logits = model.forward(inputs, weights);
    return tf.reshape(tf.slice(logits, [0, logits.shape[1]! - 1, 0], [1, 1, -1]), [-1]);
  }
  const rows = trunk.hidden.shape[0];
  return tf.reshape(headLogits(trunk, tf.slice(trunk.hidden, [rows - 1, 0], [1, -1])), [-1]);
}

/** New token ids after `prompt`, one forward pass per token over the last `window` positions. */
export async function generateIds(
  model: Model,
  weights: Weights | undefined,
  prompt: readonly number[],
  /** `cache: false`: each step runs the whole window (the reference the key/value cache must match). */
  o: { maxNewTokens: number; temperature: number; topP: number; topK?: number; repetitionPenalty?: number; seed: number; eosId?: number; stopIds?: readonly number[]; window: number; cache?: boolean },
  signal?: AbortSignal,
  onToken?: (count: number) => void,
  /** Text that ends the output once the new tokens' text holds it (kept out of the ids returned). */
  stopText?: { text: string; decode: (ids: number[]) => string },
): Promise<{ ids: number[]; stop: 'eos' | 'length' }> {
  const rng = new Rng(o.seed);
  const stops = new Set([...(o.eosId !== undefined ? [o.eosId] : []), ...(o.stopIds ?? [])]);
  const seq = [...prompt];
  const out: number[] = [];
  const cache = o.cache === false ? undefined : new KvCache();
  // LongRoPE (Phi-3) switches to its long factors once the sequence passes original_max_position_embeddings:
  // the keys cached under the short ones are recomputed then, as transformers does.
  const scaling = 'ropeScaling' in model.config ? model.config.ropeScaling : undefined;
  const ropeSwitch = scaling?.type === 'longrope' ? scaling.originalMaxPositions : undefined;
  try {
    while (out.length < o.maxNewTokens) {
      if (signal) throwIfCancelled(signal);
      // With the cache, the new token alone; at first (and once the window is full: positions run
      // out, or LongRoPE switches) the last `window` tokens from position 0.
      let feed: number[];
      if (cache && cache.past > 0 && cache.past < o.window && cache.past !== ropeSwitch) feed = seq.slice(-1);
      else {
        cache?.dispose();
        feed = seq.slice(-o.window);
      }
      const last = tf.tidy(() => lastLogits(model, { inputIds: tf.tensor2d(Int32Array.from(feed), [1, feed.length], 'int32'), ...(cache ? { cache } : {}) }, weights ?? {}));
      const row = Float32Array.from((await last.data()) as Float32Array);
      last.dispose();
      applyRepetitionPenalty(row, seq, o.repetitionPenalty ?? 1);
      const next = sampleNext(row, o.temperature, o.topP, rng, o.topK ?? 0);
      if (stops.has(next)) return { ids: out, stop: 'eos' };
      out.push(next);
      seq.push(next);
      const at = stopText ? stopText.decode(out).indexOf(stopText.text) : -1;
      if (at >= 0) {
        // Drop the tokens from the stop text on (a token that also holds text before it goes too).
        while (out.length && stopText!.decode(out).length > at) out.pop();
        return { ids: out, stop: 'eos' };
      }
      onToken?.(out.length);
      await yieldToEventLoop();
    }
    return { ids: out, stop: 'length' };
  } finally {
    cache?.dispose();
  }
}

/** generation_config.json's eos_token_id (a number or a list: chat models end turns with another token). */
export function generationStopIds(modelDir: string): number[] {
  try {
    const v = (JSON.parse(readFileSync(join(modelDir, 'generation_config.json'), 'utf8')) as { eos_token_id?: unknown }).eos_token_id;
    return (Array.isArray(v) ? v : [v]).filter((x): x is number => Number.isInteger(x));
  } catch {
    return []; // none, or unreadable: the tokenizer's EOS only
  }
}

/**
 * Where a chat reply ends besides EOS: the template's stop text (ChatML's "<|im_end|>" when the model
 * has no template), and its id where it is one token, for decoding skips special tokens and the
 * text alone would then never show.
 */
export function chatStops(tok: DataTokenizer): { stopText?: { text: string; decode: (ids: number[]) => string }; stopIds: number[] } {
  const text = tok.chatTemplate().stopText;
  if (text === undefined) return { stopIds: [] };
  const ids = tok.encode(text, false);
  return { stopText: { text, decode: (x) => tok.decode(x) }, stopIds: ids.length === 1 ? ids : [] };
}

/** Whether a run trained on chat rows: its first training row (JSONL or CSV) has the messages field, or a list of messages as its prompt. */
export async function runUsesChat(runDir: string, cfg: { data: { train: string; format?: DataFormat; messagesField?: string; promptField?: string } }): Promise<boolean> {
  const format = cfg.data.format ?? 'jsonl';
  if (format === 'images') return false;
  try {
    const first = (await readRowsAsync(format, resolve(runDir, cfg.data.train)))[0];
    return first !== undefined && ((cfg.data.messagesField ?? 'messages') in first.fields || Array.isArray(first.fields[cfg.data.promptField ?? 'prompt']));
  } catch {
    return false; // a moved or unreadable file: not chat
  }
}

/**
 * A prompt as a run with `data.promptTemplate` saw its prompts: in the template's first field,
 * the others empty (an Alpaca run gets "### Instruction:\n<prompt>\n\n### Input:\n\n…").
 */
export function templatedPrompt(template: string | undefined, prompt: string): string {
  const parts = template === undefined ? undefined : parsePromptTemplate(template);
  if (!parts || typeof parts === 'string') return prompt;
  const first = parts.find((x): x is { field: string } => 'field' in x)!.field;
  return renderPromptTemplate(parts, (field) => (field === first ? prompt : ''));
}

/** The ids the model is given: the prompt, or the prompt as a user turn of the chat template. */
function promptIds(tok: DataTokenizer, prompt: string, chat: boolean): { ids: number[]; input: string } {
  if (!chat) return { ids: tok.encode(prompt, true), input: prompt };
  const input = tok.chatTemplate().render([{ role: 'user', content: prompt }], true);
  return { ids: tok.encode(input, false), input };
}

export async function runGenerate(p: GenerateJobParams, ctx: JobContext): Promise<JobResult & { kind: 'generate' }> {
  if ((p.run === undefined) === (p.model === undefined)) throw new InputError('', 'run', 'give a run folder, or a model folder (with an adapter)');
  if (p.run !== undefined && p.adapter !== undefined) throw new InputError('', 'adapter', 'a run brings its own adapter');
  const o = {
    maxNewTokens: p.maxNewTokens ?? GENERATE_DEFAULTS.maxNewTokens,
    temperature: p.temperature ?? GENERATE_DEFAULTS.temperature,
    topP: p.topP ?? GENERATE_DEFAULTS.topP,
    topK: p.topK ?? GENERATE_DEFAULTS.topK,
    repetitionPenalty: p.repetitionPenalty ?? GENERATE_DEFAULTS.repetitionPenalty,
    seed: p.seed ?? GENERATE_DEFAULTS.seed,
  };
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) throw new InputError('', 'maxNewTokens', `must be an integer ≥ 1, got ${o.maxNewTokens}`);
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) throw new InputError('', 'temperature', `must be a number ≥ 0, got ${o.temperature}`);
  if (!(o.topP > 0 && o.topP <= 1)) throw new InputError('', 'topP', `must be in (0, 1], got ${o.topP}`);
  if (!Number.isInteger(o.topK) || o.topK < 0) throw new InputError('', 'topK', `must be an integer ≥ 0, got ${o.topK}`);
  if (!(o.repetitionPenalty > 0) || !Number.isFinite(o.repetitionPenalty)) throw new InputError('', 'repetitionPenalty', `must be a number > 0 (1: none), got ${o.repetitionPenalty}`);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed >= 2 ** 32) throw new InputError('', 'seed', `must be an integer in [0, 2³²), got ${o.seed}`);
  if (p.compareBase && p.run === undefined && p.adapter === undefined) throw new InputError('', 'compareBase', 'compares a fine-tune with its base: give a run, or an adapter');
  const cfg = p.run !== undefined ? await readRunConfig(p.run) : undefined;
  const modelDir = cfg ? cfg.modelDir : modelFolder(p.model!);
  const adapterDir = p.run ?? p.adapter;
  const model = await Model.load(modelDir, await baseLoadOptions(adapterDir));
  try {
    if (model.arch.task === 'image-classification') throw new InputError(modelDir, 'config.json', `${model.config.modelType} here is an image classifier: a text prompt means nothing to it (evaluate scores it on an image folder)`);
    const tok = loadTokenizer(modelDir);
    const mismatch = tokenizerMismatch(tok, model.config.vocabSize);
    if (mismatch) ctx.log('warn', mismatch);
    if (model.arch.task === 'sequence-classification') return { kind: 'generate', result: await classify(model, tok, p, cfg, adapterDir, ctx) };
    const chat = p.chat ?? (cfg !== undefined && p.run !== undefined && (await runUsesChat(p.run, cfg)));
    const { ids, input } = promptIds(tok, chat ? p.prompt : templatedPrompt(cfg?.data.promptTemplate, p.prompt), chat);
    if (ids.length === 0) throw new InputError('', 'prompt', 'is empty once tokenized');
    const bad = ids.find((id) => id < 0 || id >= model.config.vocabSize);
    if (bad !== undefined)
      throw new InputError('', 'prompt', `token id ${bad} is outside the model's vocabulary of ${model.config.vocabSize} (the ${tok.name} tokenizer has ${tok.vocabSize} ids${tok.name === 'byte-level' ? '; non-ASCII bytes need a model with 256+ tokens' : ''})`);
    // Dynamic NTK RoPE has no limit: the whole sequence stays in the window, as transformers keeps it.
    const window = positionLimit(model.config) ?? Number.MAX_SAFE_INTEGER;
    const eosId = tok.eosId !== undefined && tok.eosId < model.config.vocabSize ? tok.eosId : undefined;
    const { stopText, stopIds: chatStopIds } = chat ? chatStops(tok) : { stopIds: [] };
    const stopIds = [...generationStopIds(modelDir), ...chatStopIds];
    const jobs: { label: string; adapter: boolean }[] = adapterDir ? [{ label: 'fine-tuned', adapter: true }, ...(p.compareBase ? [{ label: 'base', adapter: false }] : [])] : [{ label: 'model', adapter: false }];
    const total = jobs.length * o.maxNewTokens;
    const outputs: GenerateOutput[] = [];
    for (const [k, job] of jobs.entries()) {
      const adapter = job.adapter ? await loadAnyAdapter(model, adapterDir!) : undefined;
      try {
        const weights = adapter ? { hooks: adapter.hooks, overrides: adapter.overrides() } : undefined;
        const r = await generateIds(
          model,
          weights,
          ids,
          { ...o, window, stopIds, ...(eosId !== undefined ? { eosId } : {}) },
          ctx.signal,
          (n) => ctx.progress({ done: k * o.maxNewTokens + n, total, message: `${job.label}: ${n} tokens` }),
          stopText,
        );
        outputs.push({ label: job.label, text: tok.decode(r.ids), tokens: r.ids.length, stop: r.stop });
      } finally {
        adapter?.dispose();
      }
    }
    const result: GenerateResult = { prompt: p.prompt, input, chat, outputs };
    return { kind: 'generate', result };
  } finally {
    model.dispose();
  }
}

/**
 * A text classifier's classes for the prompt: the run's class names (its data's, else config.json's
 * id2label); a regression model's value.
 */
async function classify(model: Model, tok: DataTokenizer, p: GenerateJobParams, cfg: RunConfig | undefined, adapterDir: string | undefined, ctx: JobContext): Promise<GenerateResult> {
  const info = modelDataInfo(model);
  const regression = info.problemType === 'regression';
  const multiLabel = info.problemType === 'multi_label_classification';
  if (!adapterDir && model.freshHeads.length) ctx.log('warn', `${model.freshHeads.join(', ')}: not in the checkpoint, so untrained (random): try a run or an adapter that trained the head`);
  const names = regression ? [] : await classNames(model, cfg);
  const pairField = cfg?.data.textPairField;
  if (pairField && p.pair === undefined) ctx.log('warn', `this run was trained on text pairs ("${cfg!.data.textField}" with "${pairField}"): give the second text too (--pair), or it is scored on the first alone`);
  const enc = tok.encodeForClassifier(p.prompt, p.pair, cfg?.data.maxLength ?? info.maxPositions ?? 512);
  const ids = enc.ids;
  // Token types only where the model embeds them, as the training data reads them.
  const types = enc.typeIds && (info.typeVocabSize ?? 0) > 1 ? enc.typeIds : undefined;
  const jobs = adapterDir ? [{ label: 'fine-tuned', adapter: true }, ...(p.compareBase ? [{ label: 'base', adapter: false }] : [])] : [{ label: 'model', adapter: false }];
  const outputs: GenerateOutput[] = [];
  // Read back asynchronously: WebGPU in Node cannot read a tensor synchronously.
  const scores = async (weights: Weights) => {
    const out = tf.tidy(() => {
      const inputs = { inputIds: tf.tensor2d([ids], [1, ids.length], 'int32'), ...(types ? { tokenTypeIds: tf.tensor2d([types], [1, ids.length], 'int32') } : {}) };
      const logits = tf.reshape(model.forward(inputs, weights), [-1]);
      return regression ? logits : multiLabel ? tf.sigmoid(logits) : tf.softmax(logits);
    });
    const values = (await out.data()) as Float32Array;
    out.dispose();
    return values;
  };
  for (const [k, job] of jobs.entries()) {
    throwIfCancelled(ctx.signal);
    let probs: Float32Array;
    if (job.adapter) {
      const adapter = await loadAnyAdapter(model, adapterDir!);
      try {
        probs = await scores({ hooks: adapter.hooks, overrides: adapter.overrides() });
      } finally {
        adapter.dispose();
      }
    } else {
      // The base has no head of its own: it is scored with the run's (as evaluate does).
      const head = await headOf(model, adapterDir);
      try {
        probs = await scores({ overrides: head });
      } finally {
        tf.dispose([...head.values()]);
      }
    }
    if (regression) outputs.push({ label: job.label, text: probs[0]!.toFixed(4), tokens: 0, value: probs[0]! });
    else {
      const classes = Array.from(probs, (pr, i) => ({ name: names[i] ?? `class ${i}`, p: pr })).sort((a, b) => b.p - a.p);
      // Multi-label: every class past 0.5 (sigmoids, not a distribution); else the most probable one.
      const text = multiLabel ? classes.filter((c) => c.p > 0.5).map((c) => c.name).join(', ') || '(none)' : classes[0]!.name;
      outputs.push({ label: job.label, text, tokens: 0, classes });
    }
    ctx.progress({ done: k + 1, total: jobs.length, message: job.label });
  }
  return { prompt: p.prompt, ...(p.pair !== undefined ? { pair: p.pair } : {}), input: p.prompt, chat: false, outputs };
}

/** The run's head tensors (for scoring its base, which has none of its own): a kept copy, or nothing. */
async function headOf(model: Model, adapterDir: string | undefined): Promise<Map<string, tf.Tensor>> {
  if (!adapterDir) return new Map();
  const a = await loadAnyAdapter(model, adapterDir);
  try {
    const heads = model.paramInfo().filter((x) => x.type === 'head').map((x) => x.name);
    const o = a.overrides();
    return new Map(heads.filter((n) => o.has(n)).map((n) => [n, tf.keep(tf.clone(o.get(n)!))]));
  } finally {
    a.dispose();
  }
}

/** Class names by id: the run's training data's (names it mapped), else config.json's id2label when not LABEL_k. */
async function classNames(model: Model, cfg: RunConfig | undefined): Promise<string[]> {
  if (cfg) {
    try {
      const names = (await loadAnalysisData(model, cfg.data)).data.labelNames;
      if (names) return names;
    } catch {
      /* the training file moved: fall back to the config's names */
    }
  }
  const l2i = modelDataInfo(model).label2id;
  const out: string[] = [];
  if (l2i && !Object.keys(l2i).every((k) => /^LABEL_\d+$/.test(k))) for (const [name, id] of Object.entries(l2i)) out[id] = name;
  return out;
}

// ---- command line ------------------------------------------------------------------------------

export const GENERATE_USAGE =
  'generate (--run RUN_DIR | --model DIR [--adapter DIR]) --prompt TEXT [--pair TEXT] [--chat | --no-chat] [--max-new-tokens 64] [--temperature 0] [--top-p 1] [--top-k 50] [--repetition-penalty 1] [--seed 0] [--compare-base]';

export async function generateCommand(v: Record<string, string | boolean | string[] | undefined>): Promise<void> {
  const run = str(v, 'run', false);
  const model = str(v, 'model', false);
  if ((run === undefined) === (model === undefined)) throw new AnalysisUsageError('give --run RUN_DIR, or --model DIR (with --adapter DIR)');
  if (v.prompt === '') throw new AnalysisUsageError('--prompt is empty');
  const p: GenerateJobParams = { kind: 'generate', prompt: str(v, 'prompt')!, ...(run ? { run } : { model: model! }) };
  const adapter = str(v, 'adapter', false);
  if (adapter) p.adapter = adapter;
  const pair = str(v, 'pair', false);
  if (pair !== undefined) p.pair = pair;
  if (v.chat === true && v['no-chat'] === true) throw new AnalysisUsageError('--chat and --no-chat together');
  if (v.chat === true) p.chat = true;
  if (v['no-chat'] === true) p.chat = false;
  const maxNewTokens = int(v, 'max-new-tokens', 1);
  if (maxNewTokens !== undefined) p.maxNewTokens = maxNewTokens;
  const temperature = num(v, 'temperature');
  if (temperature !== undefined) p.temperature = temperature;
  const topP = num(v, 'top-p');
  if (topP !== undefined) p.topP = topP;
  const topK = int(v, 'top-k', 0);
  if (topK !== undefined) p.topK = topK;
  const repetitionPenalty = num(v, 'repetition-penalty');
  if (repetitionPenalty !== undefined) p.repetitionPenalty = repetitionPenalty;
  const seed = int(v, 'seed', 0);
  if (seed !== undefined) p.seed = seed;
  if (v['compare-base'] === true) p.compareBase = true;
  const { result } = await runCli(v.verbose === true, (ctx) => runGenerate(p, ctx));
  const many = result.outputs.length > 1;
  for (const o of result.outputs) {
    if (o.value !== undefined) {
      process.stdout.write(`${many ? `${o.label}: ` : ''}${o.text}\n`);
      continue;
    }
    if (o.classes) {
      process.stdout.write(`${many ? `${o.label}: ` : ''}${o.classes.slice(0, 5).map((c) => `${c.name} ${c.p.toFixed(3)}`).join(', ')}\n`);
      continue;
    }
    process.stdout.write(`${many ? `--- ${o.label} (${o.tokens} tokens, ${o.stop === 'eos' ? 'ended' : 'limit'})\n` : ''}${o.text}\n`);
  }
}
