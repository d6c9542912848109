/**
 * Loading a run spec (`*.peft.json`): JSON parse with offsets (jsonc-parser), validation against the
 * published schema, cross-field checks, defaults, and path resolution against the spec's folder
 * inside the workspace root. Every problem names its JSON path and line:column.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { findNodeAtLocation, getNodeValue, parseTree, type Node, type ParseError } from 'jsonc-parser/lib/esm/main.js';
import type { AdapterSpec, AllocationSpec } from '../../../src/protocol';
import schemaJson from '../../../schemas/peft-spec.schema.json';
import { InputError } from '../errors';
import { describeParseError, lineColumn } from '../io/json';
import { adapterFromAllocation } from '../train/allocation';
import { adapterOptionProblems } from './adapter-options';
import { resolveInside } from './paths';
import { formatPath, resolveRef, validateNode, type JsonSchema, type PathSegment, type SpecIssue } from './schema';
import type { DataFormat, ResolvedSpec, RunConfig, RunSpec, VariantSpec } from './types';
import { parsePromptTemplate } from '../data/prompt-template';
import { BUNDLED_PREFIX, defaultBundledModelsDir, HUB_ID, hubCacheDir, hubIdOfSnapshot, hubSnapshot, missingModelProblem } from './hub-cache';

export { BUNDLED_PREFIX, defaultBundledModelsDir } from './hub-cache';

export const SPEC_SCHEMA = schemaJson as unknown as JsonSchema;

export interface LocatedIssue extends SpecIssue {
  line: number;
  column: number;
}

/**
 * A spec with problems: `where` is the first one's place; the message (one line) names them all, since
 * the command line prints only the message; `issues` has them with their offsets.
 */
export class SpecError extends InputError {
  constructor(
    file: string,
    readonly issues: LocatedIssue[],
  ) {
    const first = issues[0]!;
    const rest = issues.slice(1).map((i) => `${i.path ? `${i.path} at ` : ''}${i.line}:${i.column}: ${i.message}`);
    const more = rest.length ? ` (and ${rest.length} more problem${rest.length > 1 ? 's' : ''}: ${rest.join('; ')})` : '';
    super(file, `${first.path ? `${first.path} at ` : ''}${first.line}:${first.column}`, `${first.message}${more}`);
    this.name = 'SpecError';
  }

  override get problems(): string[] {
    return this.issues.map((i) => `${this.file} (${i.path ? `${i.path} at ` : ''}${i.line}:${i.column}): ${i.message}`);
  }
}

export interface LoadSpecOptions {
  /** Paths may not leave this folder (default: the spec's folder). */
  workspaceRoot?: string;
  /** Where `peft-lab/<name>` models live (default: `media/models` of the extension). */
  bundledModelsDir?: string;
  /** The Hugging Face hub cache that model ids resolve in (default: as huggingface_hub finds it). */
  hubCacheDir?: string;
}


/**
 * The base model as an exported adapter names it (base_model_name_or_path): a bundled or hub id as
 * the spec gave it (PEFT loads it by that name elsewhere), else the model folder.
 */
export function baseModelName(cfg: { model: string; modelDir: string }): string {
  if (cfg.model.startsWith(BUNDLED_PREFIX)) return cfg.model;
  return hubIdOfSnapshot(cfg.modelDir) ?? cfg.modelDir;
}

/** Schema defaults for absent keys, recursively, except inside adapters and variants (merged later). */
function applyDefaults(value: Record<string, unknown>, schema: JsonSchema): void {
  const s = resolveRef(SPEC_SCHEMA, schema);
  for (const [key, sub] of Object.entries(s.properties ?? {})) {
    if (sub.$ref === '#/definitions/adapter' || key === 'variants') continue;
    const r = resolveRef(SPEC_SCHEMA, sub);
    if (value[key] === undefined && r.default !== undefined) value[key] = structuredClone(r.default);
    const v = value[key];
    if (v && typeof v === 'object' && !Array.isArray(v) && r.properties) applyDefaults(v as Record<string, unknown>, r);
  }
}

class Issues {
  readonly list: SpecIssue[] = [];
  constructor(private readonly root: Node | undefined) {}
  /** An issue at `path` (or at the nearest existing ancestor's node). */
  at(path: PathSegment[], message: string, key = false): void {
    let node: Node | undefined;
    for (let n = path.length; n >= 0 && !node; n--) node = this.root ? findNodeAtLocation(this.root, path.slice(0, n)) : undefined;
    // Point at the key of a property, which is where an editor underlines.
    const target = key && node?.parent?.type === 'property' ? node.parent.children?.[0] : node;
    this.list.push({ path: formatPath(path), offset: target?.offset ?? 0, length: target?.length ?? 0, message });
  }
}

function specName(file: string): string {
  const base = basename(file).replace(/\.peft\.json$/i, '').replace(/\.json$/i, '');
  const clean = base.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return clean || 'run';
}

const MAX_NESTING = 64;

/** Offset of the first `{` / `[` (outside strings) that opens level `max + 1`, if any. */
function nestingPast(text: string, max: number): number | undefined {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return i;
    } else if (c === 0x7d || c === 0x5d) depth = Math.max(0, depth - 1);
  }
  return undefined;
}

/**
 * Parses and validates a spec's text. No file system access: returns the spec with defaults
 * filled (paths as written) and the problems found, located by offset.
 */
export function parseSpecText(text: string, file: string): { spec?: RunSpec; issues: SpecIssue[]; root?: Node } {
  // The parser and the validator recurse: refuse absurd nesting before it overflows the stack.
  const deep = nestingPast(text, MAX_NESTING);
  if (deep !== undefined) return { issues: [{ path: '', offset: deep, length: 1, message: `nested more than ${MAX_NESTING} levels deep (a run spec needs a few)` }] };
  const errors: ParseError[] = [];
  const root = parseTree(text, errors, { disallowComments: true, allowTrailingComma: false });
  if (errors.length > 0 || !root) {
    return {
      // Only the first syntax error: the ones after it are usually its echoes.
      issues: (errors.length ? errors.slice(0, 1) : [{ error: 0, offset: 0, length: 0 }]).map((e) => ({
        path: '',
        offset: e.offset,
        length: e.length,
        message: errors.length ? `JSON syntax error: ${describeParseError(e.error)}` : 'the file is empty',
      })),
    };
  }
  const issues = new Issues(root);
  validateNode(SPEC_SCHEMA, SPEC_SCHEMA, root, [], issues.list);
  if (issues.list.length > 0) return { issues: issues.list, root };

  // A plain copy (jsonc-parser builds null-prototype objects).
  const raw = JSON.parse(JSON.stringify(getNodeValue(root))) as Record<string, unknown>;
  raw.optimizer ??= {};
  raw.schedule ??= {};
  applyDefaults(raw, SPEC_SCHEMA);
  raw.name ??= specName(file);
  const spec = raw as unknown as RunSpec;

  const trainingChecks = (o: { steps?: number; epochs?: number; schedule?: { warmupSteps?: number; warmupRatio?: number } }, p: PathSegment[]) => {
    if (o.steps !== undefined && o.epochs !== undefined) issues.at([...p, 'epochs'], 'give "steps" or "epochs", not both', true);
    if (o.schedule?.warmupSteps !== undefined && o.schedule.warmupRatio !== undefined)
      issues.at([...p, 'schedule', 'warmupRatio'], 'give "warmupSteps" or "warmupRatio", not both', true);
  };
  const adapterChecks = (a: AdapterSpec, p: PathSegment[]) => {
    for (const [key, message] of adapterOptionProblems(a)) issues.at(key ? [...p, key] : p, message, key !== '');
  };

  trainingChecks(spec, []);
  if (spec.data.eval !== undefined && spec.data.evalSplit !== undefined) issues.at(['data', 'evalSplit'], 'give "eval" or "evalSplit", not both', true);
  if (spec.data.promptTemplate !== undefined) {
    const parsed = parsePromptTemplate(spec.data.promptTemplate);
    if (typeof parsed === 'string') issues.at(['data', 'promptTemplate'], parsed, false);
  }
  if (spec.earlyStopping && spec.data.eval === undefined && spec.data.evalSplit === undefined)
    issues.at(['earlyStopping'], 'early stopping needs an eval set: set "data.eval" or "data.evalSplit"', true);
  if (spec.adapter) adapterChecks(spec.adapter, ['adapter']);
  else if (!spec.variants && spec.allocation === undefined) issues.at([], 'missing required key "adapter" (or "allocation", or "variants" for peft-lab compare)');
  const names = new Set<string>();
  spec.variants?.forEach((v, i) => {
    trainingChecks(v, ['variants', i]);
    adapterChecks(v.adapter, ['variants', i, 'adapter']);
    if (names.has(v.name)) issues.at(['variants', i, 'name'], `duplicate variant name ${JSON.stringify(v.name)}`);
    names.add(v.name);
  });
  return { spec, issues: issues.list, root };
}

/**
 * An allocation file (one entry of `peft-lab allocate`'s report, as the budget panel writes it),
 * validated against the schema's `allocation` definition; problems name the path inside the file.
 */
export function readAllocationFile(file: string): { allocation?: AllocationSpec; problems: string[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return { problems: [`cannot read the allocation file ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`] };
  }
  const deep = nestingPast(text, MAX_NESTING);
  if (deep !== undefined) return { problems: [`${file}: nested more than ${MAX_NESTING} levels deep`] };
  const errors: ParseError[] = [];
  const root = parseTree(text, errors, { disallowComments: true, allowTrailingComma: false });
  if (errors.length > 0 || !root) {
    const e = errors[0];
    const lc = lineColumn(text, e?.offset ?? 0);
    return { problems: [`${file} ${lc.line}:${lc.column}: ${e ? `JSON syntax error: ${describeParseError(e.error)}` : 'the file is empty'}`] };
  }
  if (root.type !== 'object') return { problems: [`${file}: expected an allocation object (method, budget, trainableParams, lora / sparse)`] };
  const issues: SpecIssue[] = [];
  validateNode(SPEC_SCHEMA, SPEC_SCHEMA.definitions!.allocation!, root, [], issues);
  if (issues.length > 0) {
    return {
      problems: issues.map((i) => {
        const lc = lineColumn(text, i.offset);
        return `${file} ${i.path ? `${i.path} at ` : ''}${lc.line}:${lc.column}: ${i.message}`;
      }),
    };
  }
  return { allocation: JSON.parse(JSON.stringify(getNodeValue(root))) as AllocationSpec, problems: [] };
}

/** Control characters (a path may hold a "\n" escape) written as escapes: every problem stays one line. */
const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const oneLineText = (s: string) => s.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

function locate(text: string, issues: SpecIssue[]): LocatedIssue[] {
  return issues.map((i) => ({ ...i, message: oneLineText(i.message), ...lineColumn(text, i.offset) }));
}

function inferFormat(path: string): DataFormat | undefined {
  try {
    if (statSync(path).isDirectory()) return 'images';
  } catch {
    /* a missing file is reported elsewhere */
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.jsonl' || ext === '.json' || ext === '.ndjson') return 'jsonl';
  if (ext === '.parquet') return 'parquet';
  return undefined;
}

/** Reads, validates and resolves a spec file. Throws SpecError (or InputError when unreadable). */
export function loadSpec(file: string, opts: LoadSpecOptions = {}): ResolvedSpec {
  const specFile = resolve(file);
  let text: string;
  try {
    text = readFileSync(specFile, 'utf8');
  } catch (e) {
    throw new InputError(specFile, '', `cannot read the spec (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const { spec, issues, root } = parseSpecText(text, specFile);
  if (issues.length > 0 || !spec) throw new SpecError(specFile, locate(text, issues));

  const specDir = dirname(specFile);
  const workspaceRoot = resolve(opts.workspaceRoot ?? specDir);
  const more = new Issues(root);
  const inside = (p: string, path: PathSegment[]): string | undefined => {
    const r = resolveInside(workspaceRoot, specDir, p);
    if (!r.ok) {
      more.at(path, r.problem);
      return undefined;
    }
    return r.path;
  };
  const mustExist = (abs: string | undefined, path: PathSegment[], kind: 'file' | 'folder', what: string): void => {
    if (abs === undefined) return;
    let st;
    try {
      st = statSync(abs);
    } catch {
      more.at(path, `${what} not found: ${abs}`);
      return;
    }
    if (kind === 'file' && !st.isFile()) more.at(path, `${what} ${abs} is not a file`);
    if (kind === 'folder' && !st.isDirectory()) more.at(path, `${what} ${abs} is not a folder`);
  };

  // model
  let modelDir = '';
  if (spec.model.startsWith(BUNDLED_PREFIX)) {
    const name = spec.model.slice(BUNDLED_PREFIX.length);
    const dir = opts.bundledModelsDir ?? defaultBundledModelsDir();
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) more.at(['model'], `bundled model id ${JSON.stringify(spec.model)} is not of the form peft-lab/<name>`);
    else if (!existsSync(join(dir, name, 'config.json'))) {
      let have: string[] = [];
      try {
        have = readdirSync(dir).filter((d) => existsSync(join(dir, d, 'config.json')));
      } catch {
        /* no bundled models */
      }
      more.at(['model'], `no bundled model ${JSON.stringify(name)} in ${dir} (bundled: ${have.length ? have.map((h) => BUNDLED_PREFIX + h).join(', ') : 'none'})`);
    } else modelDir = join(dir, name);
  } else if (HUB_ID.test(spec.model) && !existsSync(resolve(specDir, spec.model))) {
    // As from_pretrained: a folder first, else a model id, here from the local hub cache only.
    const snapshot = hubSnapshot(spec.model, opts.hubCacheDir);
    if (snapshot) modelDir = snapshot;
    else
      more.at(['model'], missingModelProblem(spec.model, opts.hubCacheDir ?? hubCacheDir()));
  } else {
    const abs = inside(spec.model, ['model']);
    if (abs !== undefined) {
      if (!existsSync(abs)) more.at(['model'], `model folder not found: ${abs}`);
      else if (!existsSync(join(abs, 'config.json'))) more.at(['model'], `${abs} is not a Hugging Face model folder (no config.json)`);
      else modelDir = abs;
    }
  }

  // data
  const data = { ...spec.data };
  const train = inside(data.train, ['data', 'train']);
  const format = data.format ?? (train ? inferFormat(train) : undefined);
  if (train && !format) more.at(['data', 'train'], `cannot tell the data format of ${JSON.stringify(data.train)} from its name: set "data.format" (jsonl, csv, parquet or images)`);
  const kind = format === 'images' ? 'folder' : 'file';
  mustExist(train, ['data', 'train'], kind, 'training data');
  if (train) data.train = train;
  if (data.eval !== undefined) {
    const ev = inside(data.eval, ['data', 'eval']);
    mustExist(ev, ['data', 'eval'], kind, 'eval data');
    if (ev) data.eval = ev;
  }
  if (data.heldout !== undefined) {
    const h = inside(data.heldout, ['data', 'heldout']);
    mustExist(h, ['data', 'heldout'], 'file', 'held-out text');
    if (h) data.heldout = h;
  }
  const maskPath = (a: AdapterSpec | undefined, path: PathSegment[]): AdapterSpec | undefined => {
    if (!a?.mask) return a;
    const m = inside(a.mask, [...path, 'mask']);
    mustExist(m, [...path, 'mask'], 'file', 'mask file');
    return m ? { ...a, mask: m } : a;
  };
  let adapter = maskPath(spec.adapter, ['adapter']);
  // allocation: it configures the top-level adapter (the spec's own adapter supplies other options).
  let allocation = spec.allocation;
  const warnings: string[] = [];
  if (spec.allocation !== undefined) {
    let alloc: AllocationSpec | undefined;
    let allocDir = specDir;
    if (typeof spec.allocation === 'string') {
      const abs = inside(spec.allocation, ['allocation']);
      mustExist(abs, ['allocation'], 'file', 'allocation file');
      if (abs !== undefined && existsSync(abs) && statSync(abs).isFile()) {
        const r = readAllocationFile(abs);
        for (const p of r.problems) more.at(['allocation'], p);
        alloc = r.allocation;
        allocDir = dirname(abs);
        allocation = abs;
      }
    } else alloc = spec.allocation;
    if (alloc) {
      try {
        const derived = adapterFromAllocation(alloc, spec.adapter);
        let a = derived.adapter;
        if (a.mask !== undefined) {
          const r = resolveInside(workspaceRoot, allocDir, a.mask);
          if (!r.ok) more.at(['allocation'], `sparse.mask: ${r.problem}`);
          else {
            mustExist(r.path, ['allocation'], 'file', 'the allocation\'s sparse.mask file');
            a = { ...a, mask: r.path };
          }
        }
        for (const [key, message] of adapterOptionProblems(a)) more.at(['allocation'], `the adapter it configures${key ? ` (option ${JSON.stringify(key)})` : ''}: ${message}`);
        adapter = a;
        warnings.push(...derived.warnings);
      } catch (e) {
        more.at(['allocation'], (e as Error).message);
      }
    }
  }
  const variants = spec.variants?.map((v, i) => ({ ...v, adapter: maskPath(v.adapter, ['variants', i, 'adapter'])! }));
  const runsDir = inside(spec.runsDir, ['runsDir']) ?? spec.runsDir;

  if (more.list.length > 0) throw new SpecError(specFile, locate(text, more.list));
  return {
    ...spec,
    ...(adapter ? { adapter } : {}),
    ...(variants ? { variants } : {}),
    ...(allocation !== undefined ? { allocation } : {}),
    ...(warnings.length ? { warnings } : {}),
    data: { ...data, format: format! },
    runsDir,
    specFile,
    workspaceRoot,
    modelDir,
  };
}

/** The single run of a spec (its top-level adapter). */
export function runConfig(spec: ResolvedSpec): RunConfig {
  if (!spec.adapter) {
    throw new InputError(spec.specFile, 'adapter', spec.variants ? 'this spec has variants and no top-level adapter: run it with peft-lab compare' : 'missing "adapter"');
  }
  const { variants: _v, adapter, ...rest } = spec;
  return { version: 1, ...rest, adapter };
}

/** One variant of a comparison: the spec with the variant's adapter and overrides. */
export function variantConfig(spec: ResolvedSpec, v: VariantSpec): RunConfig {
  const { variants: _v, adapter: _a, ...rest } = spec;
  const cfg: RunConfig = { version: 1, ...rest, adapter: v.adapter, variant: v.name, name: v.name };
  if (v.description !== undefined) cfg.description = v.description;
  if (v.optimizer) cfg.optimizer = { ...spec.optimizer, ...v.optimizer };
  if (v.schedule) {
    const base = { ...spec.schedule };
    // A variant's warmup replaces the base's, whichever way each gives it.
    if (v.schedule.warmupSteps !== undefined || v.schedule.warmupRatio !== undefined) {
      delete base.warmupSteps;
      delete base.warmupRatio;
    }
    cfg.schedule = { ...base, ...v.schedule };
  }
  for (const k of ['batchSize', 'gradientAccumulation', 'maxGradNorm'] as const) if (v[k] !== undefined) cfg[k] = v[k];
  if (v.steps !== undefined || v.epochs !== undefined) {
    delete cfg.steps;
    delete cfg.epochs;
    if (v.steps !== undefined) cfg.steps = v.steps;
    if (v.epochs !== undefined) cfg.epochs = v.epochs;
  }
  return cfg;
}
