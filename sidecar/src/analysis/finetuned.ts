/**
 * Fine-tuned weights for the analysis commands: a run folder (its `adapter/` folded into the base
 * with `merged()`), a PEFT adapter folder, or a fully fine-tuned model folder.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { AdapterSpec } from '../../../src/protocol';
import { createAdapter, type AdapterInstance } from '../adapters';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, loadPeftAdapter } from '../adapters/peft';
import { InputError } from '../errors';
import { hasCheckpoint } from '../io/checkpoint';
import { readSafetensors } from '../io/safetensors';
import { toTf } from '../io/tensors';
import { Model } from '../models/model';

/** Why a run folder has no adapter yet, from its status.json: what the user can do about it. */
function unfinished(runDir: string): string {
  let st: { state?: unknown; step?: unknown; error?: unknown } = {};
  try {
    st = JSON.parse(readFileSync(join(runDir, 'status.json'), 'utf8')) as typeof st;
  } catch {
    /* no status: said below */
  }
  const at = typeof st.step === 'number' ? ` at step ${st.step}` : '';
  switch (st.state) {
    case 'failed':
      return `the run failed${at}${typeof st.error === 'string' ? ` (${st.error.slice(0, 160)})` : ''}; fix the cause and resume it (peft-lab resume ${runDir})`;
    case 'cancelled':
    case 'interrupted':
      return `the run was ${st.state}${at}; resume it to finish (peft-lab resume ${runDir})`;
    default:
      return 'the run has not finished';
  }
}

/** `dir/adapter` for a run folder (it has spec.json), else `dir` itself. */
export function adapterDirOf(dir: string): string {
  const d = resolve(dir);
  if (existsSync(join(d, ADAPTER_CONFIG))) return d;
  if (existsSync(join(d, 'adapter', ADAPTER_CONFIG))) return join(d, 'adapter');
  if (existsSync(join(d, 'spec.json'))) throw new InputError(d, 'adapter', `this run folder has no final adapter: ${unfinished(d)}`);
  throw new InputError(d, ADAPTER_CONFIG, 'missing: not an adapter folder or a run folder');
}

/**
 * Loads a PEFT adapter (LORA, IA3) or a PEFT Lab adapter folder (`peft_type: "PEFT_LAB"`, written for
 * kinds PEFT does not have: the spec is rebuilt with createAdapter and every saved tensor restored).
 */
export async function loadAnyAdapter(model: Model, dir: string): Promise<AdapterInstance> {
  const adir = adapterDirOf(dir);
  const cfgFile = join(adir, ADAPTER_CONFIG);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new InputError(cfgFile, '', `cannot read (${(e as Error).message})`);
  }
  if (cfg.peft_type !== 'PEFT_LAB') return loadPeftAdapter(model, adir);
  const spec = cfg.peft_lab_spec as AdapterSpec | undefined;
  if (!spec || typeof spec !== 'object' || typeof spec.kind !== 'string') throw new InputError(cfgFile, 'peft_lab_spec', 'missing or not an adapter spec');
  const adapter = await createAdapter(model, spec, { seed: 0 });
  try {
    const file = join(adir, ADAPTER_WEIGHTS);
    const saved = await readSafetensors(file);
    for (const [name, h] of saved) {
      const map = adapter.trainable.has(name) ? adapter.trainable : adapter.frozen.has(name) ? adapter.frozen : undefined;
      if (!map) throw new InputError(file, name, `the ${spec.kind} adapter has no such tensor`);
      const old = map.get(name)!;
      if (old.shape.length !== h.shape.length || old.shape.some((s, i) => s !== h.shape[i]))
        throw new InputError(file, name, `shape [${h.shape.join(', ')}] differs from the adapter's [${old.shape.join(', ')}]`);
      map.set(name, tf.keep(toTf(h)));
      old.dispose();
    }
  } catch (e) {
    adapter.dispose();
    throw e;
  }
  return adapter;
}

/** The fine-tuned values of the base tensors that differ from `base` (kept tensors: the caller disposes them). */
export interface Finetuned {
  name: string;
  source: string;
  params: Map<string, tf.Tensor>;
  dispose(): void;
}

const isModelDir = (d: string) => existsSync(join(d, 'config.json')) && hasCheckpoint(d);

/** θ_ft from a run folder / adapter folder (base + merged adapter) or a fine-tuned model folder. */
export async function loadFinetuned(base: Model, source: string): Promise<Finetuned> {
  const dir = resolve(source);
  const name = basename(dir);
  if (isModelDir(dir) && !existsSync(join(dir, ADAPTER_CONFIG))) {
    const ft = await Model.load(dir);
    try {
      for (const [n, t] of base.params) {
        const f = ft.params.get(n);
        if (!f) throw new InputError(dir, n, 'tensor missing: the fine-tuned model does not have the base model\'s architecture');
        if (f.shape.some((s, i) => s !== t.shape[i])) throw new InputError(dir, n, `shape [${f.shape.join(', ')}] differs from the base model's [${t.shape.join(', ')}]`);
      }
    } catch (e) {
      ft.dispose();
      throw e;
    }
    const params = new Map(ft.params);
    return { name, source: dir, params, dispose: () => tf.dispose([...params.values()]) };
  }
  const adapter = await loadAnyAdapter(base, dir);
  let merged: Map<string, tf.Tensor>;
  try {
    merged = adapter.merged();
  } catch (e) {
    throw new InputError(dir, 'adapter', `cannot fold this ${adapter.spec.kind} adapter into the base weights: ${(e as Error).message}`);
  } finally {
    adapter.dispose();
  }
  // A fold that adds tensors the base lacks (SSF's shifts on Llama's bias-free linears) has no task
  // vector over the base's parameters: refuse, rather than drop part of the fine-tune.
  const added = [...merged.keys()].filter((n) => !base.params.has(n));
  if (added.length > 0) {
    tf.dispose([...merged.values()]);
    throw new InputError(dir, 'adapter', `folding this ${adapter.spec.kind} adapter in adds ${added.length} tensor(s) the base model does not have (${added[0]}${added.length > 1 ? ', …' : ''}), so it has no task vector over the base's weights`);
  }
  const params = new Map<string, tf.Tensor>();
  for (const [n, t] of merged) params.set(n, tf.keep(t));
  if (params.size === 0) throw new InputError(dir, 'adapter', `the ${adapter.spec.kind} adapter changes no base tensor when folded in (it cannot be merged)`);
  return { name, source: dir, params, dispose: () => tf.dispose([...params.values()]) };
}
