/**
 * Typed errors for bad user input. Each names the file and the place, and fits on one line, so the
 * CLI can print it as is and the extension can turn it into a diagnostic.
 */
export class InputError extends Error {
  constructor(
    readonly file: string,
    readonly where: string,
    readonly problem: string,
  ) {
    super(`${file}${where ? ` (${where})` : ''}: ${problem}`);
    this.name = 'InputError';
  }
}

/** A one-line message for any thrown value. */
export function errorMessage(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n')[0] ?? msg;
}
