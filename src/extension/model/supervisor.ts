/**
 * Keeps one sidecar process alive (vscode-free, so the sidecar-process tests drive it against real
 * children): start, crash detection, restart with exponential backoff, giving up after too many
 * crashes in a time window, and stop with a timeout after which the process is killed.
 *
 *   stopped ──start()──▶ starting ──ready──▶ running ──exit──▶ restarting ──backoff, launch──▶ running
 *      ▲                    │ launch failed                        │ too many crashes
 *      └────────────────────┘                                      ▼
 *   stopping ◀──stop()── running                                 failed ──start()──▶ starting
 *
 * The process is described by `SupervisedProcess`, made by the `launch` function the owner gives:
 * the extension wraps a vscode-languageclient `LanguageClient`, the tests a plain vscode-jsonrpc
 * connection to a fake server.
 */
import { Emitter, type Event } from './events';

export const SUPERVISOR_STATES = ['stopped', 'starting', 'running', 'restarting', 'stopping', 'failed'] as const;
export type SupervisorState = (typeof SUPERVISOR_STATES)[number];

export interface ExitInfo {
  code: number | null;
  signal: string | null;
}

/** One launched process, ready to use (its `launch` resolved after the handshake). */
export interface SupervisedProcess {
  readonly pid: number | undefined;
  /** Settles (never rejects) once the process has exited, for whatever reason. */
  readonly exited: Promise<ExitInfo>;
  /** Asks the process to stop (e.g. LSP shutdown + exit); may hang or reject: the supervisor bounds it. */
  shutdown(): Promise<void>;
  /** Ends the process now (SIGKILL or the platform's equivalent). */
  kill(): void;
}

export interface SupervisorOptions<P extends SupervisedProcess> {
  /** Starts a process and resolves once it answers; rejects when it cannot start. */
  launch(): Promise<P>;
  /** Crashes tolerated within `restartWindowMs`; one more and the supervisor gives up. */
  maxRestarts: number;
  /** Window in which crashes count towards `maxRestarts` (default 3 minutes, as vscode-languageclient). */
  restartWindowMs?: number;
  /** First restart delay; doubled for each further crash in the window, capped at `maxBackoffMs`. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How long `stop()` waits for a graceful shutdown and exit before killing. */
  stopTimeoutMs?: number;
  /** Clock for the crash window (tests); default Date.now. */
  now?: () => number;
}

export interface StateChange {
  state: SupervisorState;
  previous: SupervisorState;
}

export interface CrashInfo extends ExitInfo {
  pid: number | undefined;
  /** Crashes within the window, this one included. */
  crashes: number;
  /** Whether a restart follows (false: the supervisor gave up). */
  willRestart: boolean;
  /** Delay before the restart, ms. */
  delayMs: number;
}

export interface StopResult {
  /** The process had to be killed after `stopTimeoutMs` (or the shutdown failed). */
  forced: boolean;
  exit: ExitInfo | undefined;
}

/** The delay before restart number `crashes` (1-based): backoff · 2^(crashes-1), capped. */
export function backoffDelay(crashes: number, backoffMs: number, maxBackoffMs: number): number {
  if (crashes <= 1) return Math.min(backoffMs, maxBackoffMs);
  return Math.min(maxBackoffMs, backoffMs * 2 ** (crashes - 1));
}

/** Drops crash times older than the window; returns the ones that still count. */
export function crashesInWindow(times: readonly number[], now: number, windowMs: number): number[] {
  return times.filter((t) => now - t < windowMs);
}

class Cancelled extends Error {}

export class Supervisor<P extends SupervisedProcess> {
  private _state: SupervisorState = 'stopped';
  private _process: P | undefined;
  private crashTimes: number[] = [];
  private pendingStart: Promise<P> | undefined;
  private pendingStop: Promise<StopResult> | undefined;
  private restartTimer: { timer: ReturnType<typeof setTimeout>; cancel: () => void } | undefined;
  /** Bumped by stop(): a launch or restart begun in an older epoch must not become current. */
  private epoch = 0;
  private _lastError: string | undefined;

  private readonly stateEmitter = new Emitter<StateChange>();
  private readonly crashEmitter = new Emitter<CrashInfo>();
  private readonly readyEmitter = new Emitter<P>();
  /** Every transition. */
  readonly onDidChangeState: Event<StateChange> = this.stateEmitter.event;
  /** An unexpected exit of a running process (restart or give-up follows). */
  readonly onDidCrash: Event<CrashInfo> = this.crashEmitter.event;
  /** A (re)started process is running. */
  readonly onDidStart: Event<P> = this.readyEmitter.event;

  private readonly restartWindowMs: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly stopTimeoutMs: number;
  private readonly now: () => number;

  constructor(private readonly options: SupervisorOptions<P>) {
    this.restartWindowMs = options.restartWindowMs ?? 3 * 60_000;
    this.backoffMs = options.backoffMs ?? 500;
    this.maxBackoffMs = options.maxBackoffMs ?? 8000;
    this.stopTimeoutMs = options.stopTimeoutMs ?? 5000;
    this.now = options.now ?? Date.now;
  }

  get state(): SupervisorState {
    return this._state;
  }

  /** The running process, if any. */
  get process(): P | undefined {
    return this._state === 'running' ? this._process : undefined;
  }

  /** The last launch failure or crash, one line. */
  get lastError(): string | undefined {
    return this._lastError;
  }

  /** Crashes counted in the current window. */
  get recentCrashes(): number {
    return crashesInWindow(this.crashTimes, this.now(), this.restartWindowMs).length;
  }

  /** The restart limit, which a later `start()` may see changed. */
  set maxRestarts(n: number) {
    this.options.maxRestarts = n;
  }

  /**
   * Starts the process (after a give-up: starts afresh, the crash count reset), or joins a start or
   * restart in progress. Rejects when the process cannot be launched; the state is then `stopped`.
   */
  async start(): Promise<P> {
    // Only wait when there is a stop to wait for: a start must begin synchronously, so that a
    // stop() right after it sees the launch and cancels it.
    if (this.pendingStop) await this.pendingStop;
    if (this._state === 'running' && this._process) return this._process;
    if (this.pendingStart) return this.pendingStart;
    if (this._state === 'restarting' && this.restartTimer) {
      // Skip the rest of the backoff: someone is waiting.
      this.restartTimer.cancel();
      if (this.pendingStart) return this.pendingStart;
    }
    if (this._state === 'failed' || this._state === 'stopped') this.crashTimes = [];
    return this.launchNow('starting');
  }

  /**
   * Stops the process: a graceful `shutdown()` bounded by `stopTimeoutMs`, then `kill()`. Cancels a
   * pending restart. Joins a stop in progress; a no-op when nothing runs (a `failed` state becomes `stopped`).
   */
  stop(): Promise<StopResult> {
    this.pendingStop ??= this.doStop().finally(() => (this.pendingStop = undefined));
    return this.pendingStop;
  }

  dispose(): void {
    void this.stop();
    this.stateEmitter.dispose();
    this.crashEmitter.dispose();
    this.readyEmitter.dispose();
  }

  private launchNow(state: 'starting' | 'restarting'): Promise<P> {
    const epoch = this.epoch;
    this.setState(state);
    const started = (async () => {
      let p: P;
      try {
        p = await this.options.launch();
      } catch (err) {
        this._lastError = oneLine(err);
        if (epoch !== this.epoch) throw new Cancelled('stopped while starting');
        if (state === 'restarting') {
          // A failed relaunch counts as one more crash.
          this.onExit(undefined, { code: null, signal: null }, true);
        } else {
          this.setState('stopped');
        }
        throw err;
      }
      if (epoch !== this.epoch) {
        // stop() was called meanwhile: this process is not wanted.
        await this.terminate(p);
        throw new Cancelled('stopped while starting');
      }
      this._process = p;
      void p.exited.then((exit) => {
        if (this._process === p && epoch === this.epoch && this._state === 'running') this.onExit(p.pid, exit, false);
      });
      this.setState('running');
      this.readyEmitter.fire(p);
      return p;
    })();
    this.pendingStart = started;
    const clear = () => {
      if (this.pendingStart === started) this.pendingStart = undefined;
    };
    started.then(clear, clear);
    return started;
  }

  private onExit(pid: number | undefined, exit: ExitInfo, launchFailure: boolean): void {
    this._process = undefined;
    if (!launchFailure) this._lastError = `exited with ${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`}`;
    const now = this.now();
    this.crashTimes = [...crashesInWindow(this.crashTimes, now, this.restartWindowMs), now];
    const crashes = this.crashTimes.length;
    const willRestart = crashes <= this.options.maxRestarts;
    const delayMs = willRestart ? backoffDelay(crashes, this.backoffMs, this.maxBackoffMs) : 0;
    this.crashEmitter.fire({ ...exit, pid, crashes, willRestart, delayMs });
    if (!willRestart) {
      this.setState('failed');
      return;
    }
    this.setState('restarting');
    this.scheduleRestart(delayMs);
  }

  private scheduleRestart(delayMs: number): void {
    const epoch = this.epoch;
    const go = () => {
      this.restartTimer = undefined;
      if (epoch !== this.epoch || this._state !== 'restarting') return;
      // Failures are handled inside (counted as crashes); nobody awaits this promise.
      this.launchNow('restarting').catch(() => undefined);
    };
    const timer = setTimeout(go, delayMs);
    this.restartTimer = {
      timer,
      cancel: () => {
        clearTimeout(timer);
        go();
      },
    };
  }

  private async doStop(): Promise<StopResult> {
    this.epoch++;
    if (this.restartTimer) {
      clearTimeout(this.restartTimer.timer);
      this.restartTimer = undefined;
    }
    // A launch in flight: let it settle (it sees the new epoch and terminates what it started).
    await this.pendingStart?.catch(() => undefined);
    const p = this._process;
    this._process = undefined;
    if (!p) {
      this.setState('stopped');
      return { forced: false, exit: undefined };
    }
    this.setState('stopping');
    const result = await this.terminate(p);
    this.setState('stopped');
    return result;
  }

  /** Graceful shutdown bounded by the stop timeout, then kill; resolves once the process has exited. */
  private async terminate(p: P): Promise<StopResult> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.stopTimeoutMs)));
    const graceful = (async () => {
      await p.shutdown();
      return p.exited;
    })();
    const outcome = await Promise.race([graceful.then(() => 'exited' as const, () => 'error' as const), p.exited.then(() => 'exited' as const), timeout]);
    clearTimeout(timer);
    // Whatever happens to the shutdown request from now on is of no interest.
    graceful.catch(() => undefined);
    if (outcome === 'exited') return { forced: false, exit: await p.exited };
    p.kill();
    return { forced: true, exit: await p.exited };
  }

  private setState(state: SupervisorState): void {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    this.stateEmitter.fire({ state, previous });
  }
}

function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s+/g, ' ').trim();
}
