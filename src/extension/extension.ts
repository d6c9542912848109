/**
 * Extension entry. Activation only wires things up (output channel, status bar item, commands);
 * the sidecar starts on `peftLab.startSidecar` or the first command that needs it.
 */
import * as vscode from 'vscode';
import { Status, type StatusResult } from '../protocol';
import { messageOf, SidecarClient, type SidecarState } from './sidecar';

let sidecar: SidecarClient | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const output = vscode.window.createOutputChannel('PEFT Lab', { log: true });
  const client = new SidecarClient(context, output);
  sidecar = client;
  const statusBar = new SidecarStatusBar(client, output);

  /** Runs a command body; any failure reaches the user, never a silent rejection. */
  const register = (id: string, body: () => Promise<void>): vscode.Disposable =>
    vscode.commands.registerCommand(id, async () => {
      try {
        await body();
      } catch (err) {
        const message = messageOf(err);
        output.error(`${id}: ${message}`);
        const choice = await vscode.window.showErrorMessage(`PEFT Lab: ${message}`, 'Show Output');
        if (choice === 'Show Output') output.show(true);
      }
    });

  context.subscriptions.push(
    output,
    client,
    statusBar,
    register('peftLab.startSidecar', async () => {
      await startWithProgress(client);
      await statusBar.refresh();
    }),
    register('peftLab.stopSidecar', async () => {
      if (client.state === 'stopped') {
        void vscode.window.showInformationMessage('PEFT Lab: the sidecar is not running.');
        return;
      }
      await client.stop();
    }),
    register('peftLab.showStatus', async () => {
      await startWithProgress(client);
      const status = await client.request(Status, {});
      statusBar.show(status);
      const running = status.jobs.filter((j) => j.state === 'running' || j.state === 'queued').length;
      const skipped = status.backend.skipped.map((s) => `${s.name} (${s.reason})`).join(', ');
      const choice = await vscode.window.showInformationMessage(
        `PEFT Lab sidecar ${status.version}: backend ${status.backend.name} on ${status.backend.device}; ` +
          `TF.js ${status.tfjs}, Node ${status.node}, pid ${status.pid}; ${running} job(s) active.` +
          (skipped ? ` Skipped: ${skipped}.` : ''),
        'Show Output',
      );
      if (choice === 'Show Output') output.show(true);
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (client.state === 'stopped' || !(e.affectsConfiguration('peftLab.backend') || e.affectsConfiguration('peftLab.sidecar.path'))) return;
      const choice = await vscode.window.showInformationMessage('PEFT Lab: restart the sidecar to apply the new settings?', 'Restart');
      if (choice !== 'Restart') return;
      await vscode.commands.executeCommand('peftLab.stopSidecar');
      await vscode.commands.executeCommand('peftLab.startSidecar');
    }),
  );
}

export async function deactivate(): Promise<void> {
  await sidecar?.stop();
  sidecar = undefined;
}

function startWithProgress(client: SidecarClient): Promise<void> {
  if (client.state === 'running') return Promise.resolve();
  return Promise.resolve(
    vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'PEFT Lab: starting the sidecar' }, () => client.start()),
  );
}

/** One status bar item: hidden while stopped, spinning while starting, the backend once running. */
class SidecarStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('peftLab.sidecar', vscode.StatusBarAlignment.Left, 0);
  private readonly subscription: vscode.Disposable;

  constructor(
    private readonly client: SidecarClient,
    private readonly output: vscode.LogOutputChannel,
  ) {
    this.item.name = 'PEFT Lab Sidecar';
    this.item.command = 'peftLab.showStatus';
    this.subscription = client.onDidChangeState((state) => this.render(state));
  }

  /** Asks the sidecar for its backend and shows it; failures only reach the log (the caller reports its own). */
  async refresh(): Promise<void> {
    if (this.client.state !== 'running') return;
    try {
      this.show(await this.client.request(Status, {}));
    } catch (err) {
      this.output.warn(`status: ${messageOf(err)}`);
    }
  }

  show(status: StatusResult): void {
    this.item.text = `$(chip) PEFT: ${status.backend.name}`;
    this.item.tooltip = `PEFT Lab sidecar ${status.version}\nBackend: ${status.backend.name} on ${status.backend.device}\nClick for status`;
    this.item.show();
  }

  private render(state: SidecarState): void {
    switch (state) {
      case 'stopped':
        this.item.hide();
        return;
      case 'starting':
        this.item.text = '$(sync~spin) PEFT Lab';
        this.item.tooltip = 'PEFT Lab sidecar starting';
        this.item.show();
        return;
      case 'running':
        // Also after a lazy start or an automatic restart: fill in the backend.
        void this.refresh();
        return;
    }
  }

  dispose(): void {
    this.subscription.dispose();
    this.item.dispose();
  }
}
