/** Seeded fuzzing helpers: a small PRNG, mutation pickers and an outcome tally. */
import assert from 'node:assert/strict';
import { mulberry32 } from '../../sidecar/src/train/rng';

/** Seeded uniforms in [0, 1) for test-case generation (the project's mulberry32). */
export const rng = mulberry32;

export const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
export const int = (r: () => number, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));

/** Cases per family: thousands in CI, twenty times more with PEFT_LAB_LONG=1 (`npm test -- --long`). */
export const fuzzCases = (ci: number): number => (process.env.PEFT_LAB_LONG === '1' ? ci * 20 : ci);

/** Counts outcomes by kind and checks every error is one clear line naming the file. */
export class Tally {
  readonly counts = new Map<string, number>();
  constructor(readonly family: string) {}

  ok(): void {
    this.bump('valid');
  }

  /** An error is acceptable when it is one of `allowed` classes, one line, and names `file`. */
  error(e: unknown, file: string, allowed: readonly string[], caseId: string): void {
    assert.ok(e instanceof Error, `${caseId}: threw a non-Error ${String(e)}`);
    assert.ok(allowed.includes(e.name), `${caseId}: unexpected ${e.name}: ${e.message}`);
    assert.ok(!e.message.includes('\n'), `${caseId}: multi-line error: ${e.message}`);
    assert.ok(e.message.includes(file), `${caseId}: error does not name the file: ${e.message}`);
    this.bump(`${e.name}`);
  }

  private bump(k: string): void {
    this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
  }

  summary(): string {
    const total = [...this.counts.values()].reduce((a, b) => a + b, 0);
    return `${this.family}: ${total} cases (${[...this.counts].map(([k, v]) => `${k} ${v}`).join(', ')})`;
  }
}
