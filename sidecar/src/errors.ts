/**
 * Typed errors for bad user input. Each names the file and the place, and fits on one line, so the
 * CLI can print it as is and the extension can turn it into a diagnostic.
 */
export class InputError extends Error {
  constructor(
    /** The file at fault; '' when the input is an argument (a job parameter, a command-line option). */
    readonly file: string,
    /** The place in the file, or the argument's name when there is no file. */
    readonly where: string,
    readonly problem: string,
  ) {
    super(file ? `${file}${where ? ` (${where})` : ''}: ${problem}` : `${where ? `${where}: ` : ''}${problem}`);
    this.name = 'InputError';
  }

  /** Each problem as its own error line (`file (where): problem`), where there are several (a spec's). */
  get problems(): string[] {
    return [this.message];
  }
}

/** A one-line message for any thrown value. */
export function errorMessage(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  // Emscripten's abort (the wasm backend's heap, which stops near 3.6 GiB, ran out) says nothing useful.
  if (/^Aborted\(/u.test(msg)) return WASM_ABORT;
  return msg.split('\n')[0] ?? msg;
}

export const WASM_ABORT =
  'the WebAssembly backend ran out of memory (its heap stops near 3.6 GiB): lower batchSize or data.maxLength, or use a native backend (@tensorflow/tfjs-node); the sidecar restarts to recover';

/** A problem with one option of an adapter spec (`targets`, `layers`, `r`, ...), before the spec file is known. */
export class AdapterOptionError extends Error {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(message);
    this.name = 'AdapterOptionError';
  }
}
