/**
 * Fused attention on WebGPU: PeftAttention (o and the rows' log-sum-exp) and PeftAttentionGrad
 * (dq, dk, dv), with the inputs, outputs and attributes of the native kernels (native/peft_kernels.cc
 * attn_fwd_generic / attn_bwd_generic), flash-attention style: no [T, T] score matrix is ever stored.
 *
 * A workgroup owns ROWS rows (query rows, or key rows in the dk/dv kernels), SPLIT threads per row;
 * each thread keeps its row's vectors and a partial accumulator in registers as vec4s. The workgroup
 * stages tiles of the other side (K/V rows, or Q/dO rows) in workgroup memory; the SPLIT threads of a
 * row take every SPLIT-th tile row, which shortens each thread's serial chain (the step is latency-
 * bound at B·H·T/ROWS workgroups), and sum their partials at the end. With `causal`, tiles wholly above
 * the diagonal are never loaded (a query block stops at its last row; a key block starts at its
 * first), and only the tile on the diagonal masks per element.
 *
 * runProgram gives one output per program, so the forward pass is two programs, lse (online max/sum
 * over the keys) and then o = Σ exp(s − lse) v, and the backward pass three, each recomputing P from
 * lse as the native kernel does: dq (per query row: dq = scale · Σ_j P(dP − Dᵢ) k_j), dk (per key row:
 * dk = scale · Σ_i P(dP − Dᵢ) q_i) and dv (per key row: dv = Σ_i P dO_i), with Dᵢ = dO_i · O_i
 * recomputed where needed (in registers for dq, while staging the query tile for dk).
 *
 * Workgroup memory stays within 16 KiB (WebGPU's default limit, and llvmpipe's compat limit).
 * The head dimension is compiled in (part of the shader key); D not a multiple of 4 is zero-padded
 * to whole vec4s in registers and workgroup memory.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { K } from '../native/fused';
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
}

/** Rows of a staged tile when each row takes `bytes` of workgroup memory. */
function tileRows(bytes: number, fixed = 0): number {
  const rows = Math.min(MAX_TILE, Math.floor((SHARED - fixed) / bytes));
  if (rows < 1) throw new Error(`PeftAttention on WebGPU: head dimension too large for ${SHARED} B of workgroup memory`);
  return rows;
}

/** Shared WGSL: constants, the vec4 row loads from the named inputs and the vec4 row store. */
function prelude(d: number, tile: number, inputs: string[]): string {
  const d4 = ceilDiv(d, 4);
  const load = (name: string) =>
    d % 4 === 0
      ? `fn ld${name}(row : i32, c : i32) -> vec4<f32> {
  let b = row * HD + c * 4;
  return vec4<f32>(${name}[b], ${name}[b + 1], ${name}[b + 2], ${name}[b + 3]);
}`
      : `fn ld${name}(row : i32, c : i32) -> vec4<f32> {
  let b = row * HD + c * 4;
  var r = vec4<f32>(0.0);
  for (var e = 0; e < 4; e++) {
    if (c * 4 + e < HD) { r[e] = ${name}[b + e]; }
  }
  return r;
}`;
  return `${WGSL_COMMON}
const HD : i32 = ${d};
const HD4 : i32 = ${d4};
const ROWS : i32 = ${ROWS};
const SPLIT : i32 = ${SPLIT};
const NT : i32 = ${THREADS};
const TILE : i32 = ${tile};
// The workgroup index as a uniform value (private builtins are not, for the uniformity analysis).
var<workgroup> wgShared : i32;
${inputs.map(load).join('\n')}
fn stRow(row : i32, c : i32, x : vec4<f32>) {
  let b = row * HD + c * 4;
  ${d % 4 === 0 ? 'result[b] = x.x; result[b + 1] = x.y; result[b + 2] = x.z; result[b + 3] = x.w;' : 'for (var e = 0; e < 4; e++) { if (c * 4 + e < HD) { result[b + e] = x[e]; } }'}
}
fn hsum(x : vec4<f32>) -> f32 { return (x.x + x.y) + (x.z + x.w); }
`;
}

/* The grid: workgroup w handles head bh = w / blocks, rows [r0, r0 + ROWS) with r0 = (w % blocks)·ROWS;
 * thread li works on row r0 + li % ROWS (which may be ≥ T: it then only helps stage tiles), over
 * the tile rows ≡ lane = li / ROWS (mod SPLIT). */
const GRID = /* wgsl */ `
  let T = uniforms.T;
  let blocks = (T + ROWS - 1) / ROWS;
  if (localIndex == 0u) { wgShared = wgIndex(); }
  let w = workgroupUniformLoad(&wgShared);
  let bh = w / blocks;
  let r0 = (w % blocks) * ROWS;
  let li = i32(localIndex);
  let rl = li % ROWS;
  let lane = li / ROWS;
  let row = r0 + rl;
  let valid = row < T;
  let rowc = min(row, T - 1);
  let head = bh * T;
  let causal = uniforms.causal != 0;
  let scale = uniforms.scale;
`;

/* The SPLIT partial accumulators of each row are summed into lane 0's, through the first staged
 * array (TILE rows of HD4 vec4s: ROWS/TILE passes), after the tile loop's last barrier. */
const reduce = (arr: string) => /* wgsl */ `
  for (var rb = 0; rb < ROWS; rb += TILE) {
    let mine = rl >= rb && rl < rb + TILE;
    for (var s = 1; s < SPLIT; s++) {
      if (mine && lane == s) {
        for (var c = 0; c < HD4; c++) { ${arr}[(rl - rb) * HD4 + c] = acc[c]; }
      }
      workgroupBarrier();
      if (mine && lane == 0) {
        for (var c = 0; c < HD4; c++) { acc[c] += ${arr}[(rl - rb) * HD4 + c]; }
      }
      workgroupBarrier();
    }
  }`;
const REDUCE_KS = reduce('Ks');
const REDUCE_QS = reduce('Qs');

// lse[i] = log Σ_j exp(scale · q_i·k_j) over the unmasked keys (online max and sum).
function lseCode(d: number, tile: number): string {
  return `${prelude(d, tile, ['Q', 'K'])}
var<workgroup> Ks : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Mr : array<f32, NT>;
var<workgroup> Lr : array<f32, NT>;
fn main(index : i32) {
${GRID}
  var q : array<vec4<f32>, HD4>;
  for (var c = 0; c < HD4; c++) { q[c] = ldQ(head + rowc, c); }
  let kend = select(T, min(T, r0 + ROWS), causal);
  var m = -3.0e38;
  var l = 0.0;
  for (var k0 = 0; k0 < kend; k0 += TILE) {
    for (var e = li; e < TILE * HD4; e += NT) {
      let j = k0 + e / HD4;
      if (j < T) { Ks[e] = ldK(head + j, e % HD4); }
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

// o_i = Σ_j exp(scale · q_i·k_j − lse_i) v_j.
function outCode(d: number, tile: number): string {
  return `${prelude(d, tile, ['Q', 'K', 'V'])}
var<workgroup> Ks : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Vs : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
fn main(index : i32) {
${GRID}
  var q : array<vec4<f32>, HD4>;
  var acc : array<vec4<f32>, HD4>;
  for (var c = 0; c < HD4; c++) {
    q[c] = ldQ(head + rowc, c);
    acc[c] = vec4<f32>(0.0);
  }
  let lse = L[head + rowc];
  let kend = select(T, min(T, r0 + ROWS), causal);
  for (var k0 = 0; k0 < kend; k0 += TILE) {
    for (var e = li; e < TILE * HD4; e += NT) {
      let j = k0 + e / HD4;
      if (j < T) {
        Ks[e] = ldK(head + j, e % HD4);
        Vs[e] = ldV(head + j, e % HD4);
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
${REDUCE_KS}
  if (valid && lane == 0) {
    for (var c = 0; c < HD4; c++) { stRow(head + row, c, acc[c]); }
  }
}`;
}

// dq_i = scale · Σ_j P_ij (dO_i·v_j − D_i) k_j, D_i = dO_i·O_i.
function dqCode(d: number, tile: number): string {
  return `${prelude(d, tile, ['Q', 'K', 'V', 'O', 'DY'])}
var<workgroup> Ks : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Vs : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
fn main(index : i32) {
${GRID}
  var q : array<vec4<f32>, HD4>;
  var g : array<vec4<f32>, HD4>;
  var acc : array<vec4<f32>, HD4>;
  var di4 = vec4<f32>(0.0);
  for (var c = 0; c < HD4; c++) {
    q[c] = ldQ(head + rowc, c);
    g[c] = ldDY(head + rowc, c);
    di4 += g[c] * ldO(head + rowc, c);
    acc[c] = vec4<f32>(0.0);
  }
  let di = hsum(di4);
  let lse = L[head + rowc];
  let kend = select(T, min(T, r0 + ROWS), causal);
  for (var k0 = 0; k0 < kend; k0 += TILE) {
    for (var e = li; e < TILE * HD4; e += NT) {
      let j = k0 + e / HD4;
      if (j < T) {
        Ks[e] = ldK(head + j, e % HD4);
        Vs[e] = ldV(head + j, e % HD4);
      }
    }
    workgroupBarrier();
    let n = min(TILE, kend - k0);
    for (var r = lane; r < n; r += SPLIT) {
      if (!causal || k0 + r <= row) {
        var s4 = vec4<f32>(0.0);
        var dp4 = vec4<f32>(0.0);
        for (var c = 0; c < HD4; c++) {
          s4 += q[c] * Ks[r * HD4 + c];
          dp4 += g[c] * Vs[r * HD4 + c];
        }
        let p = exp(hsum(s4) * scale - lse);
        let ds = p * (hsum(dp4) - di);
        for (var c = 0; c < HD4; c++) { acc[c] += ds * Ks[r * HD4 + c]; }
      }
    }
    workgroupBarrier();
  }
${REDUCE_KS}
  if (valid && lane == 0) {
    for (var c = 0; c < HD4; c++) { stRow(head + row, c, acc[c] * scale); }
  }
}`;
}

/* Key-row kernels: the query tile [i0, i0 + TILE) is staged (Q and dO rows, lse, and D_i for dk);
 * with causal, the key block [r0, r0 + ROWS) sees queries from r0 on. */
const QUERY_TILES = /* wgsl */ `
  let qbeg = select(0, r0, causal);
  for (var i0 = qbeg; i0 < T; i0 += TILE) {
    for (var e = li; e < TILE * HD4; e += NT) {
      let i = i0 + e / HD4;
      if (i < T) {
        Qs[e] = ldQ(head + i, e % HD4);
        Gs[e] = ldDY(head + i, e % HD4);
      }
    }
`;

// dk_j = scale · Σ_i P_ij (dO_i·v_j − D_i) q_i.
function dkCode(d: number, tile: number): string {
  return `${prelude(d, tile, ['Q', 'K', 'V', 'O', 'DY'])}
var<workgroup> Qs : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Gs : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Ls : array<f32, ${tile}>;
var<workgroup> Ds : array<f32, ${tile}>;
fn main(index : i32) {
${GRID}
  var kr : array<vec4<f32>, HD4>;
  var vr : array<vec4<f32>, HD4>;
  var acc : array<vec4<f32>, HD4>;
  for (var c = 0; c < HD4; c++) {
    kr[c] = ldK(head + rowc, c);
    vr[c] = ldV(head + rowc, c);
    acc[c] = vec4<f32>(0.0);
  }
${QUERY_TILES}
    if (li < TILE && i0 + li < T) {
      let i = head + i0 + li;
      var di4 = vec4<f32>(0.0);
      for (var c = 0; c < HD4; c++) { di4 += ldDY(i, c) * ldO(i, c); }
      Ds[li] = hsum(di4);
      Ls[li] = L[i];
    }
    workgroupBarrier();
    let n = min(TILE, T - i0);
    if (valid) {
      for (var r = lane; r < n; r += SPLIT) {
        if (!causal || row <= i0 + r) {
          var s4 = vec4<f32>(0.0);
          var dp4 = vec4<f32>(0.0);
          for (var c = 0; c < HD4; c++) {
            s4 += Qs[r * HD4 + c] * kr[c];
            dp4 += Gs[r * HD4 + c] * vr[c];
          }
          let p = exp(hsum(s4) * scale - Ls[r]);
          let ds = p * (hsum(dp4) - Ds[r]);
          for (var c = 0; c < HD4; c++) { acc[c] += ds * Qs[r * HD4 + c]; }
        }
      }
    }
    workgroupBarrier();
  }
${REDUCE_QS}
  if (valid && lane == 0) {
    for (var c = 0; c < HD4; c++) { stRow(head + row, c, acc[c] * scale); }
  }
}`;
}

// dv_j = Σ_i P_ij dO_i.
function dvCode(d: number, tile: number): string {
  return `${prelude(d, tile, ['Q', 'K', 'DY'])}
var<workgroup> Qs : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Gs : array<vec4<f32>, ${tile * ceilDiv(d, 4)}>;
var<workgroup> Ls : array<f32, ${tile}>;
fn main(index : i32) {
${GRID}
  var kr : array<vec4<f32>, HD4>;
  var acc : array<vec4<f32>, HD4>;
  for (var c = 0; c < HD4; c++) {
    kr[c] = ldK(head + rowc, c);
    acc[c] = vec4<f32>(0.0);
  }
${QUERY_TILES}
    if (li < TILE && i0 + li < T) { Ls[li] = L[head + i0 + li]; }
    workgroupBarrier();
    let n = min(TILE, T - i0);
    if (valid) {
      for (var r = lane; r < n; r += SPLIT) {
        if (!causal || row <= i0 + r) {
          var s4 = vec4<f32>(0.0);
          for (var c = 0; c < HD4; c++) { s4 += Qs[r * HD4 + c] * kr[c]; }
          let p = exp(hsum(s4) * scale - Ls[r]);
          for (var c = 0; c < HD4; c++) { acc[c] += p * Gs[r * HD4 + c]; }
        }
      }
    }
    workgroupBarrier();
  }
${REDUCE_QS}
  if (valid && lane == 0) {
    for (var c = 0; c < HD4; c++) { stRow(head + row, c, acc[c]); }
  }
}`;
}

interface Dims {
  bh: number;
  t: number;
  d: number;
  uniforms: Uniform[];
  workgroups: number;
}

function dims(q: tf.TensorInfo, attrs: KernelArgs['attrs']): Dims {
  const [b, h, t, d] = q.shape as [number, number, number, number];
  return {
    bh: b * h,
    t,
    d,
    uniforms: [
      { name: 'T', type: 'int32', value: t },
      { name: 'scale', type: 'float32', value: Number(attrs?.scale) },
      { name: 'causal', type: 'int32', value: attrs?.causal ? 1 : 0 },
    ],
    workgroups: b * h * ceilDiv(t, ROWS),
  };
}

// Bytes of workgroup memory per staged row: one or two vec4 rows, plus one or two f32.
const rowBytes = (d: number, vecs: number, scalars = 0) => vecs * 16 * ceilDiv(d, 4) + 4 * scalars;

function attention(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { q, k, v } = args.inputs as { q: tf.TensorInfo; k: tf.TensorInfo; v: tf.TensorInfo };
  const { bh, t, d, uniforms, workgroups } = dims(q, args.attrs);
  const common = { workgroup: THREADS, workgroups, uniforms };
  const t1 = tileRows(rowBytes(d, 1), 8 * THREADS);
  const lse = runProgram(backend, { ...common, key: `attn-lse-${d}-${t1}`, inputs: { Q: q, K: k }, outputShape: [bh, t], code: lseCode(d, t1) });
  const t2 = tileRows(rowBytes(d, 2));
  const o = runProgram(backend, { ...common, key: `attn-o-${d}-${t2}`, inputs: { Q: q, K: k, V: v, L: lse }, outputShape: q.shape, code: outCode(d, t2) });
  return [o, lse];
}

function attentionGrad(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as WebGPUBackend;
  const { q, k, v, o, lse, dy } = args.inputs as Record<'q' | 'k' | 'v' | 'o' | 'lse' | 'dy', tf.TensorInfo>;
  const { d, uniforms, workgroups } = dims(q, args.attrs);
  const common = { workgroup: THREADS, workgroups, uniforms, outputShape: q.shape };
  const tq = tileRows(rowBytes(d, 2));
  const dq = runProgram(backend, { ...common, key: `attn-dq-${d}-${tq}`, inputs: { Q: q, K: k, V: v, O: o, L: lse, DY: dy }, code: dqCode(d, tq) });
  const tk = tileRows(rowBytes(d, 2, 2));
  const dk = runProgram(backend, { ...common, key: `attn-dk-${d}-${tk}`, inputs: { Q: q, K: k, V: v, O: o, L: lse, DY: dy }, code: dkCode(d, tk) });
  const tv = tileRows(rowBytes(d, 2, 1));
  const dv = runProgram(backend, { ...common, key: `attn-dv-${d}-${tv}`, inputs: { Q: q, K: k, L: lse, DY: dy }, code: dvCode(d, tv) });
  return [dq, dk, dv];
}
