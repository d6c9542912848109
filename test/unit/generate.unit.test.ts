/**
 * Text generation: the sampler (greedy, temperature, nucleus) against its distribution, the
 * generation loop against a step-by-step argmax, EOS and the position window, and `generate` jobs
 * on a run (base beside fine-tuned, chat prompts through the template) with their errors.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { initBackend } from '../../sidecar/src/backend';
import { loadAnyAdapter } from '../../sidecar/src/analysis/finetuned';
import { loadTokenizer } from '../../sidecar/src/data/tokenizer';
import { InputError } from '../../sidecar/src/errors';
import { cliContext } from '../../sidecar/src/jobs/context';
import { jobParamsProblem } from '../../sidecar/src/jobs/manager';
import { runJob } from '../../sidecar/src/jobs/runners';
import { KvCache } from '../../sidecar/src/models/kv-cache';
import { Model } from '../../sidecar/src/models/model';
import { perturb } from '../helpers/adapters';
import { createAdapter } from '../../sidecar/src/adapters';
import { assertClose } from '../helpers/numeric';
import { loadSpec, runConfig } from '../../sidecar/src/spec/load';
import { applyRepetitionPenalty, chatStops, generateIds, generationStopIds, lastLogits, runGenerate, runUsesChat, sampleNext, templatedPrompt } from '../../sidecar/src/tasks/generate';
import { byteLevelBpeTokenizer } from '../helpers/tokenizers';
import { main } from '../../sidecar/src/cli';
import { Rng } from '../../sidecar/src/train/rng';
import { runTraining } from '../../sidecar/src/train/trainer';

const REPO = resolve(__dirname, '..', '..');
const root = mkdtempSync(join(tmpdir(), 'peft-lab-generate-'));
after(() => rmSync(root, { recursive: true, force: true }));

describe('sampling', () => {
  it('temperature 0 is the argmax; else softmax(logits / T) over the nucleus, seeded', () => {
    assert.equal(sampleNext([0.1, 2, -1, 1.9], 0, 1, new Rng(1)), 1);
    // Probabilities 0.5, 0.3, 0.15, 0.05 at T = 1.
    const logits = [0.5, 0.3, 0.15, 0.05].map(Math.log);
    const counts = (topP: number, T = 1, topK = 0) => {
      const rng = new Rng(7);
      const c = [0, 0, 0, 0];
      for (let i = 0; i < 20000; i++) c[sampleNext(logits, T, topP, rng, topK)]!++;
      return c.map((x) => x / 20000);
    };
    counts(1).forEach((f, i) => assert.ok(Math.abs(f - [0.5, 0.3, 0.15, 0.05][i]!) < 0.012, `T=1 token ${i}: ${f}`));
    // top-p 0.8: the nucleus is {0, 1} (0.5 + 0.3), renormalised to 0.625 / 0.375.
    const nucleus = counts(0.8);
    assert.deepEqual(nucleus.slice(2), [0, 0]);
    assert.ok(Math.abs(nucleus[0]! - 0.625) < 0.012, `top-p: ${nucleus}`);
    // T = 2 flattens: p ∝ √p₀.
    const flat = [0.5, 0.3, 0.15, 0.05].map(Math.sqrt);
    const z = flat.reduce((a, b) => a + b, 0);
    counts(1, 2).forEach((f, i) => assert.ok(Math.abs(f - flat[i]! / z) < 0.012, `T=2 token ${i}: ${f}`));
    // top-k 2 keeps {0, 1}; top-k 3 then top-p 0.8 takes the nucleus of the renormalised three
    // (0.526, 0.316, 0.158): {0, 1} again, where top-p 0.8 alone over all four also stops at 1.
    const k2 = counts(1, 1, 2);
    assert.deepEqual(k2.slice(2), [0, 0]);
    assert.ok(Math.abs(k2[0]! - 0.625) < 0.012, `top-k 2: ${k2}`);
    assert.deepEqual(counts(0.8, 1, 3).slice(2), [0, 0]);
    assert.deepEqual(counts(1, 1, 1), [1, 0, 0, 0], 'top-k 1 is greedy');
    assert.ok(counts(1, 1, 3)[2]! > 0.1 && counts(1, 1, 3)[3] === 0, 'top-k 3 drops the 4th only');
    const draw = (seed: number) => Array.from({ length: 8 }, ((r) => () => sampleNext(logits, 1, 1, r))(new Rng(seed)));
    assert.deepEqual(draw(3), draw(3), 'seeded');
  });
});

describe('the last position only', () => {
  before(async () => {
    await initBackend('wasm', () => undefined);
  });

  it('a 40-token prompt: lastLogits is the last row of the full logits (GPT-2, Llama, with a LoRA), and greedy tokens are the full logits\' argmax step by step; no tensor left', async () => {
    for (const name of ['gpt2-tiny', 'llama-tiny']) {
      const model = await Model.load(join(REPO, '..', 'shared', 'fixtures', 'hf', name));
      const adapter = await createAdapter(model, { kind: 'lora', r: 4, alpha: 8 }, { seed: 1 });
      perturb(adapter, 0.05, 3);
      const weights = { hooks: adapter.hooks, overrides: adapter.overrides() };
      const lastOfForward = (seq: number[]) =>
        tf.tidy(() => tf.reshape(tf.slice(model.forward({ inputIds: tf.tensor2d([seq], [1, seq.length], 'int32') }, weights), [0, seq.length - 1, 0], [1, 1, -1]), [-1]).dataSync() as Float32Array);
      try {
        const prompt = Array.from({ length: 40 }, (_, i) => (i * 37 + 5) % model.config.vocabSize);
        const before = tf.memory().numTensors;
        const last = tf.tidy(() => lastLogits(model, { inputIds: tf.tensor2d([prompt], [1, prompt.length], 'int32') }, weights).dataSync() as Float32Array);
        assert.equal(last.length, model.config.vocabSize);
        assertClose(`${name} last logits`, last, lastOfForward(prompt), 1e-5);
        const got = await generateIds(model, weights, prompt, { maxNewTokens: 8, temperature: 0, topP: 1, seed: 0, window: 64 });
        assert.equal(tf.memory().numTensors, before, `${name}: no tensor left behind`);
        const seq = [...prompt];
        for (let i = 0; i < 8; i++) {
          const row = lastOfForward(seq);
          seq.push(row.indexOf(Math.max(...row)));
        }
        assert.deepEqual(got.ids, seq.slice(prompt.length), `${name}: greedy tokens`);
      } finally {
        adapter.dispose();
        model.dispose();
      }
    }
  });
});

describe('generation', () => {
  let runDir = '';
  let chatRun = '';
  before(async () => {
    await initBackend('wasm', () => undefined);
    cpSync(join(REPO, 'media/models/tiny-gpt'), join(root, 'tiny-gpt'), { recursive: true });
    cpSync(join(REPO, 'media/data/addition/train.jsonl'), join(root, 'add.jsonl'));
    const chat = readFileSync(join(root, 'add.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .slice(0, 64)
      .map((l) => JSON.parse(l) as { prompt: string; completion: string })
      .map((r) => JSON.stringify({ messages: [{ role: 'user', content: r.prompt }, { role: 'assistant', content: r.completion.trim() }] }));
    writeFileSync(join(root, 'chat.jsonl'), `${chat.join('\n')}\n`);
    const train = async (name: string, data: string) => {
      const spec = join(root, `${name}.peft.json`);
      writeFileSync(spec, JSON.stringify({ model: 'tiny-gpt', data: { train: data, maxLength: 96 }, adapter: { kind: 'lora', r: 4, alpha: 8 }, optimizer: { lr: 0.02 }, batchSize: 8, steps: 4, logEvery: 4 }));
      const dir = join(root, 'runs', name);
      await runTraining(runConfig(loadSpec(spec)), { runDir: dir, ctx: cliContext() });
      return dir;
    };
    runDir = await train('add', 'add.jsonl');
    chatRun = await train('chat', 'chat.jsonl');
  });

  it('greedy text is the argmax of each step; EOS stops it; the window keeps the last positions', async () => {
    const model = await Model.load(join(root, 'tiny-gpt'));
    try {
      const prompt = [49, 50, 43, 55, 61]; // "12+7="
      const before = tf.memory().numTensors;
      const got = await generateIds(model, undefined, prompt, { maxNewTokens: 6, temperature: 0, topP: 1, seed: 0, window: 64 });
      assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
      assert.equal(got.stop, 'length');
      // Step by step: the argmax of the last position over the whole sequence.
      const seq = [...prompt];
      for (let i = 0; i < 6; i++) {
        const row = tf.tidy(() => tf.argMax(tf.squeeze(tf.slice(model.forward({ inputIds: tf.tensor2d([seq], [1, seq.length], 'int32') }), [0, seq.length - 1, 0], [1, 1, -1]))).dataSync()[0]!);
        seq.push(row);
      }
      assert.deepEqual(got.ids, seq.slice(prompt.length));
      // EOS: the first new token not generated before it.
      const k = got.ids.findIndex((id, i) => i > 0 && !got.ids.slice(0, i).includes(id));
      assert.ok(k > 0, `a token that is new at its step: ${got.ids}`);
      const eos = await generateIds(model, undefined, prompt, { maxNewTokens: 6, temperature: 0, topP: 1, seed: 0, window: 64, eosId: got.ids[k]! });
      assert.deepEqual(eos, { ids: got.ids.slice(0, k), stop: 'eos' });
      // Stop text: the output ends before it (byte-level: one token per ASCII character).
      const tok = loadTokenizer(join(root, 'tiny-gpt'));
      const text = tok.decode(got.ids);
      const stopAt = text.length > 3 ? 3 : 1;
      const stopped = await generateIds(model, undefined, prompt, { maxNewTokens: 6, temperature: 0, topP: 1, seed: 0, window: 64 }, undefined, undefined, { text: text.slice(stopAt, stopAt + 2), decode: (x) => tok.decode(x) });
      assert.equal(stopped.stop, 'eos');
      assert.equal(tok.decode(stopped.ids), text.slice(0, text.indexOf(text.slice(stopAt, stopAt + 2))));
      // generation_config.json's eos_token_id (a list) stops it too.
      const dir = join(root, 'tiny-gpt-gencfg');
      cpSync(join(root, 'tiny-gpt'), dir, { recursive: true });
      writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [999, got.ids[k]!] }));
      assert.deepEqual(generationStopIds(dir), [999, got.ids[k]!]);
      assert.deepEqual(generationStopIds(join(root, 'tiny-gpt')), []);
      // A window of 3 sees only "7=" + the new tokens: different text than the full prompt gives (here).
      const short = await generateIds(model, undefined, prompt, { maxNewTokens: 6, temperature: 0, topP: 1, seed: 0, window: 3 });
      const tail = await generateIds(model, undefined, prompt.slice(-3), { maxNewTokens: 1, temperature: 0, topP: 1, seed: 0, window: 64 });
      assert.equal(short.ids[0], tail.ids[0]);
    } finally {
      model.dispose();
    }
  });

  it('repetition penalty as transformers’ RepetitionPenaltyLogitsProcessor: seen tokens’ logits divided (positive) or multiplied (negative); greedy steps take the penalised argmax', async () => {
    const logits = Float32Array.from([2, -1, 0.5, 3]);
    applyRepetitionPenalty(logits, [0, 1, 1], 2);
    assert.deepEqual(Array.from(logits), [1, -2, 0.5, 3]);
    const model = await Model.load(join(root, 'tiny-gpt'));
    try {
      const prompt = [49, 50, 43, 55, 61];
      const plain = await generateIds(model, undefined, prompt, { maxNewTokens: 8, temperature: 0, topP: 1, seed: 0, window: 64 });
      const penalised = await generateIds(model, undefined, prompt, { maxNewTokens: 8, temperature: 0, topP: 1, seed: 0, window: 64, repetitionPenalty: 1e6 });
      // Step by step: the argmax after the penalty over the sequence so far (prompt included).
      const seq = [...prompt];
      for (let i = 0; i < 8; i++) {
        const row = Float32Array.from(tf.tidy(() => tf.squeeze(tf.slice(model.forward({ inputIds: tf.tensor2d([seq], [1, seq.length], 'int32') }), [0, seq.length - 1, 0], [1, 1, -1])).dataSync() as Float32Array));
        applyRepetitionPenalty(row, seq, 1e6);
        seq.push(row.indexOf(Math.max(...row)));
      }
      assert.deepEqual(penalised.ids, seq.slice(prompt.length));
      assert.notDeepEqual(penalised.ids, plain.ids, 'the penalty changes what the greedy steps pick');
      await assert.rejects(runGenerate({ kind: 'generate', model: join(root, 'tiny-gpt'), prompt: 'x', repetitionPenalty: 0 }, cliContext()), /repetitionPenalty.*must be a number > 0/);
    } finally {
      model.dispose();
    }
  });

  it('the key/value cache gives the logits of the whole sequence, step by step (GPT-2; Llama with grouped KV heads and RoPE; with a LoRA)', async () => {
    for (const name of ['gpt2-tiny', 'llama-tiny']) {
      const model = await Model.load(join(REPO, '..', 'shared', 'fixtures', 'hf', name));
      const adapter = await createAdapter(model, { kind: 'lora', r: 4, alpha: 8 }, { seed: 1 });
      // A LoRA off its init (B ≠ 0), so the hooks change the keys and values the cache keeps.
      perturb(adapter, 0.05, 3);
      const weights = { hooks: adapter.hooks, overrides: adapter.overrides() };
      try {
        const seq = [5, 17, 3, 99, 42, 7];
        const before = tf.memory().numTensors;
        const cache = new KvCache();
        const stepLogits: Float32Array[] = [];
        for (const [i, feed] of [seq.slice(0, 3), [seq[3]!], [seq[4]!], seq.slice(5)].entries()) {
          stepLogits.push(tf.tidy(() => model.forward({ inputIds: tf.tensor2d([feed], [1, feed.length], 'int32'), cache }, weights).dataSync() as Float32Array));
          assert.equal(cache.past, [3, 4, 5, 6][i]);
        }
        cache.dispose();
        assert.equal(tf.memory().numTensors, before, `${name}: the cache leaves nothing behind`);
        const full = tf.tidy(() => model.forward({ inputIds: tf.tensor2d([seq], [1, seq.length], 'int32') }, weights).dataSync() as Float32Array);
        const vocab = full.length / seq.length;
        const cached = Float32Array.from([...stepLogits.flatMap((l) => Array.from(l))]);
        assertClose(`${name} logits`, cached, full, 1e-4);
        assert.equal(cached.length, seq.length * vocab);
        // Generation with and without the cache: the same tokens, past the window too (it reruns the last window).
        const a = await generateIds(model, weights, seq, { maxNewTokens: 70, temperature: 0, topP: 1, seed: 0, window: 64 });
        const b = await generateIds(model, weights, seq, { maxNewTokens: 70, temperature: 0, topP: 1, seed: 0, window: 64, cache: false });
        assert.deepEqual(a, b, `${name}: cached generation`);
      } finally {
        adapter.dispose();
        model.dispose();
      }
    }
  });

  it('a run: the fine-tuned text (its adapter) beside the base text, each as generated alone', async () => {
    const r = await runJob({ kind: 'generate', run: runDir, prompt: '12+7=', maxNewTokens: 5, compareBase: true }, cliContext());
    assert.ok(r.kind === 'generate');
    const { result } = r;
    assert.equal(result.chat, false);
    assert.deepEqual(result.outputs.map((o) => o.label), ['fine-tuned', 'base']);
    const base = await runGenerate({ kind: 'generate', model: join(root, 'tiny-gpt'), prompt: '12+7=', maxNewTokens: 5 }, cliContext());
    assert.equal(result.outputs[1]!.text, base.result.outputs[0]!.text);
    const model = await Model.load(join(root, 'tiny-gpt'));
    const adapter = await loadAnyAdapter(model, runDir);
    try {
      const tok = loadTokenizer(join(root, 'tiny-gpt'));
      const ids = await generateIds(model, { hooks: adapter.hooks, overrides: adapter.overrides() }, tok.encode('12+7=', true), { maxNewTokens: 5, temperature: 0, topP: 1, seed: 0, window: 64, eosId: tok.eosId! });
      assert.equal(result.outputs[0]!.text, tok.decode(ids.ids));
    } finally {
      adapter.dispose();
      model.dispose();
    }
  });

  it('a run trained on chat rows gets the prompt as a user turn of the chat template', async () => {
    assert.equal(await runUsesChat(chatRun, { data: { train: join(root, 'chat.jsonl') } }), true);
    assert.equal(await runUsesChat(runDir, { data: { train: join(root, 'add.jsonl') } }), false);
    // CSV chat rows (the list as JSON in the cell), and JSONL that starts with a byte-order mark.
    writeFileSync(join(root, 'chat.csv'), `messages\n"${JSON.stringify([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }]).replace(/"/g, '""')}"\n`);
    assert.equal(await runUsesChat(chatRun, { data: { train: join(root, 'chat.csv'), format: 'csv' } }), true);
    writeFileSync(join(root, 'bom.jsonl'), `\uFEFF${JSON.stringify({ messages: [] })}\n`);
    assert.equal(await runUsesChat(chatRun, { data: { train: join(root, 'bom.jsonl') } }), true);
    assert.equal(await runUsesChat(chatRun, { data: { train: join(root, 'gone.jsonl') } }), false);
    writeFileSync(join(root, 'conv-pc.jsonl'), `${JSON.stringify({ prompt: [{ role: 'user', content: 'hi' }], completion: [{ role: 'assistant', content: 'yo' }] })}\n`);
    assert.equal(await runUsesChat(chatRun, { data: { train: join(root, 'conv-pc.jsonl') } }), true, "TRL's conversational prompt + completion");
    const r = await runGenerate({ kind: 'generate', run: chatRun, prompt: '3+4', maxNewTokens: 3 }, cliContext());
    assert.equal(r.result.chat, true);
    assert.equal(r.result.input, '<|im_start|>user\n3+4<|im_end|>\n<|im_start|>assistant\n');
    const plain = await runGenerate({ kind: 'generate', run: chatRun, prompt: '3+4', maxNewTokens: 3, chat: false }, cliContext());
    assert.equal(plain.result.input, '3+4');
  });

  it("a run trained with data.promptTemplate gets the prompt in the template's first field, the others empty", async () => {
    const alpaca = '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n';
    assert.equal(templatedPrompt(alpaca, 'Add 2 and 3.'), '### Instruction:\nAdd 2 and 3.\n\n### Input:\n\n\n### Response:\n');
    assert.equal(templatedPrompt(undefined, 'as is'), 'as is');
    // The run's own template is used (a copy of a run, its spec.json given one).
    const templated = join(root, 'runs', 'templated');
    cpSync(runDir, templated, { recursive: true });
    const spec = JSON.parse(readFileSync(join(templated, 'spec.json'), 'utf8')) as { data: Record<string, unknown> };
    spec.data.promptTemplate = 'Q: {q}\nA:';
    writeFileSync(join(templated, 'spec.json'), JSON.stringify(spec));
    const r = await runGenerate({ kind: 'generate', run: templated, prompt: '2+2', maxNewTokens: 1 }, cliContext());
    assert.equal(r.result.input, 'Q: 2+2\nA:');
  });

  it('a chat reply stops at the stop text, and at its id where it is one special token (decoding skips it)', () => {
    const tok = loadTokenizer(byteLevelBpeTokenizer(root, 'imend-model', [], ['<|im_end|>'])); // no template: ChatML
    const { stopText, stopIds } = chatStops(tok);
    assert.equal(stopText?.text, '<|im_end|>');
    assert.deepEqual(stopIds, tok.encode('<|im_end|>', false));
    assert.equal(stopIds.length, 1);
    assert.equal(tok.decode([...tok.encode('4', false), ...stopIds]), '4', 'the text alone would never show: decoding drops the special token');
    // The byte-level tokenizer spells it out: the text is what matches there.
    const bytes = chatStops(loadTokenizer(join(root, 'tiny-gpt')));
    assert.deepEqual([bytes.stopText?.text, bytes.stopIds], ['<|im_end|>', []]);
  });

  it("a text classifier's run gives its classes by the run's names, fine-tuned and base (with the run's head)", async () => {
    cpSync(join(REPO, '..', 'shared', 'fixtures', 'hf', 'bert-cls-tiny'), join(root, 'bert-cls-tiny'), { recursive: true });
    const rows = Array.from({ length: 24 }, (_, i) => JSON.stringify({ text: i % 2 ? 'good fun film' : 'bad dull film', label: i % 2 ? 'pos' : 'neg' }));
    writeFileSync(join(root, 'cls.jsonl'), `${rows.join('\n')}\n`);
    const spec = join(root, 'cls.peft.json');
    writeFileSync(spec, JSON.stringify({ model: 'bert-cls-tiny', data: { train: 'cls.jsonl', maxLength: 16 }, adapter: { kind: 'lora', r: 2, alpha: 4 }, optimizer: { lr: 0.05 }, batchSize: 8, steps: 3, logEvery: 3 }));
    const dir = join(root, 'runs', 'cls');
    await runTraining(runConfig(loadSpec(spec)), { runDir: dir, ctx: cliContext() });
    const r = await runGenerate({ kind: 'generate', run: dir, prompt: 'good fun film', compareBase: true }, cliContext());
    const [tuned, base] = r.result.outputs;
    assert.deepEqual(r.result.outputs.map((o) => o.label), ['fine-tuned', 'base']);
    for (const o of [tuned!, base!]) {
      // The fixture's head has 3 classes; the data named 2 of them (sorted: neg 0, pos 1).
      assert.deepEqual(o.classes!.map((c) => c.name).sort(), ['class 2', 'neg', 'pos']);
      assert.ok(Math.abs(o.classes!.reduce((a, c) => a + c.p, 0) - 1) < 1e-6);
      assert.equal(o.text, o.classes![0]!.name);
    }
    // The fine-tuned probabilities are the softmax of the adapted model's logits (the run's class order: neg, pos).
    const model = await Model.load(join(root, 'bert-cls-tiny'));
    const adapter = await loadAnyAdapter(model, dir);
    try {
      const ids = loadTokenizer(join(root, 'bert-cls-tiny')).encode('good fun film', true);
      const p = tf.tidy(() => tf.softmax(tf.reshape(model.forward({ inputIds: tf.tensor2d([ids], [1, ids.length], 'int32') }, { hooks: adapter.hooks, overrides: adapter.overrides() }), [-1])).dataSync() as Float32Array);
      const byName = Object.fromEntries(tuned!.classes!.map((c) => [c.name, c.p]));
      assert.ok(Math.abs(byName.neg! - p[0]!) < 1e-6 && Math.abs(byName.pos! - p[1]!) < 1e-6, `${JSON.stringify(byName)} vs ${Array.from(p)}`);
    } finally {
      adapter.dispose();
      model.dispose();
    }
  });

  it('refuses what it cannot do, naming the parameter or the file', async () => {
    const fail = async (p: Parameters<typeof runGenerate>[0], where: string, msg: RegExp) =>
      assert.rejects(runGenerate(p, cliContext()), (e: unknown) => e instanceof InputError && e.where === where && msg.test(e.message));
    await fail({ kind: 'generate', prompt: 'x' }, 'run', /give a run folder, or a model folder/);
    await fail({ kind: 'generate', run: runDir, adapter: runDir, prompt: 'x' }, 'adapter', /brings its own adapter/);
    await fail({ kind: 'generate', run: runDir, prompt: 'x', topP: 0 }, 'topP', /\(0, 1\]/);
    await fail({ kind: 'generate', run: runDir, prompt: 'x', seed: 2 ** 32 }, 'seed', /\[0, 2³²\)/);
    await fail({ kind: 'generate', model: join(root, 'tiny-gpt'), prompt: 'x', compareBase: true }, 'compareBase', /give a run, or an adapter/);
    await fail({ kind: 'generate', model: join(REPO, '..', 'shared', 'fixtures', 'hf', 'llama-tiny'), prompt: 'é' }, 'prompt', /token id 195 is outside the model's vocabulary of 128 .*non-ASCII bytes need a model with 256\+ tokens/);
    // On the command line the place is the option typed.
    const errs: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((t: string) => (errs.push(String(t)), true)) as typeof process.stderr.write;
    try {
      assert.equal(await main(['generate', '--backend', 'wasm', '--run', runDir, '--prompt', 'x', '--top-p', '0']), 2);
      assert.equal(await main(['generate', '--backend', 'wasm', '--run', runDir, '--prompt', '']), 2);
    } finally {
      process.stderr.write = write;
    }
    assert.match(errs.join(''), /peft-lab generate: --top-p: must be in \(0, 1\], got 0/);
    assert.match(errs.join(''), /peft-lab generate: --prompt is empty/);
    await fail({ kind: 'generate', model: join(REPO, '..', 'shared', 'fixtures', 'hf', 'vit-tiny'), prompt: 'x' }, 'config.json', /an image classifier: a text prompt means nothing to it/);
    assert.equal(jobParamsProblem({ kind: 'generate', run: 'r', prompt: 'p', maxNewTokens: 3 }), undefined);
    assert.match(jobParamsProblem({ kind: 'generate', run: 'r', model: 'm', prompt: 'p' })!, /exactly one of 'run' and 'model'/);
    assert.match(jobParamsProblem({ kind: 'generate', run: 'r', prompt: 'p', temperature: -1 })!, /'temperature' must be a number ≥ 0/);
    assert.match(jobParamsProblem({ kind: 'generate', run: 'r', prompt: 'p', topK: 2.5 })!, /'topK' must be an integer ≥ 0/);
  });
});
