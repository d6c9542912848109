/**
 * The runs on disk, kept current: every run folder in the workspace (wherever a spec's `runsDir`
 * put it, so runs started with `peft-lab train` appear too) and in the `peftLab.runsFolder`
 * setting's folder.
 *
 * Three sources, because file watchers alone are not reliable enough (a watcher may report a new
 * folder but nothing created inside it afterwards):
 *  - a full scan (findFiles) at start and on demand;
 *  - FileSystemWatchers on what run folders hold (status.json, metrics.jsonl, a comparison's
 *    compare.json), on folders created in the runs folder setting's folder, and on deletions;
 *  - a poll every few seconds while something may change (a run is running, the view is visible,
 *    a folder was just created in the runs folder): running runs are re-read, and the "roots" —
 *    folders that hold run folders — are looked into for new ones.
 * A running run whose process is gone turns `interrupted` at the next poll, or at once when the
 * sidecar crashes.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname } from 'node:path';
import * as vscode from 'vscode';
import type { MetricRecord } from '../../protocol';
import * as config from '../config';
import { isUnder } from '../model/paths';
import { discoverRunDirs, ignoredBelow, ignoredPath } from '../model/run-discovery';
import { COMPARE_FILE, compareRunsNewestFirst, effectiveState, isPidAlive, readMetricsFile, readRun, type RunInfo } from '../model/runs';
import type { RunsChange, RunsModel } from '../panels/deps';
import type { SidecarClient } from '../sidecar';

const EXCLUDE = '**/{node_modules,.git,.venv,venv,__pycache__,site-packages}/**';
/** What run folders hold that tells of a run (created, progressing, ended) or a comparison. */
const RUN_FILES = '**/{status.json,metrics.jsonl,compare.json}';
const DEBOUNCE_MS = 150;
const POLL_MS = 3000;
/** How long a newly created folder is looked into. */
const FRESH_MS = 2 * 60_000;

export class WorkspaceRunsModel implements RunsModel, vscode.Disposable {
  private readonly runs = new Map<string, RunInfo>();
  private readonly emitter = new vscode.EventEmitter<RunsChange>();
  readonly onDidChange = this.emitter.event;
  private readonly disposables: vscode.Disposable[] = [];
  private folderWatchers: vscode.Disposable[] = [];
  private pending = new Set<string>();
  private pendingAll = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private poller: ReturnType<typeof setInterval> | undefined;
  private _root: vscode.Uri | undefined;
  private scanning: Promise<void> | undefined;
  /** Folders that hold run folders: path → how deep to look (and, for fresh ones, until when). */
  private readonly roots = new Map<string, { depth: number; until?: number }>();
  private viewVisible = false;
  private polling = false;

  constructor(
    private readonly sidecar: SidecarClient,
    private readonly log: vscode.LogOutputChannel,
  ) {
    const files = vscode.workspace.createFileSystemWatcher(RUN_FILES);
    // Deletions only: a deleted run folder is reported as the folder alone (not the files in it).
    // Handled in memory, without touching the disk.
    const deletions = vscode.workspace.createFileSystemWatcher('**/*', true, true, false);
    this.disposables.push(
      files,
      deletions,
      files.onDidCreate((u) => this.fileChanged(u.fsPath)),
      files.onDidChange((u) => this.fileChanged(u.fsPath)),
      files.onDidDelete((u) => this.fileChanged(u.fsPath)),
      deletions.onDidDelete((u) => this.removeUnder(u.fsPath)),
      vscode.workspace.onDidChangeWorkspaceFolders(() => this.refresh()),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration('peftLab.runsFolder')) this.refresh();
      }),
      // A sidecar that exits takes its runs with it: re-check them now, not at the next poll.
      sidecar.onDidChangeState(() => this.recheckLiveness()),
      sidecar.onDidCrash(() => this.recheckLiveness()),
      sidecar.onDidChangeJobs(() => this.updatePolling()),
    );
    this.refresh();
  }

  get root(): vscode.Uri | undefined {
    return this._root;
  }

  list(): readonly RunInfo[] {
    return [...this.runs.values()].sort(compareRunsNewestFirst);
  }

  get(dir: string): RunInfo | undefined {
    return this.runs.get(dir);
  }

  readMetrics(dir: string): Promise<MetricRecord[]> {
    return readMetricsFile(dir);
  }

  /** Resolves once the current scan (if any) is done. */
  ready(): Promise<void> {
    return this.scanning ?? Promise.resolve();
  }

  /** Re-reads everything (debounced). */
  refresh(): void {
    this.pendingAll = true;
    this.schedule();
  }

  /** Re-reads one run folder (debounced). */
  touch(dir: string): void {
    this.pending.add(dir);
    this.schedule();
  }

  /** A run folder is about to appear (a job was started for it): look for it for a while. */
  expect(runDir: string): void {
    this.expectIn(dirname(runDir), 1);
    this.touch(runDir);
  }

  /** Run folders are about to appear up to `depth` levels below `folder` (a comparison: 2). */
  expectIn(folder: string, depth: number): void {
    this.addRoot(folder, depth, Date.now() + FRESH_MS);
    this.updatePolling();
  }

  /** The runs view's visibility: while visible, new run folders are looked for. */
  setViewVisible(visible: boolean): void {
    this.viewVisible = visible;
    this.updatePolling();
    if (visible) void this.poll();
  }

  dispose(): void {
    clearTimeout(this.timer);
    clearInterval(this.poller);
    this.folderWatchers.forEach((d) => d.dispose());
    this.disposables.forEach((d) => d.dispose());
    this.emitter.dispose();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const all = this.pendingAll;
      const dirs = [...this.pending];
      this.pendingAll = false;
      this.pending.clear();
      const work = all ? this.scanAll() : this.readDirs(dirs);
      this.scanning = work
        .catch((err: unknown) => this.log.warn(`runs: ${err instanceof Error ? err.message : String(err)}`))
        .finally(() => (this.scanning = undefined));
    }, DEBOUNCE_MS);
  }

  private readOptions() {
    return { isAlive: isPidAlive, endedPids: this.sidecar.endedPids };
  }

  private async readDirs(dirs: string[]): Promise<void> {
    const changed: string[] = [];
    await Promise.all(
      dirs.map(async (dir) => {
        const before = this.runs.get(dir);
        const run = await readRun(dir, this.readOptions());
        if (run) {
          this.runs.set(dir, run);
          this.rootsOf(run);
          if (before && sameRun(before, run)) return;
        } else if (!this.runs.delete(dir)) return;
        changed.push(dir);
      }),
    );
    if (changed.length) this.changed(changed);
  }

  private async scanAll(): Promise<void> {
    this.watchRunsFolder();
    const dirs = new Set<string>();
    for (const u of await vscode.workspace.findFiles('**/{status.json,metrics.jsonl}', EXCLUDE)) dirs.add(dirname(u.fsPath));
    const folder = this._root?.fsPath;
    if (folder) {
      this.addRoot(folder, 2);
      // Outside the workspace findFiles does not reach it.
      for (const d of await discoverRunDirs(folder, 2, new Set())) dirs.add(d);
    }
    const next = new Map<string, RunInfo>();
    await Promise.all(
      [...dirs].map(async (dir) => {
        const run = await readRun(dir, this.readOptions());
        if (run) next.set(dir, run);
      }),
    );
    this.runs.clear();
    for (const [k, v] of next) {
      this.runs.set(k, v);
      this.rootsOf(v);
    }
    this.changed([]);
  }

  /** The folders a run's siblings will appear in: its parent, and a comparison's parent too. */
  private rootsOf(run: RunInfo): void {
    const parent = dirname(run.dir);
    this.addRoot(parent, 1);
    if (run.compareFile) this.addRoot(dirname(parent), 2);
  }

  private addRoot(dir: string, depth: number, until?: number): void {
    const had = this.roots.get(dir);
    if (had && had.until === undefined) return; // a permanent root stays one
    if (had && until !== undefined && had.until !== undefined && had.until >= until && had.depth >= depth) return;
    this.roots.set(dir, { depth: Math.max(depth, had?.depth ?? 0), ...(until !== undefined ? { until } : {}) });
  }

  /** A run file changed: its run folder is re-read; for compare.json, the variants beside it (and new ones looked for). */
  private fileChanged(file: string): void {
    if (ignoredPath(file)) return;
    const dir = dirname(file);
    if (basename(file) !== COMPARE_FILE) return this.touch(dir);
    this.addRoot(dir, 1);
    for (const run of this.runs.values()) if (dirname(run.dir) === dir) this.touch(run.dir);
    this.pollSoon();
  }

  /** A folder created in the runs folder: look into it for a while (a run folder, a comparison's folder). */
  private async created(base: string, path: string): Promise<void> {
    if (ignoredBelow(base, path)) return;
    try {
      if (!(await fsp.stat(path)).isDirectory()) return;
    } catch {
      return;
    }
    this.addRoot(path, 1, Date.now() + FRESH_MS);
    this.updatePolling();
    this.pollSoon();
  }

  private pollSoon(): void {
    setTimeout(() => void this.poll(), DEBOUNCE_MS * 2);
  }

  /** Re-reads running runs and looks into the roots for new run folders. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const now = Date.now();
      for (const [dir, r] of this.roots) if (r.until !== undefined && r.until < now) this.roots.delete(dir);
      for (const run of this.runs.values()) if (run.state === 'running' || run.state === 'unknown') this.touch(run.dir);
      const known = new Set(this.runs.keys());
      for (const [dir, r] of this.roots) {
        for (const found of await discoverRunDirs(dir, r.depth, known)) {
          known.add(found);
          this.touch(found);
        }
      }
      this.recheckLiveness();
    } catch (err) {
      this.log.warn(`runs: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      this.polling = false;
      this.updatePolling();
    }
  }

  /** Polls while a run runs, a job of this window is active, the view is visible, or a fresh folder is watched. */
  private updatePolling(): void {
    const now = Date.now();
    const wanted =
      this.viewVisible ||
      this.sidecar.activeJobs.length > 0 ||
      [...this.runs.values()].some((r) => r.state === 'running' || r.state === 'unknown') ||
      [...this.roots.values()].some((r) => r.until !== undefined && r.until > now);
    if (wanted && !this.poller) this.poller = setInterval(() => void this.poll(), POLL_MS);
    else if (!wanted && this.poller) {
      clearInterval(this.poller);
      this.poller = undefined;
    }
  }

  private watchRunsFolder(): void {
    const folder = config.runsFolder();
    this._root = folder ? vscode.Uri.file(folder) : undefined;
    this.folderWatchers.forEach((d) => d.dispose());
    this.folderWatchers = [];
    if (!folder) return;
    const base = vscode.Uri.file(folder);
    // Folders created in it, a run folder or a comparison's with its variants (two levels): a
    // watcher can miss the files created inside a new folder, so these are looked into for a while.
    const created = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(base, '{*,*/*}'), false, true, true);
    this.folderWatchers.push(created, created.onDidCreate((u) => void this.created(folder, u.fsPath)));
    // Outside the workspace, the workspace's watchers do not reach it.
    if (vscode.workspace.getWorkspaceFolder(base)) return;
    const w = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(base, RUN_FILES));
    const d = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(base, '**/*'), true, true, false);
    this.folderWatchers.push(
      w,
      d,
      w.onDidCreate((u) => this.fileChanged(u.fsPath)),
      w.onDidChange((u) => this.fileChanged(u.fsPath)),
      w.onDidDelete((u) => this.fileChanged(u.fsPath)),
      d.onDidDelete((u) => this.removeUnder(u.fsPath)),
    );
  }

  private removeUnder(path: string): void {
    if (ignoredPath(path)) return;
    const gone = [...this.runs.keys()].filter((dir) => isUnder(path, dir));
    for (const dir of [...this.roots.keys()]) if (isUnder(path, dir)) this.roots.delete(dir);
    if (!gone.length) return;
    for (const dir of gone) this.runs.delete(dir);
    this.changed(gone);
  }

  /** Re-derives the state of running runs from their pids (no file reads). */
  private recheckLiveness(): void {
    const changed: string[] = [];
    for (const run of this.runs.values()) {
      if (run.status?.state !== 'running') continue;
      const state = effectiveState(run.status, isPidAlive, this.sidecar.endedPids);
      if (state !== run.state) {
        run.state = state;
        changed.push(run.dir);
      }
    }
    if (changed.length) this.changed(changed);
  }

  private changed(dirs: string[]): void {
    this.updatePolling();
    this.emitter.fire({ dirs });
  }
}

/** Whether a re-read found nothing new (so no change event is due). */
function sameRun(a: RunInfo, b: RunInfo): boolean {
  return (
    a.state === b.state &&
    a.hasAdapter === b.hasAdapter &&
    a.hasRunSpec === b.hasRunSpec &&
    a.compareFile === b.compareFile &&
    a.status?.updatedAt === b.status?.updatedAt &&
    a.status?.state === b.status?.state &&
    a.status?.step === b.status?.step &&
    a.lastMetric?.step === b.lastMetric?.step &&
    a.lastMetric?.eval_loss === b.lastMetric?.eval_loss
  );
}
