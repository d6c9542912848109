/** CodeLenses above a `*.peft.json` spec: ▶ Fine-tune (or its progress and Cancel), Score layers, Compare variants. */
import { resolve } from 'node:path';
import * as vscode from 'vscode';
import { specLenses } from '../model/codelens';
import type { ActiveJob, SidecarClient } from '../sidecar';

export const SPEC_SELECTOR: vscode.DocumentSelector = [
  { language: 'json', pattern: '**/*.peft.json' },
  { language: 'jsonc', pattern: '**/*.peft.json' },
];

export function isSpecPath(p: string): boolean {
  return /\.peft\.json$/i.test(p);
}

/** The active train job (a new run or a resumed one) of a spec, if any. */
export function trainJobOf(sidecar: SidecarClient, specFile: string): ActiveJob | undefined {
  const want = resolve(specFile);
  return sidecar.activeJobs.find((j) => j.params.kind === 'train' && resolve(j.params.spec) === want);
}

export class SpecCodeLensProvider implements vscode.CodeLensProvider, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.emitter.event;
  private readonly subs: vscode.Disposable[];
  private throttle: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly sidecar: SidecarClient) {
    // Progress arrives every step: redraw the lenses at most once a second.
    this.subs = [sidecar.onDidChangeJobs(() => this.refreshSoon()), vscode.workspace.onDidGrantWorkspaceTrust(() => this.emitter.fire())];
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    const job = trainJobOf(this.sidecar, doc.uri.fsPath);
    const running = job ? { done: job.progress?.done ?? 0, total: job.progress?.total ?? 0 } : undefined;
    return specLenses(doc.getText(), running).map((lens) => {
      const range = new vscode.Range(lens.position.line, 0, lens.position.line, 0);
      switch (lens.kind) {
        case 'train':
          return new vscode.CodeLens(range, { title: lens.title, command: 'peftLab.fineTune', arguments: [doc.uri], tooltip: 'Fine-tune with this spec in the PEFT Lab sidecar' });
        case 'running': {
          const runDir = job?.params.kind === 'train' ? job.params.runDir : undefined;
          return new vscode.CodeLens(range, runDir ? { title: lens.title, command: 'peftLab.openDashboard', arguments: [runDir], tooltip: 'Open the training dashboard' } : { title: lens.title, command: '' });
        }
        case 'cancel':
          return new vscode.CodeLens(range, { title: lens.title, command: 'peftLab.cancelJob', arguments: [job?.id], tooltip: 'Cancel the fine-tune (the last checkpoint is kept)' });
        case 'score':
          return new vscode.CodeLens(range, { title: lens.title, command: 'peftLab.scoreLayers', arguments: [doc.uri], tooltip: 'Score how much each layer matters for this data' });
        case 'compare':
          return new vscode.CodeLens(range, { title: lens.title, command: 'peftLab.compareVariants', arguments: [doc.uri], tooltip: 'Train every variant and compare them' });
      }
    });
  }

  private refreshSoon(): void {
    if (this.throttle) return;
    this.throttle = setTimeout(() => {
      this.throttle = undefined;
      this.emitter.fire();
    }, 1000);
  }

  dispose(): void {
    clearTimeout(this.throttle);
    this.subs.forEach((s) => s.dispose());
    this.emitter.dispose();
  }
}
