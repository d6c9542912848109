/**
 * Parity with Hugging Face PEFT 0.21 on every adapter in ../shared/fixtures/peft: the adapter folder
 * loaded onto its base (../hf/<base_model_name_or_path>) gives PEFT's logits within 1e-4·max|ref|,
 * the merged weights give PEFT's merged logits, and an export reloads to the same logits.
 *
 * PiSSA / LoRA-GA adapters were saved unconverted: their A and B act on the residual base
 * W − s·B₀A₀ that PEFT kept in place of W (the refs' `base.<...>.base_layer.weight`). PiSSA's
 * residual is recomputed on load, as PEFT's from_pretrained does; LoRA-GA's needs the gradient, so
 * the test passes the refs' residuals. Either way the adapter applies to the ORIGINAL base model.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadPeftAdapter, savePeftAdapter } from '../../sidecar/src/adapters/peft';
import type { AdapterInstance } from '../../sidecar/src/adapters/types';
import { readSafetensors, toFloat32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { disposeBatch, readInputBatch, type InputBatch } from '../../sidecar/src/io/tensors';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, assertNoLeak, fixture, relMaxError, useTestBackend } from '../helpers/numeric';

const adapters = readdirSync(fixture('peft')).sort();
/** Errors measured, printed at the end (max|Δ| / max|ref|). */
const measured: Record<string, number> = {};

/** The refs' residual base weights, keyed by base weight name. */
function residualsOf(refs: Map<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [k, v] of refs) {
    const m = /^base\.base_model\.model\.(.+)\.base_layer\.weight$/.exec(k);
    if (m) out.set(`${m[1]}.weight`, v);
  }
  return out;
}

async function logitsOf(model: Model, batch: InputBatch, adapter?: AdapterInstance, overrides?: ReadonlyMap<string, tf.Tensor>): Promise<Float32Array> {
  const logits = tf.tidy(() => model.forward(batch.inputs, adapter ? { hooks: adapter.hooks, overrides: adapter.overrides() } : { overrides }));
  const data = (await logits.data()) as Float32Array;
  logits.dispose();
  return data;
}

describe('PEFT adapter parity', () => {
  before(async () => {
    await useTestBackend();
  });
  after(() => {
    // One line per measurement, for the report.
    for (const [k, v] of Object.entries(measured)) process.stdout.write(`# parity ${k}: ${v.toExponential(2)}\n`);
  });

  it('covers the four fixture adapters', () => {
    assert.deepEqual(adapters, ['gpt2-tiny-lora', 'llama-tiny-lora', 'llama-tiny-loraga', 'llama-tiny-pissa']);
  });

  for (const name of adapters) {
    describe(name, () => {
      const dir = fixture('peft', name);
      const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as { base_model_name_or_path: string; init_lora_weights: unknown };
      let model: Model;
      let refs: Map<string, HostTensor>;
      let batch: InputBatch;
      let residuals: Map<string, HostTensor>;
      const opts = () => (residuals.size && config.init_lora_weights !== 'pissa' ? { residuals } : {});
      before(async () => {
        model = await Model.load(fixture('hf', config.base_model_name_or_path));
        refs = await readSafetensors(join(dir, 'refs.safetensors'));
        batch = await readInputBatch(join(dir, 'refs.safetensors'), model.arch.inputKind);
        residuals = residualsOf(refs);
      });
      after(() => {
        disposeBatch(batch);
        model.dispose();
      });

      it('logits of base + adapter match PEFT (on the original base), without leaking tensors', async () => {
        const ref = toFloat32(refs.get('logits')!);
        await assertNoLeak(async () => {
          const adapter = await loadPeftAdapter(model, dir, opts());
          try {
            measured[`${name} logits`] = assertClose('logits', await logitsOf(model, batch, adapter), ref, 1e-4);
          } finally {
            adapter.dispose();
          }
        });
      });

      // Only data-aware inits (PiSSA, LoRA-GA) keep a residual base; plain LoRA fixtures have none.
      const init = (JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as { init_lora_weights: unknown }).init_lora_weights;
      if (typeof init === 'string') it('the residual base PEFT kept is the one the adapter acts on', async () => {
        assert.ok(residuals.size > 0, 'a data-aware init fixture without base.* residuals');
        if (config.init_lora_weights === 'pissa') {
          // Recomputed from the original base on load (SVD), as PEFT's from_pretrained does.
          const adapter = await loadPeftAdapter(model, dir);
          try {
            for (const [w, res] of residuals) {
              const ours = adapter.frozen.get(w);
              assert.ok(ours, `no residual for ${w}`);
              const err = relMaxError((await ours.data()) as Float32Array, toFloat32(res));
              measured[`${name} recomputed residual ${w}`] = err;
              assert.ok(err < 1e-5, `${w}: residual differs by ${err}`);
            }
          } finally {
            adapter.dispose();
          }
        }
        // With the residual model itself as the base (what PEFT had in memory), the file is a plain LoRA on it
        // (PiSSA: told so by passing the base's own weights as residuals, or it would factorise the residual again).
        const resModel = new Model(model.config, new Map([...model.params].map(([k, v]) => [k, residuals.has(k) ? tf.keep(tf.tensor(toFloat32(residuals.get(k)!), v.shape)) : v])));
        const adapter2 = await loadPeftAdapter(resModel, dir, config.init_lora_weights === 'pissa' ? { residuals } : {});
        try {
          measured[`${name} logits on the residual model`] = assertClose('logits on the residual model', await logitsOf(resModel, batch, adapter2), toFloat32(refs.get('logits')!), 1e-4);
        } finally {
          adapter2.dispose();
          for (const k of residuals.keys()) resModel.params.get(k)!.dispose();
        }
      });

      it('merged weights reproduce PEFT’s merged logits (and unmerge restores the base)', async (t) => {
        const adapter = await loadPeftAdapter(model, dir, opts());
        const merged = adapter.merged();
        try {
          const ref = refs.get('logits_merged') ?? refs.get('logits')!;
          const err = assertClose('merged logits', await logitsOf(model, batch, undefined, merged), toFloat32(ref), 1e-4);
          measured[`${name} ${refs.has('logits_merged') ? 'logits_merged' : 'merged vs logits'}`] = err;
          const restored = adapter.unmerge(merged);
          try {
            for (const [k, v] of restored) {
              const base = model.params.get(k)!;
              const e = relMaxError((await v.data()) as Float32Array, (await base.data()) as Float32Array);
              assert.ok(e < 1e-5, `unmerge of ${k}: ${e}`);
            }
          } finally {
            tf.dispose([...restored.values()]);
          }
          if (!refs.has('logits_merged')) t.diagnostic('no logits_merged in this fixture: compared with logits');
        } finally {
          tf.dispose([...merged.values()]);
          adapter.dispose();
        }
      });

      it('exports to PEFT format and reloads on the original base to the same logits', async () => {
        const out = mkdtempSync(join(tmpdir(), 'peft-parity-'));
        try {
          const adapter = await loadPeftAdapter(model, dir, opts());
          try {
            await savePeftAdapter(join(out, 'a'), adapter, { baseModel: config.base_model_name_or_path });
          } finally {
            adapter.dispose();
          }
          const saved = JSON.parse(readFileSync(join(out, 'a', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
          const original = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
          assert.deepEqual(Object.keys(saved).sort(), Object.keys(original).sort(), 'the exported config has the keys PEFT 0.21 writes');
          if (residuals.size) {
            assert.equal(saved.init_lora_weights, true);
            assert.equal(saved.r, 2 * (original.r as number));
            assert.equal(saved.lora_alpha, 2 * (original.lora_alpha as number));
          } else {
            // A plain LoRA round-trips bit for bit.
            const a = await readSafetensors(join(dir, 'adapter_model.safetensors'));
            const b = await readSafetensors(join(out, 'a', 'adapter_model.safetensors'));
            assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
            for (const [k, v] of a) assert.deepEqual(toFloat32(b.get(k)!), toFloat32(v), k);
          }
          const back = await loadPeftAdapter(model, join(out, 'a'));
          try {
            const err = assertClose('reloaded logits', await logitsOf(model, batch, back), toFloat32(refs.get('logits')!), 1e-4);
            measured[`${name} exported+reloaded`] = err;
            assert.equal(back.frozen.size, 0, 'the converted export needs no residual');
          } finally {
            back.dispose();
          }
        } finally {
          rmSync(out, { recursive: true, force: true });
        }
      });
    });
  }
});
