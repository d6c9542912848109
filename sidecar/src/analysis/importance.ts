/**
 * Importance scores of parameters (methods.md, "Importance and sensitivity"). Over N batches, with
 * g_b the gradient of batch b's mean loss (one forward + backward per batch, eval mode):
 *   fisher     Σ_b g_b²                 (empirical Fisher; SPT's sensitivity)
 *   grad-norm  |Σ_b g_b| per entry; per tensor ‖Σ_b g_b‖₂
 *   taylor     |Σ_b w ⊙ g_b| = |w ⊙ Σ_b g_b|   (w is fixed while scoring)
 *   adalora    AdaLoRA's sensitivity (PEFT's RankAllocator): I_b = |w ⊙ g_b|, Ī ← β₁Ī + (1−β₁)I_b,
 *              Ū ← β₂Ū + (1−β₂)|I_b − Ī| (from zeros, β₁ = β₂ = 0.85); score Ī ⊙ Ū
 * and, where cheap, the mean |x| of every linear module's input (recorded by a linear hook during
 * the same forward pass; padding positions included). Accumulators live on the device; nothing is read back
 * until the end (the loss is summed on the device too).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ImportanceGrids, ImportanceMethod, ImportanceReport, ImportanceTensor, LayerGrid } from '../../../src/protocol';
import type { HostTensor } from '../io/safetensors';
import { fromTf } from '../io/tensors';
import type { Hooks, LinearHook } from '../models/forward';
import { divideGrids, gridAxes, moduleTypes, sumGrid, type GridAxes } from './grid';

export const METHOD_ORDER: readonly ImportanceMethod[] = ['fisher', 'grad-norm', 'taylor', 'adalora'];

/** AdaLoRA's EMA factors for the sensitivity and its uncertainty (PEFT's defaults). */
export const ADALORA_BETAS = { beta1: 0.85, beta2: 0.85 } as const;

/** A tensor being scored. */
export interface ScoreTarget {
  name: string;
  source: 'base' | 'adapter';
  layer: number;
  type: string;
}

export class ImportanceAccumulator {
  private readonly sq = new Map<string, tf.Tensor>();
  private readonly sum = new Map<string, tf.Tensor>();
  private readonly act = new Map<string, { sum: tf.Tensor; count: number }>();
  /** AdaLoRA's smoothed sensitivity Ī and uncertainty Ū. */
  private readonly emaIpt = new Map<string, tf.Tensor>();
  private readonly emaUnc = new Map<string, tf.Tensor>();
  private lossSum: tf.Tensor | undefined;
  batches = 0;

  /** `value(name)`: the scored tensor's value w (the per-batch |w ⊙ g| of adalora needs it). */
  constructor(
    readonly names: readonly string[],
    readonly methods: ReadonlySet<ImportanceMethod>,
    private readonly value?: (name: string) => tf.Tensor,
  ) {
    if (methods.has('adalora') && !value) throw new Error('adalora scores need the tensors\' values');
  }

  get needSquares(): boolean {
    return this.methods.has('fisher');
  }

  get needSums(): boolean {
    return this.methods.has('grad-norm') || this.methods.has('taylor');
  }

  /** Adds one batch's loss and gradients; takes ownership of (disposes) them. */
  add(loss: tf.Tensor, grads: ReadonlyMap<string, tf.Tensor>): void {
    const first = this.batches === 0;
    const names = this.names;
    const sq = this.needSquares;
    const sm = this.needSums;
    if (this.methods.has('adalora')) this.addSensitivity(grads);
    const next = tf.tidy(() => {
      const outSq: tf.Tensor[] = [];
      const outSum: tf.Tensor[] = [];
      for (const n of names) {
        const g = grads.get(n);
        if (!g) throw new Error(`no gradient for ${n}`);
        if (sq) outSq.push(first ? tf.square(g) : tf.add(this.sq.get(n)!, tf.square(g)));
        if (sm && !first) outSum.push(tf.add(this.sum.get(n)!, g));
      }
      const l = this.lossSum ? tf.add(this.lossSum, loss) : tf.clone(loss);
      return { outSq, outSum, l };
    });
    names.forEach((n, i) => {
      if (sq) {
        this.sq.get(n)?.dispose();
        this.sq.set(n, next.outSq[i]!);
      }
      if (sm) {
        if (first) this.sum.set(n, grads.get(n)!);
        else {
          this.sum.get(n)!.dispose();
          this.sum.set(n, next.outSum[i]!);
        }
      }
    });
    for (const [n, g] of grads) if (!(sm && first && this.sum.get(n) === g)) g.dispose();
    this.lossSum?.dispose();
    this.lossSum = next.l;
    loss.dispose();
    this.batches++;
  }

  private addSensitivity(grads: ReadonlyMap<string, tf.Tensor>): void {
    const { beta1, beta2 } = ADALORA_BETAS;
    for (const n of this.names) {
      const g = grads.get(n);
      if (!g) throw new Error(`no gradient for ${n}`);
      const [ipt, unc] = tf.tidy(() => {
        const i = tf.abs(tf.mul(this.value!(n), g));
        const prevIpt = this.emaIpt.get(n);
        const prevUnc = this.emaUnc.get(n);
        const ipt = prevIpt ? tf.add(tf.mul(prevIpt, beta1), tf.mul(i, 1 - beta1)) : tf.mul(i, 1 - beta1);
        const dev = tf.mul(tf.abs(tf.sub(i, ipt)), 1 - beta2);
        return [ipt, prevUnc ? tf.add(tf.mul(prevUnc, beta2), dev) : dev];
      });
      this.emaIpt.get(n)?.dispose();
      this.emaUnc.get(n)?.dispose();
      this.emaIpt.set(n, ipt);
      this.emaUnc.set(n, unc);
    }
  }

  /**
   * Linear hooks that record Σ|x| over each module's input during the gradient's forward pass,
   * then run the adapter's hook for that module (if any) or the plain layer.
   */
  activationHooks(modules: readonly string[], inner?: Hooks): Hooks {
    const linear = new Map<string, LinearHook>(inner?.linear ?? []);
    for (const m of modules) {
      const wrapped = inner?.linear?.get(m);
      linear.set(m, (x, layer, base, f) => {
        // A full reduction: per-feature sums (a reduction over axis 0) cost a transpose of x, ~10% of a step.
        const s = tf.sum(tf.abs(x));
        const old = this.act.get(m);
        this.act.set(m, { sum: tf.keep(old ? tf.add(old.sum, s) : s), count: (old?.count ?? 0) + x.size });
        old?.sum.dispose();
        return wrapped ? wrapped(x, layer, base, f) : base(x);
      });
    }
    return { ...inner, linear };
  }

  /** Per-entry scores by method (new tensors; the caller disposes). `value(name)` is w for Taylor. */
  scores(value: (name: string) => tf.Tensor): Map<ImportanceMethod, Map<string, tf.Tensor>> {
    if (this.batches === 0) throw new Error('no batch was scored');
    const out = new Map<ImportanceMethod, Map<string, tf.Tensor>>();
    for (const m of METHOD_ORDER) {
      if (!this.methods.has(m)) continue;
      const per = new Map<string, tf.Tensor>();
      for (const n of this.names) {
        if (m === 'fisher') per.set(n, tf.clone(this.sq.get(n)!));
        else if (m === 'grad-norm') per.set(n, tf.abs(this.sum.get(n)!));
        else if (m === 'adalora') per.set(n, tf.mul(this.emaIpt.get(n)!, this.emaUnc.get(n)!));
        else per.set(n, tf.tidy(() => tf.abs(tf.mul(value(n), this.sum.get(n)!))));
      }
      out.set(m, per);
    }
    return out;
  }

  /** Mean |x| of each recorded module's input, as a [1] tensor (new tensors). */
  activationMeans(): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const [m, a] of this.act) out.set(m, tf.tidy(() => tf.reshape(tf.div(a.sum, a.count), [1])));
    return out;
  }

  async meanLoss(): Promise<number> {
    if (!this.lossSum) return NaN;
    return (await this.lossSum.data())[0]! / this.batches;
  }

  dispose(): void {
    tf.dispose([...this.sq.values(), ...this.sum.values(), ...this.emaIpt.values(), ...this.emaUnc.values(), ...[...this.act.values()].map((a) => a.sum)]);
    this.lossSum?.dispose();
    this.sq.clear();
    this.sum.clear();
    this.emaIpt.clear();
    this.emaUnc.clear();
    this.act.clear();
    this.lossSum = undefined;
  }
}

function hostSum(d: Float32Array): number {
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i]!;
  return s;
}

function hostSumSq(d: Float32Array): number {
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
  return s;
}

export interface ImportanceOutputs {
  /** scores.safetensors contents. */
  scores: Map<string, HostTensor>;
  tensors: ImportanceTensor[];
  grids: Partial<Record<ImportanceMethod, ImportanceGrids>>;
  adapterGrids?: Partial<Record<ImportanceMethod, ImportanceGrids>>;
  gradNormGrid?: LayerGrid;
  numel: LayerGrid;
  activations?: ImportanceReport['activations'];
}

/**
 * Reads the final scores back, once: per-tensor totals, the layer × module-type grids, and the
 * tensors for scores.safetensors. `columns` are the module types of the base model (adapter types
 * that are not among them are appended).
 */
export async function summarize(
  acc: ImportanceAccumulator,
  targets: readonly ScoreTarget[],
  value: (name: string) => tf.Tensor,
  axes: { numLayers: number; columns: string[] },
  linearModules: readonly { module: string; layer: number; type: string; inFeatures: number }[],
): Promise<ImportanceOutputs> {
  const columns = [...axes.columns, ...moduleTypes(targets).filter((t) => !axes.columns.includes(t))];
  const ax: GridAxes = gridAxes(axes.numLayers, columns);
  const scoreTensors = acc.scores(value);
  const scores = new Map<string, HostTensor>();
  const tensors: ImportanceTensor[] = [];
  const shapes = new Map<string, number[]>();
  try {
    for (const t of targets) {
      const shape = [...value(t.name).shape];
      shapes.set(t.name, shape);
      tensors.push({ name: t.name, source: t.source, layer: t.layer, type: t.type, shape, numel: shape.reduce((a, b) => a * b, 1), totals: {} });
    }
    const byName = new Map(tensors.map((t) => [t.name, t]));
    for (const [method, per] of scoreTensors) {
      for (const [name, s] of per) {
        const h = await fromTf(s);
        scores.set(`${method}.${name}`, h);
        const d = h.data as Float32Array;
        const rec = byName.get(name)!;
        rec.totals[method] = hostSum(d);
        if (method === 'grad-norm') rec.gradNorm = Math.sqrt(hostSumSq(d));
      }
    }
  } finally {
    for (const per of scoreTensors.values()) tf.dispose([...per.values()]);
  }
  const grid = (items: ImportanceTensor[]): Partial<Record<ImportanceMethod, ImportanceGrids>> => {
    const out: Partial<Record<ImportanceMethod, ImportanceGrids>> = {};
    const size = sumGrid(ax, items, (x) => x.numel);
    for (const m of scoreTensors.keys()) {
      const sum = sumGrid(ax, items, (x) => x.totals[m] ?? 0);
      out[m] = { sum, mean: divideGrids(sum, size) };
    }
    return out;
  };
  const base = tensors.filter((t) => t.source === 'base');
  const adapter = tensors.filter((t) => t.source === 'adapter');
  const out: ImportanceOutputs = { scores, tensors, grids: grid(base), numel: sumGrid(ax, base, (x) => x.numel) };
  if (adapter.length) out.adapterGrids = grid(adapter);
  if (scoreTensors.has('grad-norm')) {
    const sq = sumGrid(ax, base, (x) => (x.gradNorm ?? 0) ** 2);
    out.gradNormGrid = { ...sq, values: sq.values.map((r) => r.map((v) => (v === null ? null : Math.sqrt(v)))) };
  }
  const means = acc.activationMeans();
  if (means.size) {
    try {
      const modules: NonNullable<ImportanceReport['activations']>['modules'] = [];
      for (const lm of linearModules) {
        const t = means.get(lm.module);
        if (!t) continue;
        const h = await fromTf(t);
        scores.set(`activation.${lm.module}`, h);
        modules.push({ module: lm.module, layer: lm.layer, type: lm.type, inFeatures: lm.inFeatures, meanAbs: (h.data as Float32Array)[0]! });
      }
      const s = sumGrid(ax, modules, (m) => m.meanAbs);
      const c = sumGrid(ax, modules, () => 1);
      out.activations = { modules, grid: divideGrids(s, c) };
    } finally {
      tf.dispose([...means.values()]);
    }
  }
  return out;
}
