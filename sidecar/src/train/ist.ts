/**
 * IST — importance-aware sparse tuning (methods.md, "IST"). One score s_l per transformer block,
 * initialised to 0 (high s = less important; importance is shown as σ(−s)).
 *
 *  - Every step only n_upd = ⌊updFraction·L⌋ blocks' adapters train, drawn with weights σ(−s)
 *    without replacement (tensors outside the blocks, layerOf −1, always train).
 *  - Every T steps, on a probe batch, K rounds: draw n_sup = ⌊supFraction·L⌋ blocks with weights
 *    σ(s) without replacement, scale their adapters by λ, and measure the probe loss ℓ_k (eval mode,
 *    no gradients). r_k = exp(−ℓ_k) − mean_j exp(−ℓ_j); for each block i suppressed in round k:
 *    s_i += η·r_k·p_i(1 − p_i), p = σ(s) taken before the rounds.
 *
 * The pure parts live here (sampling, the score update, the state that goes into checkpoints); the
 * trainer wires them to the model. All draws come from one mulberry32 stream whose uint32 state is
 * saved with the scores, so a resumed run draws exactly what an uninterrupted one would.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { LayerGrid } from '../../../src/protocol';
import { gridAxes } from '../analysis/grid';
import type { AdapterInstance } from '../adapters/types';
import { disposeTrainBatch, makeBatch, type BatchOptions } from '../data/batch';
import type { Example } from '../data/dataset';
import type { Model } from '../models/model';
import { Rng } from './rng';

export interface IstOptions {
  enabled: boolean;
  /** Probe rounds per score update. */
  K: number;
  /** Adapter scale of the suppressed blocks during a probe. */
  lambda: number;
  /** Score learning rate. */
  eta: number;
  /** Score update interval (steps). */
  T: number;
  /** Probe batch size (training examples). */
  probeBatch: number;
  /** Fraction of the blocks suppressed per probe round (n_sup = ⌊supFraction·L⌋). */
  supFraction: number;
  /** Fraction of the blocks trained per step (n_upd = ⌊updFraction·L⌋). */
  updFraction: number;
}

/** The authors' settings (methods.md). */
export const IST_DEFAULTS: IstOptions = { enabled: true, K: 3, lambda: 0.25, eta: 10, T: 10, probeBatch: 16, supFraction: 0.5, updFraction: 0.25 };

/** What a checkpoint keeps of IST: the scores, the RNG state, and the score history (for ist.json). */
export interface IstState {
  s: number[];
  rng: number;
  history: { step: number; s: number[] }[];
}

export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** At least one block, at most all of them. */
export function countOf(fraction: number, layers: number): number {
  return Math.min(layers, Math.max(1, Math.floor(fraction * layers)));
}

/**
 * `n` distinct indices drawn with probabilities proportional to `weights`, without replacement
 * (successive draws, each among the indices not yet drawn). Sorted ascending.
 */
export function weightedSampleWithoutReplacement(weights: readonly number[], n: number, rng: Rng): number[] {
  const left = weights.map((w, i) => ({ i, w: Math.max(0, w) }));
  const out: number[] = [];
  const k = Math.min(n, left.length);
  while (out.length < k) {
    const total = left.reduce((a, x) => a + x.w, 0);
    let pick = left.length - 1;
    if (total > 0) {
      let u = rng.next() * total;
      for (let j = 0; j < left.length; j++) {
        u -= left[j]!.w;
        if (u < 0) {
          pick = j;
          break;
        }
      }
    } else pick = rng.int(left.length);
    out.push(left[pick]!.i);
    left.splice(pick, 1);
  }
  return out.sort((a, b) => a - b);
}

/** Rewards r_k = exp(−ℓ_k) − mean_j exp(−ℓ_j). */
export function istRewards(losses: readonly number[]): number[] {
  const e = losses.map((l) => Math.exp(-l));
  const mean = e.reduce((a, b) => a + b, 0) / Math.max(1, e.length);
  return e.map((x) => x - mean);
}

/**
 * The score update after K probe rounds: `rounds[k]` the blocks suppressed in round k, `losses[k]`
 * its probe loss. Returns the new scores (p = σ(s) of the scores passed in).
 */
export function istScoreUpdate(s: readonly number[], rounds: readonly (readonly number[])[], losses: readonly number[], eta: number): number[] {
  if (rounds.length !== losses.length) throw new Error(`IST: ${rounds.length} rounds but ${losses.length} losses`);
  const p = s.map(sigmoid);
  const r = istRewards(losses);
  const out = [...s];
  rounds.forEach((layers, k) => {
    for (const i of layers) out[i] = out[i]! + eta * r[k]! * p[i]! * (1 - p[i]!);
  });
  return out;
}

/** Whether C(n, k) ≥ at: enough distinct k-subsets of n blocks for `at` rounds. */
function binomialAtLeast(n: number, k: number, at: number): boolean {
  let c = 1;
  for (let i = 1; i <= k; i++) {
    c = (c * (n - k + i)) / i;
    if (c >= at) return true;
  }
  return c >= at;
}

/** The IST driver the trainer uses: draws and scores, with a state that round-trips through JSON. */
export class Ist {
  s: number[];
  readonly rng: Rng;
  history: { step: number; s: number[] }[];

  constructor(
    readonly opts: IstOptions,
    readonly layers: number,
    seed: number,
  ) {
    this.s = Array.from({ length: layers }, () => 0);
    this.rng = new Rng(seed);
    this.history = [{ step: 0, s: [...this.s] }];
  }

  get nUpd(): number {
    return countOf(this.opts.updFraction, this.layers);
  }

  get nSup(): number {
    return countOf(this.opts.supFraction, this.layers);
  }

  /** The blocks whose adapters train this step: weights σ(−s). */
  sampleUpdate(): number[] {
    return weightedSampleWithoutReplacement(this.s.map((x) => sigmoid(-x)), this.nUpd, this.rng);
  }

  /** One probe round's suppressed blocks: weights σ(s). */
  sampleSuppress(): number[] {
    return weightedSampleWithoutReplacement(this.s.map(sigmoid), this.nSup, this.rng);
  }

  /** `n` distinct probe rows out of `rows` (uniform). */
  sampleProbe(rows: number): number[] {
    return weightedSampleWithoutReplacement(Array.from({ length: rows }, () => 1), Math.min(rows, this.opts.probeBatch), this.rng);
  }

  /**
   * One score update: K rounds of `probe(suppressed)` → loss. The probe must restore the blocks'
   * scales itself (see the trainer).
   */
  async update(step: number, probe: (suppressed: number[]) => Promise<number>): Promise<{ rounds: number[][]; losses: number[] }> {
    const rounds: number[][] = [];
    const losses: number[] = [];
    // As the authors' code: a round that repeats an earlier round's blocks is drawn again (it would
    // count the same reward twice), unless there are fewer distinct block sets than rounds.
    const distinct = binomialAtLeast(this.layers, this.nSup, this.opts.K);
    const key = (b: readonly number[]) => [...b].sort((x, y) => x - y).join(',');
    for (let k = 0; k < this.opts.K; k++) {
      let sup = this.sampleSuppress();
      for (let tries = 0; distinct && tries < 1000 && rounds.some((r) => key(r) === key(sup)); tries++) sup = this.sampleSuppress();
      rounds.push(sup);
      losses.push(await probe(sup));
    }
    // A non-finite probe loss gives no signal: keep the scores.
    if (losses.every(Number.isFinite)) this.s = istScoreUpdate(this.s, rounds, losses, this.opts.eta);
    this.history.push({ step, s: [...this.s] });
    return { rounds, losses };
  }

  /** Importance per block, σ(−s). */
  importance(): number[] {
    return this.s.map((x) => sigmoid(-x));
  }

  get state(): IstState {
    return { s: [...this.s], rng: this.rng.state, history: this.history.map((h) => ({ step: h.step, s: [...h.s] })) };
  }

  restore(st: IstState): void {
    if (st.s.length !== this.layers) throw new Error(`IST state has ${st.s.length} scores for a model with ${this.layers} blocks`);
    this.s = [...st.s];
    this.rng.state = st.rng;
    this.history = st.history.map((h) => ({ step: h.step, s: [...h.s] }));
  }
}

// ---- trainer integration ---------------------------------------------------------------------

/** Names of the trainable tensors that train this step: those of the drawn blocks, and those outside every block (layerOf −1). */
export function istStepNames(names: readonly string[], adapter: Pick<AdapterInstance, 'layerOf'>, blocks: readonly number[]): string[] {
  const on = new Set(blocks);
  return names.filter((n) => {
    const l = adapter.layerOf(n);
    return l < 0 || on.has(l);
  });
}

/**
 * One score update on a probe batch drawn from `train` (eval mode, no gradients): K rounds, each
 * scaling the suppressed blocks' adapters by λ and restoring them to 1 afterwards.
 */
export async function istProbeUpdate(ist: Ist, step: number, model: Model, adapter: AdapterInstance, train: readonly Example[], batchOpts: BatchOptions): Promise<{ rounds: number[][]; losses: number[] }> {
  const rows = ist.sampleProbe(train.length);
  const batch = makeBatch(rows.map((i) => train[i]!), batchOpts);
  try {
    return await ist.update(step, async (sup) => {
      for (const l of sup) adapter.setLayerScale(l, ist.opts.lambda);
      try {
        const overrides = adapter.overrides();
        const loss = model.lossOf(batch.inputs, batch.labels, { hooks: adapter.hooks, overrides, training: false });
        const v = (await loss.data())[0]!;
        loss.dispose();
        return v;
      } finally {
        for (const l of sup) adapter.setLayerScale(l, 1);
      }
    });
  } finally {
    disposeTrainBatch(batch);
  }
}

/** `ist_s_<layer>` fields of a metrics record. */
export function istMetricFields(ist: Ist): Record<string, number> {
  return Object.fromEntries(ist.s.map((v, l) => [`ist_s_${l}`, v]));
}

export const IST_FILE = 'ist.json';
export const IST_IMPORTANCE_FILE = 'ist-importance.json';

/** A layers × "adapter" grid of σ(−s). */
export function istGrid(s: readonly number[]): LayerGrid {
  const ax = gridAxes(s.length, ['adapter'], false);
  return { ...ax, values: s.map((x) => [sigmoid(-x)]) };
}

/**
 * `ist.json` ({ steps, scores, importance: σ(−s) final }) and `ist-importance.json` (an
 * importance-report-shaped file with `ist: [{ step, grid }]`, which the importance panel shows as
 * "IST score over time"; the grid holds σ(−s), one column "adapter").
 */
export async function writeIstReports(runDir: string, ist: Ist): Promise<void> {
  const h = ist.history;
  const report = { version: 1, layers: ist.layers, options: ist.opts, steps: h.map((x) => x.step), scores: h.map((x) => x.s), importance: ist.importance() };
  await fsp.writeFile(join(runDir, IST_FILE), `${JSON.stringify(report, null, 2)}\n`);
  const panel = { version: 1, source: 'ist', grids: {}, ist: h.map((x) => ({ step: x.step, grid: istGrid(x.s) })) };
  await fsp.writeFile(join(runDir, IST_IMPORTANCE_FILE), `${JSON.stringify(panel)}\n`);
}
