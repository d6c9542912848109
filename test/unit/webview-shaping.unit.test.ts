/**
 * Host-side shaping of the panels' inputs (vscode-free): metrics.jsonl tailing, status.json read
 * leniently, command arguments, the HTML page and its CSP, and the report files (importance,
 * allocation, compare, localize) into the panels' view models, which must pass the protocol.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AllocationReport, ImportanceReport, LayerGrid, LocalizeReport } from '../../src/protocol';
import { HOST_TO_WEBVIEW, validateMessage } from '../../src/protocol/webview';
import { allocationFor, budgetView, deriveSpec, keySlug } from '../../src/extension/panels/shaping/allocation';
import { pathsFromArgs } from '../../src/extension/panels/shaping/args';
import { comparisonLinks, comparisonView } from '../../src/extension/panels/shaping/compare';
import { evaluationLinks, evaluationView } from '../../src/extension/panels/shaping/evaluation';
import { contentSecurityPolicy, makeNonce, panelHtml } from '../../src/extension/panels/shaping/html';
import { importanceView, reindex } from '../../src/extension/panels/shaping/importance';
import { localizationView, overlapMatrices } from '../../src/extension/panels/shaping/localize';
import { MetricsParser, parseMetricLine } from '../../src/extension/panels/shaping/metrics';
import { statusFromJson } from '../../src/extension/panels/shaping/status';

const valid = (type: string, payload: unknown) => {
  const r = validateMessage(HOST_TO_WEBVIEW, { type, payload });
  assert.ok(r.ok, r.ok ? '' : r.problem);
};

describe('webview shaping: metrics.jsonl tail', () => {
  it('yields complete lines only, keeping a half-written tail for the next chunk', () => {
    const p = new MetricsParser();
    const a = '{"step":1,"loss":2,"lr":0.1,"tokens_per_s":5,"elapsed_s":1}\n{"step":2,"lo';
    assert.deepEqual(
      p.push(a).map((r) => r.step),
      [1],
    );
    assert.deepEqual(p.push('ss":1.5,"lr":0.1,"tokens_per_s":5,"elapsed_s":2'), []);
    const r = p.push(',"eval_loss":1.4}\n');
    assert.equal(r.length, 1);
    assert.equal(r[0]!.eval_loss, 1.4);
  });

  it('keeps null (a NaN written by JSON.stringify) and an out-of-range number as null, fills missing required fields with null, skips junk', () => {
    const p = new MetricsParser();
    const out = p.push('{"step":3,"loss":null,"lr":0.1,"tokens_per_s":5,"elapsed_s":1,"note":"x","grad_norm":1e999}\nnot json\n[1]\n{"loss":1}\n\n{"step":4}\n{"step":1e999}\n');
    assert.equal(out.length, 2);
    assert.equal(out[0]!.loss, null);
    assert.equal(out[0]!.grad_norm, null);
    assert.equal((out[0] as Record<string, unknown>).note, undefined);
    assert.equal(out[1]!.tokens_per_s, null);
    assert.equal(p.skipped, 4);
    assert.equal(parseMetricLine('  '), undefined);
    valid('dashboard/append', { runId: '/r', records: out });
  });
});

describe('webview shaping: status.json', () => {
  const base = { version: 1, state: 'done', spec: '/w/s.peft.json', name: 's', adapter: 'lora', step: 20, totalSteps: 20, startedAt: 'a', updatedAt: 'b' };

  it('keeps known fields, drops unknown ones (the sidecar may add some), and passes the protocol', () => {
    const s = statusFromJson({ ...base, newField: 1, summary: { loss: 3.9, baselineEvalLoss: 4, metricName: 'exact_match' }, pid: 12 })!;
    assert.deepEqual(s.summary, { loss: 3.9, metricName: 'exact_match' });
    assert.equal((s as unknown as Record<string, unknown>).newField, undefined);
    assert.equal(s.pid, 12);
    valid('dashboard/status', { runId: '/r', status: s });
  });

  it('refuses what is not a run status', () => {
    assert.equal(statusFromJson({ ...base, version: 2 }), undefined);
    assert.equal(statusFromJson({ ...base, state: 'weird' }), undefined);
    assert.equal(statusFromJson([]), undefined);
  });
});

describe('webview shaping: command arguments', () => {
  const uri = (fsPath: string) => ({ scheme: 'file', fsPath, path: fsPath });

  it('takes strings, Uris, arrays, tree items and run infos', () => {
    assert.deepEqual(pathsFromArgs(['/r/a']), ['/r/a']);
    assert.deepEqual(pathsFromArgs([['/r/a', '/r/b']]), ['/r/a', '/r/b']);
    assert.deepEqual(pathsFromArgs([uri('/r/a')]), ['/r/a']);
    assert.deepEqual(pathsFromArgs([{ run: { dir: '/r/a', name: 'a' } }]), ['/r/a']);
    assert.deepEqual(pathsFromArgs([{ resourceUri: uri('/r/c') }]), ['/r/c']);
    assert.deepEqual(pathsFromArgs(['file:///r/with%20space']), ['/r/with space']);
    assert.deepEqual(pathsFromArgs([{ scheme: 'untitled', fsPath: 'x' }]), []);
    assert.deepEqual(pathsFromArgs([]), []);
  });

  it('prefers a multi-selection over the clicked item, and dedupes', () => {
    assert.deepEqual(pathsFromArgs([uri('/r/a'), [uri('/r/a'), uri('/r/b')]]), ['/r/a', '/r/b']);
    assert.deepEqual(pathsFromArgs([uri('/r/a'), [uri('/r/a')]]), ['/r/a']);
    assert.deepEqual(pathsFromArgs(['/r/a', '/r/a']), ['/r/a']);
  });
});

describe('webview shaping: page and CSP', () => {
  const html = panelHtml({ cspSource: 'https://x.vscode-cdn.net', nonce: 'abc+/=', scriptUri: 'https://x/d.js', styleUri: 'https://x/d.css', title: 'Run: <b>"x"</b>', kind: 'dashboard' });

  it('allows nothing inline: scripts by nonce only, styles/images/fonts from the extension', () => {
    const csp = contentSecurityPolicy('https://x.vscode-cdn.net', 'N');
    assert.equal(csp, "default-src 'none'; script-src 'nonce-N'; style-src https://x.vscode-cdn.net; img-src https://x.vscode-cdn.net data:; font-src https://x.vscode-cdn.net");
    assert.doesNotMatch(html, /unsafe-inline|unsafe-eval|style=/);
    assert.match(html, /<script nonce="abc\+\/=" src="https:\/\/x\/d\.js"><\/script>/);
    assert.equal((html.match(/<script/g) ?? []).length, 1);
    assert.match(html, /<body data-panel="dashboard">/);
  });

  it('escapes the title; nonces are 128 random bits', () => {
    assert.match(html, /<title>Run: &#60;b&#62;&#34;x&#34;&#60;\/b&#62;<\/title>/);
    let calls = 0;
    const nonce = makeNonce((n) => {
      calls++;
      return new Uint8Array(n).fill(7);
    });
    assert.equal(calls, 1);
    assert.equal(Buffer.from(nonce, 'base64').length, 16);
  });
});

const grid = (rows: string[], columns: string[], values: (number | null)[][]): LayerGrid => ({ rows, layers: rows.map((_, i) => i - 1), columns, values });

describe('webview shaping: importance report', () => {
  const rows = ['embeddings/head', 'layer 0', 'layer 1'];
  const cols = ['embedding', 'c_attn'];
  const report = {
    version: 1,
    model: '/m/tiny-gpt',
    data: '/w/train.jsonl',
    methods: ['fisher', 'taylor'],
    batches: 4,
    examples: 32,
    tokens: 176,
    meanLoss: 4.9,
    totalParams: 1000,
    scoresFile: 'scores.safetensors',
    tensors: [],
    grids: {
      fisher: { sum: grid(rows, cols, [[1, null], [null, 2], [null, 3]]), mean: grid(rows, cols, [[0.1, null], [null, 0.2], [null, 0.3]]) },
      taylor: { sum: grid(rows, cols, [[1, null], [null, 1], [null, 1]]), mean: grid(rows, cols, [[1, null], [null, 1], [null, 1]]) },
    },
    numel: grid(rows, cols, [[10, null], [null, 20], [null, 20]]),
    activations: { modules: [], grid: grid(rows.slice(1), ['c_attn', 'c_fc'], [[0.5, 0.7], [0.6, Number.NaN]]) },
    seconds: 1,
    ist: [
      { step: 10, grid: grid(rows, cols, [[1, null], [null, 2], [null, 3]]) },
      { step: 20, grid: grid(rows, cols, [[3, null], [null, 2], [null, 1]]) },
    ],
  } satisfies ImportanceReport & Record<string, unknown>;

  it('lists every method × aggregate on shared axes (union of rows and columns)', () => {
    const v = importanceView(report, '/w/imp/importance.json');
    assert.deepEqual(
      v.methods.map((m) => m.id),
      ['fisher', 'fisher:sum', 'taylor', 'taylor:sum', 'activations', 'ist'],
    );
    assert.deepEqual(v.layers, rows);
    assert.deepEqual(v.modules, ['embedding', 'c_attn', 'c_fc']);
    assert.deepEqual(v.methods[0]!.scores, [
      [0.1, null, null],
      [null, 0.2, null],
      [null, 0.3, null],
    ]);
    // activations: no embeddings row, a c_fc column; NaN → null
    assert.deepEqual(v.methods[4]!.scores, [
      [null, null, null],
      [null, 0.5, 0.7],
      [null, 0.6, null],
    ]);
    assert.deepEqual(
      v.methods[5]!.timeline!.map((f) => f.step),
      [10, 20],
    );
    assert.equal(v.model, '/m/tiny-gpt');
    valid('importance/data', v);
  });

  it('says what is wrong with a file that is not a report', () => {
    assert.throws(() => importanceView({ version: 1 }, 'x'), /not a PEFT Lab importance report/);
    assert.throws(() => importanceView({ version: 1, grids: {} }, 'x'), /no importance grids/);
    assert.throws(() => importanceView({ version: 1, grids: { fisher: { mean: { rows: ['a'], columns: ['b'], values: [[1, 2]] } } } }, 'x'), /grids\.fisher\.mean\.values\[0\]: expected 1 values/);
    assert.deepEqual(reindex(grid(['a'], ['x'], [[5]]), ['b', 'a'], ['x', 'y']), [
      [null, null],
      [5, null],
    ]);
  });
});

describe('webview shaping: allocation report', () => {
  const gridRows = { rows: ['layer 0', 'layer 1'], layers: [0, 1], columns: ['c_attn'] };
  const t = (name: string, layer: number, shape: number[], decision: 'lora' | 'sparse' | 'full' | 'frozen', cost: number) => ({ name, layer, type: name.split('.').at(-2)!, shape, kind: shape.length > 1 ? ('matrix' as const) : ('vector' as const), selected: cost, decision, cost });
  const report = {
    version: 1,
    importance: '/w/imp/importance.json',
    method: 'fisher',
    candidates: 'all',
    params: { r: 8, alphaRatio: 10, beta: 5, loraAlpha: 16, ranks: [0, 2, 4, 8], rankScale: 2 },
    totalParams: 10_000,
    candidateParams: 2_200,
    spt: [
      {
        budget: '1%',
        target: 100,
        k: 50,
        cost: 96,
        nextCost: 120,
        loraModules: 1,
        loraParams: 64,
        sparseParams: 20,
        vectorParams: 12,
        grid: { ...gridRows, values: [[null], [null]] },
        vectorGrid: { ...gridRows, values: [[12], [0]] },
        tensors: [t('h.0.attn.c_attn.weight', 0, [16, 32], 'lora', 64), t('h.0.attn.c_attn.bias', 0, [32], 'full', 12), t('h.1.attn.c_attn.weight', 1, [16, 32], 'sparse', 20), t('h.1.attn.c_attn.bias', 1, [32], 'frozen', 0)],
        allocation: { method: 'spt', budget: '1%', trainableParams: 96, lora: { targets: ['h.0.attn.c_attn'], r: 8, alpha: 16, rankPattern: { 'h.0.attn.c_attn': 2 }, alphaPattern: {}, params: 64 } },
      },
    ],
    rank: [
      {
        budget: '1%',
        target: 100,
        params: 96,
        modules: [{ module: 'h.1.attn.c_attn', layer: 1, type: 'c_attn', importance: 1, ideal: 2, rank: 2, params: 96 }],
        grid: { ...gridRows, values: [[0], [2]] },
        allocation: { method: 'rank', budget: '1%', trainableParams: 96 },
      },
    ],
  } as unknown as AllocationReport;

  it('per layer: LoRA added, sparse/full trained in place, the rest frozen; one option per method × budget', () => {
    const v = budgetView(report, '/w/alloc.json');
    assert.deepEqual(
      v.options.map((o) => o.key),
      ['spt:1%', 'rank:1%'],
    );
    assert.deepEqual(v.options[0]!.layers, [
      { name: 'layer 0', lora: 64, sparse: 12, frozen: 544 - 12, ranks: { c_attn: 2 } },
      { name: 'layer 1', lora: 0, sparse: 20, frozen: 544 - 20 },
    ]);
    assert.deepEqual(v.options[1]!.layers, [
      { name: 'layer 0', lora: 0, sparse: 0, frozen: 544 },
      { name: 'layer 1', lora: 96, sparse: 0, frozen: 544, ranks: { c_attn: 2 } },
    ]);
    assert.equal(v.totalParams, 10_000);
    valid('budget/data', v);
    assert.throws(() => budgetView({ version: 1 }, 'x'), /not a PEFT Lab allocation report/);
  });

  it('finds the allocation of an option and derives a spec that uses it', () => {
    assert.equal(allocationFor(report, 'spt:1%')?.method, 'spt');
    assert.equal(allocationFor(report, 'rank:1%')?.method, 'rank');
    assert.equal(allocationFor(report, 'spt:9%'), undefined);
    assert.equal(keySlug('spt:0.5%'), 'spt-0.5pct');
    const spec = JSON.parse(deriveSpec(JSON.stringify({ name: 'tiny', model: 'm', adapter: { kind: 'lora' }, variants: [{}], steps: 5 }), 'reports/a.spt-1pct.allocation.json', 'spt-1pct'));
    assert.deepEqual(spec, { name: 'tiny-spt-1pct', model: 'm', adapter: { kind: 'lora' }, allocation: 'reports/a.spt-1pct.allocation.json', steps: 5 });
    assert.deepEqual(Object.keys(spec), ['name', 'model', 'adapter', 'allocation', 'steps']);
  });
});

describe('webview shaping: comparison and localization', () => {
  it('compare.json rows with forgetting Δ, curves and errors', () => {
    const v = comparisonView(
      {
        version: 1,
        spec: '/w/c.peft.json',
        name: 'c',
        model: 'peft-lab/tiny-gpt',
        seed: 1,
        createdAt: 'now',
        backend: 'wasm',
        variants: [
          { name: 'lora', runDir: '/r/lora', state: 'done', adapter: { kind: 'lora', r: 4 }, trainableParams: 8192, finalLoss: 3.9, curve: [{ step: 1, loss: 4, eval_loss: 4.1 }, { step: 2, loss: null }], forgetting: { before: 4, after: 4.2, delta: 0.2 }, tokensPerS: 500 },
          { name: 'ia3', runDir: '/r/ia3', state: 'failed', adapter: { kind: 'ia3' }, curve: [], forgetting: null, error: 'boom' },
        ],
      },
      '/w/compare.json',
    );
    assert.equal(v.rows[0]!.forgetting, 0.2);
    assert.deepEqual(v.rows[0]!.curve, [{ step: 1, loss: 4, eval_loss: 4.1 }, { step: 2, loss: null }]);
    assert.equal(v.rows[1]!.error, 'boom');
    assert.equal(v.rows[1]!.forgetting, undefined);
    valid('comparison/data', v);
    assert.throws(() => comparisonView({ version: 1 }, 'x'), /not a PEFT Lab comparison/);
    // its links may open the compare folder (variants inside it) and each variant's run folder
    assert.deepEqual(comparisonLinks(v), ['/w', '/r/lora', '/r/ia3']);
  });

  const level = (sparsity: number, metric: number | null) => ({
    sparsity,
    fractionOfModel: sparsity / 2,
    fraction: sparsity,
    grafted: 10,
    recovered: { metric, loss: 0.5 },
    layerDensity: [{ layer: 0, density: 0.1, grafted: 5 }],
  });

  it('localize.json: levels sorted by sparsity, symmetric overlap matrices per sparsity', () => {
    const report = {
      version: 1,
      base: '/m',
      options: {},
      runs: [
        { name: 'add', source: '/r/add', metricName: 'exact_match', levels: [level(0.01, 0.9), level(0.001, null)] },
        { name: 'br', source: '/r/br', levels: [level(0.001, 0.4)] },
      ],
      overlap: [
        { a: 'add', b: 'br', sparsity: 0.001, jaccard: 0.1 },
        { a: 'add', b: 'br', sparsity: 0.01, jaccard: 0.3 },
      ],
    } as unknown as LocalizeReport;
    const v = localizationView(report, '/w/localize.json');
    assert.deepEqual(
      v.tasks[0]!.levels.map((l) => [l.sparsity, l.recoveredMetric, l.fraction]),
      [
        [0.001, null, 0.0005],
        [0.01, 0.9, 0.005],
      ],
    );
    assert.deepEqual(v.overlap, [
      { sparsity: 0.001, tasks: ['add', 'br'], matrix: [[1, 0.1], [0.1, 1]] },
      { sparsity: 0.01, tasks: ['add', 'br'], matrix: [[1, 0.3], [0.3, 1]] },
    ]);
    valid('localization/data', v);
    assert.deepEqual(overlapMatrices({}, []), []);
    assert.throws(() => localizationView({ version: 1, runs: [{}] }, 'x'), /runs\[0\]: expected \{ name, levels \}/);
  });
});

describe('webview shaping: evaluation report', () => {
  it('maps an evaluation.json to the panel view (a null loss from JSON stays null), valid for the webview', () => {
    const score = (loss: number | null, metric?: number) => ({ loss, ...(metric !== undefined ? { metric } : {}), ece: 0.1, count: 20 });
    const report = { version: 1, data: '/w/test.jsonl', rows: 20, runs: [{ name: 'a', source: '/w/runs/a', metricName: 'exact_match', base: score(4.3, 0), finetuned: score(0.05, 0.865) }, { name: 'b', source: '/w/runs/b', base: score(4.3), finetuned: score(null) }] };
    const v = evaluationView(report, '/w/eval/evaluation.json');
    assert.equal(v.rows, 20);
    assert.deepEqual(v.runs[0], { name: 'a', source: '/w/runs/a', metricName: 'exact_match', base: { loss: 4.3, metric: 0, ece: 0.1 }, finetuned: { loss: 0.05, metric: 0.865, ece: 0.1 } });
    assert.equal(v.runs[1]!.finetuned.loss, null);
    assert.equal(v.runs[1]!.finetuned.metric, undefined);
    assert.ok(validateMessage(HOST_TO_WEBVIEW, { type: 'evaluation/data', payload: v }).ok);
    // the run folders it lists are what its links may open
    assert.deepEqual(evaluationLinks(v), ['/w/runs/a', '/w/runs/b']);
  });

  it('names what is wrong with a file that is not an evaluation report', () => {
    assert.throws(() => evaluationView({ version: 1, runs: 3 }, 'x'), /not a PEFT Lab evaluation report/);
    assert.throws(() => evaluationView({ version: 1, runs: [{ name: 'a', base: 1 }] }, 'x'), /runs\[0\]\.base: expected \{ loss, ece \}/);
    assert.throws(() => evaluationView({ version: 1, runs: [{ base: {} }] }, 'x'), /runs\[0\]: expected \{ name, base, finetuned \}/);
  });
});
