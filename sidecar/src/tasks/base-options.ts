/**
 * How to load the base model under a run or an adapter folder: the head size it was trained with.
 * A run says it (its spec's numLabels); a bare PEFT adapter folder shows it (the classifier it saved).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile } from '../io/safetensors';
import { readRunConfig, ADAPTER_DIR, SPEC_FILE } from '../train/run-folder';
import type { LoadOptions } from '../models/model';
import type { RunConfig } from '../spec/types';

/** A saved classifier's output layer: BERT's, DistilBERT's and ViT's `classifier`, RoBERTa's `classifier.out_proj`. */
export const HEAD_WEIGHT = /(^|\.)classifier(\.modules_to_save\.default)?(\.out_proj)?\.weight$/;

/** A run's head settings (the spec's numLabels and problemType) as load options. */
export function headOptions(cfg: Pick<RunConfig, 'numLabels' | 'problemType'>): LoadOptions {
  return { ...(cfg.numLabels !== undefined ? { numLabels: cfg.numLabels } : {}), ...(cfg.problemType !== undefined ? { problemType: cfg.problemType } : {}) };
}

export async function baseLoadOptions(dir: string | undefined): Promise<LoadOptions> {
  if (!dir) return {};
  if (existsSync(join(dir, SPEC_FILE))) return headOptions(await readRunConfig(dir));
  const file = [join(dir, ADAPTER_DIR, 'adapter_model.safetensors'), join(dir, 'adapter_model.safetensors')].find((f) => existsSync(f));
  if (!file) return {};
  const f = await SafetensorsFile.open(file);
  try {
    for (const [name, e] of f.entries) if (HEAD_WEIGHT.test(name) && e.shape.length === 2) return { numLabels: e.shape[0]! };
    return {};
  } finally {
    await f.close();
  }
}
