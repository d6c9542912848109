/**
 * LoHa, LoKr and VeRA pieces the PEFT-made fixtures (test/parity/peft-methods) do not single out:
 * PEFT's `factorization` table, LoKr's un-formed Kronecker product against a plain loop, VeRA's
 * init, the spec options each kind takes, and adapter_config.json errors of these types.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AdapterSpec } from '../../src/protocol';
import { createAdapter } from '../../sidecar/src/adapters/index';
import { factorization, LOHA, LOKR, lokrLayout, type DeltaModule } from '../../sidecar/src/adapters/lycoris';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { VERA_A, VERA_B } from '../../sidecar/src/adapters/vera';
import { InputError } from '../../sidecar/src/errors';
import { readSafetensors, writeSafetensors } from '../../sidecar/src/io/safetensors';
import type { LinearModuleInfo } from '../../sidecar/src/models/architecture';
import { Model } from '../../sidecar/src/models/model';
import { adapterOptionProblems } from '../../sidecar/src/spec/adapter-options';
import { assertNoLeak, fixture, useTestBackend } from '../helpers/numeric';

const METHODS = join(__dirname, '..', 'fixtures', 'peft-methods');
const tmp = mkdtempSync(join(tmpdir(), 'lycoris-vera-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const info = (outFeatures: number, inFeatures: number): LinearModuleInfo => ({ module: 'm', layer: 0, outFeatures, inFeatures, fanInFanOut: false }) as LinearModuleInfo;

describe('LoHa, LoKr, VeRA', () => {
  before(async () => {
    await useTestBackend();
  });

  it('factorization is PEFT\'s (values printed by peft.tuners.lokr.layer.factorization)', () => {
    const peft: [number, number, [number, number]][] = [
      [64, -1, [8, 8]], [128, -1, [8, 16]], [127, -1, [1, 127]], [768, -1, [24, 32]], [3072, -1, [48, 64]], [4096, -1, [64, 64]],
      [11008, -1, [86, 128]], [96, -1, [8, 12]], [1, -1, [1, 1]], [64, 4, [4, 16]], [64, 16, [16, 4]], [128, 4, [4, 32]],
      [100, 8, [5, 20]], [100, 3, [2, 50]], [768, 8, [8, 96]], [2304, -1, [48, 48]], [50, 7, [5, 10]],
    ];
    for (const [dim, factor, want] of peft) assert.deepEqual(factorization(dim, factor), want, `factorization(${dim}, ${factor})`);
  });

  it('LoKr applies W1 ⊗ W2 without forming it: equal to a plain loop over kron, and to the formed ΔW', () => {
    const layout = lokrLayout(info(12, 10), 1, false, -1); // out 12 = 3·4, in 10 = 2·5
    assert.deepEqual([layout.a, layout.b, layout.c, layout.d], [3, 4, 2, 5]);
    const w1 = tf.randomNormal([3, 2], 0, 1, 'float32', 1) as tf.Tensor2D;
    const w2 = tf.randomNormal([4, 5], 0, 1, 'float32', 2) as tf.Tensor2D;
    const x = tf.randomNormal([7, 10], 0, 1, 'float32', 3) as tf.Tensor2D;
    const mod: DeltaModule = { info: info(12, 10), r: 1, alpha: 1, scale: 1, factors: new Map<string, tf.Tensor>([['lokr_w1', w1], ['lokr_w2', w2]]) };
    const get = (n: string) => mod.factors.get(n) as tf.Tensor2D;
    const [W1, W2, X] = [w1.arraySync(), w2.arraySync(), x.arraySync()];
    const want: number[][] = X.map((row) => Array.from({ length: 12 }, (_, o) => {
      const [i, k] = [Math.floor(o / 4), o % 4];
      let sum = 0;
      for (let j = 0; j < 2; j++) for (let l = 0; l < 5; l++) sum += W1[i]![j]! * W2[k]![l]! * row[j * 5 + l]!;
      return sum;
    }));
    const applied = tf.tidy(() => LOKR.apply(x, get, mod).arraySync());
    const formed = tf.tidy(() => (tf.matMul(x, LOKR.delta(get, mod), false, true) as tf.Tensor2D).arraySync());
    for (const got of [applied, formed]) got.forEach((row, n) => row.forEach((v, o) => assert.ok(Math.abs(v - want[n]![o]!) < 1e-4, `[${n}, ${o}] ${v} vs ${want[n]![o]}`)));
    tf.dispose([w1, w2, x]);
  });

  it('LoHa: ΔW = (w1_a·w1_b) ⊙ (w2_a·w2_b)', () => {
    const f = new Map<string, tf.Tensor>([
      ['hada_w1_a', tf.tensor2d([[1, 2], [3, 4]])],
      ['hada_w1_b', tf.tensor2d([[1, 0, 1], [0, 1, 1]])],
      ['hada_w2_a', tf.tensor2d([[2, 0], [0, 1]])],
      ['hada_w2_b', tf.tensor2d([[1, 1, 1], [2, 0, 1]])],
    ]);
    const mod: DeltaModule = { info: info(2, 3), r: 2, alpha: 2, scale: 1, factors: f };
    // w1 = [[1,2,3],[3,4,7]], w2 = [[2,2,2],[2,0,1]]
    assert.deepEqual(tf.tidy(() => LOHA.delta((n) => f.get(n) as tf.Tensor2D, mod).arraySync()), [[2, 4, 6], [6, 0, 7]]);
    tf.dispose([...f.values()]);
  });

  it('VeRA\'s init: one pair of projections sized by the largest module, Kaiming-uniform with gain √2; λ_b = 0, λ_d = 0.1', async () => {
    const model = await Model.load(fixture('hf', 'gpt2-tiny'));
    try {
      await assertNoLeak(async () => {
        const a = await createAdapter(model, { kind: 'vera', r: 8, targets: ['c_attn', 'c_fc', 'mlp.c_proj'] }, { seed: 3 });
        try {
          // c_attn 64→192, c_fc 64→256, mlp.c_proj 256→64: in ≤ 256, out ≤ 256.
          assert.deepEqual(a.frozen.get(VERA_A)!.shape, [8, 256]);
          assert.deepEqual(a.frozen.get(VERA_B)!.shape, [256, 8]);
          assert.equal(a.frozen.size, 2, 'the projections are shared, not per module');
          const A = (await a.frozen.get(VERA_A)!.data()) as Float32Array;
          const B = (await a.frozen.get(VERA_B)!.data()) as Float32Array;
          const maxA = Math.max(...A.map(Math.abs));
          const maxB = Math.max(...B.map(Math.abs));
          assert.ok(maxA <= Math.sqrt(6 / 256) && maxA > 0.9 * Math.sqrt(6 / 256), `A within ±√(6/256): ${maxA}`);
          assert.ok(maxB <= Math.sqrt(6 / 8) && maxB > 0.9 * Math.sqrt(6 / 8), `B within ±√(6/8): ${maxB}`);
          const lb = (await a.trainable.get('transformer.h.0.attn.c_attn.vera_lambda_b')!.data()) as Float32Array;
          const ld = (await a.trainable.get('transformer.h.0.attn.c_attn.vera_lambda_d')!.data()) as Float32Array;
          assert.deepEqual([lb.length, ld.length], [192, 8]);
          assert.ok(lb.every((v) => v === 0) && ld.every((v) => Math.abs(v - 0.1) < 1e-7));
          const { config } = await a.exportPeft();
          assert.deepEqual([config.peft_type, config.r, config.save_projection, config.fan_in_fan_out, config.projection_prng_key], ['VERA', 8, true, true, 3]);
        } finally {
          a.dispose();
        }
      });
      // PEFT's default rank is 256.
      const d = await createAdapter(model, { kind: 'vera' }, { seed: 0 });
      assert.deepEqual(d.frozen.get(VERA_A)!.shape, [256, 64]);
      d.dispose();
    } finally {
      model.dispose();
    }
  });

  it('spec options: each kind takes its own; decomposeFactor is −1 or positive', () => {
    const problems = (a: AdapterSpec) => adapterOptionProblems(a).map(([k]) => k);
    assert.deepEqual(problems({ kind: 'loha', r: 4, alpha: 8, rankPattern: { q: 2 }, alphaPattern: { q: 2 }, modulesToSave: ['x'] }), []);
    assert.deepEqual(problems({ kind: 'loha', dropout: 0.1, decomposeBoth: true }), ['dropout', 'decomposeBoth']);
    assert.deepEqual(problems({ kind: 'lokr', decomposeBoth: true, decomposeFactor: 8 }), []);
    assert.deepEqual(problems({ kind: 'lokr', decomposeFactor: 0 }), ['decomposeFactor']);
    assert.deepEqual(problems({ kind: 'lokr', decomposeFactor: -2 }), ['decomposeFactor']);
    assert.deepEqual(problems({ kind: 'vera', r: 64, dropout: 0.1, bias: 'lora_only' }), []);
    assert.deepEqual(problems({ kind: 'vera', alpha: 8, rslora: true }), ['alpha', 'rslora']);
    assert.deepEqual(problems({ kind: 'lora', decomposeFactor: 4 }), ['decomposeFactor']);
  });

  it('PEFT\'s "lora_only" bias of a VeRA config reads as vera_only (PEFT takes any "<method>_only")', async () => {
    const dir = join(tmp, 'lora-only');
    cpSync(join(METHODS, 'bert-vera'), dir, { recursive: true });
    const cfgFile = join(dir, 'adapter_config.json');
    writeFileSync(cfgFile, JSON.stringify({ ...(JSON.parse(readFileSync(cfgFile, 'utf8')) as object), bias: 'lora_only' }));
    const model = await Model.load(fixture('hf', 'bert-cls-tiny'));
    try {
      const a = await loadPeftAdapter(model, dir);
      assert.equal(a.spec.bias, 'lora_only');
      assert.equal((await a.exportPeft()).config.bias, 'vera_only');
      a.dispose();
    } finally {
      model.dispose();
    }
  });

  it('a rank of 0 in a pattern fails without leaking the modules already made', async () => {
    const model = await Model.load(fixture('hf', 'llama-tiny'));
    try {
      const specs: AdapterSpec[] = [
        { kind: 'loha', targets: ['q_proj', 'v_proj'], rankPattern: { 'layers.1.self_attn.v_proj': 0 } },
        { kind: 'lokr', targets: ['q_proj', 'v_proj'], rankPattern: { 'layers.1.self_attn.v_proj': 0 } },
        { kind: 'lora', targets: ['embed_tokens', 'q_proj', 'v_proj'], rankPattern: { 'layers.1.self_attn.v_proj': 0 } },
      ];
      for (const spec of specs) {
        const n = tf.memory().numTensors;
        await assert.rejects(createAdapter(model, spec, { seed: 0 }), /rank of model\.layers\.1\.self_attn\.v_proj must be a positive integer/);
        assert.equal(tf.memory().numTensors, n, `${spec.kind}: no tensor left behind`);
      }
    } finally {
      model.dispose();
    }
  });

  describe('adapter_config.json errors name the file and the key', () => {
    const cases: [string, string, (cfg: Record<string, unknown>) => void, string, RegExp][] = [
      ['VeRA without its projections', 'llama-vera', (c) => (c.save_projection = false), 'save_projection', /cannot redraw them with PyTorch's generator/],
      ['VeRA bias value', 'llama-vera', (c) => (c.bias = 'some'), 'bias', /"none", "all" or "vera_only"/],
      ['VeRA rank that does not match the projections', 'llama-vera', (c) => (c.r = 8), 'base_model.vera_A', /shape \[16, 64\] does not match .* imply \[8, 64\]/],
      ['LoKr layout that does not match the file', 'bert-lokr', (c) => (c.decompose_both = false), 'base_model.model.bert.encoder.layer.0.attention.self.query.lokr_w1', /missing/],
      ['LoKr decompose_factor 0', 'llama-lokr', (c) => (c.decompose_factor = 0), 'decompose_factor', /-1 or a positive integer/],
      ['LoHa rank_pattern value', 'llama-loha', (c) => (c.rank_pattern = { down_proj: 0 }), 'rank_pattern.down_proj', /positive integer/],
      ['LoHa layers_to_transform that leaves tensors of the file out', 'llama-loha', (c) => (c.layers_to_transform = [0]), 'base_model.model.model.layers.1.mlp.down_proj.hada_w1_a', /does not belong to any module targeted/],
      ['LoHa layers_to_transform not a block index', 'llama-loha', (c) => (c.layers_to_transform = ['0']), 'layers_to_transform', /expected a block index or a list of them/],
    ];
    it('an adapted module PEFT Lab cannot adapt (PEFT\'s lm_head) is named as such', async () => {
      const dir = join(tmp, 'lm-head');
      cpSync(join(METHODS, 'llama-loha'), dir, { recursive: true });
      const file = join(dir, 'adapter_model.safetensors');
      const t = await readSafetensors(file);
      t.set('base_model.model.lm_head.hada_w1_a', { dtype: 'F32', shape: [128, 4], data: new Float32Array(512) });
      await writeSafetensors(file, t);
      const model = await Model.load(fixture('hf', 'llama-tiny'));
      try {
        await assert.rejects(loadPeftAdapter(model, dir), (e: unknown) => e instanceof InputError && e.where === 'base_model.model.lm_head.hada_w1_a' && /adapts lm_head, which PEFT Lab cannot: adapters act on this llama model's linear modules .* and LoRA also on model\.embed_tokens/.test(e.message));
      } finally {
        model.dispose();
      }
    });
    for (const [title, name, edit, key, msg] of cases) {
      it(title, async () => {
        const dir = join(tmp, title.replace(/\W+/g, '-'));
        cpSync(join(METHODS, name), dir, { recursive: true });
        const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
        edit(cfg);
        writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
        const model = await Model.load(fixture('hf', name.startsWith('bert') ? 'bert-cls-tiny' : 'llama-tiny'));
        const before = tf.memory().numTensors;
        try {
          await assert.rejects(loadPeftAdapter(model, dir), (e: unknown) => {
            assert.ok(e instanceof InputError, `expected an InputError, got ${String(e)}`);
            assert.equal(e.where, key);
            assert.equal(e.file, join(dir, key.startsWith('base_model.') ? 'adapter_model.safetensors' : 'adapter_config.json'));
            assert.match(e.message, msg);
            return true;
          });
          assert.equal(tf.memory().numTensors, before, 'a failed load leaks no tensors');
        } finally {
          model.dispose();
        }
      });
    }
  });
});
