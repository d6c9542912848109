/**
 * Spec problems in the Problems panel. A spec is checked as it is opened and saved, by the
 * sidecar's own loader run here (schema, paths, model, data files: every problem at its place);
 * a job that failed on bad input (the sidecar names the file, the JSON path and line:column) marks
 * that file too (the spec, or a data file it names), until the spec runs or is checked again. An
 * edit clears a spec's marks: their places no longer hold.
 */
import { promises as fsp } from 'node:fs';
import { dirname, isAbsolute } from 'node:path';
import * as vscode from 'vscode';
import { InputError } from '../../../sidecar/src/errors';
import { loadSpec } from '../../../sidecar/src/spec/load';
import { specFieldProblems } from '../../../sidecar/src/spec/field-check';
import { workspaceFolderOf } from '../config';
import { DiagnosticOwners } from '../model/diagnostic-owners';
import { diagnosticRange, parseSpecError } from '../model/spec-errors';
import { isSpecPath } from './codelens';

export class SpecDiagnostics implements vscode.Disposable {
  private readonly collection = vscode.languages.createDiagnosticCollection('peft-lab');
  private readonly owners = new DiagnosticOwners();
  private readonly listeners: vscode.Disposable[];
  /** Per spec, the latest check's number: an older check that ends later is dropped. */
  private readonly checks = new Map<string, number>();

  constructor() {
    this.listeners = [
      vscode.workspace.onDidOpenTextDocument((d) => void this.check(d)),
      vscode.workspace.onDidSaveTextDocument((d) => void this.check(d)),
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (e.contentChanges.length && this.collection.has(e.document.uri)) this.collection.delete(e.document.uri);
      }),
    ];
    for (const d of vscode.workspace.textDocuments) void this.check(d);
  }

  /** Loads a spec document's file as a run would; marks each problem, or clears the marks when there is none. */
  async check(doc: vscode.TextDocument): Promise<void> {
    if (doc.uri.scheme !== 'file' || !isSpecPath(doc.uri.fsPath) || doc.isDirty) return;
    const specFile = doc.uri.fsPath;
    const n = (this.checks.get(specFile) ?? 0) + 1;
    this.checks.set(specFile, n);
    const current = () => this.checks.get(specFile) === n;
    try {
      const workspaceRoot = workspaceFolderOf(specFile);
      const spec = loadSpec(specFile, workspaceRoot ? { workspaceRoot } : {});
      // Names the data or the model cannot have (a misspelt column, a classifier key on a decoder).
      const problems = await specFieldProblems(spec);
      if (problems.length) await this.report(problems.map((e) => e.message), dirname(specFile), specFile, { replace: true, current });
      else this.clearSpec(specFile);
    } catch (err) {
      if (!(err instanceof InputError)) return; // not the spec's fault: the run will say
      await this.report(err.problems, dirname(specFile), specFile, { replace: true, current });
    }
  }

  /**
   * Shows error lines as diagnostics where they name a file (absolute, or relative to `baseDir`),
   * as failures of `specFile` (cleared by `clearSpec` when it runs again). Returns the first marked
   * file's URI. With `replace`, the spec's earlier marks go first; a check no longer `current` (a
   * newer one started while files were read) marks nothing.
   */
  async report(errorLines: readonly string[], baseDir?: string, specFile?: string, opts: { replace?: boolean; current?: () => boolean } = {}): Promise<vscode.Uri | undefined> {
    const byFile = new Map<string, { uri: vscode.Uri; diagnostics: vscode.Diagnostic[] }>();
    let first: vscode.Uri | undefined;
    for (const line of errorLines) {
      const loc = parseSpecError(line);
      if (!loc) continue;
      const file = isAbsolute(loc.file) ? loc.file : baseDir ? vscode.Uri.joinPath(vscode.Uri.file(baseDir), loc.file).fsPath : undefined;
      if (!file) continue;
      const uri = vscode.Uri.file(file);
      const text = await this.textOf(uri);
      if (text === undefined) continue;
      const r = diagnosticRange(text, loc);
      const d = new vscode.Diagnostic(new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character), loc.message, vscode.DiagnosticSeverity.Error);
      d.source = 'PEFT Lab';
      if (loc.path) d.code = loc.path;
      const entry = byFile.get(uri.fsPath) ?? { uri, diagnostics: [] };
      entry.diagnostics.push(d);
      byFile.set(uri.fsPath, entry);
      first ??= uri;
    }
    // From here on synchronous: nothing else runs between the staleness test and the marks.
    if (opts.current && !opts.current()) return undefined;
    if (opts.replace && specFile) this.clearSpec(specFile);
    for (const { uri, diagnostics } of byFile.values()) {
      this.collection.set(uri, diagnostics);
      if (specFile) this.owners.mark(vscode.Uri.file(specFile).fsPath, uri.fsPath);
    }
    return first;
  }

  /** As a spec runs (or is checked) again: its problems go, on the spec and on every file its last failure marked. */
  clearSpec(specFile: string): void {
    for (const file of this.owners.release(vscode.Uri.file(specFile).fsPath)) this.collection.delete(vscode.Uri.file(file));
  }

  clearAll(): void {
    this.collection.clear();
    this.owners.clear();
  }

  dispose(): void {
    for (const l of this.listeners) l.dispose();
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
