import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DTYPE_BYTES, DTYPES, type DType, type HostTensor, SafetensorsError, SafetensorsFile, bfloat16ToFloat32, f32, float16ToFloat32, float32ToBfloat16, float32ToFloat16, i32, i64, numel, parseHeader, readSafetensors, serializeSafetensors, toFloat32, toInt32, writeSafetensors } from '../../sidecar/src/io/safetensors';
import { CheckpointReader } from '../../sidecar/src/io/checkpoint';

const FIXTURES = join(__dirname, '../../../shared/fixtures');
const GPT2 = join(FIXTURES, 'hf/gpt2-tiny/model.safetensors');

const tmpRoot = mkdtempSync(join(tmpdir(), 'peft-lab-safetensors-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
const tmpDir = (): string => mkdtempSync(join(tmpRoot, `d${tmpCount++}-`));

/** Raw file bytes from a header (string, or object to stringify) and a data length. */
function rawFile(header: string | object | Uint8Array, dataBytes = 0, lengthField?: bigint): Buffer {
  const h = header instanceof Uint8Array ? Buffer.from(header) : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthField ?? BigInt(h.length));
  return Buffer.concat([len, h, Buffer.alloc(dataBytes, 7)]);
}

function writeTemp(bytes: Uint8Array, name = 'bad.safetensors'): string {
  const p = join(tmpDir(), name);
  writeFileSync(p, bytes);
  return p;
}

/** Asserts that opening the file rejects with a one-line SafetensorsError naming it and `phrase`. */
async function rejects(path: string, phrase: string | RegExp): Promise<SafetensorsError> {
  let caught: unknown;
  try {
    const f = await SafetensorsFile.open(path);
    await f.close();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SafetensorsError, `expected a SafetensorsError, got ${String(caught)}`);
  assert.equal(caught.file, path);
  assert.ok(caught.message.startsWith(`${path}: `), caught.message);
  assert.ok(!caught.message.includes('\n'), 'one line');
  if (typeof phrase === 'string') assert.ok(caught.message.includes(phrase), `"${caught.message}" should contain "${phrase}"`);
  else assert.match(caught.message, phrase);
  return caught;
}

const badHeader = (header: string | object, dataBytes = 0, phrase: string | RegExp = '') =>
  rejects(writeTemp(rawFile(header, dataBytes)), phrase);

function sample(dtype: DType, n: number): HostTensor['data'] {
  switch (dtype) {
    case 'F64':
      return Float64Array.from({ length: n }, (_, i) => i * 1.5 - 3 + 1e-12);
    case 'F32':
      return Float32Array.from({ length: n }, (_, i) => i * 0.25 - 1);
    case 'F16':
      return float32ToFloat16(Float32Array.from({ length: n }, (_, i) => i / 8 - 0.5));
    case 'BF16':
      return float32ToBfloat16(Float32Array.from({ length: n }, (_, i) => -i * 3));
    case 'I64':
      return BigInt64Array.from({ length: n }, (_, i) => BigInt(i) * 10n ** 15n - 7n);
    case 'I32':
      return Int32Array.from({ length: n }, (_, i) => i * 1000 - 2 ** 30);
    case 'I16':
      return Int16Array.from({ length: n }, (_, i) => i * 300 - 32768);
    case 'I8':
      return Int8Array.from({ length: n }, (_, i) => i * 17 - 128);
    case 'U8':
      return Uint8Array.from({ length: n }, (_, i) => (i * 37) & 255);
    case 'BOOL':
      return Uint8Array.from({ length: n }, (_, i) => i % 2);
  }
}

describe('round trip', () => {
  test('every dtype, metadata, 0-d and zero-size tensors', async () => {
    const tensors = new Map<string, HostTensor>();
    for (const dtype of DTYPES) {
      tensors.set(`t.${dtype}`, { dtype, shape: [2, 3], data: sample(dtype, 6) });
      tensors.set(`scalar.${dtype}`, { dtype, shape: [], data: sample(dtype, 1) });
      tensors.set(`empty.${dtype}`, { dtype, shape: [0, 4], data: sample(dtype, 0) });
    }
    const metadata = { format: 'pt', note: 'ünïcode "quoted"\nnewline' };
    const path = join(tmpDir(), 'all.safetensors');
    await writeSafetensors(path, tensors, metadata);

    const f = await SafetensorsFile.open(path);
    assert.deepEqual(f.metadata, metadata);
    assert.deepEqual(f.names(), [...tensors.keys()].sort());
    for (const [name, t] of tensors) {
      const r = await f.read(name);
      assert.equal(r.dtype, t.dtype, name);
      assert.deepEqual(r.shape, t.shape, name);
      assert.equal(r.data.constructor, t.data.constructor, name);
      assert.deepEqual(r.data, t.data, name);
      const e = f.entries.get(name)!;
      assert.equal(e.end - e.begin, numel(t.shape) * DTYPE_BYTES[t.dtype]);
    }
    await f.close();

    const all = await readSafetensors(path);
    assert.equal(all.size, tensors.size);
    assert.deepEqual(all.get('scalar.I64')!.data, tensors.get('scalar.I64')!.data);
  });

  test('record input, no metadata omits __metadata__, empty metadata writes {}', async () => {
    const text = (chunks: Uint8Array[]) => Buffer.from(chunks[0]!.subarray(8)).toString('utf8');
    assert.equal(text(serializeSafetensors({ a: f32([1], [1]) })), '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  '); // 54 bytes + 2 spaces
    assert.match(text(serializeSafetensors({ a: f32([1], [1]) }, {})), /^\{"__metadata__":\{\},"a":/);
    const path = join(tmpDir(), 'empty-file.safetensors');
    await writeSafetensors(path, {});
    const back = await SafetensorsFile.open(path);
    assert.equal(back.entries.size, 0);
    assert.deepEqual(back.metadata, {});
    await back.close();
  });

  test('header is padded with spaces to a multiple of 8 and data chunks are views', () => {
    const data = new Float32Array([1, 2, 3]);
    for (const name of ['a', 'ab', 'abc', 'abcd', 'abcdefgh']) {
      const [head, ...rest] = serializeSafetensors({ [name]: { dtype: 'F32', shape: [3], data } });
      const n = Number(Buffer.from(head!).readBigUInt64LE(0));
      assert.equal(n % 8, 0);
      assert.equal(head!.length, 8 + n);
      assert.match(Buffer.from(head!.subarray(8)).toString(), /^\{.*\} *$/);
      assert.equal(rest.length, 1);
      assert.equal(rest[0]!.buffer, data.buffer); // no copy of tensor data
    }
  });

  test('writer orders by descending dtype alignment, then UTF-8 name, like the Rust library', () => {
    const chunks = serializeSafetensors({
      b: f32([1], [1]),
      a: f32([1], [1]),
      flag: { dtype: 'BOOL', shape: [1], data: new Uint8Array([1]) },
      ids: i64([1], [1]),
      half: { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) },
      '\u{1F600}': f32([1], [1]), // UTF-8 F0.. sorts after U+FF5A, unlike UTF-16
      '\uFF5A': f32([1], [1]),
    });
    const header = JSON.parse(Buffer.from(chunks[0]!.subarray(8)).toString()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(header), ['ids', 'a', 'b', '\uFF5A', '\u{1F600}', 'half', 'flag']);
  });

  test('serialize rejects inconsistent tensors', () => {
    assert.throws(() => serializeSafetensors({ a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /has 3 elements but data has 2/);
    assert.throws(() => serializeSafetensors({ a: { dtype: 'F32', shape: [1], data: new Float64Array(1) } }), /must be a Float32Array/);
    assert.throws(() => serializeSafetensors({ a: { dtype: 'X' as DType, shape: [1], data: new Float32Array(1) } }), /unknown dtype/);
    assert.throws(() => serializeSafetensors({ __metadata__: f32([1], [1]) }), /reserved/);
    assert.throws(() => serializeSafetensors({ '\uD800': f32([1], [1]) }), /lone surrogate/);
    assert.throws(() => serializeSafetensors({ a: f32([1], [1]) }, { k: 1 as unknown as string }), /not a string/);
  });

  test('reads tensors at unaligned offsets (files from older writers)', async () => {
    const header = { b: { dtype: 'I8', shape: [1], data_offsets: [0, 1] }, a: { dtype: 'F32', shape: [2], data_offsets: [1, 9] } };
    const bytes = rawFile(header, 9);
    const dataStart = bytes.length - 9;
    bytes.writeInt8(-5, dataStart);
    bytes.writeFloatLE(1.5, dataStart + 1);
    bytes.writeFloatLE(-2.25, dataStart + 5);
    const all = await readSafetensors(writeTemp(bytes, 'unaligned.safetensors'));
    assert.deepEqual(all.get('a')!.data, new Float32Array([1.5, -2.25]));
    assert.deepEqual(all.get('b')!.data, new Int8Array([-5]));
  });

  test('read of a missing tensor, and after close, names file and tensor', async () => {
    const f = await SafetensorsFile.open(GPT2);
    assert.ok(f.has('transformer.wte.weight'));
    assert.ok(!f.has('lm_head.weight'));
    await assert.rejects(f.read('lm_head.weight'), (e: unknown) => e instanceof SafetensorsError && e.message.includes(GPT2) && e.message.includes('"lm_head.weight"'));
    const w = await f.readFloat32('transformer.wte.weight');
    assert.equal(w.length, 128 * 64);
    await f.close();
    await assert.rejects(f.read('transformer.wte.weight'), /file is closed/);
    await f.close(); // idempotent
  });

  test('open of a missing file is a SafetensorsError', async () => {
    await rejects(join(tmpDir(), 'nope.safetensors'), 'cannot open (ENOENT)');
  });
});

describe('byte compatibility with the Python library', () => {
  for (const rel of ['hf/gpt2-tiny/model.safetensors', 'hf/llama-tiny/refs.safetensors', 'peft/gpt2-tiny-lora/adapter_model.safetensors']) {
    test(`rewriting ${rel} reproduces it byte for byte`, async () => {
      const src = join(FIXTURES, rel);
      assert.ok(existsSync(src), `fixture ${src} resolves`);
      const original = readFileSync(src);
      const f = await SafetensorsFile.open(src);
      const tensors = new Map<string, HostTensor>();
      for (const name of f.names()) tensors.set(name, await f.read(name));
      // Files saved without metadata have no __metadata__ key; keep it that way.
      const hasMetadata = Object.keys(f.metadata).length > 0;
      await f.close();
      const out = join(tmpDir(), 'rewritten.safetensors');
      await writeSafetensors(out, tensors, hasMetadata ? f.metadata : undefined);
      const written = readFileSync(out);
      assert.equal(written.length, original.length);
      assert.ok(written.equals(original), 'bytes identical');
    });
  }
});

describe('float16 / bfloat16', () => {
  const h = (xs: number[]) => Array.from(float32ToFloat16(new Float32Array(xs)));
  const b = (xs: number[]) => Array.from(float32ToBfloat16(new Float32Array(xs)));

  test('float16 encodes known values', () => {
    assert.deepEqual(h([1, -2, 65504, 2 ** -24, -(2 ** -24), 2 ** -14, 0, -0]), [0x3c00, 0xc000, 0x7bff, 0x0001, 0x8001, 0x0400, 0, 0x8000]);
    assert.deepEqual(h([Infinity, -Infinity, 1e6, -65520]), [0x7c00, 0xfc00, 0x7c00, 0xfc00]);
    const nan = h([NaN])[0]!;
    assert.equal(nan & 0x7c00, 0x7c00);
    assert.notEqual(nan & 0x03ff, 0);
  });

  test('float16 rounds to nearest, ties to even', () => {
    // 1 + 2^-11 is halfway between 1 (even) and 1 + 2^-10: down. 1 + 3*2^-11: up to 1 + 2^-9 (even).
    assert.deepEqual(h([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -11 + 2 ** -20]), [0x3c00, 0x3c02, 0x3c01]);
    // 65520 is halfway between 65504 (odd mantissa) and 65536 (overflow): ties to even gives Inf.
    assert.deepEqual(h([65519, 65520]), [0x7bff, 0x7c00]);
    // Subnormal ties: 2^-25 is halfway between 0 and 2^-24 → 0; 3*2^-25 → 2*2^-24.
    assert.deepEqual(h([2 ** -25, 3 * 2 ** -25, 2 ** -25 * 1.0001, 2 ** -26]), [0x0000, 0x0002, 0x0001, 0x0000]);
    // Largest subnormal rounding up carries into the smallest normal.
    assert.deepEqual(h([2 ** -14 - 2 ** -25]), [0x0400]);
  });

  test('float16 decodes known values and round-trips every non-NaN bit pattern', () => {
    const dec = Array.from(float16ToFloat32(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x8000])));
    assert.deepEqual(dec, [1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, Infinity, -Infinity, -0]);
    assert.ok(Number.isNaN(float16ToFloat32(new Uint16Array([0x7e00]))[0]));
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const back = float32ToFloat16(float16ToFloat32(all));
    for (let i = 0; i < 65536; i++) {
      if ((i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0) assert.ok((back[i]! & 0x7c00) === 0x7c00 && (back[i]! & 0x3ff) !== 0, 'NaN stays NaN');
      else if (back[i] !== i) assert.fail(`half 0x${i.toString(16)} round-trips to 0x${back[i]!.toString(16)}`);
    }
  });

  test('float16 picks the nearest representable value for random floats', () => {
    let seed = 12345;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const xs = Float32Array.from({ length: 20000 }, () => (rand() - 0.5) * 2 ** (Math.floor(rand() * 44) - 28));
    const hs = float32ToFloat16(xs);
    const dec = (bits: number) => float16ToFloat32(new Uint16Array([bits]))[0]!;
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i]!;
      const err = Math.abs(dec(hs[i]!) - x);
      for (const nb of [hs[i]! - 1, hs[i]! + 1]) {
        if ((nb & 0x7fff) >= 0x7c00 || nb < 0 || nb > 0xffff || (nb & 0x8000) !== (hs[i]! & 0x8000)) continue;
        assert.ok(err <= Math.abs(dec(nb) - x), `x=${x}: 0x${hs[i]!.toString(16)} is not nearest`);
      }
    }
  });

  test('bfloat16 encodes and decodes known values, rounding to nearest even', () => {
    assert.deepEqual(b([1, -2, 0, -0, Infinity, -Infinity]), [0x3f80, 0xc000, 0, 0x8000, 0x7f80, 0xff80]);
    assert.deepEqual(b([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20]), [0x3f80, 0x3f82, 0x3f81]);
    assert.deepEqual(b([3.4028234663852886e38]), [0x7f80]); // max float32 rounds up to Inf
    assert.deepEqual(b([2 ** -133]), [0x0001]); // smallest bf16 subnormal
    const nan = b([NaN])[0]!;
    assert.ok((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0);
    // A NaN whose payload lives only in the low 16 bits must not become Inf.
    const lowNaN = new Float32Array(new Uint32Array([0x7f800001]).buffer);
    assert.ok(Number.isNaN(bfloat16ToFloat32(float32ToBfloat16(lowNaN))[0]));
    assert.deepEqual(Array.from(bfloat16ToFloat32(new Uint16Array([0x3f80, 0xc000, 0x7f7f, 0x0001, 0xff80]))), [1, -2, 3.3895313892515355e38, 2 ** -133, -Infinity]);
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const back = float32ToBfloat16(bfloat16ToFloat32(all));
    for (let i = 0; i < 65536; i++) {
      const isNaN = (i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0;
      if (!isNaN && back[i] !== i) assert.fail(`bf16 0x${i.toString(16)} round-trips to 0x${back[i]!.toString(16)}`);
    }
  });

  test('toFloat32 and toInt32 convert every dtype', () => {
    for (const dtype of DTYPES) {
      const t: HostTensor = { dtype, shape: [4], data: sample(dtype, 4) };
      assert.equal(toFloat32(t).length, 4, dtype);
    }
    assert.deepEqual(toFloat32({ dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) }), new Float32Array([1, -2]));
    assert.deepEqual(toFloat32(i64([3], [1, -2, 3])), new Float32Array([1, -2, 3]));
    assert.deepEqual(toInt32(i64([3], [1, -2, 2 ** 31 - 1])), new Int32Array([1, -2, 2 ** 31 - 1]));
    assert.deepEqual(toInt32({ dtype: 'U8', shape: [2], data: new Uint8Array([0, 255]) }), new Int32Array([0, 255]));
    assert.deepEqual(toInt32(f32([2], [3, -4])), new Int32Array([3, -4]));
    assert.throws(() => toInt32(i64([2], [0, 2 ** 31])), /I64 value 2147483648 at index 1/);
    assert.throws(() => toInt32(i64([1], [-(2 ** 31) - 1])), RangeError);
    assert.throws(() => toInt32(f32([1], [0.5])), /not an int32/);
    const same = i32([2], [1, 2]);
    assert.equal(toInt32(same), same.data);
  });

  test('constructors and numel', () => {
    assert.equal(numel([]), 1);
    assert.equal(numel([2, 0, 5]), 0);
    assert.equal(numel([3, 4]), 12);
    assert.throws(() => numel([2 ** 30, 2 ** 30, 2 ** 30]), RangeError);
    assert.throws(() => numel([-1]), RangeError);
    assert.throws(() => f32([2, 2], [1, 2, 3]), /4 elements but data has 3/);
    assert.deepEqual(i64([2], [5, -6]).data, new BigInt64Array([5n, -6n]));
  });
});

describe('malformed files', () => {
  const ok = (extra: object = {}) => ({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, ...extra });

  test('file shorter than 8 bytes', async () => {
    await rejects(writeTemp(new Uint8Array([1, 2, 3])), 'shorter than the 8-byte header length');
    await rejects(writeTemp(new Uint8Array(0)), 'file is 0 bytes');
  });
  test('header length 0', async () => {
    await rejects(writeTemp(rawFile('', 16)), 'header length is 0');
  });
  test('header length past the end of the file', async () => {
    await rejects(writeTemp(rawFile(ok(), 8, 5000n)), 'header length 5000 runs past the end of the file');
  });
  test('header length over 100 MB, including 2^63 and 2^64-1', async () => {
    for (const n of [100_000_001n, 2n ** 63n, 2n ** 64n - 1n]) {
      await rejects(writeTemp(rawFile(ok(), 8, n)), `header length ${n} is over the 100000000-byte (100 MB) limit`);
    }
  });
  test('another kind of file (JSONL, CSV, text) is named as not a safetensors file', async () => {
    for (const text of ['{"text": "hello"}\n{"text": "world"}\n', 'prompt,completion\n1+1=,2\n', 'hello world, some text']) {
      await rejects(writeTemp(Buffer.from(text), 'inputs.jsonl'), /: not a safetensors file \(.*impossible header length/);
    }
    // Over the limit too (as in a large file): no '{' after the length field.
    await rejects(writeTemp(rawFile('xx', 8, 2n ** 63n)), `not a safetensors file (its first 8 bytes give an impossible header length, ${2n ** 63n}`);
  });
  test('header not valid UTF-8', async () => {
    await rejects(writeTemp(rawFile(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))), 'header is not valid UTF-8');
  });
  test('header not JSON (including a BOM, and NUL padding)', async () => {
    await badHeader('{"a": ', 0, 'header is not valid JSON');
    await rejects(writeTemp(rawFile(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]))), 'header is not valid JSON');
    await badHeader('{}\0\0\0\0\0\0', 0, 'header is not valid JSON');
  });
  test('header not an object', async () => {
    await badHeader('[]', 0, 'header is not a JSON object (got an array)');
    await badHeader('null', 0, 'header is not a JSON object (got null)');
    await badHeader('42', 0, 'header is not a JSON object (got number)');
  });
  test('entry not an object', async () => {
    await badHeader({ w: [1, 2] }, 0, 'tensor "w": entry is not an object');
    await badHeader({ w: 'F32' }, 0, 'tensor "w": entry is not an object');
  });
  test('missing or wrong-typed dtype', async () => {
    await badHeader({ w: { shape: [1], data_offsets: [0, 4] } }, 4, 'tensor "w": missing dtype');
    await badHeader({ w: { dtype: 3, shape: [1], data_offsets: [0, 4] } }, 4, 'tensor "w": dtype is not a string');
  });
  test('unknown dtype', async () => {
    await badHeader({ w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, 1, 'tensor "w": unknown dtype "F8_E4M3"');
    await badHeader({ w: { dtype: 'f32', shape: [1], data_offsets: [0, 4] } }, 4, 'unknown dtype "f32"');
  });
  test('missing or wrong-typed shape', async () => {
    await badHeader({ w: { dtype: 'F32', data_offsets: [0, 4] } }, 4, 'tensor "w": missing shape');
    await badHeader({ w: { dtype: 'F32', shape: 4, data_offsets: [0, 16] } }, 16, 'tensor "w": shape is not an array');
  });
  test('shape entries not non-negative safe integers', async () => {
    for (const d of [-1, 1.5, '2', null, 2 ** 53]) {
      await badHeader({ w: { dtype: 'F32', shape: [d], data_offsets: [0, 4] } }, 4, 'is not a non-negative integer');
    }
  });
  test('shape whose element or byte count overflows', async () => {
    await badHeader({ w: { dtype: 'F32', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 4] } }, 4, 'too large (element count overflows)');
    await badHeader({ w: { dtype: 'F64', shape: [2 ** 51], data_offsets: [0, 4] } }, 4, 'too large (byte size overflows)');
  });
  test('missing or wrong-typed data_offsets', async () => {
    await badHeader({ w: { dtype: 'F32', shape: [1] } }, 4, 'tensor "w": missing data_offsets');
    await badHeader({ w: { dtype: 'F32', shape: [1], data_offsets: { begin: 0, end: 4 } } }, 4, 'data_offsets is not a pair');
    await badHeader({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } }, 4, 'data_offsets is not a pair');
  });
  test('data_offsets not non-negative integers with begin <= end', async () => {
    await badHeader({ w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, 4, 'are not non-negative integers');
    await badHeader({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4.5] } }, 4, 'are not non-negative integers');
    await badHeader({ w: { dtype: 'F32', shape: [1], data_offsets: ['0', 4] } }, 4, 'are not non-negative integers');
    await badHeader({ w: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, 4, 'begin 4 is after end 0');
  });
  test('byte span does not match shape and dtype', async () => {
    await badHeader({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, 20, 'span 20 bytes but F32 [2, 3] needs 24');
  });
  test('range past the data length', async () => {
    await badHeader({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8, 'run past the end of the data buffer (8 bytes)');
  });
  test('overlapping ranges', async () => {
    await badHeader(ok({ b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }), 8, /tensor "b": data_offsets \[4, 8\] overlap tensor "a"/);
  });
  test('gap between ranges', async () => {
    await badHeader(ok({ b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }), 16, 'gap in the data buffer: bytes 8..12 before tensor "b"');
    await badHeader({ b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8, 'bytes 0..4');
  });
  test('data buffer not fully covered', async () => {
    await badHeader(ok(), 12, 'data buffer not fully covered: tensors end at byte 8 of 12 (4 trailing bytes)');
    await badHeader({}, 3, 'not fully covered');
  });
  test('__metadata__ not a string to string object', async () => {
    await badHeader(ok({ __metadata__: 'pt' }), 8, '__metadata__ is not an object of strings');
    await badHeader(ok({ __metadata__: ['pt'] }), 8, '__metadata__ is not an object of strings');
    await badHeader(ok({ __metadata__: { format: 1 } }), 8, '__metadata__["format"] is not a string (got 1)');
  });
  test('hostile names stay on one line and are bounded', async () => {
    const e = await badHeader({ ['x\n'.repeat(1000)]: { dtype: 'Q', shape: [], data_offsets: [0, 0] } }, 0, 'unknown dtype');
    assert.ok(e.message.length < 400);
  });
  test('parseHeader validates a buffer directly', () => {
    const bytes = new TextEncoder().encode(JSON.stringify({ __metadata__: { k: 'v' }, b: { dtype: 'I8', shape: [2], data_offsets: [4, 6] }, a: { dtype: 'I32', shape: [], data_offsets: [0, 4] } }));
    const { entries, metadata } = parseHeader(bytes, 'mem', 6);
    assert.deepEqual([...entries.keys()], ['a', 'b']); // data order
    assert.deepEqual(entries.get('b'), { dtype: 'I8', shape: [2], begin: 4, end: 6 });
    assert.deepEqual(metadata, { k: 'v' });
    assert.throws(() => parseHeader(bytes, 'mem', 7), (e: unknown) => e instanceof SafetensorsError && e.file === 'mem' && /1 trailing bytes/.test(e.message));
    assert.throws(() => parseHeader(new Uint8Array(0), 'mem', 0), /header is empty/);
  });
  test('a file truncated at 20 random points always fails cleanly', async () => {
    const original = readFileSync(GPT2);
    const dir = tmpDir();
    let seed = 2024;
    const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const cuts = [0, 7, 8, 100, ...Array.from({ length: 16 }, () => Math.floor(rand() * original.length))];
    for (const [i, cut] of cuts.entries()) {
      const p = join(dir, `cut${i}.safetensors`);
      writeFileSync(p, original.subarray(0, cut));
      await rejects(p, /shorter than|runs past the end|run past the end|not fully covered/);
    }
  });
});

describe('sharded checkpoints', () => {
  const A = { 'layer.0.weight': f32([2, 2], [1, 2, 3, 4]), 'layer.0.bias': f32([2], [5, 6]) };
  const B = { 'layer.1.weight': f32([2, 2], [7, 8, 9, 10]), 'step': i64([], [42]) };
  const S1 = 'model-00001-of-00002.safetensors';
  const S2 = 'model-00002-of-00002.safetensors';

  async function sharded(index?: unknown): Promise<string> {
    const dir = tmpDir();
    await writeSafetensors(join(dir, S1), A, { format: 'pt' });
    await writeSafetensors(join(dir, S2), B, { format: 'pt' });
    const weightMap = Object.fromEntries([...Object.keys(A).map((k) => [k, S1]), ...Object.keys(B).map((k) => [k, S2])]);
    const body = index ?? { metadata: { total_size: 56 }, weight_map: weightMap };
    writeFileSync(join(dir, 'model.safetensors.index.json'), typeof body === 'string' ? body : JSON.stringify(body));
    return dir;
  }

  async function indexRejects(index: unknown, phrase: string): Promise<void> {
    const dir = await sharded(index);
    const indexPath = join(dir, 'model.safetensors.index.json');
    await assert.rejects(CheckpointReader.open(dir), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, String(e));
      assert.equal(e.file, indexPath);
      assert.ok(e.message.includes(phrase), `"${e.message}" should contain "${phrase}"`);
      return true;
    });
  }

  test('reads two shards through the index', async () => {
    const dir = await sharded();
    const r = await CheckpointReader.open(dir);
    assert.deepEqual(r.names(), ['layer.0.bias', 'layer.0.weight', 'layer.1.weight', 'step']);
    assert.ok(r.has('step') && !r.has('nope'));
    assert.deepEqual((await r.read('layer.1.weight')).data, new Float32Array([7, 8, 9, 10]));
    assert.deepEqual(await r.readFloat32('step'), new Float32Array([42]));
    assert.deepEqual(r.entry('layer.0.bias'), { dtype: 'F32', shape: [2], begin: 0, end: 8, file: S1 });
    assert.equal(r.entry('step').file, S2);
    assert.equal(r.totalBytes(), 16 + 8 + 16 + 8);
    const files = r.files();
    assert.deepEqual(files.map((f) => f.name), [S1, S2]);
    assert.equal(files[0]!.bytes, readFileSync(join(dir, S1)).length);
    assert.throws(() => r.entry('nope'), (e: unknown) => e instanceof SafetensorsError && e.message.includes(dir) && e.message.includes('"nope"'));
    await assert.rejects(r.read('nope'), SafetensorsError);
    await r.close();
  });

  test('prefers model.safetensors, and accepts an explicit file name', async () => {
    const dir = tmpDir();
    await writeSafetensors(join(dir, 'model.safetensors'), A);
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), B);
    const r = await CheckpointReader.open(dir);
    assert.deepEqual(r.names(), ['layer.0.bias', 'layer.0.weight']);
    assert.equal(r.entry('layer.0.weight').file, 'model.safetensors');
    await r.close();
    const a = await CheckpointReader.open(dir, 'adapter_model.safetensors');
    assert.deepEqual(a.names(), ['layer.1.weight', 'step']);
    assert.deepEqual((await a.read('step')).data, new BigInt64Array([42n]));
    await a.close();
    await assert.rejects(CheckpointReader.open(dir, 'missing.safetensors'), (e: unknown) => e instanceof SafetensorsError && e.message.includes('missing.safetensors') && e.message.includes('no such file'));
  });

  test('reads a real fixture folder', async () => {
    const r = await CheckpointReader.open(join(FIXTURES, 'hf/gpt2-tiny'));
    assert.ok(r.has('transformer.wte.weight'));
    assert.equal(r.files()[0]!.bytes, readFileSync(GPT2).length);
    await r.close();
  });

  test('a folder with no checkpoint names the folder; a damaged pytorch_model.bin is named as such', async () => {
    const dir = tmpDir();
    await assert.rejects(CheckpointReader.open(dir), (e: unknown) => e instanceof SafetensorsError && e.file === dir && e.message.includes('no model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json'));
    // A PyTorch checkpoint is read (test/unit/torch-checkpoint.unit.test.ts); a damaged one says so.
    writeFileSync(join(dir, 'pytorch_model.bin'), 'PK');
    await assert.rejects(CheckpointReader.open(dir), (e: unknown) => e instanceof SafetensorsError && e.file === join(dir, 'pytorch_model.bin') && /not a readable PyTorch state dict/.test(e.message));
  });

  test('malformed index files name index.json and the key', async () => {
    await indexRejects('{"weight_map": ', 'index is not valid JSON');
    await indexRejects([], 'index is not a JSON object');
    await indexRejects({ metadata: {} }, 'missing "weight_map"');
    await indexRejects({ weight_map: ['a'] }, '"weight_map" is not an object');
    await indexRejects({ weight_map: {} }, '"weight_map" is empty');
    await indexRejects({ metadata: 5, weight_map: { step: S2 } }, '"metadata" is not an object');
    await indexRejects({ weight_map: { step: 2 } }, 'weight_map["step"] is not a shard file name');
    await indexRejects({ weight_map: { step: '../outside.safetensors' } }, 'weight_map["step"]: shard "../outside.safetensors" is outside the checkpoint folder');
  });

  test('a missing shard, or a shard lacking a listed tensor, is named', async () => {
    await indexRejects({ weight_map: { step: S2, extra: 'model-00003-of-00003.safetensors' } }, 'shard "model-00003-of-00003.safetensors" (weight_map["extra"]) is missing');
    await indexRejects({ weight_map: { step: S1 } }, `weight_map["step"] says shard "${S1}", which has no such tensor`);
  });

  test('a corrupt shard fails with the shard named', async () => {
    const dir = await sharded();
    writeFileSync(join(dir, S2), readFileSync(join(dir, S2)).subarray(0, 20));
    await assert.rejects(CheckpointReader.open(dir), (e: unknown) => e instanceof SafetensorsError && e.file === join(dir, S2));
  });
});

describe('atomic write', () => {
  const listing = (dir: string) => readdirSync(dir).sort();

  test('leaves only the target, and replaces an existing file', async () => {
    const dir = tmpDir();
    const path = join(dir, 'out.safetensors');
    await writeSafetensors(path, { a: f32([1], [1]) });
    await writeSafetensors(path, { b: i32([2], [1, 2]) });
    assert.deepEqual(listing(dir), ['out.safetensors']);
    const back = await readSafetensors(path);
    assert.deepEqual([...back.keys()], ['b']);
  });

  test('does not replace the target when serialization throws', async () => {
    const dir = tmpDir();
    const path = join(dir, 'out.safetensors');
    await writeSafetensors(path, { a: f32([1], [1]) });
    const before = readFileSync(path);
    await assert.rejects(writeSafetensors(path, { a: { dtype: 'F32', shape: [5], data: new Float32Array(2) } }), /5 elements but data has 2/);
    assert.deepEqual(listing(dir), ['out.safetensors']);
    assert.ok(readFileSync(path).equals(before));
  });

  test('removes the temp file when the rename fails', async () => {
    const dir = tmpDir();
    const target = join(dir, 'is-a-dir');
    writeFileSync(join(dir, 'keep'), 'x');
    // Renaming a file over a non-empty directory fails after the temp file is fully written.
    mkdirSync(target);
    writeFileSync(join(target, 'inside'), 'x');
    await assert.rejects(writeSafetensors(target, { a: f32([1], [1]) }));
    assert.deepEqual(listing(dir), ['is-a-dir', 'keep']);
  });

  test('fails cleanly when the folder does not exist', async () => {
    await assert.rejects(writeSafetensors(join(tmpDir(), 'no', 'such.safetensors'), { a: f32([1], [1]) }), /ENOENT/);
  });
});
