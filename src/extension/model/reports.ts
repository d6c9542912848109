/**
 * The analysis reports beside the runs (vscode-free): layer importance (`importance.json`),
 * parameter budgets (`allocation.json`, `allocation-2.json`, …), skill localization
 * (`localize.json`), task-vector merges (`merge.json`) and evaluations on other data
 * (`evaluation.json`), wherever "Score layers", the importance panel, "Localize Skill…", "Merge
 * Runs…", "Evaluate on Data…" or the command line wrote them. The Runs view lists them
 * so that a report closed in the editor is one click away.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { PanelKind } from '../../protocol/webview';
import { walkFolders } from './run-discovery';
import { COMPARE_FILE } from './runs';
import { displayPath } from './tree';

export type ReportKind = 'importance' | 'budget' | 'localization' | 'merge' | 'evaluation';

export interface ReportInfo {
  kind: ReportKind;
  file: string;
  /** Modification time (ms): newest first. */
  mtime: number;
}

/** The report a file name is, or undefined. (`<x>.<key>.allocation.json`, the allocation a spec trains with, is not a report.) */
export function reportKindOf(file: string): ReportKind | undefined {
  const name = basename(file);
  if (name === 'importance.json') return 'importance';
  if (/^allocation(-\d+)?\.json$/.test(name)) return 'budget';
  if (name === 'localize.json') return 'localization';
  if (name === 'merge.json') return 'merge';
  if (name === 'evaluation.json') return 'evaluation';
  return undefined;
}

/** The panel that shows a file, by its name (a merge's report has none: it opens as text); undefined for any other file. */
export function panelKindOfFile(file: string): Exclude<PanelKind, 'dashboard'> | undefined {
  if (basename(file) === COMPARE_FILE) return 'comparison';
  const kind = reportKindOf(file);
  return kind === 'merge' ? undefined : kind;
}

/** The glob of every report file name, for file searches and watchers. */
export const REPORT_GLOB = '**/{importance.json,allocation.json,allocation-*.json,localize.json,merge.json,evaluation.json}';

export const REPORT_KIND_INFO: Record<ReportKind, { what: string; icon: string; command: string }> = {
  importance: { what: 'layer importance', icon: 'flame', command: 'peftLab.openImportance' },
  budget: { what: 'parameter budget', icon: 'pie-chart', command: 'peftLab.openBudget' },
  localization: { what: 'skill localization', icon: 'target', command: 'peftLab.openLocalization' },
  merge: { what: 'merged model', icon: 'git-merge', command: 'vscode.open' },
  evaluation: { what: 'evaluation', icon: 'checklist', command: 'peftLab.openEvaluation' },
};

/** Its label: the report's folder (what "Score layers", "Localize Skill…" and "Merge Runs…" name), and an allocation's file when it is not the first. */
export function reportLabel(r: ReportInfo): string {
  const folder = basename(dirname(r.file));
  return r.kind === 'budget' && basename(r.file) !== 'allocation.json' ? `${folder}/${basename(r.file)}` : folder;
}

/** What it is and where (relative to the workspace when inside it). */
export function reportDescription(r: ReportInfo, workspaceRoot: string | undefined): string {
  return `${REPORT_KIND_INFO[r.kind].what} · ${displayPath(dirname(dirname(r.file)), workspaceRoot) || '.'}`;
}

/** Report files as found (paths, any order, duplicates allowed) → reports, newest first, at most `limit`. */
export async function readReports(files: Iterable<string>, limit = 100): Promise<ReportInfo[]> {
  const seen = new Set<string>();
  const out: ReportInfo[] = [];
  await Promise.all(
    [...files].map(async (file) => {
      const kind = reportKindOf(file);
      if (!kind || seen.has(file)) return;
      seen.add(file);
      try {
        out.push({ kind, file, mtime: (await fsp.stat(file)).mtimeMs });
      } catch {
        // gone since it was found
      }
    }),
  );
  return out.sort((a, b) => b.mtime - a.mtime || a.file.localeCompare(b.file)).slice(0, limit);
}

/** Report files at most `depth` folders below `dir` (for a runs folder outside the workspace, which file searches do not reach). */
export async function findReportFiles(dir: string, depth: number, limit = 2000): Promise<string[]> {
  const found: string[] = [];
  await walkFolders(
    dir,
    depth + 1,
    (p, e) => {
      if (e.isFile() && reportKindOf(p)) found.push(p);
      return true;
    },
    limit,
  );
  return found;
}
