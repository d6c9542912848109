/**
 * Where editor-started runs go (src/extension/model/run-plan.ts): the same folder names as the
 * sidecar's `newRunDir` and the same default run name as its spec loader, the runs-folder setting's
 * variables, and the inputs of "Score layers".
 */
import assert from 'node:assert/strict';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseSpecText } from '../../sidecar/src/spec/load';
import { newRunDir } from '../../sidecar/src/train/run-folder';
import { expandPath, planImportance, planRunDir, specName } from '../../src/extension/model/run-plan';

const now = new Date(2025, 0, 2, 3, 4, 5);

describe('run folder plan', () => {
  it("names a spec's runs as the sidecar does", () => {
    for (const file of ['/ws/addition-lora.peft.json', '/ws/My Spec!.peft.json', '/ws/__x.json', '/ws/.peft.json']) {
      const spec = parseSpecText('{"model":"m","data":{"train":"t.jsonl"},"adapter":{"kind":"lora"}}', file).spec;
      assert.equal(specName(file), spec?.name, file);
    }
  });

  it('picks the folder the sidecar would: <runsDir>/<name>-<stamp>, suffixed when taken', () => {
    const specFile = '/ws/specs/a.peft.json';
    const taken = new Set(['/ws/specs/runs/a-20250102-030405']);
    const exists = (p: string) => taken.has(p);
    assert.equal(planRunDir({ specFile, specText: '{}', now, exists: () => false }), newRunDir('/ws/specs/runs', 'a', now));
    assert.equal(planRunDir({ specFile, specText: '{}', now, exists: () => false }), '/ws/specs/runs/a-20250102-030405');
    assert.equal(planRunDir({ specFile, specText: '{}', now, exists }), '/ws/specs/runs/a-20250102-030405-2');
    assert.equal(planRunDir({ specFile, specText: '{"name":"exp1","runsDir":"../out"}', now, exists }), '/ws/out/exp1-20250102-030405');
    assert.equal(planRunDir({ specFile, specText: '{"name":"exp1"}', runsFolder: '/ws/.peft-lab/runs', now, exists }), '/ws/.peft-lab/runs/exp1-20250102-030405');
  });

  it("names a comparison's folder as the sidecar does (compare-<name>-<time>)", () => {
    const specFile = '/ws/specs/a.peft.json';
    const taken = new Set(['/ws/specs/runs/compare-a-20250102-030405']);
    assert.equal(planRunDir({ specFile, specText: '{}', now, prefix: 'compare-', exists: () => false }), newRunDir('/ws/specs/runs', 'compare-a', now));
    assert.equal(planRunDir({ specFile, specText: '{}', now, prefix: 'compare-', exists: (p) => taken.has(p) }), '/ws/specs/runs/compare-a-20250102-030405-2');
  });

  it('leaves the folder to the sidecar when the spec cannot tell', () => {
    for (const text of ['', '{', '[]', '{"name":"bad name"}', '{"name":3}', '{"runsDir":""}']) assert.equal(planRunDir({ specFile: '/ws/a.peft.json', specText: text, now }), undefined, text);
  });

  it('expands ${workspaceFolder}, ~ and relative runs folders', () => {
    assert.equal(expandPath('${workspaceFolder}/.peft-lab/runs', '/ws'), '/ws/.peft-lab/runs');
    assert.equal(expandPath('.peft-lab/runs', '/ws'), '/ws/.peft-lab/runs');
    assert.equal(expandPath('~/runs', '/ws'), join(homedir(), 'runs'));
    assert.equal(expandPath('${userHome}/r', undefined), join(homedir(), 'r'));
    assert.equal(expandPath('/abs/runs/', undefined), '/abs/runs');
    assert.equal(expandPath('${workspaceFolder}/runs', undefined), undefined);
    assert.equal(expandPath('runs', undefined), undefined);
    assert.equal(expandPath('  ', '/ws'), undefined);
  });
});

describe('score layers plan', () => {
  it("uses the spec's model and training data, and writes beside its runs", () => {
    const plan = planImportance({
      specFile: '/ws/s/a.peft.json',
      specText: '{"model":"peft-lab/tiny-gpt","data":{"train":"data/t.jsonl"}}',
      bundledModelsDir: '/ext/media/models',
      now,
      exists: () => false,
    });
    assert.deepEqual(plan, { model: '/ext/media/models/tiny-gpt', data: '/ws/s/data/t.jsonl', out: '/ws/s/runs/importance-a-20250102-030405' });
    const local = planImportance({ specFile: '/ws/s/a.peft.json', specText: '{"name":"n","model":"../m","data":{"train":"t.jsonl"},"runsDir":"r"}', bundledModelsDir: '/x', now, exists: () => false });
    assert.deepEqual(local, { model: '/ws/m', data: '/ws/s/t.jsonl', out: '/ws/s/r/importance-n-20250102-030405' });
    // A Hugging Face id stays an id (the sidecar finds it in its cache), unless a folder of that name is beside the spec.
    const hub = (exists: (p: string) => boolean) => planImportance({ specFile: '/ws/s/a.peft.json', specText: '{"model":"Qwen/Qwen2.5-0.5B","data":{"train":"t.jsonl"}}', bundledModelsDir: '/x', now, exists });
    assert.equal((hub(() => false) as { model: string }).model, 'Qwen/Qwen2.5-0.5B');
    assert.equal((hub((p) => p === '/ws/s/Qwen/Qwen2.5-0.5B') as { model: string }).model, '/ws/s/Qwen/Qwen2.5-0.5B');
  });

  it('says why when the spec lacks a model or data', () => {
    assert.match(String(planImportance({ specFile: '/a.peft.json', specText: '{"data":{"train":"t"}}', bundledModelsDir: '/x' })), /no "model"/);
    assert.match(String(planImportance({ specFile: '/a.peft.json', specText: '{"model":"m"}', bundledModelsDir: '/x' })), /no "data.train"/);
    assert.match(String(planImportance({ specFile: '/a.peft.json', specText: '{', bundledModelsDir: '/x' })), /not a JSON object/);
  });
});
