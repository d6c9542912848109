/**
 * A small seeded PRNG (mulberry32) whose whole state is one uint32, so it can be saved in a
 * checkpoint and restored exactly. Used for data order and the eval split; TF.js random ops get
 * explicit seeds derived from the run seed.
 */
/** A seed for TF.js's normal draws (randomNormal, truncatedNormal), which take 0 as "no seed" (its
 * Gaussian generator does `seed ? seed : Math.random()`; the uniform one checks for null): a derived
 * seed of 0 (run seed 0, first module) drew a different init on every run. 0 becomes 0x5eed. */
export const tfSeed = (seed: number): number => (seed === 0 ? 0x5eed : seed);

/** The same generator as a function returning uniforms in [0, 1), for code that needs no saved state. */
export function mulberry32(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

export class Rng {
  private s: number;

  constructor(seed: number) {
    this.s = seed >>> 0;
  }

  get state(): number {
    return this.s;
  }

  set state(v: number) {
    this.s = v >>> 0;
  }

  /** Next uint32. */
  nextU32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): number[] {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    return p;
  }
}

/** A derived seed for a named purpose (so streams do not overlap): FNV-1a of the name mixed with the seed. */
export function deriveSeed(seed: number, purpose: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < purpose.length; i++) {
    h ^= purpose.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return new Rng(h).nextU32();
}
