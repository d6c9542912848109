/**
 * Command arguments → what the command works on. Commands are run from the palette (nothing), from
 * CodeLenses and editor/explorer menus (a Uri), from the runs view (a tree node, plus the selection),
 * and from other commands (a path string).
 */
import { resolve } from 'node:path';
import * as vscode from 'vscode';
import type { RunInfo } from '../model/runs';
import type { WorkspaceRunsModel } from '../runs/runs-model';
import type { RunsNode } from '../runs/runs-view';
import { isSpecPath } from '../specs/codelens';

function isUri(v: unknown): v is vscode.Uri {
  return v instanceof vscode.Uri;
}

/** A run or spec-group node of the runs view (report nodes name no run). */
type RunOrGroupNode = Extract<RunsNode, { type: 'run' | 'group' }>;
function isNode(v: unknown): v is RunOrGroupNode {
  return typeof v === 'object' && v !== null && ((v as RunsNode).type === 'run' || (v as RunsNode).type === 'group');
}

/** The spec a command is about: its argument, else the active editor's spec, else one picked from the workspace. */
export async function specFromArgs(args: readonly unknown[]): Promise<string | undefined> {
  const [a] = args;
  if (isUri(a)) return a.fsPath;
  if (typeof a === 'string' && a) return resolve(a);
  if (isNode(a)) return a.type === 'group' ? a.group.spec : a.run.spec;
  const active = vscode.window.activeTextEditor?.document.uri;
  if (active && isSpecPath(active.fsPath)) return active.fsPath;
  const found = await vscode.workspace.findFiles('**/*.peft.json', '**/{node_modules,.git}/**', 200);
  if (found.length === 0) {
    const choice = await vscode.window.showInformationMessage('PEFT Lab: no *.peft.json spec in this workspace.', 'New Fine-tune…');
    if (choice) await vscode.commands.executeCommand('peftLab.newFineTune');
    return undefined;
  }
  const pick = await vscode.window.showQuickPick(
    found.map((u) => ({ label: u.fsPath.split(/[\\/]/).pop() ?? u.fsPath, description: vscode.workspace.asRelativePath(u), uri: u })),
    { title: 'PEFT Lab: choose a spec', matchOnDescription: true },
  );
  return pick?.uri.fsPath;
}

/**
 * The runs a command is about: the view's selection when the clicked item is part of it (VS Code
 * passes `(clicked, selected[])`), else the clicked run, else a run folder path, else a pick among
 * the runs that `filter` accepts.
 */
export async function runsFromArgs(runs: WorkspaceRunsModel, args: readonly unknown[], filter: (r: RunInfo) => boolean, what: string): Promise<RunInfo[]> {
  const [first, second] = args;
  if (Array.isArray(second) && second.length > 1 && second.every(isNode)) {
    return second.filter((n): n is RunsNode & { type: 'run' } => n.type === 'run').map((n) => runs.get(n.run.dir) ?? n.run);
  }
  if (isNode(first)) return first.type === 'run' ? [runs.get(first.run.dir) ?? first.run] : first.group.runs;
  const dirs = (Array.isArray(first) ? first : [first]).map((x) => (isUri(x) ? x.fsPath : typeof x === 'string' ? resolve(x) : undefined)).filter((x): x is string => !!x);
  if (dirs.length) {
    await runs.ready();
    return dirs.map((d) => runs.get(d)).filter((r): r is RunInfo => !!r);
  }
  await runs.ready();
  const candidates = runs.list().filter(filter);
  if (candidates.length === 0) {
    void vscode.window.showInformationMessage(`PEFT Lab: no run to ${what}.`);
    return [];
  }
  const pick = await vscode.window.showQuickPick(
    candidates.map((r) => ({ label: r.name, description: r.state, detail: vscode.workspace.asRelativePath(r.dir), run: r })),
    { title: `PEFT Lab: choose a run to ${what}` },
  );
  return pick ? [pick.run] : [];
}
