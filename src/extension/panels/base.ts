/**
 * The one host-side base of every chart panel: create-or-reveal and revive (after a reload, from
 * the state the webview saved), webview options (scripts on, resources only from `dist/webviews`:
 * the bundles load nothing else), the HTML page with its nonce CSP, typed and validated messages both ways, and the
 * disposables. A panel sends its data whenever its webview says `panel/ready` (first load, and
 * again after it was hidden and its page rebuilt), so nothing is lost to a webview not listening.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import * as vscode from 'vscode';
import {
  HOST_TO_WEBVIEW,
  panelStateSchema,
  panelViewType,
  validateMessage,
  WEBVIEW_TO_HOST,
  type HostToWebview,
  type PanelKind,
  type WebviewMessage,
} from '../../protocol/webview';
import { isWithinAny } from '../model/paths';
import type { PanelDeps } from './deps';
import { makeNonce, panelHtml } from './shaping/html';

export type LogLevel = 'info' | 'warn' | 'error';

/** Logs to the output channel, with levels when it is a log channel. */
export function logTo(log: vscode.OutputChannel, level: LogLevel, message: string): void {
  const l = log as Partial<vscode.LogOutputChannel>;
  if (typeof l.info === 'function' && typeof l.warn === 'function' && typeof l.error === 'function') l[level]!(message);
  else log.appendLine(`[${level}] ${message}`);
}

export function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim();
}

/** How one kind of panel is made: the base does the rest. */
export interface PanelType<P extends PanelBase = PanelBase> {
  kind: PanelKind;
  /** Editor tab title for these sources. */
  title(sources: readonly string[]): string;
  create(panel: vscode.WebviewPanel, deps: PanelDeps, sources: string[]): P;
  /** Same sources → reveal the open panel instead of opening another (default: equal source lists). */
  sameSources?(a: readonly string[], b: readonly string[]): boolean;
}

export abstract class PanelBase implements vscode.Disposable {
  private static readonly openPanels = new Set<PanelBase>();
  protected readonly disposables: vscode.Disposable[] = [];
  /** True between the webview's `panel/ready` and the page going away (hidden or disposed). */
  protected ready = false;
  private disposed = false;

  protected constructor(
    readonly kind: PanelKind,
    readonly panel: vscode.WebviewPanel,
    protected readonly deps: PanelDeps,
    protected sources: string[],
  ) {
    PanelBase.openPanels.add(this);
    const webview = panel.webview;
    webview.options = PanelBase.webviewOptions(deps.extensionUri);
    webview.html = PanelBase.html(webview, deps.extensionUri, kind, panel.title);
    this.disposables.push(
      webview.onDidReceiveMessage((m: unknown) => void this.receive(m)),
      panel.onDidChangeViewState(({ webviewPanel }) => {
        // A hidden webview (no retainContextWhenHidden) loses its page; it says ready again when shown.
        if (!webviewPanel.visible) this.ready = false;
      }),
      panel.onDidDispose(() => this.dispose()),
    );
  }

  // ---- creation -------------------------------------------------------------------------------------

  static webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions & vscode.WebviewPanelOptions {
    return {
      enableScripts: true,
      enableCommandUris: false,
      localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist', 'webviews')],
    };
  }

  static html(webview: vscode.Webview, extensionUri: vscode.Uri, kind: PanelKind, title: string): string {
    const asset = (ext: string) => webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', 'webviews', `${kind}.${ext}`)).toString();
    return panelHtml({ cspSource: webview.cspSource, nonce: makeNonce(randomBytes), scriptUri: asset('js'), styleUri: asset('css'), title, kind });
  }

  /** Reveals the panel of this kind showing these sources, or opens a new one (in the active editor group, or beside it). */
  static createOrShow<P extends PanelBase>(type: PanelType<P>, deps: PanelDeps, sources: string[], column: vscode.ViewColumn = vscode.ViewColumn.Active): P {
    const same = type.sameSources ?? ((a, b) => a.length === b.length && a.every((s, i) => s === b[i]));
    for (const p of PanelBase.openPanels) {
      if (p.kind === type.kind && same(p.sources, sources)) {
        p.panel.reveal();
        return p as P;
      }
    }
    const panel = vscode.window.createWebviewPanel(panelViewType(type.kind), type.title(sources), column, {
      ...PanelBase.webviewOptions(deps.extensionUri),
      retainContextWhenHidden: false,
    });
    return type.create(panel, deps, sources);
  }

  /** A serializer restoring this kind of panel from the state its webview saved. */
  static serializer(type: PanelType, deps: PanelDeps): vscode.WebviewPanelSerializer {
    return {
      async deserializeWebviewPanel(panel: vscode.WebviewPanel, state: unknown): Promise<void> {
        const problem = panelStateSchema.check(state, 'state');
        const sources = problem ? [] : (state as { sources: string[] }).sources;
        if (problem) logTo(deps.log, 'warn', `${type.kind} panel: saved state ignored (${problem})`);
        panel.title = type.title(sources);
        type.create(panel, deps, sources);
      },
    };
  }

  // ---- messages -------------------------------------------------------------------------------------

  /** Sends a typed message; invalid payloads (a host bug) are logged and not sent. */
  protected post<K extends keyof HostToWebview>(type: K, payload: HostToWebview[K]): void {
    if (this.disposed || !this.ready) return;
    const v = validateMessage(HOST_TO_WEBVIEW, { type, payload });
    if (!v.ok) {
      this.log('error', `not sending an invalid message: ${v.problem}`);
      return;
    }
    void Promise.resolve(this.panel.webview.postMessage({ type, payload })).catch((err: unknown) => this.log('warn', `postMessage ${type}: ${messageOf(err)}`));
  }

  private async receive(raw: unknown): Promise<void> {
    const v = validateMessage(WEBVIEW_TO_HOST, raw);
    if (!v.ok) {
      this.log('warn', `dropped a webview message that does not match the protocol: ${v.problem}`);
      return;
    }
    const m = v.message;
    try {
      switch (m.type) {
        case 'panel/ready':
          if (m.payload.kind !== this.kind) return this.log('warn', `a ${m.payload.kind} page in a ${this.kind} panel`);
          this.ready = true;
          await this.sendAll();
          return;
        case 'panel/log':
          return this.log(m.payload.level, `webview: ${m.payload.message}`);
        case 'panel/open':
          return await this.open(m.payload.path);
        default:
          return await this.onMessage(m);
      }
    } catch (err) {
      this.log('error', `${m.type}: ${messageOf(err)}`);
      void vscode.window.showErrorMessage(`PEFT Lab: ${messageOf(err)}`);
    }
  }

  /** Opens a file in an editor or reveals a folder, if it is one the panel shows (or inside one). */
  private async open(path: string): Promise<void> {
    if (!this.mayOpen(path) || !existsSync(path)) return this.log('warn', `not opening ${path}: not a source of this panel`);
    const uri = vscode.Uri.file(path);
    if (statSync(path).isDirectory()) {
      const status = vscode.Uri.joinPath(uri, 'status.json');
      if (existsSync(status.fsPath)) await vscode.window.showTextDocument(status, { preview: true });
      else await vscode.commands.executeCommand('revealInExplorer', uri);
    } else await vscode.window.showTextDocument(uri, { preview: true });
  }

  protected mayOpen(path: string): boolean {
    return isWithinAny(this.sources, path);
  }

  /** Sends everything the page needs (called on every `panel/ready`). */
  protected abstract sendAll(): Promise<void>;
  /** Panel-specific messages (everything but ready/log/open). */
  protected onMessage(m: WebviewMessage): void | Promise<void> {
    this.log('warn', `unhandled message ${m.type}`);
  }

  protected log(level: LogLevel, message: string): void {
    logTo(this.deps.log, level, `[${this.kind}] ${message}`);
  }

  protected setSources(sources: string[], title: string): void {
    this.sources = sources;
    this.panel.title = title;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.ready = false;
    PanelBase.openPanels.delete(this);
    this.panel.dispose();
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}
