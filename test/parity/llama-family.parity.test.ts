/**
 * The Llama-layout decoders beyond Llama: Mistral (sliding-window attention), Qwen2 (q/k/v biases),
 * Qwen3 (per-head q/k RMSNorm, mixed full and sliding blocks), Gemma ((1 + w) norms, scaled
 * embeddings, GELU), Gemma 2 (sandwich norms, soft-capped scores and logits), Gemma 3 text (q/k norms,
 * a local RoPE for sliding blocks), Phi-3 (fused projections, partial RoPE, LongRoPE), SmolLM3 (NoPE
 * blocks), OLMo-2 (post-norms only, q/k norms over the projections), Granite (multipliers), StableLM
 * (LayerNorms, partial RoPE, per-head q/k LayerNorms, parallel residual) and RoPE scaling (linear, Llama
 * 3.1, dynamic NTK).
 * No transformers fixture exists for them, so the reference is a plain float64 re-implementation
 * written from transformers' modeling files (test/helpers/naive-decoder.ts), itself first checked
 * against transformers' logits for llama-tiny. Variants are llama-tiny's weights plus random extra
 * tensors, loaded from a model folder written here.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { f32, readSafetensors, toFloat32, toInt32, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { MODEL_TYPES, parseConfig, type LlamaConfig } from '../../sidecar/src/models/config';
import { Model } from '../../sidecar/src/models/model';
import { randomModel } from '../../sidecar/src/models/init';
import { createAdapter } from '../../sidecar/src/adapters';
import { generateIds } from '../../sidecar/src/tasks/generate';
import { ropeInverseFrequencies, ropeTables } from '../../sidecar/src/models/ops';
import { mulberry32 } from '../../sidecar/src/train/rng';
import { assertClose, assertNoLeak, fixture, relMaxError, useTestBackend } from '../helpers/numeric';
import { assertMergeReproduces, perturb } from '../helpers/adapters';
import { assertCachedLogitsMatch } from '../helpers/random-checkpoint';
import { naiveDecoderLogits, naiveInverseFrequencies } from '../helpers/naive-decoder';

const BASE = fixture('hf', 'llama-tiny');
const baseConfig = JSON.parse(readFileSync(join(BASE, 'config.json'), 'utf8')) as Record<string, unknown>;

/** Normal(0, std) values from a seeded generator (Box–Muller). */
function noise(n: number, std: number, seed: number, mean = 0): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => mean + std * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
}

interface Variant {
  name: string;
  config: Record<string, unknown>;
  /** Tensors added to llama-tiny's (name → shape), drawn at random. */
  extra: (cfg: LlamaConfig) => Record<string, number[]>;
  /** Where added norm weights centre: 1 (x·w norms), 0 for Gemma's x·(1 + w). */
  normMean?: number;
  /** Rewrites llama-tiny's tensors into the variant's layout (Phi-3's fused projections). */
  transform?: (cfg: LlamaConfig, tensors: Map<string, HostTensor>) => void;
}

const perLayer = (cfg: LlamaConfig, f: (p: string) => Record<string, number[]>) => Object.assign({}, ...Array.from({ length: cfg.numLayers }, (_, i) => f(`model.layers.${i}.self_attn`))) as Record<string, number[]>;
const qkvBiases = (cfg: LlamaConfig) =>
  perLayer(cfg, (p) => ({ [`${p}.q_proj.bias`]: [cfg.numHeads * cfg.headDim], [`${p}.k_proj.bias`]: [cfg.numKvHeads * cfg.headDim], [`${p}.v_proj.bias`]: [cfg.numKvHeads * cfg.headDim] }));

/** StableLM's norms carry biases: those of the named block norms and of model.norm. */
const layerNormBiases = (cfg: LlamaConfig, names: string[]) =>
  Object.assign({ 'model.norm.bias': [cfg.hiddenSize] }, ...Array.from({ length: cfg.numLayers }, (_, i) => Object.fromEntries(names.map((n) => [`model.layers.${i}.${n}.bias`, [cfg.hiddenSize]])))) as Record<string, number[]>;

const sandwich = (cfg: LlamaConfig) =>
  Object.assign({}, ...Array.from({ length: cfg.numLayers }, (_, i) => ({ [`model.layers.${i}.pre_feedforward_layernorm.weight`]: [cfg.hiddenSize], [`model.layers.${i}.post_feedforward_layernorm.weight`]: [cfg.hiddenSize] }))) as Record<string, number[]>;

/** Phi-3's layout from Llama's: qkv_proj = [q; k; v] and gate_up_proj = [gate; up], stacked by rows. */
function fuseProjections(cfg: LlamaConfig, tensors: Map<string, HostTensor>): void {
  const stack = (into: string, parts: string[]) => {
    const ts = parts.map((n) => tensors.get(n)!);
    const rows = ts.reduce((a, t) => a + t.shape[0]!, 0);
    const data = new Float32Array(rows * ts[0]!.shape[1]!);
    let at = 0;
    for (const t of ts) {
      data.set(toFloat32(t), at);
      at += toFloat32(t).length;
    }
    parts.forEach((n) => tensors.delete(n));
    tensors.set(into, f32([rows, ts[0]!.shape[1]!], data));
  };
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    stack(`${p}.self_attn.qkv_proj.weight`, ['q_proj', 'k_proj', 'v_proj'].map((m) => `${p}.self_attn.${m}.weight`));
    stack(`${p}.mlp.gate_up_proj.weight`, ['gate_proj', 'up_proj'].map((m) => `${p}.mlp.${m}.weight`));
  }
}
/** Phi-3 with half of each head rotated (8 of 16 dimensions: 4 LongRoPE factors), every block windowed over 6 tokens. */
const phi3 = (originalMax: number) => ({
  model_type: 'phi3',
  architectures: ['Phi3ForCausalLM'],
  partial_rotary_factor: 0.5,
  sliding_window: 6,
  max_position_embeddings: 64,
  original_max_position_embeddings: originalMax,
  rope_parameters: undefined,
  rope_theta: 10000,
  rope_scaling: { type: 'longrope', short_factor: [1, 1.5, 3, 6], long_factor: [1.2, 2.5, 7, 20] },
});

const VARIANTS: Variant[] = [
  { name: 'mistral, window 5 of 16 tokens', config: { model_type: 'mistral', architectures: ['MistralForCausalLM'], sliding_window: 5 }, extra: () => ({}) },
  { name: 'qwen2, q/k/v biases', config: { model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'] }, extra: qkvBiases },
  {
    name: 'qwen3, q/k norms, all four biases, block 1 sliding (window 4)',
    config: { model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], attention_bias: true, use_sliding_window: true, sliding_window: 4, layer_types: ['full_attention', 'sliding_attention'] },
    extra: (cfg) => ({
      ...qkvBiases(cfg),
      ...perLayer(cfg, (p) => ({ [`${p}.o_proj.bias`]: [cfg.hiddenSize], [`${p}.q_norm.weight`]: [cfg.headDim], [`${p}.k_norm.weight`]: [cfg.headDim] })),
    }),
  },
  {
    name: 'gemma3_text: sandwich norms, q/k norms, scaled embeddings, GELU, local RoPE and window 4 in block 0',
    config: {
      model_type: 'gemma3_text',
      architectures: ['Gemma3ForCausalLM'],
      hidden_activation: 'gelu_pytorch_tanh',
      query_pre_attn_scalar: 24,
      sliding_window: 4,
      layer_types: ['sliding_attention', 'full_attention'],
      rope_parameters: { full_attention: { rope_type: 'default', rope_theta: 1000000 }, sliding_attention: { rope_type: 'default', rope_theta: 10000 } },
      tie_word_embeddings: false,
    },
    extra: (cfg) => ({ ...perLayer(cfg, (p) => ({ [`${p}.q_norm.weight`]: [cfg.headDim], [`${p}.k_norm.weight`]: [cfg.headDim] })), ...sandwich(cfg) }),
    normMean: 0,
  },
  {
    name: 'gemma: (1 + w) norms, scaled embeddings, its "gelu" read as the tanh approximation (gemma-2b’s config)',
    config: { model_type: 'gemma', architectures: ['GemmaForCausalLM'], hidden_act: 'gelu', tie_word_embeddings: false },
    extra: () => ({}),
  },
  {
    name: 'gemma2: sandwich norms, scores capped at 0.2, logits at 2, block 0 sliding (window 4)',
    config: { model_type: 'gemma2', architectures: ['Gemma2ForCausalLM'], query_pre_attn_scalar: 24, sliding_window: 4, attn_logit_softcapping: 0.2, final_logit_softcapping: 2, tie_word_embeddings: false },
    extra: sandwich,
    normMean: 0,
  },
  {
    name: 'phi3: fused qkv_proj and gate_up_proj, RoPE on 8 of 16 dimensions, LongRoPE short factors, window 6',
    config: phi3(32),
    extra: () => ({}),
    transform: fuseProjections,
  },
  {
    name: 'phi3: LongRoPE long factors (16 tokens past original_max_position_embeddings 8)',
    config: phi3(8),
    extra: () => ({}),
    transform: fuseProjections,
  },
  {
    name: 'llama, Llama 3.1 RoPE scaling',
    config: { rope_parameters: { rope_type: 'llama3', rope_theta: 10000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } },
    extra: () => ({}),
  },
  { name: 'llama, linear RoPE scaling (old rope_scaling key)', config: { rope_parameters: undefined, rope_theta: 10000, rope_scaling: { type: 'linear', factor: 2 } }, extra: () => ({}) },
  {
    name: 'smollm3: no RoPE in block 1 (no_rope_layer_interval 2), a window of 5 there (use_sliding_window), tied head, θ 2·10⁶',
    config: { model_type: 'smollm3', architectures: ['SmolLM3ForCausalLM'], rope_parameters: undefined, no_rope_layer_interval: 2, use_sliding_window: true, sliding_window: 5, tie_word_embeddings: true },
    extra: () => ({}),
    transform: (_cfg, tensors) => void tensors.delete('lm_head.weight'),
  },
  {
    name: 'olmo2: norms only after each sub-layer, RMSNorms over the whole q and k projections, q/k/v/o biases',
    config: { model_type: 'olmo2', architectures: ['Olmo2ForCausalLM'], attention_bias: true },
    extra: (cfg) => ({
      ...qkvBiases(cfg),
      ...perLayer(cfg, (p) => ({ [`${p}.o_proj.bias`]: [cfg.hiddenSize], [`${p}.q_norm.weight`]: [cfg.numHeads * cfg.headDim], [`${p}.k_norm.weight`]: [cfg.numKvHeads * cfg.headDim] })),
      ...Object.assign({}, ...Array.from({ length: cfg.numLayers }, (_, i) => ({ [`model.layers.${i}.post_feedforward_layernorm.weight`]: [cfg.hiddenSize] }))),
    }),
    transform: (cfg, tensors) => {
      for (let i = 0; i < cfg.numLayers; i++) tensors.delete(`model.layers.${i}.input_layernorm.weight`);
    },
  },
  {
    name: 'granite: embedding, attention, residual multipliers and logits scaling (as granite-3 sets them), mlp biases',
    config: { model_type: 'granite', architectures: ['GraniteForCausalLM'], embedding_multiplier: 12, attention_multiplier: 0.015625, residual_multiplier: 0.22, logits_scaling: 8, mlp_bias: true },
    extra: (cfg) => Object.assign({}, ...Array.from({ length: cfg.numLayers }, (_, i) => ({ [`model.layers.${i}.mlp.gate_proj.bias`]: [cfg.intermediateSize], [`model.layers.${i}.mlp.up_proj.bias`]: [cfg.intermediateSize], [`model.layers.${i}.mlp.down_proj.bias`]: [cfg.hiddenSize] }))) as Record<string, number[]>,
  },
  {
    name: 'stablelm-2 layout: LayerNorms with biases, a quarter of each head rotated, q/k/v biases',
    config: { model_type: 'stablelm', architectures: ['StableLmForCausalLM'], use_qkv_bias: true, partial_rotary_factor: 0.25, layer_norm_eps: 1e-5 },
    extra: (cfg) => ({ ...qkvBiases(cfg), ...layerNormBiases(cfg, ['input_layernorm', 'post_attention_layernorm']) }),
  },
  {
    name: 'stablelm-2-12b layout: the parallel residual, a LayerNorm per query and key head (qk_layernorm)',
    config: { model_type: 'stablelm', architectures: ['StableLmForCausalLM'], use_parallel_residual: true, qk_layernorm: true },
    extra: (cfg) => ({
      ...layerNormBiases(cfg, ['input_layernorm']),
      ...perLayer(cfg, (p) => Object.fromEntries([...Array.from({ length: cfg.numHeads }, (_, h) => `${p}.q_layernorm.norms.${h}.weight`), ...Array.from({ length: cfg.numKvHeads }, (_, h) => `${p}.k_layernorm.norms.${h}.weight`)].map((n) => [n, [cfg.headDim]]))),
    }),
    transform: (cfg, tensors) => {
      for (let i = 0; i < cfg.numLayers; i++) tensors.delete(`model.layers.${i}.post_attention_layernorm.weight`);
    },
  },
  { name: 'llama, dynamic NTK RoPE past max_position_embeddings (16 tokens over 8)', config: { max_position_embeddings: 8, rope_parameters: { rope_type: 'dynamic', rope_theta: 10000, factor: 2 } }, extra: () => ({}) },
];

describe('Llama-family decoders (Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3, Phi-3, RoPE scaling) against a float64 reference', () => {
  let root = '';
  let base: Map<string, HostTensor>;
  let ids: number[][];
  before(async () => {
    await useTestBackend();
    root = mkdtempSync(join(tmpdir(), 'peft-lab-llama-family-'));
    base = await readSafetensors(join(BASE, 'model.safetensors'));
    const refs = await readSafetensors(join(BASE, 'refs.safetensors'));
    const flat = Array.from(toInt32(refs.get('input_ids')!));
    ids = [flat.slice(0, 16), flat.slice(16)];
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const lookup = (tensors: Map<string, HostTensor>) => (n: string) => (tensors.has(n) ? toFloat32(tensors.get(n)!) : undefined);

  /** Writes the variant's model folder; returns it with its tensors. */
  async function writeVariant(v: Variant, seed: number): Promise<{ dir: string; cfg: LlamaConfig; tensors: Map<string, HostTensor> }> {
    const raw = { ...baseConfig, ...v.config };
    const cfg = parseConfig(raw, 'config.json') as LlamaConfig;
    const tensors = new Map(base);
    v.transform?.(cfg, tensors);
    for (const [i, [n, shape]] of Object.entries(v.extra(cfg)).entries()) {
      const count = shape.reduce((a, b) => a * b, 1);
      // Norm weights around 1 (as trained ones are), biases large enough to move the logits.
      tensors.set(n, f32(shape, n.endsWith('norm.weight') ? noise(count, 0.3, seed + i, v.normMean ?? 1) : noise(count, 0.5, seed + i)));
    }
    const dir = join(root, v.name.replace(/[^a-z0-9]+/gi, '-'));
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(raw));
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    return { dir, cfg, tensors };
  }

  /** Writes the variant, loads it, runs `fn` on the model, disposes it. */
  async function withVariant(v: Variant, seed: number, fn: (model: Model, variant: { cfg: LlamaConfig; tensors: Map<string, HostTensor> }) => Promise<void> | void): Promise<void> {
    const written = await writeVariant(v, seed);
    const model = await Model.load(written.dir);
    try {
      await fn(model, written);
    } finally {
      model.dispose();
    }
  }

  it('the reference computes transformers’ logits for llama-tiny (so it can stand in for the variants)', async () => {
    const cfg = parseConfig(baseConfig, 'config.json') as LlamaConfig;
    const refs = await readSafetensors(join(BASE, 'refs.safetensors'));
    const want = toFloat32(refs.get('logits')!);
    const got = new Float64Array(want.length);
    ids.forEach((seq, b) => got.set(naiveDecoderLogits(cfg, lookup(base), seq), b * seq.length * cfg.vocabSize));
    assertClose('naive llama-tiny logits', got, want, 1e-5);
  });

  for (const [i, v] of VARIANTS.entries()) {
    it(`${v.name}: loads by name and shape, and its logits match the reference`, async () => {
      await withVariant(v, 100 * (i + 1), (model, { cfg, tensors }) => {
        assert.equal(cfg.modelType, (v.config.model_type as string | undefined) ?? 'llama');
        const logits = tf.tidy(() => model.forward({ inputIds: tf.tensor2d(ids, [2, 16], 'int32') }).dataSync() as Float32Array);
        const vocab = cfg.vocabSize;
        for (const [b, seq] of ids.entries()) {
          const want = naiveDecoderLogits(cfg, lookup(tensors), seq);
          const got = logits.subarray(b * 16 * vocab, (b + 1) * 16 * vocab);
          assertClose(`${v.name} logits, row ${b}`, got, want, 1e-4);
          // The option matters: plain llama-tiny's logits differ by 10× the tolerance at least (RoPE
          // scaling moves these nearly uniform random attentions least: 3e-3).
          const plain = naiveDecoderLogits(parseConfig(baseConfig, 'config.json') as LlamaConfig, lookup(base), seq);
          assert.ok(relMaxError(got, plain) > 1e-3, `${v.name}: indistinguishable from plain Llama`);
        }
      });
    });
  }

  it('Qwen3: gradients flow to q_norm/k_norm and biases; the loss backs off along them (no leaks)', async () => {
    await withVariant(VARIANTS[2]!, 300, async (model) => {
      const names = ['model.layers.0.self_attn.q_norm.weight', 'model.layers.1.self_attn.k_norm.weight', 'model.layers.0.self_attn.q_proj.bias', 'model.layers.1.self_attn.o_proj.bias'];
      const inputIds = tf.tensor2d(ids, [2, 16], 'int32');
      await assertNoLeak(() => {
        const { loss, grads } = model.lossAndGrads(names, { inputIds }, inputIds);
        const l0 = loss.dataSync()[0]!;
        // A small step against the gradient lowers the loss (first order): the gradients are real.
        const overrides = new Map(names.map((n) => [n, tf.tidy(() => tf.sub(model.params.get(n)!, tf.mul(grads.get(n)!, 1e-2)))]));
        const l1 = tf.tidy(() => model.loss(model.forward({ inputIds }, { overrides }), inputIds).dataSync()[0]!);
        for (const n of names) assert.ok(tf.tidy(() => tf.norm(grads.get(n)!).dataSync()[0]!) > 0, `${n} has a zero gradient`);
        assert.ok(l1 < l0, `loss ${l0} → ${l1} after a step against the gradient`);
        tf.dispose([loss, ...grads.values(), ...overrides.values()]);
      });
      inputIds.dispose();
    });
  });

  it('the key/value cache gives the whole-sequence logits under sliding windows (Mistral, Qwen3, Gemma 3 with its local RoPE, Gemma 2 with capped scores, Phi-3 with partial LongRoPE, SmolLM3 with NoPE blocks)', async () => {
    for (const v of [VARIANTS[0]!, VARIANTS[2]!, VARIANTS[3]!, VARIANTS[5]!, VARIANTS[6]!, VARIANTS.find((x) => x.name.startsWith('smollm3'))!]) {
      await withVariant(v, 500, (model) => {
        assertCachedLogitsMatch(model, ids[0]!.slice(0, 10), v.name);
      });
    }
  });

  it('StableLM: SSF on its LayerNorms (the parallel residual’s shared one too) and sub-layers folds into weights and biases (merged logits = the adapter’s)', async () => {
    for (const v of VARIANTS.filter((x) => x.name.startsWith('stablelm'))) {
      await withVariant(v, 750, async (model) => {
        const a = await createAdapter(model, { kind: 'ssf', targets: ['input_layernorm', 'post_attention_layernorm', 'self_attn', 'mlp', 'norm'] }, { seed: 1 });
        perturb(a, 0.2, 11);
        const inputIds = tf.tensor2d(ids, [2, 16], 'int32');
        try {
          assertMergeReproduces(model, a, { inputIds });
        } finally {
          inputIds.dispose();
          a.dispose();
        }
      });
    }
  });

  it("Gemma 3: SSF scales fold into its (1 + w) norms and unfold back (merged logits = the adapter's)", async () => {
    await withVariant(VARIANTS[3]!, 700, async (model) => {
      const points = ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm'];
      const a = await createAdapter(model, { kind: 'ssf', targets: points }, { seed: 1 });
      const inputIds = tf.tensor2d(ids, [2, 16], 'int32');
      try {
        // Scales everywhere; shifts only where a linear's bias can absorb them (the norms feeding q/k/v and the MLP).
        perturb(a, 0.2, 9, (n) => !n.endsWith('ssf_shift') || /(input_layernorm|pre_feedforward_layernorm)\.ssf_shift$/.test(n));
        const run = (opts: Parameters<Model['forward']>[1]) => tf.tidy(() => model.forward({ inputIds }, opts).dataSync() as Float32Array);
        const adapted = run({ hooks: a.hooks, overrides: a.overrides() });
        assert.ok(relMaxError(adapted, run({})) > 1e-3, 'the SSF changes the logits');
        const merged = a.merged();
        const restored = a.unmerge(merged);
        try {
          assertClose('merged logits', run({ overrides: merged }), adapted, 1e-4);
          for (const [k, t] of restored) assertClose(`unmerged ${k}`, t.dataSync(), model.params.get(k)!.dataSync(), 1e-5);
        } finally {
          tf.dispose([...merged.values(), ...restored.values()]);
        }
      } finally {
        inputIds.dispose();
        a.dispose();
      }
    });
  });

  it("LN-tuning's default norms are PEFT's per model type (Qwen: post_attention_layernorm; Gemma 3: the four block norms and the last, not q/k norms)", async () => {
    const trained = async (v: Variant) => {
      let names: string[] = [];
      await withVariant(v, 800, async (model) => {
        const a = await createAdapter(model, { kind: 'ln-tuning' }, { seed: 1 });
        names = [...a.trainable.keys()].map((n) => n.replace(/^model\.layers\.\d+\./, '')).filter((n, i, all) => all.indexOf(n) === i);
        a.dispose();
      });
      return names.sort();
    };
    assert.deepEqual(await trained(VARIANTS[2]!), ['post_attention_layernorm.weight']);
    assert.deepEqual(await trained(VARIANTS[3]!), ['input_layernorm.weight', 'model.norm.weight', 'post_attention_layernorm.weight', 'post_feedforward_layernorm.weight', 'pre_feedforward_layernorm.weight']);
    assert.deepEqual(await trained(VARIANTS[0]!), ['input_layernorm.weight', 'model.norm.weight', 'post_attention_layernorm.weight']);
  });

  it('a sliding window of w over L blocks: the last token sees only the last L·(w−1)+1 tokens (RoPE is relative)', async () => {
    await withVariant(VARIANTS[0]!, 600, (model) => {
      const seq = ids[1]!;
      const reach = 2 * (5 - 1) + 1;
      const last = (s: number[]) => tf.tidy(() => tf.slice(model.forward({ inputIds: tf.tensor2d([s], [1, s.length], 'int32') }), [0, s.length - 1, 0], [1, 1, -1]).dataSync() as Float32Array);
      assertClose('last-token logits of the suffix', last(seq.slice(-reach)), last(seq), 1e-4);
      // One token fewer changes them: the window reaches exactly that far.
      assert.ok(relMaxError(last(seq.slice(-(reach - 1))), last(seq)) > 1e-3, 'the window reaches one token further than w−1 per block');
    });
  });

  it('RoPE frequencies: dynamic NTK leaves them alone up to max_position_embeddings, then raises θ to θ·(f·L/max − (f − 1))^(d/(d−2)) (transformers’ formula)', () => {
    const scaling = { type: 'dynamic' as const, factor: 2, originalMaxPositions: 8 };
    assert.deepEqual(Array.from(ropeInverseFrequencies(16, 10000, scaling, 8)), Array.from(ropeInverseFrequencies(16, 10000, { type: 'default' })));
    // L = 16 over 8 with factor 2: θ · 3^(16/14); frequency i is θ'^(−2i/16).
    const theta = 10000 * 3 ** (16 / 14);
    const got = ropeInverseFrequencies(16, 10000, scaling, 16);
    for (let i = 0; i < 8; i++) assert.ok(Math.abs(got[i]! - theta ** (-(2 * i) / 16)) <= 1e-6 * theta ** (-(2 * i) / 16), `frequency ${i}`);
    // Configs: original_max_position_embeddings of llama3 defaults to max_position_embeddings (transformers 5's standardisation).
    const cfg = parseConfig({ ...baseConfig, max_position_embeddings: 128, rope_parameters: { rope_type: 'llama3', rope_theta: 10000, factor: 8, low_freq_factor: 1, high_freq_factor: 4 } }, 'c.json') as LlamaConfig;
    assert.equal(cfg.ropeScaling.type === 'llama3' && cfg.ropeScaling.originalMaxPositions, 128);
  });

  it('RoPE frequencies: Llama 3.1 scaling keeps the high ones, divides the low ones, blends between (as transformers, in float32)', () => {
    const scaling = { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 };
    const got = ropeInverseFrequencies(16, 10000, scaling);
    const want = naiveInverseFrequencies(16, 10000, scaling);
    assertClose('llama3 inverse frequencies', got, want, 1e-6);
    const plain = naiveInverseFrequencies(16, 10000, { type: 'default' });
    // Wavelengths 2π/f: 6.3 (< 64/4: kept), 19.9 and 62.8 (blended), 199 and beyond (> 64: divided by 8).
    assert.equal(got[0], Math.fround(plain[0]!));
    assert.ok(got[1]! < plain[1]! && got[1]! > plain[1]! / 8 && got[2]! < plain[2]! && got[2]! > plain[2]! / 8);
    for (let i = 3; i < 8; i++) assert.ok(Math.abs(got[i]! - plain[i]! / 8) <= 1e-6 * plain[i]!, `frequency ${i}`);
  });

  it('config errors name the key: RoPE types we do not compute, layer_types of the wrong length or kind', () => {
    const bad = (patch: Record<string, unknown>, key: RegExp, problem: RegExp) =>
      assert.throws(
        () => parseConfig({ ...baseConfig, ...patch }, '/m/config.json'),
        (e: Error) => key.test(e.message) && problem.test(e.message),
      );
    bad({ rope_parameters: { rope_type: 'yarn', factor: 4 } }, /rope_parameters\.rope_type/, /unsupported RoPE type "yarn" \(supported: default, linear, dynamic, llama3, longrope\)/);
    bad({ rope_parameters: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 64 } }, /rope_parameters\.high_freq_factor/, /must be above low_freq_factor/);
    bad({ rope_parameters: undefined, rope_scaling: { type: 'linear' } }, /rope_scaling\.factor/, /expected a finite number/);
    bad({ model_type: 'qwen2', use_sliding_window: true, layer_types: ['full_attention'] }, /layer_types/, /a list of 2 layer types/);
    bad({ model_type: 'qwen3', use_sliding_window: true, layer_types: ['full_attention', 'chunked_attention'] }, /layer_types\[1\]/, /unsupported layer type "chunked_attention"/);
    bad({ model_type: 'mixtral' }, /model_type/, new RegExp(`supported: ${MODEL_TYPES.join(', ')}\\)`));
    bad({ rope_parameters: { rope_type: 'longrope', short_factor: [1, 2], long_factor: [1, 2], original_max_position_embeddings: 8 } }, /rope_parameters\.short_factor/, /has 2 entries; the 16 rotated dimensions of each head need 8/);
    bad({ rope_parameters: { rope_type: 'longrope', short_factor: [1, 2], long_factor: [1] } }, /rope_parameters\.long_factor/, /has 1 entries, short_factor 2/);
    bad({ rope_parameters: { rope_type: 'longrope', short_factor: [1, -2], long_factor: [1, 2] } }, /rope_parameters\.short_factor/, /positive numbers/);
    bad({ rope_parameters: { rope_type: 'yarn', short_factor: [1, 2], long_factor: [1, 2] } }, /rope_parameters\.rope_type/, /unsupported RoPE type "yarn"/);
    bad({ ...phi3(8), partial_rotary_factor: 0.3125 }, /partial_rotary_factor/, /even number of rotated dimensions \(head_dim 16 × 0\.3125 = 5\)/);
    bad({ model_type: 'gemma2', attn_logit_softcapping: 0 }, /attn_logit_softcapping/, /must be above 0 \(or null for none\)/);
  });

  it('SmolLM3 and OLMo-2 defaults as their config classes; SmolLM3: every 4th block without RoPE, windows only with use_sliding_window (on the NoPE blocks), θ 2·10⁶, tied head, pad 128004; no_rope_layers as given', () => {
    const base = { model_type: 'smollm3', hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 8, intermediate_size: 96, vocab_size: 200000 };
    const c = parseConfig(base, 'c.json') as LlamaConfig;
    assert.deepEqual([c.noRopeLayers, c.slidingWindows.every((w) => w === undefined), c.ropeTheta, c.tieWordEmbeddings, c.padTokenId, c.numKvHeads], [[false, false, false, true, false, false, false, true], true, 2e6, true, 128004, 4]);
    const w = parseConfig({ ...base, use_sliding_window: true, sliding_window: 16 }, 'c.json') as LlamaConfig;
    assert.deepEqual(w.slidingWindows, [undefined, undefined, undefined, 16, undefined, undefined, undefined, 16]);
    const listed = parseConfig({ ...base, no_rope_layers: [1, 0, 1, 1, 1, 1, 1, 0] }, 'c.json') as LlamaConfig;
    assert.deepEqual(listed.noRopeLayers, [false, true, false, false, false, false, false, true]);
    assert.throws(() => parseConfig({ ...base, no_rope_layers: [1, 0] }, 'c.json'), /no_rope_layers.*a list of 8 flags/);
    // Given layer_types decide the windows, whatever use_sliding_window says (it steers flash attention only); null KV heads are the heads.
    const typed = parseConfig({ ...base, use_sliding_window: false, sliding_window: 16, num_key_value_heads: null, layer_types: ['full_attention', 'sliding_attention', ...Array(6).fill('full_attention')] }, 'c.json') as LlamaConfig;
    assert.deepEqual([typed.slidingWindows.slice(0, 3), typed.numKvHeads], [[undefined, 16, undefined], 4]);
    // Olmo2Config: ε 1e-5, padding id 1, untied, no pre-norms, q/k norms over the projections.
    const o = parseConfig({ ...base, model_type: 'olmo2', num_key_value_heads: 2 }, 'c.json') as LlamaConfig;
    assert.deepEqual([o.rmsNormEps, o.padTokenId, o.tieWordEmbeddings, o.preNorms, o.qkNorm, o.qkNormOverProjection, o.sandwichNorms, o.ropeTheta], [1e-5, 1, false, false, true, true, true, 10000]);
  });

  it('Gemma 3 text defaults as Gemma3TextConfig: head_dim 256, tied head, pad 0, every 6th block full, local RoPE at 10000, √d embeddings', () => {
    const gemma = (patch: Record<string, unknown>) =>
      parseConfig({ model_type: 'gemma3_text', hidden_size: 640, num_attention_heads: 4, num_key_value_heads: 1, num_hidden_layers: 7, intermediate_size: 2048, vocab_size: 1000, sliding_window: 512, rope_theta: 1e6, ...patch }, 'c.json') as LlamaConfig;
    const g = gemma({});
    assert.deepEqual([g.headDim, g.tieWordEmbeddings, g.padTokenId, g.activation, g.architecture, g.maxPositions], [256, true, 0, 'gelu_pytorch_tanh', 'Gemma3ForCausalLM', 131072]);
    assert.deepEqual(g.slidingWindows, [512, 512, 512, 512, 512, undefined, 512]);
    assert.deepEqual(g.localRope, { theta: 10000, scaling: { type: 'default' }, layers: [true, true, true, true, true, false, true] });
    assert.deepEqual([g.ropeTheta, g.embedScale, g.attentionScale, g.normOffset, g.sandwichNorms, g.qkNorm], [1e6, Math.fround(Math.sqrt(640)), 1 / 16, 1, true, true]);
    // The older keys: rope_local_base_freq, rope_scaling for the full blocks, sliding_window_pattern.
    const old = gemma({ rope_local_base_freq: 5000, rope_scaling: { rope_type: 'linear', factor: 8 }, sliding_window_pattern: 2, query_pre_attn_scalar: 64 });
    assert.deepEqual([old.localRope!.theta, old.ropeScaling, old.localRope!.layers.slice(0, 3), old.attentionScale], [5000, { type: 'linear', factor: 8 }, [true, false, true], 1 / 8]);
    // query_pre_attn_scalar defaults to 256 whatever head_dim is; hidden_act is not Gemma's key; a
    // nested sliding_attention RoPE without a base takes rope_local_base_freq.
    const narrow = gemma({ head_dim: 64, hidden_act: 'silu', rope_local_base_freq: 5000, rope_parameters: { full_attention: { rope_type: 'default', rope_theta: 1e6 }, sliding_attention: { rope_type: 'default' } } });
    assert.deepEqual([narrow.headDim, narrow.attentionScale, narrow.activation, narrow.localRope!.theta, narrow.ropeTheta], [64, 1 / 16, 'gelu_pytorch_tanh', 5000, 1e6]);
    const bad = (patch: Record<string, unknown>, key: string, problem: RegExp) => assert.throws(() => gemma(patch), (e: Error) => e.message.includes(key) && problem.test(e.message));
    bad({ use_bidirectional_attention: true }, 'use_bidirectional_attention', /not supported/);
    // Gemma 3 caps logits as Gemma 2 when the config says so (off by default); its attention never
    // reads attn_logit_softcapping (Gemma3Attention does not pass it on).
    const capped = gemma({ final_logit_softcapping: 30, attn_logit_softcapping: 50 });
    assert.deepEqual([g.attnSoftcap, g.logitSoftcap, capped.logitSoftcap, capped.attnSoftcap], [undefined, undefined, 30, undefined]);
    assert.throws(() => parseConfig({ ...baseConfig, model_type: 'gemma3' }, 'c.json'), /image-and-text Gemma 3 .* is not supported; its text-only checkpoints .*gemma3_text/);
  });

  it('defaults as transformers’ config classes: Mistral windows at 4096 unless null; Qwen only with use_sliding_window, from max_window_layers', () => {
    const windows = (patch: Record<string, unknown>) => (parseConfig({ ...baseConfig, ...patch }, 'c.json') as LlamaConfig).slidingWindows;
    assert.deepEqual(windows({ model_type: 'mistral' }), [4096, 4096]);
    assert.deepEqual(windows({ model_type: 'mistral', sliding_window: null }), [undefined, undefined]);
    assert.deepEqual(windows({ model_type: 'qwen2', sliding_window: 8 }), [undefined, undefined]);
    assert.deepEqual(windows({ model_type: 'qwen2', use_sliding_window: true, sliding_window: 8, max_window_layers: 1 }), [undefined, 8]);
    assert.deepEqual(windows({ model_type: 'llama', sliding_window: 8 }), [undefined, undefined]);
    const qwen2 = parseConfig({ ...baseConfig, model_type: 'qwen2', attention_bias: true }, 'c.json') as LlamaConfig;
    assert.deepEqual([qwen2.qkvBias, qwen2.outputBias, qwen2.qkNorm, qwen2.architecture], [true, false, false, 'LlamaForCausalLM']);
    // Keys a file leaves out take its config class's default, not Llama's.
    const bare = (model_type: string) => {
      const { head_dim: _h, num_key_value_heads: _k, max_position_embeddings: _m, ...rest } = baseConfig;
      const c = parseConfig({ ...rest, model_type, num_attention_heads: 64, hidden_size: 4096 }, 'c.json') as LlamaConfig;
      return [c.headDim, c.numKvHeads, c.maxPositions];
    };
    assert.deepEqual(bare('llama'), [64, 64, 2048]);
    assert.deepEqual(bare('mistral'), [64, 8, 131072]);
    assert.deepEqual(bare('qwen2'), [64, 32, 32768]);
    assert.deepEqual(bare('qwen3'), [128, 32, 32768]);
    // PyTorch's padding_idx counts a negative id from the end (old Llama configs say -1).
    assert.equal((parseConfig({ ...baseConfig, pad_token_id: -1 }, 'c.json') as LlamaConfig).padTokenId, 127);
    assert.throws(() => parseConfig({ ...baseConfig, pad_token_id: -129 }, 'c.json'), /pad_token_id.*must be at least -128/);
  });
  it('Gemma and Gemma 2 defaults as GemmaConfig / Gemma2Config; Phi-3 as Phi3Config', () => {
    const parse = (patch: Record<string, unknown>) =>
      parseConfig({ hidden_size: 3072, num_attention_heads: 24, num_hidden_layers: 4, intermediate_size: 8192, vocab_size: 40000, ...patch }, 'c.json') as LlamaConfig;
    // (GemmaConfig's num_key_value_heads default is 16, which 24 heads do not divide: given here.)
    const g1 = parse({ model_type: 'gemma', hidden_act: 'gelu', num_key_value_heads: 24, use_sliding_window: true, sliding_window: 16 });
    assert.deepEqual(
      [g1.headDim, g1.numKvHeads, g1.maxPositions, g1.tieWordEmbeddings, g1.padTokenId, g1.normOffset, g1.sandwichNorms, g1.embedScale, g1.attentionScale, g1.activation, g1.architecture],
      [256, 24, 8192, true, 0, 1, false, Math.fround(Math.sqrt(3072)), 1 / 16, 'gelu_pytorch_tanh', 'GemmaForCausalLM'],
    );
    assert.deepEqual(g1.slidingWindows, [undefined, undefined, undefined, undefined], 'GemmaConfig has no sliding window');
    // transformers 5 reads GemmaConfig's hidden_act (its "gelu" as the tanh approximation), not hidden_activation.
    assert.equal(parse({ model_type: 'gemma', hidden_act: 'silu', hidden_activation: 'gelu_pytorch_tanh', num_key_value_heads: 8 }).activation, 'silu');
    assert.throws(() => parse({ model_type: 'gemma' }), /num_attention_heads=24 is not divisible by num_key_value_heads=16/);
    const g2 = parse({ model_type: 'gemma2' });
    assert.deepEqual([g2.headDim, g2.numKvHeads, g2.attnSoftcap, g2.logitSoftcap, g2.attentionScale, g2.sandwichNorms, g2.qkNorm, g2.localRope], [256, 4, 50, 30, 1 / 16, true, false, undefined]);
    assert.deepEqual(g2.slidingWindows, [4096, undefined, 4096, undefined]);
    const uncapped = parse({ model_type: 'gemma2', attn_logit_softcapping: null, final_logit_softcapping: null, sliding_window: 512 });
    assert.deepEqual([uncapped.attnSoftcap, uncapped.logitSoftcap, uncapped.slidingWindows[0]], [undefined, undefined, 512]);
    const p3 = parse({ model_type: 'phi3', vocab_size: 32064 });
    assert.deepEqual(
      [p3.headDim, p3.numKvHeads, p3.rotaryDim, p3.rmsNormEps, p3.padTokenId, p3.maxPositions, p3.tieWordEmbeddings, p3.fusedProjections, p3.slidingWindows, p3.activation],
      [128, 24, 128, 1e-5, 32000, 4096, false, true, [undefined, undefined, undefined, undefined], 'silu'],
    );
    // Phi-4-mini: 3/4 of each head rotated, LongRoPE with original_max_position_embeddings at the top.
    const factors = Array.from({ length: 48 }, () => 1);
    const p4 = parse({ model_type: 'phi3', partial_rotary_factor: 0.75, max_position_embeddings: 131072, original_max_position_embeddings: 4096, rope_scaling: { type: 'longrope', short_factor: factors, long_factor: factors } });
    assert.equal(p4.rotaryDim, 96);
    assert.deepEqual(p4.ropeScaling, { type: 'longrope', shortFactor: factors, longFactor: factors, originalMaxPositions: 4096, attentionFactor: Math.sqrt(1 + Math.log(32) / Math.log(4096)) });
    // transformers 5 nests partial_rotary_factor and the original length under rope_parameters.
    const p5 = parse({ model_type: 'phi3', rope_parameters: { rope_type: 'longrope', rope_theta: 250000, partial_rotary_factor: 0.75, original_max_position_embeddings: 4096, attention_factor: 1.19, short_factor: factors, long_factor: factors } });
    assert.deepEqual([p5.rotaryDim, p5.ropeTheta, (p5.ropeScaling as { attentionFactor: number }).attentionFactor], [96, 250000, 1.19]);
    // original_max_position_embeddings: the top level's first (as transformers), else the nested one,
    // else Phi3Config's 4096; Phi3Config reads a "yarn" type as LongRoPE.
    const original = (patch: Record<string, unknown>) => (parse({ model_type: 'phi3', max_position_embeddings: 131072, ...patch }).ropeScaling as { originalMaxPositions: number }).originalMaxPositions;
    const nested = { rope_type: 'longrope', short_factor: factors, long_factor: factors, original_max_position_embeddings: 8192, partial_rotary_factor: 0.75 };
    assert.equal(original({ original_max_position_embeddings: 2048, rope_parameters: nested }), 2048);
    assert.equal(original({ rope_parameters: nested }), 8192);
    assert.equal(original({ partial_rotary_factor: 0.75, rope_scaling: { type: 'longrope', short_factor: factors, long_factor: factors } }), 4096);
    assert.equal(original({ partial_rotary_factor: 0.75, rope_scaling: { type: 'yarn', short_factor: factors, long_factor: factors } }), 4096);
  });

  it('LongRoPE frequencies: the short factors up to original_max_position_embeddings, the long ones past it; cos and sin scaled (as transformers, in float32)', () => {
    const cfg = parseConfig({ ...baseConfig, ...phi3(8) }, 'c.json') as LlamaConfig;
    const scaling = cfg.ropeScaling;
    assert.equal(scaling.type, 'longrope');
    if (scaling.type !== 'longrope') return;
    assert.ok(Math.abs(scaling.attentionFactor - Math.SQRT2) < 1e-12, 'factor 64/8 over original 8: √(1 + ln 8 / ln 8)');
    for (const seq of [8, 9]) assertClose(`inverse frequencies at ${seq} positions`, ropeInverseFrequencies(8, 10000, scaling, seq), naiveInverseFrequencies(8, 10000, scaling, seq), 1e-6);
    assert.notDeepEqual(Array.from(ropeInverseFrequencies(8, 10000, scaling, 8)), Array.from(ropeInverseFrequencies(8, 10000, scaling, 9)));
    const { cos, sin } = ropeTables(3, 8, 10000, scaling);
    const inv = naiveInverseFrequencies(8, 10000, scaling, 3);
    const want = (f: (x: number) => number) => Array.from({ length: 3 * 8 }, (_, i) => Math.SQRT2 * f(Math.floor(i / 8) * inv[i % 4]!));
    assertClose('cos · √2', cos.dataSync(), want(Math.cos), 1e-6);
    assertClose('sin · √2', sin.dataSync(), want(Math.sin), 1e-6);
    tf.dispose([cos, sin]);
  });

  it('Gemma 2: each soft cap changes the logits; the sliced loss and its gradients equal the one-matmul ones through the logit cap (head frozen or trained)', async () => {
    const v = VARIANTS[5]!;
    await withVariant(v, 900, async (model, { cfg, tensors }) => {
      const seq = ids[0]!;
      const ref = naiveDecoderLogits(cfg, lookup(tensors), seq);
      assert.ok(relMaxError(naiveDecoderLogits({ ...cfg, attnSoftcap: undefined }, lookup(tensors), seq), ref) > 1e-3, 'the score cap matters here');
      assert.ok(relMaxError(naiveDecoderLogits({ ...cfg, logitSoftcap: undefined }, lookup(tensors), seq), ref) > 1e-3, 'the logit cap matters here');
      const inputIds = tf.tensor2d(ids, [2, 16], 'int32');
      for (const names of [['model.layers.1.mlp.down_proj.weight', 'model.norm.weight'], ['model.layers.1.mlp.down_proj.weight', 'lm_head.weight']]) {
        await assertNoLeak(() => {
          const whole = model.lossAndGrads(names, { inputIds }, inputIds);
          // 2·16 rows × 128 logits = 4096 > 1000: slices of 7 rows (896 logits).
          const sliced = model.lossAndGrads(names, { inputIds }, inputIds, { chunkedLossLogits: 1000, chunkLogits: 7 * 128 });
          assertClose('loss', sliced.loss.dataSync(), whole.loss.dataSync(), 1e-5);
          for (const n of names) assertClose(`d ${n}`, sliced.grads.get(n)!.dataSync(), whole.grads.get(n)!.dataSync(), 1e-4);
          tf.dispose([whole.loss, sliced.loss, ...whole.grads.values(), ...sliced.grads.values()]);
        });
      }
      inputIds.dispose();
    });
  });

  it('Phi-3: LoRA targets qkv_proj by default; SSF on its norms folds into the fused projections (merged logits = the adapter’s)', async () => {
    await withVariant(VARIANTS[6]!, 1000, async (model) => {
      const lora = await createAdapter(model, { kind: 'lora', r: 2, alpha: 4 }, { seed: 1 });
      assert.deepEqual([...new Set([...lora.trainable.keys()].map((n) => n.replace(/^.*\.self_attn\./, '').replace(/\.lora_[AB].*$/, '')))], ['qkv_proj']);
      lora.dispose();
      const a = await createAdapter(model, { kind: 'ssf', targets: ['input_layernorm', 'post_attention_layernorm'] }, { seed: 1 });
      const inputIds = tf.tensor2d(ids, [2, 16], 'int32');
      try {
        perturb(a, 0.2, 9);
        assertMergeReproduces(model, a, { inputIds });
      } finally {
        inputIds.dispose();
        a.dispose();
      }
    });
  });
  it('random Gemma models start with norm weights 0 (their (1 + w) norms are then the identity scale), as transformers initialises them', () => {
    for (const [type, want] of [['gemma2', 0], ['llama', 1]] as const) {
      const model = randomModel(parseConfig({ ...baseConfig, model_type: type }, 'c.json'), 1);
      const norms = [...model.params].filter(([n]) => n.endsWith('layernorm.weight') || n === 'model.norm.weight');
      assert.ok(norms.length >= 5, `${type}: norms found`);
      for (const [n, t] of norms) assert.ok(Array.from(t.dataSync()).every((x) => x === want), `${type} ${n} starts at ${want}`);
      model.dispose();
    }
  });
  it('Phi-3 generation: the key/value cache is recomputed once the sequence passes original_max_position_embeddings (LongRoPE’s switch), as transformers; the tokens equal uncached ones', async () => {
    await withVariant(VARIANTS[7]!, 1100, async (model) => {
      const prompt = ids[0]!.slice(0, 5);
      const fed: number[] = [];
      const trunk = model.trunk.bind(model);
      model.trunk = (inputs, opts) => {
        fed.push(inputs.inputIds!.shape[1]);
        return trunk(inputs, opts);
      };
      const o = { maxNewTokens: 8, temperature: 0, topP: 1, seed: 0, window: 64 };
      const cached = await generateIds(model, undefined, prompt, o);
      // 5 prompt tokens, then one at a time up to 8 positions; the 9th sees every token again under the long factors.
      assert.deepEqual(fed, [5, 1, 1, 1, 9, 1, 1, 1]);
      const uncached = await generateIds(model, undefined, prompt, { ...o, cache: false });
      assert.deepEqual(cached.ids, uncached.ids);
    });
  });
});
