/** Host ↔ webview message validation: what matches the protocol passes, anything else is refused with a reason. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MetricRecord, RunStatus } from '../../src/protocol';
import { HOST_TO_WEBVIEW, panelStateSchema, s, validateMessage, WEBVIEW_TO_HOST, type HostToWebview } from '../../src/protocol/webview';

const record: MetricRecord = { step: 1, loss: 2.5, lr: 1e-3, tokens_per_s: 900, elapsed_s: 0.5, eval_loss: 2.4, grad_norm: 1.2 };
const status: RunStatus = { version: 1, state: 'running', spec: '/w/a.peft.json', name: 'a', adapter: 'lora', step: 1, totalSteps: 20, startedAt: 't', updatedAt: 't', summary: { loss: 2.5 } };

const fail = (v: unknown, re: RegExp) => {
  const r = validateMessage(HOST_TO_WEBVIEW, v);
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.problem, re);
};

describe('webview protocol: validation', () => {
  it('accepts every host message in its declared shape', () => {
    const samples: { [K in keyof HostToWebview]: HostToWebview[K] } = {
      'dashboard/runs': { runs: [{ id: '/r/a', label: 'a', status, records: [record] }] },
      'dashboard/append': { runId: '/r/a', records: [record, { ...record, step: 2, loss: null }] },
      'dashboard/status': { runId: '/r/a', status },
      'importance/data': { source: 'i.json', layers: ['layer 0'], modules: ['c_attn'], methods: [{ id: 'fisher', label: 'Fisher', scores: [[1]], timeline: [{ step: 5, scores: [[null]] }] }] },
      'budget/data': { source: 'a.json', options: [{ label: 'x', budget: 10, key: 'spt:1%', layers: [{ name: 'layer 0', lora: 1, sparse: 2, frozen: 3, ranks: { c_attn: 4 } }] }] },
      'budget/trained': { ok: true, message: 'wrote', specPath: '/w/b.peft.json' },
      'importance/allocated': { ok: false, message: 'No allocation written.' },
      'comparison/data': { source: 'c.json', name: 'n', model: 'm', rows: [{ name: 'v', kind: 'lora', state: 'done', runDir: '/r', curve: [{ step: 1, loss: 2 }] }] },
      'localization/data': { source: 'l.json', tasks: [{ name: 't', source: '/r', levels: [{ sparsity: 0.01, fraction: 0.01, grafted: 5, recoveredMetric: null, recoveredLoss: 0.5, density: [{ layer: 0, density: 0.1 }] }] }], overlap: [] },
      'evaluation/data': { source: 'e.json', data: 'd.jsonl', rows: 4, runs: [{ name: 'r', source: '/r', metricName: 'accuracy', base: { loss: null, ece: 0.1 }, finetuned: { loss: 0.5, metric: 0.75, ece: 0.05 } }] },
      'panel/error': { message: 'bad' },
    };
    for (const [type, payload] of Object.entries(samples)) {
      const r = validateMessage(HOST_TO_WEBVIEW, { type, payload });
      assert.ok(r.ok, `${type}: ${r.ok ? '' : r.problem}`);
    }
  });

  it('refuses non-objects, unknown types, extra envelope keys', () => {
    fail(null, /expected an object/);
    fail('dashboard/runs', /expected an object/);
    fail({ type: 'dashboard/nope', payload: {} }, /unknown type "dashboard\/nope"/);
    fail({ type: 'toString', payload: {} }, /unknown type/);
    fail({ type: 'panel/error', payload: { message: 'x' }, extra: 1 }, /unexpected key extra/);
  });

  it('names the place of a payload problem', () => {
    fail({ type: 'dashboard/append', payload: { runId: '/r', records: [record, { ...record, loss: 'high' }] } }, /dashboard\/append\.payload\.records\[1\]\.loss: expected a number/);
    fail({ type: 'dashboard/append', payload: { runId: '/r', records: [{ loss: 1 }] } }, /records\[0\]\.step: missing/);
    // JSON has no NaN: the host must send null, and refuses to send a NaN
    fail({ type: 'dashboard/append', payload: { runId: '/r', records: [{ ...record, loss: NaN }] } }, /records\[0\]\.loss: expected a finite number/);
    fail({ type: 'dashboard/status', payload: { runId: '/r', status: { ...status, state: 'exploded' } } }, /status\.state: expected/);
    fail({ type: 'dashboard/status', payload: { runId: '/r', status: { ...status, surprise: true } } }, /status\.surprise: unexpected key/);
    fail({ type: 'importance/data', payload: { source: 's', layers: [], modules: [], methods: [{ id: 'f', label: 'F', scores: [[1, 'x']] }] } }, /scores\[0\]\[1\]/);
    fail({ type: 'panel/error', payload: {} }, /message: missing/);
  });

  it('validates the webview → host direction', () => {
    assert.ok(validateMessage(WEBVIEW_TO_HOST, { type: 'panel/ready', payload: { kind: 'dashboard' } }).ok);
    assert.ok(validateMessage(WEBVIEW_TO_HOST, { type: 'dashboard/addRuns', payload: {} }).ok);
    assert.equal(validateMessage(WEBVIEW_TO_HOST, { type: 'panel/ready', payload: { kind: 'shell' } }).ok, false);
    assert.equal(validateMessage(WEBVIEW_TO_HOST, { type: 'panel/log', payload: { level: 'fatal', message: 'x' } }).ok, false);
    assert.equal(validateMessage(WEBVIEW_TO_HOST, { type: 'budget/train', payload: { key: 3 } }).ok, false);
    assert.ok(validateMessage(WEBVIEW_TO_HOST, { type: 'importance/allocate', payload: { method: 'fisher:sum' } }).ok);
    assert.equal(validateMessage(WEBVIEW_TO_HOST, { type: 'importance/allocate', payload: {} }).ok, false);
    // a host message sent the wrong way is unknown there
    assert.equal(validateMessage(WEBVIEW_TO_HOST, { type: 'panel/error', payload: { message: 'x' } }).ok, false);
  });

  it('checks the state a webview saved before the host revives from it', () => {
    assert.equal(panelStateSchema.check({ sources: ['/a'], ui: { smoothing: 0.5 } }, 'state'), undefined);
    assert.equal(panelStateSchema.check({ sources: ['/a'] }, 'state'), undefined);
    assert.match(panelStateSchema.check({ sources: '/a' }, 'state')!, /state\.sources: expected an array/);
    assert.match(panelStateSchema.check(undefined, 'state')!, /expected an object/);
    assert.match(panelStateSchema.check({ sources: Array(65).fill('/a') }, 'state')!, /more than 64/);
  });

  it('schema combinators: optional, nullable, literal, finite', () => {
    const sch = s.object({ a: s.optional(s.finite), b: s.nullable(s.string), c: s.literal('x', 'y') });
    assert.equal(sch.check({ b: null, c: 'x' }, ''), undefined);
    assert.match(sch.check({ a: Infinity, b: 'q', c: 'x' }, '')!, /a: expected a finite number/);
    assert.match(sch.check({ b: 'q', c: 'z' }, '')!, /c: expected "x" \| "y"/);
  });
});
