/**
 * LoRA inits (sidecar/src/adapters/inits) on synthetic matrices: OLoRA's QR, PiSSA's and CorDA's
 * component choice, the CorDA damping loop, covariance collection, bad inputs, tensor leaks, and
 * one `peft-lab adapter-init` run as a child process.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  collectCovariances,
  cordaDecompose,
  cordaInit,
  dampCovariance,
  estimateGradients,
  loraGaInit,
  loraInitProvider,
  oloraInit,
  pissaInit,
  randomInit,
  svdLowRank,
  thinQr,
  thinSvd,
} from '../../sidecar/src/adapters/inits';
import { Matrix, outInMatrix } from '../../sidecar/src/adapters/inits/linalg';
import { mulberry32 } from '../../sidecar/src/adapters/inits/methods';
import { readSafetensors } from '../../sidecar/src/io/safetensors';
import type { LinearHook } from '../../sidecar/src/models/forward';
import { Model } from '../../sidecar/src/models/model';
import { RESIDUAL_FILE, runAdapterInit, validateAdapterInit } from '../../sidecar/src/tasks/adapter-init';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { main } from '../../sidecar/src/cli';
import { InputError } from '../../sidecar/src/errors';
import { assertClose, assertNoLeak, fixture, relMaxError, useTestBackend } from '../helpers/numeric';
import type { CalibrationRow } from '../../sidecar/src/adapters/inits/calibration';
import type { LoadedData } from '../../sidecar/src/data/dataset';
import { calibrationRows } from '../../sidecar/src/train/adapter-bridge';

const ROOT = join(__dirname, '..', '..');
const tmpRoot = mkdtempSync(join(tmpdir(), 'peft-lab-inits-unit-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

function randn(rows: number, cols: number, seed: number): Matrix {
  const rand = mulberry32(seed);
  const m = new Matrix(rows, cols);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      const u = 1 - rand();
      m.set(i, j, Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand()));
    }
  return m;
}

/** A stored weight from an [out, in] matrix, optionally in Conv1D layout. */
function stored(W: Matrix, fanInFanOut = false) {
  const data = fanInFanOut ? Float32Array.from(W.transpose().to1DArray()) : Float32Array.from(W.to1DArray());
  return { data, outFeatures: W.rows, inFeatures: W.columns, fanInFanOut };
}

const mat = (data: ArrayLike<number>, rows: number, cols: number) => Matrix.from1DArray(rows, cols, Array.from(data));

/** residual + s·B·A, back as an [out, in] matrix. */
function rebuild(x: { A: Float32Array; B: Float32Array; residual: Float32Array }, out: number, inn: number, r: number, s: number, fanInFanOut = false): Matrix {
  const res = outInMatrix({ data: x.residual, outFeatures: out, inFeatures: inn, fanInFanOut });
  return res.add(mat(x.B, out, r).mmul(mat(x.A, r, inn)).mul(s));
}

describe('OLoRA', () => {
  for (const [out, inn] of [[24, 16], [12, 20]] as const) {
    it(`B = Q[:, :r] is orthonormal, A = R[:r] is upper triangular, W_res + s·B·A = W (${out}×${inn})`, () => {
      const W = randn(out, inn, out);
      const r = 5;
      const s = 3;
      const x = oloraInit(stored(W), r, s);
      const B = mat(x.B, out, r);
      const A = mat(x.A, r, inn);
      const BtB = B.transpose().mmul(B);
      for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) assert.ok(Math.abs(BtB.get(i, j) - (i === j ? 1 : 0)) < 1e-6, `QᵀQ[${i},${j}] = ${BtB.get(i, j)}`);
      for (let i = 0; i < r; i++) for (let j = 0; j < i; j++) assert.ok(Math.abs(A.get(i, j)) < 1e-6, `R[${i},${j}] = ${A.get(i, j)}`);
      // PEFT does not divide by s: B·A is the first r terms of Q R.
      const { Q, R } = thinQr(W);
      assertClose('B·A = Q_r R_r', B.mmul(A).to1DArray(), Q.subMatrix(0, out - 1, 0, r - 1).mmul(R.subMatrix(0, r - 1, 0, inn - 1)).to1DArray(), 1e-6);
      assertClose('W rebuilt', rebuild(x, out, inn, r, s).to1DArray(), W.to1DArray(), 1e-6);
    });
  }

  it('thinQr matches torch.linalg.qr(mode="reduced") shapes and reconstructs', () => {
    for (const [m, n] of [[7, 4], [4, 7], [5, 5]]) {
      const a = randn(m!, n!, m! * 10 + n!);
      const { Q, R } = thinQr(a);
      const k = Math.min(m!, n!);
      assert.deepEqual([Q.rows, Q.columns, R.rows, R.columns], [m, k, k, n]);
      assertClose('QR = a', Q.mmul(R).to1DArray(), a.to1DArray(), 1e-12);
    }
  });
});

describe('PiSSA', () => {
  it('s·B·A is the best rank-r approximation and the residual holds the other singular values', () => {
    const W = randn(20, 30, 7);
    const r = 4;
    const s = 0.5;
    const x = pissaInit(stored(W), r, s);
    const { S } = thinSvd(W);
    const res = outInMatrix({ data: x.residual, outFeatures: 20, inFeatures: 30 });
    assertClose('σ(residual)', thinSvd(res).S.slice(0, 20 - r), S.slice(r), 1e-5);
    const P = mat(x.B, 20, r).mmul(mat(x.A, r, 30)).mul(s);
    assertClose('σ(s·B·A)', thinSvd(P).S.slice(0, r), S.slice(0, r), 1e-5);
    // A = √(S/s) Vᵀ: its row norms are √(σ_i / s).
    const A = mat(x.A, r, 30);
    for (let i = 0; i < r; i++) assert.ok(Math.abs(A.getRowVector(i).norm() - Math.sqrt(S[i]! / s)) < 1e-5);
  });

  it('Conv1D: the stored [in, out] weight gives the same product as the [out, in] one', () => {
    const W = randn(12, 8, 3);
    const a = pissaInit(stored(W, true), 3, 2);
    const b = pissaInit(stored(W), 3, 2);
    assertClose('s·B·A', mat(a.B, 12, 3).mmul(mat(a.A, 3, 8)).to1DArray(), mat(b.B, 12, 3).mmul(mat(b.A, 3, 8)).to1DArray(), 1e-6);
    assertClose('W rebuilt (Conv1D)', rebuild(a, 12, 8, 3, 2, true).to1DArray(), W.to1DArray(), 1e-6);
  });
});

describe('CorDA', () => {
  const out = 10;
  const inn = 14;
  const W = randn(out, inn, 11);
  const X = randn(40, inn, 12);
  const C = X.transpose().mmul(X).div(40);
  const cov = Float64Array.from(C.to1DArray());

  it('W = U diag(S) V̂ᵀ with V̂ = (Vh C_d⁻¹)ᵀ', () => {
    const d = cordaDecompose(stored(W), cov);
    assert.equal(d.S.length, Math.min(out, inn));
    const rebuilt = d.U.mmul(Matrix.diag(Array.from(d.S))).mmul(d.V.transpose());
    assertClose('U S V̂ᵀ', rebuilt.to1DArray(), W.to1DArray(), 1e-6);
  });

  it('IPM keeps the first r components, KPM the last r; both reconstruct W', () => {
    const r = 3;
    const s = 2;
    const d = cordaDecompose(stored(W), cov);
    const k = d.S.length;
    for (const mode of ['ipm', 'kpm'] as const) {
      const x = cordaInit(stored(W), r, s, mode, cov);
      assertClose(`${mode} W rebuilt`, rebuild(x, out, inn, r, s).to1DArray(), W.to1DArray(), 1e-6);
      // (s·B·A)·C_d = U_r S_r Vh_r: its singular values are the kept components' S.
      const P = mat(x.B, out, r).mmul(mat(x.A, r, inn)).mul(s).mmul(d.Cd);
      const kept = mode === 'ipm' ? d.S.slice(0, r) : d.S.slice(k - r);
      assertClose(`${mode} kept σ`, thinSvd(P).S.slice(0, r), kept, 1e-5);
      // and the residual holds the others
      const res = outInMatrix({ data: x.residual, outFeatures: out, inFeatures: inn }).mmul(d.Cd);
      const rest = mode === 'ipm' ? d.S.slice(r) : d.S.slice(0, k - r);
      assertClose(`${mode} residual σ`, thinSvd(res).S.slice(0, k - r), rest, 1e-5);
      // A = √(S/s) V̂ᵀ, B = U √(S/s)
      const B = mat(x.B, out, r);
      for (let j = 0; j < r; j++) assert.ok(Math.abs(B.getColumnVector(j).norm() - Math.sqrt(kept[j]! / s)) < 1e-5);
    }
  });

  it('damping on a singular covariance terminates with ‖C_d C_d⁻¹ − I‖_F < 0.05', () => {
    const low = randn(3, 16, 5); // rank 3 in 16 dims
    const Cs = low.transpose().mmul(low).div(3);
    const d = dampCovariance(Cs);
    assert.ok(d.invError < 0.05, `error ${d.invError}`);
    assert.equal(d.damp, 0.01 * 2 ** (d.tries - 1));
    const check = d.Cd.mmul(d.Cinv);
    for (let i = 0; i < 16; i++) check.set(i, i, check.get(i, i) - 1);
    assert.ok(check.norm() < 0.05);
    // The doubling loop: a tolerance no damping can meet stops with a clear error instead of spinning.
    assert.throws(() => dampCovariance(Cs, { tol: 0, maxTries: 8 }), /did not converge after 8 doublings/);
    // An all-zero covariance (layer inputs all zero) cannot be damped.
    assert.throws(() => dampCovariance(new Matrix(4, 4)), /mean diagonal 0/);
    // cordaInit goes through the same damping: a singular covariance still reconstructs W.
    const x = cordaInit(stored(randn(8, 16, 9)), 2, 1, 'ipm', Float64Array.from(Cs.to1DArray()));
    assert.ok(x.residual.every(Number.isFinite));
  });
});

describe('LoRA-GA', () => {
  it('ArB2r: A = Vᵀ[:r], B = U[:, r:2r]·S[r:2r]·out^¼/√γ; other directions and scales', () => {
    const W = randn(16, 12, 1);
    const G = randn(16, 12, 2);
    const r = 3;
    const s = 2;
    const { U, S, V } = thinSvd(G);
    const x = loraGaInit(stored(W), Float32Array.from(G.to1DArray()), r, s, { svd: 'exact' });
    const sf = 16 ** 0.25 / 4;
    const expA = V.subMatrix(0, 11, 0, r - 1).transpose();
    const expB = U.subMatrix(0, 15, r, 2 * r - 1).mmul(Matrix.diag(Array.from(S.slice(r, 2 * r)))).mul(sf);
    assertClose('A', x.A, expA.to1DArray(), 1e-6);
    assertClose('B', x.B, expB.to1DArray(), 1e-6);
    assertClose('W rebuilt', rebuild(x, 16, 12, r, s).to1DArray(), W.to1DArray(), 1e-6);
    const unit = loraGaInit(stored(W), Float32Array.from(G.to1DArray()), r, s, { svd: 'exact', direction: 'A2rBr', scale: 'unit' });
    assertClose('A2rBr A', unit.A, V.subMatrix(0, 11, r, 2 * r - 1).transpose().to1DArray(), 1e-6);
    const gd = loraGaInit(stored(W), Float32Array.from(G.to1DArray()), r, s, { svd: 'exact', scale: 'gd_scale' });
    assertClose('gd_scale A', gd.A, expA.div(s).to1DArray(), 1e-6);
  });

  it('the randomised SVD converges to the exact one on a fast-decaying spectrum', () => {
    const U = thinQr(randn(30, 8, 3)).Q;
    const V = thinQr(randn(20, 8, 4)).Q;
    const G = U.mmul(Matrix.diag([10, 5, 3, 1, 0.1, 0.01, 0.001, 0.0001])).mmul(V.transpose());
    const rand = mulberry32(1);
    const lr = svdLowRank(G, 8, 4, () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()));
    assertClose('σ', lr.S.slice(0, 4), [10, 5, 3, 1], 1e-9);
    const ex = thinSvd(G);
    assertClose('V[:, :4]', lr.V.subMatrix(0, 19, 0, 3).to1DArray(), ex.V.subMatrix(0, 19, 0, 3).to1DArray(), 1e-8);
  });
});

describe('bad inputs', () => {
  const W = stored(randn(6, 4, 1));
  it('r > min(out, in) is a clear error', () => {
    assert.throws(() => pissaInit(W, 5, 1), /PiSSA: rank r=5 exceeds min\(out, in\) = min\(6, 4\) = 4/);
    assert.throws(() => oloraInit(W, 5, 1), /OLoRA: rank r=5 exceeds/);
    assert.throws(() => cordaInit(W, 5, 1, 'kpm', new Float64Array(16).fill(1)), /CorDA-KPM: rank r=5 exceeds/);
    assert.throws(() => loraGaInit(W, new Float32Array(24), 3, 1), /LoRA-GA: needs 2·r = 6 singular components but min\(out, in\) = .* = 4; use r ≤ 2/);
    assert.throws(() => pissaInit(W, 0, 1), /positive integer/);
    assert.throws(() => pissaInit({ ...W, data: new Float32Array(5) }, 2, 1), /has 5 elements, expected/);
    assert.throws(() => cordaInit(W, 2, 1, 'ipm', new Float64Array(9)), /covariance has 9 elements, expected in² = 16/);
  });

  it('CorDA / LoRA-GA without calibration data are clear errors (provider, task, CLI)', async () => {
    const fake = {} as Model;
    await assert.rejects(loraInitProvider('corda-ipm')(fake, [], () => 4, () => 1), /'corda-ipm' needs calibration data/);
    await assert.rejects(loraInitProvider('lora-ga')(fake, [], () => 4, () => 1), /'lora-ga' needs calibration data/);
    const base = { model: 'm', r: 4, alpha: 8, targets: ['q_proj'], out: 'o' };
    assert.throws(() => validateAdapterInit({ ...base, method: 'corda-kpm' }), /needs calibration data: pass --calib FILE/);
    assert.throws(() => validateAdapterInit({ ...base, method: 'pissa', r: 0 }), /r must be a positive integer/);
    assert.doesNotThrow(() => validateAdapterInit({ ...base, method: 'pissa' }));

    const errs: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (errs.push(String(s)), true)) as typeof process.stderr.write;
    let code: number;
    try {
      code = await main(['adapter-init', '--backend', process.env.PEFT_LAB_TEST_BACKEND ?? 'wasm', '--model', fixture('hf', 'llama-tiny'), '--method', 'lora-ga', '--r', '4', '--alpha', '8', '--targets', 'q_proj', '--out', join(tmpRoot, 'x')]);
    } finally {
      process.stderr.write = write;
    }
    assert.equal(code, 2);
    assert.match(errs.join(''), /peft-lab adapter-init: method 'lora-ga' needs calibration data: pass --calib FILE/);
    assert.ok(!existsSync(join(tmpRoot, 'x')));
  });
});

describe('with a model (llama-tiny)', () => {
  let model: Model;
  let ids: tf.Tensor2D;
  before(async () => {
    await useTestBackend();
    model = await Model.load(fixture('hf', 'llama-tiny'));
    const host = await readSafetensors(fixture('peft', 'llama-tiny-loraga', 'refs.safetensors'));
    ids = tf.tensor2d(Int32Array.from(host.get('calib_input_ids')!.data as BigInt64Array, Number), host.get('calib_input_ids')!.shape as [number, number], 'int32');
  });
  after(() => {
    ids?.dispose();
    model?.dispose();
  });

  it('CorDA covariance = Σ_samples (X/|max X|)ᵀ(X/|max X|) / samples, per-sample as PEFT hooks it', async () => {
    const m = model.arch.linearModules(model.config).find((x) => x.module === 'model.layers.1.mlp.down_proj')!;
    const cov = (await collectCovariances(model, [m], ids, 3)).get(m.module)!;
    // Reference: one forward per sample, capture the input, do the arithmetic in float64 here.
    const [n, t] = ids.shape;
    const ref = new Float64Array(m.inFeatures ** 2);
    for (let b = 0; b < n; b++) {
      let X: Float32Array | undefined;
      const hook: LinearHook = (x, _l, base) => {
        X = x.dataSync() as Float32Array;
        return base(x);
      };
      tf.tidy(() => {
        model.forward({ inputIds: tf.slice(ids, [b, 0], [1, t]) }, { hooks: { linear: new Map([[m.module, hook]]) } });
      });
      const top = Math.abs(Math.max(...X!));
      for (let i = 0; i < m.inFeatures; i++)
        for (let j = 0; j < m.inFeatures; j++) {
          let sum = 0;
          for (let k = 0; k < t; k++) sum += (X![k * m.inFeatures + i]! / top) * (X![k * m.inFeatures + j]! / top);
          ref[i * m.inFeatures + j]! += sum / n;
        }
    }
    assertClose('covariance', cov, ref, 1e-5);
  });

  /** Calibration rows cut from the fixture's ids at the given lengths. */
  const rowsOf = (lengths: number[]): CalibrationRow[] => {
    const [, t] = ids.shape;
    const flat = ids.dataSync() as Int32Array;
    return lengths.map((len, i) => ({ ids: flat.slice(i * t, i * t + len) }));
  };

  it('CorDA on samples of different lengths: each at its own length, as PEFT’s one forward pass per sample (the mean of one-sample covariances; batching alike)', async () => {
    const m = model.arch.linearModules(model.config).find((x) => x.module === 'model.layers.0.self_attn.q_proj')!;
    const rows = rowsOf([5, ids.shape[1], 5, 7]);
    const together = (await collectCovariances(model, [m], rows, 8)).get(m.module)!;
    const single = (await collectCovariances(model, [m], rows, 1)).get(m.module)!;
    const mean = new Float64Array(together.length);
    for (const r of rows) {
      const one = tf.tensor2d(r.ids, [1, r.ids.length], 'int32');
      const cov = (await collectCovariances(model, [m], one)).get(m.module)!;
      one.dispose();
      cov.forEach((v, i) => (mean[i]! += v / rows.length));
    }
    assertClose('rows batched 8', together, mean, 1e-5);
    assertClose('rows batched 1', single, mean, 1e-5);
    // Cutting every sample to the shortest (what a [samples, tokens] tensor of them would be) gives another covariance.
    const cut = tf.tensor2d(Int32Array.from(rows.flatMap((r) => [...r.ids.subarray(0, 5)])), [rows.length, 5], 'int32');
    const shortest = (await collectCovariances(model, [m], cut)).get(m.module)!;
    cut.dispose();
    assert.ok(relMaxError(shortest, mean) > 1e-2);
  });

  it('LoRA-GA on samples of different lengths: a batch is padded on the right and its pads ignored (the token-weighted mean of the rows’ own gradients)', async () => {
    const m = model.arch.linearModules(model.config).find((x) => x.module === 'model.layers.1.self_attn.v_proj')!;
    const rows = rowsOf([5, 9]);
    const batch = (await estimateGradients(model, [m], rows, 2)).get(m.module)!;
    const [g1, g2] = await Promise.all(rows.map(async (r) => (await estimateGradients(model, [m], [r], 1)).get(m.module)!));
    // Each row's loss is a mean over its len − 1 predicted tokens; the batch's over all 4 + 8.
    assertClose('padded batch gradient', batch, Float64Array.from(g1!, (v, i) => (4 * v + 8 * g2![i]!) / 12), 1e-4);
    await assertNoLeak(() => estimateGradients(model, [m], rows, 2));
  });

  it('providers leak no tensors (corda, lora-ga, pissa, default)', async () => {
    const targets = model.arch.linearModules(model.config).filter((x) => x.name === 'q_proj' || x.name === 'down_proj');
    for (const method of ['corda-kpm', 'lora-ga', 'pissa', 'default'] as const) {
      const res = await assertNoLeak(() => loraInitProvider(method, ids)(model, targets, () => 2, () => 1));
      assert.equal(res.size, targets.length);
    }
    await assertNoLeak(() => estimateGradients(model, targets, ids, 3));
    await assertNoLeak(() => collectCovariances(model, targets, ids));
  });

  it('default and gaussian: B = 0, A seeded and distributed as PEFT draws it, residual = W', () => {
    const W = stored(randn(32, 64, 1));
    const d = randomInit(W, 8, 'default', 1);
    assert.ok(d.B.every((v) => v === 0));
    assert.ok(d.A.every((v) => Math.abs(v) <= 1 / Math.sqrt(64)));
    assert.deepEqual(d.residual, W.data);
    assert.deepEqual(randomInit(W, 8, 'default', 1).A, d.A);
    assert.notDeepEqual(randomInit(W, 8, 'default', 2).A, d.A);
    const g = randomInit(W, 8, 'gaussian', 1);
    const std = Math.sqrt(g.A.reduce((a, v) => a + v * v, 0) / g.A.length);
    assert.ok(Math.abs(std - 1 / 8) < 0.02, `std ${std}`);
  });
});

describe('peft-lab adapter-init (child process)', () => {
  it('writes the adapter, its config and the residual base weights', () => {
    const out = join(tmpRoot, 'cli-olora');
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'sidecar', 'src', 'cli.ts'), 'adapter-init', '--backend', 'cpu', '--model', fixture('hf', 'gpt2-tiny'), '--method', 'olora', '--r', '4', '--alpha', '8', '--targets', 'c_attn', '--out', out],
      { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /wrote .*cli-olora: olora init of 4 modules, residual base weights in/);
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.init_lora_weights, 'olora');
    assert.equal(cfg.fan_in_fan_out, true);
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 8);
    assert.deepEqual(cfg.target_modules, ['c_attn']);
    assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
    assert.ok(existsSync(join(out, RESIDUAL_FILE)));
  });
});

describe('adapter-init --out', () => {
  const ctx = { signal: new AbortController().signal, progress: () => undefined, log: () => undefined };
  const init = (out: string) => runAdapterInit({ model: fixture('hf', 'llama-tiny'), method: 'gaussian', r: 2, alpha: 2, targets: ['q_proj'], out }, ctx);

  it('refuses a file, a model folder and a folder of other files, leaving them as they were', async () => {
    await useTestBackend();
    const file = join(tmpRoot, 'notes.txt');
    writeFileSync(file, 'notes');
    await assert.rejects(init(file), (e: InputError) => e instanceof InputError && e.file === file && /is a file: give a new folder/.test(e.message));
    assert.equal(readFileSync(file, 'utf8'), 'notes');
    const model = join(tmpRoot, 'model-copy');
    cpSync(fixture('hf', 'llama-tiny'), model, { recursive: true });
    await assert.rejects(init(model), /holds other files than an adapter's \(config\.json, generation_config\.json, model\.safetensors, … \(4 in all\)\)/);
    assert.ok(existsSync(join(model, 'model.safetensors')) && existsSync(join(model, 'config.json')));
  });

  it('writes into a new or empty folder, and replaces an adapter folder (PEFT files, README, residual) whole', async () => {
    await useTestBackend();
    const out = join(tmpRoot, 'replace-me');
    mkdirSync(out, { recursive: true });
    await init(out);
    writeFileSync(join(out, 'README.md'), '# PEFT model card');
    writeFileSync(join(out, RESIDUAL_FILE), 'stale');
    await init(out);
    assert.deepEqual(readdirSync(out).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  });
});

describe('adapter-init on a sequence classifier (bert-cls-tiny)', () => {
  it('saves the classifier head as PEFT does for SEQ_CLS, and the adapter loads back to the base logits', async () => {
    await useTestBackend();
    const out = join(tmpRoot, 'bert-pissa');
    await runAdapterInit({ model: fixture('hf', 'bert-cls-tiny'), method: 'pissa', r: 4, alpha: 8, targets: ['query', 'value'], out }, { signal: new AbortController().signal, progress: () => undefined, log: () => undefined });
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.task_type, 'SEQ_CLS');
    assert.deepEqual(cfg.modules_to_save, ['classifier', 'score']);
    const model = await Model.load(fixture('hf', 'bert-cls-tiny'));
    const saved = await readSafetensors(join(out, 'adapter_model.safetensors'));
    for (const name of ['classifier.weight', 'classifier.bias']) {
      assert.ok(saved.has(`base_model.model.${name}`), `${name} saved`);
      assertClose(name, saved.get(`base_model.model.${name}`)!.data as Float32Array, (await model.params.get(name)!.data()) as Float32Array, 0);
    }
    // PEFT re-runs PiSSA on load (residual base + the same A, B): the logits are the base model's.
    const adapter = await loadPeftAdapter(model, out);
    const ids = tf.tensor2d([[2, 5, 9, 4, 3]], [1, 5], 'int32');
    try {
      const run = (a?: typeof adapter) => tf.tidy(() => model.forward({ inputIds: ids }, a ? { hooks: a.hooks, overrides: a.overrides() } : {}).dataSync() as Float32Array);
      assertClose('logits', run(adapter), run(), 1e-4);
    } finally {
      ids.dispose();
      adapter.dispose();
      model.dispose();
    }
  });
});

describe('CorDA calibration of a classifier on sentence pairs (bert-cls-tiny)', () => {
  it('the training rows’ token types reach the forward passes (the covariance differs without them), batched or not', async () => {
    await useTestBackend();
    const model = await Model.load(fixture('hf', 'bert-cls-tiny'));
    try {
      const m = model.arch.linearModules(model.config).find((x) => x.module === 'bert.encoder.layer.0.attention.self.query')!;
      // [CLS] a [SEP] b [SEP] rows: types 0 over the first segment, 1 over the second.
      const pair = (ids: number[], split: number) => ({ ids: Int32Array.from(ids), typeIds: Int32Array.from(ids, (_, i) => (i < split ? 0 : 1)) });
      const examples = [
        { kind: 'cls' as const, label: 0, source: 'a', ...pair([2, 7, 9, 3, 11, 4, 3], 4) },
        { kind: 'cls' as const, label: 1, source: 'b', ...pair([2, 5, 3, 8, 12, 6, 10, 3], 3) },
        { kind: 'cls' as const, label: 2, source: 'c', ...pair([2, 13, 14, 3, 15, 3], 4) },
      ];
      const rows = calibrationRows({ train: examples } as unknown as LoadedData, 8);
      assert.deepEqual(rows.map((r) => r.typeIds?.length), [7, 8, 6]);
      const withTypes = (await collectCovariances(model, [m], rows, 8)).get(m.module)!;
      assertClose('batched 1', (await collectCovariances(model, [m], rows, 1)).get(m.module)!, withTypes, 1e-5);
      const withoutTypes = (await collectCovariances(model, [m], rows.map((r) => ({ ids: r.ids })), 8)).get(m.module)!;
      assert.ok(relMaxError(withoutTypes, withTypes) > 1e-3, 'token types change the layer-0 inputs');
    } finally {
      model.dispose();
    }
  });
});
