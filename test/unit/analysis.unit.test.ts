/**
 * The analysis math on hand-made inputs: exact top-k, SPT decisions and budget sweeps, rank
 * allocation, the grafting update (against the formula, a hand-differentiated 2-parameter model and
 * finite differences on a tiny GPT-2), calibration error, task-vector merges on known vectors,
 * soups through the merge command, and leak checks.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AllocationReport, ImportanceReport, LocalizeReport, MergeJobParams } from '../../src/protocol';
import { allocateRanks, parseBudget, peftRankConfig, sptDecision, SptAllocator, type Candidate } from '../../sidecar/src/analysis/allocation';
import { CalibrationBins, evaluateDetailed } from '../../sidecar/src/analysis/evaluation';
import { Grafter, graftUpdate, maskOverlap, softFraction } from '../../sidecar/src/analysis/grafting';
import { gridAxes, layerFromName, sumGrid } from '../../sidecar/src/analysis/grid';
import { ImportanceAccumulator } from '../../sidecar/src/analysis/importance';
import { average, breadcrumbs, breadcrumbsMask, compeft, compeftBytes, dare, dareRng, disjointMerge, magnitudePrune, populationStd, ties } from '../../sidecar/src/analysis/task-vectors';
import { GlobalRanking, topKMask } from '../../sidecar/src/analysis/topk';
import type { Example } from '../../sidecar/src/data/dataset';
import { float32ToBfloat16, readSafetensors, toFloat32, toInt32, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { CancelledError, cliContext, type JobContext } from '../../sidecar/src/jobs/context';
import { jobParamsProblem } from '../../sidecar/src/jobs/manager';
import { runJob } from '../../sidecar/src/jobs/runners';
import type { Gpt2Config } from '../../sidecar/src/models/config';
import { randomModel } from '../../sidecar/src/models/init';
import { Model } from '../../sidecar/src/models/model';
import { runAllocate } from '../../sidecar/src/tasks/allocate';
import { InputError } from '../../sidecar/src/errors';
import { greedySoup, runMerge } from '../../sidecar/src/tasks/merge';
import { dataSpecForScores } from '../../sidecar/src/tasks/importance';
import { runLocalize } from '../../sidecar/src/tasks/localize';
import { evaluate } from '../../sidecar/src/train/evaluate';
import { Rng } from '../../sidecar/src/train/rng';
import { assertClose, assertNoLeak, fixture, useTestBackend } from '../helpers/numeric';

const tmp = mkdtempSync(join(tmpdir(), 'peft-lab-analysis-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
before(async () => {
  await useTestBackend();
});

const f32 = (xs: number[]) => Float32Array.from(xs);
const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-6, what = '') => {
  assert.equal(a.length, b.length, `${what} length`);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= tol * Math.max(1, Math.abs(b[i]!)), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
};

const tinyGpt2: Gpt2Config = {
  modelType: 'gpt2', architecture: 'GPT2LMHeadModel', hiddenSize: 8, numLayers: 2, numHeads: 2, headDim: 4, vocabSize: 16, maxPositions: 8,
  innerSize: 16, activation: 'gelu_new', layerNormEps: 1e-5, scaleAttnWeights: true, scaleAttnByInverseLayerIdx: false, tieWordEmbeddings: true,
};

describe('exact top-k', () => {
  it('selects exactly k entries, ties by array then index', () => {
    const r = new GlobalRanking([f32([1, 3, 1]), f32([1, 2])]);
    assert.deepEqual(r.counts(2), [1, 1]);
    assert.deepEqual(r.masks(3).map((m) => [...m]), [[1, 1, 0], [0, 1]]);
    assert.deepEqual(r.masks(4).map((m) => [...m]), [[1, 1, 1], [0, 1]]);
    assert.deepEqual(r.counts(0), [0, 0]);
    assert.deepEqual(r.counts(99), [3, 2]);
    assert.deepEqual([...topKMask(f32([0.5, NaN, 2, -1]), 2)], [1, 0, 1, 0]);
  });
});

/** The hand-made sensitivity map of the SPT tests (r = 1, α = 2, β = 2). */
const M1: Candidate = { name: 'm.layers.0.q.weight', layer: 0, type: 'q', shape: [2, 3], scores: f32([9, 8, 7, 0.1, 0.2, 0.3]), module: 'm.layers.0.q' };
const M2: Candidate = { name: 'm.layers.1.q.weight', layer: 1, type: 'q', shape: [2, 2], scores: f32([6, 0.5, 0.4, 0.05]), module: 'm.layers.1.q' };
const V1: Candidate = { name: 'm.layers.0.norm.weight', layer: 0, type: 'norm', shape: [4], scores: f32([5, 0.01, 0.02, 0.03]) };
const V2: Candidate = { name: 'm.layers.1.q.bias', layer: 1, type: 'q', shape: [2], scores: f32([0.001, 0.002]), module: 'm.layers.1.q' };
const OPTS = { r: 1, alphaRatio: 2, beta: 2 };

describe('SPT allocation', () => {
  it('applies the LoRA / sparse / whole-vector rule', () => {
    // Matrix 2×3: LoRA costs r(in+out) = 5, taken when c ≥ 5/2.
    assert.deepEqual(sptDecision(M1, 2, OPTS), { decision: 'sparse', cost: 2 });
    assert.deepEqual(sptDecision(M1, 3, OPTS), { decision: 'lora', cost: 5 });
    assert.deepEqual(sptDecision(M1, 0, OPTS), { decision: 'frozen', cost: 0 });
    // Vector of 4: whole when c ≥ 4/2.
    assert.deepEqual(sptDecision(V1, 1, OPTS), { decision: 'sparse', cost: 1 });
    assert.deepEqual(sptDecision(V1, 2, OPTS), { decision: 'full', cost: 4 });
  });

  it('gives the hand-computed decisions for k = 5 and hits a budget of 7 exactly', () => {
    const a = new SptAllocator([M1, M2, V1, V2], OPTS);
    // Top 5: 9, 8, 7 (M1), 6 (M2), 5 (V1).
    assert.deepEqual(a.decisions(5), [
      { selected: 3, decision: 'lora', cost: 5 },
      { selected: 1, decision: 'sparse', cost: 1 },
      { selected: 1, decision: 'sparse', cost: 1 },
      { selected: 0, decision: 'frozen', cost: 0 },
    ]);
    assert.deepEqual([2, 3, 4, 5, 6].map((k) => a.costAt(k)), [2, 5, 6, 7, 10]);
    assert.equal(a.maxK(7), 5);
    assert.equal(a.maxK(9), 5);
    // k = 7 gives M2 its LoRA (cost 10); 0.3, 0.2, 0.1 (M1) and 0.05 (M2) cost nothing more; 0.03 makes V1 whole.
    assert.deepEqual([7, 11, 12].map((k) => a.costAt(k)), [10, 10, 13]);
    assert.equal(a.maxK(10), 11);
    assert.equal(a.maxK(1), 1);
    assert.equal(a.maxK(0), 0);
    assert.deepEqual(a.masks(5).map((m) => [...m]), [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0]]);
  });

  it('cost is non-decreasing in k and the sweep lands on cost(k) ≤ B < cost(k + 1)', () => {
    const rng = new Rng(3);
    const cands: Candidate[] = [];
    for (let i = 0; i < 6; i++) {
      const shape = i % 3 === 2 ? [7] : [3 + i, 4];
      const n = shape.reduce((x, y) => x * y, 1);
      cands.push({ name: `t${i}`, layer: i % 2, type: 'x', shape, scores: Float32Array.from({ length: n }, () => rng.next() ** 3) });
    }
    const a = new SptAllocator(cands, { r: 2, alphaRatio: 10, beta: 5 });
    let prev = 0;
    for (let k = 0; k <= a.total; k++) {
      const c = a.costAt(k);
      assert.ok(c >= prev, `cost(${k}) = ${c} < cost(${k - 1}) = ${prev}`);
      prev = c;
    }
    for (const B of [0, 1, 5, 17, 40, 77, 120, 10_000]) {
      const k = a.maxK(B);
      assert.ok(a.costAt(k) <= B, `cost(${k}) > ${B}`);
      if (k < a.total) assert.ok(a.costAt(k + 1) > B, `budget ${B}: k = ${k} is not the largest`);
    }
  });

  it('parses budgets', () => {
    assert.equal(parseBudget('1%', 1000), 10);
    assert.equal(parseBudget('0.5%', 1000), 5);
    assert.equal(parseBudget('250', 1000), 250);
    assert.throws(() => parseBudget('lots', 1000), /budget/);
    assert.equal(parseBudget('100%', 1000), 1000);
    assert.equal(parseBudget('1000', 1000), 1000);
    assert.equal(parseBudget('1', 1000), 1);
  });

  it('refuses budgets that train nothing or more than the model, with a hint for a missing %', () => {
    assert.throws(() => parseBudget('0.5', 1000), /^RangeError: 0\.5 is not a whole number of parameters: did you mean 0\.5%\?$/);
    assert.throws(() => parseBudget('12.5', 1000), /did you mean 12\.5%\?/);
    assert.throws(() => parseBudget('0', 1000), /0 parameters trains nothing/);
    assert.throws(() => parseBudget('1001', 1000), /1001 parameters is more than the model's 1000/);
    assert.throws(() => parseBudget('150%', 1000), /\(0%, 100%\]; got '150%'/);
    assert.throws(() => parseBudget('0%', 1000), /\(0%, 100%\]/);
    assert.throws(() => parseBudget('0.01%', 1000), /0\.01% of 1000 parameters is less than one parameter/);
  });

  it('`allocate` on an importance folder writes the grid, the masks and PEFT rank patterns', async () => {
    const dir = join(tmp, 'imp');
    mkdirSync(dir, { recursive: true });
    const cands = [M1, M2, V1, V2];
    const tensors = cands.map((c) => ({ name: c.name, source: 'base' as const, layer: c.layer, type: c.type, shape: c.shape, numel: c.scores.length, totals: { fisher: c.scores.reduce((s, x) => s + x, 0) } }));
    const axes = gridAxes(2, ['q', 'norm']);
    const report: ImportanceReport = {
      version: 1, model: 'none', spec: '/w/a.peft.json', methods: ['fisher'], batches: 1, examples: 1, tokens: 1, meanLoss: 1, totalParams: 1000, scoresFile: 'scores.safetensors',
      tensors, grids: {}, numel: sumGrid(axes, tensors, (t) => t.numel), seconds: 0,
    };
    writeFileSync(join(dir, 'importance.json'), JSON.stringify(report));
    await writeSafetensors(join(dir, 'scores.safetensors'), Object.fromEntries(cands.map((c) => [`fisher.${c.name}`, { dtype: 'F32', shape: c.shape, data: c.scores } as HostTensor])));
    const out = join(tmp, 'alloc', 'allocation.json');
    const r = await runAllocate({ kind: 'allocate', importance: join(dir, 'scores.safetensors'), budgets: ['7', '2%'], ...OPTS, loraAlpha: 2, out }, cliContext());
    const rep = JSON.parse(readFileSync(out, 'utf8')) as AllocationReport;
    assert.deepEqual(rep, JSON.parse(JSON.stringify(r.report)));
    assert.equal(rep.spec, '/w/a.peft.json', 'the spec the scores were made for travels on (Train with this allocation)');
    const s = rep.spt[0]!;
    assert.deepEqual([s.target, s.k, s.cost, s.nextCost], [7, 5, 7, 10]);
    assert.deepEqual(s.grid.rows, ['embeddings/head', 'layer 0', 'layer 1']);
    assert.deepEqual(s.grid.values, [
      [null, null],
      [{ decision: 'lora', selected: 3, cost: 5, size: 6 }, null],
      [{ decision: 'sparse', selected: 1, cost: 1, size: 4 }, null],
    ]);
    assert.deepEqual(s.vectorGrid.values, [[null, null], [null, 1], [0, null]]);
    assert.deepEqual(s.allocation.lora, { targets: ['m.layers.0.q'], r: 1, alpha: 2, rankPattern: {}, alphaPattern: {}, params: 5 });
    const masks = await readSafetensors(s.allocation.sparse!.mask);
    assert.deepEqual([...masks.keys()], ['m.layers.1.q.weight']);
    assert.deepEqual([...toFloat32(masks.get('m.layers.1.q.weight')!)], [1, 0, 0, 0]);
    const norms = await readSafetensors(s.allocation.norms!.mask);
    assert.deepEqual([...toFloat32(norms.get('m.layers.0.norm.weight')!)], [1, 0, 0, 0]);
    assert.equal(rep.spt[1]!.target, 20);
    for (const rk of rep.rank) {
      assert.ok(rk.params <= rk.target, `rank allocation ${rk.params} over ${rk.target}`);
      assert.equal(rk.params, rk.modules.reduce((x, m) => x + m.params, 0));
    }
    // A report under another name is the one read (not the folder's importance.json).
    writeFileSync(join(dir, 'renamed.json'), JSON.stringify({ ...report, spec: '/w/b.peft.json' }));
    const r2 = await runAllocate({ kind: 'allocate', importance: join(dir, 'renamed.json'), budgets: ['7'], ...OPTS, out: join(tmp, 'alloc2.json') }, cliContext());
    assert.equal(r2.report.spec, '/w/b.peft.json');
    writeFileSync(join(dir, 'broken.json'), '{"broken');
    await assert.rejects(runAllocate({ kind: 'allocate', importance: join(dir, 'broken.json'), budgets: ['7'], ...OPTS, out: join(tmp, 'alloc3.json') }, cliContext()), (e: unknown) => e instanceof InputError && e.file === join(dir, 'broken.json'));
    // A bad budget is an argument error (the command line names it --budgets).
    await assert.rejects(
      runAllocate({ kind: 'allocate', importance: join(dir, 'renamed.json'), budgets: ['0.5'], ...OPTS, out: join(tmp, 'alloc4.json') }, cliContext()),
      (e: unknown) => e instanceof InputError && e.file === '' && e.where === 'budgets' && /did you mean 0\.5%\?/.test(e.message),
    );
  });
});

describe('rank allocation', () => {
  const mods = [
    { module: 'a', layer: 0, type: 'q', inFeatures: 16, outFeatures: 16, importance: 8 },
    { module: 'b', layer: 0, type: 'v', inFeatures: 16, outFeatures: 16, importance: 4 },
    { module: 'c', layer: 1, type: 'q', inFeatures: 16, outFeatures: 16, importance: 2 },
    { module: 'd', layer: 1, type: 'v', inFeatures: 16, outFeatures: 16, importance: 0 },
  ];
  it('stays within the budget, follows the importance order, and uses only allowed ranks', () => {
    for (const budget of [0, 50, 200, 500, 1000, 5000]) {
      const r = allocateRanks(mods, budget, [0, 2, 4, 8, 16]);
      const total = r.reduce((s, m) => s + m.params, 0);
      assert.ok(total <= budget, `${total} > ${budget}`);
      assert.ok(r.every((m) => [0, 2, 4, 8, 16].includes(m.rank) && m.params === m.rank * 32));
      for (let i = 1; i < r.length; i++) assert.ok(r[i - 1]!.rank >= r[i]!.rank, `budget ${budget}: ranks ${r.map((m) => m.rank)}`);
      assert.equal(r[3]!.rank, 0);
    }
    // 1000 parameters, shares 8:4:2 of 14 → ideal ranks 17.9, 8.9, 4.5: 16, 8, 4 = 896 parameters.
    assert.deepEqual(allocateRanks(mods, 1000, [0, 2, 4, 8, 16]).map((m) => m.rank), [16, 8, 4, 0]);
  });
  it('writes the PEFT config with the most common rank as r', () => {
    const cfg = peftRankConfig([{ module: 'x.q', rank: 8 }, { module: 'y.q', rank: 8 }, { module: 'z.q', rank: 4 }, { module: 'w.q', rank: 0 }], 2);
    assert.deepEqual(cfg, { targets: ['x.q', 'y.q', 'z.q'], r: 8, alpha: 16, rankPattern: { 'z.q': 4 }, alphaPattern: { 'z.q': 8 } });
  });
});

describe('grafting', () => {
  it('the update is S − lr (1−2γ) ⊙ (gθ ⊙ τ) ⊙ σ(S−b)(1−σ(S−b))', () => {
    const S = [0.3, 0.9, 0.1], gamma = [1, 0, 0], tau = [0.5, -2, 1], g = [0.2, 0.1, -0.3], lr = 100, b = 2;
    const out = tf.tidy(() => graftUpdate(tf.tensor1d(S), tf.tensor1d(gamma), tf.tensor1d(tau), tf.tensor1d(g), lr, b).dataSync());
    const sig = (x: number) => 1 / (1 + Math.exp(-x));
    const want = S.map((s, i) => s - lr * (1 - 2 * gamma[i]!) * g[i]! * tau[i]! * sig(s - b) * (1 - sig(s - b)));
    close(out, want, 1e-5, 'S');
    const f = tf.tidy(() => softFraction(tf.tensor1d(S), tf.tensor1d(gamma), b).dataSync());
    close(f, S.map((s, i) => gamma[i]! + (1 - 2 * gamma[i]!) * sig(s - b)), 1e-6, 'f');
  });

  it('matches a hand-differentiated 2-parameter model: L = ½(θ·x − y)²', async () => {
    // θ_pre = (1, −1), θ_ft = (3, −1.5): τ = (2, −0.5); ρ = 0.5 of N = 2 → γ = (1, 0).
    const pre = new Map([['w', tf.tensor1d([1, -1])]]);
    const tau = new Map([['w', tf.tensor1d([2, -0.5])]]);
    const x = [0.7, 1.3];
    const y = 0.25;
    const b = 1;
    const lr = 3;
    const g = await Grafter.create(pre, tau, { sparsity: 0.5, bias: b, lr, seed: 4 });
    try {
      assert.deepEqual([...(await g.baseMask('w').data())], [1, 0]);
      const S0 = Array.from(await g.logits('w').data());
      assert.ok(S0.every((s) => s >= 0 && s < 1), 'S ~ U[0, 1)');
      const sig = (z: number) => 1 / (1 + Math.exp(-z));
      const fOf = (S: number[]) => S.map((s, i) => [1, 0][i]! + (1 - 2 * [1, 0][i]!) * sig(s - b));
      const theta = (S: number[]) => fOf(S).map((f, i) => [1, -1][i]! + f * [2, -0.5][i]!);
      const loss = (S: number[]) => 0.5 * (theta(S)[0]! * x[0]! + theta(S)[1]! * x[1]! - y) ** 2;
      // ∂L/∂θ by hand at the soft graft, fed to the update.
      const th = theta(S0);
      const r = th[0]! * x[0]! + th[1]! * x[1]! - y;
      const soft = g.graft(false);
      close(await soft.get('w')!.data(), th, 1e-6, 'soft graft');
      tf.dispose([...soft.values()]);
      const gTheta = new Map([['w', tf.tensor1d([r * x[0]!, r * x[1]!])]]);
      g.update(gTheta);
      tf.dispose([...gTheta.values()]);
      const S1 = Array.from(await g.logits('w').data());
      // The step is −lr · ∂L/∂S, checked by central differences in float64.
      const eps = 1e-6;
      const dL = S0.map((_, i) => {
        const p = [...S0];
        const m = [...S0];
        p[i]! += eps;
        m[i]! -= eps;
        return (loss(p) - loss(m)) / (2 * eps);
      });
      close(S1, S0.map((s, i) => s - lr * dL[i]!), 1e-5, 'S after one step');
      // The rounded graft takes τ where γ is set (σ(S − b) < ½ everywhere here).
      const rounded = g.graft(true);
      close(await rounded.get('w')!.data(), [3, -1], 1e-6, 'rounded graft');
      tf.dispose([...rounded.values()]);
    } finally {
      g.dispose();
      tf.dispose([...pre.values(), ...tau.values()]);
    }
  });

  it('one update on a tiny GPT-2 equals −lr · ∂L/∂S by finite differences', async () => {
    const a = randomModel(tinyGpt2, 1, 0.2);
    const bModel = randomModel(tinyGpt2, 2, 0.2);
    const ids = tf.tensor2d([[1, 5, 3, 7, 2, 9], [4, 4, 0, 12, 15, 6]], [2, 6], 'int32');
    const names = a.paramInfo().filter((p) => p.layer >= 0 && p.name.endsWith('c_fc.weight')).map((p) => p.name);
    const pre = new Map(names.map((n) => [n, a.params.get(n)!]));
    const tau = new Map(names.map((n) => [n, tf.sub(bModel.params.get(n)!, a.params.get(n)!)]));
    const bias = 0; // σ' ≈ ¼: a difference float32 can see
    const lr = 1;
    const g = await Grafter.create(pre, tau, { sparsity: 0.3, bias, lr, seed: 9 });
    try {
      const n0 = names[0]!;
      // L(S) with entry i of the first tensor moved by d, at the current S.
      const lossAt = (i: number, d: number): number =>
        tf.tidy(() => {
          const over = new Map<string, tf.Tensor>();
          for (const n of names) {
            let S = g.logits(n);
            if (n === n0) S = tf.add(S, tf.mul(tf.reshape(tf.oneHot(tf.tensor1d([i], 'int32'), S.size), S.shape), d));
            over.set(n, tf.add(pre.get(n)!, tf.mul(softFraction(S, g.baseMask(n), bias), tau.get(n)!)));
          }
          return a.loss(a.forward({ inputIds: ids as tf.Tensor2D }, { overrides: over }), ids).dataSync()[0]!;
        });
      const S0 = Float32Array.from(await g.logits(n0).data());
      const eps = 0.01;
      const fd = Array.from(S0, (_, i) => (lossAt(i, eps) - lossAt(i, -eps)) / (2 * eps));
      const soft = g.graft(false);
      const { loss, grads } = a.lossAndGrads(names, { inputIds: ids as tf.Tensor2D }, ids, { extra: soft });
      tf.dispose([...soft.values(), loss]);
      g.update(grads);
      tf.dispose([...grads.values()]);
      const S1 = (await g.logits(n0).data()) as Float32Array;
      const step = Array.from(S0, (s, i) => (s - S1[i]!) / lr);
      const scale = Math.max(...step.map(Math.abs));
      assert.ok(scale > 1e-3, 'a visible step');
      step.forEach((v, i) => assert.ok(Math.abs(fd[i]! - v) <= 5e-3 * scale, `entry ${i}: step ${v} vs finite difference ${fd[i]}`));
    } finally {
      g.dispose();
      tf.dispose([...tau.values(), ids]);
      a.dispose();
      bModel.dispose();
    }
  });

  it('Jaccard overlap per layer and overall', () => {
    const a = new Map([['t.h.0.x', Uint8Array.from([1, 1, 0, 0])], ['t.h.1.x', Uint8Array.from([1, 0])]]);
    const b = new Map([['t.h.0.x', Uint8Array.from([1, 0, 1, 0])], ['t.h.1.y', Uint8Array.from([1, 1])]]);
    const o = maskOverlap(a, b, (n) => ({ layer: layerFromName(n), type: n.slice(-1) }), { a: 'A', b: 'B', numLayers: 2, columns: ['x', 'y'] });
    assert.equal(o.jaccard, 1 / 6);
    assert.deepEqual(o.perLayer.map((l) => [l.jaccard, l.both, l.a, l.b]), [[1 / 3, 1, 2, 2], [0, 0, 1, 2]]);
    assert.deepEqual(o.grid.values, [[null, null], [1 / 3, null], [0, 0]]); // cells neither mask touches are null
  });

  it('leaks no tensors', async () => {
    const pre = new Map([['w', tf.tensor2d([[1, 2], [3, 4]])]]);
    const tau = new Map([['w', tf.tensor2d([[0.1, -0.3], [0.2, 0]])]]);
    await assertNoLeak(async () => {
      const g = await Grafter.create(pre, tau, { sparsity: 0.5 });
      const grad = new Map([['w', tf.ones([2, 2])]]);
      g.update(grad);
      tf.dispose([...grad.values(), ...g.graft(true).values(), ...g.mask().values()]);
      g.dispose();
    });
    tf.dispose([...pre.values(), ...tau.values()]);
  });
});

describe('calibration and evaluation', () => {
  it('ECE over 15 bins', () => {
    const c = new CalibrationBins();
    c.add(0.9, true);
    c.add(0.9, false);
    c.add(0.2, false);
    assert.ok(Math.abs(c.ece() - ((2 / 3) * 0.4 + (1 / 3) * 0.2)) < 1e-12);
  });

  it('loss and exact match equal the training loop`s evaluate()', async () => {
    const m = randomModel(tinyGpt2, 5, 0.3);
    const ex = (ids: number[], prompt: number): Example => ({ kind: 'lm', ids: Int32Array.from(ids), labels: Int32Array.from(ids.map((v, i) => (i < prompt ? -100 : v))), completion: true, source: 'x' });
    const examples = [ex([1, 2, 3, 4, 5], 3), ex([6, 7, 8], 1), ex([9, 9, 9, 9, 9, 9], 4), ex([3, 3], 1)];
    const opts = { padId: 0, attentionMask: false };
    const ref = await evaluate(m, undefined, examples, 3, opts);
    const got = await assertNoLeak(() => evaluateDetailed(m, undefined, examples, 3, opts));
    assert.ok(Math.abs(got.loss - ref.loss) < 1e-6 && got.metric === ref.metric && got.count === ref.count);
    assert.ok(got.ece >= 0 && got.ece <= 1);
    m.dispose();
  });
});

describe('importance accumulator', () => {
  it('Σg², |Σg|, |w·Σg| over batches, without leaks', async () => {
    const w = tf.tensor1d([2, -1, 0.5]);
    const run = async () => {
      const acc = new ImportanceAccumulator(['w'], new Set(['fisher', 'grad-norm', 'taylor'] as const));
      acc.add(tf.scalar(1), new Map([['w', tf.tensor1d([1, 2, -3])]]));
      acc.add(tf.scalar(3), new Map([['w', tf.tensor1d([0.5, -2, 1])]]));
      const s = acc.scores(() => w);
      const out = {
        fisher: Array.from(await s.get('fisher')!.get('w')!.data()),
        gn: Array.from(await s.get('grad-norm')!.get('w')!.data()),
        taylor: Array.from(await s.get('taylor')!.get('w')!.data()),
        loss: await acc.meanLoss(),
      };
      for (const per of s.values()) tf.dispose([...per.values()]);
      acc.dispose();
      return out;
    };
    const r = await assertNoLeak(run);
    close(r.fisher, [1.25, 8, 10]);
    close(r.gn, [1.5, 0, 2]);
    close(r.taylor, [3, 0, 1]);
    assert.equal(r.loss, 2);
    w.dispose();
  });

  it("AdaLoRA's sensitivity: EMA of |w·g| times the EMA of its deviation (PEFT's RankAllocator, β = 0.85)", async () => {
    const w = tf.tensor1d([2, -1, 0.5]);
    const r = await assertNoLeak(async () => {
      const acc = new ImportanceAccumulator(['w'], new Set(['adalora'] as const), () => w);
      acc.add(tf.scalar(1), new Map([['w', tf.tensor1d([1, 2, -3])]]));
      acc.add(tf.scalar(1), new Map([['w', tf.tensor1d([0.5, -2, 1])]]));
      const s = acc.scores(() => w);
      const out = Array.from(await s.get('adalora')!.get('w')!.data());
      for (const per of s.values()) tf.dispose([...per.values()]);
      acc.dispose();
      return out;
    });
    // I = |w·g|: (2, 2, 1.5), then (1, 2, 0.5). Ī = 0.15·I₁ = (0.3, 0.3, 0.225), Ū = 0.15·|I₁ − Ī| = (0.255, 0.255, 0.19125);
    // Ī = 0.85·Ī + 0.15·I₂ = (0.405, 0.555, 0.26625), Ū = 0.85·Ū + 0.15·|I₂ − Ī| = (0.306, 0.4335, 0.197625).
    close(r, [0.405 * 0.306, 0.555 * 0.4335, 0.26625 * 0.197625], 1e-6, 'adalora');
    assert.throws(() => new ImportanceAccumulator(['w'], new Set(['adalora'] as const)), /need the tensors' values/);
    w.dispose();
  });
});

describe('task vectors', () => {
  it('Breadcrumbs masks the top β and bottom γ of |τ| per tensor', () => {
    const tau = f32([0.1, -5, 0.3, 2, -0.01, 1, 0.5, -0.2, 4, 0.05]);
    assert.deepEqual([...breadcrumbsMask(tau, 0.1, 0.3)], [0, 0, 1, 1, 0, 1, 1, 1, 1, 0]);
    const t2 = f32([1, 1, 1, 1, 1, 1, 1, 1, 1, 9]);
    // t2: the top 10% is index 9; in the order by |τ| (ties by index) the bottom 30% are indices 6, 7, 8.
    const m = breadcrumbs([tau, t2], { top: 0.1, bottom: 0.3, lambda: 0.5, weights: [1, 2] });
    const want = [1, 1, 0.15 + 1, 1 + 1, 1, 0.5 + 1, 0.25, -0.1, 2, 0];
    close(m, want, 1e-6, 'breadcrumbs');
  });

  it('ComPEFT keeps the top-k magnitudes as sign · α · σ(τ)', () => {
    const tau = f32([3, -1, 0.5, -4]);
    const sd = Math.sqrt(6.421875);
    assert.ok(Math.abs(populationStd(tau) - sd) < 1e-6);
    const c = compeft(tau, 0.5, 2);
    close(c.values, [2 * sd, 0, 0, -2 * sd], 1e-6, 'compeft');
    assert.equal(c.kept, 2);
    // 4 entries: positions as 2 indices of 2 bits (4 bits < 4-bit map), 2 sign bits → 1 byte, + 4 bytes of scale.
    assert.equal(compeftBytes(4, 2), 5);
  });

  it('TIES: trim, elect the sign by total mass, disjoint mean of the agreeing weighted entries', () => {
    const t1 = f32([1, -2, 3, 0.5]);
    const t2 = f32([-1, 1, 2, -3]);
    assert.deepEqual([...magnitudePrune(t1, 0.5)], [0, -2, 3, 0]);
    close(ties([t1, t2], { density: 0.5 }), [0, -2, 2.5, -3]);
    close(ties([t1, t2], { density: 0.5, weights: [1, 2] }), [0, -2, 3.5, -6]);
    close(ties([t1, t2], { density: 0.5, lambda: 2 }), [0, -4, 5, -6]);
    // Sign election on the unweighted pruned vectors; a zero total elects +.
    close(disjointMerge([f32([1, -1]), f32([-1, 1])], [3, 1]), [3, 1]);
  });

  it('DARE: keep with probability density, rescale by 1/density, seeded', () => {
    const tau = Float32Array.from({ length: 4000 }, (_, i) => (i % 7) - 3);
    const one = (seed: number) => dare([tau], { density: 0.25, rng: (t) => dareRng(seed, t, 'x') });
    const a = one(1);
    assert.deepEqual(a, one(1), 'seeded');
    assert.notDeepEqual(a, one(2));
    let kept = 0;
    a.forEach((v, i) => {
      if (v !== 0) {
        kept++;
        assert.equal(v, tau[i]! * 4);
      }
    });
    const nonzeroTau = tau.filter((v) => v !== 0).length;
    assert.ok(Math.abs(kept / nonzeroTau - 0.25) < 0.03, `kept ${kept} of ${nonzeroTau}`);
    // A fixed draw: keep entries 0 and 2 of the first vector, 1 and 2 of the second.
    class Fixed extends Rng {
      private i = 0;
      constructor(private readonly xs: number[]) {
        super(0);
      }
      override next(): number {
        return this.xs[this.i++]!;
      }
    }
    const draws = [[0.1, 0.9, 0.2, 0.8], [0.7, 0.3, 0.1, 0.6]];
    const t1 = f32([1, 2, -3, 4]);
    const t2 = f32([5, -6, 7, 8]);
    close(dare([t1, t2], { density: 0.5, weights: [1, 0.5], rng: (t) => new Fixed(draws[t]!) }), [2, -6, -6 + 7, 0]);
    // dare-ties: pruned (2, 0, −6, 0) and (0, −12, 14, 0); signs +, −, +, + → (2, −12·½, 14·½, 0).
    close(dare([t1, t2], { density: 0.5, weights: [1, 0.5], ties: true, rng: (t) => new Fixed(draws[t]!) }), [2, -6, 7, 0]);
    assert.deepEqual([...dare([t1], { density: 1, rng: (t) => dareRng(0, t, 'y') })], [...t1]);
  });

  it('a greedy soup ranks ingredients best first, keeps each that does not lower the soup, skips (not stops at) one that does', async () => {
    // Ingredient scores 0.5, 0.9, 0.7, 0.8 → order 1, 3, 2, 0. Soups: {1,3} 0.92 kept; {1,3,2} 0.85 skipped;
    // {1,3,0} 0.92 (equal) kept.
    const soups: Record<string, number> = { '1,3': 0.92, '1,2,3': 0.85, '0,1,3': 0.92 };
    const asked: number[][] = [];
    const r = await greedySoup(4, async (i) => [0.5, 0.9, 0.7, 0.8][i]!, async (set) => {
      asked.push(set);
      return soups[[...set].sort().join(',')]!;
    });
    assert.deepEqual(r.order, [1, 3, 2, 0]);
    assert.deepEqual(asked, [[1, 3], [1, 3, 2], [1, 3, 0]]);
    assert.deepEqual(r.included, [1, 3, 0]);
    assert.deepEqual(r.soupScores, [0.9, 0.92, 0.85, 0.92]);
    // Ties in the ingredients' scores keep the given order.
    assert.deepEqual((await greedySoup(3, async () => 1, async () => 0)).order, [0, 1, 2]);
  });

  it('merge refuses options out of range or that its method would ignore', async () => {
    const base = { kind: 'merge' as const, base: '/nonexistent', runs: ['a', 'b'], out: join(tmp, 'never') };
    const bad: [Partial<MergeJobParams>, string, RegExp][] = [
      [{ method: 'dare', density: 2 }, 'density', /must be in \(0, 1\], got 2/],
      [{ method: 'ties', density: 0 }, 'density', /must be in \(0, 1\]/],
      [{ method: 'soup-uniform', weights: [0, 0] }, 'weights', /equal weights/],
      [{ method: 'soup-uniform', lambda: 2 }, 'lambda', /task-vector scale/],
      [{ method: 'breadcrumbs', density: 0.5 }, 'density', /takes no density/],
      [{ method: 'breadcrumbs', top: 0.2, bottom: 0.8 }, 'bottom', /below 1/],
      [{ method: 'ties', top: 0.1 }, 'top', /only breadcrumbs/],
      [{ method: 'ties', alpha: 2 }, 'alpha', /only compeft/],
      [{ method: 'ties', seed: 3 }, 'seed', /only dare/],
    ];
    for (const [opts, where, msg] of bad) {
      await assert.rejects(runMerge({ ...base, method: 'ties', ...opts } as MergeJobParams, cliContext()), (e: unknown) => {
        assert.ok(e instanceof InputError, String(e));
        assert.equal(e.where, where);
        assert.match(e.message, msg);
        return true;
      });
    }
    assert.ok(!existsSync(join(tmp, 'never')));
  });

  it("one adapter folded into its base (Export Merged Model) computes PEFT's merge_and_unload logits", async () => {
    for (const name of ['gpt2-tiny', 'llama-tiny']) {
      const out = join(tmp, `${name}-merged`);
      await runMerge({ kind: 'merge', base: fixture('hf', name), runs: [fixture('peft', `${name}-lora`)], method: 'soup-uniform', out }, cliContext());
      const refs = await readSafetensors(fixture('peft', `${name}-lora`, 'refs.safetensors'));
      const m = await Model.load(out);
      try {
        const ids = tf.tensor2d(Array.from(toInt32(refs.get('input_ids')!)), [2, 16], 'int32');
        const logits = tf.tidy(() => m.forward({ inputIds: ids }).dataSync() as Float32Array);
        ids.dispose();
        assertClose(`${name} merged logits`, logits, toFloat32(refs.get('logits_merged')!), 1e-4);
      } finally {
        m.dispose();
      }
    }
  });

  it("a bf16 base merges into a bf16 model (the base checkpoint's dtype), as save_pretrained keeps it", async () => {
    const base = join(tmp, 'llama-bf16');
    mkdirSync(base, { recursive: true });
    copyFileSync(fixture('hf', 'llama-tiny', 'config.json'), join(base, 'config.json'));
    const f32 = await readSafetensors(fixture('hf', 'llama-tiny', 'model.safetensors'));
    await writeSafetensors(join(base, 'model.safetensors'), new Map([...f32].map(([n, t]) => [n, { dtype: 'BF16' as const, shape: t.shape, data: float32ToBfloat16(toFloat32(t)) }])));
    const out = join(tmp, 'llama-bf16-merged');
    await runMerge({ kind: 'merge', base, runs: [fixture('peft', 'llama-tiny-lora')], method: 'soup-uniform', out }, cliContext());
    const merged = await readSafetensors(join(out, 'model.safetensors'));
    assert.deepEqual([...new Set([...merged.values()].map((t) => t.dtype))], ['BF16']);
    // The same merge in float32 (from the float32 base), rounded: within bf16's precision.
    const ref = await readSafetensors(join(tmp, 'llama-tiny-merged', 'model.safetensors'));
    const name = 'model.layers.0.self_attn.q_proj.weight';
    assertClose('bf16 merged q_proj', toFloat32(merged.get(name)!), toFloat32(ref.get(name)!), 1e-2);
  });

  it('a uniform soup averages the fine-tuned weights, written as a loadable model folder', async () => {
    close(average([f32([1, 2]), f32([3, 6])]), [2, 4]);
    const baseDir = fixture('hf', 'gpt2-tiny');
    const base = await readSafetensors(join(baseDir, 'model.safetensors'));
    const runs: string[] = [];
    for (const k of [1, 2]) {
      const dir = join(tmp, `ft-${k}`);
      mkdirSync(dir, { recursive: true });
      copyFileSync(join(baseDir, 'config.json'), join(dir, 'config.json'));
      const t: Record<string, HostTensor> = {};
      for (const [n, h] of base) {
        const d = toFloat32(h);
        t[n] = { dtype: 'F32', shape: h.shape, data: n.includes('h.1.mlp') ? d.map((v, i) => v + k * 0.01 * ((i % 5) - 2)) : d };
      }
      await writeSafetensors(join(dir, 'model.safetensors'), t);
      runs.push(dir);
    }
    const out = join(tmp, 'soup');
    const r = await runMerge({ kind: 'merge', base: baseDir, runs, method: 'soup-uniform', out }, cliContext());
    assert.ok(r.report.changed > 0);
    assert.ok(r.report.perTensor.every((t) => t.name.includes('h.1.mlp')));
    const m = await Model.load(out);
    try {
      const name = 'transformer.h.1.mlp.c_fc.weight';
      const got = await m.params.get(name)!.data();
      const b = toFloat32(base.get(name) ?? base.get(name.replace(/^transformer\./, ''))!);
      close(got, b.map((v, i) => v + 1.5 * 0.01 * ((i % 5) - 2)), 1e-5, 'soup');
    } finally {
      m.dispose();
    }
    const rep = JSON.parse(readFileSync(join(out, 'merge.json'), 'utf8'));
    assert.equal(rep.method, 'soup-uniform');
    // Merging again into the same folder replaces the earlier merge; the base, a run, a file or a
    // folder of other files is refused before any compute, and left as it was.
    await runMerge({ kind: 'merge', base: baseDir, runs: runs.slice(0, 1), method: 'soup-uniform', out }, cliContext());
    const notes = join(tmp, 'notes.txt');
    writeFileSync(notes, 'notes');
    const link = join(tmp, 'base-link');
    symlinkSync(baseDir, link);
    const refused: [string, RegExp][] = [
      [baseDir, /is the base model folder/],
      [link, /is the base model folder \(through a link, /],
      [runs[1]!, /is the run folder/],
      [notes, /is a file/],
      [tmp, /holds other files than a merged model's/],
    ];
    for (const [target, msg] of refused) await assert.rejects(runMerge({ kind: 'merge', base: baseDir, runs, method: 'soup-uniform', out: target }, cliContext()), msg);
    assert.equal(readFileSync(notes, 'utf8'), 'notes');
    assert.ok(!existsSync(join(tmp, 'model.safetensors')) && !existsSync(join(tmp, 'merge.json')));
  });
});

describe('analysis jobs', () => {
  it('check their params on the wire', () => {
    assert.equal(jobParamsProblem({ kind: 'importance', model: 'm', inputs: 'x', out: 'o', methods: ['fisher'] }), undefined);
    assert.match(jobParamsProblem({ kind: 'importance', model: 'm', out: 'o' })!, /exactly one of 'data' and 'inputs'/);
    assert.match(jobParamsProblem({ kind: 'importance', model: 'm', data: 'd', out: 'o', methods: ['magic'] })!, /methods/);
    assert.equal(jobParamsProblem({ kind: 'allocate', importance: 'i', budgets: ['1%'], out: 'o' }), undefined);
    assert.match(jobParamsProblem({ kind: 'allocate', importance: 'i', budgets: [], out: 'o' })!, /budgets/);
    assert.equal(jobParamsProblem({ kind: 'localize', base: 'b', runs: ['r'], out: 'o', sparsity: [1e-3] }), undefined);
    assert.match(jobParamsProblem({ kind: 'localize', base: 'b', out: 'o' })!, /runs/);
    assert.equal(jobParamsProblem({ kind: 'merge', base: 'b', runs: ['a', 'b'], method: 'ties', out: 'o' }), undefined);
    assert.match(jobParamsProblem({ kind: 'merge', base: 'b', runs: ['a'], method: 'average', out: 'o' })!, /method/);
    assert.equal(jobParamsProblem({ kind: 'compare', spec: 's.peft.json' }), undefined);
    assert.equal(jobParamsProblem({ kind: 'compare', spec: 's.peft.json', outDir: '/o', workspaceRoot: '/w' }), undefined);
    assert.match(jobParamsProblem({ kind: 'compare' })!, /compare job: 'spec' must be a non-empty string/);
    assert.match(jobParamsProblem({ kind: 'compare', spec: 's', outDir: 3 })!, /compare job: 'outDir' must be a non-empty string/);
  });

  it('importance runs as a job with progress per batch and stops when cancelled', async () => {
    const inputs = fixture('hf', 'gpt2-tiny', 'refs.safetensors');
    const seen: number[] = [];
    const done = await runJob({ kind: 'importance', model: fixture('hf', 'gpt2-tiny'), spec: 'a.peft.json', inputs, batchSize: 1, batches: 3, methods: ['fisher'], out: join(tmp, 'job-imp') }, { ...cliContext(), progress: (p) => seen.push(p.done) });
    assert.equal(done.kind, 'importance');
    assert.equal(done.kind === 'importance' ? done.report.spec : undefined, join(process.cwd(), 'a.peft.json'), 'the spec, resolved, in the report');
    assert.deepEqual(seen, [1, 2, 3]);
    const ac = new AbortController();
    const ctx: JobContext = { signal: ac.signal, log: () => undefined, progress: () => ac.abort() };
    const before = tf.memory().numTensors;
    await assert.rejects(runJob({ kind: 'importance', model: fixture('hf', 'gpt2-tiny'), inputs, batchSize: 1, batches: 3, out: join(tmp, 'job-imp-2') }, ctx), CancelledError);
    assert.equal(tf.memory().numTensors, before, 'a cancelled job releases its tensors');
  });

  it("Score layers reads the data as the spec's training does (its fields and prompt template)", async () => {
    const data = join(tmp, 'alpaca.jsonl');
    writeFileSync(data, Array.from({ length: 4 }, (_, i) => JSON.stringify({ instruction: `Add ${i} and 1.`, input: '', output: String(i + 1) })).join('\n') + '\n');
    const spec = join(tmp, 'alpaca.peft.json');
    writeFileSync(spec, JSON.stringify({ model: 'peft-lab/tiny-gpt', data: { train: 'alpaca.jsonl', promptTemplate: 'Q: {instruction}{input}\nA: ', completionField: 'output', maxLength: 40 }, adapter: { kind: 'lora' } }));
    const read = dataSpecForScores(data, spec);
    assert.deepEqual([read.promptTemplate, read.completionField, read.maxLength, read.format], ['Q: {instruction}{input}\nA: ', 'output', 40, 'jsonl']);
    assert.equal(dataSpecForScores(data, undefined).promptTemplate, undefined);
    const job = (withSpec: boolean) =>
      runJob({ kind: 'importance', model: join(process.cwd(), 'media', 'models', 'tiny-gpt'), ...(withSpec ? { spec } : {}), data, batchSize: 2, batches: 1, methods: ['grad-norm'], out: join(tmp, `alpaca-imp-${withSpec}`) }, cliContext());
    assert.equal((await job(true)).kind, 'importance');
    await assert.rejects(job(false), /needs "text", "prompt" and "completion", or "messages"/);
  });

  it('localize: masks, gain recovered and overlap for two fine-tunes of a small GPT-2 (byte tokenizer)', async () => {
    const cfg: Gpt2Config = { ...tinyGpt2, hiddenSize: 16, numLayers: 2, numHeads: 2, headDim: 8, vocabSize: 257, maxPositions: 32, innerSize: 32 };
    const hf = { model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: 257, n_positions: 32, n_embd: 16, n_layer: 2, n_head: 2, n_inner: 32, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, tie_word_embeddings: true, bos_token_id: 256, eos_token_id: 256, pad_token_id: 256 };
    const write = async (dir: string, seed: number, noise: number) => {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'config.json'), JSON.stringify(hf));
      const base = randomModel(cfg, 11, 0.05);
      const t: Record<string, HostTensor> = {};
      const rng = new Rng(seed);
      for (const [n, x] of base.params) {
        const d = (await x.data()) as Float32Array;
        t[n] = { dtype: 'F32', shape: [...x.shape], data: n.includes('.h.') && noise > 0 ? d.map((v) => v + noise * (rng.next() - 0.5)) : d };
      }
      base.dispose();
      await writeSafetensors(join(dir, 'model.safetensors'), t);
    };
    const baseDir = join(tmp, 'loc-base');
    await write(baseDir, 0, 0);
    await write(join(tmp, 'loc-ft-a'), 1, 0.2);
    await write(join(tmp, 'loc-ft-b'), 2, 0.2);
    const data = join(tmp, 'loc.jsonl');
    writeFileSync(data, Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `${i}+${i}=`, completion: `${2 * i}` })).join('\n'));
    const out = join(tmp, 'loc-out');
    const r = await runLocalize({ kind: 'localize', base: baseDir, finetuned: [join(tmp, 'loc-ft-a'), join(tmp, 'loc-ft-b')], data, sparsity: [0.05], epochs: 2, batchSize: 4, lr: 1e6, out }, cliContext());
    const rep = JSON.parse(readFileSync(join(out, 'localize.json'), 'utf8')) as LocalizeReport;
    assert.deepEqual(rep, JSON.parse(JSON.stringify(r.report)));
    assert.equal(rep.runs.length, 2);
    for (const run of rep.runs) {
      assert.equal(run.metricName, 'exact_match');
      const l = run.levels[0]!;
      assert.equal(l.curve.length, 3);
      const masks = await readSafetensors(l.mask);
      let ones = 0;
      for (const [n, h] of masks) {
        assert.equal(h.dtype, 'U8');
        assert.ok(n.startsWith('transformer.h.'), `only block tensors are grafted: ${n}`);
        ones += toFloat32(h).reduce((x, v) => x + v, 0);
      }
      assert.equal(ones, l.grafted);
      assert.equal(l.baseMask, Math.floor(0.05 * l.candidates));
      assert.ok(Math.abs(l.fraction - l.grafted / l.candidates) < 1e-12);
      const want = (l.validation.loss - run.base.validation.loss) / (run.finetuned.validation.loss - run.base.validation.loss);
      assert.ok(Math.abs(l.recovered.loss! - want) < 1e-9);
      assert.ok(l.validation.ece >= 0 && l.validation.ece <= 1);
      assert.equal(l.layerDensity.length, 2);
      assert.equal(l.density.rows[0], 'embeddings/head');
    }
    assert.equal(rep.overlap?.length, 1);
    const o = rep.overlap![0]!;
    assert.ok(o.jaccard >= 0 && o.jaccard <= 1 && o.perLayer.length === 2);
  });
});

