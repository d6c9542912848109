/**
 * PyTorch checkpoints (`pytorch_model.bin`, what `torch.save(model.state_dict())` writes): the zip
 * format of torch ≥ 1.6 (data.pkl + one uncompressed member per storage) and the legacy one before
 * it (pickles back to back, then each storage's size and bytes). The pickle is read by the
 * restricted reader of pickle.ts, which runs no code; tensors are read where they lie, as the
 * safetensors reader reads them, strided views included.
 */
import type { FileHandle } from 'node:fs/promises';
import { PickleError, PyGlobal, TruncatedPickleError, unpickle, type PickledStorage, type PickledTensor, type PyValue } from './pickle';
import { DTYPE_ARRAY, DTYPE_BYTES, openForReading, readExactly, SafetensorsError, TensorFile, type DType, type HostTensor, type TensorEntry } from './safetensors';
import { zipMembers, ZipError } from './zip';
import { errorMessage } from '../errors';

const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};
/** The legacy format's first pickle. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
/** A state dict's pickle is small beside its storages; more is no checkpoint. */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

interface StoredTensor {
  dtype: DType;
  shape: number[];
  stride: number[];
  /** File offset of the tensor's first element (its storage's start + storage_offset · width). */
  start: number;
  /** Elements of its storage from `start` on (a strided view must stay inside). */
  available: number;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const contiguous = (shape: readonly number[], stride: readonly number[]) => {
  let expect = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) return false;
    expect *= shape[i]!;
  }
  return true;
};

export class TorchCheckpointFile extends TensorFile {
  readonly entries = new Map<string, TensorEntry>();

  private constructor(
    path: string,
    fh: FileHandle,
    private readonly tensors: Map<string, StoredTensor>,
  ) {
    super(path, fh);
    for (const [name, t] of tensors) {
      const bytes = numel(t.shape) * DTYPE_BYTES[t.dtype];
      this.entries.set(name, { dtype: t.dtype, shape: t.shape, begin: t.start, end: t.start + bytes });
    }
  }

  static async open(path: string): Promise<TorchCheckpointFile> {
    const fh = await openForReading(path);
    try {
      const size = (await fh.stat()).size;
      const head = new Uint8Array(4);
      await fh.read(head, 0, 4, 0);
      const zip = head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
      const tensors = zip ? await readZip(fh, size, path) : await readLegacy(fh, size, path);
      return new TorchCheckpointFile(path, fh, tensors);
    } catch (e) {
      await fh.close().catch(() => undefined);
      if (e instanceof SafetensorsError) throw e;
      // Whatever else a damaged file trips (a RangeError of a DataView, …) is named as this file's problem.
      throw new SafetensorsError(path, `not a readable PyTorch state dict: ${e instanceof PickleError || e instanceof ZipError ? e.message : errorMessage(e)}`, { cause: e });
    }
  }

  names(): string[] {
    return [...this.tensors.keys()].sort();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** One tensor, contiguous, in a fresh typed array of its natural type. */
  async read(name: string): Promise<HostTensor> {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(this.path, `no tensor "${name}" in this file (${this.tensors.size} tensors)`);
    if (!this.fh) throw new SafetensorsError(this.path, `cannot read tensor "${name}": file is closed`);
    const width = DTYPE_BYTES[t.dtype];
    const n = numel(t.shape);
    if (n === 0) return { dtype: t.dtype, shape: [...t.shape], data: new DTYPE_ARRAY[t.dtype](new ArrayBuffer(0), 0, 0) };
    if (contiguous(t.shape, t.stride)) {
      const bytes = await readExactly(this.fh, n * width, t.start, this.path);
      return { dtype: t.dtype, shape: [...t.shape], data: new DTYPE_ARRAY[t.dtype](bytes.buffer as ArrayBuffer, 0, n) };
    }
    // A strided view (a transpose saved as is): read the span it covers and gather its elements in order.
    const span = t.shape.reduce((a, s, i) => a + (s - 1) * t.stride[i]!, 0) + 1;
    const src = await readExactly(this.fh, span * width, t.start, this.path);
    const out = new Uint8Array(n * width);
    const index = new Array<number>(t.shape.length).fill(0);
    for (let k = 0; k < n; k++) {
      const from = index.reduce((a, v, i) => a + v * t.stride[i]!, 0) * width;
      out.set(src.subarray(from, from + width), k * width);
      for (let d = t.shape.length - 1; d >= 0 && ++index[d]! === t.shape[d]; d--) index[d] = 0;
    }
    return { dtype: t.dtype, shape: [...t.shape], data: new DTYPE_ARRAY[t.dtype](out.buffer, 0, n) };
  }
}

/** The storage a persistent id names: ('storage', StorageType, key, location, numel[, view_metadata]). */
function storageOf(pid: PyValue): PickledStorage {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) throw new PickleError('a persistent id that is not a storage');
  const [, type, key, location, count] = pid;
  if (!(type instanceof PyGlobal) || !(type.name in STORAGE_DTYPES)) throw new PickleError('a storage of an unsupported type');
  if (pid.length > 5 && pid[5] !== null) throw new PickleError('a storage view (legacy view_metadata) is not supported');
  if (typeof key !== 'string' || typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) throw new PickleError('a storage without its key or a size');
  return { kind: 'storage', type: type.name, key, location: typeof location === 'string' ? location : '', numel: count };
}

/** name → tensor of a state dict (the pickle's top-level dict; a `state_dict` entry holding one also counts). */
function stateDict(value: PyValue): Map<string, PickledTensor> {
  let dict = value;
  if (dict instanceof Map && !dict.size) throw new PickleError('the state dict is empty');
  if (dict instanceof Map && dict.get('state_dict') instanceof Map) dict = dict.get('state_dict')!;
  if (!(dict instanceof Map)) throw new PickleError('the pickle holds no dict of tensors');
  const out = new Map<string, PickledTensor>();
  for (const [k, v] of dict) {
    if (typeof k !== 'string') throw new PickleError('a state dict key that is not a string');
    if (v && typeof v === 'object' && 'kind' in v && v.kind === 'tensor') out.set(k, v);
    else throw new PickleError(`"${k}" is not a tensor`);
  }
  return out;
}

function place(tensors: Map<string, PickledTensor>, storageStart: (s: PickledStorage) => number, path: string): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  for (const [name, t] of tensors) {
    const dtype = STORAGE_DTYPES[t.storage.type]!;
    const available = t.storage.numel - t.offset;
    const count = numel(t.shape);
    const span = count === 0 ? 0 : t.shape.reduce((a, s, i) => a + (s - 1) * t.stride[i]!, 0) + 1;
    if (span > available) throw new SafetensorsError(path, `tensor "${name}" [${t.shape.join(', ')}] runs past the end of its storage (${t.storage.numel} elements)`);
    // Views whose elements overlap (stride 0, expand()): a state dict has none, and they would make a
    // small file claim gigabytes.
    if (span < count) throw new SafetensorsError(path, `tensor "${name}" [${t.shape.join(', ')}] with strides [${t.stride.join(', ')}] repeats elements of its storage: not a saved weight`);
    out.set(name, { dtype, shape: t.shape, stride: t.stride, start: storageStart(t.storage) + t.offset * DTYPE_BYTES[dtype], available });
  }
  return out;
}

async function readZip(fh: FileHandle, size: number, path: string): Promise<Map<string, StoredTensor>> {
  const members = await zipMembers(fh, size);
  const pkl = [...members.keys()].find((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
  if (!pkl) throw new ZipError('no data.pkl in the archive (not a torch.save file)');
  const prefix = pkl.slice(0, -'data.pkl'.length);
  const order = members.get(`${prefix}byteorder`);
  if (order && new TextDecoder().decode(await readExactly(fh, Math.min(order.size, 8), order.offset, path)).trim() !== 'little') throw new SafetensorsError(path, 'saved on a big-endian machine: not supported');
  const m = members.get(pkl)!;
  if (m.size > MAX_PICKLE_BYTES) throw new SafetensorsError(path, `data.pkl is ${m.size} bytes, over the ${MAX_PICKLE_BYTES}-byte limit`);
  const { value } = unpickle(await readExactly(fh, m.size, m.offset, path), storageOf);
  return place(stateDict(value), (s) => {
    const member = members.get(`${prefix}data/${s.key}`);
    if (!member) throw new SafetensorsError(path, `storage ${s.key} is missing from the archive`);
    if (member.size < s.numel * DTYPE_BYTES[STORAGE_DTYPES[s.type]!]) throw new SafetensorsError(path, `storage ${s.key} holds ${member.size} bytes, fewer than its ${s.numel} elements`);
    return member.offset;
  }, path);
}

/** torch < 1.6: magic number, protocol version, system info, the state dict, its storage keys; then per key its element count (int64) and bytes. */
async function readLegacy(fh: FileHandle, size: number, path: string): Promise<Map<string, StoredTensor>> {
  // The pickles come first and are small beside the storages: read 4 MiB of the file, and more only while a pickle runs past it.
  for (let length = Math.min(size, 4 << 20); ; length = Math.min(size, MAX_PICKLE_BYTES, length * 8)) {
    try {
      return await readLegacyFrom(await readExactly(fh, length, 0, path), fh, size, path);
    } catch (e) {
      if (!(e instanceof TruncatedPickleError) || length >= Math.min(size, MAX_PICKLE_BYTES)) throw e;
    }
  }
}

async function readLegacyFrom(head: Uint8Array, fh: FileHandle, size: number, path: string): Promise<Map<string, StoredTensor>> {
  const noPersistent = () => {
    throw new PickleError('unexpected persistent id');
  };
  const magic = unpickle(head, noPersistent);
  if (magic.value !== LEGACY_MAGIC) throw new PickleError('neither a zip archive nor the legacy torch.save format');
  const version = unpickle(head, noPersistent, magic.end);
  const info = unpickle(head, noPersistent, version.end);
  if (info.value instanceof Map && info.value.get('little_endian') === false) throw new SafetensorsError(path, 'saved on a big-endian machine: not supported');
  const storages = new Map<string, PickledStorage>();
  const main = unpickle(head, (pid) => {
    const s = storageOf(pid);
    const seen = storages.get(s.key);
    // Every tensor of a storage names it alike; a key of two sizes would read past the bytes checked.
    if (seen && (seen.numel !== s.numel || seen.type !== s.type)) throw new PickleError(`storage ${s.key} is named with two sizes or types`);
    storages.set(s.key, seen ?? s);
    return seen ?? s;
  }, info.end);
  const keys = unpickle(head, noPersistent, main.end);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string')) throw new PickleError('no list of storage keys after the state dict');
  const starts = new Map<string, number>();
  let at = keys.end;
  for (const key of keys.value as string[]) {
    const s = storages.get(key);
    if (!s) throw new PickleError(`storage key ${key} names no storage of the state dict`);
    const count = new DataView((await readExactly(fh, 8, at, path)).buffer).getBigInt64(0, true);
    if (count !== BigInt(s.numel)) throw new SafetensorsError(path, `storage ${key} has ${count} elements on disk, ${s.numel} in the pickle`);
    starts.set(key, at + 8);
    at += 8 + s.numel * DTYPE_BYTES[STORAGE_DTYPES[s.type]!];
    if (at > size) throw new SafetensorsError(path, `storage ${key} runs past the end of the file`);
  }
  return place(stateDict(main.value), (s) => {
    const start = starts.get(s.key);
    if (start === undefined) throw new SafetensorsError(path, `storage ${s.key} is not in the file`);
    return start;
  }, path);
}

/** Every tensor of a PyTorch state dict file, by name (a PEFT adapter_model.bin). */
export async function readTorchStateDict(path: string): Promise<Map<string, HostTensor>> {
  const f = await TorchCheckpointFile.open(path);
  try {
    const out = new Map<string, HostTensor>();
    for (const name of f.names()) out.set(name, await f.read(name));
    return out;
  } finally {
    await f.close();
  }
}
