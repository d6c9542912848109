/**
 * IST (importance-aware sparse tuning): the score update against its closed form, the weighted
 * sampling without replacement against exact inclusion probabilities, the state round trip, and a
 * tiny real run on gpt2-tiny (4 blocks): one block's adapter changes per step, a resume is bitwise
 * identical, ist.json / ist-importance.json / ist_s_<l> metrics are written.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { importanceView } from '../../src/extension/panels/shaping/importance';
import type { JobContext } from '../../sidecar/src/jobs/context';
import { initBackend } from '../../sidecar/src/backend';
import { readSafetensors } from '../../sidecar/src/io/safetensors';
import { loadSpec, runConfig } from '../../sidecar/src/spec/load';
import type { RunConfig } from '../../sidecar/src/spec/types';
import { listCheckpoints } from '../../sidecar/src/train/checkpoint';
import { Ist, IST_DEFAULTS, istRewards, istScoreUpdate, sigmoid, weightedSampleWithoutReplacement } from '../../sidecar/src/train/ist';
import { Rng } from '../../sidecar/src/train/rng';
import { readMetrics, readRunConfig } from '../../sidecar/src/train/run-folder';
import { runTraining } from '../../sidecar/src/train/trainer';

const close = (a: number, b: number, tol: number, what = '') => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b} (tol ${tol})`);

describe('IST: pure parts', () => {
  test('score update matches the hand-computed closed form', () => {
    // s = 0 → p = 0.5, p(1 − p) = 0.25; losses 1, 2, 3:
    // exp(−ℓ) = 0.3678794, 0.1353353, 0.0497871; mean 0.1843339; r = 0.1835455, −0.0489986, −0.1345468.
    // η = 10: block 0 (round 0): 2.5·0.1835455 = 0.4588638; block 1 (rounds 0, 2): 2.5·(0.1835455 − 0.1345468) = 0.1224968;
    // block 2 (rounds 1, 2): 2.5·(−0.0489986 − 0.1345468) = −0.4588635; block 3 (round 1): 2.5·(−0.0489986) = −0.1224965.
    const s = istScoreUpdate([0, 0, 0, 0], [[0, 1], [2, 3], [1, 2]], [1, 2, 3], 10);
    const want = [0.4588638, 0.1224968, -0.4588635, -0.1224965];
    s.forEach((x, i) => close(x, want[i]!, 1e-6, `s[${i}]`));
    const r = istRewards([1, 2, 3]);
    close(r.reduce((a, b) => a + b, 0), 0, 1e-12, 'rewards sum to 0');
    // Non-zero start: p = σ(2) = 0.8807971, p(1 − p) = 0.1049936; one round's reward is 0 (single round → r = 0).
    assert.deepEqual(istScoreUpdate([2, -1], [[0]], [0.5], 10), [2, -1]);
    // Two rounds: ℓ = 0 (r = +0.5·(1 − e^−1) = 0.3160603) on block 0, ℓ = 1 (r = −0.3160603) on block 1.
    const t = istScoreUpdate([2, -1], [[0], [1]], [0, 1], 1);
    close(t[0]!, 2 + 0.3160603 * 0.1049936, 1e-6, 't[0]');
    close(t[1]!, -1 - 0.3160603 * sigmoid(-1) * (1 - sigmoid(-1)), 1e-6, 't[1]');
  });

  test('weighted sampling: first draw ∝ weight, inclusion probabilities without replacement', () => {
    const w = [1, 2, 3, 4];
    const W = w.reduce((a, b) => a + b, 0);
    const rng = new Rng(7);
    const N = 40000;
    const first = [0, 0, 0, 0];
    const incl = [0, 0, 0, 0];
    for (let i = 0; i < N; i++) {
      first[weightedSampleWithoutReplacement(w, 1, rng)[0]!]!++;
      const two = weightedSampleWithoutReplacement(w, 2, rng);
      assert.equal(new Set(two).size, 2, 'distinct');
      for (const j of two) incl[j]!++;
    }
    // Exact P(i in a draw of 2) = w_i/W + Σ_{j≠i} (w_j/W)·w_i/(W − w_j).
    const exact = w.map((wi, i) => wi / W + w.reduce((a, wj, j) => (j === i ? a : a + (wj / W) * (wi / (W - wj))), 0));
    close(exact.reduce((a, b) => a + b, 0), 2, 1e-12, 'inclusion probabilities sum to n');
    w.forEach((wi, i) => {
      close(first[i]! / N, wi / W, 0.01, `first draw ${i}`);
      close(incl[i]! / N, exact[i]!, 0.012, `inclusion ${i}`);
    });
    assert.deepEqual(weightedSampleWithoutReplacement([1, 1, 1], 5, rng), [0, 1, 2], 'n > length: all, sorted');
  });

  test('the driver: updates with stub losses like the closed form, draws are resumable from its state', async () => {
    const a = new Ist({ ...IST_DEFAULTS, K: 3, eta: 10 }, 4, 123);
    assert.equal(a.nUpd, 1);
    assert.equal(a.nSup, 2);
    const losses = [1.5, 0.5, 2.5];
    let k = 0;
    const s0 = [...a.s];
    const { rounds } = await a.update(10, async (sup) => {
      assert.equal(sup.length, 2);
      return losses[k++]!;
    });
    assert.deepEqual(a.s, istScoreUpdate(s0, rounds, losses, 10));
    assert.deepEqual(a.history.map((h) => h.step), [0, 10]);
    const b = new Ist(a.opts, 4, 999);
    b.restore(JSON.parse(JSON.stringify(a.state)));
    for (let i = 0; i < 20; i++) assert.deepEqual(b.sampleUpdate(), a.sampleUpdate());
    assert.deepEqual(b.importance(), a.s.map((x) => sigmoid(-x)));
  });
  test('draws: blocks train with weights σ(−s), are suppressed with σ(s); a probe step never repeats a round', async () => {
    // Block 0 scored unimportant (s = +4), block 1 important (s = −4), blocks 2, 3 neutral.
    const a = new Ist({ ...IST_DEFAULTS, K: 3 }, 4, 5);
    a.s = [4, -4, 0, 0];
    const N = 4000;
    const upd = [0, 0, 0, 0];
    const sup = [0, 0, 0, 0];
    for (let i = 0; i < N; i++) {
      for (const b of a.sampleUpdate()) upd[b]!++;
      for (const b of a.sampleSuppress()) sup[b]!++;
    }
    // One block per step (⌊0.25·4⌋): P(b) = σ(−s_b) / Σ σ(−s) = 0.018/2.0 vs 0.982/2.0.
    close(upd[0]! / N, sigmoid(-4) / 2, 0.01, 'update draws of block 0');
    close(upd[1]! / N, sigmoid(4) / 2, 0.02, 'update draws of block 1');
    assert.ok(sup[0]! > 3 * sup[1]!, `suppression prefers the unimportant block: ${sup.join(',')}`);
    // 4 blocks, 2 suppressed: 6 distinct sets for K = 3 rounds, so every probe step's rounds differ.
    for (let i = 0; i < 200; i++) {
      const { rounds } = await a.update(i, async () => 1);
      assert.equal(new Set(rounds.map((r) => [...r].sort().join(','))).size, 3, `step ${i}: ${JSON.stringify(rounds)}`);
    }
    // 2 blocks, 1 suppressed: only 2 sets for 3 rounds, so one repeats (and the update still ends).
    const b = new Ist({ ...IST_DEFAULTS, K: 3, supFraction: 0.5 }, 2, 5);
    assert.equal((await b.update(0, async () => 1)).rounds.length, 3);
  });
});

describe('IST: training on gpt2-tiny', () => {
  const FIXTURES = join(__dirname, '../../../shared/fixtures/hf');
  const root = mkdtempSync(join(tmpdir(), 'peft-lab-ist-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  before(async () => {
    await initBackend('wasm', () => undefined);
    cpSync(join(FIXTURES, 'gpt2-tiny'), join(root, 'gpt2-tiny'), { recursive: true });
    const words = ['the cat sat', 'a dog ran', 'the bird flew', 'my fish swam'];
    writeFileSync(join(root, 'text.jsonl'), Array.from({ length: 24 }, (_, i) => JSON.stringify({ text: `${words[i % 4]} on day ${i % 3}.` })).join('\n'));
  });
  const ctx = (logs: string[] = []): JobContext => ({ signal: new AbortController().signal, progress: () => undefined, log: (l, m) => logs.push(`${l}: ${m}`) });
  let n = 0;
  const config = (extra: Record<string, unknown> = {}): RunConfig => {
    const f = join(root, `s${n++}.peft.json`);
    writeFileSync(
      f,
      JSON.stringify({
        model: 'gpt2-tiny', data: { train: 'text.jsonl', maxLength: 24 }, adapter: { kind: 'lora', r: 4, alpha: 8 }, optimizer: { lr: 0.05 },
        schedule: { type: 'constant' }, batchSize: 4, steps: 8, logEvery: 1, checkpointEvery: 1, keepCheckpoints: 20,
        ist: { enabled: true, T: 2, probeBatch: 4 }, ...extra,
      }),
    );
    return runConfig(loadSpec(f));
  };
  const layerOf = (name: string) => Number(/\.h\.(\d+)\./.exec(name)?.[1] ?? -1);

  test('spec defaults are the authors\'', () => {
    const cfg = config();
    assert.deepEqual(cfg.ist, { ...IST_DEFAULTS, T: 2, probeBatch: 4 });
  });

  test('only the drawn block trains each step; ist.json, metrics and the panel file are written; resume is bitwise identical', async () => {
    const cfg = config();
    const ref = join(root, 'runs', 'ref');
    await runTraining(cfg, { runDir: ref, ctx: ctx() });
    // Every step's checkpoint: the adapter tensors that changed lie in exactly one block.
    const cks = listCheckpoints(ref);
    assert.equal(cks.length, 8);
    let prev = await readSafetensors(join(cks[0]!.dir, 'adapter.safetensors'));
    const perStep: number[][] = [];
    for (const c of cks.slice(1)) {
      const cur = await readSafetensors(join(c.dir, 'adapter.safetensors'));
      const changed = new Set<number>();
      for (const [name, t] of cur) {
        const p = prev.get(name)!;
        const a = t.data as Float32Array;
        const b = p.data as Float32Array;
        if (a.some((x, i) => x !== b[i])) changed.add(layerOf(name));
      }
      assert.equal(changed.size, 1, `step ${c.step}: changed blocks ${[...changed].join(',')}`);
      perStep.push([...changed]);
      prev = cur;
    }
    assert.ok(new Set(perStep.flat()).size > 1, `different blocks over the steps: ${JSON.stringify(perStep)}`);
    // AdamW's bias correction counts each tensor's own updates (PyTorch skips tensors without a
    // gradient): the checkpoint records them. Step 1's block is the one whose lora_B left zero.
    const first = await readSafetensors(join(cks[0]!.dir, 'adapter.safetensors'));
    const step1 = [...first].filter(([k, t]) => k.includes('lora_B') && (t.data as Float32Array).some((x) => x !== 0)).map(([k]) => layerOf(k));
    assert.equal(new Set(step1).size, 1);
    const trained = [step1[0]!, ...perStep.map((b) => b[0]!)];
    for (const c of [cks[4]!, cks[7]!]) {
      const st = JSON.parse(readFileSync(join(c.dir, 'state.json'), 'utf8')) as { optimizerStep: number; optimizerSteps: Record<string, number> };
      assert.equal(st.optimizerStep, c.step);
      const want: Record<string, number> = {};
      for (const name of first.keys()) {
        const count = trained.slice(0, c.step).filter((l) => l === layerOf(name)).length;
        if (count > 0) want[name] = count;
      }
      assert.deepEqual(st.optimizerSteps, want, `update counts at step ${c.step}`);
    }

    const ist = JSON.parse(readFileSync(join(ref, 'ist.json'), 'utf8')) as { steps: number[]; scores: number[][]; importance: number[] };
    assert.deepEqual(ist.steps, [0, 2, 4, 6, 8]);
    assert.equal(ist.scores.length, 5);
    assert.ok(ist.scores.every((s) => s.length === 4));
    assert.ok(ist.scores.at(-1)!.some((x) => x !== 0), 'scores moved');
    assert.deepEqual(ist.importance, ist.scores.at(-1)!.map((x) => sigmoid(-x)));
    const m = await readMetrics(ref);
    assert.deepEqual([0, 1, 2, 3].map((l) => m.at(-1)![`ist_s_${l}`]), ist.scores.at(-1));
    const view = importanceView(JSON.parse(readFileSync(join(ref, 'ist-importance.json'), 'utf8')), 'ist-importance.json');
    const entry = view.methods.find((x) => x.id === 'ist')!;
    assert.equal(entry.timeline!.length, 5);

    // Kill after step 5 (checkpoint 5 exists), resume: same metrics, same adapter bits, same scores.
    const dir = join(root, 'runs', 'killed');
    const kill = new Error('kill');
    await assert.rejects(runTraining(cfg, { runDir: dir, ctx: ctx(), afterStep: (s) => { if (s === 5) throw kill; } }), (e) => e === kill);
    const logs: string[] = [];
    await runTraining(await readRunConfig(dir), { runDir: dir, ctx: ctx(logs) });
    assert.ok(logs.some((l) => /resuming from step-5/.test(l)));
    const strip = (ms: typeof m) => ms.map(({ tokens_per_s: _t, elapsed_s: _e, ...rest }) => rest);
    assert.deepEqual(strip(await readMetrics(dir)), strip(m));
    assert.ok(readFileSync(join(dir, 'adapter', 'adapter_model.safetensors')).equals(readFileSync(join(ref, 'adapter', 'adapter_model.safetensors'))), 'final adapter bitwise equal');
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'ist.json'), 'utf8')), ist);
  });

  test('IST off: no ist.json', async () => {
    const dir = join(root, 'runs', 'off');
    await runTraining(config({ ist: { enabled: false }, steps: 2 }), { runDir: dir, ctx: ctx() });
    assert.ok(!existsSync(join(dir, 'ist.json')));
  });
});
