/**
 * Which spec's failure marked which file (vscode-free). A failed job marks the file its error names,
 * which may be a data file rather than the spec; a file shows the problem of the failure that marked
 * it last. When a spec runs again, the spec and the files its failure marked are cleared, no others.
 */
export class DiagnosticOwners {
  /** file → the spec whose failure marked it. */
  private readonly owners = new Map<string, string>();

  mark(spec: string, file: string): void {
    this.owners.set(file, spec);
  }

  /** The files to clear as `spec` runs again (the spec first), forgotten from now on. */
  release(spec: string): string[] {
    const files = [spec];
    for (const [file, owner] of this.owners) {
      if (owner !== spec) continue;
      this.owners.delete(file);
      if (file !== spec) files.push(file);
    }
    return files;
  }

  clear(): void {
    this.owners.clear();
  }
}
