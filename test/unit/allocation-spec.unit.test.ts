/**
 * `"allocation"` in run specs: a file (as the budget panel writes it) or inline; it configures the
 * adapter (LoRA with rank/alpha patterns; sparse with its mask; both → LoRA + a warning), the spec's
 * `adapter` may be omitted, problems name the `allocation` path, and a run trains and exports
 * `rank_pattern` / `alpha_pattern`.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AllocationSpec } from '../../src/protocol';
import { initBackend } from '../../sidecar/src/backend';
import { loadSpec, runConfig, SpecError } from '../../sidecar/src/spec/load';
import { adapterFromAllocation } from '../../sidecar/src/train/allocation';
import { runTraining } from '../../sidecar/src/train/trainer';

const FIXTURES = join(__dirname, '../../../shared/fixtures/hf');
const root = mkdtempSync(join(tmpdir(), 'peft-lab-alloc-'));
after(() => rmSync(root, { recursive: true, force: true }));
before(async () => {
  await initBackend('wasm', () => undefined);
  cpSync(join(FIXTURES, 'gpt2-tiny'), join(root, 'gpt2-tiny'), { recursive: true });
  writeFileSync(join(root, 'text.jsonl'), Array.from({ length: 12 }, (_, i) => JSON.stringify({ text: `the cat sat on day ${i % 3}.` })).join('\n'));
});

const lora: AllocationSpec = {
  method: 'rank',
  budget: '1%',
  trainableParams: 1000,
  lora: {
    targets: ['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn', 'transformer.h.3.mlp.c_fc'],
    r: 2,
    alpha: 4,
    rankPattern: { 'transformer.h.0.attn.c_attn': 2, 'transformer.h.1.attn.c_attn': 4, 'transformer.h.3.mlp.c_fc': 2 },
    alphaPattern: { 'transformer.h.0.attn.c_attn': 4, 'transformer.h.1.attn.c_attn': 8, 'transformer.h.3.mlp.c_fc': 4 },
    params: 1000,
  },
};
let n = 0;
function specFile(spec: Record<string, unknown>): string {
  const f = join(root, `s${n++}.peft.json`);
  writeFileSync(f, JSON.stringify({ model: 'gpt2-tiny', data: { train: 'text.jsonl', maxLength: 16 }, optimizer: { lr: 0.01 }, batchSize: 4, steps: 2, ...spec }));
  return f;
}
const ctx = () => ({ signal: new AbortController().signal, progress: () => undefined, log: () => undefined });

describe('allocation in specs', () => {
  test('a budget-panel allocation file configures LoRA; the run trains and exports rank_pattern / alpha_pattern', async () => {
    writeFileSync(join(root, 'alloc.rank-1pct.allocation.json'), `${JSON.stringify(lora, null, 2)}\n`);
    const spec = loadSpec(specFile({ allocation: 'alloc.rank-1pct.allocation.json' }));
    assert.equal(spec.adapter?.kind, 'lora');
    assert.deepEqual(spec.adapter?.rankPattern, lora.lora!.rankPattern);
    assert.equal(spec.allocation, join(root, 'alloc.rank-1pct.allocation.json'));
    const dir = join(root, 'runs', 'rank');
    const out = await runTraining(runConfig(spec), { runDir: dir, ctx: ctx() });
    assert.equal(out.status.state, 'done');
    const ac = JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8')) as { r: number; lora_alpha: number; rank_pattern: Record<string, number>; alpha_pattern: Record<string, number>; target_modules: string[] | string };
    assert.equal(ac.r, 2);
    const rank = Object.entries(ac.rank_pattern).find(([k]) => k.endsWith('h.1.attn.c_attn'));
    assert.equal(rank?.[1], 4, JSON.stringify(ac.rank_pattern));
    const alpha = Object.entries(ac.alpha_pattern).find(([k]) => k.endsWith('h.1.attn.c_attn'));
    assert.equal(alpha?.[1], 8, JSON.stringify(ac.alpha_pattern));
    // rank 4·(in + out) on h.1's c_attn, rank 2 on the two others: the trainable count shows the pattern.
    assert.ok(out.trainableParams > 0);
  });

  test('what the panel writes (the spec keeps its adapter): the allocation overrides its structure, keeps its other options', () => {
    writeFileSync(join(root, 'a2.json'), JSON.stringify(lora));
    const spec = loadSpec(specFile({ adapter: { kind: 'lora', r: 8, alpha: 16, dropout: 0.1 }, allocation: 'a2.json' }));
    assert.equal(spec.adapter?.r, 2);
    assert.equal(spec.adapter?.dropout, 0.1);
    assert.deepEqual(spec.adapter?.targets, lora.lora!.targets);
  });

  test('inline allocation; both parts → LoRA with a warning; sparse only → the sparse adapter', () => {
    const both: AllocationSpec = { ...lora, method: 'spt', sparse: { mask: 'm.safetensors', tensors: 2, params: 50 } };
    const spec = loadSpec(specFile({ allocation: both }));
    assert.equal(spec.adapter?.kind, 'lora');
    assert.ok(spec.warnings?.some((w) => /sparse part/.test(w)), JSON.stringify(spec.warnings));
    const sparse = adapterFromAllocation({ method: 'spt', budget: '1%', trainableParams: 50, sparse: { mask: '/x/m.safetensors', tensors: 2, params: 50 } }, { kind: 'lora', modulesToSave: ['score'] });
    assert.deepEqual(sparse.adapter, { kind: 'sparse', mask: '/x/m.safetensors', modulesToSave: ['score'] });
  });

  test('problems name the allocation path', () => {
    const err = (f: string) => {
      try {
        loadSpec(f);
      } catch (e) {
        assert.ok(e instanceof SpecError, String(e));
        return e;
      }
      assert.fail('expected a SpecError');
    };
    let e = err(specFile({ allocation: 'missing.json' }));
    assert.equal(e.issues[0]!.path, 'allocation');
    assert.match(e.message, /allocation file not found/);
    writeFileSync(join(root, 'bad.json'), JSON.stringify({ ...lora, lora: { ...lora.lora, r: 0 } }));
    e = err(specFile({ allocation: 'bad.json' }));
    assert.equal(e.issues[0]!.path, 'allocation');
    assert.match(e.message, /bad\.json lora\.r at \d+:\d+: must be ≥ 1/);
    e = err(specFile({ allocation: { method: 'spt', budget: '1%', trainableParams: 0 } }));
    assert.match(e.message, /neither a "lora" nor a "sparse" part/);
    e = err(specFile({ allocation: { method: 'spt', budget: '1%', trainableParams: 5, sparse: { mask: 'nope.safetensors' } } }));
    assert.equal(e.issues[0]!.path, 'allocation');
    assert.match(e.message, /sparse\.mask file not found/);
    e = err(specFile({}));
    assert.match(e.message, /missing required key "adapter" \(or "allocation"/);
  });
});
