/**
 * "Merge Runs…" (vscode-free): a `merge` job over run folders of one base model. The base and the
 * evaluation data come from the runs' own `spec.json` (what they were trained from); the merged
 * model goes to `merge-<method>-<time>` beside the first run.
 */
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MERGE_METHODS, type MergeJobParams, type MergeMethod } from '../../protocol';
import { runStamp } from './run-plan';

export const MERGE_METHOD_INFO: Record<MergeMethod, { description: string; minRuns: number }> = {
  'soup-uniform': { description: 'Average the fine-tunes (a uniform model soup)', minRuns: 2 },
  'soup-greedy': { description: 'Add fine-tunes best-first while the eval score does not drop', minRuns: 2 },
  ties: { description: 'Trim small changes, elect a sign per weight, average those that agree', minRuns: 2 },
  dare: { description: 'Drop changes at random and rescale the rest, then sum', minRuns: 1 },
  'dare-ties': { description: 'DARE dropping, then TIES sign election', minRuns: 2 },
  breadcrumbs: { description: 'Mask the largest and the smallest changes per tensor, then sum', minRuns: 1 },
  compeft: { description: 'Sparsify each task vector to signs times one scale, then sum', minRuns: 1 },
};

/** A run folder as the merge (and localization) needs it: its path, its name and its parsed spec.json. */
export interface RunInput {
  dir: string;
  name: string;
  config: unknown;
}

/** The non-empty string at this path of a parsed JSON value, if any. */
export const strAt = (o: unknown, ...path: string[]): string | undefined => {
  let v: unknown = o;
  for (const k of path) v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[k] : undefined;
  return typeof v === 'string' && v !== '' ? v : undefined;
};

/**
 * "Export Merged Model…": one run's adapter folded into its base (PEFT's merge_and_unload), written
 * as a standalone model folder `<run>-merged` in `folder`: a one-run uniform soup, base + Δ.
 */
export function planMergedModel(run: RunInput, folder: string): MergeJobParams | string {
  const base = strAt(run.config, 'modelDir');
  if (!base) return `${run.name} has no base model in its spec.json`;
  return { kind: 'merge', base, runs: [run.dir], method: 'soup-uniform', out: join(folder, `${basename(run.dir)}-merged`) };
}

/** The merge job for these runs and method, or why there is none. */
export function planMerge(runs: readonly RunInput[], method: MergeMethod, now = new Date(), exists: (p: string) => boolean = existsSync): MergeJobParams | string {
  if (!(MERGE_METHODS as readonly string[]).includes(method)) return `unknown merge method '${method}'`;
  const { minRuns } = MERGE_METHOD_INFO[method];
  if (runs.length < minRuns) return `${method} merges ${minRuns} or more runs; ${runs.length} chosen`;
  const bases = runs.map((r) => strAt(r.config, 'modelDir'));
  const missing = runs.find((_, i) => !bases[i]);
  if (missing) return `${missing.name} has no base model in its spec.json`;
  const other = runs.find((_, i) => bases[i] !== bases[0]);
  if (other) return `the runs were trained from different base models (${runs[0]!.name}: ${bases[0]}; ${other.name}: ${bases[runs.indexOf(other)]})`;
  // Evaluation rows: the first run's eval file, else a held-out part of its training data.
  const evalFile = strAt(runs[0]!.config, 'data', 'eval');
  const data = strAt(runs[0]!.config, 'data', 'train') ?? evalFile;
  if (!data && method === 'soup-greedy') return `soup-greedy ranks the runs by their eval score, and ${runs[0]!.name} names no data`;
  const stem = join(dirname(runs[0]!.dir), `merge-${method}-${runStamp(now)}`);
  let out = stem;
  for (let i = 2; exists(out); i++) out = `${stem}-${i}`;
  return { kind: 'merge', base: bases[0]!, runs: runs.map((r) => r.dir), method, ...(data ? { data } : {}), ...(evalFile && evalFile !== data ? { eval: evalFile } : {}), out };
}
