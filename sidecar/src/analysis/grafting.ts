/**
 * Skill localization by grafting (Panigrahi et al. 2023; methods.md "Skill localization").
 *
 * τ = θ_ft − θ_pre over the candidate tensors. Base mask γ: the top ⌊ρN⌋ entries of |τ| over all
 * candidates (N = candidate parameters). Mask logits S ~ U[0, 1) (seeded), bias b = 10:
 *   f = γ + (1 − 2γ) ⊙ σ(S − b)          (soft; round(f) for evaluation)
 *   graft θ = θ_pre + f ⊙ τ
 * Per epoch: g = mean over the epoch's batches of ∂L/∂θ ⊙ τ at the soft graft (= ∂L/∂f), then
 *   S ← S − lr · (1 − 2γ) ⊙ g ⊙ σ(S − b)(1 − σ(S − b))
 * a plain gradient step on S (∂f/∂S = (1 − 2γ) σ'(S − b)), as the authors' code does (it averages
 * lr·g over the batches). The rounded mask is round(f) = γ XOR [S > b].
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LayerGrid, MaskOverlap } from '../../../src/protocol';
import { deriveSeed } from '../train/rng';
import { gridAxes, sumGrid } from './grid';
import { absolute, GlobalRanking } from './topk';

export const GRAFT_DEFAULTS = { bias: 10, lr: 1e7 } as const;

/** f = γ + (1 − 2γ) σ(S − b). */
export function softFraction(S: tf.Tensor, gamma: tf.Tensor, bias: number): tf.Tensor {
  return tf.tidy(() => tf.add(gamma, tf.mul(tf.sub(1, tf.mul(2, gamma)), tf.sigmoid(tf.sub(S, bias)))));
}

/** S − lr (1 − 2γ) ⊙ (gθ ⊙ τ) ⊙ σ(S − b)(1 − σ(S − b)), with gθ = ∂L/∂θ at the soft graft. */
export function graftUpdate(S: tf.Tensor, gamma: tf.Tensor, tau: tf.Tensor, gradTheta: tf.Tensor, lr: number, bias: number): tf.Tensor {
  return tf.tidy(() => {
    const s = tf.sigmoid(tf.sub(S, bias));
    const dS = tf.mul(tf.mul(tf.sub(1, tf.mul(2, gamma)), tf.mul(gradTheta, tau)), tf.mul(s, tf.sub(1, s)));
    return tf.sub(S, tf.mul(lr, dS));
  });
}

export interface GraftOptions {
  sparsity: number;
  bias?: number;
  lr?: number;
  seed?: number;
  /** N for ⌊ρN⌋: candidate parameters (default: the entries of the given tensors). */
  candidateParams?: number;
}

/** The mask state of one sparsity level over the candidate tensors. */
export class Grafter {
  readonly names: string[];
  readonly bias: number;
  readonly lr: number;
  private readonly gamma = new Map<string, tf.Tensor>();
  private S = new Map<string, tf.Tensor>();
  /** Entries of γ. */
  baseMaskSize = 0;

  private constructor(
    /** θ_pre per candidate (not owned). */
    private readonly pre: ReadonlyMap<string, tf.Tensor>,
    /** τ per candidate (not owned). */
    private readonly tau: ReadonlyMap<string, tf.Tensor>,
    opts: GraftOptions,
  ) {
    this.names = [...tau.keys()];
    this.bias = opts.bias ?? GRAFT_DEFAULTS.bias;
    this.lr = opts.lr ?? GRAFT_DEFAULTS.lr;
  }

  /** Builds γ from |τ| (read back once) and draws S. */
  static async create(pre: ReadonlyMap<string, tf.Tensor>, tau: ReadonlyMap<string, tf.Tensor>, opts: GraftOptions): Promise<Grafter> {
    const g = new Grafter(pre, tau, opts);
    const abs: Float32Array[] = [];
    for (const n of g.names) abs.push(absolute((await tau.get(n)!.data()) as Float32Array));
    const total = abs.reduce((s, a) => s + a.length, 0);
    const k = Math.min(total, Math.floor(opts.sparsity * (opts.candidateParams ?? total) + 1e-9));
    const masks = new GlobalRanking(abs).masks(k);
    g.baseMaskSize = k;
    const seed = opts.seed ?? 0;
    g.names.forEach((n, i) => {
      const shape = tau.get(n)!.shape;
      g.gamma.set(n, tf.keep(tf.tensor(Float32Array.from(masks[i]!), shape, 'float32')));
      g.S.set(n, tf.keep(tf.randomUniform(shape, 0, 1, 'float32', deriveSeed(seed, `graft:${n}`))));
    });
    return g;
  }

  /** Soft (or rounded) grafted values θ_pre + f ⊙ τ (new tensors; caller disposes). */
  graft(round: boolean): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const n of this.names) {
      out.set(n, tf.tidy(() => {
        let f = softFraction(this.S.get(n)!, this.gamma.get(n)!, this.bias);
        if (round) f = tf.round(f);
        return tf.add(this.pre.get(n)!, tf.mul(f, this.tau.get(n)!));
      }));
    }
    return out;
  }

  /** round(f) per candidate (new tensors). */
  mask(): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const n of this.names) out.set(n, tf.tidy(() => tf.round(softFraction(this.S.get(n)!, this.gamma.get(n)!, this.bias))));
    return out;
  }

  /** One step on S from the gradient ∂L/∂θ at the soft graft (already averaged over the batches). */
  update(gradTheta: ReadonlyMap<string, tf.Tensor>): void {
    for (const n of this.names) {
      const old = this.S.get(n)!;
      this.S.set(n, tf.keep(graftUpdate(old, this.gamma.get(n)!, this.tau.get(n)!, gradTheta.get(n)!, this.lr, this.bias)));
      old.dispose();
    }
  }

  logits(name: string): tf.Tensor {
    return this.S.get(name)!;
  }

  baseMask(name: string): tf.Tensor {
    return this.gamma.get(name)!;
  }

  dispose(): void {
    tf.dispose([...this.gamma.values(), ...this.S.values()]);
    this.gamma.clear();
    this.S.clear();
  }
}

/** Host 0/1 masks of tensors. */
export async function hostMasks(masks: ReadonlyMap<string, tf.Tensor>): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const [n, t] of masks) out.set(n, Uint8Array.from((await t.data()) as Float32Array, (v) => (v > 0.5 ? 1 : 0)));
  return out;
}

export const countOnes = (m: Uint8Array) => m.reduce((s, v) => s + v, 0);

/**
 * Jaccard overlap |A ∩ B| / |A ∪ B| of two masks over the same base, overall, per block and per
 * (block, module type) cell. A tensor missing from one mask counts as all zeros there.
 */
export function maskOverlap(
  a: ReadonlyMap<string, Uint8Array>,
  b: ReadonlyMap<string, Uint8Array>,
  where: (name: string) => { layer: number; type: string },
  labels: { a: string; b: string; numLayers: number; columns: string[]; sparsity?: number },
): MaskOverlap {
  const cells: { layer: number; type: string; both: number; a: number; b: number }[] = [];
  let both = 0;
  let na = 0;
  let nb = 0;
  for (const name of new Set([...a.keys(), ...b.keys()])) {
    const ma = a.get(name);
    const mb = b.get(name);
    let x = 0;
    let ca = 0;
    let cb = 0;
    const n = (ma ?? mb)!.length;
    for (let i = 0; i < n; i++) {
      const va = ma?.[i] ?? 0;
      const vb = mb?.[i] ?? 0;
      ca += va;
      cb += vb;
      if (va && vb) x++;
    }
    both += x;
    na += ca;
    nb += cb;
    cells.push({ ...where(name), both: x, a: ca, b: cb });
  }
  const jac = (x: number, p: number, q: number) => (p + q - x > 0 ? x / (p + q - x) : 0);
  const perLayer: MaskOverlap['perLayer'] = [];
  for (let l = 0; l < labels.numLayers; l++) {
    const c = cells.filter((x) => x.layer === l);
    const s = c.reduce((acc, x) => ({ both: acc.both + x.both, a: acc.a + x.a, b: acc.b + x.b }), { both: 0, a: 0, b: 0 });
    perLayer.push({ layer: l, jaccard: jac(s.both, s.a, s.b), ...s });
  }
  const columns = [...labels.columns, ...[...new Set(cells.map((c) => c.type))].filter((t) => !labels.columns.includes(t))];
  const axes = gridAxes(labels.numLayers, columns);
  const B = sumGrid(axes, cells, (x) => x.both);
  const A = sumGrid(axes, cells, (x) => x.a);
  const Bm = sumGrid(axes, cells, (x) => x.b);
  const grid: LayerGrid = {
    ...B,
    values: B.values.map((row, i) =>
      row.map((x, j) => {
        const p = A.values[i]![j]!;
        const q = Bm.values[i]![j]!;
        return x === null || p + q === 0 ? null : jac(x, p, q);
      }),
    ),
  };
  return { a: labels.a, b: labels.b, ...(labels.sparsity !== undefined ? { sparsity: labels.sparsity } : {}), jaccard: jac(both, na, nb), perLayer, grid };
}
