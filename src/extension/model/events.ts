/**
 * A minimal typed event emitter with the same shape as `vscode.Event` (subscribe → disposable),
 * so that vscode-free modules can expose events that vscode code subscribes to unchanged.
 */
export interface Disposable {
  dispose(): void;
}

export type Listener<T> = (e: T) => unknown;
export type Event<T> = (listener: Listener<T>) => Disposable;

export class Emitter<T> implements Disposable {
  private listeners = new Set<Listener<T>>();

  readonly event: Event<T> = (listener) => {
    // A fresh wrapper per subscription, so the same function may subscribe twice.
    const entry: Listener<T> = (e) => listener(e);
    this.listeners.add(entry);
    return { dispose: () => void this.listeners.delete(entry) };
  };

  /** Calls every listener; one that throws does not stop the others (the error goes to `onError`). */
  fire(e: T, onError?: (err: unknown) => void): void {
    for (const l of [...this.listeners]) {
      try {
        l(e);
      } catch (err) {
        onError?.(err);
      }
    }
  }

  dispose(): void {
    this.listeners.clear();
  }
}

/** Resolves with the first event that satisfies `predicate`. */
export function once<T>(event: Event<T>, predicate: (e: T) => boolean = () => true): Promise<T> {
  return new Promise((resolve) => {
    const sub = event((e) => {
      if (!predicate(e)) return;
      sub.dispose();
      resolve(e);
    });
  });
}
