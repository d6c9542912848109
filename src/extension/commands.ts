/**
 * Commands as factories (rust-analyzer's pattern): each has an `enabled` handler and a `disabled`
 * one, and the registry re-registers every command whenever what they depend on changes (the
 * workspace's trust, the sidecar giving up after crashes). A command never fails silently: the
 * disabled variant says why and offers the way out; errors of the enabled one reach the user.
 */
import * as vscode from 'vscode';
import { unavailability, type Availability, type Need, type Unavailable } from './model/availability';
import type { SpecDiagnostics } from './specs/diagnostics';
import type { WorkspaceRunsModel } from './runs/runs-model';
import { messageOf, type SidecarClient } from './sidecar';

/** What the command handlers get. */
export interface Ctx {
  readonly extension: vscode.ExtensionContext;
  readonly sidecar: SidecarClient;
  readonly runs: WorkspaceRunsModel;
  readonly log: vscode.LogOutputChannel;
  readonly diagnostics: SpecDiagnostics;
}

export type { Availability, Need, Unavailable } from './model/availability';

// Command arguments come from menus, CodeLenses, other extensions: unknown until checked.
export type Handler = (...args: unknown[]) => unknown;

export interface CommandFactory {
  needs: Need;
  enabled(ctx: Ctx): Handler;
  /** Default: explain why (untrusted workspace, or sidecar stopped after crashes) with the way out. */
  disabled?(ctx: Ctx, why: Unavailable): Handler;
}

export const UNTRUSTED_MESSAGE =
  'PEFT Lab: this workspace is not trusted (Restricted Mode), so fine-tunes and other jobs cannot start here. Runs can still be viewed.';

/** The default disabled variant. */
export function explainUnavailable(ctx: Ctx, why: Unavailable): Handler {
  return async () => {
    if (why === 'untrusted') {
      const choice = await vscode.window.showWarningMessage(UNTRUSTED_MESSAGE, 'Manage Workspace Trust');
      if (choice === 'Manage Workspace Trust') await vscode.commands.executeCommand('workbench.trust.manage');
      return;
    }
    await offerRestart(ctx);
  };
}

/** The "sidecar gave up" message with its Restart action. */
export async function offerRestart(ctx: Ctx): Promise<void> {
  const crashes = ctx.sidecar.recentCrashes;
  const choice = await vscode.window.showErrorMessage(
    `PEFT Lab: the sidecar crashed${crashes ? ` ${crashes} times` : ''} and was not restarted again${ctx.sidecar.lastError ? ` (last: ${ctx.sidecar.lastError})` : ''}.`,
    'Restart',
    'Show Output',
  );
  if (choice === 'Restart') await vscode.commands.executeCommand('peftLab.restartSidecar');
  else if (choice === 'Show Output') ctx.log.show(true);
}

/** Runs a handler; a failure is logged and shown with "Show Output", never a silent rejection. */
function guarded(ctx: Ctx, id: string, handler: Handler): Handler {
  return async (...args: unknown[]) => {
    try {
      return await handler(...args);
    } catch (err) {
      if (err instanceof vscode.CancellationError) return undefined;
      const message = messageOf(err);
      ctx.log.error(`${id}: ${message}`);
      if (ctx.sidecar.state === 'failed') return offerRestart(ctx);
      const choice = await vscode.window.showErrorMessage(`PEFT Lab: ${message}`, 'Show Output');
      if (choice === 'Show Output') ctx.log.show(true);
      return undefined;
    }
  };
}

export class CommandRegistry implements vscode.Disposable {
  private registered: vscode.Disposable[] = [];
  private last: string | undefined;

  constructor(
    private readonly ctx: Ctx,
    private readonly factories: Readonly<Record<string, CommandFactory>>,
  ) {}

  /** (Re-)registers every command for the current availability; a no-op when nothing changed. */
  update(a: Availability): void {
    const key = JSON.stringify(a);
    if (key === this.last) return;
    this.last = key;
    this.registered.forEach((d) => d.dispose());
    this.registered = Object.entries(this.factories).map(([id, f]) => {
      const why = unavailability(f.needs, a);
      const handler = why ? (f.disabled ?? ((ctx: Ctx, w: Unavailable) => explainUnavailable(ctx, w)))(this.ctx, why) : f.enabled(this.ctx);
      return vscode.commands.registerCommand(id, guarded(this.ctx, id, handler));
    });
  }

  dispose(): void {
    this.registered.forEach((d) => d.dispose());
    this.registered = [];
  }
}
