/**
 * AdaLoRA's edges that the PEFT trajectory (test/parity/peft-adalora) does not reach: a module with
 * every rank pruned, schedules that cannot allocate, rank patterns saved from a live model, and
 * checkpoint state that does not fit the adapter.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAdapter } from '../../sidecar/src/adapters/index';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { InputError } from '../../sidecar/src/errors';
import { f32, readSafetensors, writeSafetensors } from '../../sidecar/src/io/safetensors';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, fixture, useTestBackend } from '../helpers/numeric';

const FIXTURE = join(__dirname, '..', 'fixtures', 'peft-adalora', 'llama-adalora');
const Q0 = 'model.layers.0.self_attn.q_proj';
const tmp = mkdtempSync(join(tmpdir(), 'adalora-unit-'));
let model: Model;

/** The llama fixture with its config (and, optionally, file) edited. */
async function edited(name: string, editConfig: (c: Record<string, unknown>) => void, editTensors?: (t: Map<string, ReturnType<typeof f32>>) => void): Promise<string> {
  const dir = join(tmp, name);
  cpSync(FIXTURE, dir, { recursive: true });
  const cfgFile = join(dir, 'adapter_config.json');
  const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  editConfig(cfg);
  writeFileSync(cfgFile, JSON.stringify(cfg));
  if (editTensors) {
    const file = join(dir, 'adapter_model.safetensors');
    const t = await readSafetensors(file);
    editTensors(t as Map<string, ReturnType<typeof f32>>);
    await writeSafetensors(file, t);
  }
  return dir;
}

describe('AdaLoRA edges', () => {
  before(async () => {
    await useTestBackend();
    model = await Model.load(fixture('hf', 'llama-tiny'));
  });
  after(() => {
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('a module with every rank pruned adds nothing, in the forward pass and when merged', async () => {
    const dir = await edited(
      'rank0',
      (c) => ((c.rank_pattern as Record<string, boolean[]>)[`${Q0}.lora_E`] = Array(6).fill(false)),
      (t) => {
        t.set(`base_model.model.${Q0}.lora_A`, f32([0, 64], []));
        t.set(`base_model.model.${Q0}.lora_E`, f32([0, 1], []));
        t.set(`base_model.model.${Q0}.lora_B`, f32([64, 0], []));
      },
    );
    const a = await loadPeftAdapter(model, dir);
    const ids = tf.tensor2d([[1, 5, 9, 30, 2, 7]], [1, 6], 'int32');
    try {
      assert.ok(!a.hooks.linear!.has(Q0));
      const hooked = tf.tidy(() => model.forward({ inputIds: ids }, { hooks: a.hooks, overrides: a.overrides() }).dataSync() as Float32Array);
      const merged = a.merged();
      assert.ok(!merged.has(`${Q0}.weight`), 'the pruned module is not folded');
      const folded = tf.tidy(() => model.forward({ inputIds: ids }, { overrides: merged }).dataSync() as Float32Array);
      tf.dispose([...merged.values()]);
      assertClose('merged logits', folded, hooked, 1e-5);
      assert.deepEqual(((await a.exportPeft()).tensors.get(`base_model.model.${Q0}.lora_A`))?.shape, [0, 64]);
    } finally {
      ids.dispose();
      a.dispose();
    }
  });

  it('rank_pattern keys saved from a live model (with the adapter\'s name) load; lora_alpha ≤ 0 with a pattern is refused', async () => {
    const named = await edited('named', (c) => {
      const p = c.rank_pattern as Record<string, boolean[]>;
      c.rank_pattern = Object.fromEntries(Object.entries(p).map(([k, v]) => [`${k}.default`, v]));
    });
    (await loadPeftAdapter(model, named)).dispose();
    const zero = await edited('alpha0', (c) => (c.lora_alpha = 0));
    await assert.rejects(loadPeftAdapter(model, zero), (e: unknown) => e instanceof InputError && e.where === 'lora_alpha' && /scales each module by its kept rank/.test(e.message));
  });

  it('schedules that cannot allocate are refused before training', async () => {
    const a = await createAdapter(model, { kind: 'adalora', r: 4, adalora: { targetR: 2, tfinal: 4 } }, { seed: 0 });
    try {
      assert.match(a.training!.begin(5)!, /the rank pattern would be fixed at step 1, before any step has scored the ranks: make tfinal \(4\) at most 3/);
      assert.match(a.training!.begin(4)!, /tinit \(0\) must be below the run's 4 steps less tfinal \(4\)/);
      assert.equal(a.training!.begin(6), undefined);
    } finally {
      a.dispose();
    }
    const b = await createAdapter(model, { kind: 'adalora', r: 4, adalora: { targetR: 6 } }, { seed: 0 });
    assert.match(b.training!.begin(10)!, /targetR \(6\) exceeds the initial rank r \(4\)/);
    b.dispose();
  });

  it('checkpoint state that does not fit the adapter is an error, and leaves the scores as they were', async () => {
    const a = await createAdapter(model, { kind: 'adalora', r: 4, targets: ['q_proj'] }, { seed: 0 });
    try {
      a.training!.begin(10);
      const n = tf.memory().numTensors;
      const good = f32([4, 1], [1, 2, 3, 4]);
      assert.throws(() => a.training!.restore(new Map([[`ipt.${Q0}.lora_E`, f32([3, 1], [1, 2, 3])]]), { rankPattern: null }), /ipt\.model\.layers\.0\.self_attn\.q_proj\.lora_E: shape \[3, 1\] differs from the tensor's \[4, 1\]/);
      assert.throws(() => a.training!.restore(new Map([['ipt.nope', good]]), { rankPattern: null }), /ipt\.nope: not a score of this adapter's tensors/);
      assert.throws(() => a.training!.restore(new Map(), { rankPattern: { [Q0]: [true, false] } }), /rank pattern of model\.layers\.0\.self_attn\.q_proj: not one of this adapter's modules at rank 4/);
      assert.equal(tf.memory().numTensors, n);
      a.training!.restore(new Map([[`ipt.${Q0}.lora_E`, good], [`unc.${Q0}.lora_E`, good]]), { rankPattern: { [Q0]: [true, false, true, true] } });
      assert.equal(tf.memory().numTensors, n + 2);
    } finally {
      a.dispose();
    }
  });
});
