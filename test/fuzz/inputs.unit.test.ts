/**
 * Fuzzing the readers of untrusted files: safetensors and config.json. Every case must end in a
 * valid result or a clear one-line error naming the file, within a time bound, never a crash or hang.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readSafetensors, SafetensorsFile, toFloat32 } from '../../sidecar/src/io/safetensors';
import { Model } from '../../sidecar/src/models/model';
import { fuzzCases, int, pick, rng, Tally } from '../helpers/fuzz';
import { fixture, useTestBackend } from '../helpers/numeric';

const tmp = mkdtempSync(join(tmpdir(), 'peft-fuzz-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Splits a safetensors file into its header JSON and data buffer. */
function parts(bytes: Buffer): { header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>; data: Buffer } {
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')), data: bytes.subarray(8 + n) };
}
function assemble(headerText: string, data: Buffer, lengthOverride?: bigint): Buffer {
  const h = Buffer.from(headerText, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

type Mutation = (r: () => number, src: Buffer) => Buffer;
const SAFETENSORS_MUTATIONS: Record<string, Mutation> = {
  truncate: (r, src) => src.subarray(0, int(r, 0, src.length - 1)),
  headerLengthPastEnd: (r, src) => { const b = Buffer.from(src); b.writeBigUInt64LE(BigInt(src.length + int(r, 1, 1 << 20))); return b; },
  headerLengthHuge: (r, src) => { const b = Buffer.from(src); b.writeBigUInt64LE(pick(r, [2n ** 63n, 2n ** 64n - 1n, 10n ** 12n, 100_000_001n])); return b; },
  headerLengthZero: (_r, src) => { const b = Buffer.from(src); b.writeBigUInt64LE(0n); return b; },
  invalidJson: (r, src) => { const { data } = parts(src); const n = Number(src.readBigUInt64LE(0)); const text = src.subarray(8, 8 + n).toString(); const cut = int(r, 0, text.length - 1); return assemble(text.slice(0, cut) + pick(r, ['}', '{', '"', ',', '\u0000', ']']) + text.slice(cut + 1), data); },
  randomBytes: (r, src) => { const b = Buffer.from(src); for (let i = 0; i < int(r, 1, 16); i++) b[int(r, 0, b.length - 1)] = int(r, 0, 255); return b; },
  unknownDtype: (r, src) => mutateEntry(r, src, (e) => { e.dtype = pick(r, ['F8', 'U64', 'float32', '', 'C64', 'F4']); }),
  shapeMismatch: (r, src) => mutateEntry(r, src, (e) => { e.shape = e.shape.length ? e.shape.map((d) => d + int(r, 1, 3)) : [2]; }),
  badShape: (r, src) => mutateEntry(r, src, (e) => { (e as { shape: unknown }).shape = pick(r, [[-1], [1.5], ['3'], null, [2 ** 60, 2 ** 60], {}]); }),
  overlappingOffsets: (r, src) => mutateEntry(r, src, (e) => { const d = int(r, 1, 8); e.data_offsets = [Math.max(0, e.data_offsets[0] - d), e.data_offsets[1] - d]; }),
  outOfRangeOffsets: (r, src) => mutateEntry(r, src, (e) => { const d = int(r, 4, 1 << 30); e.data_offsets = [e.data_offsets[0] + d, e.data_offsets[1] + d]; }),
  badOffsets: (r, src) => mutateEntry(r, src, (e) => { (e as { data_offsets: unknown }).data_offsets = pick(r, [[5, 1], [-4, 0], [0], 'x', [0.5, 4], null]); }),
  badMetadata: (r, src) => { const { header, data } = parts(src); (header as Record<string, unknown>).__metadata__ = pick(r, [{ a: 1 }, 'x', [1], { b: null }]); return assemble(JSON.stringify(header), data); },
  nanPayload: (r, src) => { const { header, data } = parts(src); const d = Buffer.from(data); const f32 = new Float32Array(d.buffer, d.byteOffset, Math.floor(d.length / 4)); for (let i = 0; i < int(r, 1, 64); i++) f32[int(r, 0, f32.length - 1)] = pick(r, [NaN, Infinity, -Infinity]); return assemble(JSON.stringify(header), d); },
  extraTrailingBytes: (r, src) => Buffer.concat([src, Buffer.alloc(int(r, 1, 64))]),
};

function mutateEntry(r: () => number, src: Buffer, f: (e: { dtype: string; shape: number[]; data_offsets: [number, number] }) => void): Buffer {
  const { header, data } = parts(src);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  f(header[pick(r, names)]!);
  return assemble(JSON.stringify(header), data);
}

describe('fuzz: safetensors reader', () => {
  const sources = [readFileSync(fixture('hf', 'gpt2-tiny', 'refs.safetensors')), readFileSync(fixture('peft', 'llama-tiny-lora', 'adapter_model.safetensors'))];
  const tally = new Tally('safetensors');
  after(() => process.stderr.write(`${tally.summary()}\n`));

  it(`${fuzzCases(2000)} mutated files each read cleanly or fail with a one-line SafetensorsError`, async () => {
    const r = rng(2026);
    const kinds = Object.keys(SAFETENSORS_MUTATIONS);
    const file = join(tmp, 'fuzz.safetensors');
    for (let i = 0; i < fuzzCases(2000); i++) {
      const kind = kinds[i % kinds.length]!;
      const bytes = SAFETENSORS_MUTATIONS[kind]!(r, pick(r, sources));
      writeFileSync(file, bytes);
      const t0 = performance.now();
      try {
        const tensors = await readSafetensors(file);
        for (const t of tensors.values()) if (t.dtype !== 'I64') toFloat32(t);
        tally.ok();
      } catch (e) {
        tally.error(e, file, ['SafetensorsError'], `case ${i} (${kind})`);
      }
      assert.ok(performance.now() - t0 < 2000, `case ${i} (${kind}) took over 2 s`);
    }
    // Every family must have produced at least some errors (the mutations are not no-ops).
    assert.ok((tally.counts.get('SafetensorsError') ?? 0) > fuzzCases(2000) / 2);
  });

  it('a reader on a valid file keeps working after a failed one (no shared state)', async () => {
    await assert.rejects(SafetensorsFile.open(join(tmp, 'does-not-exist.safetensors')), /does-not-exist/);
    const ok = await readSafetensors(fixture('hf', 'gpt2-tiny', 'refs.safetensors'));
    assert.ok(ok.has('logits'));
  });
});

describe('fuzz: config.json and model load', () => {
  const tally = new Tally('config.json');
  const base = JSON.parse(readFileSync(fixture('hf', 'llama-tiny', 'config.json'), 'utf8')) as Record<string, unknown>;
  const gpt2 = JSON.parse(readFileSync(fixture('hf', 'gpt2-tiny', 'config.json'), 'utf8')) as Record<string, unknown>;
  const dirs = { llama: join(tmp, 'llama'), gpt2: join(tmp, 'gpt2') };
  before(async () => {
    await useTestBackend();
    for (const [k, d] of Object.entries(dirs)) {
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d);
      copyFileSync(fixture('hf', `${k}-tiny`, 'model.safetensors'), join(d, 'model.safetensors'));
    }
  });
  after(() => process.stderr.write(`${tally.summary()}\n`));

  const VALUES: unknown[] = [null, -1, 0, 3, 7, 1.5, '64', true, [], {}, 1e9, 'gelu', 'swish', 'bogus'];
  it(`${fuzzCases(600)} mutated configs load (and compute finite logits) or fail with an InputError naming config.json`, async () => {
    const r = rng(7);
    const ids = tf.tensor2d([[1, 2, 3, 4]], [1, 4], 'int32');
    try {
      for (let i = 0; i < fuzzCases(600); i++) {
        const which = pick(r, ['llama', 'gpt2'] as const);
        const cfg = structuredClone(which === 'llama' ? base : gpt2);
        const keys = Object.keys(cfg);
        for (let m = 0; m < int(r, 1, 3); m++) {
          const k = pick(r, keys);
          if (r() < 0.3) delete cfg[k];
          else cfg[k] = pick(r, VALUES);
        }
        if (r() < 0.1) cfg.model_type = pick(r, ['t5', '', 42, 'bert']);
        const dir = dirs[which];
        const file = join(dir, 'config.json');
        writeFileSync(file, r() < 0.03 ? '{"model_type": "llama",' : JSON.stringify(cfg));
        let model: Model | undefined;
        try {
          model = await Model.load(dir);
          const logits = tf.tidy(() => model!.forward({ inputIds: ids }));
          const finite = (await logits.data()).every(Number.isFinite);
          logits.dispose();
          assert.ok(finite, `case ${i}: a config that loads must compute finite logits`);
          tally.ok();
        } catch (e) {
          // A shape mismatch names the checkpoint (whose tensors no longer fit the config); the rest name config.json.
          const named = (e as Error).message.includes('model.safetensors') ? join(dir, 'model.safetensors') : file;
          tally.error(e, named, ['InputError'], `case ${i}`);
        } finally {
          model?.dispose();
        }
      }
    } finally {
      ids.dispose();
    }
  });
});
