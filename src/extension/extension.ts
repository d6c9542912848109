/**
 * Extension entry. Activation only wires things up (output channel, status bar item, runs view,
 * CodeLenses, commands); nothing here waits for the sidecar, which starts on the first command or
 * panel that needs it. Commands are (re-)registered by availability: workspace trust and whether
 * the sidecar gave up after crashes (see ./commands.ts).
 */
import * as vscode from 'vscode';
import { COMMANDS } from './actions';
import { CommandRegistry, offerRestart, type Availability, type Ctx } from './commands';
import * as config from './config';
import { settingsRestartPrompt } from './model/status-text';
import { registerPanels } from './panels';
import { WorkspaceRunsModel } from './runs/runs-model';
import { createRunsView } from './runs/runs-view';
import { SidecarClient, type SidecarState } from './sidecar';
import { SpecCodeLensProvider, SPEC_SELECTOR } from './specs/codelens';
import { SpecDiagnostics } from './specs/diagnostics';
import { SidecarStatusBar } from './status-bar';

let sidecar: SidecarClient | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const began = Date.now();
  const output = vscode.window.createOutputChannel('PEFT Lab', { log: true });
  const client = new SidecarClient(context, output);
  sidecar = client;
  const runs = new WorkspaceRunsModel(client, output);
  const diagnostics = new SpecDiagnostics();
  const ctx: Ctx = { extension: context, sidecar: client, runs, log: output, diagnostics };

  const registry = new CommandRegistry(ctx, COMMANDS);
  const availability = (): Availability => ({ trusted: vscode.workspace.isTrusted, sidecarFailed: client.state === 'failed' });
  const setContext = (state: SidecarState) => {
    void vscode.commands.executeCommand('setContext', 'peftLab.sidecarState', state);
    void vscode.commands.executeCommand('setContext', 'peftLab.sidecarRunning', state === 'running');
  };
  registry.update(availability());
  setContext(client.state);

  const runsView = createRunsView(runs);
  const codeLenses = new SpecCodeLensProvider(client);

  context.subscriptions.push(
    output,
    client,
    runs,
    diagnostics,
    registry,
    new SidecarStatusBar(client),
    ...runsView.disposables,
    codeLenses,
    vscode.languages.registerCodeLensProvider(SPEC_SELECTOR, codeLenses),
    client.onDidChangeState((state) => {
      setContext(state);
      registry.update(availability());
    }),
    client.onDidChangeJobs(() => void vscode.commands.executeCommand('setContext', 'peftLab.activeJobs', client.activeJobs.length)),
    client.onDidCrash((crash) => {
      if (!crash.willRestart) void offerRestart(ctx);
    }),
    vscode.workspace.onDidGrantWorkspaceTrust(() => registry.update(availability())),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (client.state === 'stopped' || !config.SIDECAR_SETTINGS.some((s) => e.affectsConfiguration(s))) return;
      // A restart cancels running jobs: the prompt says so, and a warning when there are some.
      const jobs = client.activeJobs.length;
      const prompt = settingsRestartPrompt(jobs);
      const choice = await (jobs > 0 ? vscode.window.showWarningMessage(prompt, 'Restart') : vscode.window.showInformationMessage(prompt, 'Restart'));
      if (choice === 'Restart') await vscode.commands.executeCommand('peftLab.restartSidecar', { jobsConfirmed: jobs });
    }),
  );

  // The webview panels (their own commands: peftLab.openDashboard, openImportance, ...).
  context.subscriptions.push(...registerPanels(context, { sidecar: client, runs, log: output, extensionUri: context.extensionUri }));
  output.info(`PEFT Lab activated in ${Date.now() - began} ms`);
}

export async function deactivate(): Promise<void> {
  await sidecar?.stop();
  sidecar = undefined;
}
