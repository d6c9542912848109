/**
 * The analysis jobs the editor starts on finished work (vscode-free): "Allocate Parameter Budget…"
 * (an `allocate` job on an importance report: SPT and rank allocations per budget), "Localize
 * Skill…" (a `localize` job on a run: which few base parameters, grafted from the fine-tune,
 * recover its gain) and "Evaluate on Data…" (an `evaluate` job: runs and their base scored on a
 * data file). Inputs typed by the user are checked here, before a job starts.
 */
import { existsSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { IMPORTANCE_METHODS, type AllocateJobParams, type EvaluateJobParams, type ImportanceMethod, type LocalizeJobParams } from '../../protocol';
import { strAt, type RunInput } from './merge-plan';
import { runStamp } from './run-plan';

export const DEFAULT_BUDGETS = '0.1%, 0.5%, 1%';
export const DEFAULT_SPARSITY = '1e-4, 1e-3, 1e-2';
export const DEFAULT_EPOCHS = '10';

const items = (text: string): string[] => text.split(/[\s,]+/).filter(Boolean);

/** Budgets as typed ("0.5%, 1%, 20000"): each a percentage of the model's parameters or a count; else why not. */
export function parseBudgets(text: string): string[] | string {
  const budgets = items(text);
  if (!budgets.length) return 'give one or more budgets, e.g. 0.5%, 1%';
  const bad = budgets.find((b) => !/^(\d+\.?\d*|\.\d+)(e[-+]?\d+)?%$/i.test(b) && !/^\d+$/.test(b));
  if (bad) return `'${bad}' is not a budget: a percentage of the model's parameters (0.5%) or a parameter count (20000)`;
  if (budgets.some((b) => b.endsWith('%') && Number(b.slice(0, -1)) > 100)) return 'a budget is at most 100% of the parameters';
  return budgets;
}

/** Sparsity levels ρ as typed ("1e-4, 1e-3"): each in (0, 1]; else why not. */
export function parseSparsity(text: string): number[] | string {
  const levels = items(text);
  if (!levels.length) return 'give one or more sparsity levels, e.g. 1e-3';
  const bad = levels.find((l) => !(Number(l) > 0 && Number(l) <= 1));
  if (bad !== undefined) return `'${bad}' is not a sparsity level: a fraction of the block parameters in (0, 1], e.g. 1e-3`;
  return levels.map(Number);
}

export function parseEpochs(text: string): number | string {
  const n = Number(text.trim());
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : `'${text.trim()}' is not a number of epochs (1 to 1000)`;
}

/** A free path from a stem: the stem, else stem-2, stem-3, … (nothing computed before is overwritten). */
function freePath(stem: string, ext: string, exists: (p: string) => boolean): string {
  let out = `${stem}${ext}`;
  for (let i = 2; exists(out); i++) out = `${stem}-${i}${ext}`;
  return out;
}

/**
 * The allocate job for an importance report (`importance.json` of a "Score layers" folder): the
 * report goes beside it as `allocation.json` (then `allocation-2.json`, …), scored by the method
 * the panel shows when it is one the allocator takes.
 */
export function planAllocate(importanceFile: string, budgetsText: string, method: string | undefined, exists: (p: string) => boolean = existsSync): AllocateJobParams | string {
  const budgets = parseBudgets(budgetsText);
  if (typeof budgets === 'string') return budgets;
  // Panel ids name a view of a method ("fisher:sum", "grad-norm:l2"); the allocator takes the method.
  const base = method?.split(':')[0] ?? '';
  const m = (IMPORTANCE_METHODS as readonly string[]).includes(base) ? (base as ImportanceMethod) : undefined;
  return { kind: 'allocate', importance: importanceFile, budgets, ...(m ? { method: m } : {}), out: freePath(join(dirname(importanceFile), 'allocation'), '.json', exists) };
}

/**
 * The localize job for one run: its base model and data from its spec.json, the report into
 * `localize-<run>-<time>/` beside the run folder.
 */
export function planLocalize(run: RunInput, sparsityText: string, epochsText: string, now = new Date(), exists: (p: string) => boolean = existsSync): LocalizeJobParams | string {
  const base = strAt(run.config, 'modelDir');
  if (!base) return `${run.name} has no base model in its spec.json`;
  const sparsity = parseSparsity(sparsityText);
  if (typeof sparsity === 'string') return sparsity;
  const epochs = parseEpochs(epochsText);
  if (typeof epochs === 'string') return epochs;
  const out = freePath(join(dirname(run.dir), `localize-${basename(run.dir)}-${runStamp(now)}`), '', exists);
  return { kind: 'localize', base, runs: [run.dir], sparsity, epochs, out };
}

/** The evaluate job for runs on a data file: the report into `eval-<data>-<time>/evaluation.json` beside the first run. */
export function planEvaluate(runs: readonly { dir: string }[], dataFile: string, now = new Date(), exists: (p: string) => boolean = existsSync): EvaluateJobParams | string {
  if (runs.length === 0) return 'no run chosen';
  const stem = basename(dataFile, extname(dataFile)).replace(/[^A-Za-z0-9._-]+/g, '_') || 'data';
  const folder = freePath(join(dirname(runs[0]!.dir), `eval-${stem}-${runStamp(now)}`), '', exists);
  return { kind: 'evaluate', runs: runs.map((r) => r.dir), data: dataFile, out: join(folder, 'evaluation.json') };
}
