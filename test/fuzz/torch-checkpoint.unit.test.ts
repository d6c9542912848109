/**
 * Fuzzing the PyTorch checkpoint reader (sidecar/src/io/pickle.ts, zip.ts, torch-checkpoint.ts): the
 * fixtures of test/fixtures/torch mutated (bytes flipped or overwritten, the file cut short, runs of
 * random bytes) and crafted pickles that loop, compute or allocate (a negative string length, a
 * megabyte-long integer, a list of a million appends, a stride-0 view claiming 2^28 floats, an
 * overlapping view, a storage key of two sizes). Every case must end within a CPU-time bound, either
 * reading tensors no larger than the file or with a one-line SafetensorsError naming the file.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { PickleError, unpickle } from '../../sidecar/src/io/pickle';
import { TorchCheckpointFile } from '../../sidecar/src/io/torch-checkpoint';
import { fuzzCases, int, pick, rng, Tally } from '../helpers/fuzz';

const HERE = join(__dirname, '..', 'fixtures', 'torch');
const root = mkdtempSync(join(tmpdir(), 'peft-fuzz-torch-'));
after(() => rmSync(root, { recursive: true, force: true }));

const cpuMs = (t0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(t0);
  return (c.user + c.system) / 1000;
};

/** Opens `file` and reads every tensor; the bytes read, or the error. */
async function readAll(file: string): Promise<number> {
  const f = await TorchCheckpointFile.open(file);
  try {
    let bytes = 0;
    for (const n of f.names()) bytes += (await f.read(n)).data.byteLength;
    return bytes;
  } finally {
    await f.close();
  }
}

async function check(tally: Tally, file: string, caseId: string): Promise<void> {
  const t0 = process.cpuUsage();
  try {
    const bytes = await readAll(file);
    // Strided views may repeat no element, so what is read never outgrows the file (a stored tensor
    // may still be read twice under two names).
    assert.ok(bytes <= 4 * readFileSync(file).length, `${caseId}: read ${bytes} bytes from a file of ${readFileSync(file).length}`);
    tally.ok();
  } catch (e) {
    tally.error(e, file, ['SafetensorsError'], caseId);
  }
  assert.ok(cpuMs(t0) < 3000, `${caseId}: took ${cpuMs(t0)} ms of CPU`);
}

describe('fuzzing PyTorch checkpoints', () => {
  it('crafted pickles and files end quickly in a named refusal', async () => {
    const tally = new Tally('crafted');
    const bytes = (...parts: number[][]) => Uint8Array.from(parts.flat());
    // BINSTRING of length −5 (signed): once moved the reader backwards forever.
    assert.throws(() => unpickle(bytes([0x80, 0x02, 0x54, 0xfb, 0xff, 0xff, 0xff, 0x2e]), () => null), (e: Error) => e instanceof PickleError && /a length of -5/.test(e.message));
    // A LONG4 of a megabyte: once quadratic.
    const long = new Uint8Array(5 + (1 << 20) + 1);
    long.set([0x8b, 0, 0, 0x10, 0]);
    long[long.length - 1] = 0x2e;
    let t0 = process.cpuUsage();
    assert.throws(() => unpickle(long, () => null), /an integer of 1048576 bytes/);
    assert.ok(cpuMs(t0) < 1000);
    // A million APPENDS items: once overflowed the call stack.
    const appends = new Uint8Array(4 + 2 * 1_000_000 + 2);
    appends.set([0x5d, 0x28]);
    for (let i = 0; i < 1_000_000; i++) appends.set([0x4b, 7], 2 + 2 * i);
    appends.set([0x65, 0x2e], 2 + 2_000_000);
    t0 = process.cpuUsage();
    assert.equal((unpickle(appends, () => null).value as number[]).length, 1_000_000);
    assert.ok(cpuMs(t0) < 2000);
    for (const [file, why] of [
      ['expand.bin', /repeats elements of its storage/],
      ['overlap.bin', /repeats elements of its storage/],
      ['legacy-two-sizes.bin', /storage 1 is named with two sizes or types/],
    ] as const) {
      const path = join(HERE, 'bad', file);
      await assert.rejects(readAll(path), (e: Error) => e.name === 'SafetensorsError' && e.message.includes(path) && why.test(e.message));
      await check(tally, path, file);
    }
  });

  it('mutated zip and legacy checkpoints: read within the file’s size, or refused with the file named, quickly', async () => {
    const r = rng(20261127);
    const sources = ['mixed.bin', 'mixed-legacy.bin', 'evil.bin', 'sharded/pytorch_model-00002-of-00002.bin'].map((f) => readFileSync(join(HERE, f)));
    const tally = new Tally('mutated');
    const n = fuzzCases(1500);
    for (let c = 0; c < n; c++) {
      const src = pick(r, sources);
      const b = Buffer.from(src);
      let out: Buffer = b;
      switch (int(r, 0, 3)) {
        case 0: // flip bits
          for (let k = int(r, 1, 8); k > 0; k--) b[int(r, 0, b.length - 1)]! ^= 1 << int(r, 0, 7);
          break;
        case 1: // overwrite with extreme bytes
          for (let k = int(r, 1, 4); k > 0; k--) b[int(r, 0, b.length - 1)] = pick(r, [0x00, 0xff, 0x7f, 0x80, 0x2e, 0x28, 0x54, 0x8b]);
          break;
        case 2: // cut short
          out = b.subarray(0, int(r, 0, b.length - 1));
          break;
        default: // a run of random bytes
          for (let at = int(r, 0, b.length - 1), k = int(r, 1, 64); k > 0 && at < b.length; k--, at++) b[at] = int(r, 0, 255);
      }
      const file = join(root, `case-${c % 50}.bin`);
      writeFileSync(file, out);
      await check(tally, file, `case ${c}`);
    }
    console.log(tally.summary());
  });
});
