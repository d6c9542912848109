/** Which files a spec's failure marked (src/extension/model/diagnostic-owners.ts): all of them clear when the spec runs again. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DiagnosticOwners } from '../../src/extension/model/diagnostic-owners';

describe('problems a failed run put on files', () => {
  it('clears the spec and the data files its failure marked when it runs again, once', () => {
    const o = new DiagnosticOwners();
    o.mark('/w/a.peft.json', '/w/data/train.jsonl');
    o.mark('/w/a.peft.json', '/w/data/eval.jsonl');
    assert.deepEqual(o.release('/w/a.peft.json'), ['/w/a.peft.json', '/w/data/train.jsonl', '/w/data/eval.jsonl']);
    assert.deepEqual(o.release('/w/a.peft.json'), ['/w/a.peft.json'], 'nothing left to clear but the spec');
  });

  it("leaves a file that another spec's later failure marked", () => {
    const o = new DiagnosticOwners();
    o.mark('/w/a.peft.json', '/w/data/train.jsonl');
    o.mark('/w/a.peft.json', '/w/a.peft.json');
    o.mark('/w/b.peft.json', '/w/data/train.jsonl');
    assert.deepEqual(o.release('/w/a.peft.json'), ['/w/a.peft.json']);
    assert.deepEqual(o.release('/w/b.peft.json'), ['/w/b.peft.json', '/w/data/train.jsonl']);
  });
});
