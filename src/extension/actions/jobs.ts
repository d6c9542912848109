/**
 * Long work with cancellable progress: sidecar jobs (fine-tune, resume) and the `peft-lab` command
 * line for what the sidecar has no job for yet (compare). Cancelling sends CancelJob (or SIGTERM to
 * the command line, which cancels the same way and keeps the last checkpoint).
 */
import { spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import * as vscode from 'vscode';
import { JOB_KINDS, type JobEnd, type JobParams, type JobProgress, type TrainJobParams } from '../../protocol';
import type { Ctx } from '../commands';
import * as config from '../config';
import { planImportance, planRunDir } from '../model/run-plan';
import { formatMetric } from '../model/tree';
import { messageOf } from '../sidecar';

/** Error text of a job whose sidecar exited under it (see SidecarClient.loseJobs). */
export const LOST_JOB = /^the sidecar exited/;

function progressMessage(p: JobProgress): string {
  const parts = [p.total > 0 ? `${p.done}/${p.total}` : `${p.done}`];
  const loss = p.metrics?.loss;
  if (loss !== undefined && Number.isFinite(loss)) parts.push(`loss ${loss.toFixed(4)}`);
  if (p.message) parts.push(p.message);
  return parts.join(' · ');
}

/** Starts a sidecar job under a cancellable notification and resolves with its end. */
export function runJobWithProgress(ctx: Ctx, params: JobParams, title: string): Promise<JobEnd> {
  return Promise.resolve(
    vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, token) => {
      progress.report({ message: 'starting the sidecar…' });
      const id = await ctx.sidecar.startJob(params);
      if (token.isCancellationRequested) await ctx.sidecar.cancelJob(id);
      progress.report({ message: 'queued' });
      let shown = 0;
      return ctx.sidecar.waitForJob(id, token, (p) => {
        const pct = p.total > 0 ? Math.min(100, (100 * p.done) / p.total) : shown;
        progress.report({ increment: pct - shown, message: progressMessage(p) });
        shown = pct;
      });
    }),
  );
}

export interface TrainRequest {
  specFile: string;
  /** Resume this run folder instead of starting a new one. */
  resumeDir?: string;
}

/** Fine-tunes from a spec (or resumes a run) and reports the outcome; spec errors become diagnostics. */
export async function train(ctx: Ctx, req: TrainRequest): Promise<void> {
  const workspaceRoot = config.workspaceFolderOf(req.specFile);
  let params: TrainJobParams;
  if (req.resumeDir) {
    params = { kind: 'train', spec: req.specFile, runDir: req.resumeDir, resume: true, ...(workspaceRoot ? { workspaceRoot } : {}) };
  } else {
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.fsPath === resolve(req.specFile));
    if (doc?.isDirty) await doc.save();
    const text: string = doc ? doc.getText() : Buffer.from(await vscode.workspace.fs.readFile(vscode.Uri.file(req.specFile))).toString('utf8');
    const runsFolder = config.runsFolder(workspaceRoot);
    const runDir = planRunDir({ specFile: req.specFile, specText: text, ...(runsFolder ? { runsFolder } : {}) });
    params = { kind: 'train', spec: req.specFile, ...(runDir ? { runDir } : {}), ...(workspaceRoot ? { workspaceRoot } : {}) };
  }
  ctx.diagnostics.clear(vscode.Uri.file(req.specFile));
  if (params.runDir) ctx.runs.expect(params.runDir);
  const name = req.resumeDir ? req.resumeDir.split(/[\\/]/).pop() : req.specFile.split(/[\\/]/).pop();
  ctx.log.info(`${req.resumeDir ? 'resuming' : 'fine-tuning'} ${name}${params.runDir ? ` → ${params.runDir}` : ''}`);
  const end = await runJobWithProgress(ctx, params, `PEFT Lab: ${req.resumeDir ? 'resuming' : 'fine-tuning'} ${name}`);
  await reportTrainEnd(ctx, params, end);
}

async function reportTrainEnd(ctx: Ctx, params: TrainJobParams, end: JobEnd): Promise<void> {
  const runDir = end.state === 'done' && end.result.kind === 'train' ? end.result.runDir : params.runDir;
  switch (end.state) {
    case 'done': {
      const s = end.result.kind === 'train' ? end.result.status : undefined;
      const loss = s?.summary?.loss;
      const metric = s?.summary?.evalMetric;
      const figures = [loss !== undefined ? `loss ${loss.toFixed(4)}` : '', metric !== undefined ? formatMetric(s?.summary?.metricName ?? 'metric', metric) : '']
        .filter(Boolean)
        .join(', ');
      const choice = await vscode.window.showInformationMessage(`PEFT Lab: fine-tune ${s?.name ?? ''} finished${figures ? `: ${figures}` : ''}.`, 'Open Dashboard');
      if (choice === 'Open Dashboard' && runDir) await vscode.commands.executeCommand('peftLab.openDashboard', [runDir]);
      return;
    }
    case 'cancelled': {
      const choice = await vscode.window.showInformationMessage('PEFT Lab: fine-tune cancelled; Resume continues from its last checkpoint.', ...(runDir ? ['Resume'] : []));
      if (choice === 'Resume' && runDir) await vscode.commands.executeCommand('peftLab.runs.resume', runDir);
      return;
    }
    case 'failed': {
      if (LOST_JOB.test(end.error)) {
        const choice = await vscode.window.showWarningMessage(
          `PEFT Lab: ${end.error}; the run is interrupted.${ctx.sidecar.state === 'failed' ? '' : ' The sidecar restarts; Resume continues the run.'}`,
          ...(runDir ? ['Resume'] : []),
          'Show Output',
        );
        if (choice === 'Resume' && runDir) await vscode.commands.executeCommand('peftLab.runs.resume', runDir);
        else if (choice === 'Show Output') ctx.log.show(true);
        return;
      }
      const marked = await ctx.diagnostics.report(end.error, dirname(params.spec));
      ctx.log.error(`fine-tune failed: ${end.error}`);
      const choice = await vscode.window.showErrorMessage(`PEFT Lab: fine-tune failed: ${end.error}`, marked ? 'Show Problem' : 'Show Output');
      if (choice === 'Show Problem' && marked) await revealDiagnostic(marked);
      else if (choice === 'Show Output') ctx.log.show(true);
      return;
    }
  }
}

/** Opens a file at its first PEFT Lab diagnostic. */
export async function revealDiagnostic(uri: vscode.Uri): Promise<void> {
  const d = vscode.languages.getDiagnostics(uri).find((x) => x.source === 'PEFT Lab');
  await vscode.window.showTextDocument(uri, d ? { selection: d.range } : {});
}

/** The bundled command line (dist/cli.js), run by the extension host's Node. */
function cliPath(ctx: Ctx): string {
  return vscode.Uri.joinPath(ctx.extension.extensionUri, 'dist', 'cli.js').fsPath;
}

export interface CliOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The last non-empty stderr line (the CLI's one-line error). */
  lastError: string;
  cancelled: boolean;
}

/** Runs `peft-lab ARGS` with progress parsed from its stderr ("[####....] 12/40 ..."); cancellable (SIGTERM). */
export function runCliWithProgress(ctx: Ctx, args: string[], title: string, cwd: string | undefined): Promise<CliOutcome> {
  return Promise.resolve(
    vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (progress, token) =>
      new Promise<CliOutcome>((resolvePromise, reject) => {
        const memoryMb = config.memoryLimitMb();
        const child = spawn(process.execPath, [...(memoryMb ? [`--max-old-space-size=${memoryMb}`] : []), cliPath(ctx), ...args], {
          cwd: cwd ?? process.cwd(),
          // The extension host's executable is Electron's: run it as plain Node.
          env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        ctx.log.info(`peft-lab ${args.join(' ')} (pid ${child.pid ?? '?'})`);
        let stdout = '';
        let lastError = '';
        let partial = '';
        let shown = 0;
        let cancelled = false;
        child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
        child.stderr.on('data', (b: Buffer) => {
          partial += b.toString('utf8');
          const lines = partial.split(/\r?\n|\r/);
          partial = lines.pop() ?? '';
          for (const line of lines) {
            if (!line.trim()) continue;
            lastError = line.trim();
            const m = /(\d+)\/(\d+)/.exec(line);
            if (m && line.includes('[')) {
              const pct = Math.min(100, (100 * Number(m[1])) / Math.max(1, Number(m[2])));
              progress.report({ increment: Math.max(0, pct - shown), message: line.replace(/\[[#.]*\]\s*/, '').trim() });
              shown = Math.max(shown, pct);
            } else {
              ctx.log.info(`[peft-lab] ${line}`);
              progress.report({ message: line.slice(0, 120) });
              // A new variant starts its own bar.
              if (/^variant \d+\/\d+/.test(line)) shown = 0;
            }
          }
        });
        const sub = token.onCancellationRequested(() => {
          cancelled = true;
          child.kill('SIGTERM');
        });
        child.on('error', (err) => {
          sub.dispose();
          reject(new Error(`could not run the command line: ${messageOf(err)}`));
        });
        child.on('close', (code, signal) => {
          sub.dispose();
          if (partial.trim()) lastError = partial.trim();
          resolvePromise({ code, signal, stdout, lastError, cancelled });
        });
      }),
    ),
  );
}

/** `peft-lab compare SPEC`: trains every variant, then opens the comparison. */
export async function compare(ctx: Ctx, specFile: string): Promise<void> {
  const doc = vscode.workspace.textDocuments.find((d) => d.uri.fsPath === resolve(specFile));
  if (doc?.isDirty) await doc.save();
  ctx.diagnostics.clear(vscode.Uri.file(specFile));
  const workspaceRoot = config.workspaceFolderOf(specFile);
  const backend = config.backendPreference((m) => ctx.log.warn(m));
  const text: string = doc ? doc.getText() : Buffer.from(await vscode.workspace.fs.readFile(vscode.Uri.file(specFile))).toString('utf8');
  // The comparison folder appears under the spec's runs folder, with one run folder per variant.
  const planned = planRunDir({ specFile, specText: text });
  if (planned) ctx.runs.expectIn(dirname(planned), 2);
  const args = ['compare', specFile, ...(workspaceRoot ? ['--workspace', workspaceRoot] : []), ...(backend !== 'auto' ? ['--backend', backend] : [])];
  const out = await runCliWithProgress(ctx, args, `PEFT Lab: comparing the variants of ${specFile.split(/[\\/]/).pop()}`, workspaceRoot ?? dirname(specFile));
  const compareFile = out.stdout.trim().split(/\r?\n/).pop()?.trim();
  if (out.code === 0 && compareFile) {
    await vscode.commands.executeCommand('peftLab.openComparison', compareFile);
    return;
  }
  if (out.cancelled) {
    void vscode.window.showInformationMessage('PEFT Lab: comparison cancelled; the finished variants are in its compare.json.');
    return;
  }
  const marked = await ctx.diagnostics.report(out.lastError.replace(/^peft-lab(?: [\w-]+)?:\s*/, ''), dirname(specFile));
  ctx.log.error(`compare failed: ${out.lastError}`);
  const choice = await vscode.window.showErrorMessage(`PEFT Lab: comparison failed: ${out.lastError || `exit ${out.code ?? out.signal}`}`, marked ? 'Show Problem' : 'Show Output');
  if (choice === 'Show Problem' && marked) await revealDiagnostic(marked);
  else if (choice === 'Show Output') ctx.log.show(true);
}


/**
 * "Score layers": an `importance` job on the spec's model and training data (Fisher, gradient norm,
 * Taylor), then the importance panel on its report. Without that job in the sidecar, the panel
 * gets the spec itself.
 */
export async function scoreLayers(ctx: Ctx, specFile: string): Promise<void> {
  if (!(JOB_KINDS as readonly string[]).includes('importance')) {
    await vscode.commands.executeCommand('peftLab.openImportance', specFile);
    return;
  }
  const doc = vscode.workspace.textDocuments.find((d) => d.uri.fsPath === resolve(specFile));
  if (doc?.isDirty) await doc.save();
  const text: string = doc ? doc.getText() : Buffer.from(await vscode.workspace.fs.readFile(vscode.Uri.file(specFile))).toString('utf8');
  const workspaceRoot = config.workspaceFolderOf(specFile);
  const runsFolder = config.runsFolder(workspaceRoot);
  const plan = planImportance({
    specFile,
    specText: text,
    bundledModelsDir: vscode.Uri.joinPath(ctx.extension.extensionUri, 'media', 'models').fsPath,
    ...(runsFolder ? { runsFolder } : {}),
  });
  if (typeof plan === 'string') throw new Error(`cannot score layers: ${plan}`);
  ctx.diagnostics.clear(vscode.Uri.file(specFile));
  const params: JobParams = { kind: 'importance', model: plan.model, data: plan.data, out: plan.out };
  ctx.log.info(`scoring layers of ${plan.model} on ${plan.data} → ${plan.out}`);
  const end = await runJobWithProgress(ctx, params, `PEFT Lab: scoring layers for ${specFile.split(/[\\/]/).pop()}`);
  if (end.state === 'done') {
    await vscode.commands.executeCommand('peftLab.openImportance', plan.out);
  } else if (end.state === 'failed') {
    const marked = await ctx.diagnostics.report(end.error, dirname(specFile));
    const choice = await vscode.window.showErrorMessage(`PEFT Lab: layer scoring failed: ${end.error}`, marked ? 'Show Problem' : 'Show Output');
    if (choice === 'Show Problem' && marked) await revealDiagnostic(marked);
    else if (choice === 'Show Output') ctx.log.show(true);
  }
}
