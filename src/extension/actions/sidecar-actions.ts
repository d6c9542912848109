/** Sidecar commands: start, stop, restart, status, output. */
import * as vscode from 'vscode';
import { Status } from '../../protocol';
import type { Ctx } from '../commands';
import { BACKEND_LABELS, cancelJobsWarning } from '../model/status-text';

export async function startSidecar(ctx: Ctx): Promise<void> {
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'PEFT Lab: starting the sidecar' }, () => ctx.sidecar.start());
}

export async function stopSidecar(ctx: Ctx): Promise<void> {
  if (ctx.sidecar.state === 'stopped') {
    void vscode.window.showInformationMessage('PEFT Lab: the sidecar is not running.');
    return;
  }
  if (!(await confirmCancelJobs(ctx, 'stop'))) return;
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'PEFT Lab: stopping the sidecar' }, () => ctx.sidecar.stop());
}

/**
 * Asks (modal) before stopping or restarting the sidecar under running jobs, which it cancels;
 * true when none run or the user agrees. `confirmed`: how many running jobs the caller already
 * asked about (the settings prompt says them), so that the user is not asked twice.
 */
async function confirmCancelJobs(ctx: Ctx, action: 'stop' | 'restart', confirmed = 0): Promise<boolean> {
  const jobs = ctx.sidecar.activeJobs.length;
  const warning = cancelJobsWarning(jobs, action);
  if (!warning || jobs <= confirmed) return true;
  const button = action === 'stop' ? 'Stop' : 'Restart';
  return (await vscode.window.showWarningMessage(warning, { modal: true }, button)) === button;
}

/** Restarts the sidecar; `{ jobsConfirmed: n }` from a caller that already asked about n running jobs. */
export async function restartSidecar(ctx: Ctx, args: readonly unknown[] = []): Promise<void> {
  const [opts] = args;
  const confirmed = typeof opts === 'object' && opts !== null && typeof (opts as { jobsConfirmed?: unknown }).jobsConfirmed === 'number' ? (opts as { jobsConfirmed: number }).jobsConfirmed : 0;
  if (!(await confirmCancelJobs(ctx, 'restart', confirmed))) return;
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
