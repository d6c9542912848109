/**
 * A cheaper dispatch path for tfjs-backend-webgpu. Once the kernels were fused, the host side of a
 * training step was mostly TF.js's per-dispatch work in `recordAndSubmit`: a uniform buffer taken
 * from the pool and written (queue.writeBuffer ≈ 12 µs) and a new bind group (createBindGroup
 * ≈ 27 µs) for each of ~500 dispatches per step (Dawn's calls timed on this project's dev machine).
 *
 * On one backend instance this module replaces:
 * - recordAndSubmit, recording the same dispatch with
 *   - uniforms by value: a training step repeats the same few hundred uniform blocks (shapes,
 *     strides, sizes) every step, so each distinct block is written once into a slot of a uniform
 *     pool and bound by offset. Slots are never rewritten, so no write can race work in flight;
 *   - bind groups kept per (pipeline, buffers, uniform block), built from a key that needs no
 *     packing. The pool below hands out the same buffers step after step, so from the second or
 *     third step on no bind group is created at all.
 *   Both caches are bounded: past their caps they start over (the GPU objects go when nothing
 *   references them). TF.js's programs under tf.profile (timestamp queries), textures and pixel
 *   programs take TF.js's own path.
 * - the buffer pool's choice among free buffers of a size (reuseLowestFreeBuffer);
 * - uploads of host values (one queue.writeBuffer instead of a staging buffer per tensor);
 * and adds a raw recorder for pipelines this project builds itself (adamw.ts's in-place update),
 * with the same caches, pass, submit batching and profiling.
 *
 * PEFT_LAB_WEBGPU_DISPATCH=tfjs leaves TF.js's path alone (for side-by-side timing); the counters
 * (dispatchStats) are kept either way.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

type ProgramUniform = Array<{ type: string; data: number[] }>;
type RecordAndSubmit = (program: WebGPUProgram, output: tf.TensorInfo, inputs: tf.TensorInfo[], programDefinedUniform?: ProgramUniform) => void;

/** The private parts of tfjs-backend-webgpu 4.22's WebGPUBackend this module works with. */
interface BackendInternals {
  device: GPUDevice;
  bufferManager: { freeBuffers: Map<string, GPUBuffer[]>; acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer };
  queue: GPUQueue;
  tensorMap: { get(dataId: object): { resource?: unknown; values?: unknown; shape: number[]; dtype: tf.DataType } | undefined };
  uploadToGPU(dataId: object): void;
  activeTimers: Array<{ name: string; query: Promise<number> }> | null | undefined;
  supportTimestampQuery: boolean;
  querySet: GPUQuerySet | null | undefined;
  querySetCount: number;
  getQueryTime(): Promise<number>;
  commandEncoder: GPUCommandEncoder | null;
  computePassEncoder: GPUComputePassEncoder | null;
  commandQueueOwnedIds: WeakSet<object>;
  dispatchCountInPass: number;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  recordAndSubmit: RecordAndSubmit;
}

export interface DispatchStats {
  dispatches: number;
  bindGroupsCreated: number;
  uniformSlotsWritten: number;
  /** Dispatches that went through TF.js's own path (profiling, textures, pixel programs). */
  fallbacks: number;
  submits: number;
  /** Tensors written from host values with queue.writeBuffer. */
  uploads: number;
  /** Milliseconds spent inside queue.submit (on a software adapter this includes running the work). */
  submitMs: number;
  /** Milliseconds with a read-back pending (the GPU finishing what the read depends on): overlapping
   * reads count once, and submits made meanwhile count in submitMs only. */
  readWaitMs: number;
}

/** Bytes of one uniform pool buffer; a single uniform block is far smaller (≤ 1 KB). */
const POOL_BYTES = 64 * 1024;
/** Caps before the caches start over: ~1 MB of uniforms, and bind groups for several models' steps. */
const MAX_SLOTS = 4096;
const MAX_BIND_GROUPS = 16384;

const installed = new WeakMap<object, DispatchStats>();

/** Records a dispatch of a pipeline this project built itself (its own bind group layout: the
 * buffers at bindings 0…n−1 in order, the uniform block at n), in the backend's current pass, with
 * the same caches; `dataIds` are the tensors it reads or writes (their buffers stay out of the pool
 * until the submit). */
export type RawRecorder = (pipeline: GPUComputePipeline, buffers: GPUBuffer[], uniforms: ArrayBuffer, workgroups: number[], dataIds: object[], name: string) => void;
const rawRecorders = new WeakMap<object, RawRecorder>();

/** The raw recorder (undefined with the cached path off). Under tf.profile its dispatches are timed. */
export function rawRecorder(backend: object): RawRecorder | undefined {
  return rawRecorders.get(backend);
}

/** Installs the cached dispatch path on `backend` (idempotent). Returns its counters. */
export function installDispatchCache(backend: WebGPUBackend): DispatchStats {
  const done = installed.get(backend);
  if (done) return done;
  const b = backend as unknown as BackendInternals;
  const tfjsRecord = b.recordAndSubmit;
  const stats: DispatchStats = { dispatches: 0, bindGroupsCreated: 0, uniformSlotsWritten: 0, fallbacks: 0, submits: 0, uploads: 0, submitMs: 0, readWaitMs: 0 };
  installed.set(backend, stats);
  // The submit count at which the device was last known idle (after a read-back).
  let idleAt = -1;
  timeWaits(backend, stats, (submits) => (idleAt = submits));
  failReadsOnDeviceErrors(backend);
  const fallback = (self: unknown, ...args: Parameters<RecordAndSubmit>) => {
    stats.fallbacks++;
    tfjsRecord.apply(self, args);
  };
  // Dispatches per submit (TF.js's flag). With PEFT_LAB_WEBGPU_FIRST_SUBMIT=N, the first submit after
  // the device went idle (a read-back finished and nothing was submitted since) comes after N
  // dispatches, so that the GPU starts on a step while the host records the rest of it.
  const firstSubmit = Number(process.env.PEFT_LAB_WEBGPU_FIRST_SUBMIT) || 0;
  const submitBatch = () => (firstSubmit > 0 && stats.submits === idleAt ? firstSubmit : (tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE') as number));
  if (process.env.PEFT_LAB_WEBGPU_DISPATCH === 'tfjs') {
    b.recordAndSubmit = function (...args) {
      fallback(this, ...args);
    };
    return stats;
  }

  const align = b.device.limits.minUniformBufferOffsetAlignment;
  const ids = new WeakMap<object, number>();
  let nextId = 1;
  const idOf = (o: object) => {
    let id = ids.get(o);
    if (id === undefined) ids.set(o, (id = nextId++));
    return id;
  };
  reuseLowestFreeBuffer(b.bufferManager, idOf);
  const layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
  let slots = new Map<string, { buffer: GPUBuffer; offset: number; size: number }>();
  let pool: GPUBuffer | undefined;
  let poolUsed = POOL_BYTES;
  let bindGroups = new Map<string, GPUBindGroup>();

  function uniformSlot(bytes: ArrayBuffer) {
    const key = new Int32Array(bytes).join(',');
    let slot = slots.get(key);
    if (slot) return slot;
    if (slots.size >= MAX_SLOTS) {
      slots = new Map();
      bindGroups = new Map();
      poolUsed = POOL_BYTES;
    }
    const size = bytes.byteLength;
    if (!pool || poolUsed + size > POOL_BYTES) {
      pool = b.device.createBuffer({ size: POOL_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      poolUsed = 0;
    }
    slot = { buffer: pool, offset: poolUsed, size };
    b.queue.writeBuffer(pool, poolUsed, bytes, 0, size);
    poolUsed += Math.ceil(size / align) * align;
    slots.set(key, slot);
    stats.uniformSlotsWritten++;
    return slot;
  }

  /** Records one dispatch: `key` names the bind group (pipeline, buffers in binding order, and the
   * uniform block's content), `uniforms` packs that block when the key is new. */
  function record(pipeline: GPUComputePipeline, buffers: GPUBuffer[], key: string, uniforms: () => ArrayBuffer, workgroups: number[], dataIds: object[], name = 'peft') {
    stats.dispatches++;
    let bindGroup = bindGroups.get(key);
    if (!bindGroup) {
      const slot = uniformSlot(uniforms());
      let layout = layouts.get(pipeline);
      if (!layout) layouts.set(pipeline, (layout = pipeline.getBindGroupLayout(0)));
      bindGroup = b.device.createBindGroup({
        layout,
        entries: [...buffers.map((buffer, i) => ({ binding: i, resource: { buffer } })), { binding: buffers.length, resource: { buffer: slot.buffer, offset: slot.offset, size: slot.size } }],
      });
      if (bindGroups.size >= MAX_BIND_GROUPS) bindGroups = new Map();
      bindGroups.set(key, bindGroup);
      stats.bindGroupsCreated++;
    }
    for (const id of dataIds) b.commandQueueOwnedIds.add(id);
    b.ensureCommandEncoderReady();
    const timed = b.activeTimers != null;
    if (timed) {
      // Profiling (tf.profile): a pass of its own with timestamps, as TF.js times its programs.
      b.endComputePassEncoder();
      const descriptor: GPUComputePassDescriptor = {};
      if (b.supportTimestampQuery) {
        b.querySet ??= b.device.createQuerySet({ type: 'timestamp', count: b.querySetCount });
        descriptor.timestampWrites = { querySet: b.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 };
      }
      b.computePassEncoder = b.commandEncoder!.beginComputePass(descriptor);
    }
    if (!b.computePassEncoder) b.computePassEncoder = b.commandEncoder!.beginComputePass({});
    const pass = b.computePassEncoder;
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    const [x, y = 1, z = 1] = workgroups;
    pass.dispatchWorkgroups(x!, y, z);
    b.dispatchCountInPass++;
    if (timed) {
      b.endComputePassEncoder();
      b.activeTimers!.push({ name, query: b.getQueryTime() });
    } else if (submitBatch() <= b.dispatchCountInPass) {
      b.endComputePassEncoder();
      b.submitQueue();
    }
  }

  b.recordAndSubmit = function (program, output, inputs, programDefinedUniform) {
    const pipeline = program.pipeline;
    if (b.activeTimers != null || program.pixelsOpType != null || !pipeline || pipeline instanceof Promise) return fallback(this, program, output, inputs, programDefinedUniform);
    // The bind group's key, built from what decides it without packing anything: the pipeline, the
    // buffers, and what the uniform block holds (shapes, the size, the program's own values).
    const gpuPipeline = pipeline as GPUComputePipeline;
    const gpuBuffers: GPUBuffer[] = [];
    const dataIds: object[] = [];
    let key = `${idOf(gpuPipeline)}`;
    for (const t of [output, ...inputs]) {
      const resource = b.tensorMap.get(t.dataId)?.resource;
      if (!(resource instanceof GPUBuffer)) return fallback(this, program, output, inputs, programDefinedUniform);
      gpuBuffers.push(resource);
      dataIds.push(t.dataId);
      key += `,${idOf(resource)}:${t.shape.join('x')}`;
    }
    if (program.size) key += `|${program.outputShape.join('x')}/${program.outputComponent ?? 1}`;
    if (programDefinedUniform) for (const u of programDefinedUniform) key += `|${u.data.join(',')}`;
    record(gpuPipeline, gpuBuffers, key, () => packUniforms(uniformFields(program, output, inputs, programDefinedUniform)), program.dispatch, dataIds);
  };

  rawRecorders.set(backend, (pipeline, buffers, uniforms, workgroups, dataIds, name) => {
    const key = `${idOf(pipeline)},${buffers.map(idOf).join(',')}|${new Int32Array(uniforms).join(',')}`;
    record(pipeline, buffers, key, () => uniforms, workgroups, dataIds, name);
  });

  // Uploads: TF.js copies each tensor made from host values through a staging buffer created for it
  // (about 80 µs of Dawn calls) and ends the compute pass for the copy. queue.writeBuffer into a
  // pooled buffer does the same in one call, without ending the pass. Safe for the same reason the
  // pool is: a free buffer is referenced by no command that is still to be submitted (TF.js keeps
  // the buffers of tensors the open command encoder uses until its submit).
  const tfjsUpload = b.uploadToGPU.bind(b);
  b.uploadToGPU = (dataId: object) => {
    const data = b.tensorMap.get(dataId);
    const size = data ? 4 * tf.util.sizeFromShape(data.shape) : 0;
    if (!data || data.resource != null || !data.values || size === 0 || !(data.dtype === 'float32' || data.dtype === 'int32' || data.dtype === 'bool')) return tfjsUpload(dataId);
    const buffer = b.bufferManager.acquireBuffer(size, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
    const values = data.values as ArrayLike<number>;
    const words = data.dtype === 'float32' ? (values instanceof Float32Array ? values : Float32Array.from(values)) : values instanceof Int32Array ? values : Int32Array.from(values);
    b.queue.writeBuffer(buffer, 0, words.buffer, words.byteOffset, size);
    data.resource = buffer;
    data.values = null;
    stats.uploads++;
  };
  return stats;
}

/** The uniform block TF.js declares for a program: NaN, Infinity, each input's and the output's
 * shape and strides, the output size when the program asks for it, then the program's own. */
function uniformFields(program: WebGPUProgram, output: tf.TensorInfo, inputs: tf.TensorInfo[], programDefinedUniform: ProgramUniform | undefined): ProgramUniform {
  const fields: ProgramUniform = [
    { type: 'float32', data: [NaN] },
    { type: 'float32', data: [Infinity] },
  ];
  for (const t of [...inputs, output]) fields.push({ type: 'int32', data: t.shape }, { type: 'int32', data: tf.util.computeStrides(t.shape) });
  if (program.size) {
    const size = tf.util.sizeFromShape(program.outputShape);
    fields.push({ type: 'int32', data: [program.outputComponent ? size / program.outputComponent : size] });
  }
  if (programDefinedUniform) fields.push(...programDefinedUniform);
  return fields;
}

/** The counters of the backend's dispatch path, when installed. */
export function dispatchStats(backend: object): DispatchStats | undefined {
  return installed.get(backend);
}

/** Per backend: a device error not yet thrown, and whether the device is lost (for good). */
const deviceErrors = new WeakMap<object, { pending?: string; lost?: string }>();

/**
 * Dawn reports a validation or out-of-memory error (an invalid pipeline, a buffer too large) as an
 * event and carries on: the command buffers after it do nothing, and reads return stale or zero data
 * (a training loop once logged loss 0 for a whole run). The next read-back after such an error
 * throws it instead, so the job stops with the message and keeps its last checkpoint; a lost device
 * fails every read from then on. A job's start clears an error left pending by the job before
 * (clearPendingDeviceError), which with parallel jobs may drop one meant for the other.
 */
function failReadsOnDeviceErrors(backend: WebGPUBackend): void {
  const device = (backend as unknown as BackendInternals).device;
  const state: { pending?: string; lost?: string } = {};
  deviceErrors.set(backend, state);
  device.addEventListener('uncapturederror', (e) => {
    state.pending ??= (e as GPUUncapturedErrorEvent).error.message;
  });
  void device.lost.then((info) => {
    state.lost = `device lost (${info.reason}): ${info.message}`;
  });
  const getBufferData = backend.getBufferData.bind(backend);
  backend.getBufferData = async (buffer: GPUBuffer) => {
    if (state.lost) throw new Error(`WebGPU ${state.lost}; restart the sidecar`);
    const data = await getBufferData(buffer);
    const message = state.lost ?? state.pending;
    if (message !== undefined) {
      state.pending = undefined;
      throw new Error(`WebGPU device error; the results since are invalid: ${message.split('\n').join(' ')}`);
    }
    return data;
  };
}

/** At a job's start: forget a device error that arrived after the last job's last read. */
export function clearPendingDeviceError(backend: object): void {
  const state = deviceErrors.get(backend);
  if (state) state.pending = undefined;
}

/** Counts submits and times them and the read-back waits, so a benchmark can tell host time apart;
 * `idle(submits)` after a read-back during which nothing else was submitted (the queue is empty). */
function timeWaits(backend: WebGPUBackend, stats: DispatchStats, idle: (submits: number) => void): void {
  const queue = (backend as unknown as BackendInternals).queue;
  const submit = queue.submit.bind(queue);
  let reading = 0;
  let readStart = 0;
  queue.submit = (commandBuffers: Iterable<GPUCommandBuffer>) => {
    const t0 = performance.now();
    submit(commandBuffers);
    stats.submits++;
    const ms = performance.now() - t0;
    stats.submitMs += ms;
    if (reading) stats.readWaitMs -= ms;
  };
  const getBufferData = backend.getBufferData.bind(backend);
  backend.getBufferData = async (buffer: GPUBuffer) => {
    if (reading++ === 0) readStart = performance.now();
    const pending = getBufferData(buffer);
    const submitted = stats.submits;
    try {
      return await pending;
    } finally {
      if (--reading === 0) stats.readWaitMs += performance.now() - readStart;
      if (stats.submits === submitted) idle(submitted);
    }
  };
}

/**
 * Makes the buffer pool hand out, of the free buffers of a size, the one created first (TF.js pops
 * the one freed last). With that rule a step that starts from the same free buffers as the one
 * before gets the same buffer for every tensor, so its bind groups repeat and the cache above hits;
 * under last-freed-first the assignment drifts from step to step (the order tensors are freed in
 * is not the reverse of the order they were made in).
 */
function reuseLowestFreeBuffer(manager: BackendInternals['bufferManager'], idOf: (o: object) => number): void {
  const acquire = manager.acquireBuffer.bind(manager);
  manager.acquireBuffer = (size, usage, mappedAtCreation = false, reuse = true) => {
    const free = reuse ? manager.freeBuffers.get(`${size}_${usage}`) : undefined;
    if (free && free.length > 1) {
      let best = free.length - 1;
      for (let i = 0; i < free.length - 1; i++) if (idOf(free[i]!) < idOf(free[best]!)) best = i;
      [free[best], free[free.length - 1]] = [free[free.length - 1]!, free[best]!];
    }
    const buffer = acquire(size, usage, mappedAtCreation, reuse);
    idOf(buffer);
    return buffer;
  };
}

/**
 * The uniform block's bytes, laid out as tfjs-backend-webgpu declares it in WGSL (each field aligned
 * to its WGSL alignment: 4 bytes for scalars, 8 for vec2, 16 for vec3/vec4 and the vec5/vec6 structs,
 * and a field after a vec5/vec6 at 16; the block rounded to its largest alignment).
 */
export function packUniforms(fields: ProgramUniform): ArrayBuffer {
  const offsets: number[] = [];
  let offset = 0;
  let previous = 0;
  let blockAlign = 1;
  for (const f of fields) {
    const n = f.data.length === 0 ? 1 : f.data.length;
    if (n > 6) throw new Error(`packUniforms: ${n}-element uniform field (at most 6)`);
    const fieldAlign = previous === 5 || previous === 6 ? 16 : n === 1 ? 4 : n === 2 ? 8 : 16;
    blockAlign = Math.max(blockAlign, fieldAlign);
    offset = Math.ceil(offset / fieldAlign) * fieldAlign;
    offsets.push(offset);
    offset += n * 4;
    previous = n;
  }
  const bytes = new ArrayBuffer(Math.ceil(offset / blockAlign) * blockAlign);
  fields.forEach((f, i) => {
    const data = f.data.length === 0 ? [1] : f.data;
    const View = f.type === 'int32' ? Int32Array : f.type === 'uint32' ? Uint32Array : Float32Array;
    new View(bytes, offsets[i], data.length).set(data);
  });
  return bytes;
}
