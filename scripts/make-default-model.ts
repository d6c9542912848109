/**
 * Pretrains the bundled model, media/models/tiny-gpt: a GPT-2-shaped byte-level causal LM (vocab
 * 257 = 256 bytes + <|endoftext|>, learned positions, tied head, gelu_new), on the corpus in
 * media/data/pretrain.jsonl (built by scripts/make-tasks.ts), with the project's own Model,
 * gradients and AdamW on the wasm backend.
 *
 * Recipe: random 256-byte windows of the corpus (documents joined by <|endoftext|>), AdamW
 * (β = 0.9/0.95, weight decay on matrices and embeddings only), global-norm gradient clipping,
 * linear warmup then cosine decay to a floor. Every `--eval-every` steps it measures the loss on
 * media/data/heldout.jsonl (text never pretrained on) and writes a checkpoint, so an interrupted
 * run still leaves a usable model; the last write adds the final numbers to README.md.
 *
 * Usage: node --import tsx scripts/make-default-model.ts [--steps 1400] [--out media/models/tiny-gpt] ...
 * (every field of DEFAULTS is an option: --d 128 --layers 4 --lr 3e-3 ...). Deterministic for a
 * given seed and backend. Logs one JSON line per `--log-every` steps on stdout. About 27 minutes
 * on one idle CPU core; run it in the background (nohup ... > pretrain.log &).
 * `--readme-only` rewrites README.md of the output folder from its training.json, no training.
 */
import * as tf from '@tensorflow/tfjs-core';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '../sidecar/src/backend';
import { byteTokenizer } from '../sidecar/src/data/byte-tokenizer';
import { f32, writeSafetensors, type HostTensor } from '../sidecar/src/io/safetensors';
import { gpt2Config, type Gpt2Config } from '../sidecar/src/models/config';
import { randomModel } from '../sidecar/src/models/init';
import { Model } from '../sidecar/src/models/model';
import { AdamW } from '../sidecar/src/train/adamw';
import { mulberry32 } from './make-tasks';

const DEFAULTS = {
  d: 128,
  layers: 4,
  heads: 4,
  positions: 256,
  seq: 256,
  batch: 8,
  steps: 1400,
  lr: 3e-3,
  minLrRatio: 0.1,
  warmup: 100,
  weightDecay: 0.1,
  beta2: 0.95,
  clip: 1.0,
  seed: 1234,
  evalEvery: 250,
  evalRows: 200,
  logEvery: 25,
  data: 'media/data',
  out: 'media/models/tiny-gpt',
};
type Options = typeof DEFAULTS;

function parseArgs(argv: string[]): Options {
  const o: Record<string, string | number> = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]!.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (!(key in DEFAULTS)) throw new Error(`unknown option ${argv[i]} (options: ${Object.keys(DEFAULTS).join(', ')})`);
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${argv[i]} needs a value`);
    o[key] = typeof DEFAULTS[key as keyof Options] === 'number' ? Number(v) : v;
    if (Number.isNaN(o[key])) throw new Error(`${argv[i]}: not a number: ${v}`);
  }
  return o as Options;
}

export function modelConfig(o: Pick<Options, 'd' | 'layers' | 'heads' | 'positions'>): Gpt2Config {
  return gpt2Config({ d: o.d, layers: o.layers, heads: o.heads, vocab: byteTokenizer.vocabSize, positions: o.positions });
}

/** A Hugging Face GPT-2 config.json for `cfg` (transformers' GPT2Config field names). */
export function hfConfigJson(cfg: Gpt2Config): Record<string, unknown> {
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: cfg.vocabSize,
    n_positions: cfg.maxPositions,
    n_ctx: cfg.maxPositions,
    n_embd: cfg.hiddenSize,
    n_layer: cfg.numLayers,
    n_head: cfg.numHeads,
    n_inner: null,
    activation_function: cfg.activation,
    // Pretrained without dropout; fine-tuning adds its own (adapter) dropout.
    resid_pdrop: 0.0,
    embd_pdrop: 0.0,
    attn_pdrop: 0.0,
    layer_norm_epsilon: cfg.layerNormEps,
    initializer_range: 0.02,
    scale_attn_weights: cfg.scaleAttnWeights,
    scale_attn_by_inverse_layer_idx: cfg.scaleAttnByInverseLayerIdx,
    reorder_and_upcast_attn: false,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    use_cache: true,
    bos_token_id: byteTokenizer.eosId,
    eos_token_id: byteTokenizer.eosId,
    pad_token_id: byteTokenizer.padId,
    torch_dtype: 'float32',
  };
}

const TOKENIZER_CONFIG = {
  // Not a Hugging Face tokenizer class: ids are the UTF-8 bytes of the text (0–255), 256 is <|endoftext|>.
  // In Python: ids = list(text.encode('utf-8')); text = bytes(i for i in ids if i < 256).decode('utf-8', 'replace').
  tokenizer_type: 'byte-level',
  vocab_size: 257,
  model_max_length: 256,
  bos_token: '<|endoftext|>',
  eos_token: '<|endoftext|>',
  pad_token: '<|endoftext|>',
  added_tokens_decoder: { '256': { content: '<|endoftext|>', special: true } },
};

// ---- data -----------------------------------------------------------------------------------------

/** The corpus as one id stream, documents separated by <|endoftext|>. */
function corpusIds(file: string): Int32Array {
  const parts: number[][] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const { text } = JSON.parse(line) as { text: string };
    parts.push(byteTokenizer.encode(text), [byteTokenizer.eosId]);
  }
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function readTextRows(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => (JSON.parse(l) as { text: string }).text);
}

/**
 * Mean next-byte loss (nats per predicted byte) of rows of text, each scored on its own (the
 * first byte is not predicted), padded in batches with labels −100.
 */
export async function textLoss(model: Model, rows: string[], batch = 16): Promise<number> {
  let total = 0;
  let count = 0;
  for (let i = 0; i < rows.length; i += batch) {
    const enc = rows.slice(i, i + batch).map((r) => byteTokenizer.encode(r).slice(0, (model.config as Gpt2Config).maxPositions));
    const t = Math.max(...enc.map((e) => e.length));
    const ids = new Int32Array(enc.length * t).fill(byteTokenizer.padId);
    const labels = new Int32Array(enc.length * t).fill(-100);
    enc.forEach((e, r) => {
      ids.set(e, r * t);
      labels.set(e, r * t);
    });
    const n = enc.reduce((s, e) => s + Math.max(0, e.length - 1), 0);
    const loss = tf.tidy(() => {
      const inputIds = tf.tensor2d(ids, [enc.length, t], 'int32');
      return model.loss(model.forward({ inputIds }), tf.tensor2d(labels, [enc.length, t], 'int32'));
    });
    total += (await loss.data())[0]! * n;
    count += n;
    loss.dispose();
  }
  return total / count;
}

// ---- training -------------------------------------------------------------------------------------

function lrAt(o: Options, step: number): number {
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  const p = Math.min(1, (step - o.warmup) / Math.max(1, o.steps - o.warmup));
  const floor = o.lr * o.minLrRatio;
  return floor + 0.5 * (o.lr - floor) * (1 + Math.cos(Math.PI * p));
}

/** Scales the gradients in place so their global L2 norm is at most `max`; returns the norm before. */
async function clipGrads(grads: Map<string, tf.Tensor>, max: number): Promise<number> {
  const sq = tf.tidy(() => tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g)))));
  const norm = Math.sqrt((await sq.data())[0]!);
  sq.dispose();
  if (norm > max) {
    for (const [k, g] of grads) {
      grads.set(k, tf.mul(g, max / norm));
      g.dispose();
    }
  }
  return norm;
}

async function save(model: Model, o: Options, info: TrainingInfo): Promise<void> {
  mkdirSync(o.out, { recursive: true });
  const tensors = new Map<string, HostTensor>();
  for (const [name, t] of model.params) tensors.set(name, f32(t.shape, (await t.data()) as Float32Array));
  await writeSafetensors(join(o.out, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(o.out, 'config.json'), JSON.stringify(hfConfigJson(model.config as Gpt2Config), null, 2) + '\n');
  writeFileSync(join(o.out, 'tokenizer_config.json'), JSON.stringify({ ...TOKENIZER_CONFIG, model_max_length: o.positions }, null, 2) + '\n');
  writeFileSync(join(o.out, 'training.json'), JSON.stringify(info, null, 2) + '\n');
  writeFileSync(join(o.out, 'README.md'), readme(model, o, info));
}

interface TrainingInfo {
  step: number;
  done: boolean;
  trainLoss: number;
  heldoutLoss: number;
  initialHeldoutLoss: number;
  wallSeconds: number;
  backend: string;
  device: string;
  tokensSeen: number;
  corpusBytes: number;
  options: Options;
  curve: { step: number; trainLoss: number; heldoutLoss?: number; lr: number; seconds: number }[];
}

/** Seconds per step over the fastest logged interval (the run's speed when the machine was not busy). */
function fastestStepSeconds(r: TrainingInfo): number {
  let best = Infinity;
  for (let i = 1; i < r.curve.length; i++) {
    const a = r.curve[i - 1]!;
    const b = r.curve[i]!;
    if (a.heldoutLoss === undefined && b.step > a.step) best = Math.min(best, (b.seconds - a.seconds) / (b.step - a.step));
  }
  return best;
}

function readme(model: Model, o: Options, r: TrainingInfo): string {
  const cfg = model.config as Gpt2Config;
  const fmt = (x: number) => x.toFixed(3);
  const num = (x: number) => String(+x.toPrecision(3));
  const fastest = fastestStepSeconds(r);
  const perStep = r.wallSeconds / r.step;
  const speed = Number.isFinite(fastest)
    ? `${(r.wallSeconds / 60).toFixed(1)} minutes on ${r.device}: ${perStep.toFixed(2)} s per step on average, ${fastest.toFixed(2)} s at the fastest` +
      (perStep > 1.3 * fastest ? ` (the machine was shared with other jobs; at the fastest rate the ${o.steps} steps take about ${Math.round((fastest * o.steps) / 60)} minutes)` : '')
    : `${(r.wallSeconds / 60).toFixed(1)} minutes on ${r.device}`;
  return `# tiny-gpt: PEFT Lab's bundled byte-level GPT-2

A ${(model.parameterCount() / 1e6).toFixed(2)} M-parameter GPT-2 (\`GPT2LMHeadModel\`) pretrained from scratch on
public-domain English text, small enough to fine-tune with LoRA on a laptop CPU in a minute or two.
It is the model \`npm run demo\` fine-tunes, and the default for new run specs (\`peft-lab/tiny-gpt\`).

| | |
|---|---|
| layers / width / heads | ${cfg.numLayers} / ${cfg.hiddenSize} / ${cfg.numHeads} (head dim ${cfg.headDim}), MLP ${cfg.innerSize}, \`gelu_new\` |
| context | ${cfg.maxPositions} learned positions |
| vocabulary | ${cfg.vocabSize}: byte values 0–255 and 256 = \`<|endoftext|>\` (BOS/EOS/pad) |
| head | tied to the token embedding (\`tie_word_embeddings: true\`) |
| weights | \`model.safetensors\`, float32, Hugging Face names (\`transformer.h.0.attn.c_attn.weight\`, ...) |

## Tokenizer

Byte-level, no merges: the ids of a text are its UTF-8 bytes, and 256 is \`<|endoftext|>\`.
\`tokenizer_config.json\` only describes this; there is no \`vocab.json\`, so \`AutoTokenizer\` cannot load it.
In TypeScript use \`byteTokenizer\` (\`sidecar/src/data/byte-tokenizer.ts\`); in Python:

\`\`\`python
ids = list(text.encode("utf-8"))                                  # encode
text = bytes(i for i in ids if i < 256).decode("utf-8", "replace")  # decode
\`\`\`

\`transformers.GPT2LMHeadModel.from_pretrained(<this folder>)\` loads the weights as they are.

## Pretraining

Made by \`scripts/make-default-model.ts\` (\`node --import tsx scripts/make-default-model.ts\`), with the project's
own GPT-2 forward pass, gradients and AdamW on the TF.js ${r.backend} backend (one CPU thread):

- data: \`media/data/pretrain.jsonl\` (${(r.corpusBytes / 1e6).toFixed(2)} MB: *Moby-Dick* and openings of US State of the Union
  addresses, both public domain; see \`media/data/SOURCES.md\`), documents joined by \`<|endoftext|>\`;
  each step takes ${o.batch} random windows of ${o.seq} bytes (seeded, seed ${o.seed})
- ${o.steps} steps, ${o.batch} × ${o.seq} = ${o.batch * o.seq} tokens per step (${(r.tokensSeen / 1e6).toFixed(2)} M tokens, about ${(r.tokensSeen / r.corpusBytes).toFixed(1)} passes over the corpus)
- AdamW: peak learning rate ${o.lr}, linear warmup ${o.warmup} steps, cosine decay to ${num(o.lr * o.minLrRatio)}; β₁ 0.9, β₂ ${o.beta2},
  weight decay ${o.weightDecay} on weight matrices and embeddings (not biases or LayerNorm); gradient norm clipped to ${o.clip}
- init: normal(0, 0.02), LayerNorm weights 1, biases 0 (\`randomModel\`, seed ${o.seed}); no dropout

## Result${r.done ? '' : ` (checkpoint at step ${r.step} of ${o.steps}; the run was not finished)`}

| | loss (nats per byte) |
|---|---|
| uniform guess, ln 257 | ${fmt(Math.log(257))} |
| held-out text before training | ${fmt(r.initialHeldoutLoss)} |
| training windows, last ${o.logEvery} steps | ${fmt(r.trainLoss)} |
| held-out text (\`media/data/heldout.jsonl\`, ${o.evalRows} rows) | ${fmt(r.heldoutLoss)} (${fmt(r.heldoutLoss / Math.LN2)} bits per byte) |

Wall time: ${speed}. \`training.json\` has the loss curve. Held-out loss is the mean
next-byte cross-entropy over each row scored on its own (the first byte of a row is not predicted).

## Fine-tuning it

\`media/data/compare\`, \`media/data/source\` and \`media/data/addition\` hold prompt/completion tasks for this
model; each task's README gives the zero-shot and LoRA numbers measured on it. The model's loss on
\`media/data/heldout.jsonl\` before and after fine-tuning measures forgetting.

## Licence

The weights are a product of this repository's MIT-licensed code trained on public-domain text
(see \`media/data/SOURCES.md\`); they are distributed under the same MIT licence as PEFT Lab.
`;
}

/** `--readme-only`: rewrites README.md of an existing output folder from its training.json. */
async function rewriteReadme(out: string): Promise<void> {
  const info = JSON.parse(readFileSync(join(out, 'training.json'), 'utf8')) as TrainingInfo;
  const model = await Model.load(out);
  writeFileSync(join(out, 'README.md'), readme(model, { ...info.options, out }, info));
  model.dispose();
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const readmeOnly = argv.includes('--readme-only');
  const o = parseArgs(argv.filter((a) => a !== '--readme-only'));
  const backend = await initBackend('wasm', () => {});
  if (readmeOnly) return rewriteReadme(o.out);
  const cfg = modelConfig(o);
  const stream = corpusIds(join(o.data, 'pretrain.jsonl'));
  const heldout = readTextRows(join(o.data, 'heldout.jsonl')).slice(0, o.evalRows);
  const model = randomModel(cfg, o.seed);
  const names = [...model.params.keys()];
  const decay = (name: string) => model.params.get(name)!.rank === 2;
  const opt = new AdamW({ lr: o.lr, beta1: 0.9, beta2: o.beta2, eps: 1e-8, weightDecay: o.weightDecay });
  const rng = mulberry32(o.seed);
  const log = (x: object) => process.stdout.write(JSON.stringify(x) + '\n');
  log({ event: 'start', backend: backend.device, params: model.parameterCount(), corpusTokens: stream.length, options: o });

  const t0 = performance.now();
  const initialHeldoutLoss = await textLoss(model, heldout);
  const curve: { step: number; trainLoss: number; heldoutLoss?: number; lr: number; seconds: number }[] = [];
  let recent: number[] = [];
  const batchIds = new Int32Array(o.batch * o.seq);
  for (let step = 0; step < o.steps; step++) {
    for (let b = 0; b < o.batch; b++) {
      const start = Math.floor(rng() * (stream.length - o.seq + 1));
      batchIds.set(stream.subarray(start, start + o.seq), b * o.seq);
    }
    const inputIds = tf.tensor2d(batchIds, [o.batch, o.seq], 'int32');
    const { loss, grads } = model.lossAndGrads(names, { inputIds }, inputIds, { training: true });
    const gradNorm = await clipGrads(grads, o.clip);
    const lr = lrAt(o, step);
    opt.step(model.params, grads, lr, decay);
    tf.dispose([...grads.values(), inputIds]);
    const value = (await loss.data())[0]!;
    loss.dispose();
    if (!Number.isFinite(value)) throw new Error(`loss is ${value} at step ${step}`);
    recent.push(value);
    const last = step + 1 === o.steps;
    if ((step + 1) % o.logEvery === 0 || last) {
      const trainLoss = recent.reduce((s, x) => s + x, 0) / recent.length;
      recent = [];
      const point: (typeof curve)[number] = { step: step + 1, trainLoss: round(trainLoss), lr: round(lr, 6), seconds: Math.round((performance.now() - t0) / 1000) };
      if ((step + 1) % o.evalEvery === 0 || last) {
        point.heldoutLoss = round(await textLoss(model, heldout));
        const info: TrainingInfo = {
          step: step + 1,
          done: last,
          trainLoss: point.trainLoss,
          heldoutLoss: point.heldoutLoss,
          initialHeldoutLoss: round(initialHeldoutLoss),
          wallSeconds: Math.round((performance.now() - t0) / 1000),
          backend: backend.name,
          device: backend.device,
          tokensSeen: (step + 1) * o.batch * o.seq,
          corpusBytes: stream.length,
          options: o,
          curve: [...curve, point],
        };
        await save(model, o, info);
      }
      curve.push(point);
      log({ ...point, gradNorm: round(gradNorm), tensors: tf.memory().numTensors });
    }
  }
  log({ event: 'done', seconds: Math.round((performance.now() - t0) / 1000), out: o.out });
  opt.dispose();
  model.dispose();
}

const round = (x: number, digits = 4) => Math.round(x * 10 ** digits) / 10 ** digits;

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
