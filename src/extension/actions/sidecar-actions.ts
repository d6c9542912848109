/** Sidecar commands: start, stop, restart, status, output. */
import * as vscode from 'vscode';
import { Status } from '../../protocol';
import type { Ctx } from '../commands';
import { BACKEND_LABELS } from '../model/status-text';

export async function startSidecar(ctx: Ctx): Promise<void> {
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'PEFT Lab: starting the sidecar' }, () => ctx.sidecar.start());
}

export async function stopSidecar(ctx: Ctx): Promise<void> {
  if (ctx.sidecar.state === 'stopped') {
    void vscode.window.showInformationMessage('PEFT Lab: the sidecar is not running.');
    return;
  }
  const jobs = ctx.sidecar.activeJobs.length;
  if (jobs > 0) {
    const choice = await vscode.window.showWarningMessage(`PEFT Lab: ${jobs} job${jobs > 1 ? 's are' : ' is'} running; stopping the sidecar cancels ${jobs > 1 ? 'them' : 'it'}.`, { modal: true }, 'Stop');
    if (choice !== 'Stop') return;
  }
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'PEFT Lab: stopping the sidecar' }, () => ctx.sidecar.stop());
}

export async function restartSidecar(ctx: Ctx): Promise<void> {
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'PEFT Lab: restarting the sidecar' }, () => ctx.sidecar.restart());
}

export async function showStatus(ctx: Ctx): Promise<void> {
  await startSidecar(ctx);
  const status = await ctx.sidecar.request(Status, {});
  const running = status.jobs.filter((j) => j.state === 'running' || j.state === 'queued').length;
  const skipped = status.backend.skipped.map((s) => `${s.name} (${s.reason})`).join(', ');
  const choice = await vscode.window.showInformationMessage(
    `PEFT Lab sidecar ${status.version}: backend ${BACKEND_LABELS[status.backend.name]} (${status.backend.name}) on ${status.backend.device}; ` +
      `TF.js ${status.tfjs}, Node ${status.node}, pid ${status.pid}, ${status.memory.rssMb} MB; ${running} job(s) active.` +
      (skipped ? ` Skipped: ${skipped}.` : ''),
    'Show Output',
  );
  if (choice === 'Show Output') ctx.log.show(true);
}
