/** The bench's LoRA case: PEFT-style LoRA (default init, dropout 0) on the given targets. */
import type { LoraFactory } from '../bench/bench';
import { AdapterCore } from './core';
import { buildLora } from './family';
import { loraModules } from './index';
import { selectLinears } from './targets';

export function loraFactory(): LoraFactory {
  return (model, rank, alpha, targets) => {
    const spec = { kind: 'lora' as const, targets, r: rank, alpha };
    const core = new AdapterCore(model, spec, 0);
    try {
      const modules = loraModules(spec, 0, selectLinears(model, { targets }));
      buildLora(core, { dora: false, rslora: false, dropout: 0, r: rank, alpha, rankPattern: {}, alphaPattern: {}, loraBias: false, bias: 'none', modulesToSave: [], initLabel: true, modules, embeddings: [] });
    } catch (e) {
      core.dispose();
      throw e;
    }
    return { trainable: core.trainable, hooks: core.hooks, dispose: () => core.dispose() };
  };
}
