/**
 * Every host → webview message as the webview gets it: VS Code sends messages as JSON, which has no
 * NaN or ±Infinity (JSON.stringify writes null). Each kind, shaped by the host from inputs with
 * missing, null and out-of-range values (a diverged run), must survive JSON unchanged and pass the
 * schema the webview validates with; otherwise the webview drops it and the panel stays blank.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AllocationReport, LocalizeReport } from '../../src/protocol';
import { HOST_TO_WEBVIEW, validateMessage, type HostToWebview } from '../../src/protocol/webview';
import { budgetView } from '../../src/extension/panels/shaping/allocation';
import { comparisonView } from '../../src/extension/panels/shaping/compare';
import { evaluationView } from '../../src/extension/panels/shaping/evaluation';
import { importanceView } from '../../src/extension/panels/shaping/importance';
import { localizationView } from '../../src/extension/panels/shaping/localize';
import { MetricsParser } from '../../src/extension/panels/shaping/metrics';
import { statusFromJson } from '../../src/extension/panels/shaping/status';

// A run that diverged at step 3 (the sidecar writes NaN as null), a line with a huge value and one short of fields.
const metricsText = [
  '{"step":1,"loss":4.2,"lr":0.001,"tokens_per_s":900,"elapsed_s":0.5,"eval_loss":4.3,"grad_norm":1.5}',
  '{"step":2,"loss":3.9,"lr":0.001,"tokens_per_s":910,"elapsed_s":1,"grad_norm":1e999}',
  '{"step":3,"loss":null,"lr":0.001,"tokens_per_s":905,"elapsed_s":1.5,"eval_loss":null,"grad_norm":null}',
  '{"step":4}',
].join('\n');
const records = new MetricsParser().push(`${metricsText}\n`);
const status = statusFromJson(JSON.parse('{"version":1,"state":"failed","spec":"/w/a.peft.json","name":"a","adapter":"lora","step":3,"totalSteps":1e999,"startedAt":"t","updatedAt":"t","error":"loss is NaN","summary":{"loss":null,"evalLoss":1e999}}'))!;

const grid = (values: (number | null)[][]) => ({ rows: ['embeddings/head', 'layer 0'], layers: [-1, 0], columns: ['c_attn'], values });

const samples: { [K in keyof HostToWebview]: HostToWebview[K] } = {
  'dashboard/runs': { runs: [{ id: '/r/a', label: 'a', status, records }, { id: '/r/b', label: 'b', records: [] }] },
  'dashboard/append': { runId: '/r/a', records },
  'dashboard/status': { runId: '/r/a', status },
  'importance/data': importanceView({ version: 1, grids: { fisher: { mean: grid([[NaN], [Infinity]]), sum: grid([[null], [2]]) } } }, '/w/importance.json'),
  'budget/data': budgetView(
    {
      version: 1,
      totalParams: null,
      spt: [{ budget: '1%', target: null, cost: null, tensors: [{ name: 'h.0.attn.c_attn.weight', layer: 0, type: 'c_attn', shape: [4, 8], decision: 'lora' }], allocation: {} }],
      rank: [{ budget: '2%', target: 200, params: 64, modules: [{ module: 'h.0.attn.c_attn', layer: 0, type: 'c_attn', rank: null, params: null }] }],
    } as unknown as AllocationReport,
    '/w/allocation.json',
  ),
  'budget/trained': { ok: true, message: 'Wrote b.peft.json', specPath: '/w/b.peft.json' },
  'importance/allocated': { ok: false, message: 'No allocation written.' },
  'comparison/data': comparisonView(
    {
      version: 1,
      name: 'c',
      model: 'm',
      variants: [
        { name: 'lora', runDir: '/r/c/lora', state: 'done', adapter: { kind: 'lora' }, finalLoss: 3.1, curve: [{ step: 1, loss: 4, eval_loss: 4.1 }, { step: 2, loss: 3.1 }] },
        { name: 'diverged', runDir: '/r/c/diverged', state: 'failed', adapter: { kind: 'ia3' }, finalLoss: null, curve: [{ step: 1, loss: 4 }, { step: 2, loss: null, eval_loss: null }, { step: Infinity, loss: 1 }], error: 'loss is NaN' },
      ],
    },
    '/r/c/compare.json',
  ),
  'localization/data': localizationView(
    {
      version: 1,
      runs: [{ name: 't', source: '/r/t', levels: [{ sparsity: 0.01, grafted: 5, recovered: { metric: null, loss: 0.4 }, layerDensity: [{ layer: 0, density: null }] }] }],
      overlap: [{ a: 't', b: 'u', sparsity: null, jaccard: null }],
    } as unknown as LocalizeReport,
    '/w/localize.json',
  ),
  'evaluation/data': evaluationView(
    { version: 1, data: '/w/test.jsonl', rows: 8, runs: [{ name: 'diverged', source: '/r/a', base: { loss: 4.3, metric: 0, ece: 0.1 }, finetuned: { loss: null, metric: null, ece: null } }] },
    '/w/evaluation.json',
  ),
  'panel/error': { message: '/w/compare.json: not a PEFT Lab comparison', sources: ['/w/compare.json'] },
};

describe('webview protocol: every host message survives the JSON trip to the webview', () => {
  for (const [type, payload] of Object.entries(samples)) {
    it(type, () => {
      const sent = { type, payload };
      // The host validates before sending, with the same schemas.
      const before = validateMessage(HOST_TO_WEBVIEW, sent);
      assert.ok(before.ok, `host side: ${before.ok ? '' : before.problem}`);
      const received: unknown = JSON.parse(JSON.stringify(sent));
      const after = validateMessage(HOST_TO_WEBVIEW, received);
      assert.ok(after.ok, `webview side: ${after.ok ? '' : after.problem}`);
      assert.deepEqual(received, sent, 'nothing changed on the way');
    });
  }

  it('keeps a diverged value as null where it was (a gap), not as a dropped record', () => {
    assert.deepEqual(
      records.map((r) => [r.step, r.loss, r.grad_norm]),
      [
        [1, 4.2, 1.5],
        [2, 3.9, null],
        [3, null, null],
        [4, null, undefined],
      ],
    );
    assert.deepEqual(samples['comparison/data'].rows[1]!.curve, [
      { step: 1, loss: 4 },
      { step: 2, loss: null, eval_loss: null },
    ]);
    assert.equal(samples['evaluation/data'].runs[0]!.finetuned.loss, null);
    assert.equal(samples['localization/data'].tasks[0]!.levels[0]!.fraction, null);
  });
});
