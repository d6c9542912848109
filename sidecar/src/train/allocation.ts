/**
 * A run spec's `"allocation"` (an entry of `peft-lab allocate`'s report, as the budget panel writes
 * it): reading it (a JSON file beside the spec, or inline) and turning it into the run's adapter.
 *
 *  - `lora`   → LoRA with the allocation's targets, r, alpha, rankPattern and alphaPattern (the
 *               exported adapter_config.json carries them as rank_pattern / alpha_pattern);
 *  - `sparse` → the `sparse` adapter with the allocation's mask file;
 *  - both     → LoRA, with a warning that the sparse part is not trained (no adapter kind does both);
 *  - `norms`  → ignored (the sparse adapter does not take norm parameters), with a warning.
 *
 * The spec's own `adapter`, when given, supplies the options the allocation does not set (dropout,
 * rslora, init, modulesToSave, ...) when its kind matches; otherwise only its modulesToSave is kept.
 */
import type { AdapterSpec, AllocationSpec } from '../../../src/protocol';
import { ADAPTER_OPTIONS } from '../spec/adapter-options';

export interface AllocationAdapter {
  adapter: AdapterSpec;
  warnings: string[];
}

/** The adapter an allocation configures (mask paths as given: the caller resolves them). */
export function adapterFromAllocation(alloc: AllocationSpec, base?: AdapterSpec): AllocationAdapter {
  const warnings: string[] = [];
  const keep = (kind: AdapterSpec['kind']): Partial<AdapterSpec> => {
    if (!base) return {};
    const allowed = ADAPTER_OPTIONS[kind] as readonly string[];
    const sameFamily = base.kind === kind || (kind === 'lora' && base.kind === 'dora');
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(base)) {
      if (k === 'kind' || !allowed.includes(k)) continue;
      if (sameFamily || k === 'modulesToSave') out[k] = v;
    }
    return out as Partial<AdapterSpec>;
  };
  if (alloc.norms && alloc.norms.params > 0)
    warnings.push(`allocation: its ${alloc.norms.params} norm parameters (${alloc.norms.mask}) are not trained (the sparse adapter takes linear weights and biases only)`);
  if (alloc.lora) {
    const kind = base?.kind === 'dora' ? 'dora' : 'lora';
    const l = alloc.lora;
    const adapter: AdapterSpec = {
      ...keep(kind),
      kind,
      targets: [...l.targets],
      r: l.r,
      alpha: l.alpha,
      ...(l.rankPattern && Object.keys(l.rankPattern).length ? { rankPattern: { ...l.rankPattern } } : {}),
      ...(l.alphaPattern && Object.keys(l.alphaPattern).length ? { alphaPattern: { ...l.alphaPattern } } : {}),
    };
    if (alloc.sparse && alloc.sparse.params > 0)
      warnings.push(`allocation: has both a LoRA part and a sparse part; training the LoRA part only (${l.params ?? '?'} parameters), the sparse part's ${alloc.sparse.params} parameters stay frozen`);
    return { adapter, warnings };
  }
  if (alloc.sparse) return { adapter: { ...keep('sparse'), kind: 'sparse', mask: alloc.sparse.mask }, warnings };
  throw new Error('the allocation has neither a "lora" nor a "sparse" part: nothing to train');
}
