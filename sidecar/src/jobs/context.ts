import type { JobProgress, LogMessage } from '../../../src/protocol';

/** What a running job can see of the world: its cancellation signal, a progress sink, a logger. */
export interface JobContext {
  readonly signal: AbortSignal;
  progress(p: Omit<JobProgress, 'id'>): void;
  log(level: LogMessage['level'], message: string): void;
}

export class CancelledError extends Error {
  constructor() {
    super('cancelled');
    this.name = 'CancelledError';
  }
}

export function throwIfCancelled(signal: AbortSignal): void {
  if (signal.aborted) throw new CancelledError();
}

/** Lets the event loop run (RPC messages, cancellation) between compute steps. */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A context for command-line use: no cancellation source, progress to nowhere, logs to stderr. */
export function cliContext(verbose = false): JobContext {
  return {
    signal: new AbortController().signal,
    progress: () => undefined,
    log: (level, message) => {
      if (verbose || level === 'warn' || level === 'error') process.stderr.write(`[${level}] ${message}\n`);
    },
  };
}
