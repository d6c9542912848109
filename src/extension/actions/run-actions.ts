/** The runs view's actions: open dashboard, cancel, resume, export adapter, reveal, delete, compare selected, merge, localize, evaluate, try. */
import { existsSync, promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as vscode from 'vscode';
import type { Ctx } from '../commands';
import { canResume, deletionPlan, isPidAlive, jobRunning, pairFieldOf, resumePlan, trainsRuns, type RunInfo } from '../model/runs';
import { runLabel } from '../model/tree';
import { runsFromArgs } from './args';
import { describeEvaluation, MERGE_METHODS, type GenerateJobParams } from '../../protocol';
import * as config from '../config';
import { generationMarkdown } from '../model/generation-text';
import { planEvaluate } from '../model/analysis-plan';
import { MERGE_METHOD_INFO, planMergedModel, planMerge, strAt, type RunInput } from '../model/merge-plan';
import { compare, localizeRun, reportAnalysisEnd, runJobWithProgress, train } from './jobs';
import { checkMergeOutput } from '../../../sidecar/src/tasks/merge-output';

export async function openDashboard(ctx: Ctx, args: unknown[]): Promise<void> {
  const runs = await runsFromArgs(ctx.runs, args, () => true, 'open');
  if (runs.length) await vscode.commands.executeCommand('peftLab.openDashboard', runs.map((r) => r.dir));
}

/** Runs for a many-run action: the selection it was invoked on when that is two or more, else a
 * multi-pick (with the run it was invoked on checked). Undefined when the pick is dismissed. */
async function pickRuns(ctx: Ctx, args: unknown[], filter: (r: RunInfo) => boolean, what: string): Promise<RunInfo[] | undefined> {
  const given = args.length ? (await runsFromArgs(ctx.runs, args, filter, what)).filter(filter) : [];
  if (given.length >= 2) return given;
  await ctx.runs.ready();
  const picks = await vscode.window.showQuickPick(
    ctx.runs.list().filter(filter).map((r) => ({ label: runLabel(r), description: r.state, detail: vscode.workspace.asRelativePath(r.dir), picked: given.some((x) => x.dir === r.dir), run: r })),
    { title: `PEFT Lab: choose runs to ${what}`, canPickMany: true },
  );
  return picks?.map((p) => p.run);
}

/** Several runs in one dashboard, overlaid. */
export async function compareSelected(ctx: Ctx, args: unknown[]): Promise<void> {
  const runs = await pickRuns(ctx, args, () => true, 'compare');
  if (runs?.length) await vscode.commands.executeCommand('peftLab.openDashboard', runs.map((r) => r.dir));
}

/** "Merge Runs…": the runs' adapters folded into their base and merged by a task-vector method
 * (a `merge` job), into a model folder beside the first run with its merge.json report. */
export async function mergeRuns(ctx: Ctx, args: unknown[]): Promise<void> {
  const runs = await pickRuns(ctx, args, (r) => r.hasAdapter, 'merge (their adapters folded into one model)');
  if (!runs?.length) return;
  const method = await vscode.window.showQuickPick(
    MERGE_METHODS.map((m) => ({ label: m, description: MERGE_METHOD_INFO[m].description, method: m })),
    { title: `PEFT Lab: merge ${runs.length} run${runs.length === 1 ? '' : 's'} by` },
  );
  if (!method) return;
  const plan = planMerge(await Promise.all(runs.map(runInput)), method.method);
  if (typeof plan === 'string') throw new Error(`cannot merge: ${plan}`);
  ctx.log.info(`merging ${runs.map((r) => r.name).join(', ')} (${plan.method}) → ${plan.out}`);
  const end = await runJobWithProgress(ctx, plan, `PEFT Lab: merging ${runs.length} runs (${plan.method})`);
  if (end.state !== 'done' || end.result.kind !== 'merge') return reportAnalysisEnd(ctx, 'merge', end);
  const { out, report } = end.result;
  const ev = report.eval;
  const figures = ev ? `eval loss ${ev.merged.loss.toFixed(4)}${ev.base ? ` (base ${ev.base.loss.toFixed(4)})` : ''}` : `${report.changed} weights changed`;
  const choice = await vscode.window.showInformationMessage(`PEFT Lab: merged ${runs.length} runs with ${plan.method}: ${figures}.`, 'Open Report', 'Reveal Model');
  if (choice === 'Open Report') await vscode.window.showTextDocument(vscode.Uri.file(join(out, 'merge.json')));
  else if (choice === 'Reveal Model') await vscode.commands.executeCommand('revealFileInOS', vscode.Uri.file(out));
}

/**
 * "Export Merged Model…": the run's adapter folded into its base, saved as a model folder that
 * transformers (or any tool reading Hugging Face checkpoints) loads without PEFT.
 */
export async function exportMerged(ctx: Ctx, args: unknown[]): Promise<void> {
  const [run] = await runsFromArgs(ctx.runs, args, (r) => r.hasAdapter && r.state === 'done', 'export merged (a finished run with an adapter)');
  if (!run) return;
  if (!run.hasAdapter || run.state !== 'done') throw new Error(`${run.name} has no finished adapter to merge`);
  const picked = await vscode.window.showOpenDialog({
    canSelectFolders: true,
    canSelectFiles: false,
    canSelectMany: false,
    openLabel: 'Export Here',
    title: `Export ${run.name} merged into its base (a Hugging Face model folder)`,
    ...(vscode.workspace.workspaceFolders?.[0] ? { defaultUri: vscode.workspace.workspaceFolders[0].uri } : {}),
  });
  const folder = picked?.[0];
  if (!folder) return;
  const plan = planMergedModel(await runInput(run), folder.fsPath);
  if (typeof plan === 'string') throw new Error(`cannot merge: ${plan}`);
  await checkMergeOutput(plan); // a folder it would refuse is refused before asking to replace it
  if (existsSync(plan.out)) {
    const choice = await vscode.window.showWarningMessage(`${plan.out} exists. Replace the merged model in it?`, { modal: true }, 'Replace');
    if (choice !== 'Replace') return;
  }
  ctx.log.info(`merging ${run.name} into its base → ${plan.out}`);
  const end = await runJobWithProgress(ctx, plan, `PEFT Lab: merging ${run.name} into its base`);
  if (end.state !== 'done' || end.result.kind !== 'merge') return reportAnalysisEnd(ctx, 'merge', end);
  const choice = await vscode.window.showInformationMessage(`PEFT Lab: ${run.name} merged into its base: ${end.result.out}.`, 'Reveal');
  if (choice === 'Reveal') await vscode.commands.executeCommand('revealFileInOS', vscode.Uri.file(end.result.out));
}

/** A run with its spec.json, for planning a job on it. */
const runInput = async (r: RunInfo): Promise<RunInput> => ({ dir: r.dir, name: r.name, config: JSON.parse(await fsp.readFile(join(r.dir, 'spec.json'), 'utf8')) as unknown });

/** "Localize Skill…" on a finished run with an adapter (the one it was invoked on, else picked). */
export async function localize(ctx: Ctx, args: unknown[]): Promise<void> {
  const [run] = await runsFromArgs(ctx.runs, args, (r) => r.hasAdapter && r.state === 'done', 'localize the skill of (a finished run with an adapter)');
  if (!run) return;
  if (!run.hasAdapter || run.state !== 'done') throw new Error(`${run.name} has no finished adapter to localize`);
  await localizeRun(ctx, await runInput(run));
}

/**
 * "Evaluate on Data…": finished runs (the selection, else picked) and their base scored on a data
 * file (an `evaluate` job, the training loop's loss and metric plus calibration); the figures in a
 * notification, the report beside the first run.
 */
export async function evaluateRuns(ctx: Ctx, args: unknown[]): Promise<void> {
  const finished = (r: RunInfo) => r.hasAdapter && r.state === 'done';
  const runs = (await pickRuns(ctx, args, finished, 'evaluate on a data file'))?.filter(finished);
  if (!runs?.length) return;
  const trainedOn = strAt((await runInput(runs[0]!)).config, 'data', 'train');
  const picked = await vscode.window.showOpenDialog({
    title: `PEFT Lab: rows to score ${runs.length === 1 ? runs[0]!.name : `${runs.length} runs`} on`,
    canSelectMany: false,
    filters: { 'Data (JSONL, CSV, Parquet)': ['jsonl', 'json', 'csv', 'tsv', 'parquet'] },
    ...(trainedOn ? { defaultUri: vscode.Uri.file(dirname(trainedOn)) } : {}),
  });
  const data = picked?.[0]?.fsPath;
  if (!data) return;
  const plan = planEvaluate(runs, data);
  if (typeof plan === 'string') throw new Error(`cannot evaluate: ${plan}`);
  ctx.log.info(`evaluating ${runs.map((r) => r.name).join(', ')} on ${data} → ${plan.out}`);
  const end = await runJobWithProgress(ctx, plan, `PEFT Lab: evaluating ${runs.length === 1 ? runs[0]!.name : `${runs.length} runs`} on ${basename(data)}`);
  if (end.state !== 'done' || end.result.kind !== 'evaluate') return reportAnalysisEnd(ctx, 'evaluation', end);
  const { report, out } = end.result;
  for (const r of report.runs) ctx.log.info(`evaluation on ${basename(data)}: ${describeEvaluation(r)}`);
  const shown = report.runs.slice(0, 3).map(describeEvaluation).join('; ');
  const more = report.runs.length > 3 ? ` (and ${report.runs.length - 3} more)` : '';
  const choice = await vscode.window.showInformationMessage(`PEFT Lab: ${report.rows} rows of ${basename(data)}: ${shown}${more}.`, 'Open Report');
  if (choice === 'Open Report') await vscode.commands.executeCommand('peftLab.openEvaluation', out);
}

/**
 * "Try the Model…": a prompt through a finished run and its base (a `generate` job; chat-trained
 * runs get it as a user turn of the chat template); both texts in a Markdown document beside.
 */
export async function tryModel(ctx: Ctx, args: unknown[]): Promise<void> {
  const finished = (r: RunInfo) => r.hasAdapter && r.state === 'done';
  const [run] = await runsFromArgs(ctx.runs, args, finished, 'try (a finished run with an adapter)');
  if (!run) return;
  if (!finished(run)) throw new Error(`${run.name} has no finished adapter to try`);
  const key = 'peftLab.lastPrompt';
  const prompt = await vscode.window.showInputBox({
    title: `PEFT Lab: try ${run.name}`,
    prompt: 'A prompt the fine-tuned model and its base continue (for a text classifier: a text to classify)',
    value: ctx.extension.workspaceState.get<string>(key) ?? '',
    ignoreFocusOut: true,
  });
  if (!prompt) return;
  await ctx.extension.workspaceState.update(key, prompt);
  // A classifier trained on sentence pairs scores two texts.
  const pairField = pairFieldOf(run.dir);
  let pair: string | undefined;
  if (pairField) {
    pair = await vscode.window.showInputBox({
      title: `PEFT Lab: try ${run.name}`,
      prompt: `The second text ("${pairField}"): the run was trained on pairs`,
      value: ctx.extension.workspaceState.get<string>(`${key}.pair`) ?? '',
      validateInput: (v) => (v.trim() === '' ? 'the run was trained on two texts per row: give the second' : undefined),
      ignoreFocusOut: true,
    });
    if (pair === undefined) return;
    await ctx.extension.workspaceState.update(`${key}.pair`, pair);
  }
  const g = config.generation();
  const params: GenerateJobParams = { kind: 'generate', run: run.dir, prompt, ...(pair !== undefined ? { pair } : {}), compareBase: true, maxNewTokens: g.maxNewTokens, temperature: g.temperature, ...(g.repetitionPenalty !== 1 ? { repetitionPenalty: g.repetitionPenalty } : {}) };
  ctx.log.info(`generating with ${run.name} (and its base): ${JSON.stringify(prompt)}`);
  const end = await runJobWithProgress(ctx, params, `PEFT Lab: generating with ${run.name}`);
  if (end.state !== 'done' || end.result.kind !== 'generate') return reportAnalysisEnd(ctx, 'generation', end);
  const settings = `${g.temperature > 0 ? `sampled at temperature ${g.temperature}` : 'greedy'}${g.repetitionPenalty !== 1 ? `, repetition penalty ${g.repetitionPenalty}` : ''}, up to ${g.maxNewTokens} new tokens (settings peftLab.generation.*)`;
  const doc = await vscode.workspace.openTextDocument({ language: 'markdown', content: generationMarkdown(run.name, end.result.result, settings) });
  await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preview: true });
}

export async function openComparison(ctx: Ctx, args: unknown[]): Promise<void> {
  const [run] = await runsFromArgs(ctx.runs, args, (r) => !!r.compareFile, 'show the comparison of');
  if (run?.compareFile) await vscode.commands.executeCommand('peftLab.openComparison', run.compareFile);
}

export async function openSpec(ctx: Ctx, args: unknown[]): Promise<void> {
  const [first] = args;
  const spec =
    typeof first === 'object' && first !== null && (first as { type?: string }).type === 'group'
      ? (first as { group: { spec?: string } }).group.spec
      : (await runsFromArgs(ctx.runs, args, (r) => !!r.spec, 'open the spec of'))[0]?.spec;
  if (!spec) return;
  if (!existsSync(spec)) throw new Error(`the spec ${spec} no longer exists`);
  await vscode.window.showTextDocument(vscode.Uri.file(spec));
}

/**
 * Cancels a running run: through the sidecar when this window's sidecar runs it, else (a
 * `peft-lab train` on the command line, another window) by SIGTERM to its process, after asking.
 */
export async function cancelRun(ctx: Ctx, args: unknown[]): Promise<void> {
  const runs = await runsFromArgs(ctx.runs, args, (r) => r.state === 'running', 'cancel');
  for (const run of runs) {
    if (run.state !== 'running') continue;
    const job = jobRunning(ctx.sidecar.activeJobs, run.dir);
    if (job) {
      if (job.params.kind === 'compare') ctx.log.info(`${run.name} is a variant of the comparison in ${job.params.outDir}: cancelling the comparison`);
      await ctx.sidecar.cancelJob(job.id);
      continue;
    }
    const pid = run.status?.pid;
    if (pid === undefined || !isPidAlive(pid)) continue;
    if (pid === ctx.sidecar.pid) {
      // This sidecar runs it, under a job this window did not tie to the folder: the training jobs it knows.
      const trains = ctx.sidecar.activeJobs.filter(trainsRuns);
      if (trains.length === 1) await ctx.sidecar.cancelJob(trains[0]!.id);
      else void vscode.window.showWarningMessage(`PEFT Lab: cannot tell which sidecar job runs ${run.name}; cancel it from its progress notification.`);
      continue;
    }
    const choice = await vscode.window.showWarningMessage(
      `PEFT Lab: ${run.name} runs in another process (pid ${pid}: the command line or another window). Stop it? It cancels after the current step and keeps its last checkpoint.`,
      { modal: true },
      'Stop',
    );
    if (choice !== 'Stop') continue;
    try {
      process.kill(pid, 'SIGTERM');
    } catch (err) {
      throw new Error(`could not stop process ${pid}: ${(err as Error).message}`);
    }
  }
}

export async function cancelJob(ctx: Ctx, args: unknown[]): Promise<void> {
  const [id] = args;
  if (typeof id === 'string') await ctx.sidecar.cancelJob(id);
}

/** Continues an interrupted / cancelled run from its last checkpoint, in the same folder. */
export async function resumeRun(ctx: Ctx, args: unknown[]): Promise<void> {
  const [run] = await runsFromArgs(ctx.runs, args, canResume, 'resume');
  if (!run) return;
  if (run.state === 'running') {
    void vscode.window.showInformationMessage(`PEFT Lab: ${run.name} is still running.`);
    return;
  }
  const plan = resumePlan(run, existsSync);
  if (plan.kind === 'compare') {
    ctx.log.info(`${run.name} is a variant of ${plan.dir}: resuming the comparison`);
    await compare(ctx, { specFile: plan.specFile, resumeDir: plan.dir });
  } else await train(ctx, { specFile: plan.specFile, resumeDir: plan.dir });
}

/** Copies the run's `adapter/` (PEFT format) to a folder the user picks. */
export async function exportAdapter(ctx: Ctx, args: unknown[]): Promise<void> {
  const [run] = await runsFromArgs(ctx.runs, args, (r) => r.hasAdapter, 'export');
  if (!run) return;
  const source = join(run.dir, 'adapter');
  if (!existsSync(source)) throw new Error(`${run.name} has no adapter/ folder yet (it is written when training ends)`);
  const picked = await vscode.window.showOpenDialog({
    canSelectFolders: true,
    canSelectFiles: false,
    canSelectMany: false,
    openLabel: 'Export Here',
    title: `Export the adapter of ${run.name} (Hugging Face PEFT format)`,
    ...(vscode.workspace.workspaceFolders?.[0] ? { defaultUri: vscode.workspace.workspaceFolders[0].uri } : {}),
  });
  const folder = picked?.[0];
  if (!folder) return;
  const target = join(folder.fsPath, `${basename(run.dir)}-adapter`);
  if (existsSync(target)) {
    const choice = await vscode.window.showWarningMessage(`${target} exists. Replace it?`, { modal: true }, 'Replace');
    if (choice !== 'Replace') return;
    await fsp.rm(target, { recursive: true, force: true });
  }
  await fsp.cp(source, target, { recursive: true });
  ctx.log.info(`exported ${source} → ${target}`);
  const choice = await vscode.window.showInformationMessage(`PEFT Lab: adapter exported to ${target}.`, 'Reveal');
  if (choice === 'Reveal') await vscode.commands.executeCommand('revealFileInOS', vscode.Uri.file(target));
}

export async function revealRun(ctx: Ctx, args: unknown[]): Promise<void> {
  const [run] = await runsFromArgs(ctx.runs, args, () => true, 'reveal');
  if (!run) return;
  const uri = vscode.Uri.file(run.dir);
  if (vscode.workspace.getWorkspaceFolder(uri)) await vscode.commands.executeCommand('revealInExplorer', uri);
  else await vscode.commands.executeCommand('revealFileInOS', uri);
}

/**
 * Deletes run folders after a modal confirmation (to the trash where there is one); refuses running
 * runs. With no run to pick from, runsFromArgs says so; a dismissed pick ends quietly.
 */
export async function deleteRuns(ctx: Ctx, args: unknown[]): Promise<void> {
  const { runs, refused } = deletionPlan(await runsFromArgs(ctx.runs, args, (r) => r.state !== 'running', 'delete'));
  if (!runs.length) {
    if (refused) void vscode.window.showInformationMessage(`PEFT Lab: ${refused}`);
    return;
  }
  const what = runs.length === 1 ? `the run folder ${runs[0]!.name}` : `${runs.length} run folders`;
  const choice = await vscode.window.showWarningMessage(
    `Delete ${what}?`,
    { modal: true, detail: `Its metrics, checkpoints and adapter go${runs.length > 1 ? ' with each' : ''}:\n${runs.map((r) => r.dir).join('\n')}${refused ? `\n\n${refused}` : ''}` },
    'Delete',
  );
  if (choice !== 'Delete') return;
  for (const run of runs) {
    const uri = vscode.Uri.file(run.dir);
    try {
      await vscode.workspace.fs.delete(uri, { recursive: true, useTrash: true });
    } catch {
      // No trash here (e.g. a remote file system): delete for good, as confirmed.
      await vscode.workspace.fs.delete(uri, { recursive: true, useTrash: false });
    }
    ctx.log.info(`deleted ${run.dir}`);
    ctx.runs.touch(run.dir);
  }
}
