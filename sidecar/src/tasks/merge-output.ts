/**
 * Where a merge writes its model folder (no TF.js here: the extension checks a folder with it
 * before it asks to replace one).
 */
import { promises as fsp } from 'node:fs';
import { resolve } from 'node:path';
import type { MergeJobParams } from '../../../src/protocol';
import { InputError } from '../errors';
import { modelFolder } from '../spec/hub-cache';
import { realpathLoose } from '../spec/paths';

export const MERGE_JSON = 'merge.json';
/** Files of a model folder worth carrying to the merged one (the tokenizer, its chat template, generation defaults). */
export const MODEL_FILES_COPIED = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.model',
  'chat_template.jinja',
  'chat_template.json',
  'vocab.json',
  'merges.txt',
  'vocab.txt',
  'preprocessor_config.json',
];
const MERGED_FOLDER_FILES = new Set([...MODEL_FILES_COPIED, 'model.safetensors', MERGE_JSON]);

/**
 * The merged model's folder may be new, empty, or an earlier merge's (whose files are replaced);
 * never the base or a run, nor a folder of other files: they would be overwritten or mixed.
 */
export async function checkMergeOutput(p: Pick<MergeJobParams, 'out' | 'base' | 'runs'>): Promise<void> {
  const out = resolve(p.out);
  // Real paths: a link to the base (a hub snapshot, say) is the base.
  const real = realpathLoose(out);
  for (const [what, dir] of [['base model', modelFolder(p.base)], ...p.runs.map((r) => ['run', r])] as const)
    if (realpathLoose(dir) === real) throw new InputError(out, '', `is the ${what} folder${real !== out ? ` (through a link, ${real})` : ''}: give a new folder for the merged model`);
  const st = await fsp.stat(out).catch(() => undefined);
  if (!st) return;
  if (!st.isDirectory()) throw new InputError(out, '', 'is a file: give a new folder for the merged model');
  const others = (await fsp.readdir(out)).filter((f) => !MERGED_FOLDER_FILES.has(f)).sort();
  if (others.length) throw new InputError(out, '', `holds other files than a merged model's (${others.slice(0, 3).join(', ')}${others.length > 3 ? ', …' : ''}): give a new folder`);
}
