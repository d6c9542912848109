/**
 * What the webview panels get from the rest of the extension. Written by the extension owner;
 * the panels (this folder) only consume it.
 */
import type * as vscode from 'vscode';
import type { MetricRecord } from '../../protocol';
import type { RunInfo } from '../model/runs';
import type { SidecarClient } from '../sidecar';

export type { RunInfo } from '../model/runs';
export type { SidecarClient } from '../sidecar';

/** Which run folders changed; `dirs` is empty when the whole list was re-read. */
export interface RunsChange {
  readonly dirs: readonly string[];
}

/** The run-folder watcher (runs folder on disk, including runs started from the command line). */
export interface RunsModel {
  /** Fires (debounced) when run folders appear, disappear, or their status/metrics change. */
  readonly onDidChange: vscode.Event<RunsChange>;
  /** The runs folder being watched, or undefined without a workspace folder. */
  readonly root: vscode.Uri | undefined;
  /** Every run folder known now, newest first. */
  list(): readonly RunInfo[];
  /** One run by its folder path (absolute), if known. */
  get(dir: string): RunInfo | undefined;
  /** Every record of `<dir>/metrics.jsonl` (malformed or partial lines skipped); [] when absent. */
  readMetrics(dir: string): Promise<MetricRecord[]>;
}

export interface PanelDeps {
  sidecar: SidecarClient;
  runs: RunsModel;
  log: vscode.OutputChannel;
  extensionUri: vscode.Uri;
}
