/**
 * The Runs view: runs grouped by spec, with state icons, key metrics and context actions; then the
 * analysis reports found beside them (importance, budgets, localizations, merges, evaluations),
 * each opening its panel.
 */
import { isAbsolute, relative } from 'node:path';
import * as vscode from 'vscode';
import { findReportFiles, readReports, REPORT_GLOB, REPORT_KIND_INFO, reportDescription, reportLabel, type ReportInfo } from '../model/reports';
import { describeRun, groupRuns, runContextValue, runIcon, runLabel, runTooltip, type SpecGroup } from '../model/tree';
import type { RunInfo } from '../model/runs';
import * as config from '../config';
import type { WorkspaceRunsModel } from './runs-model';

export type RunsNode = { type: 'group'; group: SpecGroup } | { type: 'run'; run: RunInfo } | { type: 'reports'; reports: ReportInfo[] } | { type: 'report'; report: ReportInfo };

const REPORTS_DEBOUNCE_MS = 300;

export class RunsTreeProvider implements vscode.TreeDataProvider<RunsNode>, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<RunsNode | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly sub: vscode.Disposable;
  private groups: SpecGroup[] = [];
  private reports: ReportInfo[] = [];
  private reportsTimer: NodeJS.Timeout | undefined;
  private readonly watcher: vscode.FileSystemWatcher;

  constructor(private readonly model: WorkspaceRunsModel) {
    // A run's change may come with a report (a merge, a comparison's folder): look again then too.
    this.sub = model.onDidChange(() => {
      this.emitter.fire(undefined);
      this.refreshReportsSoon();
    });
    this.watcher = vscode.workspace.createFileSystemWatcher(REPORT_GLOB);
    for (const on of [this.watcher.onDidCreate, this.watcher.onDidDelete]) on(() => this.refreshReportsSoon());
    this.refreshReportsSoon();
  }

  private refreshReportsSoon(): void {
    if (this.reportsTimer) return;
    this.reportsTimer = setTimeout(() => {
      this.reportsTimer = undefined;
      // A failed search keeps the last list (the next change looks again).
      this.refreshReports().catch(() => undefined);
    }, REPORTS_DEBOUNCE_MS);
  }

  /** Report files in the workspace, and in the runs folder when the setting puts it outside. */
  private async refreshReports(): Promise<void> {
    const files = (await vscode.workspace.findFiles(REPORT_GLOB, '**/{node_modules,.git}/**', 500)).map((u) => u.fsPath);
    const runsFolder = this.model.root?.fsPath;
    const workspace = config.firstWorkspaceFolder();
    const inside = runsFolder && workspace && !relative(workspace, runsFolder).startsWith('..') && !isAbsolute(relative(workspace, runsFolder));
    if (runsFolder && !inside) files.push(...(await findReportFiles(runsFolder, 3)));
    const next = await readReports(files);
    const same = next.length === this.reports.length && next.every((r, i) => r.file === this.reports[i]!.file && r.mtime === this.reports[i]!.mtime);
    this.reports = next;
    if (!same) this.emitter.fire(undefined);
  }

  getChildren(node?: RunsNode): RunsNode[] {
    if (!node) {
      this.groups = groupRuns(this.model.list(), config.firstWorkspaceFolder());
      return [...this.groups.map((group): RunsNode => ({ type: 'group', group })), ...(this.reports.length ? [{ type: 'reports', reports: this.reports } as const] : [])];
    }
    if (node.type === 'group') return node.group.runs.map((run) => ({ type: 'run', run }));
    if (node.type === 'reports') return node.reports.map((report) => ({ type: 'report', report }));
    return [];
  }

  getParent(node: RunsNode): RunsNode | undefined {
    if (node.type === 'group' || node.type === 'reports') return undefined;
    if (node.type === 'report') return { type: 'reports', reports: this.reports };
    const group = this.groups.find((g) => g.runs.some((r) => r.dir === node.run.dir));
    return group ? { type: 'group', group } : undefined;
  }

  getTreeItem(node: RunsNode): vscode.TreeItem {
    const root = config.firstWorkspaceFolder();
    if (node.type === 'reports') {
      const item = new vscode.TreeItem('Reports', vscode.TreeItemCollapsibleState.Expanded);
      item.id = 'reports';
      item.description = `${node.reports.length}`;
      item.iconPath = new vscode.ThemeIcon('graph');
      item.contextValue = 'reports';
      return item;
    }
    if (node.type === 'report') {
      const r = node.report;
      const info = REPORT_KIND_INFO[r.kind];
      const item = new vscode.TreeItem(reportLabel(r), vscode.TreeItemCollapsibleState.None);
      item.id = `report:${r.file}`;
      item.description = reportDescription(r, root);
      item.tooltip = `${info.what}: ${r.file}`;
      item.iconPath = new vscode.ThemeIcon(info.icon);
      item.resourceUri = vscode.Uri.file(r.file);
      item.contextValue = `report:${r.kind}`;
      item.command = { command: info.command, title: 'Open', arguments: [info.command === 'vscode.open' ? vscode.Uri.file(r.file) : r.file] };
      return item;
    }
    if (node.type === 'group') {
      const g = node.group;
      const item = new vscode.TreeItem(g.label, vscode.TreeItemCollapsibleState.Expanded);
      item.id = `spec:${g.id}`;
      const running = g.runs.filter((r) => r.state === 'running').length;
      item.description = [g.description, running ? `${running} running` : ''].filter(Boolean).join(' · ');
      item.contextValue = g.spec ? 'spec' : 'specUnknown';
      item.iconPath = new vscode.ThemeIcon('json');
      if (g.spec) {
        item.resourceUri = vscode.Uri.file(g.spec);
        item.tooltip = g.spec;
      }
      return item;
    }
    const run = node.run;
    const item = new vscode.TreeItem(runLabel(run), vscode.TreeItemCollapsibleState.None);
    item.id = `run:${run.dir}`;
    item.description = describeRun(run);
    const icon = runIcon(run.state);
    item.iconPath = new vscode.ThemeIcon(icon.id, icon.color ? new vscode.ThemeColor(icon.color) : undefined);
    item.contextValue = runContextValue(run);
    item.tooltip = new vscode.MarkdownString(runTooltip(run, root));
    item.command = { command: 'peftLab.runs.openDashboard', title: 'Open Dashboard', arguments: [node] };
    return item;
  }

  dispose(): void {
    if (this.reportsTimer) clearTimeout(this.reportsTimer);
    this.sub.dispose();
    this.watcher.dispose();
    this.emitter.dispose();
  }
}

/** Creates the view; its badge counts running runs. */
export function createRunsView(model: WorkspaceRunsModel): { view: vscode.TreeView<RunsNode>; provider: RunsTreeProvider; disposables: vscode.Disposable[] } {
  const provider = new RunsTreeProvider(model);
  const view = vscode.window.createTreeView('peftLab.runs', { treeDataProvider: provider, canSelectMany: true, showCollapseAll: true });
  const update = () => {
    const running = model.list().filter((r) => r.state === 'running').length;
    view.badge = running ? { value: running, tooltip: `${running} run${running > 1 ? 's' : ''} in progress` } : undefined;
    view.message = vscode.workspace.workspaceFolders?.length ? undefined : 'Open a folder to see its runs.';
  };
  update();
  model.setViewVisible(view.visible);
  return { view, provider, disposables: [view, provider, model.onDidChange(update), view.onDidChangeVisibility((e) => model.setViewVisible(e.visible))] };
}
