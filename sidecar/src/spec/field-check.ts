/**
 * What a loaded spec names that its data or model cannot have, found without training: field names
 * missing from the data files' columns (every field key the spec writes, a second text, a prompt
 * template's fields) and classifier settings on a model that is no classifier. The editor marks
 * them on save; a run would stop on them only after loading the model and reading the data.
 */
import { existsSync, readFileSync } from 'node:fs';
import { firstRowFields } from '../data/rows';
import { parsePromptTemplate } from '../data/prompt-template';
import { InputError } from '../errors';
import { readConfig, TEXT_CLASSIFIER_TYPES } from '../models/config';
import type { DataSpec, ResolvedSpec } from './types';

/** The data keys that name a column. */
const FIELD_KEYS = ['textField', 'textPairField', 'promptField', 'completionField', 'messagesField', 'labelField'] as const;

/**
 * The data keys the spec file itself writes. A defaulted field (text, prompt + completion,
 * messages) is one the loader looks for row by row, so only a written one is a mistake when absent.
 */
function writtenDataKeys(specFile: string): Set<string> {
  try {
    const data = (JSON.parse(readFileSync(specFile, 'utf8')) as { data?: unknown }).data;
    if (data && typeof data === 'object' && !Array.isArray(data)) return new Set(Object.keys(data));
  } catch {
    /* unreadable now: the loader read it a moment ago, and will say so on the next check */
  }
  return new Set();
}

export async function specFieldProblems(spec: ResolvedSpec): Promise<InputError[]> {
  const out: InputError[] = [];
  const at = (where: string, problem: string) => out.push(new InputError(spec.specFile, where, problem));
  const d = spec.data;
  const written = writtenDataKeys(spec.specFile);
  // Each data file's first-row columns (JSONL, CSV, Parquet); an image folder or an unreadable file: nothing to say here.
  for (const file of d.eval !== undefined ? [d.train, d.eval] : [d.train]) {
    const columns = d.format !== 'images' && existsSync(file) ? await firstRowFields(file).catch(() => undefined) : undefined;
    if (columns) fileFieldProblems(d, written, file, columns, at);
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

/** The field names of `d` that `file`'s columns lack: the written ones, the first text of a pair, a template's fields. */
function fileFieldProblems(d: DataSpec, written: ReadonlySet<string>, file: string, columns: readonly string[], at: (where: string, problem: string) => void): void {
  const list = columns.join(', ');
  const missing = (name: string) => `"${name}" is not a column of ${file} (columns: ${list})`;
  for (const key of FIELD_KEYS) {
    const name = d[key];
    if (name === undefined || columns.includes(name)) continue;
    // Sentence pairs read textField as their first text, written or not.
    if (key === 'textField' && d.textPairField !== undefined) at('data.textField', `${missing(name)}; sentence pairs read it as their first text`);
    // textPairField has no default: set is written.
    else if (written.has(key) || key === 'textPairField') at(`data.${key}`, missing(name));
  }
  const parts = d.promptTemplate !== undefined ? parsePromptTemplate(d.promptTemplate) : [];
  if (typeof parts !== 'string')
    for (const p of parts) if ('field' in p && !columns.includes(p.field)) at('data.promptTemplate', `{${p.field}} is not a column of ${file} (columns: ${list})`);
}
