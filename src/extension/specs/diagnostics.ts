/**
 * Spec problems in the Problems panel: a job that failed on bad input (the sidecar names the file,
 * the JSON path and line:column) becomes a Diagnostic on that file (the spec, or a data file it
 * names), until the next run of the spec.
 */
import { promises as fsp } from 'node:fs';
import { isAbsolute } from 'node:path';
import * as vscode from 'vscode';
import { DiagnosticOwners } from '../model/diagnostic-owners';
import { diagnosticRange, parseSpecError } from '../model/spec-errors';

export class SpecDiagnostics implements vscode.Disposable {
  private readonly collection = vscode.languages.createDiagnosticCollection('peft-lab');
  private readonly owners = new DiagnosticOwners();

  /**
   * Shows an error line as a diagnostic when it names a file (absolute, or relative to `baseDir`),
   * as a failure of `specFile` (cleared by `clearSpec` when it runs again). Returns the file's URI
   * when it did.
   */
  async report(errorText: string, baseDir?: string, specFile?: string): Promise<vscode.Uri | undefined> {
    const loc = parseSpecError(errorText);
    if (!loc) return undefined;
    const file = isAbsolute(loc.file) ? loc.file : baseDir ? vscode.Uri.joinPath(vscode.Uri.file(baseDir), loc.file).fsPath : undefined;
    if (!file) return undefined;
    const uri = vscode.Uri.file(file);
    const text = await this.textOf(uri);
    if (text === undefined) return undefined;
    const r = diagnosticRange(text, loc);
    const range = new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
    const d = new vscode.Diagnostic(range, loc.message, vscode.DiagnosticSeverity.Error);
    d.source = 'PEFT Lab';
    if (loc.path) d.code = loc.path;
    this.collection.set(uri, [d]);
    if (specFile) this.owners.mark(vscode.Uri.file(specFile).fsPath, uri.fsPath);
    return uri;
  }

  /** As a spec runs again: its problems go, on the spec and on every file its last failure marked. */
  clearSpec(specFile: string): void {
    for (const file of this.owners.release(vscode.Uri.file(specFile).fsPath)) this.collection.delete(vscode.Uri.file(file));
  }

  clearAll(): void {
    this.collection.clear();
    this.owners.clear();
  }

  dispose(): void {
    this.collection.dispose();
  }

  /** The open document's text (what the user sees), else the file's. */
  private async textOf(uri: vscode.Uri): Promise<string | undefined> {
    const open = vscode.workspace.textDocuments.find((d) => d.uri.fsPath === uri.fsPath);
    if (open) return open.getText();
    try {
      return await fsp.readFile(uri.fsPath, 'utf8');
    } catch {
      return undefined;
    }
  }
}
