/**
 * Sidecar error lines → diagnostic ranges (src/extension/model/spec-errors.ts), including errors
 * produced by the sidecar's own spec loader, so the two sides cannot drift apart.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadSpec } from '../../sidecar/src/spec/load';
import { diagnosticRange, offsetAt, parseJsonPath, parseSpecError, positionAt, type Range } from '../../src/extension/model/spec-errors';

const dir = mkdtempSync(join(tmpdir(), 'peft-spec-errors-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const slice = (text: string, r: Range) => text.slice(offsetAt(text, r.start.line + 1, r.start.character + 1), offsetAt(text, r.end.line + 1, r.end.character + 1));

describe('parsing error lines', () => {
  it('reads file, JSON path and line:column', () => {
    assert.deepEqual(parseSpecError('/ws/a.peft.json (adapter.r at 4:37): must be ≥ 1, got 0 (and 2 more problems)'), {
      file: '/ws/a.peft.json',
      path: 'adapter.r',
      line: 4,
      column: 37,
      message: 'must be ≥ 1, got 0 (and 2 more problems)',
    });
  });
  it('reads a position without a path', () => {
    assert.deepEqual(parseSpecError('/ws/a.peft.json (3:1): JSON syntax error: comma expected'), { file: '/ws/a.peft.json', line: 3, column: 1, message: 'JSON syntax error: comma expected' });
  });
  it('reads a path without a position', () => {
    assert.deepEqual(parseSpecError('/ws/a.peft.json (variants): compare needs "variants"'), { file: '/ws/a.peft.json', path: 'variants', message: 'compare needs "variants"' });
  });
  it('reads data-file lines', () => {
    assert.deepEqual(parseSpecError('/ws/d.jsonl (line 5, field "completion"): the completion is empty'), {
      file: '/ws/d.jsonl',
      line: 5,
      path: 'field "completion"',
      message: 'the completion is empty',
    });
  });
  it('reads compiler-style file:line:col, Windows drive letters included', () => {
    assert.deepEqual(parseSpecError('/ws/a.peft.json:2:5: bad'), { file: '/ws/a.peft.json', line: 2, column: 5, message: 'bad' });
    assert.deepEqual(parseSpecError('C:\\ws\\a.peft.json:2:5: bad'), { file: 'C:\\ws\\a.peft.json', line: 2, column: 5, message: 'bad' });
  });
  it('keeps parentheses in folder names and messages', () => {
    assert.deepEqual(parseSpecError('/ws/my (copy)/a.peft.json (model at 2:12): no bundled model "x" (bundled: peft-lab/tiny-gpt)')?.file, '/ws/my (copy)/a.peft.json');
  });
  it('gives up on lines that name no file', () => {
    assert.equal(parseSpecError('something went wrong'), undefined);
    assert.equal(parseSpecError(''), undefined);
  });
  it('parses JSON paths', () => {
    assert.deepEqual(parseJsonPath('variants[1].adapter.r'), ['variants', 1, 'adapter', 'r']);
    assert.deepEqual(parseJsonPath('data["odd key"]'), ['data', 'odd key']);
    assert.equal(parseJsonPath('field "completion"'), undefined);
  });
});

describe('diagnostic ranges', () => {
  const text = '{\n  "model": "peft-lab/tiny-gpt",\n  "adapter": { "kind": "lora", "r": 0 },\n  "variants": [ { "name": "a", "adapter": { "kind": "ia3" } } ]\n}\n';

  it('marks the token at line:column', () => {
    const r = diagnosticRange(text, { file: 'x', line: 3, column: 37, message: '' });
    assert.equal(slice(text, r), '0');
    assert.deepEqual(r.start, { line: 2, character: 36 });
    assert.equal(slice(text, diagnosticRange(text, { file: 'x', line: 2, column: 3, message: '' })), '"model"');
  });

  it('marks the node at a JSON path when there is no position', () => {
    assert.equal(slice(text, diagnosticRange(text, { file: 'x', path: 'variants[0].name', message: '' })), '"a"');
    // An object: its key, not the whole object.
    assert.equal(slice(text, diagnosticRange(text, { file: 'x', path: 'variants[0].adapter', message: '' })), '"adapter"');
    // A missing key: the nearest ancestor that exists.
    assert.equal(slice(text, diagnosticRange(text, { file: 'x', path: 'adapter.alpha', message: '' })), '"adapter"');
  });

  it('marks a whole line (without indentation) for line-only errors', () => {
    assert.equal(slice(text, diagnosticRange(text, { file: 'x', line: 2, message: '' })), '"model": "peft-lab/tiny-gpt",');
  });

  it('clamps positions past the text and falls back to the first character', () => {
    const r = diagnosticRange(text, { file: 'x', line: 99, column: 99, message: '' });
    assert.ok(r.start.line <= 5);
    assert.deepEqual(diagnosticRange(text, { file: 'x', message: '' }), { start: { line: 0, character: 0 }, end: { line: 0, character: 1 } });
    assert.deepEqual(diagnosticRange('', { file: 'x', message: '' }), { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } });
  });

  it('converts offsets and positions both ways', () => {
    for (const off of [0, 1, 5, 20, text.length]) {
      const p = positionAt(text, off);
      assert.equal(offsetAt(text, p.line + 1, p.character + 1), off);
    }
  });

  it("maps the sidecar loader's own errors onto the offending token", () => {
    const cases: [string, string, string][] = [
      ['{\n  "model": "peft-lab/tiny-gpt",\n  "data": { "train": "d.jsonl" },\n  "adapter": { "kind": "lora", "r": 0 }\n}\n', 'adapter.r', '0'],
      ['{\n  "model": "peft-lab/tiny-gpt",\n  "data": { "train": "d.jsonl" },\n  "adapter": { "kind": "ia3", "r": 4 }\n}\n', 'adapter.r', '"r"'],
      ['{\n  "model": "peft-lab/no-such-model",\n  "data": { "train": "d.jsonl" },\n  "adapter": { "kind": "lora" }\n}\n', 'model', '"peft-lab/no-such-model"'],
      ['{\n  "model": "peft-lab/tiny-gpt",\n  "data": { "train": "d.jsonl" }\n  "adapter": { "kind": "lora" }\n}\n', '', '"adapter"'],
    ];
    writeFileSync(join(dir, 'd.jsonl'), '{"prompt":"a","completion":"b"}\n');
    cases.forEach(([spec, path, token], i) => {
      const file = join(dir, `case${i}.peft.json`);
      writeFileSync(file, spec);
      let message = '';
      assert.throws(() => loadSpec(file), (e: Error) => ((message = e.message), true));
      const loc = parseSpecError(message);
      assert.ok(loc, `parsed: ${message}`);
      assert.equal(loc.file, file);
      assert.equal(loc.path ?? '', path, message);
      assert.equal(slice(spec, diagnosticRange(spec, loc)), token, message);
    });
  });
});
