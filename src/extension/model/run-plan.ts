/**
 * Where a fine-tune started from the editor writes its run folder (vscode-free). It follows the
 * sidecar (and `peft-lab train`): `<runsDir>/<name>-YYYYMMDD-HHMMSS[-N]`, `runsDir` from the spec
 * (default `runs`, relative to the spec), `name` from the spec (default: the file name without
 * `.peft.json`). The `peftLab.runsFolder` setting, when set, replaces the spec's runsDir.
 * Knowing the folder before the job starts lets the extension tie the job to its run.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { getNodeValue, parseTree, type ParseError } from 'jsonc-parser/lib/esm/main.js';
import { HUB_ID } from '../../../sidecar/src/spec/hub-cache';

/** The sidecar's default run name for a spec file (see sidecar/src/spec/load.ts). */
export function specName(file: string): string {
  const base = basename(file).replace(/\.peft\.json$/i, '').replace(/\.json$/i, '');
  const clean = base.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return clean || 'run';
}

/** `${workspaceFolder}` and `${userHome}` expanded, `~/` too; relative paths against the workspace folder. */
export function expandPath(value: string, workspaceFolder: string | undefined): string | undefined {
  let v = value.trim();
  if (!v) return undefined;
  if (v.includes('${workspaceFolder}')) {
    if (!workspaceFolder) return undefined;
    v = v.split('${workspaceFolder}').join(workspaceFolder);
  }
  v = v.split('${userHome}').join(homedir());
  if (v === '~' || v.startsWith('~/')) v = join(homedir(), v.slice(1));
  if (isAbsolute(v)) return resolve(v);
  return workspaceFolder ? resolve(workspaceFolder, v) : undefined;
}

export function runStamp(now: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}-${p(now.getHours())}${p(now.getMinutes())}${p(now.getSeconds())}`;
}

export interface RunPlanInput {
  specFile: string;
  specText: string;
  /** The runs folder setting, already expanded (undefined: the spec's runsDir). */
  runsFolder?: string;
  /** Before the name: 'compare-' for a comparison's folder (the sidecar's `compare-<name>-<time>`). */
  prefix?: string;
  now?: Date;
  exists?: (p: string) => boolean;
}

/** The spec's root object, or undefined when the text is not valid JSON (jsonc-parser would guess). */
function specObject(text: string): Record<string, unknown> | undefined {
  const errors: ParseError[] = [];
  const root = parseTree(text, errors, { allowTrailingComma: false, disallowComments: true });
  if (errors.length > 0 || root?.type !== 'object') return undefined;
  return getNodeValue(root) as Record<string, unknown>;
}

/** The run folder for a new run (or comparison), or undefined when the spec's text cannot tell (the sidecar then reports why). */
export function planRunDir(input: RunPlanInput): string | undefined {
  const obj = specObject(input.specText);
  if (!obj) return undefined;
  const spec = obj as { name?: unknown; runsDir?: unknown };
  if (spec.name !== undefined && (typeof spec.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(spec.name))) return undefined;
  if (spec.runsDir !== undefined && (typeof spec.runsDir !== 'string' || spec.runsDir === '')) return undefined;
  const name = (spec.name as string | undefined) ?? specName(input.specFile);
  const runsDir = input.runsFolder ?? resolve(dirname(input.specFile), (spec.runsDir as string | undefined) ?? 'runs');
  const exists = input.exists ?? existsSync;
  const stamp = runStamp(input.now ?? new Date());
  const base = `${input.prefix ?? ''}${name}-${stamp}`;
  let dir = join(runsDir, base);
  for (let i = 2; exists(dir); i++) dir = join(runsDir, `${base}-${i}`);
  return dir;
}

export interface ImportancePlan {
  /** Absolute model folder (a bundled `peft-lab/<name>` resolved to the extension's media/models). */
  model: string;
  /** Absolute training data file. */
  data: string;
  /** Output folder for scores.safetensors + importance.json. */
  out: string;
}

/**
 * "Score layers" on a spec: the `importance` job's inputs from the spec's model and training data;
 * the output goes to `<runsDir>/importance-<name>-<stamp>`. A string when the spec cannot tell.
 */
export function planImportance(input: RunPlanInput & { bundledModelsDir: string }): ImportancePlan | string {
  const obj = specObject(input.specText);
  if (!obj) return 'the spec is not a JSON object';
  const spec = obj as { name?: unknown; runsDir?: unknown; model?: unknown; data?: { train?: unknown } };
  if (typeof spec.model !== 'string' || !spec.model) return 'the spec has no "model"';
  if (typeof spec.data?.train !== 'string' || !spec.data.train) return 'the spec has no "data.train"';
  const specDir = dirname(input.specFile);
  const exists = input.exists ?? existsSync;
  // As the sidecar reads a spec: bundled, a folder beside it, else a Hugging Face id (its cache resolves it).
  const folder = resolve(specDir, spec.model);
  const model = spec.model.startsWith('peft-lab/') ? join(input.bundledModelsDir, spec.model.slice('peft-lab/'.length)) : HUB_ID.test(spec.model) && !exists(folder) ? spec.model : folder;
  const name = typeof spec.name === 'string' && spec.name ? spec.name : specName(input.specFile);
  const runsDir = input.runsFolder ?? resolve(specDir, typeof spec.runsDir === 'string' && spec.runsDir ? spec.runsDir : 'runs');
  const stamp = runStamp(input.now ?? new Date());
  let out = join(runsDir, `importance-${name}-${stamp}`);
  for (let i = 2; exists(out); i++) out = join(runsDir, `importance-${name}-${stamp}-${i}`);
  return { model, data: resolve(specDir, spec.data.train), out };
}
