/**
 * The extension's handle on the sidecar process: a vscode-languageclient `LanguageClient` over stdio
 * (the sidecar speaks LSP's lifecycle plus the messages in `src/protocol`), with typed requests,
 * job events, and its log lines in the "PEFT Lab" output channel.
 *
 * The script is resolved in this order: the `peftLab.sidecar.path` setting (user or, in a trusted
 * workspace, workspace value; relative paths against the first workspace folder), then the bundled
 * `dist/sidecar.js`. It must exist; it is run by the extension host's own Node (`fork`).
 */
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import * as vscode from 'vscode';
import { LanguageClient, RevealOutputChannelOn, State, TransportKind, type LanguageClientOptions, type ServerOptions } from 'vscode-languageclient/node';
import { onNotification, sendRequest } from '../../sidecar/src/rpc';
import {
  isBackendPreference,
  JobEndNote,
  JobProgressNote,
  LogNote,
  type BackendPreference,
  type JobEnd,
  type JobProgress,
  type LogMessage,
  type RequestDef,
} from '../protocol';

export type SidecarState = 'stopped' | 'starting' | 'running';

const STOP_TIMEOUT_MS = 5000;
/** Port for `--inspect` when the extension itself runs under a debugger. */
const DEBUG_PORT = 6009;

export class SidecarClient implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private _state: SidecarState = 'stopped';

  private readonly stateEmitter = new vscode.EventEmitter<SidecarState>();
  private readonly progressEmitter = new vscode.EventEmitter<JobProgress>();
  private readonly endEmitter = new vscode.EventEmitter<JobEnd>();
  /** Fires on every transition, including a crash (→ stopped) and the client's own restarts. */
  readonly onDidChangeState = this.stateEmitter.event;
  readonly onJobProgress = this.progressEmitter.event;
  readonly onJobEnd = this.endEmitter.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly output: vscode.LogOutputChannel,
  ) {}

  get state(): SidecarState {
    return this._state;
  }

  /** Starts the sidecar, or joins a start in progress. Rejects with a user-readable message. */
  start(): Promise<void> {
    if (this.client && this._state === 'running') return Promise.resolve();
    this.starting ??= this.doStart().finally(() => (this.starting = undefined));
    return this.starting;
  }

  /** Stops the sidecar (LSP shutdown + exit, which cancels its jobs); a no-op when stopped. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop().finally(() => (this.stopping = undefined));
    return this.stopping;
  }

  /** A typed request; starts the sidecar first if needed. */
  async request<P, R>(def: RequestDef<P, R>, params: P, token?: vscode.CancellationToken): Promise<R> {
    await this.start();
    const client = this.client;
    if (!client) throw new Error('the sidecar stopped before the request could be sent');
    return sendRequest(client, def, params, token);
  }

  dispose(): void {
    void this.stop();
    this.stateEmitter.dispose();
    this.progressEmitter.dispose();
    this.endEmitter.dispose();
  }

  private async doStart(): Promise<void> {
    await this.stopping;
    // A client that gave up after crashes is still held: let it go before making a new one.
    const previous = this.client;
    this.client = undefined;
    await previous?.dispose(STOP_TIMEOUT_MS).catch(() => undefined);
    const module = this.resolveServerModule();
    const backend = this.backendPreference();
    const args = ['--backend', backend];
    const serverOptions: ServerOptions = {
      run: { module, transport: TransportKind.stdio, args },
      debug: { module, transport: TransportKind.stdio, args, options: { execArgv: ['--nolazy', `--inspect=${DEBUG_PORT}`] } },
    };
    const clientOptions: LanguageClientOptions = {
      // No documents: the sidecar is a compute process, not a language server.
      documentSelector: [],
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
    };
    const client = new LanguageClient('peftLab.sidecar', 'PEFT Lab Sidecar', serverOptions, clientOptions);
    // Registered before start so that nothing the sidecar sends early is dropped.
    onNotification(client, LogNote, (m) => this.logLine(m));
    onNotification(client, JobProgressNote, (p) => this.progressEmitter.fire(p));
    onNotification(client, JobEndNote, (e) => this.endEmitter.fire(e));
    client.onDidChangeState(({ newState }) => {
      if (this.client === client) this.setState(toSidecarState(newState));
    });

    this.client = client;
    this.setState('starting');
    this.output.info(`starting sidecar ${module} (backend ${backend})`);
    try {
      await client.start();
    } catch (err) {
      if (this.client === client) this.client = undefined;
      this.setState('stopped');
      await client.dispose(STOP_TIMEOUT_MS).catch(() => undefined);
      throw new Error(`the sidecar did not start: ${messageOf(err)}`);
    }
    this.setState('running');
  }

  private async doStop(): Promise<void> {
    await this.starting?.catch(() => undefined);
    const client = this.client;
    if (!client) return;
    this.client = undefined;
    try {
      if (client.needsStop()) await client.stop(STOP_TIMEOUT_MS);
    } catch (err) {
      this.output.warn(`sidecar did not stop cleanly: ${messageOf(err)}`);
    } finally {
      await client.dispose(STOP_TIMEOUT_MS).catch(() => undefined);
      this.setState('stopped');
    }
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

  private setState(state: SidecarState): void {
    if (state === this._state) return;
    this._state = state;
    this.stateEmitter.fire(state);
  }

  private resolveServerModule(): string {
    const configured = this.configuredPath();
    if (configured) {
      const base = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
      const path = isAbsolute(configured) || !base ? resolve(configured) : resolve(base, configured);
      if (!existsSync(path)) throw new Error(`peftLab.sidecar.path points to ${path}, which does not exist`);
      return path;
    }
    const bundled = this.context.asAbsolutePath('dist/sidecar.js');
    if (!existsSync(bundled)) throw new Error(`the bundled sidecar ${bundled} is missing (run the build)`);
    return bundled;
  }

  /** The sidecar path setting; a workspace value counts only in a trusted workspace (it names a script to run). */
  private configuredPath(): string | undefined {
    const inspected = vscode.workspace.getConfiguration('peftLab.sidecar').inspect<string>('path');
    const value = vscode.workspace.isTrusted
      ? (inspected?.workspaceFolderValue ?? inspected?.workspaceValue ?? inspected?.globalValue)
      : inspected?.globalValue;
    return value?.trim() || undefined;
  }

  private backendPreference(): BackendPreference {
    const value = vscode.workspace.getConfiguration('peftLab').get<string>('backend', 'auto');
    if (isBackendPreference(value)) return value;
    this.output.warn(`unknown peftLab.backend '${value}', using 'auto'`);
    return 'auto';
  }
}

function toSidecarState(state: State): SidecarState {
  switch (state) {
    case State.Running:
      return 'running';
    case State.Starting:
      return 'starting';
    case State.Stopped:
      return 'stopped';
  }
}

export function messageOf(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s+/g, ' ').trim();
}
