/**
 * AdaLoRA against Hugging Face PEFT (scripts/fixtures/make_adalora_fixture.py): PEFT trained an
 * AdaLoRA adapter a few steps and recorded every step. PEFT Lab, started from the same tensors,
 * computes the same loss (task loss plus the orthogonality penalty) and gradients, takes the same
 * AdamW step, and its RankAllocator reaches the same budgets and masks the same singular values; the
 * adapter PEFT saved (cut to its rank pattern) loads to PEFT's logits and exports to the same file.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { AdapterSpec } from '../../src/protocol';
import { createAdapter } from '../../sidecar/src/adapters/index';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { readSafetensors, toFloat32, toInt32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { toTf } from '../../sidecar/src/io/tensors';
import { Model } from '../../sidecar/src/models/model';
import { AdamW } from '../../sidecar/src/train/adamw';
import { assertClose, fixture, useTestBackend } from '../helpers/numeric';

const DIR = join(__dirname, '..', 'fixtures', 'peft-adalora');
const CASES = readdirSync(DIR).sort();
const BASES: Record<string, string> = { llama: 'llama-tiny', gpt2: 'gpt2-tiny' };

/** The spec the fixture's AdaLoraConfig corresponds to. */
function specOf(cfg: Record<string, unknown>): AdapterSpec {
  return {
    kind: 'adalora',
    targets: cfg.target_modules as string[],
    r: cfg.init_r as number,
    alpha: cfg.lora_alpha as number,
    adalora: { targetR: cfg.target_r as number, tinit: cfg.tinit as number, tfinal: cfg.tfinal as number, deltaT: cfg.deltaT as number, beta1: cfg.beta1 as number, beta2: cfg.beta2 as number, orthRegWeight: cfg.orth_reg_weight as number },
  };
}

describe('AdaLoRA against PEFT (test/fixtures/peft-adalora)', () => {
  before(async () => {
    await useTestBackend();
  });

  it('covers Linear and Conv1D modules', () => assert.deepEqual(CASES, ['gpt2-adalora', 'llama-adalora']));

  for (const name of CASES) {
    describe(name, () => {
      const dir = join(DIR, name);
      const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      const totalSteps = cfg.total_step as number;

      it('the saved adapter (ranks cut to its pattern) gives PEFT\'s logits, and exports to the same file', async () => {
        const model = await Model.load(fixture('hf', BASES[name.split('-')[0]!]!));
        const refs = await readSafetensors(join(dir, 'refs.safetensors'));
        const a = await loadPeftAdapter(model, dir);
        const ids = tf.tensor2d(toInt32(refs.get('input_ids')!), refs.get('input_ids')!.shape as [number, number], 'int32');
        try {
          const logits = tf.tidy(() => model.forward({ inputIds: ids }, { hooks: a.hooks, overrides: a.overrides() }).dataSync() as Float32Array);
          assertClose(`${name} logits`, logits, toFloat32(refs.get('logits')!), 2e-5);
          const { config, tensors } = await a.exportPeft();
          const saved = await readSafetensors(join(dir, 'adapter_model.safetensors'));
          assert.deepEqual([...tensors.keys()].sort(), [...saved.keys()].sort());
          for (const [k, t] of saved) assert.deepEqual(toFloat32(tensors.get(k)!), toFloat32(t), k);
          for (const key of ['peft_type', 'init_r', 'target_r', 'tinit', 'tfinal', 'deltaT', 'beta1', 'beta2', 'orth_reg_weight', 'total_step', 'lora_alpha', 'rank_pattern', 'task_type'])
            assert.deepEqual(config[key], cfg[key], key);
        } finally {
          ids.dispose();
          a.dispose();
          model.dispose();
        }
      });

      it('every step: PEFT\'s loss with the penalty, gradients, AdamW step, budget and masks', async () => {
        const model = await Model.load(fixture('hf', BASES[name.split('-')[0]!]!));
        const traj = await readSafetensors(join(dir, 'trajectory.safetensors'));
        const a = await createAdapter(model, specOf(cfg), { seed: 0 });
        const opt = new AdamW({ lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
        const get = (key: string): HostTensor => {
          const t = traj.get(key);
          assert.ok(t, `trajectory has ${key}`);
          return t;
        };
        try {
          const names = [...a.trainable.keys()];
          assert.deepEqual(names.sort(), [...traj.keys()].filter((k) => k.startsWith('init:')).map((k) => k.slice(5)).sort());
          for (const n of names) {
            a.trainable.get(n)!.dispose();
            a.trainable.set(n, tf.keep(toTf(get(`init:${n}`))));
          }
          assert.equal(a.training!.begin(totalSteps), undefined);
          const closeTo = (what: string, got: tf.Tensor, want: HostTensor, tol: number) => assertClose(what, got.dataSync() as Float32Array, toFloat32(want), tol);
          for (let step = 1; step <= totalSteps; step++) {
            const h = get(`${step}:input_ids`);
            const ids = tf.tensor2d(toInt32(h), h.shape as [number, number], 'int32');
            const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, ids, { hooks: a.hooks, extra: a.overrides(), training: true, penalty: a.training!.penalty });
            closeTo(`step ${step} loss`, loss, get(`${step}:loss`), 1e-5);
            for (const n of names) closeTo(`step ${step} grad ${n}`, grads.get(n)!, get(`${step}:grad:${n}`), 1e-4);
            opt.step(a.trainable, grads, 0.01);
            for (const n of names) closeTo(`step ${step} AdamW ${n}`, a.trainable.get(n)!, get(`${step}:pre:${n}`), 1e-4);
            const logged = await a.training!.afterStep(step, grads);
            assert.equal(logged.adalora_budget, toFloat32(get(`${step}:budget`))[0], `step ${step} budget`);
            for (const n of names.filter((x) => x.endsWith('lora_E'))) {
              const got = a.trainable.get(n)!.dataSync() as Float32Array;
              const want = toFloat32(get(`${step}:post:${n}`));
              assert.deepEqual(Array.from(got, (v) => v === 0), Array.from(want, (v) => v === 0), `step ${step}: the singular values of ${n} that are masked`);
              assertClose(`step ${step} ${n}`, got, want, 1e-4);
            }
            tf.dispose([ids, loss, ...grads.values()]);
          }
          // What the run exports is what PEFT saved: the same pattern, the same kept ranks (to float tolerance).
          const { config, tensors } = await a.exportPeft();
          assert.deepEqual(config.rank_pattern, cfg.rank_pattern);
          const saved = await readSafetensors(join(dir, 'adapter_model.safetensors'));
          for (const [k, t] of saved) {
            assert.deepEqual(tensors.get(k)?.shape, t.shape, k);
            assertClose(k, toFloat32(tensors.get(k)!), toFloat32(t), 1e-3);
          }
        } finally {
          opt.dispose();
          a.dispose();
          model.dispose();
        }
      });
    });
  }
});
