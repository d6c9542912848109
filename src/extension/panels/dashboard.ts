/**
 * Run dashboard (host side): tails each run folder's `metrics.jsonl` and `status.json` and posts
 * what is appended. On `panel/ready` it posts everything read so far (`dashboard/runs`), then
 * only appends and status changes; a file that shrank (a run folder reused) is re-read whole.
 */
import { promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import * as vscode from 'vscode';
import type { RunStatus } from '../../protocol';
import type { DashboardRecord, DashboardRun, WebviewMessage } from '../../protocol/webview';
import { messageOf, PanelBase, type PanelType } from './base';
import type { PanelDeps } from './deps';
import { MetricsParser } from './shaping/metrics';
import { statusFromJson } from './shaping/status';
import { watchPaths } from './watch';

const METRICS = 'metrics.jsonl';
const STATUS = 'status.json';

/** One run folder being followed. */
class RunTail implements vscode.Disposable {
  records: DashboardRecord[] = [];
  status: RunStatus | undefined;
  private offset = 0;
  private parser = new MetricsParser();
  private decoder = new StringDecoder('utf8');
  private statusText = '';
  private reading: Promise<void> = Promise.resolve();
  private readonly watcher: vscode.Disposable;

  constructor(
    readonly dir: string,
    private readonly onUpdate: (tail: RunTail, change: { appended: DashboardRecord[]; status: boolean; reset: boolean }) => void,
    private readonly onError: (message: string) => void,
  ) {
    this.watcher = watchPaths([dir, join(dir, METRICS)], () => this.refresh());
  }

  get run(): DashboardRun {
    const r: DashboardRun = { id: this.dir, label: basename(this.dir), records: this.records };
    if (this.status) r.status = this.status;
    return r;
  }

  /** Reads whatever is new; calls are serialised. */
  refresh(): Promise<void> {
    this.reading = this.reading.then(() => this.read()).catch((err: unknown) => this.onError(`${this.dir}: ${messageOf(err)}`));
    return this.reading;
  }

  private async read(): Promise<void> {
    let statusChanged = false;
    const text = await fsp.readFile(join(this.dir, STATUS), 'utf8').catch(() => undefined);
    if (text !== undefined && text !== this.statusText) {
      try {
        const status = statusFromJson(JSON.parse(text));
        if (!status) this.onError(`${this.dir}/status.json: not a run status`);
        else {
          this.status = status;
          statusChanged = true;
        }
        this.statusText = text;
      } catch {
        /* caught between writes (the writer renames a complete file, but be lenient) */
      }
    }
    let reset = false;
    const appended: DashboardRecord[] = [];
    const file = join(this.dir, METRICS);
    const size = await fsp.stat(file).then((s) => s.size, () => 0);
    if (size < this.offset) {
      // Truncated or replaced: start over.
      reset = true;
      this.offset = 0;
      this.records = [];
      this.parser = new MetricsParser();
      this.decoder = new StringDecoder('utf8');
    }
    if (size > this.offset) {
      const fh = await fsp.open(file, 'r');
      try {
        const buf = Buffer.alloc(size - this.offset);
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        this.offset += bytesRead;
        appended.push(...this.parser.push(this.decoder.write(buf.subarray(0, bytesRead))));
      } finally {
        await fh.close();
      }
      this.records.push(...appended);
    }
    if (reset || statusChanged || appended.length) this.onUpdate(this, { appended, status: statusChanged, reset });
  }

  dispose(): void {
    this.watcher.dispose();
  }
}

export class DashboardPanel extends PanelBase {
  private readonly tails = new Map<string, RunTail>();
  /** While a snapshot is being read, updates are not posted (the snapshot carries them). */
  private snapshotting = false;

  constructor(panel: vscode.WebviewPanel, deps: PanelDeps, sources: string[]) {
    super('dashboard', panel, deps, sources);
    for (const dir of sources) this.follow(dir);
    // The runs model sees run folders change too (and may see it first): read again then.
    this.disposables.push(
      deps.runs.onDidChange(({ dirs }) => {
        for (const [dir, tail] of this.tails) if (dirs.length === 0 || dirs.includes(dir)) void tail.refresh();
      }),
    );
  }

  private follow(dir: string): void {
    if (this.tails.has(dir)) return;
    const tail = new RunTail(
      dir,
      (t, change) => {
        if (this.snapshotting) return;
        if (change.reset) return this.postRuns();
        if (change.appended.length) this.post('dashboard/append', { runId: t.dir, records: change.appended });
        if (change.status && t.status) this.post('dashboard/status', { runId: t.dir, status: t.status });
      },
      (message) => this.log('warn', message),
    );
    this.tails.set(dir, tail);
    void tail.refresh();
  }

  private postRuns(): void {
    this.post('dashboard/runs', { runs: this.sources.map((s) => this.tails.get(s)!.run) });
  }

  protected async sendAll(): Promise<void> {
    this.snapshotting = true;
    try {
      await Promise.all([...this.tails.values()].map((t) => t.refresh()));
    } finally {
      this.snapshotting = false;
    }
    this.postRuns();
  }

  protected override async onMessage(m: WebviewMessage): Promise<void> {
    switch (m.type) {
      case 'dashboard/addRuns': {
        const picked = await pickRuns(this.deps, this.sources);
        if (!picked.length) return;
        const next = [...new Set([...this.sources, ...picked])];
        this.setSources(next, dashboardType.title(next));
        for (const d of picked) this.follow(d);
        await this.sendAll();
        return;
      }
      case 'dashboard/removeRun': {
        const next = this.sources.filter((s) => s !== m.payload.runId);
        if (next.length === this.sources.length || next.length === 0) return;
        this.tails.get(m.payload.runId)?.dispose();
        this.tails.delete(m.payload.runId);
        this.setSources(next, dashboardType.title(next));
        this.postRuns();
        return;
      }
      default:
        return super.onMessage(m);
    }
  }

  override dispose(): void {
    for (const t of this.tails.values()) t.dispose();
    this.tails.clear();
    super.dispose();
  }
}

/** Run folders to show: a multi-select of the runs the runs model knows, else a folder dialog. */
export async function pickRuns(deps: PanelDeps, exclude: readonly string[] = []): Promise<string[]> {
  const known = deps.runs.list().filter((r) => !exclude.includes(r.dir));
  if (known.length) {
    const items = known.map((r) => ({
      label: r.name,
      description: r.state,
      detail: r.dir,
      dir: r.dir,
    }));
    const browse = { label: '$(folder-opened) Browse…', description: 'a run folder elsewhere', dir: '' };
    const picked = await vscode.window.showQuickPick([...items, browse], { canPickMany: true, title: 'Runs to show', matchOnDetail: true });
    if (!picked) return [];
    if (!picked.some((p) => p === browse)) return picked.map((p) => p.dir);
    return [...picked.filter((p) => p !== browse).map((p) => p.dir), ...(await browseRuns(deps))];
  }
  return browseRuns(deps);
}

async function browseRuns(deps: PanelDeps): Promise<string[]> {
  const uris = await vscode.window.showOpenDialog({
    canSelectFolders: true,
    canSelectFiles: false,
    canSelectMany: true,
    openLabel: 'Show run',
    ...(deps.runs.root ? { defaultUri: deps.runs.root } : {}),
  });
  return (uris ?? []).map((u) => u.fsPath);
}

export const dashboardType: PanelType<DashboardPanel> = {
  kind: 'dashboard',
  title: (sources) => (sources.length === 1 ? `Run: ${basename(sources[0]!)}` : `Runs (${sources.length})`),
  create: (panel, deps, sources) => new DashboardPanel(panel, deps, sources),
  sameSources: (a, b) => a.length === b.length && a.every((s) => b.includes(s)),
};
