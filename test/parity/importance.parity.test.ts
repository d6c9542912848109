/**
 * Importance scores against the fixtures' reference gradients (transformers 5.17, PyTorch): for one
 * batch, Fisher = g², grad-norm = |g|, Taylor = |w·g| within 1e-3 of the reference's largest value,
 * on every fixture model; over two one-row batches of equal length, Σ_b g_b = 2·g (the batch mean
 * is the mean of the row means), so grad-norm and Taylor double; Fisher equals the square of the
 * `grads` command; adapter tensors are scored with the base; nothing leaks.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ImportanceReport } from '../../src/protocol';
import { cliContext } from '../../sidecar/src/jobs/context';
import { readSafetensors, toFloat32, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { disposeBatch, readInputBatch } from '../../sidecar/src/io/tensors';
import { Model } from '../../sidecar/src/models/model';
import { runGrads } from '../../sidecar/src/tasks/forward';
import { runImportance } from '../../sidecar/src/tasks/importance';
import { loadAnyAdapter } from '../../sidecar/src/analysis/finetuned';
import { createAdapter } from '../../sidecar/src/adapters';
import { runAllocate } from '../../sidecar/src/tasks/allocate';
import { assertNoLeak, fixture, refGradName, useTestBackend } from '../helpers/numeric';


const TOL = 1e-3;
const tmp = mkdtempSync(join(tmpdir(), 'peft-lab-importance-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/**
 * max|a − ref| ≤ tol · scale, scale = max|ref| of the tensor, floored at 1e-6 of the method's
 * largest value over the model (key biases have an analytically zero gradient: PyTorch's value
 * there is rounding noise, as in hf.parity.test.ts).
 */
function check(what: string, a: Float32Array, ref: Float32Array, floor: number): number {
  assert.equal(a.length, ref.length, `${what}: length`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - ref[i]!));
  const scale = Math.max(maxAbs(ref), floor);
  assert.ok(d <= TOL * scale, `${what}: max|Δ| ${d.toExponential(3)} > ${TOL} × ${scale.toExponential(3)}`);
  return scale > 0 ? d / scale : 0;
}

async function importance(name: string, dir: string, inputs: string, extra: { batchSize?: number; adapter?: string } = {}) {
  const out = join(tmp, name);
  const r = await runImportance({ kind: 'importance', model: dir, inputs, out, ...(extra.batchSize ? { batchSize: extra.batchSize } : {}), ...(extra.adapter ? { adapter: extra.adapter } : {}) }, cliContext());
  const scores = await readSafetensors(join(out, 'scores.safetensors'));
  const report = JSON.parse(readFileSync(join(out, 'importance.json'), 'utf8')) as ImportanceReport;
  assert.deepEqual(report, JSON.parse(JSON.stringify(r.report)));
  return { scores, report };
}

const models = readdirSync(fixture('hf')).sort();
const worst: Record<string, number> = {};

describe('importance scores vs reference gradients', () => {
  before(async () => {
    await useTestBackend();
  });
  after(() => {
    process.stdout.write(`# worst max|Δ|/scale per model: ${JSON.stringify(worst)}\n`);
  });

  for (const name of models) {
    it(`${name}: fisher = g², grad-norm = |g|, taylor = |w·g| on one batch`, async () => {
      const dir = fixture('hf', name);
      const refsFile = fixture('hf', name, 'refs.safetensors');
      const refs = await readSafetensors(refsFile);
      const weights = await readSafetensors(join(dir, 'model.safetensors'));
      const { scores, report } = await importance(name, dir, refsFile);
      assert.equal(report.batches, 1);
      assert.deepEqual(report.methods, ['fisher', 'grad-norm', 'taylor']);
      const base = report.tensors.filter((t) => t.source === 'base');
      const refOf = (n: string) => toFloat32(refs.get(`grad.${refGradName(n)}`)!);
      const wOf = (n: string): Float32Array => toFloat32((weights.get(n) ?? weights.get(n.replace(/^(transformer|model|bert|vit)\./, '')))!);
      let gMax = 0;
      for (const t of base) gMax = Math.max(gMax, maxAbs(refOf(t.name)));
      let e = 0;
      for (const t of base) {
        const g = refOf(t.name);
        const w = wOf(t.name);
        const fisher = toFloat32(scores.get(`fisher.${t.name}`)!);
        const gn = toFloat32(scores.get(`grad-norm.${t.name}`)!);
        const taylor = toFloat32(scores.get(`taylor.${t.name}`)!);
        e = Math.max(e, check(`fisher ${t.name}`, fisher, g.map((x) => x * x), 1e-6 * gMax * gMax));
        e = Math.max(e, check(`grad-norm ${t.name}`, gn, g.map(Math.abs), 1e-6 * gMax));
        e = Math.max(e, check(`taylor ${t.name}`, taylor, g.map((x, i) => Math.abs(x * w[i]!)), 1e-6 * gMax * maxAbs(w)));
        // importance.json totals are the sums of the score tensors.
        const sum = (a: Float32Array) => a.reduce((s, x) => s + x, 0);
        assert.ok(Math.abs(t.totals.fisher! - sum(fisher)) <= 1e-5 * Math.max(1e-30, sum(fisher)), `total fisher ${t.name}`);
        assert.ok(Math.abs(t.gradNorm! - Math.sqrt(sum(g.map((x) => x * x)))) <= TOL * Math.max(Math.sqrt(sum(g.map((x) => x * x))), 1e-6 * gMax), `‖g‖ ${t.name}`);
      }
      worst[name] = e;
      // Every parameter of the checkpoint is scored; the grid puts every base tensor in one cell.
      assert.equal(base.length, [...refs.keys()].filter((k) => k.startsWith('grad.')).length);
      const f = report.grids.fisher!.sum;
      const cellSum = f.values.flat().reduce<number>((s, v) => s + (v ?? 0), 0);
      const tensorSum = base.reduce((s, t) => s + t.totals.fisher!, 0);
      assert.ok(Math.abs(cellSum - tensorSum) <= 1e-9 * tensorSum);
      assert.equal(f.rows[0], 'embeddings/head');
      assert.equal(f.rows.length, (report.numel.layers.length));
      assert.ok(report.activations && report.activations.modules.length > 0, 'activation scores');
    });
  }

  it('gpt2-tiny: two one-row batches of equal length: Σ_b g_b = 2g, so grad-norm and Taylor double', async () => {
    const dir = fixture('hf', 'gpt2-tiny');
    const refsFile = fixture('hf', 'gpt2-tiny', 'refs.safetensors');
    const refs = await readSafetensors(refsFile);
    const weights = await readSafetensors(join(dir, 'model.safetensors'));
    const { scores, report } = await importance('gpt2-split', dir, refsFile, { batchSize: 1 });
    assert.equal(report.batches, 2);
    assert.equal(report.examples, 2);
    let gMax = 0;
    for (const t of report.tensors) gMax = Math.max(gMax, maxAbs(toFloat32(refs.get(`grad.${t.name}`)!)));
    for (const t of report.tensors) {
      const g = toFloat32(refs.get(`grad.${t.name}`)!);
      const w = toFloat32((weights.get(t.name) ?? weights.get(t.name.replace(/^transformer\./, '')))!);
      check(`grad-norm ${t.name}`, toFloat32(scores.get(`grad-norm.${t.name}`)!), g.map((x) => 2 * Math.abs(x)), 2e-6 * gMax);
      check(`taylor ${t.name}`, toFloat32(scores.get(`taylor.${t.name}`)!), g.map((x, i) => 2 * Math.abs(x * w[i]!)), 2e-6 * gMax * maxAbs(w));
    }
    // Fisher over the two batches is g₁² + g₂² with g_b the gradient of row b alone.
    const model = await Model.load(dir);
    const batch = await readInputBatch(refsFile, 'tokens');
    try {
      const names = ['transformer.h.1.mlp.c_fc.weight', 'transformer.wte.weight'];
      const acc = names.map(() => undefined as Float32Array | undefined);
      for (let r = 0; r < 2; r++) {
        const ids = tf.slice(batch.inputs.inputIds!, r, 1) as tf.Tensor2D;
        const lab = tf.slice(batch.labels!, r, 1);
        const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, lab);
        for (let i = 0; i < names.length; i++) {
          const d = (await grads.get(names[i]!)!.data()) as Float32Array;
          acc[i] = acc[i] ? acc[i]!.map((x, j) => x + d[j]! * d[j]!) : d.map((x) => x * x);
        }
        tf.dispose([ids, lab, loss, ...grads.values()]);
      }
      names.forEach((n, i) => check(`fisher ${n}`, toFloat32(scores.get(`fisher.${n}`)!), acc[i]!, 0));
    } finally {
      disposeBatch(batch);
      model.dispose();
    }
  });

  it('llama-tiny: Fisher is the square of `peft-lab grads`', async () => {
    const dir = fixture('hf', 'llama-tiny');
    const refsFile = fixture('hf', 'llama-tiny', 'refs.safetensors');
    const gradsFile = join(tmp, 'llama-grads.safetensors');
    await runGrads({ kind: 'grads', model: dir, inputs: refsFile, out: gradsFile }, cliContext());
    const grads = await readSafetensors(gradsFile);
    const { scores } = await importance('llama-vs-grads', dir, refsFile);
    let n = 0;
    for (const [k, h] of grads) {
      if (!k.startsWith('grad.')) continue;
      const g = toFloat32(h);
      check(k, toFloat32(scores.get(`fisher.${k.slice(5)}`)!), g.map((x) => x * x), 0);
      n++;
    }
    assert.ok(n > 10);
  });

  it('llama-tiny + LoRA adapter: the adapter tensors are scored in the same pass, and nothing leaks', async () => {
    const dir = fixture('hf', 'llama-tiny');
    const adapterDir = fixture('peft', 'llama-tiny-lora');
    const refs = await readSafetensors(fixture('peft', 'llama-tiny-lora', 'refs.safetensors'));
    const ids = refs.get('input_ids')!;
    const inputs = join(tmp, 'lora-batch.safetensors');
    await writeSafetensors(inputs, { input_ids: ids, labels: ids } as Record<string, HostTensor>);
    await assertNoLeak(() => importance('llama-lora', dir, inputs, { adapter: adapterDir }));
    const { scores, report } = await importance('llama-lora', dir, inputs, { adapter: adapterDir });
    const ad = report.tensors.filter((t) => t.source === 'adapter');
    assert.ok(ad.length >= 28, `adapter tensors scored: ${ad.length}`);
    assert.ok(ad.every((t) => t.layer >= 0 && ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'].includes(t.type)), 'adapter tensors sit in their module cells');
    assert.ok(report.adapterGrids?.fisher);
    // Fisher of an adapter tensor = its gradient squared, computed directly.
    const model = await Model.load(dir);
    const adapter = await loadAnyAdapter(model, adapterDir);
    const batch = await readInputBatch(inputs, 'tokens');
    try {
      const n = ad[0]!.name;
      const { loss, grads } = model.lossAndGrads([n], batch.inputs, batch.labels!, { hooks: adapter.hooks, extra: adapter.overrides() });
      const g = (await grads.get(n)!.data()) as Float32Array;
      check(`fisher ${n}`, toFloat32(scores.get(`fisher.${n}`)!), g.map((x) => x * x), 0);
      tf.dispose([loss, ...grads.values()]);
    } finally {
      disposeBatch(batch);
      adapter.dispose();
      model.dispose();
    }
  });

  it('gpt2-tiny: allocations from the scores build the adapters they describe (sparse masks, LoRA rank patterns)', async () => {
    const dir = fixture('hf', 'gpt2-tiny');
    await importance('gpt2-alloc', dir, fixture('hf', 'gpt2-tiny', 'refs.safetensors'));
    const out = join(tmp, 'gpt2-alloc', 'allocation.json');
    const { report } = await runAllocate({ kind: 'allocate', importance: join(tmp, 'gpt2-alloc', 'importance.json'), budgets: ['1%', '5%'], candidates: 'linear', out }, cliContext());
    const model = await Model.load(dir);
    try {
      for (const s of report.spt) {
        assert.ok(s.cost <= s.target && (s.nextCost === null || s.nextCost > s.target));
        const a = s.allocation;
        assert.equal(a.trainableParams, (a.lora?.params ?? 0) + (a.sparse?.params ?? 0) + (a.norms?.params ?? 0));
        if (a.sparse) {
          const sparse = await createAdapter(model, { kind: 'sparse', mask: a.sparse.mask }, { seed: 0 });
          sparse.dispose();
        }
        if (a.lora) {
          const lora = await createAdapter(model, { kind: 'lora', targets: a.lora.targets, r: a.lora.r, alpha: a.lora.alpha, rankPattern: a.lora.rankPattern, alphaPattern: a.lora.alphaPattern }, { seed: 0 });
          const n = [...lora.trainable.values()].reduce((x, t) => x + t.size, 0);
          assert.equal(n, a.lora.params);
          lora.dispose();
        }
      }
      for (const r of report.rank) {
        const l = r.allocation.lora;
        if (!l) continue;
        const lora = await createAdapter(model, { kind: 'lora', targets: l.targets, r: l.r, alpha: l.alpha, rankPattern: l.rankPattern, alphaPattern: l.alphaPattern }, { seed: 0 });
        assert.equal([...lora.trainable.values()].reduce((x, t) => x + t.size, 0), r.params);
        assert.ok(r.params <= r.target);
        lora.dispose();
      }
    } finally {
      model.dispose();
    }
  });
});
