/**
 * Loads the optional native kernels (native/peft_kernels.cc, built by scripts/build-native.mjs into
 * dist/native/<platform>-<arch>/peft_kernels.node and shipped prebuilt in the package).
 *
 * The addon is compiled for x86-64-v3 (AVX2 + FMA + BMI), so it is loaded only on linux-x64 CPUs
 * that report those features in /proc/cpuinfo; anywhere else, or when the file is missing, or with
 * PEFT_LAB_NATIVE=0, `loadNativeAddon()` returns undefined with the reason and the sidecar keeps
 * the WebAssembly kernels. PEFT_LAB_NATIVE_PATH names a .node file to load instead.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The addon's functions. Offsets are byte offsets into `heap`, the wasm backend's memory. */
export interface NativeAddon {
  info(): { avx2fma: boolean; threads: number; abi: number; gemm: string };
  setThreads(n: number): number;
  gemm(heap: ArrayBuffer, batch: number, M: number, N: number, K: number, a: number, rsA: number, csA: number, strideA: number, b: number, rsB: number, csB: number, strideB: number, c: number, ldc: number, strideC: number, alpha: number, beta: number, bias: number): void;
  /** q, k, v, o: [bh, t, d]; or, with the layout (heads, ldi, ldo), head b·heads + h of q, k, v (and
   * dq, dk, dv) at b·t·ldi + h·d with row stride ldi, of o (and dO) at b·t·ldo + h·d, stride ldo. */
  attnFwd(heap: ArrayBuffer, bh: number, t: number, d: number, scale: number, causal: number, q: number, k: number, v: number, o: number, lse: number, ...layout: [] | [heads: number, ldi: number, ldo: number]): void;
  attnBwd(
    heap: ArrayBuffer,
    bh: number,
    t: number,
    d: number,
    scale: number,
    causal: number,
    q: number,
    k: number,
    v: number,
    o: number,
    lse: number,
    dO: number,
    dq: number,
    dk: number,
    dv: number,
    ...layout: [] | [heads: number, ldi: number, ldo: number]
  ): void;
  layerNorm(heap: ArrayBuffer, n: number, d: number, eps: number, x: number, gamma: number, beta: number, y: number, mean: number, rstd: number): void;
  layerNormGradX(heap: ArrayBuffer, n: number, d: number, dy: number, x: number, gamma: number, mean: number, rstd: number, dx: number): void;
  layerNormGradGamma(heap: ArrayBuffer, n: number, d: number, dy: number, x: number, mean: number, rstd: number, dgamma: number): void;
  sum(heap: ArrayBuffer, rows: number, cols: number, x: number, out: number, overRows: number): void;
  gelu(heap: ArrayBuffer, n: number, x: number, y: number): void;
  geluGrad(heap: ArrayBuffer, n: number, dy: number, x: number, dx: number): void;
  xent(heap: ArrayBuffer, n: number, c: number, logits: number, labels: number, lse: number, loss: number): void;
  xentGrad(heap: ArrayBuffer, n: number, c: number, logits: number, labels: number, lse: number, dy: number, dlogits: number): void;
  /** dst[Σ i·dstStrides] = src[Σ i·srcStrides] over `dims` (4-byte elements; counts bound each region). */
  copy(heap: ArrayBuffer, src: number, srcCount: number, dst: number, dstCount: number, rank: number, ...dimsAndStrides: number[]): void;
  /** out[i] = a[i mod na] op b[i mod nb] (op 0 add, 1 sub, 2 mul); one of na, nb is n, the other divides it. */
  binary(heap: ArrayBuffer, op: number, n: number, a: number, na: number, b: number, nb: number, out: number): void;
  adamw(heap: ArrayBuffer, n: number, p: number, g: number, m0: number, v0: number, pOut: number, mOut: number, vOut: number, b1: number, omb1: number, b2: number, omb2: number, decay: number, c1: number, c2: number, eps: number, lr: number, hasDecay: number): void;
}

export const NATIVE_ABI = 1;
const FILE = 'peft_kernels.node';
/** x86-64-v3 as /proc/cpuinfo spells it (lzcnt is reported as abm). */
const REQUIRED_FLAGS = ['avx', 'avx2', 'fma', 'bmi1', 'bmi2', 'f16c', 'movbe', 'abm'];

/** Why the addon is not used: no file for this platform, a CPU without AVX2/FMA, switched off, or
 * present but failing to load (a broken build: worth an error in tests). */
export type NativeUnavailable = 'missing' | 'unsupported' | 'disabled' | 'error';
export type NativeLoad = { addon: NativeAddon; path: string } | { addon?: undefined; kind: NativeUnavailable; reason: string };

let cached: NativeLoad | undefined;

export function loadNativeAddon(): NativeLoad {
  if (!cached) cached = tryLoad();
  return cached;
}

function tryLoad(): NativeLoad {
  if (process.env.PEFT_LAB_NATIVE === '0') return { kind: 'disabled', reason: 'disabled by PEFT_LAB_NATIVE=0' };
  const target = `${process.platform}-${process.arch}`;
  const explicit = process.env.PEFT_LAB_NATIVE_PATH?.trim();
  const candidates = explicit
    ? [explicit]
    : [
        // Beside the bundle (dist/cli.js, dist/sidecar.js → dist/native/<target>/).
        join(__dirname, 'native', target, FILE),
        // From the sources (tests under tsx): sidecar/src/backend/native → <repo>/dist/native/<target>/.
        resolve(__dirname, '..', '..', '..', '..', 'dist', 'native', target, FILE),
      ];
  const path = candidates.find((p) => existsSync(p));
  if (!path) return { kind: 'missing', reason: explicit ? `${explicit} not found` : `no prebuilt native kernels for ${target} (node scripts/build-native.mjs builds them)` };
  if (target !== 'linux-x64' && !explicit) return { kind: 'missing', reason: `no native kernels for ${target}` };
  const missing = missingCpuFlags();
  if (missing.length) return { kind: 'unsupported', reason: `the CPU lacks ${missing.join(', ')} (the native kernels need AVX2 + FMA)` };
  try {
    const mod = { exports: {} as NativeAddon };
    process.dlopen(mod, path);
    const info = mod.exports.info();
    if (info.abi !== NATIVE_ABI) return { kind: 'error', reason: `${path} has ABI ${info.abi}, expected ${NATIVE_ABI} (rebuild with node scripts/build-native.mjs)` };
    if (!info.avx2fma) return { kind: 'unsupported', reason: 'the CPU lacks AVX2/FMA' };
    return { addon: mod.exports, path };
  } catch (e) {
    return { kind: 'error', reason: `loading ${path} failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}` };
  }
}

function missingCpuFlags(): string[] {
  if (process.arch !== 'x64') return ['x86-64'];
  let text: string;
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return ['a readable /proc/cpuinfo'];
  }
  const line = text.split('\n').find((l) => l.startsWith('flags'));
  const flags = new Set((line?.split(':')[1] ?? '').trim().split(/\s+/));
  return REQUIRED_FLAGS.filter((f) => !flags.has(f));
}
