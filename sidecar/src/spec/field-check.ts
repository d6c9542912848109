/**
 * What a loaded spec names that its data or model cannot have, found without training: field names
 * missing from the data file's columns (a second text, a prompt template's fields) and classifier
 * settings on a model that is no classifier. The editor marks them on save; a run would stop on
 * them only after loading the model and reading the data.
 */
import { existsSync } from 'node:fs';
import { firstRowFields } from '../data/rows';
import { parsePromptTemplate } from '../data/prompt-template';
import { InputError } from '../errors';
import { readConfig, TEXT_CLASSIFIER_TYPES } from '../models/config';
import type { ResolvedSpec } from './types';

export async function specFieldProblems(spec: ResolvedSpec): Promise<InputError[]> {
  const out: InputError[] = [];
  const at = (where: string, problem: string) => out.push(new InputError(spec.specFile, where, problem));
  const d = spec.data;
  // Columns of the first row (JSONL, CSV, Parquet); an image folder or an unreadable file: nothing to say here.
  const columns = d.format !== 'images' && existsSync(d.train) ? await firstRowFields(d.train).catch(() => undefined) : undefined;
  if (columns) {
    const has = (f: string) => columns.includes(f);
    const list = columns.join(', ');
    if (d.textPairField !== undefined) {
      if (!has(d.textPairField)) at('data.textPairField', `"${d.textPairField}" is not a column of ${d.train} (columns: ${list})`);
      if (!has(d.textField)) at('data.textField', `"${d.textField}" is not a column of ${d.train} (columns: ${list}); sentence pairs read it as their first text`);
    }
    const parts = d.promptTemplate !== undefined ? parsePromptTemplate(d.promptTemplate) : [];
    if (typeof parts !== 'string')
      for (const p of parts) if ('field' in p && !has(p.field)) at('data.promptTemplate', `{${p.field}} is not a column of ${d.train} (columns: ${list})`);
  }
  let modelType: string | undefined;
  try {
    modelType = readConfig(spec.modelDir).modelType;
  } catch {
    return out; // the model's own problems are the loader's to report
  }
  if (!(TEXT_CLASSIFIER_TYPES as readonly string[]).includes(modelType) && modelType !== 'vit') {
    for (const [key, set] of [['numLabels', spec.numLabels !== undefined], ['problemType', spec.problemType !== undefined], ['data.textPairField', d.textPairField !== undefined]] as const)
      if (set) at(key, `is for classifiers; ${modelType} here is a causal language model`);
  }
  return out;
}
