/**
 * Data-aware LoRA inits against Hugging Face PEFT 0.21 (fixtures peft/llama-tiny-pissa and
 * peft/llama-tiny-loraga): per target, s·B·A and the residual base weight within 1e-4·max|ref| of
 * PEFT's; LoRA-GA's estimated gradient within 1e-3. Products are compared rather than A and B
 * (SVD signs are arbitrary). LoRA-GA pairs u_{r+j} with v_j, so its product is sign-ambiguous per
 * component: our A rows and B columns are sign-aligned to PEFT's before comparing.
 *
 * LoRA-GA caveat: PEFT takes the gradient's SVD with `torch.svd_lowrank(q=4r, niter=4)`, which is
 * randomised. Where it converged (PEFT's A rows are singular vectors of G to 1e-5) we must match to
 * 1e-4; where it did not (q_proj and down_proj here, whose spectra decay slowly), PEFT's factors are
 * themselves off the exact SVD by up to ~6e-2 and depend on torch's random stream, which we cannot
 * reproduce: there we only bound the distance by the measured non-convergence.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { estimateGradients, loraGaInit, loraInitProvider, pissaInit } from '../../sidecar/src/adapters/inits';
import { Matrix, outInMatrix } from '../../sidecar/src/adapters/inits/linalg';
import { readSafetensors, toFloat32, type HostTensor } from '../../sidecar/src/io/safetensors';
import { toTf } from '../../sidecar/src/io/tensors';
import { cliContext } from '../../sidecar/src/jobs/context';
import { Model } from '../../sidecar/src/models/model';
import { runAdapterInit, RESIDUAL_FILE } from '../../sidecar/src/tasks/adapter-init';
import { assertClose, fixture, relMaxError, useTestBackend } from '../helpers/numeric';

const TARGETS = ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.0.mlp.down_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj', 'model.layers.1.mlp.down_proj'];
const R = 4;

const tmpRoot = mkdtempSync(join(tmpdir(), 'peft-lab-inits-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));

/** s·B·A, [out, in] row-major float64. */
function product(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inn: number, s: number): Float64Array {
  const P = new Float64Array(out * inn);
  for (let o = 0; o < out; o++)
    for (let k = 0; k < r; k++) {
      const b = s * B[o * r + k]!;
      for (let i = 0; i < inn; i++) P[o * inn + i]! += b * A[k * inn + i]!;
    }
  return P;
}

/** A's rows and B's columns with their signs flipped to agree with the reference's. */
function alignSigns(A: Float32Array, B: Float32Array, Aref: Float32Array, Bref: Float32Array, out: number, r: number, inn: number): { A: Float32Array; B: Float32Array } {
  const a = Float32Array.from(A);
  const b = Float32Array.from(B);
  for (let k = 0; k < r; k++) {
    let da = 0;
    for (let i = 0; i < inn; i++) da += a[k * inn + i]! * Aref[k * inn + i]!;
    if (da < 0) for (let i = 0; i < inn; i++) a[k * inn + i] = -a[k * inn + i]!;
    let db = 0;
    for (let o = 0; o < out; o++) db += b[o * r + k]! * Bref[o * r + k]!;
    if (db < 0) for (let o = 0; o < out; o++) b[o * r + k] = -b[o * r + k]!;
  }
  return { A: a, B: b };
}

/** max_j ‖GᵀG a_j − λ_j a_j‖ / λ_j over PEFT's A rows: how far its randomised SVD is from converged. */
function nonConvergence(grad: Float32Array, Aref: Float32Array, out: number, inn: number): number {
  const G = outInMatrix({ data: grad, outFeatures: out, inFeatures: inn });
  const GtG = G.transpose().mmul(G);
  const A = Matrix.from1DArray(R, inn, Array.from(Aref));
  let worst = 0;
  for (let k = 0; k < R; k++) {
    const a = A.getRowVector(k).transpose();
    const Ga = GtG.mmul(a);
    const lam = a.transpose().mmul(Ga).get(0, 0);
    worst = Math.max(worst, Ga.sub(a.mul(lam)).norm() / lam);
  }
  return worst;
}

const f32 = (t: HostTensor | undefined, what: string): Float32Array => {
  assert.ok(t, `${what} missing`);
  return toFloat32(t);
};

describe('LoRA init parity with PEFT 0.21', () => {
  let model: Model;
  before(async () => {
    await useTestBackend();
    model = await Model.load(fixture('hf', 'llama-tiny'));
  });
  after(() => model?.dispose());

  const info = (module: string) => model.arch.linearModules(model.config).find((m) => m.module === module)!;

  describe('PiSSA (llama-tiny-pissa, r=4, alpha=4)', () => {
    const dir = fixture('peft', 'llama-tiny-pissa');
    let adapter: Map<string, HostTensor>;
    let refs: Map<string, HostTensor>;
    let cfg: Record<string, unknown>;
    before(async () => {
      adapter = await readSafetensors(join(dir, 'adapter_model.safetensors'));
      refs = await readSafetensors(join(dir, 'refs.safetensors'));
      cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    });

    it('s·B·A and the residual of every target match PEFT (provider)', async () => {
      const s = (cfg.lora_alpha as number) / (cfg.r as number);
      const targets = TARGETS.map(info);
      const inits = await loraInitProvider('pissa')(model, targets, () => R, () => s);
      for (const m of targets) {
        const x = inits.get(m.module)!;
        const Aref = f32(adapter.get(`base_model.model.${m.module}.lora_A.weight`), 'A');
        const Bref = f32(adapter.get(`base_model.model.${m.module}.lora_B.weight`), 'B');
        const res = f32(refs.get(`base.base_model.model.${m.module}.base_layer.weight`), 'residual');
        const e1 = assertClose(`${m.module} s·B·A`, product(x.B, x.A, m.outFeatures, R, m.inFeatures, s), product(Bref, Aref, m.outFeatures, R, m.inFeatures, s), 1e-4);
        const e2 = assertClose(`${m.module} residual`, x.residual, res, 1e-4);
        console.log(`  pissa ${m.module}: s·B·A ${e1.toExponential(2)}, residual ${e2.toExponential(2)}`);
      }
    });

    it('adapter-init writes the same adapter, config and residual file', async () => {
      const out = join(tmpRoot, 'pissa');
      const res = await runAdapterInit(
        { model: fixture('hf', 'llama-tiny'), method: 'pissa', r: R, alpha: 4, targets: ['v_proj', 'q_proj', 'down_proj'], out },
        cliContext(),
      );
      assert.deepEqual(new Set(res.modules), new Set(TARGETS));
      const mine = await readSafetensors(join(out, 'adapter_model.safetensors'));
      assert.deepEqual([...mine.keys()].sort(), [...adapter.keys()].sort());
      for (const [k, v] of adapter) assert.deepEqual(mine.get(k)!.shape, v.shape, k);
      const residual = await readSafetensors(join(out, RESIDUAL_FILE));
      assert.deepEqual([...residual.keys()].sort(), TARGETS.map((t) => `${t}.weight`).sort());
      for (const t of TARGETS) {
        const m = info(t);
        assertClose(`${t} residual (file)`, f32(residual.get(`${t}.weight`), 'residual'), f32(refs.get(`base.base_model.model.${t}.base_layer.weight`), 'ref'), 1e-4);
        const P = product(f32(mine.get(`base_model.model.${t}.lora_B.weight`), 'B'), f32(mine.get(`base_model.model.${t}.lora_A.weight`), 'A'), m.outFeatures, R, m.inFeatures, 1);
        const Pref = product(f32(adapter.get(`base_model.model.${t}.lora_B.weight`), 'B'), f32(adapter.get(`base_model.model.${t}.lora_A.weight`), 'A'), m.outFeatures, R, m.inFeatures, 1);
        assertClose(`${t} B·A (file)`, P, Pref, 1e-4);
      }
      const myCfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(Object.keys(myCfg).sort(), Object.keys(cfg).sort(), 'same config fields as PEFT 0.21 writes');
      for (const k of ['init_lora_weights', 'r', 'lora_alpha', 'peft_type', 'task_type', 'fan_in_fan_out', 'use_rslora', 'corda_config', 'lora_ga_config', 'peft_version'])
        assert.deepEqual(myCfg[k], cfg[k], k);
      assert.deepEqual(new Set(myCfg.target_modules as string[]), new Set(cfg.target_modules as string[]));
    });
  });

  describe('LoRA-GA (llama-tiny-loraga, r=4, alpha=8, ArB2r, stable γ=16)', () => {
    const dir = fixture('peft', 'llama-tiny-loraga');
    let adapter: Map<string, HostTensor>;
    let refs: Map<string, HostTensor>;
    let calib: tf.Tensor2D;
    const s = 8 / R;
    before(async () => {
      adapter = await readSafetensors(join(dir, 'adapter_model.safetensors'));
      refs = await readSafetensors(join(dir, 'refs.safetensors'));
      calib = toTf(refs.get('calib_input_ids')!) as tf.Tensor2D;
    });
    after(() => calib?.dispose());

    it('the estimated gradient matches PEFT (two batches of 4 rows, averaged over the 2 backward passes)', async () => {
      const targets = TARGETS.map(info);
      const grads = await estimateGradients(model, targets, calib, 4);
      for (const m of targets) {
        const e = assertClose(`${m.module} gradient`, grads.get(m.module)!, f32(refs.get(`grad.${m.module}`), 'grad'), 1e-3);
        console.log(`  lora-ga gradient ${m.module}: ${e.toExponential(2)}`);
      }
    });

    /** Compares an init with PEFT's, with the tolerance its randomised SVD allows (see the file header). */
    function compare(label: string, module: string, x: { A: Float32Array; B: Float32Array; residual: Float32Array }, W: Float32Array): void {
      const m = info(module);
      const Aref = f32(adapter.get(`base_model.model.${module}.lora_A.weight`), 'A');
      const Bref = f32(adapter.get(`base_model.model.${module}.lora_B.weight`), 'B');
      const resRef = f32(refs.get(`base.base_model.model.${module}.base_layer.weight`), 'residual');
      const rho = nonConvergence(f32(refs.get(`grad.${module}`), 'grad'), Aref, m.outFeatures, m.inFeatures);
      const converged = rho < 1e-5;
      const tol = converged ? 1e-4 : 0.1;
      // Our own residual is exact for our factors.
      const P = product(x.B, x.A, m.outFeatures, R, m.inFeatures, s);
      assertClose(`${module} residual + s·B·A = W`, Float64Array.from(x.residual, (v, i) => v + P[i]!), W, 1e-6);
      const al = alignSigns(x.A, x.B, Aref, Bref, m.outFeatures, R, m.inFeatures);
      const Pa = product(al.B, al.A, m.outFeatures, R, m.inFeatures, s);
      const e1 = relMaxError(Pa, product(Bref, Aref, m.outFeatures, R, m.inFeatures, s));
      const e2 = relMaxError(Float64Array.from(W, (w, i) => w - Pa[i]!), resRef);
      // The singular values PEFT put in B (its column norms / the stable factor) against ours.
      const sf = m.outFeatures ** 0.25 / Math.sqrt(16);
      const norms = (B: Float32Array) => [...Array(R).keys()].map((k) => Math.hypot(...Array.from({ length: m.outFeatures }, (_, o) => B[o * R + k]!)) / sf);
      const e3 = relMaxError(norms(x.B), norms(Bref));
      console.log(`  lora-ga ${label} ${module}: s·B·A ${e1.toExponential(2)}, residual ${e2.toExponential(2)}, σ in B ${e3.toExponential(2)} (PEFT's SVD ${converged ? 'converged' : `not converged, ρ=${rho.toExponential(1)}`})`);
      assert.ok(e1 <= tol, `${module} s·B·A: ${e1} > ${tol}`);
      assert.ok(e2 <= tol, `${module} residual: ${e2} > ${tol}`);
      assert.ok(e3 <= Math.max(1e-4, 10 * rho), `${module} singular values: ${e3}`);
    }

    it('the init from PEFT\'s gradient matches PEFT (exact SVD and the seeded randomised one)', async () => {
      for (const module of TARGETS) {
        const m = info(module);
        const W = (await model.params.get(`${module}.weight`)!.data()) as Float32Array;
        const w = { data: W, outFeatures: m.outFeatures, inFeatures: m.inFeatures };
        const g = f32(refs.get(`grad.${module}`), 'grad');
        compare('exact', module, loraGaInit(w, g, R, s, { svd: 'exact' }), W);
        const rho = nonConvergence(g, f32(adapter.get(`base_model.model.${module}.lora_A.weight`), 'A'), m.outFeatures, m.inFeatures);
        if (rho < 1e-5) compare('lowrank', module, loraGaInit(w, g, R, s), W);
      }
    });

    it('adapter-init --method lora-ga end to end (calib ids from the fixture)', async () => {
      const out = join(tmpRoot, 'loraga');
      const res = await runAdapterInit(
        { model: fixture('hf', 'llama-tiny'), method: 'lora-ga', r: R, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], calib: join(dir, 'refs.safetensors'), out },
        cliContext(),
      );
      assert.ok(res.residual);
      const mine = await readSafetensors(join(out, 'adapter_model.safetensors'));
      const residual = await readSafetensors(join(out, RESIDUAL_FILE));
      for (const module of TARGETS) {
        const W = (await model.params.get(`${module}.weight`)!.data()) as Float32Array;
        compare('cli', module, { A: f32(mine.get(`base_model.model.${module}.lora_A.weight`), 'A'), B: f32(mine.get(`base_model.model.${module}.lora_B.weight`), 'B'), residual: f32(residual.get(`${module}.weight`), 'res') }, W);
      }
      const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      const ref = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(cfg.init_lora_weights, 'lora_ga');
      assert.deepEqual(cfg.lora_ga_config, ref.lora_ga_config);
      assert.deepEqual(Object.keys(cfg).sort(), Object.keys(ref).sort());
    });
  });

  describe('GPT-2 Conv1D layout (gpt2-tiny c_attn, stored [in, out])', () => {
    let gpt2: Model;
    before(async () => {
      gpt2 = await Model.load(fixture('hf', 'gpt2-tiny'));
    });
    after(() => gpt2?.dispose());

    it('PiSSA: residual + s·(B·A)ᵀ reconstructs W, and s·B·A is the top-r SVD of the [out, in] weight', async () => {
      const m = gpt2.arch.linearModules(gpt2.config).find((x) => x.name === 'c_attn')!;
      assert.ok(m.fanInFanOut);
      const s = 2;
      const inits = await loraInitProvider('pissa')(gpt2, [m], () => R, () => s);
      const x = inits.get(m.module)!;
      assert.equal(x.A.length, R * m.inFeatures);
      assert.equal(x.B.length, m.outFeatures * R);
      const W = (await gpt2.params.get(`${m.module}.weight`)!.data()) as Float32Array; // [in, out]
      const P = product(x.B, x.A, m.outFeatures, R, m.inFeatures, s); // [out, in]
      const rebuilt = Float64Array.from(x.residual, (v, k) => v + P[(k % m.outFeatures) * m.inFeatures + Math.floor(k / m.outFeatures)]!);
      const e = assertClose('c_attn W', rebuilt, W, 1e-5);
      // Same as PiSSA on the explicitly transposed (Linear-layout) weight.
      const Wt = outInMatrix({ data: W, outFeatures: m.outFeatures, inFeatures: m.inFeatures, fanInFanOut: true });
      const lin = pissaInit({ data: Wt.to1DArray(), outFeatures: m.outFeatures, inFeatures: m.inFeatures }, R, s);
      assertClose('c_attn s·B·A vs Linear layout', P, product(lin.B, lin.A, m.outFeatures, R, m.inFeatures, s), 1e-6);
      console.log(`  gpt2 c_attn pissa: reconstruction ${e.toExponential(2)}`);
    });

    it('CorDA and OLoRA on Conv1D also reconstruct W in the stored layout', async () => {
      const refs = await readSafetensors(fixture('hf', 'gpt2-tiny', 'refs.safetensors'));
      const ids = toTf(refs.get('input_ids')!) as tf.Tensor2D;
      try {
        const targets = gpt2.arch.linearModules(gpt2.config).filter((x) => x.name === 'c_attn' || x.name === 'c_fc');
        for (const method of ['corda-ipm', 'corda-kpm', 'olora'] as const) {
          const inits = await loraInitProvider(method, ids)(gpt2, targets, () => R, () => 2);
          for (const m of targets) {
            const x = inits.get(m.module)!;
            const W = (await gpt2.params.get(`${m.module}.weight`)!.data()) as Float32Array;
            const P = product(x.B, x.A, m.outFeatures, R, m.inFeatures, 2);
            const rebuilt = Float64Array.from(x.residual, (v, k) => v + P[(k % m.outFeatures) * m.inFeatures + Math.floor(k / m.outFeatures)]!);
            assertClose(`${method} ${m.module}`, rebuilt, W, 1e-5);
          }
        }
      } finally {
        ids.dispose();
      }
    });
  });
});
