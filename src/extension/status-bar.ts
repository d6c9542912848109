/** The status bar item: sidecar state and backend (wasm / WebGPU / CUDA), active jobs; click for status or restart. */
import * as vscode from 'vscode';
import { statusBarView } from './model/status-text';
import type { SidecarClient } from './sidecar';

export class SidecarStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('peftLab.sidecar', vscode.StatusBarAlignment.Left, 0);
  private readonly subs: vscode.Disposable[];

  constructor(private readonly sidecar: SidecarClient) {
    this.item.name = 'PEFT Lab Sidecar';
    this.subs = [sidecar.onDidChangeState(() => this.render()), sidecar.onDidChangeBackend(() => this.render()), sidecar.onDidChangeJobs(() => this.render())];
    this.render();
    this.item.show();
  }

  render(): void {
    const jobs = this.sidecar.activeJobs;
    const progress = jobs.length === 1 ? jobs[0]!.progress : undefined;
    const view = statusBarView({
      state: this.sidecar.state,
      ...(this.sidecar.backend ? { backend: this.sidecar.backend } : {}),
      jobs: jobs.length,
      ...(progress ? { progress: { done: progress.done, total: progress.total } } : {}),
      ...(this.sidecar.lastError ? { lastError: this.sidecar.lastError } : {}),
      restarts: this.sidecar.recentCrashes,
    });
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    this.item.command = this.sidecar.state === 'failed' ? 'peftLab.restartSidecar' : 'peftLab.showStatus';
  }

  dispose(): void {
    this.subs.forEach((s) => s.dispose());
    this.item.dispose();
  }
}
