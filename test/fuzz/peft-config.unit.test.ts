/**
 * Fuzz: PEFT adapter folders of every type PEFT Lab loads (the PEFT-made fixtures), with one
 * setting of adapter_config.json changed to an odd value, removed, or a tensor of the file dropped.
 * Each load gives an adapter or an InputError naming a file of the folder, and leaves no tensor behind.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadPeftAdapter } from '../../sidecar/src/adapters/peft';
import { InputError } from '../../sidecar/src/errors';
import { readSafetensors, writeSafetensors } from '../../sidecar/src/io/safetensors';
import { Model } from '../../sidecar/src/models/model';
import { fixture, useTestBackend } from '../helpers/numeric';

const FIXTURES = join(__dirname, '..', 'fixtures');
const SOURCES = [
  ...readdirSync(join(FIXTURES, 'peft-methods')).map((d) => join(FIXTURES, 'peft-methods', d)),
  ...readdirSync(join(FIXTURES, 'peft-adalora')).map((d) => join(FIXTURES, 'peft-adalora', d)),
  fixture('peft', 'llama-tiny-lora'),
  fixture('peft', 'gpt2-tiny-lora'),
];
const baseOf = (dir: string) => (/gpt2/.test(dir) ? 'gpt2-tiny' : /bert/.test(dir) ? 'bert-cls-tiny' : 'llama-tiny');
const VALUES: unknown[] = [null, -1, 0, 1, 2, 3.5, 1e9, -1e9, 'x', '', '.*', '(', [], [0], [1, 1], ['q_proj'], {}, { a: 1 }, { 'q_proj.lora_E': [true] }, true, false];
const N = Number(process.env.FUZZ_CASES ?? 240);

describe('fuzz: PEFT adapter folders', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'fuzz-peft-'));
  const models = new Map<string, Model>();
  before(async () => {
    await useTestBackend();
    for (const m of ['gpt2-tiny', 'bert-cls-tiny', 'llama-tiny']) models.set(m, await Model.load(fixture('hf', m)));
  });
  after(() => {
    for (const m of models.values()) m.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it(`${N} mutated folders load or fail with an InputError naming a file of the folder, without leaking tensors`, async () => {
    let seed = Number(process.env.FUZZ_SEED ?? 12345);
    const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
    let loaded = 0;
    for (let i = 0; i < N; i++) {
      const src = SOURCES[rand(SOURCES.length)]!;
      const dir = join(tmp, `case-${i}`);
      cpSync(src, dir, { recursive: true });
      const cfgFile = join(dir, 'adapter_config.json');
      const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
      const keys = Object.keys(cfg);
      const what = rand(10);
      let change: string;
      if (what < 7) {
        const k = keys[rand(keys.length)]!;
        cfg[k] = VALUES[rand(VALUES.length)];
        change = `${k} = ${JSON.stringify(cfg[k])}`;
      } else if (what < 9) {
        const k = keys[rand(keys.length)]!;
        delete cfg[k];
        change = `without ${k}`;
      } else {
        const file = join(dir, 'adapter_model.safetensors');
        const t = await readSafetensors(file);
        const k = [...t.keys()][rand(t.size)]!;
        t.delete(k);
        await writeSafetensors(file, t);
        change = `without tensor ${k}`;
      }
      writeFileSync(cfgFile, JSON.stringify(cfg));
      const model = models.get(baseOf(src))!;
      const before = tf.memory().numTensors;
      try {
        const a = await loadPeftAdapter(model, dir);
        a.dispose();
        loaded++;
      } catch (e) {
        assert.ok(e instanceof InputError, `${src.split('/').slice(-1)[0]} with ${change}: ${String(e)}`);
        assert.ok(e.file.startsWith(dir), `${change}: the error names ${e.file}, not a file of the folder`);
      }
      assert.equal(tf.memory().numTensors, before, `${src.split('/').slice(-1)[0]} with ${change}: tensors left behind`);
      rmSync(dir, { recursive: true, force: true });
    }
    assert.ok(loaded > 0 && loaded < N, `some mutations load (${loaded}), some do not`);
  });
});
