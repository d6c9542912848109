/**
 * The chart panels: commands that open them and serializers that restore them after a reload.
 *   peftLab.openDashboard     run folders (one or more)  → live loss, lr, tokens/s, progress
 *   peftLab.openImportance    importance.json            → layers × module-types heatmap
 *   peftLab.openBudget        allocation JSON            → per-layer parameter budget
 *   peftLab.openComparison    compare.json               → adapter comparison table + curves
 *   peftLab.openLocalization  localize.json              → sparsity vs recovered gain, mask density, overlap
 *   peftLab.openEvaluation    evaluation.json            → runs vs their base on a data file: loss, metric, calibration
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { panelViewType } from '../../protocol/webview';
import { logTo, messageOf, PanelBase, type PanelType } from './base';
import { dashboardType, pickRuns } from './dashboard';
import type { PanelDeps } from './deps';
import { budgetType, comparisonType, evaluationType, importanceType, localizationType } from './json-panels';
import { panelKindOfFile } from '../model/reports';
import { pathsFromArgs } from './shaping/args';

interface FileCommand {
  command: string;
  type: PanelType;
  /** The file to look for when given a folder. */
  defaultName: string;
  what: string;
}

const FILE_COMMANDS: FileCommand[] = [
  { command: 'peftLab.openImportance', type: importanceType, defaultName: 'importance.json', what: 'an importance report (importance.json)' },
  { command: 'peftLab.openBudget', type: budgetType, defaultName: 'allocation.json', what: 'an allocation report (peft-lab allocate)' },
  { command: 'peftLab.openComparison', type: comparisonType, defaultName: 'compare.json', what: 'a comparison (compare.json)' },
  { command: 'peftLab.openLocalization', type: localizationType, defaultName: 'localize.json', what: 'a localization report (localize.json)' },
  { command: 'peftLab.openEvaluation', type: evaluationType, defaultName: 'evaluation.json', what: 'an evaluation report (evaluation.json)' },
];

const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

/**
 * The file a JSON panel shows: from the arguments (a folder means its default file), the active
 * editor when its file is this panel's kind of report (by name: not any JSON, say package.json),
 * or a dialog.
 */
async function fileFrom(args: unknown[], c: FileCommand, deps: PanelDeps): Promise<string | undefined> {
  let file: string | undefined = pathsFromArgs(args)[0];
  if (!file) {
    const active = vscode.window.activeTextEditor?.document.uri;
    if (active?.scheme === 'file' && panelKindOfFile(active.fsPath) === c.type.kind) file = active.fsPath;
  }
  if (!file) {
    const picked = await vscode.window.showOpenDialog({
      title: `Open ${c.what}`,
      canSelectMany: false,
      filters: { JSON: ['json'] },
      ...(deps.runs.root ? { defaultUri: deps.runs.root } : {}),
    });
    file = picked?.[0]?.fsPath;
  }
  if (file && isDir(file)) file = join(file, c.defaultName);
  if (file && !existsSync(file)) throw new Error(`${file} does not exist`);
  return file;
}

/** Registers the panel commands and serializers; the caller owns the returned disposables. */
export function registerPanels(_context: vscode.ExtensionContext, deps: PanelDeps): vscode.Disposable[] {
  const guard =
    (id: string, body: (...args: unknown[]) => Promise<void>) =>
    async (...args: unknown[]): Promise<void> => {
      try {
        await body(...args);
      } catch (err) {
        logTo(deps.log, 'error', `${id}: ${messageOf(err)}`);
        void vscode.window.showErrorMessage(`PEFT Lab: ${messageOf(err)}`);
      }
    };
  const disposables: vscode.Disposable[] = [
    vscode.commands.registerCommand(
      'peftLab.openDashboard',
      guard('peftLab.openDashboard', async (...args) => {
        let dirs = pathsFromArgs(args);
        if (!dirs.length) dirs = await pickRuns(deps);
        if (!dirs.length) return;
        const missing = dirs.filter((d) => !isDir(d));
        if (missing.length) throw new Error(`not a run folder: ${missing.join(', ')}`);
        PanelBase.createOrShow(dashboardType, deps, dirs);
      }),
    ),
    ...FILE_COMMANDS.map((c) =>
      vscode.commands.registerCommand(
        c.command,
        guard(c.command, async (...args) => {
          const file = await fileFrom(args, c, deps);
          // `{ beside: true }` among the arguments: beside the active editor (a panel opening another).
          const beside = args.some((a) => typeof a === 'object' && a !== null && (a as { beside?: unknown }).beside === true);
          if (file) PanelBase.createOrShow(c.type, deps, [file], beside ? vscode.ViewColumn.Beside : vscode.ViewColumn.Active);
        }),
      ),
    ),
    ...[dashboardType, ...FILE_COMMANDS.map((c) => c.type)].map((t) => vscode.window.registerWebviewPanelSerializer(panelViewType(t.kind), PanelBase.serializer(t, deps))),
  ];
  return disposables;
}
