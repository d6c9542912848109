/**
 * PyTorch checkpoints (pytorch_model.bin) read without running their pickle: torch.save's zip layout
 * and the legacy one, every dtype, strided views, storages shared between names, sharded indexes,
 * and a pickle that would run a command. The fixtures are pickled by Python's own pickle module with
 * the object graph torch.save writes (test/fixtures/torch/make_fixtures.py); bert-cls-tiny's
 * converted weights give transformers' reference logits.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { CheckpointReader } from '../../sidecar/src/io/checkpoint';
import { unpickle } from '../../sidecar/src/io/pickle';
import { readSafetensors, toFloat32 } from '../../sidecar/src/io/safetensors';
import { TorchCheckpointFile } from '../../sidecar/src/io/torch-checkpoint';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, fixture, useTestBackend } from '../helpers/numeric';

const HERE = join(__dirname, '..', 'fixtures', 'torch');
const expected = JSON.parse(readFileSync(join(HERE, 'mixed.expected.json'), 'utf8')) as Record<string, unknown>;
const flat = (v: unknown): number[] => (Array.isArray(v) ? v.flatMap(flat) : [v as number]);

describe('PyTorch checkpoints (pytorch_model.bin)', () => {
  let root = '';
  before(async () => {
    await useTestBackend();
    root = mkdtempSync(join(tmpdir(), 'peft-lab-torch-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  for (const file of ['mixed.bin', 'mixed-legacy.bin']) {
    it(`${file}: every tensor with its dtype, shape and values (views at an offset, a transposed view, two names on one storage)`, async () => {
      const f = await TorchCheckpointFile.open(join(HERE, file));
      try {
        assert.deepEqual(f.names(), Object.keys(expected).sort());
        const dtypes = Object.fromEntries(f.names().map((n) => [n, f.entries.get(n)!.dtype]));
        assert.deepEqual(dtypes, { bf16: 'BF16', half: 'F16', ids: 'I64', mask: 'BOOL', scalar: 'F32', tail: 'F32', tied: 'F32', w: 'F32', w_t: 'F32' });
        assert.deepEqual(f.entries.get('w_t')!.shape, [3, 2]);
        assert.deepEqual(f.entries.get('scalar')!.shape, []);
        for (const [name, want] of Object.entries(expected)) {
          const t = await f.read(name);
          const got = t.dtype === 'I64' ? Array.from(t.data as BigInt64Array, Number) : Array.from(toFloat32(t));
          assert.deepEqual(got, flat(want).map((x) => (t.dtype === 'F32' ? Math.fround(x) : x)), name);
        }
      } finally {
        await f.close();
      }
    });
  }

  it('bert-cls-tiny from pytorch_model.bin: the logits transformers computed (as from model.safetensors)', async () => {
    const model = await Model.load(join(HERE, 'bert-cls-tiny-bin'));
    const refs = await readSafetensors(fixture('hf', 'bert-cls-tiny', 'refs.safetensors'));
    try {
      const ids = refs.get('input_ids')!;
      const mask = refs.get('attention_mask');
      const shape = ids.shape as [number, number];
      const toInt = (d: unknown) => Int32Array.from(d as BigInt64Array, Number);
      const logits = tf.tidy(() =>
        model.forward({ inputIds: tf.tensor2d(toInt(ids.data), shape, 'int32'), ...(mask ? { attentionMask: tf.tensor2d(toInt(mask.data), shape, 'int32') } : {}) }).dataSync() as Float32Array,
      );
      assertClose('logits', logits, toFloat32(refs.get('logits')!), 1e-4);
    } finally {
      model.dispose();
    }
  });

  it('a PEFT adapter saved before safetensors (adapter_model.bin) loads as its safetensors twin does', async () => {
    const model = await Model.load(fixture('hf', 'gpt2-tiny'));
    const ids = tf.tensor2d([[3, 17, 5, 9, 40, 2]], [1, 6], 'int32');
    try {
      const logits = async (dir: string) => {
        const adapter = await loadPeftAdapter(model, dir);
        try {
          return tf.tidy(() => model.forward({ inputIds: ids }, { hooks: adapter.hooks, overrides: adapter.overrides() }).dataSync() as Float32Array);
        } finally {
          adapter.dispose();
        }
      };
      const fromBin = await logits(join(HERE, 'gpt2-tiny-lora-bin'));
      assert.deepEqual(Array.from(fromBin), Array.from(await logits(fixture('peft', 'gpt2-tiny-lora'))));
      const base = tf.tidy(() => model.forward({ inputIds: ids }).dataSync() as Float32Array);
      assert.ok(fromBin.some((v, i) => Math.abs(v - base[i]!) > 1e-3), 'the adapter changes the logits');
    } finally {
      ids.dispose();
      model.dispose();
    }
  });

  it('sharded: pytorch_model.bin.index.json and its shards, read as one checkpoint', async () => {
    const reader = await CheckpointReader.open(join(HERE, 'sharded'));
    try {
      assert.deepEqual(reader.names(), ['bf16', 'half', 'ids', 'mask', 'tail', 'w', 'w_t']);
      assert.deepEqual(Array.from(await reader.readFloat32('w_t')), flat(expected.w_t).map(Math.fround));
      assert.equal(reader.entry('tail').file, 'pytorch_model-00002-of-00002.bin');
    } finally {
      await reader.close();
    }
  });

  it('model.safetensors wins over pytorch_model.bin in the same folder (as transformers prefers it)', async () => {
    const dir = join(root, 'both');
    cpSync(join(HERE, 'bert-cls-tiny-bin'), dir, { recursive: true });
    cpSync(fixture('hf', 'bert-cls-tiny', 'model.safetensors'), join(dir, 'model.safetensors'));
    const reader = await CheckpointReader.open(dir);
    try {
      assert.deepEqual(reader.files().map((f) => f.name), ['model.safetensors']);
    } finally {
      await reader.close();
    }
  });

  it('refuses what a state dict is not: a pickle that would run a command (nothing runs), a damaged archive, an unknown opcode', async () => {
    await assert.rejects(TorchCheckpointFile.open(join(HERE, 'evil.bin')), /evil\.bin.*refers to (posix|os)\.system, which a plain state dict does not/);
    const damaged = join(root, 'damaged.bin');
    const bytes = readFileSync(join(HERE, 'mixed.bin'));
    writeFileSync(damaged, bytes.subarray(0, bytes.length - 30));
    await assert.rejects(TorchCheckpointFile.open(damaged), /damaged\.bin: not a readable PyTorch state dict/);
    assert.throws(() => unpickle(Uint8Array.from([0x80, 0x02, 0xff]), () => null), /unsupported pickle opcode 0xff at offset 2/);
    const noFile = join(root, 'none');
    await assert.rejects(CheckpointReader.open(noFile), /no model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin or pytorch_model\.bin\.index\.json/);
  });
});
