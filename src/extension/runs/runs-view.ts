/** The Runs view: runs grouped by spec, with state icons, key metrics and context actions. */
import * as vscode from 'vscode';
import { describeRun, groupRuns, runContextValue, runIcon, runLabel, runTooltip, type SpecGroup } from '../model/tree';
import type { RunInfo } from '../model/runs';
import * as config from '../config';
import type { WorkspaceRunsModel } from './runs-model';

export type RunsNode = { type: 'group'; group: SpecGroup } | { type: 'run'; run: RunInfo };

export class RunsTreeProvider implements vscode.TreeDataProvider<RunsNode>, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<RunsNode | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;
  private readonly sub: vscode.Disposable;
  private groups: SpecGroup[] = [];

  constructor(private readonly model: WorkspaceRunsModel) {
    this.sub = model.onDidChange(() => this.emitter.fire(undefined));
  }

  getChildren(node?: RunsNode): RunsNode[] {
    if (!node) {
      this.groups = groupRuns(this.model.list(), config.firstWorkspaceFolder());
      return this.groups.map((group) => ({ type: 'group', group }));
    }
    return node.type === 'group' ? node.group.runs.map((run) => ({ type: 'run', run })) : [];
  }

  getParent(node: RunsNode): RunsNode | undefined {
    if (node.type === 'group') return undefined;
    const group = this.groups.find((g) => g.runs.some((r) => r.dir === node.run.dir));
    return group ? { type: 'group', group } : undefined;
  }

  getTreeItem(node: RunsNode): vscode.TreeItem {
    const root = config.firstWorkspaceFolder();
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
    this.sub.dispose();
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
