/**
 * Where the training loop meets the adapter zoo: building the run's adapter (with the data-aware
 * init provider and its calibration rows) and saving the final adapter.
 */
import { checkModulesToSave, createAdapter, type AdapterInstance } from '../adapters';
import { CALIBRATED_INITS, loraInitProvider, RESIDUAL_INITS } from '../adapters/inits';
import type { CalibrationRow } from '../adapters/inits/calibration';
import { savePeftAdapter, writePeftLora } from '../adapters/peft';
import type { LoadedData } from '../data/dataset';
import { AdapterOptionError, InputError } from '../errors';
import type { HostTensor } from '../io/safetensors';
import { fromTf } from '../io/tensors';
import type { Model } from '../models/model';
import type { ModelConfig } from '../models/config';
import type { RunConfig } from '../spec/types';

export type RunAdapter = AdapterInstance;

/**
 * Calibration samples for CorDA / LoRA-GA: the first `rows` training examples, each at its own length
 * (with a sentence pair's token types), as PEFT runs one forward pass per sample.
 */
export function calibrationRows(data: LoadedData, rows: number): CalibrationRow[] {
  return data.train.slice(0, rows).flatMap((e) => (e.kind === 'image' ? [] : [{ ids: e.ids, ...(e.kind === 'cls' && e.typeIds ? { typeIds: e.typeIds } : {}) }]));
}

export async function createRunAdapter(model: Model, cfg: RunConfig, data: LoadedData): Promise<RunAdapter> {
  const spec = cfg.adapter;
  const init = spec.init ?? 'default';
  try {
    let inits;
    let calib: CalibrationRow[] | undefined;
    if ((spec.kind === 'lora' || spec.kind === 'dora') && RESIDUAL_INITS.has(init)) {
      if (CALIBRATED_INITS.has(init)) {
        calib = calibrationRows(data, spec.calibRows ?? (init === 'lora-ga' ? 8 : 32));
        if (calib.length === 0) throw new InputError(cfg.specFile, 'adapter.init', `init "${init}" needs token rows for calibration; this data set has none`);
      }
      inits = loraInitProvider(init, calib, { seed: cfg.seed });
    }
    checkModulesToSave(model, spec.modulesToSave);
    return await createAdapter(model, spec, { seed: cfg.seed, ...(inits ? { inits } : {}) });
  } catch (e) {
    if (e instanceof InputError) throw e;
    // Adapter construction problems come from the spec's adapter section (an option of it, where known).
    throw new InputError(cfg.specFile, e instanceof AdapterOptionError ? `adapter.${e.option}` : 'adapter', (e as Error).message);
  }
}

/**
 * The final adapter in Hugging Face PEFT's format (LoRA, DoRA, LoHa, LoKr, VeRA, IA3, LN-tuning; inits
 * that changed the base are converted to act on the original base). Adapters PEFT has no format for
 * (other kinds; LoHa / LoKr on GPT-2's Conv1D modules) are written in the same layout with
 * `peft_type: "PEFT_LAB"`, the AdapterSpec, and every adapter tensor (trainable and frozen) under
 * PEFT Lab's names.
 */
export async function saveFinalAdapter(dir: string, adapter: RunAdapter, baseModel: string, log: (level: 'info' | 'warn', msg: string) => void, modelConfig?: ModelConfig): Promise<void> {
  const problem = adapter.peftFormatProblem();
  if (problem === undefined) {
    await savePeftAdapter(dir, adapter, { baseModel, ...(modelConfig ? { modelConfig } : {}) });
    return;
  }
  log('info', `${problem}: writing PEFT Lab's format (peft_type PEFT_LAB)`);
  const tensors = new Map<string, HostTensor>();
  for (const [n, t] of adapter.trainable) tensors.set(n, await fromTf(t));
  for (const [n, t] of adapter.frozen) tensors.set(n, await fromTf(t));
  const config = { peft_type: 'PEFT_LAB', peft_lab_spec: adapter.spec, base_model_name_or_path: baseModel, trainable: [...adapter.trainable.keys()].sort() };
  await writePeftLora(dir, { config, tensors });
}
