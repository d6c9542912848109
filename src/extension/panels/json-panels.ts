/**
 * The panels that show one JSON report (importance, budget, comparison, localization): read,
 * shape into the panel's view (pure functions in ./shaping), post; again whenever the file changes.
 * A file that cannot be read or is not the expected report shows as an error in the panel.
 */
import { existsSync, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative, sep } from 'node:path';
import * as vscode from 'vscode';
import { HOST_TO_WEBVIEW, type BudgetView, type ComparisonView, type EvaluationView, type HostToWebview, type ImportanceView, type LocalizationView, type PanelKind, type WebviewMessage } from '../../protocol/webview';
import { isWithinAny } from '../model/paths';
import { messageOf, PanelBase, type PanelType } from './base';
import type { PanelDeps } from './deps';
import { allocationFor, budgetView, deriveSpec, keySlug } from './shaping/allocation';
import { comparisonLinks, comparisonView } from './shaping/compare';
import { evaluationLinks, evaluationView } from './shaping/evaluation';
import { importanceView } from './shaping/importance';
import { localizationView } from './shaping/localize';
import { watchPaths } from './watch';

type DataMessage = 'importance/data' | 'budget/data' | 'comparison/data' | 'localization/data' | 'evaluation/data';

abstract class JsonReportPanel<M extends DataMessage> extends PanelBase {
  protected raw: unknown;
  /** What the page may open besides its file: the folders the shown report links to. */
  private links: string[] = [];

  protected constructor(
    kind: PanelKind,
    private readonly message: M,
    private readonly shape: (raw: unknown, source: string) => HostToWebview[M],
    panel: vscode.WebviewPanel,
    deps: PanelDeps,
    sources: string[],
    private readonly linksOf: (view: HostToWebview[M]) => string[] = () => [],
  ) {
    super(kind, panel, deps, sources);
    if (sources[0]) this.disposables.push(watchPaths([sources[0]], () => void this.sendAll(), { pollMs: 2000, debounceMs: 150 }));
  }

  protected get file(): string | undefined {
    return this.sources[0];
  }

  protected async sendAll(): Promise<void> {
    const file = this.file;
    if (!file) return this.post('panel/error', { message: 'No file: open this panel from a command with a file.' });
    try {
      this.raw = JSON.parse(await fsp.readFile(file, 'utf8'));
      const view = this.shape(this.raw, file);
      // What the webview would refuse (a value JSON cannot carry, say) shows as the panel's error, not as nothing.
      const problem = HOST_TO_WEBVIEW[this.message].check(view, this.message);
      if (problem) throw new Error(`cannot be shown: ${problem}`);
      this.links = this.linksOf(view);
      this.post(this.message, view);
    } catch (err) {
      // With the file, which the page keeps: a reload after a failed load shows this file again.
      this.post('panel/error', { message: `${file}: ${messageOf(err)}`, sources: [file] });
    }
  }

  protected override mayOpen(path: string): boolean {
    return super.mayOpen(path) || isWithinAny(this.links, path);
  }
}

export class ImportancePanel extends JsonReportPanel<'importance/data'> {
  constructor(panel: vscode.WebviewPanel, deps: PanelDeps, sources: string[]) {
    super('importance', 'importance/data', importanceView, panel, deps, sources);
  }

  /** "Allocate a parameter budget…": the allocate command on this report; the budget panel opens beside this one. */
  protected override async onMessage(m: WebviewMessage): Promise<void> {
    if (m.type !== 'importance/allocate') return super.onMessage(m);
    try {
      if (!this.file) throw new Error('no importance report');
      const out = await vscode.commands.executeCommand<string | undefined>('peftLab.allocateBudget', this.file, m.payload.method, { beside: true });
      this.post('importance/allocated', out ? { ok: true, message: `Wrote ${basename(out)}` } : { ok: false, message: 'No allocation written.' });
    } catch (err) {
      this.post('importance/allocated', { ok: false, message: messageOf(err) });
      throw err;
    }
  }
}

export class ComparisonPanel extends JsonReportPanel<'comparison/data'> {
  constructor(panel: vscode.WebviewPanel, deps: PanelDeps, sources: string[]) {
    super('comparison', 'comparison/data', comparisonView, panel, deps, sources, comparisonLinks);
  }
}

export class LocalizationPanel extends JsonReportPanel<'localization/data'> {
  constructor(panel: vscode.WebviewPanel, deps: PanelDeps, sources: string[]) {
    super('localization', 'localization/data', localizationView, panel, deps, sources);
  }
}

export class EvaluationPanel extends JsonReportPanel<'evaluation/data'> {
  constructor(panel: vscode.WebviewPanel, deps: PanelDeps, sources: string[]) {
    super('evaluation', 'evaluation/data', evaluationView, panel, deps, sources, evaluationLinks);
  }
}

export class BudgetPanel extends JsonReportPanel<'budget/data'> {
  constructor(panel: vscode.WebviewPanel, deps: PanelDeps, sources: string[]) {
    super('budget', 'budget/data', budgetView, panel, deps, sources);
  }

  protected override async onMessage(m: WebviewMessage): Promise<void> {
    if (m.type !== 'budget/train') return super.onMessage(m);
    try {
      const specPath = await this.trainWith(m.payload.key);
      if (!specPath) return this.post('budget/trained', { ok: false, message: 'No source spec chosen.' });
      this.post('budget/trained', { ok: true, message: `Wrote ${basename(specPath)}`, specPath });
    } catch (err) {
      this.post('budget/trained', { ok: false, message: messageOf(err) });
      throw err;
    }
  }

  /**
   * Writes the chosen allocation beside the report (`<report>.<key>.allocation.json`) and a spec
   * `"allocation": "<that file>"` beside the source spec, and opens the spec.
   */
  private async trainWith(key: string): Promise<string | undefined> {
    const file = this.file;
    if (!file) throw new Error('no allocation file');
    const allocation = allocationFor(this.raw, key);
    if (!allocation) throw new Error(`no allocation "${key}" in ${file}`);
    const source = await this.sourceSpec(file);
    if (!source) return undefined;
    const slug = keySlug(key);
    const allocationFile = join(dirname(file), `${basename(file).replace(/\.json$/i, '')}.${slug}.allocation.json`);
    await fsp.writeFile(allocationFile, `${JSON.stringify(allocation, null, 2)}\n`);
    const rel = relative(dirname(source), allocationFile).split(sep).join('/');
    const text = deriveSpec(await fsp.readFile(source, 'utf8'), rel, slug);
    const out = join(dirname(source), `${basename(source).replace(/\.peft\.json$/i, '')}.${slug}.peft.json`);
    await fsp.writeFile(out, text);
    // Beside the panel, which stays visible (and shows the outcome).
    await vscode.window.showTextDocument(vscode.Uri.file(out), { viewColumn: vscode.ViewColumn.Beside, preview: false });
    return out;
  }

  /** The spec the allocation is for: named in the report, the one spec near it, or picked by the user. */
  private async sourceSpec(file: string): Promise<string | undefined> {
    const named = (this.raw as { spec?: unknown } | undefined)?.spec;
    if (typeof named === 'string' && existsSync(named)) return named;
    const near: string[] = [];
    const stop = vscode.workspace.getWorkspaceFolder(vscode.Uri.file(file))?.uri.fsPath;
    for (let dir = dirname(file), i = 0; i < 4; i++, dir = dirname(dir)) {
      near.push(...readdirSync(dir).filter((f) => f.endsWith('.peft.json') && !/\.(spt|rank)-/.test(f)).map((f) => join(dir, f)).filter(isSingleRunSpec));
      if (near.length || dir === stop || dirname(dir) === dir) break;
    }
    if (near.length === 1) return near[0];
    const picked = await vscode.window.showOpenDialog({
      title: 'The run spec to train with this allocation',
      canSelectMany: false,
      filters: { 'Run specs': ['json'] },
      defaultUri: vscode.Uri.file(near.length ? dirname(near[0]!) : dirname(file)),
    });
    return picked?.[0]?.fsPath;
  }
}

/** A spec that trains one adapter (not a comparison of variants only). */
function isSingleRunSpec(file: string): boolean {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as { adapter?: unknown };
    return typeof v === 'object' && v !== null && v.adapter !== undefined;
  } catch {
    return false;
  }
}

const fileTitle = (prefix: string) => (sources: readonly string[]) => `${prefix}: ${sources[0] ? basename(dirname(sources[0])) : '?'}`;

export const importanceType: PanelType<ImportancePanel> = {
  kind: 'importance',
  title: fileTitle('Importance'),
  create: (panel, deps, sources) => new ImportancePanel(panel, deps, sources),
};
export const budgetType: PanelType<BudgetPanel> = {
  kind: 'budget',
  title: (s) => `Budget: ${s[0] ? basename(s[0]) : '?'}`,
  create: (panel, deps, sources) => new BudgetPanel(panel, deps, sources),
};
export const comparisonType: PanelType<ComparisonPanel> = {
  kind: 'comparison',
  title: fileTitle('Compare'),
  create: (panel, deps, sources) => new ComparisonPanel(panel, deps, sources),
};
export const localizationType: PanelType<LocalizationPanel> = {
  kind: 'localization',
  title: fileTitle('Localization'),
  create: (panel, deps, sources) => new LocalizationPanel(panel, deps, sources),
};

export const evaluationType: PanelType<EvaluationPanel> = {
  kind: 'evaluation',
  title: fileTitle('Evaluation'),
  create: (panel, deps, sources) => new EvaluationPanel(panel, deps, sources),
};

export type { BudgetView, ComparisonView, EvaluationView, ImportanceView, LocalizationView };
