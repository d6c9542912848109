/**
 * RoBERTa / XLM-RoBERTa sequence classifiers. No transformers fixture exists for them, but a RoBERTa
 * is BERT with its positions moved to pad_token_id + 1, + 2, … and its head (dense → tanh → out_proj)
 * in place of BERT's pooler + classifier. So bert-cls-tiny, rewritten into RoBERTa's layout (position
 * rows shifted, pooler → classifier.dense, classifier → classifier.out_proj), must give transformers'
 * own BERT logits, loss and gradients: a reference from transformers, not from this project.
 */
import * as tf from '@tensorflow/tfjs-core';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAdapter, withFreshHeads } from '../../sidecar/src/adapters';
import { f32, readSafetensors, toFloat32, toInt32, writeSafetensors, type HostTensor } from '../../sidecar/src/io/safetensors';
import { parseConfig, type BertConfig } from '../../sidecar/src/models/config';
import { inputLimits } from '../../sidecar/src/models/input-limits';
import { Model } from '../../sidecar/src/models/model';
import { assertClose, assertNoLeak, fixture, useTestBackend } from '../helpers/numeric';

const BERT = fixture('hf', 'bert-cls-tiny');
const bertConfig = JSON.parse(readFileSync(join(BERT, 'config.json'), 'utf8')) as Record<string, unknown>;
/** An id none of the fixture's inputs uses (RoBERTa would read it as padding). */
const PAD = 127;
const FIRST = PAD + 1;

/** BERT's name of each RoBERTa parameter (position rows aside). */
const bertName = (n: string) =>
  n.replace(/^roberta\./, 'bert.').replace(/^classifier\.dense\./, 'bert.pooler.dense.').replace(/^classifier\.out_proj\./, 'classifier.');

describe('RoBERTa / XLM-RoBERTa classifiers equal transformers’ BERT moved into their layout', () => {
  let root = '';
  let bert: Map<string, HostTensor>;
  let refs: Map<string, HostTensor>;
  let ids: tf.Tensor2D;
  let labels: tf.Tensor1D;
  const maxPositions = (bertConfig.max_position_embeddings as number) + FIRST;

  /** Writes bert-cls-tiny as a `modelType` checkpoint; returns its folder. */
  async function write(modelType: 'roberta' | 'xlm-roberta'): Promise<string> {
    const dir = join(root, modelType);
    const out = new Map<string, HostTensor>();
    for (const [n, t] of bert) {
      if (n.startsWith('bert.pooler.') || n.startsWith('classifier.')) continue;
      out.set(n.replace(/^bert\./, 'roberta.'), t);
    }
    const pos = toFloat32(bert.get('bert.embeddings.position_embeddings.weight')!);
    const d = bertConfig.hidden_size as number;
    // Rows below pad + 1 are never read by real tokens: a marker value that would show if they were.
    const shifted = new Float32Array(maxPositions * d).fill(7);
    shifted.set(pos, FIRST * d);
    out.set('roberta.embeddings.position_embeddings.weight', f32([maxPositions, d], shifted));
    for (const [from, to] of [['bert.pooler.dense', 'classifier.dense'], ['classifier', 'classifier.out_proj']])
      for (const k of ['weight', 'bias']) out.set(`${to}.${k}`, bert.get(`${from}.${k}`)!);
    const { architectures: _a, ...rest } = bertConfig;
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...rest, model_type: modelType, pad_token_id: PAD, max_position_embeddings: maxPositions }));
    await writeSafetensors(join(dir, 'model.safetensors'), out);
    return dir;
  }

  before(async () => {
    await useTestBackend();
    root = mkdtempSync(join(tmpdir(), 'peft-lab-roberta-'));
    bert = await readSafetensors(join(BERT, 'model.safetensors'));
    refs = await readSafetensors(join(BERT, 'refs.safetensors'));
    const input = refs.get('input_ids')!;
    assert.ok(!toInt32(input).includes(PAD), 'the pad id is unused by the inputs');
    ids = tf.tensor2d(toInt32(input), input.shape as [number, number], 'int32');
    labels = tf.tensor1d(toInt32(refs.get('labels')!), 'int32');
  });
  after(() => {
    tf.dispose([ids, labels]);
    rmSync(root, { recursive: true, force: true });
  });

  for (const type of ['roberta', 'xlm-roberta'] as const) {
    it(`${type}: logits, loss and every gradient equal transformers’ BERT ones (positions shifted by pad + 1), without leaks`, async () => {
      const model = await Model.load(await write(type));
      try {
        assert.equal(model.config.architecture, type === 'roberta' ? 'RobertaForSequenceClassification' : 'XLMRobertaForSequenceClassification');
        const logits = tf.tidy(() => model.forward({ inputIds: ids }).dataSync() as Float32Array);
        assertClose('logits', logits, toFloat32(refs.get('logits')!), 1e-4);
        const names = [...model.params.keys()];
        const globalMax = Math.max(...[...refs].filter(([k]) => k.startsWith('grad.')).map(([, t]) => Math.max(...toFloat32(t).map(Math.abs))));
        await assertNoLeak(() => {
          const { loss, grads } = model.lossAndGrads(names, { inputIds: ids }, labels);
          assertClose('loss', loss.dataSync(), toFloat32(refs.get('loss')!), 1e-4);
          const d = model.config.hiddenSize;
          for (const n of names) {
            let want = toFloat32(refs.get(`grad.${bertName(n)}`)!);
            let got = grads.get(n)!.dataSync() as Float32Array;
            if (n.endsWith('position_embeddings.weight')) {
              // Rows before pad + 1 get nothing; the rest are BERT's rows.
              assert.ok(got.subarray(0, FIRST * d).every((x) => x === 0), 'no gradient below pad + 1');
              got = got.subarray(FIRST * d, FIRST * d + want.length);
            }
            if (n.endsWith('word_embeddings.weight')) {
              // BERT's padding_idx is 0, RoBERTa's here 127: compare the rows neither zeroes.
              want = want.slice(d, PAD * d);
              got = got.slice(d, PAD * d);
            }
            // As in hf.parity: key biases' gradients are analytically zero (rounding noise in PyTorch), so a noise floor of 1e-6 of the largest gradient.
            const scale = Math.max(...want.map(Math.abs), 1e-6 * globalMax);
            const worst = got.reduce((m, x, i) => Math.max(m, Math.abs(x - want[i]!)), 0);
            assert.ok(worst <= 1e-3 * scale, `grad ${n}: max|Δ| ${worst.toExponential(3)} > 1e-3 × ${scale.toExponential(3)}`);
          }
          tf.dispose([loss, ...grads.values()]);
        });
      } finally {
        model.dispose();
      }
    });
  }

  it('right padding with an attention mask leaves each row’s logits as they are alone (pads sit at position pad, masked out)', async () => {
    const model = await Model.load(await write('roberta'));
    try {
      const rows = Array.from(ids.arraySync() as number[][]);
      const lengths = [12, 7, 9, 4];
      const padded = rows.map((r, i) => [...r.slice(0, lengths[i]), ...new Array<number>(12 - lengths[i]!).fill(PAD)]);
      const mask = lengths.map((n) => Array.from({ length: 12 }, (_, j) => (j < n ? 1 : 0)));
      const batch = tf.tidy(() => model.forward({ inputIds: tf.tensor2d(padded, [4, 12], 'int32'), attentionMask: tf.tensor2d(mask, [4, 12], 'int32') }).dataSync() as Float32Array);
      for (const [i, n] of lengths.entries()) {
        const alone = tf.tidy(() => model.forward({ inputIds: tf.tensor2d([rows[i]!.slice(0, n)], [1, n], 'int32') }).dataSync() as Float32Array);
        assertClose(`row ${i}`, batch.subarray(i * 3, i * 3 + 3), alone, 1e-5);
      }
    } finally {
      model.dispose();
    }
  });

  it('config: RobertaConfig defaults, lengths counted past pad + 1, PEFT targets and the head saved with the adapter', async () => {
    const parse = (patch: Record<string, unknown>) =>
      parseConfig({ model_type: 'roberta', hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 2, intermediate_size: 128, vocab_size: 50265, max_position_embeddings: 514, ...patch }, '/m/config.json') as BertConfig;
    const c = parse({});
    assert.deepEqual([c.padTokenId, c.prefix, c.positionsAfterPadding, c.typeVocabSize, c.numLabels], [1, 'roberta', true, 2, 2]);
    assert.deepEqual(inputLimits(c).positions, { max: 512, key: 'max_position_embeddings' });
    assert.throws(() => parse({ pad_token_id: null }), /pad_token_id.*a pad_token_id is needed/);
    assert.throws(() => parse({ max_position_embeddings: 2 }), /max_position_embeddings.*positions start at pad_token_id \+ 1 = 2/);
    const model = await Model.load(await write('roberta'));
    try {
      const lora = await createAdapter(model, { kind: 'lora', r: 2, alpha: 4 }, { seed: 1 });
      const kinds = [...lora.trainable.keys()].map((n) => n.replace(/^roberta\.encoder\.layer\.\d+\./, ''));
      // PEFT's roberta targets (query, value) and its SEQ_CLS rule: the classifier head trains whole.
      assert.deepEqual([...new Set(kinds)].sort(), [
        'attention.self.query.lora_A.weight',
        'attention.self.query.lora_B.weight',
        'attention.self.value.lora_A.weight',
        'attention.self.value.lora_B.weight',
        'classifier.dense.bias',
        'classifier.dense.weight',
        'classifier.out_proj.bias',
        'classifier.out_proj.weight',
      ]);
      lora.dispose();
    } finally {
      model.dispose();
    }
  });
  it('a RoBERTa base without its head: LN-tuning trains the fresh classifier under PEFT’s SEQ_CLS rule (modules_to_save "classifier", nothing nested in it)', async () => {
    const dir = await write('roberta');
    const w = await readSafetensors(join(dir, 'model.safetensors'));
    for (const n of ['classifier.dense.weight', 'classifier.dense.bias', 'classifier.out_proj.weight', 'classifier.out_proj.bias']) w.delete(n);
    await writeSafetensors(join(dir, 'model.safetensors'), w);
    const model = await Model.load(dir);
    try {
      assert.equal(model.freshHeads.length, 4);
      assert.equal(withFreshHeads(model, { kind: 'ln-tuning' }).modulesToSave, undefined, 'PEFT already saves "classifier"');
      assert.deepEqual(withFreshHeads(model, { kind: 'bitfit' }).modulesToSave, ['classifier.dense', 'classifier.out_proj']);
      const a = await createAdapter(model, { kind: 'ln-tuning' }, { seed: 1 });
      assert.deepEqual([...a.trainable.keys()].filter((n) => n.startsWith('classifier.')).sort(), ['classifier.dense.bias', 'classifier.dense.weight', 'classifier.out_proj.bias', 'classifier.out_proj.weight']);
      a.dispose();
    } finally {
      model.dispose();
    }
  });
});
