/**
 * Safetensors reading and writing on plain host arrays (no TF.js here).
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data buffer.
 * Reading is strict (the rules of huggingface/safetensors, plus clearer messages) and lazy: only
 * the header is read on open, tensors are read by file position on demand. Writing is
 * byte-identical to the Python/Rust library, so files round-trip exactly.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { writeAtomic } from './atomic';

export const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'] as const;
export type DType = (typeof DTYPES)[number];
export type HostData =
  | Float32Array
  | Float64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | BigInt64Array
  | Uint16Array;
/** A tensor in host memory. F16/BF16 data is the raw bits; BOOL is one byte per element. */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: HostData;
}
/** Where a tensor lies: byte offsets relative to the start of the data buffer. */
export interface TensorEntry {
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

type ArrayCtor = { new (buffer: ArrayBuffer, byteOffset?: number, length?: number): HostData; readonly name: string };
/** The typed array each dtype is read into (F16/BF16 as raw bits, BOOL as bytes). */
export const DTYPE_ARRAY: Record<DType, ArrayCtor> = {
  F64: Float64Array, F32: Float32Array, F16: Uint16Array, BF16: Uint16Array, I64: BigInt64Array,
  I32: Int32Array, I16: Int16Array, I8: Int8Array, U8: Uint8Array, BOOL: Uint8Array,
};

/**
 * The writer's sort key: the Rust library orders tensors by *descending* position in its
 * `enum Dtype` (declared in increasing alignment: BOOL, …, U8, I8, …, I16, U16, F16, BF16, I32,
 * U32, F32, C64, F64, I64, U64), then by name. Higher rank = earlier in the file.
 */
const WRITE_RANK: Record<DType, number> = {
  BOOL: 0, U8: 4, I8: 5, I16: 11, F16: 13, BF16: 14, I32: 15, F32: 17, F64: 19, I64: 20,
};

/** The Rust library's limit (`MAX_HEADER_SIZE`), in bytes. */
export const MAX_HEADER_BYTES = 100_000_000;
const HOST_LITTLE_ENDIAN = endianness() === 'LE';

/** A bad or unreadable safetensors file. The message is one line: `${file}: ${problem}`. */
export class SafetensorsError extends Error {
  readonly file: string;
  constructor(file: string, problem: string, options?: ErrorOptions) {
    super(oneLine(`${file}: ${problem}`), options);
    this.name = 'SafetensorsError';
    this.file = file;
  }
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}

/** Quotes a name from a (possibly hostile) header for an error message: escaped and bounded. */
export function q(name: string): string {
  const s = JSON.stringify(name);
  return s.length > 200 ? `${s.slice(0, 197)}…"` : s;
}

function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

export function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Product of a shape; throws RangeError rather than lose precision past 2^53. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
    if (!Number.isSafeInteger(n)) throw new RangeError(`shape [${shape.join(', ')}] has more than 2^53 elements`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Header parsing

/**
 * Parses and validates a header against the length of the data buffer that follows it.
 * Entries come back in data order (the order of `begin`).
 */
export function parseHeader(
  headerBytes: Uint8Array,
  file: string,
  dataLength: number,
): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  const fail = (problem: string): never => {
    throw new SafetensorsError(file, problem);
  };
  if (headerBytes.length === 0) fail('header is empty (header length 0)');

  let text: string;
  try {
    // ignoreBOM keeps a BOM in the text so that JSON.parse rejects it, as the Rust library does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) return fail(`header is not a JSON object (got ${json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json})`);

  let metadata: Record<string, string> = {};
  const list: [string, TensorEntry][] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(value)) fail('__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__[${q(k)}] is not a string (got ${JSON.stringify(v) ?? typeof v})`);
      }
      // fromEntries defines own properties, so a "__proto__" key stays data, not a prototype.
      metadata = Object.fromEntries(Object.entries(value as Record<string, string>));
      continue;
    }
    const at = `tensor ${q(name)}`;
    if (!isPlainObject(value)) fail(`${at}: entry is not an object`);
    const v = value as Record<string, unknown>;
    if (!('dtype' in v)) fail(`${at}: missing dtype`);
    if (typeof v.dtype !== 'string') fail(`${at}: dtype is not a string`);
    if (!isDType(v.dtype)) fail(`${at}: unknown dtype ${q(v.dtype as string)} (supported: ${DTYPES.join(', ')})`);
    const dtype = v.dtype as DType;
    if (!('shape' in v)) fail(`${at}: missing shape`);
    if (!Array.isArray(v.shape)) fail(`${at}: shape is not an array`);
    const shape = v.shape as unknown[];
    for (const d of shape) {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        fail(`${at}: shape entry ${JSON.stringify(d) ?? typeof d} is not a non-negative integer`);
      }
    }
    if (!('data_offsets' in v)) fail(`${at}: missing data_offsets`);
    const offs = v.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2) fail(`${at}: data_offsets is not a pair [begin, end]`);
    const [begin, end] = offs as unknown[];
    if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < 0) {
      fail(`${at}: data_offsets ${JSON.stringify(offs)} are not non-negative integers`);
    }
    const b = begin as number;
    const e = end as number;
    if (b > e) fail(`${at}: data_offsets begin ${b} is after end ${e}`);
    let bytes: number;
    try {
      bytes = numel(shape as number[]) * DTYPE_BYTES[dtype];
    } catch {
      return fail(`${at}: shape [${shape.join(', ')}] is too large (element count overflows)`);
    }
    if (!Number.isSafeInteger(bytes)) fail(`${at}: shape [${shape.join(', ')}] is too large (byte size overflows)`);
    if (e - b !== bytes) {
      fail(`${at}: data_offsets [${b}, ${e}] span ${e - b} bytes but ${dtype} [${shape.join(', ')}] needs ${bytes}`);
    }
    if (e > dataLength) fail(`${at}: data_offsets [${b}, ${e}] run past the end of the data buffer (${dataLength} bytes)`);
    list.push([name, { dtype, shape: shape as number[], begin: b, end: e }]);
  }

  // The ranges must tile the data buffer exactly: sorted by offset, each begins where the last ended.
  list.sort((x, y) => x[1].begin - y[1].begin || x[1].end - y[1].end);
  let cursor = 0;
  let prev = '';
  for (const [name, t] of list) {
    if (t.begin < cursor) fail(`tensor ${q(name)}: data_offsets [${t.begin}, ${t.end}] overlap tensor ${q(prev)}`);
    if (t.begin > cursor) fail(`gap in the data buffer: bytes ${cursor}..${t.begin} before tensor ${q(name)} belong to no tensor`);
    cursor = t.end;
    prev = name;
  }
  if (cursor !== dataLength) {
    fail(`data buffer not fully covered: tensors end at byte ${cursor} of ${dataLength} (${dataLength - cursor} trailing bytes)`);
  }
  return { entries: new Map(list), metadata };
}

// ---------------------------------------------------------------------------------------------
// Lazy file reader

/** Reads `length` bytes at `position` into a fresh buffer, looping over short reads. */
/** A file opened for reading; failing, an error naming it. */
export async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await fsp.open(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new SafetensorsError(path, `cannot open (${err.code ?? err.message})`, { cause: e });
  }
}

export async function readExactly(fh: FileHandle, length: number, position: number, file: string): Promise<Uint8Array> {
  const out = new Uint8Array(new ArrayBuffer(length));
  const CHUNK = 1 << 30; // one read(2) moves at most ~2 GiB on Linux
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, Math.min(CHUNK, length - done), position + done);
    if (bytesRead === 0) throw new SafetensorsError(file, `unexpected end of file at byte ${position + done} (file changed or truncated while open)`);
    done += bytesRead;
  }
  return out;
}

/** Swaps each element's bytes in place (only needed on a big-endian host). */
function swapBytes(bytes: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
}

/** One open checkpoint file of either format (safetensors, a PyTorch pickle): its tensors, read on demand. */
export abstract class TensorFile {
  protected fh: FileHandle | undefined;

  constructor(
    readonly path: string,
    fh: FileHandle,
  ) {
    this.fh = fh;
  }

  abstract readonly entries: Map<string, TensorEntry>;
  abstract names(): string[];
  abstract has(name: string): boolean;
  /** One tensor in a fresh typed array of its natural type. */
  abstract read(name: string): Promise<HostTensor>;

  async readFloat32(name: string): Promise<Float32Array> {
    return toFloat32(await this.read(name));
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }
}

export class SafetensorsFile extends TensorFile {
  private constructor(
    path: string,
    fh: FileHandle,
    private readonly dataStart: number,
    readonly entries: Map<string, TensorEntry>,
    readonly metadata: Record<string, string>,
  ) {
    super(path, fh);
  }

  /** Opens a file and validates its whole header against the real file size. */
  static async open(path: string): Promise<SafetensorsFile> {
    const fh = await openForReading(path);
    try {
      const size = (await fh.stat()).size;
      if (size < 8) throw new SafetensorsError(path, `file is ${size} bytes, shorter than the 8-byte header length field`);
      const lenBytes = await readExactly(fh, 8, 0, path);
      // Read as a u64 BigInt and bound it before converting, so 2^63 cannot become an allocation.
      const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n64 === 0n) throw new SafetensorsError(path, 'header length is 0');
      // A length that cannot be right, and no '{' where the JSON header starts: another kind of file
      // (JSONL, text), whose first 8 bytes read as a huge length.
      if ((n64 > BigInt(MAX_HEADER_BYTES) || 8n + n64 > BigInt(size)) && size > 8 && (await readExactly(fh, 1, 8, path))[0] !== 0x7b) {
        throw new SafetensorsError(path, `not a safetensors file (its first 8 bytes give an impossible header length, ${n64}, and no JSON header follows)`);
      }
      if (n64 > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(path, `header length ${n64} is over the ${MAX_HEADER_BYTES}-byte (100 MB) limit`);
      const n = Number(n64);
      if (8 + n > size) throw new SafetensorsError(path, `header length ${n} runs past the end of the file (${size} bytes)`);
      const header = await readExactly(fh, n, 8, path);
      const { entries, metadata } = parseHeader(header, path, size - 8 - n);
      return new SafetensorsFile(path, fh, 8 + n, entries, metadata);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  /** Tensor names, sorted (as `safe_open(...).keys()` returns them). */
  names(): string[] {
    return [...this.entries.keys()].sort(compareUtf8);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Reads one tensor into a fresh typed array of its natural type. */
  async read(name: string): Promise<HostTensor> {
    const entry = this.entries.get(name);
    if (!entry) throw new SafetensorsError(this.path, `no tensor ${q(name)} in this file (${this.entries.size} tensors)`);
    if (!this.fh) throw new SafetensorsError(this.path, `cannot read tensor ${q(name)}: file is closed`);
    const bytes = await readExactly(this.fh, entry.end - entry.begin, this.dataStart + entry.begin, this.path);
    const width = DTYPE_BYTES[entry.dtype];
    if (!HOST_LITTLE_ENDIAN) swapBytes(bytes, width);
    // A fresh buffer starts at offset 0, so the view is aligned whatever the offset in the file.
    const data = new DTYPE_ARRAY[entry.dtype](bytes.buffer as ArrayBuffer, 0, bytes.length / width);
    return { dtype: entry.dtype, shape: [...entry.shape], data };
  }
}

/** Opens, reads every tensor (in file order), and closes. */
export async function readSafetensors(path: string): Promise<Map<string, HostTensor>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, HostTensor>();
    for (const name of f.entries.keys()) out.set(name, await f.read(name));
    return out;
  } finally {
    await f.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Byte-wise UTF-8 order, which is Rust's `str` order (JS `<` compares UTF-16 code units). */
export function compareUtf8(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Serializes exactly as the Python library (Rust `safetensors::serialize`) does: tensors sorted by
 * descending dtype alignment then name, compact JSON (`__metadata__` first, then dtype, shape,
 * data_offsets per tensor), header padded with spaces to a multiple of 8. Returns the 8-byte
 * length plus header as one chunk, then one chunk per non-empty tensor (views, not copies, on a
 * little-endian host). `metadata` undefined omits `__metadata__`; `{}` writes an empty object.
 */
export function serializeSafetensors(
  tensors: Record<string, HostTensor> | Map<string, HostTensor>,
  metadata?: Record<string, string>,
): Uint8Array[] {
  const list = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  for (const [name, t] of list) checkTensor(name, t);
  const keyed = list.map(([name, t]) => ({ name, t, key: Buffer.from(name, 'utf8') }));
  keyed.sort((x, y) => WRITE_RANK[y.t.dtype] - WRITE_RANK[x.t.dtype] || Buffer.compare(x.key, y.key));

  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw new TypeError('safetensors metadata must be an object of strings');
    // The Rust library keeps metadata in a HashMap, so its key order is arbitrary; we keep the given order.
    const kv = Object.entries(metadata).map(([k, v]) => {
      if (typeof v !== 'string') throw new TypeError(`safetensors metadata ${q(k)} is not a string`);
      if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) throw new TypeError(`safetensors metadata ${q(k)} is not valid Unicode`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const { name, t } of keyed) {
    const bytes = t.data.byteLength;
    // JSON.stringify escapes exactly as serde_json does (quote, backslash, controls as \b \t \n \f \r or \u00xx).
    parts.push(`${JSON.stringify(name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${offset + bytes}]}`);
    offset += bytes;
    if (bytes > 0) {
      let view = new Uint8Array(t.data.buffer, t.data.byteOffset, bytes);
      if (!HOST_LITTLE_ENDIAN) {
        view = view.slice();
        swapBytes(view, DTYPE_BYTES[t.dtype]);
      }
      chunks.push(view);
    }
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const n = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + n).fill(0x20, 8); // pad with spaces, as the Rust writer does
  new DataView(head.buffer).setBigUint64(0, BigInt(n), true);
  head.set(json, 8);
  return [head, ...chunks];
}

function checkTensor(name: string, t: HostTensor): void {
  const at = `safetensors: tensor ${q(name)}`;
  if (name === '__metadata__') throw new TypeError(`${at}: the name is reserved for the metadata`);
  if (LONE_SURROGATE.test(name)) throw new TypeError(`${at}: name is not valid Unicode (lone surrogate)`);
  if (!t || !isDType(t.dtype)) throw new TypeError(`${at}: unknown dtype ${q(String(t?.dtype))}`);
  if (!Array.isArray(t.shape)) throw new TypeError(`${at}: shape is not an array`);
  const n = numel(t.shape);
  const ctor = DTYPE_ARRAY[t.dtype];
  if (!(t.data instanceof ctor)) throw new TypeError(`${at}: ${t.dtype} data must be a ${ctor.name}, got ${t.data?.constructor?.name ?? typeof t.data}`);
  if (t.data.length !== n) throw new TypeError(`${at}: shape [${t.shape.join(', ')}] has ${n} elements but data has ${t.data.length}`);
}

/**
 * Writes atomically: serialize first (so a bad tensor never creates a file), write a temp file
 * beside the target, fsync, rename over the target. The temp is removed on any failure.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, HostTensor> | Map<string, HostTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeAtomic(path, serializeSafetensors(tensors, metadata));
}

// ---------------------------------------------------------------------------------------------
// Conversions

let f16Table: Uint32Array | undefined;
/** float32 bit patterns of all 65536 half values, exact (NaN payloads kept). */
function halfTable(): Uint32Array {
  if (f16Table) return f16Table;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) t[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    else if (exp !== 0) t[h] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
    else if (mant === 0) t[h] = sign >>> 0;
    else {
      // Subnormal half: normalize into a float32 exponent.
      let e = 113;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      t[h] = (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
    }
  }
  return (f16Table = t);
}

export function float16ToFloat32(bits: Uint16Array): Float32Array {
  const table = halfTable();
  const out = new Float32Array(bits.length);
  const o = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) o[i] = table[bits[i]!]!;
  return out;
}

/** float32 bits → half bits, round to nearest even; overflow → ±Inf, NaN stays NaN. */
function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return mant ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1))) h++; // may carry into the smallest normal: correct
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry into exponent 31 gives Inf: correct
  return sign | h;
}

export function float32ToFloat16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32BitsToF16(u[i]!);
  return out;
}

export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const o = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) o[i] = bits[i]! << 16;
  return out;
}

export function float32ToBfloat16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) {
    const b = u[i]!;
    if ((b & 0x7fffffff) > 0x7f800000) out[i] = (b >>> 16) | 0x40; // NaN: keep it a (quiet) NaN
    else out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16; // round to nearest even; overflow → Inf
  }
  return out;
}

/** Any tensor as float32 (I64 beyond 2^24 loses precision, as a cast would). */
export function toFloat32(t: HostTensor): Float32Array {
  switch (t.dtype) {
    case 'F32':
      return t.data as Float32Array;
    case 'F16':
      return float16ToFloat32(t.data as Uint16Array);
    case 'BF16':
      return bfloat16ToFloat32(t.data as Uint16Array);
    case 'I64': {
      const d = t.data as BigInt64Array;
      const out = new Float32Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = Number(d[i]!);
      return out;
    }
    default:
      return Float32Array.from(t.data as Exclude<HostData, BigInt64Array>);
  }
}

/** Any integer (or integral float) tensor as int32; throws a RangeError if a value does not fit. */
export function toInt32(t: HostTensor): Int32Array {
  const bad = (i: number, v: unknown): never => {
    throw new RangeError(`toInt32: ${t.dtype} value ${String(v)} at index ${i} is not an int32`);
  };
  switch (t.dtype) {
    case 'I32':
      return t.data as Int32Array;
    case 'I64': {
      const d = t.data as BigInt64Array;
      const out = new Int32Array(d.length);
      for (let i = 0; i < d.length; i++) {
        const v = d[i]!;
        if (v < -2147483648n || v > 2147483647n) bad(i, v);
        out[i] = Number(v);
      }
      return out;
    }
    case 'I16':
    case 'I8':
    case 'U8':
    case 'BOOL':
      return Int32Array.from(t.data as Int16Array | Int8Array | Uint8Array);
    default: {
      // Floats convert only when every value is an integer in range (e.g. labels saved as float).
      const src = t.dtype === 'F64' || t.dtype === 'F32' ? (t.data as Float64Array | Float32Array) : toFloat32(t);
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const v = src[i]!;
        if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) bad(i, v);
        out[i] = v;
      }
      return out;
    }
  }
}

// Convenience constructors.
export function f32(shape: number[], data: Float32Array | number[]): HostTensor {
  return checked({ dtype: 'F32', shape, data: data instanceof Float32Array ? data : Float32Array.from(data) });
}
export function i32(shape: number[], data: Int32Array | number[]): HostTensor {
  return checked({ dtype: 'I32', shape, data: data instanceof Int32Array ? data : Int32Array.from(data) });
}
export function i64(shape: number[], data: BigInt64Array | number[]): HostTensor {
  return checked({ dtype: 'I64', shape, data: data instanceof BigInt64Array ? data : BigInt64Array.from(data, (v) => BigInt(v)) });
}
function checked(t: HostTensor): HostTensor {
  const n = numel(t.shape);
  if (t.data.length !== n) throw new RangeError(`shape [${t.shape.join(', ')}] has ${n} elements but data has ${t.data.length}`);
  return t;
}
