/**
 * Long work with cancellable progress, as sidecar jobs: fine-tune, resume, compare variants, score
 * layers, allocate budgets, localize a skill. Cancelling sends CancelJob; a training job stops at
 * its next step and keeps its last checkpoint.
 */
import { basename, dirname, join, resolve } from 'node:path';
import * as vscode from 'vscode';
import { type CompareJobParams, type JobEnd, type JobParams, type TrainJobParams } from '../../protocol';
import type { Ctx } from '../commands';
import * as config from '../config';
import { DEFAULT_BUDGETS, DEFAULT_EPOCHS, DEFAULT_SPARSITY, parseBudgets, parseEpochs, parseSparsity, planAllocate, planLocalize } from '../model/analysis-plan';
import type { RunInput } from '../model/merge-plan';
import { commandLink } from '../model/links';
import { planImportance, planRunDir } from '../model/run-plan';
import { formatMetric } from '../model/tree';
import { progressMessage } from '../model/status-text';

/** Error text of a job whose sidecar exited under it (see SidecarClient.loseJobs). */
export const LOST_JOB = /^the sidecar exited/;


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

/** The spec's text as the sidecar will read it: an open editor with changes is saved first. */
async function savedSpecText(specFile: string): Promise<string> {
  const doc = vscode.workspace.textDocuments.find((d) => d.uri.fsPath === resolve(specFile));
  if (doc?.isDirty) await doc.save();
  return doc ? doc.getText() : Buffer.from(await vscode.workspace.fs.readFile(vscode.Uri.file(specFile))).toString('utf8');
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
    const text = await savedSpecText(req.specFile);
    const runsFolder = config.runsFolder(workspaceRoot);
    const runDir = planRunDir({ specFile: req.specFile, specText: text, ...(runsFolder ? { runsFolder } : {}) });
    params = { kind: 'train', spec: req.specFile, ...(runDir ? { runDir } : {}), ...(workspaceRoot ? { workspaceRoot } : {}) };
  }
  ctx.diagnostics.clearSpec(req.specFile);
  if (params.runDir) ctx.runs.expect(params.runDir);
  const name = req.resumeDir ? req.resumeDir.split(/[\\/]/).pop() : req.specFile.split(/[\\/]/).pop();
  ctx.log.info(`${req.resumeDir ? 'resuming' : 'fine-tuning'} ${name}${params.runDir ? ` → ${params.runDir}` : ''}`);
  // The dashboard a click away while it trains (a progress notification has no buttons: a link).
  const dashboard = params.runDir ? ` · ${commandLink('Open Dashboard', 'peftLab.openDashboard', [params.runDir])}` : '';
  const end = await runJobWithProgress(ctx, params, `PEFT Lab: ${req.resumeDir ? 'resuming' : 'fine-tuning'} ${name}${dashboard}`);
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
      const resume = runDir ? async () => void (await vscode.commands.executeCommand('peftLab.runs.resume', runDir)) : undefined;
      return reportFailure(ctx, { what: 'fine-tune', error: end.error, problems: end.problems, specFile: params.spec, resume });
    }
  }
}

/** Opens a file at its first PEFT Lab diagnostic. */
export async function revealDiagnostic(uri: vscode.Uri): Promise<void> {
  const d = vscode.languages.getDiagnostics(uri).find((x) => x.source === 'PEFT Lab');
  await vscode.window.showTextDocument(uri, d ? { selection: d.range } : {});
}

export interface CompareRequest {
  specFile: string;
  /** Continue this compare folder (its finished variants finish at once, the others from their checkpoints). */
  resumeDir?: string;
}

/** "Compare variants": a `compare` job (every variant of the spec into one compare folder), then the comparison panel. */
export async function compare(ctx: Ctx, req: CompareRequest): Promise<void> {
  const { specFile } = req;
  const workspaceRoot = config.workspaceFolderOf(specFile);
  let outDir = req.resumeDir;
  if (!outDir) {
    const text = await savedSpecText(specFile);
    const runsFolder = config.runsFolder(workspaceRoot);
    outDir = planRunDir({ specFile, specText: text, prefix: 'compare-', ...(runsFolder ? { runsFolder } : {}) });
  }
  ctx.diagnostics.clearSpec(specFile);
  // The variants' run folders appear inside the compare folder.
  if (outDir) ctx.runs.expectIn(outDir, 1);
  const params: CompareJobParams = { kind: 'compare', spec: specFile, ...(outDir ? { outDir } : {}), ...(workspaceRoot ? { workspaceRoot } : {}) };
  const name = specFile.split(/[\\/]/).pop();
  ctx.log.info(`comparing the variants of ${name}${outDir ? ` → ${outDir}` : ''}`);
  const end = await runJobWithProgress(ctx, params, `PEFT Lab: ${req.resumeDir ? 'resuming the comparison of' : 'comparing the variants of'} ${name}`);
  const again = outDir ? () => compare(ctx, { specFile, resumeDir: outDir }) : undefined;
  switch (end.state) {
    case 'done': {
      if (end.result.kind !== 'compare') return;
      const failed = end.result.variants.filter((v) => v.error);
      if (failed.length) void vscode.window.showWarningMessage(`PEFT Lab: ${failed.length} of ${end.result.variants.length} variants failed: ${failed.map((v) => `${v.name} (${v.error})`).join('; ')}`);
      await vscode.commands.executeCommand('peftLab.openComparison', end.result.compareFile);
      return;
    }
    case 'cancelled': {
      const choice = await vscode.window.showInformationMessage('PEFT Lab: comparison cancelled; the finished variants are in its compare.json, and Resume continues the rest.', ...(again ? ['Resume'] : []));
      if (choice === 'Resume' && again) await again();
      return;
    }
    case 'failed':
      return reportFailure(ctx, { what: 'comparison', error: end.error, problems: end.problems, specFile, resume: again });
  }
}

/**
 * A failed job: when the sidecar died under it, a warning with Resume (where the job can continue);
 * otherwise the error, marked in the spec when it names a place there.
 */
async function reportFailure(
  ctx: Ctx,
  f: { what: 'fine-tune' | 'comparison' | 'layer scoring'; error: string; problems: readonly string[] | undefined; specFile: string; resume: (() => Promise<void>) | undefined },
): Promise<void> {
  if (LOST_JOB.test(f.error)) {
    const choice = await vscode.window.showWarningMessage(
      `PEFT Lab: ${f.error}; the ${f.what} is interrupted.${ctx.sidecar.state === 'failed' ? '' : ` The sidecar restarts; Resume continues the ${f.what}.`}`,
      ...(f.resume ? ['Resume'] : []),
      'Show Output',
    );
    if (choice === 'Resume' && f.resume) await f.resume();
    else if (choice === 'Show Output') ctx.log.show(true);
    return;
  }
  const marked = await ctx.diagnostics.report(f.problems ?? [f.error], dirname(f.specFile), f.specFile);
  ctx.log.error(`${f.what} failed: ${f.error}`);
  const choice = await vscode.window.showErrorMessage(`PEFT Lab: ${f.what} failed: ${f.error}`, marked ? 'Show Problem' : 'Show Output');
  if (choice === 'Show Problem' && marked) await revealDiagnostic(marked);
  else if (choice === 'Show Output') ctx.log.show(true);
}

/**
 * "Score layers": an `importance` job on the spec's model and training data (Fisher, gradient norm,
 * Taylor), then the importance panel on its report.
 */
export async function scoreLayers(ctx: Ctx, specFile: string): Promise<void> {
  const text = await savedSpecText(specFile);
  const workspaceRoot = config.workspaceFolderOf(specFile);
  const runsFolder = config.runsFolder(workspaceRoot);
  const plan = planImportance({
    specFile,
    specText: text,
    bundledModelsDir: vscode.Uri.joinPath(ctx.extension.extensionUri, 'media', 'models').fsPath,
    ...(runsFolder ? { runsFolder } : {}),
  });
  if (typeof plan === 'string') throw new Error(`cannot score layers: ${plan}`);
  ctx.diagnostics.clearSpec(specFile);
  const params: JobParams = { kind: 'importance', model: plan.model, spec: specFile, data: plan.data, out: plan.out };
  ctx.log.info(`scoring layers of ${plan.model} on ${plan.data} → ${plan.out}`);
  const end = await runJobWithProgress(ctx, params, `PEFT Lab: scoring layers for ${specFile.split(/[\\/]/).pop()}`);
  if (end.state === 'done') {
    await vscode.commands.executeCommand('peftLab.openImportance', plan.out);
  } else if (end.state === 'failed') {
    await reportFailure(ctx, { what: 'layer scoring', error: end.error, problems: end.problems, specFile, resume: undefined });
  }
}

/** An input box checking what is typed with `parse` (a string result is the problem, shown under the box). */
function ask(title: string, prompt: string, value: string, parse: (text: string) => unknown): Thenable<string | undefined> {
  const problem = (text: string): string | undefined => {
    const r = parse(text);
    return typeof r === 'string' ? r : undefined;
  };
  return vscode.window.showInputBox({ title, prompt, value, validateInput: problem });
}

/** A failed or cancelled analysis job (no spec to mark, nothing to resume): said once, with the output a click away. */
export async function reportAnalysisEnd(ctx: Ctx, what: string, end: JobEnd): Promise<void> {
  if (end.state === 'cancelled') {
    void vscode.window.showInformationMessage(`PEFT Lab: ${what} cancelled.`);
    return;
  }
  if (end.state !== 'failed') return;
  ctx.log.error(`${what} failed: ${end.error}`);
  if ((await vscode.window.showErrorMessage(`PEFT Lab: ${what} failed: ${end.error}`, 'Show Output')) === 'Show Output') ctx.log.show(true);
}

/**
 * "Allocate Parameter Budget…": an `allocate` job on an importance report (from the importance
 * panel: its file, the method it shows and `{ beside: true }`; else picked), for budgets the user
 * types; then the budget panel. Resolves with the allocation file, or undefined when dismissed or failed.
 */
export async function allocateBudget(ctx: Ctx, args: unknown[]): Promise<string | undefined> {
  const [given, method, opts] = args;
  let file = typeof given === 'string' ? given : undefined;
  if (!file) {
    const picked = await vscode.window.showOpenDialog({
      title: 'PEFT Lab: the importance report to allocate from',
      canSelectMany: false,
      filters: { 'Importance reports': ['json'] },
      ...(ctx.runs.root ? { defaultUri: ctx.runs.root } : {}),
    });
    file = picked?.[0]?.fsPath;
  }
  if (!file) return undefined;
  const typed = await ask(
    `PEFT Lab: parameter budgets for ${basename(dirname(file))}`,
    'Trainable parameters per budget: a percentage of the model (0.5%) or a count (20000), comma-separated',
    DEFAULT_BUDGETS,
    parseBudgets,
  );
  if (typed === undefined) return undefined;
  const plan = planAllocate(file, typed, typeof method === 'string' ? method : undefined);
  if (typeof plan === 'string') throw new Error(`cannot allocate: ${plan}`);
  ctx.log.info(`allocating ${plan.budgets.join(', ')} by ${plan.method ?? 'fisher'} scores of ${file} → ${plan.out}`);
  const end = await runJobWithProgress(ctx, plan, `PEFT Lab: allocating ${plan.budgets.join(', ')}`);
  if (end.state !== 'done' || end.result.kind !== 'allocate') return void (await reportAnalysisEnd(ctx, 'allocation', end));
  await vscode.commands.executeCommand('peftLab.openBudget', end.result.out, ...(opts ? [opts] : []));
  return end.result.out;
}

/**
 * "Localize Skill…": a `localize` job on one finished run (sparsity levels and epochs typed), then
 * the localization panel on its report.
 */
export async function localizeRun(ctx: Ctx, run: RunInput): Promise<void> {
  const title = `PEFT Lab: localize the skill of ${run.name}`;
  const sparsity = await ask(`${title} (1/2)`, 'Sparsity levels ρ: the fraction of block parameters grafted from the fine-tune onto the base, comma-separated', DEFAULT_SPARSITY, parseSparsity);
  if (sparsity === undefined) return;
  const epochs = await ask(`${title} (2/2)`, 'Epochs of mask training per level (each a pass over up to 256 training rows)', DEFAULT_EPOCHS, parseEpochs);
  if (epochs === undefined) return;
  const plan = planLocalize(run, sparsity, epochs);
  if (typeof plan === 'string') throw new Error(`cannot localize: ${plan}`);
  ctx.log.info(`localizing ${run.name} at ρ = ${plan.sparsity?.join(', ')} → ${plan.out}`);
  const end = await runJobWithProgress(ctx, plan, `PEFT Lab: localizing the skill of ${run.name}`);
  if (end.state !== 'done' || end.result.kind !== 'localize') return reportAnalysisEnd(ctx, 'localization', end);
  await vscode.commands.executeCommand('peftLab.openLocalization', join(end.result.out, 'localize.json'));
}
