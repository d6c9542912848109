/**
 * The extension's handle on the sidecar process: a vscode-languageclient `LanguageClient` over
 * stdio (the sidecar speaks LSP's lifecycle plus the messages in `src/protocol`), kept alive by a
 * vscode-free `Supervisor` (./model/supervisor.ts): started lazily by the first request, restarted
 * with backoff after a crash, given up after `peftLab.sidecar.maxRestarts` crashes in three
 * minutes, stopped with a timeout after which the process is killed.
 *
 * The script is resolved in this order: the `peftLab.sidecar.path` setting (user or, in a trusted
 * workspace, workspace value; relative paths against the first workspace folder), then the bundled
 * `dist/sidecar.js` in the extension folder. It must exist; the client forks it with the extension
 * host's own Node, with `run` and `debug` (`--inspect`) options.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  RevealOutputChannelOn,
  TransportKind,
  type LanguageClientOptions,
  type MessageTransports,
  type ServerOptions,
} from 'vscode-languageclient/node';
import { onNotification, sendRequest } from '../../sidecar/src/rpc';
import {
  CancelJob,
  JobEndNote,
  JobProgressNote,
  LogNote,
  StartJob,
  Status,
  type BackendInfo,
  type JobEnd,
  type JobParams,
  type JobProgress,
  type LogMessage,
  type RequestDef,
} from '../protocol';
import * as config from './config';
import { Supervisor, type CrashInfo, type ExitInfo, type SupervisedProcess, type SupervisorState } from './model/supervisor';

export type SidecarState = SupervisorState;

const STOP_TIMEOUT_MS = 5000;
/** Port for `--inspect` when the extension itself runs under a debugger. */
const DEBUG_PORT = 6009;

/** A LanguageClient that lets its owner see the process it forked (to kill it and watch it exit). */
class SidecarLanguageClient extends LanguageClient {
  process: ChildProcess | undefined;

  protected override async createMessageTransports(encoding: string): Promise<MessageTransports> {
    const transports = await super.createMessageTransports(encoding);
    // The base class keeps the forked process in a private field; read it once, here.
    this.process = (this as unknown as { _serverProcess?: ChildProcess })._serverProcess;
    this.onProcess?.(this.process);
    return transports;
  }

  onProcess: ((p: ChildProcess | undefined) => void) | undefined;
}

/** One running sidecar: its client and process. */
interface SidecarProcess extends SupervisedProcess {
  readonly client: LanguageClient;
}

/** A job the extension (or a panel) started through this client. */
export interface ActiveJob {
  id: string;
  params: JobParams;
  startedAt: number;
  /** The sidecar process that runs it. */
  pid: number | undefined;
  progress?: JobProgress;
}

export class SidecarClient implements vscode.Disposable {
  private readonly supervisor: Supervisor<SidecarProcess>;
  private _backend: BackendInfo | undefined;
  private readonly active = new Map<string, ActiveJob>();
  /** Ends that arrived before StartJob's reply was seen (a job that fails at once). */
  private readonly earlyEnds = new Map<string, JobEnd>();
  private readonly _endedPids = new Set<number>();
  /** Jobs lost with each exited process, for the crash report. */
  private readonly lostByPid = new Map<number | undefined, ActiveJob[]>();
  private readonly disposables: vscode.Disposable[] = [];

  private readonly stateEmitter = new vscode.EventEmitter<SidecarState>();
  private readonly progressEmitter = new vscode.EventEmitter<JobProgress>();
  private readonly endEmitter = new vscode.EventEmitter<JobEnd>();
  private readonly jobsEmitter = new vscode.EventEmitter<void>();
  private readonly backendEmitter = new vscode.EventEmitter<BackendInfo | undefined>();
  private readonly crashEmitter = new vscode.EventEmitter<CrashInfo & { lostJobs: ActiveJob[] }>();
  /** Every transition (stopped, starting, running, restarting, stopping, failed). */
  readonly onDidChangeState = this.stateEmitter.event;
  readonly onJobProgress = this.progressEmitter.event;
  /** Exactly one per started job; a job lost with a crashed sidecar ends `failed`. */
  readonly onJobEnd = this.endEmitter.event;
  /** The set of active jobs changed (started, ended, progressed). */
  readonly onDidChangeJobs = this.jobsEmitter.event;
  readonly onDidChangeBackend = this.backendEmitter.event;
  /** The process exited unexpectedly; a restart follows unless `willRestart` is false. */
  readonly onDidCrash = this.crashEmitter.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly output: vscode.LogOutputChannel,
  ) {
    this.supervisor = new Supervisor<SidecarProcess>({
      launch: () => this.launch(),
      maxRestarts: config.maxRestarts(),
      stopTimeoutMs: STOP_TIMEOUT_MS,
    });
    this.disposables.push(
      toDisposable(
        this.supervisor.onDidChangeState(({ state }) => {
          if (state !== 'running') this._backend = undefined;
          this.stateEmitter.fire(state);
        }),
      ),
      toDisposable(this.supervisor.onDidStart(() => void this.refreshBackend())),
      toDisposable(this.supervisor.onDidCrash((crash) => this.onCrash(crash))),
    );
  }

  get state(): SidecarState {
    return this.supervisor.state;
  }

  /** The backend of the running sidecar, once it has answered Status. */
  get backend(): BackendInfo | undefined {
    return this._backend;
  }

  get pid(): number | undefined {
    return this.supervisor.process?.pid;
  }

  get lastError(): string | undefined {
    return this.supervisor.lastError;
  }

  get recentCrashes(): number {
    return this.supervisor.recentCrashes;
  }

  /** Pids of sidecar processes of this window that have ended: their `running` runs are interrupted. */
  get endedPids(): ReadonlySet<number> {
    return this._endedPids;
  }

  get activeJobs(): readonly ActiveJob[] {
    return [...this.active.values()];
  }

  /** Starts the sidecar (after a give-up: afresh), or joins a start in progress. Rejects with a user-readable message. */
  async start(): Promise<void> {
    this.supervisor.maxRestarts = config.maxRestarts();
    await this.supervisor.start();
  }

  /** Stops the sidecar (LSP shutdown + exit, which cancels its jobs; killed after 5 s); a no-op when stopped. */
  /** Starts lazily, except after a give-up: then only `start()` (the Restart action) starts it again. */
  private ensureStarted(): Promise<SidecarProcess> {
    if (this.supervisor.state === 'failed') {
      return Promise.reject(new SidecarUnavailableError(`the sidecar crashed ${this.supervisor.recentCrashes} times and was stopped (${this.lastError ?? 'no details'}); restart it with "PEFT Lab: Restart Sidecar"`));
    }
    this.supervisor.maxRestarts = config.maxRestarts();
    return this.supervisor.start();
  }

  async stop(): Promise<void> {
    const { forced } = await this.supervisor.stop();
    if (forced) this.output.warn(`the sidecar did not stop within ${STOP_TIMEOUT_MS / 1000} s and was killed`);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** A typed request; starts the sidecar first if needed. StartJob requests are tracked as active jobs. */
  async request<P, R>(def: RequestDef<P, R>, params: P, token?: vscode.CancellationToken): Promise<R> {
    const p = await this.ensureStarted();
    const result = await sendRequest(p.client, def, params, token);
    if (def.method === StartJob.method) this.track((result as { id: string }).id, params as JobParams, p.pid);
    return result;
  }

  /** Starts a job and returns its id (see `waitForJob` and `onJobProgress`). */
  async startJob(params: JobParams): Promise<string> {
    return (await this.request(StartJob, params)).id;
  }

  /** Resolves with the job's end (a lost sidecar ends it `failed`); the token cancels the job. */
  waitForJob(id: string, token?: vscode.CancellationToken, onProgress?: (p: JobProgress) => void): Promise<JobEnd> {
    const early = this.earlyEnds.get(id);
    if (early) {
      this.earlyEnds.delete(id);
      return Promise.resolve(early);
    }
    return new Promise((resolvePromise) => {
      const subs: vscode.Disposable[] = [];
      const finish = (end: JobEnd) => {
        subs.forEach((s) => s.dispose());
        resolvePromise(end);
      };
      subs.push(this.onJobEnd((e) => e.id === id && finish(e)));
      if (onProgress) subs.push(this.onJobProgress((p) => p.id === id && onProgress(p)));
      if (token) subs.push(token.onCancellationRequested(() => void this.cancelJob(id)));
      // Ended between the start and this subscription? The job is no longer active.
      if (!this.active.has(id)) finish({ id, state: 'failed', error: 'the job is not running in the sidecar' });
    });
  }

  /** Asks the sidecar to cancel a job; false when it was not running (or the sidecar is gone). */
  async cancelJob(id: string): Promise<boolean> {
    const p = this.supervisor.process;
    if (!p) return false;
    try {
      return (await sendRequest(p.client, CancelJob, { id })).cancelled;
    } catch (err) {
      this.output.warn(`cancel ${id}: ${messageOf(err)}`);
      return false;
    }
  }

  dispose(): void {
    void this.stop();
    this.disposables.forEach((d) => d.dispose());
    this.supervisor.dispose();
    this.stateEmitter.dispose();
    this.progressEmitter.dispose();
    this.endEmitter.dispose();
    this.jobsEmitter.dispose();
    this.backendEmitter.dispose();
    this.crashEmitter.dispose();
  }

  private track(id: string, params: JobParams, pid: number | undefined): void {
    if (this.earlyEnds.has(id)) return; // already over
    this.active.set(id, { id, params, startedAt: Date.now(), pid });
    this.jobsEmitter.fire();
  }

  private onProgress(p: JobProgress): void {
    const job = this.active.get(p.id);
    if (job) job.progress = p;
    this.progressEmitter.fire(p);
    if (job) this.jobsEmitter.fire();
  }

  private onEnd(e: JobEnd): void {
    if (this.active.delete(e.id)) this.jobsEmitter.fire();
    else {
      this.earlyEnds.set(e.id, e);
      // Bounded: ends nobody asked about are dropped, oldest first.
      if (this.earlyEnds.size > 50) this.earlyEnds.delete(this.earlyEnds.keys().next().value as string);
    }
    this.endEmitter.fire(e);
  }

  /** Ends the jobs of a process that is gone, so every waiter hears of it. */
  private loseJobs(pid: number | undefined, why: string): ActiveJob[] {
    const lost = [...this.active.values()].filter((j) => j.pid === pid);
    for (const j of lost) this.onEnd({ id: j.id, state: 'failed', error: why });
    return lost;
  }

  private onCrash(crash: CrashInfo): void {
    if (crash.pid !== undefined) this._endedPids.add(crash.pid);
    const how = crash.signal ? `signal ${crash.signal}` : crash.code !== null ? `code ${crash.code}` : 'an error';
    const lostJobs = [...(this.lostByPid.get(crash.pid) ?? []), ...this.loseJobs(crash.pid, `the sidecar exited (${how}) while the job ran`)];
    this.lostByPid.delete(crash.pid);
    this.output.error(
      `sidecar ${crash.pid ?? ''} exited unexpectedly with ${how} (crash ${crash.crashes} in the last 3 minutes); ` +
        (crash.willRestart ? `restarting in ${crash.delayMs} ms` : 'not restarting again'),
    );
    this.crashEmitter.fire({ ...crash, lostJobs });
  }

  private async refreshBackend(): Promise<void> {
    const p = this.supervisor.process;
    if (!p) return;
    try {
      const status = await sendRequest(p.client, Status, {});
      if (this.supervisor.process !== p) return;
      this._backend = status.backend;
      this.backendEmitter.fire(status.backend);
    } catch (err) {
      this.output.warn(`status: ${messageOf(err)}`);
    }
  }

  /** Forks the sidecar through a new LanguageClient and resolves once `initialize` has been answered. */
  private async launch(): Promise<SidecarProcess> {
    const module = this.resolveServerModule();
    const backend = config.backendPreference((m) => this.output.warn(m));
    const memoryMb = config.memoryLimitMb();
    const args = ['--backend', backend];
    const execArgv = memoryMb > 0 ? [`--max-old-space-size=${memoryMb}`] : [];
    const threads = config.threads();
    const env = { ...process.env, ...(memoryMb > 0 ? { PEFT_LAB_MEMORY_LIMIT_MB: String(memoryMb) } : {}), ...(threads > 0 ? { PEFT_LAB_THREADS: String(threads) } : {}) };
    const serverOptions: ServerOptions = {
      run: { module, transport: TransportKind.stdio, args, options: { execArgv, env } },
      debug: { module, transport: TransportKind.stdio, args, options: { execArgv: [...execArgv, '--nolazy', `--inspect=${DEBUG_PORT}`], env } },
    };

    let resolveExit!: (e: ExitInfo) => void;
    const exited = new Promise<ExitInfo>((r) => (resolveExit = r));
    let exitInfo: ExitInfo | undefined;
    const markExited = (e: ExitInfo) => {
      if (exitInfo) return;
      exitInfo = e;
      resolveExit(e);
    };

    const clientOptions: LanguageClientOptions = {
      // No documents: the sidecar is a compute process, not a language server.
      documentSelector: [],
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      // The supervisor restarts (with its own limits); the client must not.
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue, handled: true }),
        closed: () => {
          // Without a process handle, a closed connection is the best sign of an exit.
          if (!client.process) markExited({ code: null, signal: null });
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
      initializationFailedHandler: () => false,
    };
    const client = new SidecarLanguageClient('peftLab.sidecar', 'PEFT Lab Sidecar', serverOptions, clientOptions);
    client.onProcess = (child) => {
      if (!child) return;
      if (child.exitCode !== null || child.signalCode !== null) markExited({ code: child.exitCode, signal: child.signalCode });
      else child.once('exit', (code, signal) => markExited({ code, signal }));
    };
    // Registered before start so that nothing the sidecar sends early is dropped.
    onNotification(client, LogNote, (m) => this.logLine(m));
    onNotification(client, JobProgressNote, (p) => this.onProgress(p));
    onNotification(client, JobEndNote, (e) => this.onEnd(e));

    this.output.info(`starting sidecar ${module} (backend ${backend}${memoryMb ? `, heap limit ${memoryMb} MB` : ''})`);
    const startup = client.start();
    const outcome = await Promise.race([startup.then(() => 'ready' as const), exited.then(() => 'exited' as const)]).catch((err: unknown) => err);
    if (outcome !== 'ready') {
      startup.catch(() => undefined);
      client.process?.kill('SIGKILL');
      await client.dispose(1000).catch(() => undefined);
      const why = outcome === 'exited' ? `it exited during start-up (${describeExit(exitInfo)})` : messageOf(outcome);
      throw new Error(`the sidecar did not start: ${why}`);
    }
    const pid = client.process?.pid;
    this.output.info(`sidecar running (pid ${pid ?? '?'})`);
    void exited.then((e) => {
      if (pid !== undefined) this._endedPids.add(pid);
      // Jobs of the process end here (a crash report picks them up from lostByPid).
      const lost = this.loseJobs(pid, `the sidecar exited (${describeExit(e)}) while the job ran`);
      if (lost.length) {
        this.lostByPid.set(pid, lost);
        // Only a crash report reads them; a stop does not.
        setTimeout(() => this.lostByPid.delete(pid), 10_000).unref?.();
      }
      void client.dispose(1000).catch(() => undefined);
    });
    return {
      client,
      pid,
      exited,
      shutdown: async () => {
        if (client.needsStop()) await client.stop(STOP_TIMEOUT_MS);
      },
      kill: () => {
        if (client.process && client.process.exitCode === null && client.process.signalCode === null) client.process.kill('SIGKILL');
        else if (!client.process) markExited({ code: null, signal: null });
      },
    };
  }

  private logLine({ level, message }: LogMessage): void {
    switch (level) {
      case 'debug':
        return this.output.debug(message);
      case 'warn':
        return this.output.warn(message);
      case 'error':
        return this.output.error(message);
      default:
        return this.output.info(String(message));
    }
  }

  private resolveServerModule(): string {
    const configured = config.configuredSidecarPath();
    if (configured) {
      const base = config.firstWorkspaceFolder();
      const path = isAbsolute(configured) || !base ? resolve(configured) : resolve(base, configured);
      if (!existsSync(path)) throw new Error(`peftLab.sidecar.path points to ${path}, which does not exist`);
      return path;
    }
    const bundled = vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'sidecar.js').fsPath;
    if (!existsSync(bundled)) throw new Error(`the bundled sidecar ${bundled} is missing (run the build)`);
    return bundled;
  }
}

/** The sidecar is not available (gave up after crashes); commands offer a restart. */
export class SidecarUnavailableError extends Error {
  override name = 'SidecarUnavailableError';
}

function describeExit(e: ExitInfo | undefined): string {
  if (!e) return 'unknown exit';
  if (e.signal) return `signal ${e.signal}`;
  return e.code !== null ? `code ${e.code}` : 'connection closed';
}

function toDisposable(d: { dispose(): void }): vscode.Disposable {
  return new vscode.Disposable(() => d.dispose());
}

export function messageOf(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s+/g, ' ').trim();
}
