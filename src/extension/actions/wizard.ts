/**
 * "PEFT Lab: New Fine-tune…": model → data → adapter → init quick picks, then a spec file. Bundled
 * tasks are copied into the workspace beside the spec (a spec's paths may not leave the workspace).
 * "Compare several adapters…" at the adapter step writes a comparison spec (`variants`) instead.
 */
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as vscode from 'vscode';
import type { AdapterKind, LoraInit } from '../../protocol';
import type { Ctx } from '../commands';
import * as config from '../config';
import {
  ADAPTER_DESCRIPTIONS,
  adapterChoices,
  buildSpecText,
  COMPARE_CHOICES,
  COMPARE_DEFAULTS,
  dataFields,
  defaultSpecFileName,
  INIT_DESCRIPTIONS,
  initChoices,
  wizardNumLabels,
  type DataAnswer,
  type ModelAnswer,
  type WizardAnswers,
} from '../model/wizard';
import { cachedHubModels, hubSnapshot } from '../../../sidecar/src/spec/hub-cache';
import { TEXT_CLASSIFIER_TYPES } from '../../../sidecar/src/models/config';
import { firstRowFields } from '../../../sidecar/src/data/rows';

const TITLE = 'PEFT Lab: New Fine-tune';

interface Pick<T> extends vscode.QuickPickItem {
  value: T;
}

async function pick<T>(items: Pick<T>[], step: number, total: number, placeholder: string): Promise<T | undefined> {
  const chosen = await vscode.window.showQuickPick(items, { title: `${TITLE} (${step}/${total})`, placeHolder: placeholder, ignoreFocusOut: true, matchOnDescription: true });
  return chosen?.value;
}

async function subfolders(dir: string, marker: string): Promise<string[]> {
  try {
    const entries = await fsp.readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory() && existsSync(join(dir, e.name, marker))).map((e) => e.name).sort();
  } catch {
    return [];
  }
}

async function firstLine(file: string): Promise<string | undefined> {
  try {
    const text = await fsp.readFile(file, 'utf8');
    return text.split('\n').map((l) => l.replace(/^#+\s*/, '').trim()).find((l) => l.length > 0);
  } catch {
    return undefined;
  }
}

type ModelChoice = { kind: 'bundled'; id: string } | { kind: 'hub'; id: string } | { kind: 'browse' };
type DataChoice = { kind: 'bundled'; task: string } | { kind: 'browse' };

/** The folder of a model answer, where it can be found. */
function modelDir(m: ModelAnswer, media: string): string | undefined {
  return m.kind === 'folder' ? m.path : m.kind === 'bundled' ? join(media, 'models', m.id) : hubSnapshot(m.id);
}

/** Whether a model folder holds a text classifier of BERT's family (the models that read sentence pairs). */
function isClassifierFolder(dir: string | undefined): boolean {
  try {
    const type = (JSON.parse(readFileSync(join(dir!, 'config.json'), 'utf8')) as { model_type?: unknown }).model_type;
    return (TEXT_CLASSIFIER_TYPES as readonly unknown[]).includes(type);
  } catch {
    return false;
  }
}

export async function newFineTune(ctx: Ctx): Promise<void> {
  const media = vscode.Uri.joinPath(ctx.extension.extensionUri, 'media').fsPath;
  const total = 4;

  // 1. model
  const models = await subfolders(join(media, 'models'), 'config.json');
  const modelItems: Pick<ModelChoice>[] = [];
  for (const m of models) {
    modelItems.push({ label: `$(package) peft-lab/${m}`, description: 'bundled', detail: await firstLine(join(media, 'models', m, 'README.md')), value: { kind: 'bundled', id: m } });
  }
  // Models already in the Hugging Face cache, by id (nothing is downloaded).
  for (const m of cachedHubModels()) modelItems.push({ label: `$(library) ${m.id}`, description: 'Hugging Face cache', detail: m.dir, value: { kind: 'hub', id: m.id } });
  modelItems.push({ label: '$(folder-opened) Choose a model folder…', description: 'a Hugging Face folder (config.json + safetensors or pytorch_model.bin) in this workspace', value: { kind: 'browse' } });
  const modelChoice = await pick(modelItems, 1, total, 'Base model');
  if (!modelChoice) return;
  let model: ModelAnswer;
  if (modelChoice.kind === 'browse') {
    const dir = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Use This Model', title: `${TITLE}: model folder` });
    if (!dir?.[0]) return;
    if (!existsSync(join(dir[0].fsPath, 'config.json'))) throw new Error(`${dir[0].fsPath} has no config.json: not a Hugging Face model folder`);
    model = { kind: 'folder', path: dir[0].fsPath };
  } else model = modelChoice.kind === 'hub' ? { kind: 'hub', id: modelChoice.id } : { kind: 'bundled', id: modelChoice.id };

  // 2. data
  const tasks = await subfolders(join(media, 'data'), 'train.jsonl');
  const dataItems: Pick<DataChoice>[] = [];
  for (const t of tasks) {
    dataItems.push({
      label: `$(beaker) ${t}`,
      description: 'bundled task (copied into the workspace)',
      detail: (await firstLine(join(media, 'data', t, 'README.md'))) ?? 'prompt → completion rows; metric: exact match',
      value: { kind: 'bundled', task: t },
    });
  }
  dataItems.push({ label: '$(file) Choose a data file…', description: 'JSONL, CSV or Parquet (text, prompt + completion, chat messages, instruction data, or text + label)', value: { kind: 'browse' } });
  const dataChoice = await pick(dataItems, 2, total, 'Training data');
  if (!dataChoice) return;
  let browsed: string | undefined;
  if (dataChoice.kind === 'browse') {
    const file = await vscode.window.showOpenDialog({ canSelectFiles: true, filters: { 'Data (JSONL, CSV, Parquet)': ['jsonl', 'json', 'ndjson', 'csv', 'parquet'] }, openLabel: 'Use This Data', title: `${TITLE}: training data` });
    if (!file?.[0]) return;
    browsed = file[0].fsPath;
  }

  // 3. adapter, or several to compare
  const adapterPick = await pick<AdapterKind | 'compare'>(
    // LoRA first (the usual choice, picked by Enter), then the comparison, where a list of every kind does not hide it.
    (() => {
      const kinds = adapterChoices().map((a) => ({ label: a.kind, description: a.description, value: a.kind as AdapterKind | 'compare' }));
      const compare = { label: '$(versions) Compare several adapters…', description: 'one spec, a run per adapter on the same model, data and seed', value: 'compare' as const };
      return [kinds[0]!, compare, ...kinds.slice(1)];
    })(),
    3,
    total,
    'Adapter',
  );
  if (!adapterPick) return;
  let compare: AdapterKind[] | undefined;
  if (adapterPick === 'compare') {
    const chosen = await vscode.window.showQuickPick(
      COMPARE_CHOICES.map((kind) => ({ label: kind, description: ADAPTER_DESCRIPTIONS[kind], picked: COMPARE_DEFAULTS.includes(kind), value: kind })),
      { title: `${TITLE} (3/${total}): adapters to compare`, placeHolder: 'Two or more adapters', canPickMany: true, ignoreFocusOut: true, matchOnDescription: true },
    );
    if (!chosen) return;
    if (chosen.length < 2) {
      void vscode.window.showWarningMessage('PEFT Lab: a comparison needs two or more adapters.');
      return;
    }
    compare = chosen.map((c) => c.value);
  }
  const adapter = compare ? compare[0]! : (adapterPick as AdapterKind);
  let mask: string | undefined;
  if (adapter === 'sparse') {
    const file = await vscode.window.showOpenDialog({ canSelectFiles: true, filters: { Safetensors: ['safetensors'] }, openLabel: 'Use This Mask', title: `${TITLE}: 0/1 mask (safetensors)` });
    if (!file?.[0]) return;
    mask = file[0].fsPath;
  }

  // 4. init (LoRA family only; a comparison starts each from its default)
  let init: LoraInit | undefined;
  const inits = compare ? [] : initChoices(adapter);
  if (inits.length) {
    init = await pick<LoraInit>(
      inits.map((i) => ({ label: i, description: INIT_DESCRIPTIONS[i], value: i })),
      4,
      total,
      'Initialisation',
    );
    if (!init) return;
  }

  // Where the spec goes.
  const ws = vscode.workspace.workspaceFolders?.[0]?.uri;
  const draftData: DataAnswer = dataChoice.kind === 'bundled' ? { task: dataChoice.task, train: `${dataChoice.task}/train.jsonl` } : { train: browsed! };
  const fileName = defaultSpecFileName({ adapter, ...(init ? { init } : {}), ...(compare ? { compare } : {}), data: draftData });
  const target = await vscode.window.showSaveDialog({
    title: `${TITLE}: save the spec`,
    saveLabel: 'Create Spec',
    filters: { 'PEFT Lab spec': ['peft.json', 'json'] },
    ...(ws ? { defaultUri: vscode.Uri.joinPath(ws, fileName) } : {}),
  });
  if (!target) return;
  let specFile = target.fsPath;
  if (!/\.peft\.json$/i.test(specFile)) specFile = specFile.replace(/(\.json)?$/i, '.peft.json');
  const specDir = dirname(specFile);

  let data: DataAnswer;
  if (dataChoice.kind === 'bundled') {
    const from = join(media, 'data', dataChoice.task);
    const to = join(specDir, 'data', dataChoice.task);
    await fsp.mkdir(to, { recursive: true });
    for (const f of ['train.jsonl', 'eval.jsonl', 'README.md']) {
      if (existsSync(join(from, f)) && !existsSync(join(to, f))) await fsp.copyFile(join(from, f), join(to, f));
    }
    const heldoutFrom = join(media, 'data', 'heldout.jsonl');
    const heldout = join(specDir, 'data', 'heldout.jsonl');
    if (existsSync(heldoutFrom) && !existsSync(heldout)) await fsp.copyFile(heldoutFrom, heldout);
    data = {
      task: dataChoice.task,
      train: join(to, 'train.jsonl'),
      ...(existsSync(join(to, 'eval.jsonl')) ? { eval: join(to, 'eval.jsonl') } : {}),
      ...(existsSync(heldout) ? { heldout } : {}),
    };
  } else if (!vscode.workspace.getWorkspaceFolder(vscode.Uri.file(browsed!))) {
    // A spec's paths may not leave the workspace: bring the file in.
    const to = join(specDir, 'data', basename(browsed!));
    await fsp.mkdir(dirname(to), { recursive: true });
    if (!existsSync(to)) await fsp.copyFile(browsed!, to);
    data = { train: to };
  } else data = { train: browsed! };
  if (dataChoice.kind === 'browse') {
    // Instruction data and the like: the fields their columns call for (the spec shows them).
    const columns = await firstRowFields(data.train);
    const fields = columns ? dataFields(columns, isClassifierFolder(modelDir(model, media))) : {};
    if (Object.keys(fields).length) data = { ...data, fields };
  }
  if (model.kind === 'folder' && !vscode.workspace.getWorkspaceFolder(vscode.Uri.file(model.path))) {
    void vscode.window.showWarningMessage(`PEFT Lab: the model folder ${model.path} is outside the workspace; a spec's paths may not leave it. Move or link it into the workspace.`);
  }

  // A classifier whose head does not fit the data's labels (3-class MNLI, STS-B's regression on a 2-label config, a base checkpoint) needs numLabels.
  const numLabels = await wizardNumLabels(modelDir(model, media), [data.train, ...(data.eval ? [data.eval] : [])], data.fields?.labelField);
  const answers: WizardAnswers = {
    specFile,
    model,
    ...(numLabels !== undefined ? { numLabels } : {}),
    data,
    adapter,
    logEvery: config.logEvery(),
    ...(init ? { init } : {}),
    ...(mask ? { mask } : {}),
    ...(compare ? { compare } : {}),
  };
  await fsp.writeFile(specFile, buildSpecText(answers, specDir), 'utf8');
  ctx.log.info(`wrote ${specFile}`);
  await vscode.window.showTextDocument(vscode.Uri.file(specFile));
}
