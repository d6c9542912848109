/**
 * Fused attention on WebGPU: PeftAttention (o and the rows' log-sum-exp) and PeftAttentionGrad
 * (dq, dk, dv) on [B, H, T, D] tensors, and PeftAttentionQkv (+Grad) on GPT-2's fused projection
 * qkv [B·T, 3·H·D] → o [B·T, H·D] (heads merged) and d qkv, with the inputs, outputs and attributes
 * of the native kernels (native/peft_kernels.cc attn_fwd / attn_bwd, kernels.ts), flash-attention
 * style: no [T, T] score matrix is ever stored. Both families are the same shaders over a Layout
 * (row strides and column offsets as uniforms), so the qkv kernels need no split, head transposes,
 * merge or concat dispatches.
 *
 * Forward (two programs, runProgram gives one output each): a workgroup owns ROWS query rows, SPLIT
 * threads per row, each thread holding its row's q (and o accumulator) in registers as vec4s; K/V
 * tiles are staged in workgroup memory, the SPLIT threads of a row take every SPLIT-th tile row and
 * merge their partials at the end. lse (online max/sum over the keys) first, then o = Σ exp(s − lse) v.
 *
 * Backward (recomputing P from lse as the native kernel does, Dᵢ = dOᵢ·Oᵢ): see backwardCode. Two
 * workgroup types, dq (per query block) and dk+dv (per key block, sharing P and dS); the qkv gradient
 * is ONE program whose even workgroups are dk/dv blocks and odd ones dq blocks, each writing its own
 * columns of d qkv. The [B, H, T, D] gradient has three outputs, so three programs.
 *
 * With `causal`, tiles wholly above the diagonal are never loaded. Workgroup memory stays within
 * 16 KiB for D ≤ 64 (WebGPU's default limit, and llvmpipe's compat limit); larger D takes smaller
 * backward tiles. The head dimension is compiled in (part of the shader key); D not a multiple of 4
 * is zero-padded to whole vec4s in registers and workgroup memory.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K, type QkvAttrs } from '../native/fused';
import { ceilDiv, registerOnWebGpu, runProgram, WGSL_COMMON, type Uniform } from './program';

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** Rows per workgroup: query rows in lse/o/dq, key rows in dk/dv. */
const ROWS = 32;
/** Threads per row: each walks every SPLIT-th row of the staged tiles, and the partial results are
 * summed (for lse, merged) through workgroup memory at the end. */
const SPLIT = 4;
const THREADS = ROWS * SPLIT;
/** Workgroup memory budget in bytes. */
const SHARED = 16384;
/** Largest staged tile. */
const MAX_TILE = 32;

export function registerAttentionKernels(): void {
  registerOnWebGpu(K.attention, attention);
  registerOnWebGpu(K.attentionGrad, attentionGrad);
  registerOnWebGpu(K.attentionQkv, attentionQkv);
  registerOnWebGpu(K.attentionQkvGrad, attentionQkvGrad);
}

/** Rows of a staged tile when each row takes `bytes` of workgroup memory. */
function tileRows(bytes: number, fixed = 0): number {
  const rows = Math.min(MAX_TILE, Math.floor((SHARED - fixed) / bytes));
  if (rows < 1) throw new Error(`PeftAttention on WebGPU: head dimension too large for ${SHARED} B of workgroup memory`);
  return rows;
}

/** Where q, k, v, o (and dq, dk, dv, dO) live: head bh = b·H + h of a tensor with row stride ld
 * starts at b·T·ld + h·D (the native kernels' AttnDims). [B, H, T, D] tensors are H = 1, ld = D; the
 * fused qkv [B·T, 3·H·D] has ld = 3·H·D with k and v at column offsets H·D and 2·H·D, the merged
 * o / dO [B·T, H·D] ld = H·D. */
interface Layout {
  bh: number;
  t: number;
  d: number;
  heads: number;
  /** Row stride of q, k, v (and of dq, dk, dv). */
  ldi: number;
  /** Row stride of o and dO. */
  ldo: number;
  /** Column offsets of k and v in their input (0 when they are tensors of their own). */
  koff: number;
  voff: number;
  scale: number;
  causal: boolean;
}

/** The input buffers' names in the shader: q, k, v in one (`QKV`) or three. */
interface Sources {
  q: string;
  k: string;
  v: string;
}
const SEPARATE: Sources = { q: 'Q', k: 'K', v: 'V' };
const FUSED: Sources = { q: 'QKV', k: 'QKV', v: 'QKV' };

/** vec4 loads of row `b` (an element offset), column block c: ldq/ldk/ldv from `src`, ldo from O,
 * ldg from DY (those named in `which`). D not a multiple of 4 is zero-padded. */
function loaders(d: number, src: Sources, which: ('q' | 'k' | 'v' | 'o' | 'g')[]): string {
  const buf = (w: string) => (w === 'o' ? 'O' : w === 'g' ? 'DY' : src[w as keyof Sources]);
  const load = (w: string) => {
    const name = buf(w);
    return d % 4 === 0
      ? `fn ld${w}(b : i32, c : i32) -> vec4<f32> {
  let e = b + c * 4;
  return vec4<f32>(${name}[e], ${name}[e + 1], ${name}[e + 2], ${name}[e + 3]);
}`
      : `fn ld${w}(b : i32, c : i32) -> vec4<f32> {
  var r = vec4<f32>(0.0);
  for (var e = 0; e < 4; e++) {
    if (c * 4 + e < HD) { r[e] = ${name}[b + c * 4 + e]; }
  }
  return r;
}`;
  };
  return which.map(load).join('\n');
}

/** Shared WGSL: constants, the row loads and the vec4 row store into `result`. */
function prelude(d: number, src: Sources, which: ('q' | 'k' | 'v' | 'o' | 'g')[], constants: Record<string, number>): string {
  return `${WGSL_COMMON}
const HD : i32 = ${d};
const HD4 : i32 = ${ceilDiv(d, 4)};
${Object.entries(constants)
  .map(([k, v]) => `const ${k} : i32 = ${v};`)
  .join('\n')}
// The workgroup index as a uniform value (private builtins are not, for the uniformity analysis).
var<workgroup> wgShared : i32;
${loaders(d, src, which)}
fn stRow(b : i32, c : i32, x : vec4<f32>) {
  let e = b + c * 4;
  ${d % 4 === 0 ? 'result[e] = x.x; result[e + 1] = x.y; result[e + 2] = x.z; result[e + 3] = x.w;' : 'for (var k = 0; k < 4; k++) { if (c * 4 + k < HD) { result[e + k] = x[k]; } }'}
}
fn hsum(x : vec4<f32>) -> f32 { return (x.x + x.y) + (x.z + x.w); }
fn wgUniform() -> i32 {
  if (localIndex == 0u) { wgShared = wgIndex(); }
  return workgroupUniformLoad(&wgShared);
}
`;
}

// ---- forward: one query row per ROWS threads' group of SPLIT, K/V tiles staged -----------------------

/* The grid: workgroup w handles head bh = w % BH, rows [r0, r0 + ROWS) with r0 = (blocks − 1 − w / BH)·ROWS;
 * thread li works on row r0 + li % ROWS (which may be ≥ T: it then only helps stage tiles), over
 * the tile rows ≡ lane = li / ROWS (mod SPLIT). bI / bK / bV / bO: element offsets of the head's
 * row 0 in q, k, v and o. */
const GRID = /* wgsl */ `
  let T = uniforms.T;
  let blocks = (T + ROWS - 1) / ROWS;
  let w = wgUniform();
  // Past 65535 workgroups TF.js folds the dispatch into a square: the extra ones have no rows.
  if (w >= blocks * uniforms.BH) { return; }
  // Heads minor, blocks from the last: with causal, the longest rows are dispatched first.
  let bh = w % uniforms.BH;
  let r0 = (blocks - 1 - w / uniforms.BH) * ROWS;
  let li = i32(localIndex);
  let rl = li % ROWS;
  let lane = li / ROWS;
  let row = r0 + rl;
  let valid = row < T;
  let rowc = min(row, T - 1);
  let head = bh * T;
  let causal = uniforms.causal != 0;
  let scale = uniforms.scale;
  let ldi = uniforms.ldi;
  let bI = (bh / uniforms.nHeads) * T * ldi + (bh % uniforms.nHeads) * HD;
  let bK = bI + uniforms.koff;
  let bV = bI + uniforms.voff;
  let bO = (bh / uniforms.nHeads) * T * uniforms.ldo + (bh % uniforms.nHeads) * HD;
`;

const FWD_CONSTANTS = (tile: number) => ({ ROWS, SPLIT, NT: THREADS, TILE: tile });

// lse[i] = log Σ_j exp(scale · q_i·k_j) over the unmasked keys (online max and sum).
function lseCode(d: number, tile: number, src: Sources): string {
  return `${prelude(d, src, ['q', 'k'], FWD_CONSTANTS(tile))}
var<workgroup> Ks : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Mr : array<f32, NT>;
var<workgroup> Lr : array<f32, NT>;
fn main(index : i32) {
${GRID}
  var q : array<vec4<f32>, HD4>;
  for (var c = 0; c < HD4; c++) { q[c] = ldq(bI + rowc * ldi, c); }
  let kend = select(T, min(T, r0 + ROWS), causal);
  var m = -3.0e38;
  var l = 0.0;
  for (var k0 = 0; k0 < kend; k0 += TILE) {
    for (var e = li; e < TILE * HD4; e += NT) {
      let j = k0 + e / HD4;
      if (j < T) { Ks[e] = ldk(bK + j * ldi, e % HD4); }
    }
    workgroupBarrier();
    let n = min(TILE, kend - k0);
    for (var r = lane; r < n; r += SPLIT) {
      if (!causal || k0 + r <= row) {
        var s4 = vec4<f32>(0.0);
        for (var c = 0; c < HD4; c++) { s4 += q[c] * Ks[r * HD4 + c]; }
        let s = hsum(s4) * scale;
        if (s > m) {
          l = l * exp(m - s);
          m = s;
        }
        l += exp(s - m);
      }
    }
    workgroupBarrier();
  }
  Mr[li] = m;
  Lr[li] = l;
  workgroupBarrier();
  if (valid && lane == 0) {
    var mm = m;
    for (var s = 1; s < SPLIT; s++) { mm = max(mm, Mr[rl + s * ROWS]); }
    var ll = 0.0;
    for (var s = 0; s < SPLIT; s++) { ll += Lr[rl + s * ROWS] * exp(Mr[rl + s * ROWS] - mm); }
    result[head + row] = mm + log(ll);
  }
}`;
}

// o_i = Σ_j exp(scale · q_i·k_j − lse_i) v_j. The SPLIT partial accumulators of each row are summed
// into lane 0's through Ks (TILE rows of HD4 vec4s: ROWS/TILE passes) after the last barrier.
function outCode(d: number, tile: number, src: Sources): string {
  return `${prelude(d, src, ['q', 'k', 'v'], FWD_CONSTANTS(tile))}
var<workgroup> Ks : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Vs : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
fn main(index : i32) {
${GRID}
  var q : array<vec4<f32>, HD4>;
  var acc : array<vec4<f32>, HD4>;
  for (var c = 0; c < HD4; c++) {
    q[c] = ldq(bI + rowc * ldi, c);
    acc[c] = vec4<f32>(0.0);
  }
  let lse = L[head + rowc];
  let kend = select(T, min(T, r0 + ROWS), causal);
  for (var k0 = 0; k0 < kend; k0 += TILE) {
    for (var e = li; e < TILE * HD4; e += NT) {
      let j = k0 + e / HD4;
      if (j < T) {
        Ks[e] = ldk(bK + j * ldi, e % HD4);
        Vs[e] = ldv(bV + j * ldi, e % HD4);
      }
    }
    workgroupBarrier();
    let n = min(TILE, kend - k0);
    for (var r = lane; r < n; r += SPLIT) {
      if (!causal || k0 + r <= row) {
        var s4 = vec4<f32>(0.0);
        for (var c = 0; c < HD4; c++) { s4 += q[c] * Ks[r * HD4 + c]; }
        let p = exp(hsum(s4) * scale - lse);
        for (var c = 0; c < HD4; c++) { acc[c] += p * Vs[r * HD4 + c]; }
      }
    }
    workgroupBarrier();
  }
  for (var rb = 0; rb < ROWS; rb += TILE) {
    let mine = rl >= rb && rl < rb + TILE;
    for (var s = 1; s < SPLIT; s++) {
      if (mine && lane == s) {
        for (var c = 0; c < HD4; c++) { Ks[(rl - rb) * HD4 + c] = acc[c]; }
      }
      workgroupBarrier();
      if (mine && lane == 0) {
        for (var c = 0; c < HD4; c++) { acc[c] += Ks[(rl - rb) * HD4 + c]; }
      }
      workgroupBarrier();
    }
  }
  if (valid && lane == 0) {
    for (var c = 0; c < HD4; c++) { stRow(bO + row * uniforms.ldo, c, acc[c]); }
  }
}`;
}

/** WGSL opening the loop over a RB × TQ score tile (closed by the caller): element e is own row r
 * (index `own` = r0 + r) against staged row t (index `other` = `base` + t), with sd its two dot
 * products (scoreDots). */
const scoreTileLoop = (own: string, other: string, base: string) => `    for (var e = li; e < RB * TQ; e += NT) {
      let r = e / TQ;
      let t = e % TQ;
      let ${own} = r0 + r;
      let ${other} = ${base} + t;
      let sd = scoreDots(r, t);`;

// ---- backward: score tiles in workgroup memory ------------------------------------------------------

/** Backward tiles: RB rows owned by a workgroup (query rows for dq, key rows for dk/dv), TQ rows of
 * the other side staged per step. */
export interface BackwardTiles {
  rows: number;
  tile: number;
}
/** Preferred first; the first that fits the device's workgroup memory is used. */
const BACKWARD_TILES: BackwardTiles[] = [
  { rows: 16, tile: 8 },
  { rows: 8, tile: 8 },
  { rows: 8, tile: 4 },
  { rows: 4, tile: 4 },
  { rows: 4, tile: 2 },
  { rows: 2, tile: 2 },
  { rows: 1, tile: 1 },
];
let forcedTiles: BackwardTiles | undefined;
/** Test and benchmark hook: use these backward tiles (undefined: the default choice). */
export function setAttentionBackwardTiles(tiles: BackwardTiles | undefined): void {
  forcedTiles = tiles;
}

/** Row stride (in vec4s) of the staged arrays: one vec4 of padding spreads the rows over the banks. */
const padded = (d: number) => ceilDiv(d, 4) + 1;
const backwardBytes = (d: number, { rows, tile }: BackwardTiles) => 16 * padded(d) * 2 * (rows + tile) + 4 * (2 * rows * tile + 2 * rows + 2 * tile + 1);

function backwardTiles(backend: WebGPUBackend, d: number): BackwardTiles {
  if (forcedTiles) return forcedTiles;
  const limit = workgroupStorage(backend);
  const t = BACKWARD_TILES.find((c) => backwardBytes(d, c) <= limit);
  if (!t) throw new Error(`PeftAttentionGrad on WebGPU: head dimension ${d} too large for ${limit} B of workgroup memory`);
  return t;
}

const maxStorage = new WeakMap<object, number>();
function workgroupStorage(backend: WebGPUBackend): number {
  let v = maxStorage.get(backend);
  if (v === undefined) {
    v = (backend as unknown as { device?: GPUDevice }).device?.limits.maxComputeWorkgroupStorageSize ?? SHARED;
    maxStorage.set(backend, v);
  }
  return v;
}

type BackwardMode = 'dq' | 'dk' | 'dv' | 'dqkv';

/*
 * Both workgroup types own RB rows (A0, A1: q and dO rows for dq; k and v rows for dk/dv) and walk
 * TQ-row tiles of the other side (B0, B1: k and v; q and dO, with their lse and Dᵢ = dOᵢ·Oᵢ). Per
 * tile, phase A computes the RB × TQ scores cooperatively (P and dS = P ∘ (dP − Dᵢ) into Pw, Sw),
 * phase B accumulates dq += dS·K, or dk += dSᵀ·Q and dv += Pᵀ·dO, each thread owning CPL vec4
 * columns of one row (SP = NT / RB threads per row), so a thread's registers hold only its
 * accumulator columns. dk and dv share P and dS. With causal, tiles wholly above the diagonal are
 * skipped. Thread li: row rl = li / SP, lane li % SP (the lanes of a row read adjacent vec4s).
 */
function backwardCode(d: number, src: Sources, { rows, tile }: BackwardTiles, mode: BackwardMode): string {
  const sp = THREADS / rows;
  const cpl = ceilDiv(ceilDiv(d, 4), sp);
  const hp = padded(d);
  const wantK = mode === 'dk' || mode === 'dqkv';
  const wantV = mode === 'dv' || mode === 'dqkv';
  const dq = /* wgsl */ `
fn dqBlock(bh : i32, blk : i32) {
${BLOCK}
  // Own rows: q, dO, lse, D.
${stageRows('RB', 'r0', ['A0', 'ldq(bI + x * ldi, c)'], ['A1', 'ldg(bO + x * ldo, c)'])}
${stageStats('RB', 'r0', 'La', 'Da')}
  var acc : array<vec4<f32>, CPL>;
  for (var k = 0; k < CPL; k++) { acc[k] = vec4<f32>(0.0); }
  let kend = select(T, min(T, r0 + RB), causal);
  for (var j0 = 0; j0 < kend; j0 += TQ) {
    workgroupBarrier();
${stageRows('TQ', 'j0', ['B0', 'ldk(bK + x * ldi, c)'], ['B1', 'ldv(bV + x * ldi, c)'])}
    workgroupBarrier();
${scoreTileLoop('i', 'j', 'j0')}
      var ds = 0.0;
      if (i < T && j < T && (!causal || j <= i)) {
        ds = exp(sd.x * scale - La[r]) * (sd.y - Da[r]);
      }
      Sw[e] = ds;
    }
    workgroupBarrier();
    for (var t = 0; t < TQ; t++) {
      let ds = Sw[rl * TQ + t];
      for (var k = 0; k < CPL; k++) {
        let c = lane + k * SP;
        if (c < HD4) { acc[k] += ds * B0[t * HP + c]; }
      }
    }
  }
  if (r0 + rl < T) {
    let b = bR + (r0 + rl) * ldr + uniforms.rq;
    for (var k = 0; k < CPL; k++) {
      let c = lane + k * SP;
      if (c < HD4) { stRow(b, c, acc[k] * scale); }
    }
  }
}`;
  const kv = /* wgsl */ `
fn kvBlock(bh : i32, blk : i32) {
${BLOCK}
  // Own rows: k, v.
${stageRows('RB', 'r0', ['A0', 'ldk(bK + x * ldi, c)'], ['A1', 'ldv(bV + x * ldi, c)'])}
  var acck : array<vec4<f32>, CPL>;
  var accv : array<vec4<f32>, CPL>;
  for (var k = 0; k < CPL; k++) {
    acck[k] = vec4<f32>(0.0);
    accv[k] = vec4<f32>(0.0);
  }
  let ibeg = select(0, (r0 / TQ) * TQ, causal);
  for (var i0 = ibeg; i0 < T; i0 += TQ) {
    workgroupBarrier();
${stageRows('TQ', 'i0', ['B0', 'ldq(bI + x * ldi, c)'], ['B1', 'ldg(bO + x * ldo, c)'])}
${stageStats('TQ', 'i0', 'Lb', 'Db')}
    workgroupBarrier();
${scoreTileLoop('j', 'i', 'i0')}
      var p = 0.0;
      if (i < T && j < T && (!causal || j <= i)) { p = exp(sd.x * scale - Lb[t]); }
      Pw[e] = p;
      Sw[e] = p * (sd.y - Db[t]);
    }
    workgroupBarrier();
    for (var t = 0; t < TQ; t++) {
      let p = Pw[rl * TQ + t];
      let ds = Sw[rl * TQ + t];
      for (var k = 0; k < CPL; k++) {
        let c = lane + k * SP;
        if (c < HD4) {
          ${wantV ? 'accv[k] += p * B1[t * HP + c];' : ''}
          ${wantK ? 'acck[k] += ds * B0[t * HP + c];' : ''}
        }
      }
    }
  }
  if (r0 + rl < T) {
    let b = bR + (r0 + rl) * ldr;
    for (var k = 0; k < CPL; k++) {
      let c = lane + k * SP;
      if (c < HD4) {
        ${wantK ? 'stRow(b + uniforms.rk, c, acck[k] * scale);' : ''}
        ${wantV ? 'stRow(b + uniforms.rv, c, accv[k]);' : ''}
      }
    }
  }
}`;
  const main =
    mode === 'dqkv'
      ? `fn main(index : i32) {
  let w = wgUniform();
  if (w >= 2 * ((uniforms.T + RB - 1) / RB) * uniforms.BH) { return; } // a folded dispatch's extra workgroups
  // Pairs of a key block and a query block whose causal work adds up to about T + RB (the longest
  // first), heads minor.
  let p = w / 2;
  let k = p / uniforms.BH;
  let bh = p % uniforms.BH;
  if (w % 2 == 0) { kvBlock(bh, k); } else { dqBlock(bh, (uniforms.T + RB - 1) / RB - 1 - k); }
}`
      : `fn main(index : i32) {
  let w = wgUniform();
  if (w >= ((uniforms.T + RB - 1) / RB) * uniforms.BH) { return; } // a folded dispatch's extra workgroups
  ${mode === 'dq' ? 'dqBlock(w % uniforms.BH, (uniforms.T + RB - 1) / RB - 1 - w / uniforms.BH);' : 'kvBlock(w % uniforms.BH, w / uniforms.BH);'}
}`;
  return `${prelude(d, src, ['q', 'k', 'v', 'o', 'g'], { RB: rows, TQ: tile, NT: THREADS, SP: sp, CPL: cpl, HP: hp })}
var<workgroup> A0 : array<vec4<f32>, ${rows * hp}>;
var<workgroup> A1 : array<vec4<f32>, ${rows * hp}>;
var<workgroup> B0 : array<vec4<f32>, ${tile * hp}>;
var<workgroup> B1 : array<vec4<f32>, ${tile * hp}>;
var<workgroup> Pw : array<f32, ${rows * tile}>;
var<workgroup> Sw : array<f32, ${rows * tile}>;
var<workgroup> La : array<f32, ${rows}>;
var<workgroup> Da : array<f32, ${rows}>;
var<workgroup> Lb : array<f32, ${tile}>;
var<workgroup> Db : array<f32, ${tile}>;
// (own row r · tile row t) of the first staged pair (A0·B0: the score) and of the second (A1·B1).
fn scoreDots(r : i32, t : i32) -> vec2<f32> {
  var s4 = vec4<f32>(0.0);
  var dp4 = vec4<f32>(0.0);
  for (var c = 0; c < HD4; c++) {
    s4 += A0[r * HP + c] * B0[t * HP + c];
    dp4 += A1[r * HP + c] * B1[t * HP + c];
  }
  return vec2<f32>(hsum(s4), hsum(dp4));
}
// D = dO·O of the row at element offset b of o / dO.
fn rowD(b : i32) -> f32 {
  var d4 = vec4<f32>(0.0);
  for (var c = 0; c < HD4; c++) { d4 += ldg(b, c) * ldo(b, c); }
  return hsum(d4);
}
${mode === 'dq' || mode === 'dqkv' ? dq : ''}
${mode !== 'dq' ? kv : ''}
${main}`;
}

/* A backward block owns rows [r0, r0 + RB) (r0 = blk·RB) of head bh; bI / bK / bV / bO /
 * bR: element offsets of the head's row 0 in q, k, v, o / dO and the result. */
/** WGSL: stage `count` rows from `start` (clamped to T − 1, as row x) into two workgroup arrays, one
 * [array, load expression in x and c] pair each, the block's threads striding over rows × vec4s. */
function stageRows(count: string, start: string, ...pairs: [string, string][]): string {
  return `  for (var e = li; e < ${count} * HD4; e += NT) {
    let r = e / HD4;
    let c = e % HD4;
    let x = min(${start} + r, T - 1);
${pairs.map(([dst, load]) => `    ${dst}[r * HP + c] = ${load};`).join('\n')}
  }`;
}

/** WGSL: the lse and D = dO·O of `count` rows from `start` into two small workgroup arrays. */
function stageStats(count: string, start: string, lse: string, dd: string): string {
  return `  if (li < ${count}) {
    let x = min(${start} + li, T - 1);
    ${lse}[li] = L[bh * T + x];
    ${dd}[li] = rowD(bO + x * ldo);
  }`;
}

const BLOCK = /* wgsl */ `
  let T = uniforms.T;
  let r0 = blk * RB;
  let li = i32(localIndex);
  let rl = li / SP;
  let lane = li % SP;
  let causal = uniforms.causal != 0;
  let scale = uniforms.scale;
  let ldi = uniforms.ldi;
  let ldo = uniforms.ldo;
  let ldr = uniforms.ldr;
  let hb = bh / uniforms.nHeads;
  let hh = (bh % uniforms.nHeads) * HD;
  let bI = hb * T * ldi + hh;
  let bK = bI + uniforms.koff;
  let bV = bI + uniforms.voff;
  let bO = hb * T * ldo + hh;
  let bR = hb * T * ldr + hh;
`;

// ---- kernels -----------------------------------------------------------------------------------------

function uniformsOf(l: Layout): Uniform[] {
  const int = (name: string, value: number): Uniform => ({ name, type: 'int32', value });
  return [
    int('T', l.t),
    int('BH', l.bh),
    int('nHeads', l.heads),
    int('ldi', l.ldi),
    int('ldo', l.ldo),
    int('koff', l.koff),
    int('voff', l.voff),
    { name: 'scale', type: 'float32', value: l.scale },
    int('causal', l.causal ? 1 : 0),
  ];
}

// Bytes of workgroup memory per staged row of the forward kernels: one or two vec4 rows.
const rowBytes = (d: number, vecs: number) => vecs * 16 * ceilDiv(d, 4);

/** lse [BH, T] and o (in o's layout: `oShape`). */
function forward(backend: WebGPUBackend, l: Layout, src: Sources, inputs: Record<string, tf.TensorInfo>, oShape: number[]): [tf.TensorInfo, tf.TensorInfo] {
  const key = `${src.q}-${l.d}`;
  const common = { workgroup: THREADS, workgroups: l.bh * ceilDiv(l.t, ROWS), uniforms: uniformsOf(l) };
  const t1 = tileRows(rowBytes(l.d, 1), 8 * THREADS);
  // lse reads q and k only (every binding must be used).
  const lseInputs = src === FUSED ? inputs : { Q: inputs.Q!, K: inputs.K! };
  const lse = runProgram(backend, { ...common, key: `attn-lse-${key}-${t1}`, inputs: lseInputs, outputShape: [l.bh, l.t], code: () => lseCode(l.d, t1, src) });
  const t2 = tileRows(rowBytes(l.d, 2));
  const o = runProgram(backend, { ...common, key: `attn-o-${key}-${t2}`, inputs: { ...inputs, L: lse }, outputShape: oShape, code: () => outCode(l.d, t2, src) });
  return [o, lse];
}

/** One backward program writing `mode`'s gradients into `result` ([.., ldr] rows, columns rq/rk/rv). */
function backward(
  backend: WebGPUBackend,
  l: Layout,
  src: Sources,
  inputs: Record<string, tf.TensorInfo>,
  mode: BackwardMode,
  out: { shape: number[]; ldr: number; rq: number; rk: number; rv: number },
): tf.TensorInfo {
  const tiles = backwardTiles(backend, l.d);
  const blocks = l.bh * ceilDiv(l.t, tiles.rows);
  const int = (name: string, value: number): Uniform => ({ name, type: 'int32', value });
  return runProgram(backend, {
    key: `attn-bwd-${mode}-${src.q}-${l.d}-${tiles.rows}x${tiles.tile}`,
    inputs,
    outputShape: out.shape,
    workgroup: THREADS,
    workgroups: mode === 'dqkv' ? 2 * blocks : blocks,
    uniforms: [...uniformsOf(l), int('ldr', out.ldr), int('rq', out.rq), int('rk', out.rk), int('rv', out.rv)],
    code: () => backwardCode(l.d, src, tiles, mode),
  });
}

function separateLayout(q: tf.TensorInfo, attrs: KernelArgs['attrs']): Layout {
  const [b, h, t, d] = q.shape as [number, number, number, number];
  return { bh: b * h, t, d, heads: 1, ldi: d, ldo: d, koff: 0, voff: 0, scale: Number(attrs?.scale), causal: !!attrs?.causal };
}

function qkvLayout(attrs: KernelArgs['attrs']): Layout {
  const a = attrs as unknown as QkvAttrs;
  const w = a.heads * a.headDim;
  return { bh: a.batch * a.heads, t: a.seq, d: a.headDim, heads: a.heads, ldi: 3 * w, ldo: w, koff: w, voff: 2 * w, scale: Number(a.scale), causal: !!a.causal };
}

/** PeftAttention: q, k, v [B, H, T, D] → o [B, H, T, D], lse [B·H, T]. */
function attention(args: KernelArgs): tf.TensorInfo[] {
  const { q, k, v } = args.inputs as { q: tf.TensorInfo; k: tf.TensorInfo; v: tf.TensorInfo };
  return forward(args.backend as WebGPUBackend, separateLayout(q, args.attrs), SEPARATE, { Q: q, K: k, V: v }, q.shape);
}

/** PeftAttentionGrad: dq, dk, dv [B, H, T, D] (three programs, one per output). */
function attentionGrad(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { q, k, v, o, lse, dy } = args.inputs as Record<'q' | 'k' | 'v' | 'o' | 'lse' | 'dy', tf.TensorInfo>;
  const l = separateLayout(q, args.attrs);
  const inputs = { Q: q, K: k, V: v, O: o, L: lse, DY: dy };
  const out = { shape: q.shape, ldr: l.d, rq: 0, rk: 0, rv: 0 };
  return (['dq', 'dk', 'dv'] as const).map((mode) => backward(backend, l, SEPARATE, inputs, mode, out));
}

/** PeftAttentionQkv: qkv [B·T, 3·H·D] → o [B·T, H·D] (heads merged), lse [B·H, T]. */
function attentionQkv(args: KernelArgs): tf.TensorInfo[] {
  const { qkv } = args.inputs as { qkv: tf.TensorInfo };
  const l = qkvLayout(args.attrs);
  return forward(args.backend as WebGPUBackend, l, FUSED, { QKV: qkv }, [qkv.shape[0]!, l.ldo]);
}

/** PeftAttentionQkvGrad: d qkv [B·T, 3·H·D] in one program (dq workgroups, then dk/dv ones). */
function attentionQkvGrad(args: KernelArgs): tf.TensorInfo {
  const { qkv, o, lse, dy } = args.inputs as Record<'qkv' | 'o' | 'lse' | 'dy', tf.TensorInfo>;
  const l = qkvLayout(args.attrs);
  const out = { shape: qkv.shape, ldr: l.ldi, rq: 0, rk: l.koff, rv: l.voff };
  return backward(args.backend as WebGPUBackend, l, FUSED, { QKV: qkv, O: o, L: lse, DY: dy }, 'dqkv', out);
}
