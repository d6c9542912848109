/**
 * OFT (orthogonal fine-tuning; Qiu et al., 2023) as Hugging Face PEFT computes it (`oft/layer.py`):
 * a linear module's input is rotated block by block before the frozen layer,
 *
 *   y = base(x · R),   R = block_diag(R₁ … R_r),   Rᵢ = I + 2Q + 2Q² + 2Q³ + Q⁴ ≈ (I + Q)(I − Q)⁻¹
 *
 * with Qᵢ skew-symmetric (b × b) from the trained vector `oft_R.weight[i]` of its b(b − 1)/2 upper
 * entries, and Cayley's inverse replaced by PEFT's Neumann series (use_cayley_neumann, 5 terms).
 * r · b = in; PEFT takes one of r and oft_block_size and derives the other (adjusting a size that
 * does not divide `in` to the nearest one that does). Init zero: R = I.
 */
import * as tf from '@tensorflow/tfjs-core';
import { inverse, Matrix } from 'ml-matrix';
import type { LinearModuleInfo } from '../models/architecture';
import { currentWeight, setMerged, type AdapterCore, type MergePart } from './core';

export const oftName = (module: string) => `${module}.oft_R.weight`;

/** PEFT's default number of Neumann terms. */
export const OFT_NEUMANN_TERMS = 5;

export interface OftModule {
  info: LinearModuleInfo;
  /** Blocks r and their size b (r · b = in). */
  blocks: number;
  blockSize: number;
  /** Neumann terms of the Cayley transform (PEFT's num_cayley_neumann_terms). */
  terms: number;
  /** [r, b(b − 1)/2]; zeros when absent. */
  weight?: tf.Tensor2D;
}

/** PEFT's adjust_oft_parameters: the divisor of `n` nearest `want` (the lower on a tie). */
export function nearestDivisor(n: number, want: number): number {
  if (want >= n) return n;
  let higher = want;
  while (higher <= n && n % higher !== 0) higher++;
  let lower = want;
  while (lower > 1 && n % lower !== 0) lower--;
  return want - lower <= higher - want ? lower : higher;
}

/** Blocks and block size of a module from PEFT's r and oft_block_size (exactly one of them non-zero). */
export function oftLayout(inFeatures: number, r: number, blockSize: number): { blocks: number; blockSize: number } {
  if ((r === 0) === (blockSize === 0)) throw new RangeError(`OFT takes either r or the block size, not ${r === 0 ? 'neither' : 'both'} (r ${r}, block size ${blockSize})`);
  if (r === 0) {
    const b = inFeatures % blockSize === 0 && blockSize <= inFeatures ? blockSize : nearestDivisor(inFeatures, blockSize);
    return { blocks: inFeatures / b, blockSize: b };
  }
  const blocks = inFeatures % r === 0 && r <= inFeatures ? r : nearestDivisor(inFeatures, r);
  return { blocks, blockSize: inFeatures / blocks };
}

/**
 * For each of the b² entries of a block, the index of its value in a row of n upper entries (row by
 * row, as torch.triu_indices lists them) followed by one zero: the diagonal and below read the zero.
 */
const upperIndex = new Map<number, tf.Tensor1D>();
function upperIndexOf(b: number): tf.Tensor1D {
  let idx = upperIndex.get(b);
  if (!idx) {
    const n = (b * (b - 1)) / 2;
    const data = new Int32Array(b * b).fill(n);
    let k = 0;
    for (let i = 0; i < b; i++) for (let j = i + 1; j < b; j++) data[i * b + j] = k++;
    idx = tf.keep(tf.tensor1d(data, 'int32'));
    upperIndex.set(b, idx);
  }
  return idx;
}

/** PEFT's _cayley_batch with the Neumann series: [r, n] → the rotations [r, b, b]. */
export function oftRotations(weight: tf.Tensor, b: number, terms = OFT_NEUMANN_TERMS): tf.Tensor3D {
  return tf.tidy(() => {
    const r = weight.shape[0]!;
    const upper = tf.reshape(tf.gather(tf.pad(weight, [[0, 0], [0, 1]]), upperIndexOf(b), 1), [r, b, b]);
    const q = tf.sub(upper, tf.transpose(upper, [0, 2, 1]));
    let rot: tf.Tensor = tf.tile(tf.reshape(tf.eye(b), [1, b, b]), [r, 1, 1]);
    if (terms > 1) {
      rot = tf.add(rot, tf.mul(q, 2));
      if (terms > 2) {
        let power: tf.Tensor = tf.matMul(q as tf.Tensor3D, q as tf.Tensor3D);
        rot = tf.add(rot, tf.mul(power, 2));
        for (let t = 3; t < terms - 1; t++) {
          power = tf.matMul(power as tf.Tensor3D, q as tf.Tensor3D);
          rot = tf.add(rot, tf.mul(power, 2));
        }
        power = tf.matMul(power as tf.Tensor3D, q as tf.Tensor3D);
        rot = tf.add(rot, power);
      }
    }
    return rot as tf.Tensor3D;
  });
}

/** x [N, r·b] rotated block by block: x'[n, i, c] = Σₖ x[n, i, k] · Rᵢ[k, c]. */
function rotateInput(x: tf.Tensor2D, rot: tf.Tensor3D): tf.Tensor2D {
  const [r, b] = [rot.shape[0], rot.shape[1]];
  const n = x.shape[0];
  const blocks = tf.transpose(tf.reshape(x, [n, r, b]), [1, 0, 2]) as tf.Tensor3D;
  return tf.reshape(tf.transpose(tf.matMul(blocks, rot), [1, 0, 2]), [n, r * b]) as tf.Tensor2D;
}

/** W [out, in] (stored layout: [in, out] for Conv1D) with its input side rotated: W' = W · Rᵀ_bd (PEFT's merge). */
function rotateWeight(w: tf.Tensor, rot: tf.Tensor3D, fanInFanOut: boolean, invert: boolean): tf.Tensor {
  return tf.tidy(() => {
    const [r, b] = [rot.shape[0], rot.shape[1]];
    const outIn = (fanInFanOut ? tf.transpose(w) : w) as tf.Tensor2D;
    const out = outIn.shape[0];
    const blocks = tf.transpose(tf.reshape(outIn, [out, r, b]), [1, 0, 2]) as tf.Tensor3D; // [r, out, b]
    // Folding: W'ᵢ = Wᵢ · Rᵢᵀ; undoing it: Wᵢ = W'ᵢ · (Rᵢᵀ)⁻¹ (the series makes Rᵢ orthogonal only nearly).
    const by = invert ? tf.tensor3d(inverseBlocks(rot).flat(), [r, b, b]) : tf.transpose(rot, [0, 2, 1]);
    const rotated = tf.reshape(tf.transpose(tf.matMul(blocks, by as tf.Tensor3D), [1, 0, 2]), [out, r * b]);
    return fanInFanOut ? tf.transpose(rotated) : rotated;
  });
}

/** (Rᵢᵀ)⁻¹ of each block, on the host (unmerging only). */
function inverseBlocks(rot: tf.Tensor3D): number[][] {
  const [r, b] = [rot.shape[0], rot.shape[1]];
  const data = rot.dataSync();
  const out: number[][] = [];
  for (let i = 0; i < r; i++) {
    const m = new Matrix(b, b);
    for (let k = 0; k < b; k++) for (let c = 0; c < b; c++) m.set(c, k, data[i * b * b + k * b + c]!); // transposed
    out.push(inverse(m).to1DArray());
  }
  return out;
}

/**
 * Registers the modules' rotation vectors (trainable), hooks and merge part on `core`; takes
 * ownership of the tensors.
 */
export function addOft(core: AdapterCore, modules: OftModule[]): void {
  for (const mod of modules) {
    const { module: m, layer } = mod.info;
    const name = oftName(m);
    const n = (mod.blockSize * (mod.blockSize - 1)) / 2;
    core.addTrainable(name, mod.weight ?? tf.zeros([mod.blocks, n]), layer);
    core.addLinearHook(m, (x, _layer, base, f) => {
      const factor = core.scaleOf(layer);
      if (factor === 0) return base(x);
      // A layer scale scales the skew generator (0: the identity, as without the adapter).
      const w = factor === 1 ? core.get(f, name) : tf.mul(core.get(f, name), factor);
      return base(rotateInput(x, oftRotations(w, mod.blockSize, mod.terms)));
    });
  }
  const rotationsOf = (mod: OftModule) =>
    tf.tidy(() => {
      const w = core.tensor(oftName(mod.info.module));
      const factor = core.scaleOf(mod.info.layer);
      return oftRotations(factor === 1 ? w : tf.mul(w, factor), mod.blockSize, mod.terms);
    });
  const part: MergePart = {
    merge(out) {
      for (const mod of modules) {
        const name = `${mod.info.module}.weight`;
        const w = currentWeight(core, out, name)!;
        const rot = rotationsOf(mod);
        setMerged(out, name, rotateWeight(w, rot, mod.info.fanInFanOut, false));
        rot.dispose();
      }
    },
    unmerge(out) {
      for (const mod of modules) {
        const name = `${mod.info.module}.weight`;
        const w = out.get(name);
        if (!w) continue;
        const rot = rotationsOf(mod);
        setMerged(out, name, rotateWeight(w, rot, mod.info.fanInFanOut, true));
        rot.dispose();
      }
    },
  };
  core.mergeParts.push(part);
}
