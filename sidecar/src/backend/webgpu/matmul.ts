/**
 * Register-blocked SGEMM for the WebGPU backend, registered in place of TF.js's `BatchMatMul` and
 * `_FusedMatMul` (TF.js's own kernels stay as the fallback for what this one does not cover:
 * non-float32, rank < 2 or > 6, empty shapes, prelu, batch broadcasts that do not fold into three
 * dimensions).
 *
 * One dispatch per matmul: transposes are read by indexing (no Transpose dispatches), the batch is
 * part of the flat workgroup index (tile row, tile column, batch), batch broadcasting is folded into
 * up to three (size, A stride, B stride) dimensions passed as uniforms, and bias (over the last
 * axis, or a scalar) plus activation (linear, relu, relu6, elu, sigmoid, leakyrelu) are applied in
 * the epilogue. Accumulation is float32.
 *
 * The kernel (one WGSL generator, one shader per tile config × transposeA × transposeB × epilogue):
 * 256 invocations per workgroup as a (BN/TN) × (BM/TM) grid of threads (× S slices of the K tile);
 * each thread keeps a TM × TN block of the output in registers (vec4 accumulators). A and B tiles
 * are staged in workgroup memory k-major (As[k][m], Bs[k][n]), so the inner loop reads each thread's
 * rows and columns as vec4s: a thread owns TM/4 groups of 4 rows spaced BM/(TM/4) apart (and likewise
 * columns), the standard layout that makes a warp's vec4 reads of Bs consecutive (16 threads × 16 B)
 * and its reads of As broadcasts. Global loads are coalesced along the contiguous axis of each
 * operand in each transpose case (k for A and Bᵀ, m for Aᵀ, n for B); where that makes the
 * workgroup-memory store a transposition (A, Bᵀ) the k-rows are padded by 4 floats so the store's
 * banks differ. The next K tile is loaded from global memory into registers while the current one is
 * computed. A double-buffered variant (two stages, one barrier per K tile) exists but is opt-in
 * (forceMatMulConfig): it measured no faster on the H100.
 *
 * Tile configs (all 256 threads; single-buffered ≤ 16 KiB of workgroup memory, the compat-mode
 * limit on llvmpipe; the H100's Vulkan device offers 48 KiB):
 *   big   128×128, BK 8, 8×8 per thread (8.3 KiB): the highest arithmetic intensity (4 vec4
 *         workgroup reads per 64 FMAs). Chosen only when it still gives ≥ 4 × 132 workgroups
 *         (the 2048×768×8192 vocabulary matmuls), where it beat 64×64 by 20–30%.
 *   mid4  mid with vec4 global loads where each operand allows them: the default for everything
 *         not below (10–15% faster than mid's scalar loads on the H100's d = 768 GEMMs).
 *   mid   64×64, BK 16, 4×4 (8.7 KiB): small K (K ≤ 16: one K tile). On the H100 it matched or beat
 *         128×128 on the M = 2048 × N ∈ {768, 2304, 3072} matmuls (fewer tiles than 4 waves: more
 *         workgroups per SM hide latency better), on the Aᵀ·B weight gradients (768×2048×768:
 *         0.85 vs 1.7 ms) and the attention-shaped batched ones.
 *   wide  128×64, BK 8, 8×4: kept for forcing/benchmarks; never better than the two above.
 *   thin  16×16, BK 64, 4×4, S = 16 (14 KiB): min(M, N) ≤ 16 (LoRA's rank-8 matmuls with
 *         K = 768/2048): 16 slices split each K tile in-workgroup and reduce through workgroup
 *         memory, so a 768×8 weight gradient (K = 2048) still gets 48 workgroups of 256 threads.
 *
 * Split K across workgroups (chooseSplits): long-K matmuls with few output tiles (< 8 per SM) get
 * 2–8 K ranges (≥ 512 each), each workgroup writing a raw partial product to a [splits, …, M, N]
 * buffer that a second dispatch sums with the bias and activation. Aᵀ·B weight gradients
 * (K = 2048 tokens) and the input gradients into d = 768 (K = 2304, 3072, 8192) take this path.
 * From the occupancy argument (a 768×768 output is 144 64×64 tiles: about one workgroup of 8 warps
 * per SM for 128 K tiles, latency-bound); whole-step wall times on the H100 could not separate it
 * from run-to-run noise (splitk=1 LoRA 91–105 ms vs 80 ms with it; PEFT_LAB_WEBGPU_TUNE).
 *
 * The vocabulary-sized A·B (the 128×128 regime) goes to TF.js's vec4 A·B kernel, and the Aᵀ·B
 * weight gradients over a long K to TF.js's kernel (tfjsRoute, with the measurements).
 *
 * PeftLinear (native/fused.ts) is registered here too: x·W(ᵀ) + bias as one GEMM with the bias epilogue.
 *
 * Which kernel a matmul gets: a forced choice (tests, benchmarks) first, then a plan measured on this
 * GPU (`bench --matmuls --plan-out`, PEFT_LAB_WEBGPU_MATMUL_PLAN: shape → tile config, K splits or
 * TF.js's kernel), then the heuristic above (chooseConfig, chooseSplits, tfjsRoute).
 *
 * H100 (Vulkan, robustness on, 2026-11-27; `bench --matmuls`, GPU ms per call, 12-call means of
 * timestamps quantized to 65 µs): the old heuristic → the best choice. A·B 2048×768×2304 mid 0.33
 * → mid4 0.29; 2048×3072×768 mid/split4 0.44 → mid4/split2 0.38; A·Bᵀ 2048×768×8192 (LM head)
 * transpose + TF.js 1.13 → big 0.89; 2048×768×3072 mid 0.39 → big 0.33; Aᵀ·B 3072×2048×768
 * mid/split4 0.42 → TF.js 0.34, 768×2048×2304 mid/split4 0.32 → mid4/split2 0.29. Summed over a
 * full fine-tuning step of the gpu bench case: 48.9 ms with that heuristic, 44.3 with this one,
 * 42.1 with the best choice per shape. At 22–25 TFLOP/s these GEMMs run at about a third of the
 * card's fp32 peak: no tensor cores through WebGPU, and tiles sized for 16 KiB of workgroup memory.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K as FUSED } from '../native/fused';
import { registerOnWebGpu, release, runProgram, tfjsKernel, WGSL_COMMON, type Uniform } from './program';

type KernelArgs = Parameters<tf.KernelFunc>[0];
const WG = 256;

export interface TileConfig {
  name: string;
  BM: number;
  BN: number;
  BK: number;
  TM: number;
  TN: number;
  /** K-tile slices per workgroup (in-workgroup split-K), 1 for the plain tiles. */
  S: number;
  /** Global loads as vec4 along each operand's contiguous axis, where its shape allows (else scalar). */
  vec4?: boolean;
  /** The inner product over a K tile as a loop instead of fully unrolled (fewer live registers). */
  rolled?: boolean;
}

export const CONFIGS: Record<'big' | 'wide' | 'mid' | 'thin' | 'big4' | 'bigR' | 'mid4', TileConfig> = {
  big: { name: 'big', BM: 128, BN: 128, BK: 8, TM: 8, TN: 8, S: 1 },
  wide: { name: 'wide', BM: 128, BN: 64, BK: 8, TM: 8, TN: 4, S: 1 },
  mid: { name: 'mid', BM: 64, BN: 64, BK: 16, TM: 4, TN: 4, S: 1 },
  thin: { name: 'thin', BM: 16, BN: 16, BK: 64, TM: 4, TN: 4, S: 16 },
  // Variants measured on the H100 (2026-11-27, `bench --matmuls`): the 128×128 tile with vec4 global
  // loads (no faster than big) or with its K-tile loop rolled (within 5% of big either way), and
  // 64×64 with vec4 loads (the heuristic's default).
  big4: { name: 'big4', BM: 128, BN: 128, BK: 8, TM: 8, TN: 8, S: 1, vec4: true },
  bigR: { name: 'bigR', BM: 128, BN: 128, BK: 8, TM: 8, TN: 8, S: 1, rolled: true },
  mid4: { name: 'mid4', BM: 64, BN: 64, BK: 16, TM: 4, TN: 4, S: 1, vec4: true },
};

/** Whether each operand takes the vec4 loads of `cfg` for this shape: its contiguous axis a multiple
 * of 4 (so every vec4 is wholly in or out of the matrix and 16-byte aligned) and a whole number of
 * vec4s per thread per tile. */
export function vec4Loads(cfg: TileConfig, M: number, N: number, K: number, ta: boolean, tb: boolean): { va: boolean; vb: boolean } {
  if (!cfg.vec4) return { va: false, vb: false };
  return {
    va: ((cfg.BM * cfg.BK) / WG) % 4 === 0 && (ta ? M : K) % 4 === 0,
    vb: ((cfg.BN * cfg.BK) / WG) % 4 === 0 && (tb ? K : N) % 4 === 0,
  };
}

/** SMs (NVIDIA) / CUs to fill: the tile choice wants about this many workgroups or more. */
const TARGET_WORKGROUPS = 132;

let forced: TileConfig | undefined;
let forcedDoubleBuffer: boolean | undefined;
let tfjsOnly = false;
/** Tests and benchmarks: force a tile config (and double buffering) for every matmul, or 'tfjs' for
 * TF.js's own kernels; undefined restores the heuristic. */
export function forceMatMulConfig(config: TileConfig | 'tfjs' | undefined, doubleBuffer?: boolean): void {
  tfjsOnly = config === 'tfjs';
  forced = config === 'tfjs' ? undefined : config;
  forcedDoubleBuffer = doubleBuffer;
}

export function chooseConfig(M: number, N: number, K: number, batch: number): TileConfig {
  if (forced) return forced;
  if (Math.min(M, N) <= 16) return CONFIGS.thin;
  if (K <= 16) return CONFIGS.mid;
  // Measured on the H100 (Vulkan): 64×64 matched or beat 128×128 everywhere but the 2048×8192
  // vocabulary matmuls (1024 big tiles), where 128×128 was 20–30% faster; and 64×64 with vec4
  // global loads beat the scalar loads by 10–15% on the d = 768 GEMMs (2026-11-27). mid4 falls
  // back to scalar loads per operand where a shape does not allow vec4 (vec4Loads).
  const tiles = (c: TileConfig) => Math.ceil(M / c.BM) * Math.ceil(N / c.BN) * batch;
  if (tiles(CONFIGS.big) >= 4 * TARGET_WORKGROUPS) return CONFIGS.big;
  return CONFIGS.mid4;
}

let forcedSplits: number | undefined;
/** Tests and benchmarks: force the number of K splits across workgroups (1: none) for the plain
 * tile configs; undefined restores the heuristic. */
export function forceMatMulSplitK(splits: number | undefined): void {
  forcedSplits = splits;
}

/**
 * K splits across workgroups (each writes a partial [M, N] product; one more dispatch sums them with
 * the bias and activation). For long-K matmuls whose output has too few tiles to keep 132 SMs busy
 * with several workgroups each: the Aᵀ·B weight gradients (K = 2048 tokens: 768×768 → 144 tiles,
 * 768×3072 → 576) and the input gradients / MLP down-projection (K = 2304, 3072, 8192 into
 * 2048×768 → 384 tiles). Powers of two, each split ≥ 512 of K, until ≥ 16 workgroups per SM.
 */
export function chooseSplits(cfg: TileConfig, M: number, N: number, K: number, batch: number): number {
  if (cfg.S > 1) return 1;
  if (forcedSplits !== undefined) return Math.max(1, Math.min(forcedSplits, Math.ceil(K / cfg.BK)));
  const tiles = Math.ceil(M / cfg.BM) * Math.ceil(N / cfg.BN) * batch;
  if (tiles >= 8 * TARGET_WORKGROUPS) return 1;
  let s = 1;
  while (s < 8 && tiles * s < 16 * TARGET_WORKGROUPS && K / (2 * s) >= 512) s *= 2;
  return s;
}

const ACTIVATIONS: Record<string, string> = {
  linear: 'v',
  relu: 'max(v, 0.0)',
  relu6: 'clamp(v, 0.0, 6.0)',
  elu: 'select(exp(v) - 1.0, v, v >= 0.0)',
  sigmoid: '1.0 / (1.0 + exp(-v))',
  leakyrelu: 'select(uniforms.alpha * v, v, v >= 0.0)',
};

interface Variant {
  cfg: TileConfig;
  ta: boolean;
  tb: boolean;
  /** vec4 global loads of A / B (vec4Loads). */
  va: boolean;
  vb: boolean;
  bias: boolean;
  activation: string;
  doubleBuffer: boolean;
}

/** Workgroup-memory bytes of one stage (A and B tiles). */
function stageBytes(cfg: TileConfig, ta: boolean, tb: boolean): number {
  return 4 * cfg.BK * (cfg.BM + (ta ? 0 : 4) + cfg.BN + (tb ? 4 : 0));
}

function shader(v: Variant): string {
  const { BM, BN, BK, TM, TN, S } = v.cfg;
  const TX = BN / TN;
  const TY = BM / TM;
  const GM = TM / 4; // vec4 row groups per thread
  const GN = TN / 4;
  const LA = (BM * BK) / WG; // A elements loaded per thread per K tile
  const LB = (BN * BK) / WG;
  const AS = (BM + (v.ta ? 0 : 4)) / 4; // As row stride in vec4s
  const BS = (BN + (v.tb ? 4 : 0)) / 4;
  const stages = v.doubleBuffer ? 2 : 1;
  const KS = BK / S; // k per slice per tile
  const L: string[] = [];
  L.push(`var<workgroup> As : array<vec4<f32>, ${stages * BK * AS}>;`);
  L.push(`var<workgroup> Bs : array<vec4<f32>, ${stages * BK * BS}>;`);
  if (S > 1) L.push(`var<workgroup> Red : array<vec4<f32>, ${S * TX * TY * GN}>;`);
  L.push(`var<workgroup> wgShared : i32;`);
  L.push(WGSL_COMMON);
  // Loads of one K tile (k0) into registers, zero outside the matrix. Scalar: each thread loads LA
  // (LB) elements along the operand's contiguous axis; vec4: LA / 4 vec4s, the global index divided
  // by 4 (exact: offsets and the contiguous extent are multiples of 4, see vec4Loads).
  const loadA: string[] = [];
  const storeA: string[] = [];
  const regs: string[] = [];
  if (v.va) {
    const perLine = v.ta ? BM / 4 : BK / 4; // vec4s per contiguous line of the tile
    for (let i = 0; i < LA / 4; i++) {
      const e = `(t + ${i * WG})`;
      const [m, k] = v.ta ? [`(${e} % ${perLine}) * 4`, `${e} / ${perLine}`] : [`${e} / ${perLine}`, `(${e} % ${perLine}) * 4`];
      regs.push(`var ra${i} : vec4<f32>;`);
      loadA.push(`{ let m = ${m}; let k = ${k}; let gm = m0 + m; let gk = k0 + k; ra${i} = vec4<f32>(0.0); if (gm < M && gk < kEnd) { ra${i} = A[(aOff + ${v.ta ? 'gk * M + gm' : 'gm * K + gk'}) / 4]; } }`);
      storeA.push(v.ta ? `{ let m = ${m}; let k = ${k}; As[sa + k * ${AS} + m / 4] = ra${i}; }` : `{ let m = ${m}; let k = ${k}; for (var j = 0; j < 4; j++) { As[sa + (k + j) * ${AS} + m / 4][m % 4] = ra${i}[j]; } }`);
    }
  } else {
    for (let i = 0; i < LA; i++) {
      const e = `(t + ${i * WG})`;
      const [m, k] = v.ta ? [`${e} % ${BM}`, `${e} / ${BM}`] : [`${e} / ${BK}`, `${e} % ${BK}`];
      regs.push(`var ra${i} : f32;`);
      loadA.push(`{ let m = ${m}; let k = ${k}; let gm = m0 + m; let gk = k0 + k; ra${i} = 0.0; if (gm < M && gk < kEnd) { ra${i} = A[aOff + ${v.ta ? 'gk * M + gm' : 'gm * K + gk'}]; } }`);
      storeA.push(`{ let m = ${m}; let k = ${k}; As[sa + k * ${AS} + m / 4][m % 4] = ra${i}; }`);
    }
  }
  const loadB: string[] = [];
  const storeB: string[] = [];
  if (v.vb) {
    const perLine = v.tb ? BK / 4 : BN / 4;
    for (let i = 0; i < LB / 4; i++) {
      const e = `(t + ${i * WG})`;
      const [n, k] = v.tb ? [`${e} / ${perLine}`, `(${e} % ${perLine}) * 4`] : [`(${e} % ${perLine}) * 4`, `${e} / ${perLine}`];
      regs.push(`var rb${i} : vec4<f32>;`);
      loadB.push(`{ let n = ${n}; let k = ${k}; let gn = n0 + n; let gk = k0 + k; rb${i} = vec4<f32>(0.0); if (gn < N && gk < kEnd) { rb${i} = B[(bOff + ${v.tb ? 'gn * K + gk' : 'gk * N + gn'}) / 4]; } }`);
      storeB.push(v.tb ? `{ let n = ${n}; let k = ${k}; for (var j = 0; j < 4; j++) { Bs[sb + (k + j) * ${BS} + n / 4][n % 4] = rb${i}[j]; } }` : `{ let n = ${n}; let k = ${k}; Bs[sb + k * ${BS} + n / 4] = rb${i}; }`);
    }
  } else {
    for (let i = 0; i < LB; i++) {
      const e = `(t + ${i * WG})`;
      const [n, k] = v.tb ? [`${e} / ${BK}`, `${e} % ${BK}`] : [`${e} % ${BN}`, `${e} / ${BN}`];
      regs.push(`var rb${i} : f32;`);
      loadB.push(`{ let n = ${n}; let k = ${k}; let gn = n0 + n; let gk = k0 + k; rb${i} = 0.0; if (gn < N && gk < kEnd) { rb${i} = B[bOff + ${v.tb ? 'gn * K + gk' : 'gk * N + gn'}]; } }`);
      storeB.push(`{ let n = ${n}; let k = ${k}; Bs[sb + k * ${BS} + n / 4][n % 4] = rb${i}; }`);
    }
  }
  // Inner product over this slice's k of the current stage: unrolled, or one k per loop trip.
  const product = (k: string, id: string): string[] => {
    const lines: string[] = [];
    for (let g = 0; g < GM; g++) lines.push(`let a${id}_${g} = As[sa + ${k} * ${AS} + ${g * TY} + ty];`);
    for (let g = 0; g < GN; g++) lines.push(`let b${id}_${g} = Bs[sb + ${k} * ${BS} + ${g * TX} + tx];`);
    for (let r = 0; r < TM; r++)
      for (let g = 0; g < GN; g++) lines.push(`acc[${r * GN + g}] = fma(vec4<f32>(a${id}_${Math.floor(r / 4)}[${r % 4}]), b${id}_${g}, acc[${r * GN + g}]);`);
    return lines;
  };
  const compute: string[] = v.cfg.rolled
    ? [`for (var kk = 0; kk < ${KS}; kk++) {`, ...product('(kb + kk)', ''), '}']
    : Array.from({ length: KS }, (_, kk) => product(`(kb + ${kk})`, `${kk}`)).flat();
  const act = ACTIVATIONS[v.activation]!;
  const biasRead = v.bias ? 'v = v + Bias[col * uniforms.biasStride];' : '';
  // The output row of accumulator row r of thread row ty, the column of group g of thread column tx.
  const rowOf = (tyE: string, r: number) => `m0 + ${Math.floor(r / 4) * TY * 4} + ${tyE} * 4 + ${r % 4}`;
  const colOf = (txE: string, g: number) => `n0 + ${g * TX * 4} + ${txE} * 4`;
  const epilogue: string[] = [];
  if (S === 1) {
    for (let r = 0; r < TM; r++) {
      epilogue.push(`{ let row = ${rowOf('ty', r)}; if (row < M) {`);
      for (let g = 0; g < GN; g++) {
        epilogue.push(`{ let c0 = ${colOf('tx', g)}; let o = oOff + row * N + c0; let s = acc[${r * GN + g}];`);
        epilogue.push(`  for (var c = 0; c < 4; c++) { let col = c0 + c; if (col < N) { var v = s[c]; ${biasRead} result[o + c] = ${act}; } } }`);
      }
      epilogue.push(`} }`);
    }
  } else {
    // Split-K: slices reduce through Red, one accumulator row at a time; the first TX·TY·TN
    // threads each sum one output over the S slices.
    for (let r = 0; r < TM; r++) {
      for (let g = 0; g < GN; g++) epilogue.push(`Red[(slice * ${TX * TY} + tr) * ${GN} + ${g}] = acc[${r * GN + g}];`);
      epilogue.push(`workgroupBarrier();`);
      epilogue.push(`if (t < ${TX * TY * TN}) {
        let q = t / ${TN}; let comp = t % ${TN}; let g = comp / 4; let c = comp % 4;
        var v = 0.0;
        for (var s = 0; s < ${S}; s++) { v = v + Red[(s * ${TX * TY} + q) * ${GN} + g][c]; }
        let row = ${rowOf(`(q / ${TX})`, r)};
        let col = n0 + g * ${TX * 4} + (q % ${TX}) * 4 + c;
        if (row < M && col < N) { ${biasRead} result[oOff + row * N + col] = ${act}; }
      }`);
      epilogue.push(`workgroupBarrier();`);
    }
  }
  const sA = (stage: string) => `${stage} * ${BK * AS}`;
  const sB = (stage: string) => `${stage} * ${BK * BS}`;
  const body = v.doubleBuffer
    ? `
  var k0 = kBegin;
  ${loadA.join('\n  ')}
  ${loadB.join('\n  ')}
  { let sa = 0; let sb = 0;
    ${storeA.join('\n    ')}
    ${storeB.join('\n    ')} }
  workgroupBarrier();
  for (var tile = 0; tile < nTiles; tile++) {
    let cur = tile % 2;
    k0 = kBegin + (tile + 1) * ${BK};
    if (tile + 1 < nTiles) {
      ${loadA.join('\n      ')}
      ${loadB.join('\n      ')}
    }
    { let sa = ${sA('cur')}; let sb = ${sB('cur')};
      ${compute.join('\n      ')} }
    if (tile + 1 < nTiles) {
      let sa = ${sA('(1 - cur)')}; let sb = ${sB('(1 - cur)')};
      ${storeA.join('\n      ')}
      ${storeB.join('\n      ')}
    }
    workgroupBarrier();
  }`
    : `
  var k0 = kBegin;
  ${loadA.join('\n  ')}
  ${loadB.join('\n  ')}
  let sa = 0; let sb = 0;
  for (var tile = 0; tile < nTiles; tile++) {
    ${storeA.join('\n    ')}
    ${storeB.join('\n    ')}
    workgroupBarrier();
    k0 = kBegin + (tile + 1) * ${BK};
    if (tile + 1 < nTiles) {
      ${loadA.join('\n      ')}
      ${loadB.join('\n      ')}
    }
    ${compute.join('\n    ')}
    workgroupBarrier();
  }`;
  return `${L.join('\n')}
fn main(index : i32) {
  let t = i32(localIndex);
  if (t == 0) { wgShared = wgIndex(); }
  let wg = workgroupUniformLoad(&wgShared);
  let M = uniforms.M; let N = uniforms.N; let K = uniforms.K;
  // Workgroups: (K split, batch, tile row, tile column), outermost first.
  let perSplit = uniforms.tilesMN * uniforms.batch;
  let split = wg / perSplit;
  if (split >= uniforms.splits) { return; }
  let b = (wg % perSplit) / uniforms.tilesMN;
  let rem = wg % uniforms.tilesMN;
  let kBegin = split * uniforms.kChunk;
  let kEnd = min(K, kBegin + uniforms.kChunk);
  let m0 = (rem / uniforms.tilesN) * ${BM};
  let n0 = (rem % uniforms.tilesN) * ${BN};
  let b2 = b % uniforms.ob2; let b1 = (b / uniforms.ob2) % uniforms.ob1; let bz = b / (uniforms.ob2 * uniforms.ob1);
  let aOff = (bz * uniforms.sa0 + b1 * uniforms.sa1 + b2 * uniforms.sa2) * M * K;
  let bOff = (bz * uniforms.sb0 + b1 * uniforms.sb1 + b2 * uniforms.sb2) * K * N;
  let oOff = (split * uniforms.batch + b) * M * N;
  let slice = t / ${TX * TY};
  let tr = t % ${TX * TY};
  let tx = tr % ${TX};
  let ty = tr / ${TX};
  let kb = slice * ${KS};
  let nTiles = (kEnd - kBegin + ${BK - 1}) / ${BK};
  var acc : array<vec4<f32>, ${TM * GN}>;
  ${regs.join(' ')}
  ${body}
  ${epilogue.join('\n  ')}
}`;
}

// ---- host side -------------------------------------------------------------------------------------

interface BatchFold {
  batch: number;
  outBatch: number[];
  /** Three folded batch dims, outermost first: sizes (the first is implied) and strides in matrices. */
  ob: [number, number, number];
  sa: [number, number, number];
  sb: [number, number, number];
}

/** Folds numpy-style batch broadcasting into ≤ 3 dims; undefined when it needs more. */
export function foldBatch(batchA: number[], batchB: number[]): BatchFold | undefined {
  let outBatch: number[];
  try {
    outBatch = tf.backend_util.assertAndGetBroadcastShape(batchA, batchB);
  } catch {
    return undefined;
  }
  const r = outBatch.length;
  const padA = [...Array<number>(r - batchA.length).fill(1), ...batchA];
  const padB = [...Array<number>(r - batchB.length).fill(1), ...batchB];
  // Innermost first: (size, strideA, strideB), merging neighbours with the same broadcast pattern.
  const dims: { size: number; sa: number; sb: number; fa: boolean; fb: boolean }[] = [];
  let strideA = 1;
  let strideB = 1;
  for (let d = r - 1; d >= 0; d--) {
    const size = outBatch[d]!;
    if (size !== 1) {
      const fa = padA[d] === size;
      const fb = padB[d] === size;
      const last = dims[dims.length - 1];
      if (last && last.fa === fa && last.fb === fb && (!fa || last.sa * last.size === strideA) && (!fb || last.sb * last.size === strideB)) last.size *= size;
      else dims.push({ size, sa: fa ? strideA : 0, sb: fb ? strideB : 0, fa, fb });
    }
    strideA *= padA[d]!;
    strideB *= padB[d]!;
  }
  if (dims.length > 3) return undefined;
  while (dims.length < 3) dims.push({ size: 1, sa: 0, sb: 0, fa: false, fb: false });
  const [d2, d1, d0] = dims as [(typeof dims)[0], (typeof dims)[0], (typeof dims)[0]];
  return { batch: d0.size * d1.size * d2.size, outBatch, ob: [d0.size, d1.size, d2.size], sa: [d0.sa, d1.sa, d2.sa], sb: [d0.sb, d1.sb, d2.sb] };
}

const maxStorage = new WeakMap<object, number>();
function workgroupStorage(backend: WebGPUBackend): number {
  let v = maxStorage.get(backend);
  if (v === undefined) {
    v = (backend as unknown as { device: GPUDevice }).device.limits.maxComputeWorkgroupStorageSize;
    maxStorage.set(backend, v);
  }
  return v;
}

interface MatMulArgs {
  a: tf.TensorInfo;
  b: tf.TensorInfo;
  ta: boolean;
  tb: boolean;
  bias?: tf.TensorInfo;
  activation: string;
  alpha: number;
}

/** One matmul as run() sees it (batch broadcasting folded), for recordMatMuls. */
export interface MatMulCall {
  M: number;
  N: number;
  K: number;
  batch: number;
  ta: boolean;
  tb: boolean;
  bias: boolean;
}

let recorder: ((call: MatMulCall) => void) | undefined;
/** Benchmarks: calls `fn` with every float32 matmul this backend is asked for (undefined: stop). */
export function recordMatMuls(fn: ((call: MatMulCall) => void) | undefined): void {
  recorder = fn;
}

/** A kernel choice: 'auto' (the heuristic), 'tfjs' (TF.js's kernel), a tile config of CONFIGS, or a
 * config with its K splits forced ('mid/split4'). Undefined for anything else. */
export function parseChoice(choice: string): { config: TileConfig | 'tfjs' | 'auto'; splits?: number } | undefined {
  const m = /^([A-Za-z0-9]+)(?:\/split([1-9]\d*))?$/.exec(choice);
  if (!m) return undefined;
  const [, name, split] = m as unknown as [string, string, string | undefined];
  if ((name === 'tfjs' || name === 'auto') && !split) return { config: name };
  if (!Object.hasOwn(CONFIGS, name)) return undefined;
  return { config: CONFIGS[name as keyof typeof CONFIGS], ...(split ? { splits: Number(split) } : {}) };
}

/** The key of a shape in a matmul plan: batch, transposes, M×K×N. */
export const shapeKey = (c: Pick<MatMulCall, 'M' | 'N' | 'K' | 'batch' | 'ta' | 'tb'>): string => `${c.batch}:${c.ta ? 't' : 'n'}${c.tb ? 't' : 'n'}:${c.M}x${c.K}x${c.N}`;

let plan: Map<string, NonNullable<ReturnType<typeof parseChoice>>> | undefined;
/**
 * Per-shape kernel choices measured on this GPU (`bench --matmuls --plan-out`, loaded from
 * PEFT_LAB_WEBGPU_MATMUL_PLAN): shape key → choice. Shapes not in it take the heuristic; a forced
 * config or split (tests, benchmarks) wins over it. Undefined clears it. Throws on an unknown choice.
 */
export function setMatMulPlan(choices: Record<string, string> | undefined): void {
  if (!choices) {
    plan = undefined;
    return;
  }
  const next = new Map<string, NonNullable<ReturnType<typeof parseChoice>>>();
  for (const [key, choice] of Object.entries(choices)) {
    const parsed = parseChoice(choice);
    if (!parsed || !/^\d+:[nt]{2}:\d+x\d+x\d+$/.test(key)) throw new Error(`matmul plan: '${key}': '${choice}' is not a shape key and kernel choice (e.g. '1:nt:2048x768x2304': 'mid/split2')`);
    if (parsed.config !== 'auto') next.set(key, parsed);
  }
  plan = next;
}

/** Shapes the loaded plan sets (0 without one). */
export const matMulPlanSize = (): number => plan?.size ?? 0;

interface Resolved {
  /** TF.js's kernel, as it is (run() returns undefined). */
  tfjs: boolean;
  /** TF.js's vec4 A·B behind one transpose of B (the heuristic's vocabulary-sized case). */
  viaTfjs: boolean;
  cfg: TileConfig;
  /** K splits across workgroups, after rounding K into whole BK tiles per split. */
  splits: number;
  kChunk: number;
}

/** What run() does with a matmul: forced choice, else the plan's, else the heuristic. */
function resolve(c: MatMulCall): Resolved {
  const { M, N, K, batch, ta } = c;
  const planned = forced || tfjsOnly || forcedSplits !== undefined ? undefined : plan?.get(shapeKey(c));
  const cfg = planned && planned.config !== 'tfjs' && planned.config !== 'auto' ? planned.config : chooseConfig(M, N, K, batch);
  const route = planned ? undefined : tfjsRoute(M, N, K, batch, ta, c.tb);
  const tfjs = tfjsOnly || planned?.config === 'tfjs' || route === 'kernel';
  const viaTfjs = route === 'viaTfjs';
  const requested = cfg.S > 1 ? 1 : planned?.splits !== undefined ? Math.max(1, Math.min(planned.splits, Math.ceil(K / cfg.BK))) : chooseSplits(cfg, M, N, K, batch);
  const kChunk = Math.ceil(K / requested / cfg.BK) * cfg.BK;
  return { tfjs, viaTfjs, cfg, splits: Math.ceil(K / kChunk), kChunk };
}

/** What run() does with a matmul of this shape, for reports: 'tfjs' (TF.js's kernel), or the tile
 * config with its K splits across workgroups ('mid', 'mid/split4'). */
export function describePlan(call: MatMulCall): string {
  const r = resolve(call);
  if (r.tfjs || r.viaTfjs) return 'tfjs';
  return r.splits > 1 ? `${r.cfg.name}/split${r.splits}` : r.cfg.name;
}

/** The matmul on our kernel, or undefined where the caller should fall back. */
function run(backend: WebGPUBackend, x: MatMulArgs): tf.TensorInfo | undefined {
  const { a, b, ta, tb, bias } = x;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2 || ra > 6 || rb > 6) return undefined;
  if (!(x.activation in ACTIVATIONS)) return undefined;
  const M = ta ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const Ka = ta ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const Kb = tb ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const N = tb ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  if (Ka !== Kb) return undefined; // TF.js's kernel throws its own error
  const fold = foldBatch(a.shape.slice(0, -2), b.shape.slice(0, -2));
  if (!fold) return undefined;
  const outShape = [...fold.outBatch, M, N];
  if (outShape.length > 6 || M * N * fold.batch === 0 || Ka === 0) return undefined;
  const call: MatMulCall = { M, N, K: Ka, batch: fold.batch, ta, tb, bias: !!bias };
  recorder?.(call);
  const chosen = resolve(call);
  if (chosen.tfjs) return undefined;
  let biasStride = 0;
  if (bias) {
    const n = tf.util.sizeFromShape(bias.shape);
    if (bias.dtype !== 'float32' || bias.shape.length > outShape.length) return undefined;
    if (n === N && bias.shape[bias.shape.length - 1] === N) biasStride = 1;
    else if (n !== 1) return undefined;
  }
  const { cfg, splits, kChunk } = chosen;
  const limit = workgroupStorage(backend);
  const one = stageBytes(cfg, ta, tb) + (cfg.S > 1 ? 16 * WG : 0) + 16;
  if (one > limit) return undefined;
  // Double buffering measured no faster on the H100 (register prefetch already hides the loads): opt-in.
  const doubleBuffer = cfg.S === 1 && !!forcedDoubleBuffer && 2 * stageBytes(cfg, ta, tb) + 16 <= limit;
  const { va, vb } = vec4Loads(cfg, M, N, Ka, ta, tb);
  if (previousFusedMatMul && chosen.viaTfjs) return viaTfjs(backend, x);
  const tilesN = Math.ceil(N / cfg.BN);
  const tilesMN = Math.ceil(M / cfg.BM) * tilesN;
  // Split K: the GEMM writes raw partial products, the reduction applies bias and activation.
  const v: Variant = { cfg, ta, tb, va, vb, bias: !!bias && splits === 1, activation: splits === 1 ? x.activation : 'linear', doubleBuffer };
  const int = (name: string, value: number): Uniform => ({ name, type: 'int32', value });
  const uniforms: Uniform[] = [
    int('M', M),
    int('N', N),
    int('K', Ka),
    int('tilesN', tilesN),
    int('tilesMN', tilesMN),
    int('batch', fold.batch),
    int('ob1', fold.ob[1]),
    int('ob2', fold.ob[2]),
    int('sa0', fold.sa[0]),
    int('sa1', fold.sa[1]),
    int('sa2', fold.sa[2]),
    int('sb0', fold.sb[0]),
    int('sb1', fold.sb[1]),
    int('sb2', fold.sb[2]),
    int('biasStride', biasStride),
    int('splits', splits),
    int('kChunk', kChunk),
    { name: 'alpha', type: 'float32', value: x.alpha },
  ];
  const inputs: Record<string, tf.TensorInfo> = v.bias && bias ? { A: a, B: b, Bias: bias } : { A: a, B: b };
  const product = runProgram(backend, {
    key: `matmul-${cfg.name}-${ta ? 't' : 'n'}${tb ? 't' : 'n'}${va ? '4' : '1'}${vb ? '4' : '1'}-${v.bias ? 'bias' : ''}-${v.activation}-${doubleBuffer ? 'db' : 'sb'}`,
    inputs,
    vec4Inputs: [...(va ? ['A'] : []), ...(vb ? ['B'] : [])],
    outputShape: splits === 1 ? outShape : [splits * fold.batch, M, N],
    workgroup: WG,
    workgroups: splits * tilesMN * fold.batch,
    uniforms,
    code: () => shader(v),
  });
  if (splits === 1) return product;
  const total = fold.batch * M * N;
  const out = runProgram(backend, {
    key: `matmul-splitk-reduce-${bias ? 'bias' : ''}-${x.activation}`,
    inputs: bias ? { P: product, Bias: bias } : { P: product },
    outputShape: outShape,
    workgroup: WG,
    workgroups: Math.ceil(total / WG),
    uniforms: [int('total', total), int('N', N), int('splits', splits), int('biasStride', biasStride), { name: 'alpha', type: 'float32', value: x.alpha }],
    code: () => reduceShader(!!bias, x.activation),
  });
  release(backend, product);
  return out;
}

/** Sums the K splits' partial products ([splits, total]) and applies bias and activation. */
function reduceShader(bias: boolean, activation: string): string {
  return `${WGSL_COMMON}
fn main(index : i32) {
  let i = wgIndex() * ${WG} + i32(localIndex);
  let total = uniforms.total;
  if (i >= total) { return; }
  var v = P[i];
  for (var s = 1; s < uniforms.splits; s++) { v = v + P[s * total + i]; }
  ${bias ? 'v = v + Bias[(i % uniforms.N) * uniforms.biasStride];' : ''}
  result[i] = ${ACTIVATIONS[activation]!};
}`;
}

/**
 * Where the heuristic hands a matmul to TF.js (undefined: our kernel), from the H100 measurements:
 * - 'viaTfjs': A·B in the 128×128 regime, one matrix, vec4-friendly K and N (TF.js's packed vec4
 *   program; 1.1 ms for 2048×768×8192 against 1.9 for big, measured 2026-11-26). A·Bᵀ of that size
 *   stays ours: big took 0.89 ms for GPT-2's tied LM head against 1.13 for the transpose + TF.js.
 * - 'kernel': the Aᵀ·B weight gradients over a long K (the tokens; ≥ 1024): TF.js's kernel took
 *   0.34 ms for 3072×2048×768 and 768×2048×3072 against 0.42 for mid/split4 (2026-11-27).
 * Never when a config or a K split is forced (tests and PEFT_LAB_WEBGPU_TUNE=splitk=N time our kernel).
 * TF.js's packed matmul reads B without bounds checks: it relies on Dawn's robustness (webgpu/dawn.ts).
 */
export function tfjsRoute(M: number, N: number, K: number, batch: number, ta: boolean, tb: boolean): 'viaTfjs' | 'kernel' | undefined {
  if (forced || tfjsOnly || forcedSplits !== undefined || batch !== 1) return undefined;
  if (ta && !tb && K >= 1024 && Math.min(M, N) > 16) return 'kernel';
  if (!ta && !tb && K % 4 === 0 && N % 4 === 0 && chooseConfig(M, N, K, batch) === CONFIGS.big) return 'viaTfjs';
  return undefined;
}

/** The vocabulary-sized A·B (the 128×128 regime: ≥ 528 such tiles) on TF.js's vec4 A·B kernel
 * (tfjsRoute): the fused one, so a bias and activation stay in its epilogue. */
function viaTfjs(backend: WebGPUBackend, x: MatMulArgs): tf.TensorInfo {
  const inputs: Record<string, tf.TensorInfo> = x.bias ? { a: x.a, b: x.b, bias: x.bias } : { a: x.a, b: x.b };
  return previousFusedMatMul!({ inputs, backend, attrs: { transposeA: false, transposeB: false, activation: x.activation, leakyreluAlpha: x.alpha } }) as tf.TensorInfo;
}

let previousBatchMatMul: tf.KernelFunc | undefined;
let previousFusedMatMul: tf.KernelFunc | undefined;

function batchMatMul(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const attrs = args.attrs ?? {};
  const out = run(args.backend as WebGPUBackend, { a, b, ta: !!attrs.transposeA, tb: !!attrs.transposeB, activation: 'linear', alpha: 0 });
  if (out) return out;
  if (!previousBatchMatMul) throw new Error('BatchMatMul: no fallback kernel on webgpu');
  return previousBatchMatMul(args);
}

function fusedMatMul(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { a, b, bias, preluActivationWeights } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo; bias?: tf.TensorInfo; preluActivationWeights?: tf.TensorInfo };
  const attrs = args.attrs ?? {};
  const activation = (attrs.activation as string | undefined) ?? 'linear';
  const out = preluActivationWeights
    ? undefined
    : run(args.backend as WebGPUBackend, { a, b, ta: !!attrs.transposeA, tb: !!attrs.transposeB, bias, activation, alpha: (attrs.leakyreluAlpha as number | undefined) ?? 0.2 });
  if (out) return out;
  if (!previousFusedMatMul) throw new Error('_FusedMatMul: no fallback kernel on webgpu');
  return previousFusedMatMul(args);
}

/** PeftLinear (native/fused.ts fusedLinear): x [N, in] · w (wᵀ with transposeB) + bias [out] as one
 * GEMM with the bias in its epilogue. The gradient (native/kernels.ts) is tf.matMul's: our kernels. */
function linear(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x, w, bias } = args.inputs as { x: tf.TensorInfo; w: tf.TensorInfo; bias: tf.TensorInfo };
  const tb = !!args.attrs?.transposeB;
  const out = run(args.backend as WebGPUBackend, { a: x, b: w, ta: false, tb, bias, activation: 'linear', alpha: 0 });
  if (out) return out;
  if (!previousFusedMatMul) throw new Error('PeftLinear: no fallback kernel on webgpu');
  return previousFusedMatMul({ inputs: { a: x, b: w, bias }, backend: args.backend, attrs: { transposeA: false, transposeB: tb, activation: 'linear' } });
}

/** Registers (idempotently) the matmul kernels on webgpu in place of TF.js's, which stay as the fallback. */
export function registerMatMulKernels(): void {
  previousBatchMatMul ??= tfjsKernel(tf.BatchMatMul);
  previousFusedMatMul ??= tfjsKernel(tf._FusedMatMul);
  registerOnWebGpu(tf.BatchMatMul, batchMatMul, true);
  registerOnWebGpu(tf._FusedMatMul, fusedMatMul, true);
  registerOnWebGpu(FUSED.linear, linear);
}
