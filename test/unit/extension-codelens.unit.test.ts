/** Where the spec CodeLenses go and which appear (src/extension/model/codelens.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lensTitle, specLenses } from '../../src/extension/model/codelens';

const kinds = (text: string, running?: { done: number; total: number }) => specLenses(text, running).map((l) => l.kind);

describe('spec CodeLenses', () => {
  it('sits above the root object, after leading blank lines', () => {
    const lenses = specLenses('\n\n  {\n  "model": "m",\n  "data": {"train": "t"},\n  "adapter": {"kind": "lora"}\n}\n');
    assert.deepEqual(
      lenses.map((l) => [l.kind, l.position]),
      [
        ['train', { line: 2, character: 0 }],
        ['score', { line: 2, character: 0 }],
      ],
    );
    assert.equal(lenses[0]!.title, '▶ Fine-tune');
  });

  it('offers Compare variants when the spec lists variants, and Fine-tune only with an adapter', () => {
    assert.deepEqual(kinds('{"model":"m","data":{"train":"t"},"variants":[{"name":"a","adapter":{"kind":"ia3"}}]}'), ['score', 'compare']);
    assert.deepEqual(kinds('{"model":"m","data":{"train":"t"},"adapter":{"kind":"lora"},"variants":[]}'), ['train', 'score', 'compare']);
  });

  it('keeps Fine-tune on a spec too broken to tell (the run reports what is wrong)', () => {
    assert.deepEqual(kinds('{"model": "m", "adapter": '), ['train', 'score']);
    assert.deepEqual(kinds(''), ['train', 'score']);
    assert.equal(specLenses('  \n').at(0)?.position.line, 0);
    // A nested "variants" does not count.
    assert.deepEqual(kinds('{"data":{"variants":1},"adapter":{"kind":"lora"}}'), ['train', 'score']);
  });

  it('shows progress and Cancel while a fine-tune of the spec runs', () => {
    const lenses = specLenses('{"adapter":{"kind":"lora"}}', { done: 120, total: 500 });
    assert.deepEqual(
      lenses.map((l) => l.kind),
      ['running', 'cancel', 'score'],
    );
    assert.equal(lenses[0]!.title, '$(sync~spin) Fine-tuning 120/500');
    assert.equal(lensTitle('running', { done: 0, total: 0 }), '$(sync~spin) Fine-tuning…');
  });
});
