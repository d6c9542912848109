/** The `peftLab.*` settings, read in one place. */
import * as vscode from 'vscode';
import { isBackendPreference, type BackendPreference } from '../protocol';
import { expandPath } from './model/run-plan';

export const SECTION = 'peftLab';

/** Settings whose change needs a sidecar restart to apply. */
export const SIDECAR_SETTINGS = ['peftLab.backend', 'peftLab.sidecar.path', 'peftLab.sidecar.memoryLimitMb', 'peftLab.sidecar.threads'] as const;

function cfg(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

export function backendPreference(warn: (m: string) => void): BackendPreference {
  const value = cfg().get<string>('backend', 'auto');
  if (isBackendPreference(value)) return value;
  warn(`unknown peftLab.backend '${value}', using 'auto'`);
  return 'auto';
}

/** The sidecar path setting; a workspace value counts only in a trusted workspace (it names a script to run). */
export function configuredSidecarPath(): string | undefined {
  const inspected = vscode.workspace.getConfiguration('peftLab.sidecar').inspect<string>('path');
  const value = vscode.workspace.isTrusted
    ? (inspected?.workspaceFolderValue ?? inspected?.workspaceValue ?? inspected?.globalValue)
    : inspected?.globalValue;
  return value?.trim() || undefined;
}

/** Heap limit for the sidecar process in MB; 0 = Node's default. */
export function memoryLimitMb(): number {
  const v = cfg().get<number>('sidecar.memoryLimitMb', 0);
  return Number.isFinite(v) && v > 0 ? Math.round(v) : 0;
}

/** The sidecar's native-kernel threads; 0: its default (every core but one). */
export function threads(): number {
  const v = cfg().get<number>('sidecar.threads', 0);
  return Number.isInteger(v) && v > 0 ? Math.min(v, 64) : 0;
}

export function maxRestarts(): number {
  const v = cfg().get<number>('sidecar.maxRestarts', 3);
  return Number.isInteger(v) && v >= 0 ? v : 3;
}

/** `logEvery` written into new specs. */
export function logEvery(): number {
  const v = cfg().get<number>('logEvery', 10);
  return Number.isInteger(v) && v >= 1 ? v : 10;
}

/** "Try the Model…": tokens to generate, the sampling temperature (0: greedy) and the repetition penalty (1: none). */
export function generation(): { maxNewTokens: number; temperature: number; repetitionPenalty: number } {
  const n = cfg().get<number>('generation.maxNewTokens', 64);
  const t = cfg().get<number>('generation.temperature', 0);
  const r = cfg().get<number>('generation.repetitionPenalty', 1);
  return { maxNewTokens: Number.isInteger(n) && n >= 1 ? Math.min(n, 4096) : 64, temperature: Number.isFinite(t) && t >= 0 ? t : 0, repetitionPenalty: Number.isFinite(r) && r > 0 ? r : 1 };
}

export function firstWorkspaceFolder(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

/** The workspace folder containing `file`, else the first one. */
export function workspaceFolderOf(file: string): string | undefined {
  return vscode.workspace.getWorkspaceFolder(vscode.Uri.file(file))?.uri.fsPath ?? firstWorkspaceFolder();
}

/** The runs folder setting, expanded; undefined: each spec's own `runsDir` (the sidecar's default). */
export function runsFolder(workspaceFolder = firstWorkspaceFolder()): string | undefined {
  const v = cfg().get<string>('runsFolder', '');
  return v ? expandPath(v, workspaceFolder) : undefined;
}
