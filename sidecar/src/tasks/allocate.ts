/**
 * `peft-lab allocate` and the 'allocate' job: SPT decisions and LoRA rank patterns per parameter
 * budget from an importance folder (importance.json + scores.safetensors). Writes the report JSON
 * (each budget carries an `allocation` a run spec can take) and, beside it, the 0/1 masks of the
 * sparse parts: `masks-<budget>.safetensors` (weights and biases of linear modules, for the
 * `sparse` adapter) and `norm-masks-<budget>.safetensors` (norm parameters, when SPT picks any).
 */
import { existsSync, promises as fsp, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type {
  AllocateJobParams,
  AllocationReport,
  AllocationSpec,
  ImportanceMethod,
  ImportanceReport,
  JobResult,
  RankBudgetResult,
  SptBudgetResult,
  SptCell,
  SptTensorDecision,
} from '../../../src/protocol';
import { IMPORTANCE_METHODS } from '../../../src/protocol';
import { InputError } from '../errors';
import { readSafetensors, toFloat32, writeSafetensors, type HostTensor } from '../io/safetensors';
import { throwIfCancelled, yieldToEventLoop, type JobContext } from '../jobs/context';
import { allocateRanks, budgetLabel, parseBudget, peftRankConfig, SPT_DEFAULTS, SptAllocator, type Candidate, type RankModule } from '../analysis/allocation';
import { cellOf, emptyGrid, gridAxes, sumGrid } from '../analysis/grid';
import { AnalysisUsageError, int, list, num, runCli, str } from './importance';

export const DEFAULT_RANKS = [0, 2, 4, 8, 16];

/**
 * An importance report and its scores: `path` is the report (any name), its scores file, or the
 * folder that holds importance.json.
 */
export async function readImportance(path: string): Promise<{ report: ImportanceReport; scores: Map<string, HostTensor>; dir: string; file: string }> {
  const p = resolve(path);
  const isDir = existsSync(p) && statSync(p).isDirectory();
  const dir = isDir ? p : dirname(p);
  const file = isDir || p.endsWith('.safetensors') ? join(dir, 'importance.json') : p;
  let report: ImportanceReport;
  try {
    report = JSON.parse(readFileSync(file, 'utf8')) as ImportanceReport;
  } catch (e) {
    throw new InputError(file, '', `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); run peft-lab importance first`);
  }
  if (report.version !== 1 || !Array.isArray(report.tensors)) throw new InputError(file, '', 'not a PEFT Lab importance report');
  const scores = await readSafetensors(join(dir, report.scoresFile || 'scores.safetensors'));
  return { report, scores, dir, file };
}

/** Candidate tensors: the transformer blocks' base tensors (matrices and vectors), with their scores. */
export function candidatesOf(report: ImportanceReport, scores: Map<string, HostTensor>, method: ImportanceMethod, which: 'all' | 'linear', file: string): Candidate[] {
  const base = report.tensors.filter((t) => t.source === 'base' && t.layer >= 0 && (t.shape.length === 1 || t.shape.length === 2));
  const matrices = new Set(base.filter((t) => t.shape.length === 2).map((t) => t.name));
  const out: Candidate[] = [];
  for (const t of base) {
    const dot = t.name.lastIndexOf('.');
    const module = t.name.slice(0, dot);
    const linear = matrices.has(`${module}.weight`);
    if (which === 'linear' && !linear) continue;
    const h = scores.get(`${method}.${t.name}`);
    if (!h) throw new InputError(file, `${method}.${t.name}`, 'score missing from scores.safetensors');
    out.push({ name: t.name, layer: t.layer, type: t.type, shape: t.shape, scores: toFloat32(h), ...(linear ? { module } : {}) });
  }
  return out;
}

export async function runAllocate(p: AllocateJobParams, ctx: JobContext): Promise<JobResult & { kind: 'allocate' }> {
  const { report: imp, scores, file } = await readImportance(p.importance);
  const method = p.method ?? 'fisher';
  if (!imp.methods.includes(method)) throw new InputError(file, 'methods', `has no ${method} scores (it has ${imp.methods.join(', ')}); rerun importance with --method ${method}`);
  const opts = { r: p.r ?? SPT_DEFAULTS.r, alphaRatio: p.alphaRatio ?? SPT_DEFAULTS.alphaRatio, beta: p.beta ?? SPT_DEFAULTS.beta };
  const loraAlpha = p.loraAlpha ?? 2 * opts.r;
  const ranks = p.ranks ?? DEFAULT_RANKS;
  const rankScale = p.rankScale ?? 2;
  const which = p.candidates ?? 'all';
  const cands = candidatesOf(imp, scores, method, which, file);
  if (cands.length === 0) throw new InputError(file, 'tensors', 'no candidate tensors in the transformer blocks');
  const spt = new SptAllocator(cands, opts);
  const out = resolve(p.out);
  const outDir = dirname(out);
  await fsp.mkdir(outDir, { recursive: true });
  const columns = imp.numel.columns;
  const numLayers = Math.max(...imp.numel.layers) + 1;
  const axes = gridAxes(numLayers, columns);
  const sptResults: SptBudgetResult[] = [];
  const rankResults: RankBudgetResult[] = [];
  // Rank allocation works on the linear modules' weights, by their total importance.
  const rankModules: RankModule[] = cands
    .filter((c) => c.module && c.shape.length === 2)
    .map((c) => {
      const t = imp.tensors.find((x) => x.name === c.name)!;
      // Stored [out, in] (or [in, out] for Conv1D): in + out is the sum either way; the split only caps the rank.
      return { module: c.module!, layer: c.layer, type: c.type, inFeatures: c.shape[1]!, outFeatures: c.shape[0]!, importance: t.totals[method] ?? 0 };
    });
  const budgets = p.budgets;
  for (let bi = 0; bi < budgets.length; bi++) {
    throwIfCancelled(ctx.signal);
    const label = budgets[bi]!;
    let target: number;
    try {
      target = parseBudget(label, imp.totalParams);
    } catch (e) {
      throw new InputError('', 'budgets', (e as Error).message);
    }
    // SPT
    const k = spt.maxK(target);
    const dec = spt.decisions(k);
    const cost = dec.reduce((s, d) => s + d.cost, 0);
    const nextCost = k < spt.total ? spt.costAt(k + 1) : null;
    const tensors: SptTensorDecision[] = cands.map((c, i) => ({
      name: c.name, layer: c.layer, type: c.type, shape: c.shape, kind: c.shape.length === 2 ? 'matrix' : 'vector',
      ...(c.module ? { module: c.module } : {}), selected: dec[i]!.selected, decision: dec[i]!.decision, cost: dec[i]!.cost,
    }));
    const grid = emptyGrid<SptCell | null>(axes, null);
    for (const t of tensors) {
      if (t.kind !== 'matrix') continue;
      const rc = cellOf(grid, t.layer, t.type);
      if (rc) grid.values[rc[0]]![rc[1]] = { decision: t.decision, selected: t.selected, cost: t.cost, size: t.shape[0]! * t.shape[1]! };
    }
    const vectorGrid = sumGrid(axes, tensors.filter((t) => t.kind === 'vector'), (t) => t.cost);
    const masks = spt.masks(k);
    const linearMasks = new Map<string, HostTensor>();
    const normMasks = new Map<string, HostTensor>();
    let sparseParams = 0;
    let normParams = 0;
    tensors.forEach((t, i) => {
      if (t.decision !== 'sparse' && t.decision !== 'full') return;
      const data = t.decision === 'full' ? new Uint8Array(masks[i]!.length).fill(1) : masks[i]!;
      const h: HostTensor = { dtype: 'U8', shape: [...t.shape], data };
      if (t.module) {
        linearMasks.set(t.name, h);
        sparseParams += t.cost;
      } else {
        normMasks.set(t.name, h);
        normParams += t.cost;
      }
    });
    const loraMods = tensors.filter((t) => t.decision === 'lora');
    const loraParams = loraMods.reduce((s, t) => s + t.cost, 0);
    const allocation: AllocationSpec = { method: 'spt', budget: label, trainableParams: cost };
    if (loraMods.length) allocation.lora = { targets: loraMods.map((t) => t.module ?? t.name.slice(0, t.name.lastIndexOf('.'))), r: opts.r, alpha: loraAlpha, rankPattern: {}, alphaPattern: {}, params: loraParams };
    if (linearMasks.size) {
      const f = join(outDir, `masks-${budgetLabel(label)}.safetensors`);
      await writeSafetensors(f, linearMasks, { format: 'pt', peft_lab: 'spt-mask', budget: label });
      allocation.sparse = { mask: f, tensors: linearMasks.size, params: sparseParams };
    }
    if (normMasks.size) {
      const f = join(outDir, `norm-masks-${budgetLabel(label)}.safetensors`);
      await writeSafetensors(f, normMasks, { format: 'pt', peft_lab: 'spt-norm-mask', budget: label });
      allocation.norms = { mask: f, tensors: [...normMasks.keys()], params: normParams };
    }
    sptResults.push({
      budget: label, target, k, cost, nextCost, loraModules: loraMods.length, loraParams, sparseParams: tensors.filter((t) => t.decision === 'sparse' && t.kind === 'matrix').reduce((s, t) => s + t.cost, 0),
      vectorParams: tensors.filter((t) => t.kind === 'vector').reduce((s, t) => s + t.cost, 0), grid, vectorGrid, tensors, allocation,
    });
    // Rank allocation under the same budget.
    const choices = allocateRanks(rankModules, target, ranks);
    const cfg = peftRankConfig(choices, rankScale);
    const params = choices.reduce((s, c) => s + c.params, 0);
    const rgrid = sumGrid(axes, choices, (c) => c.rank);
    rankResults.push({
      budget: label, target, params,
      modules: choices.map((c) => ({ module: c.module, layer: c.layer, type: c.type, importance: c.importance, ideal: c.ideal, rank: c.rank, params: c.params })),
      grid: rgrid,
      allocation: { method: 'rank', budget: label, trainableParams: params, ...(cfg.targets.length ? { lora: { ...cfg, params } } : {}) },
    });
    ctx.progress({ done: bi + 1, total: budgets.length, message: `budget ${label}: k=${k}, ${cost} parameters` });
    await yieldToEventLoop();
  }
  const report: AllocationReport = {
    version: 1,
    importance: file,
    ...(imp.spec ? { spec: imp.spec } : {}),
    method,
    candidates: which,
    params: { ...opts, loraAlpha, ranks: [...ranks], rankScale },
    totalParams: imp.totalParams,
    candidateParams: spt.total,
    spt: sptResults,
    rank: rankResults,
  };
  await fsp.writeFile(out, `${JSON.stringify(report)}\n`, 'utf8');
  return { kind: 'allocate', out, report };
}

// ---- command line ------------------------------------------------------------------------------

export const ALLOCATE_USAGE =
  'allocate --importance DIR/importance.json|scores.safetensors --budgets 0.5%,1%,… [--method fisher] [--r 8 --alpha-ratio 10 --beta 5] [--lora-alpha 16] [--candidates all|linear] [--ranks 0,2,4,8,16] [--rank-scale 2] --out FILE';

export async function allocateCommand(v: Record<string, string | boolean | string[] | undefined>): Promise<void> {
  const method = str(v, 'method', false);
  if (method !== undefined && !(IMPORTANCE_METHODS as readonly string[]).includes(method)) throw new AnalysisUsageError(`--method must be one of ${IMPORTANCE_METHODS.join(', ')}`);
  const cand = str(v, 'candidates', false);
  if (cand !== undefined && cand !== 'all' && cand !== 'linear') throw new AnalysisUsageError('--candidates must be all or linear');
  const budgets = list(v, 'budgets');
  if (budgets.length === 0) throw new AnalysisUsageError('--budgets is required (e.g. 0.5%,1%)');
  const p: AllocateJobParams = { kind: 'allocate', importance: str(v, 'importance')!, budgets, out: str(v, 'out')! };
  if (method) p.method = method as ImportanceMethod;
  if (cand) p.candidates = cand;
  const r = int(v, 'r');
  const ar = num(v, 'alpha-ratio');
  const beta = num(v, 'beta');
  const la = num(v, 'lora-alpha');
  const rs = num(v, 'rank-scale');
  if (r !== undefined) p.r = r;
  if (ar !== undefined) p.alphaRatio = ar;
  if (beta !== undefined) p.beta = beta;
  if (la !== undefined) p.loraAlpha = la;
  if (rs !== undefined) p.rankScale = rs;
  const ranks = list(v, 'ranks');
  if (ranks.length) {
    const rr = ranks.map(Number);
    if (rr.some((x) => !Number.isInteger(x) || x < 0)) throw new AnalysisUsageError(`--ranks must be non-negative integers, got '${ranks.join(',')}'`);
    p.ranks = rr;
  }
  const res = await runCli(v.verbose === true, (ctx) => runAllocate(p, ctx));
  for (const s of res.report.spt) {
    const rk = res.report.rank.find((x) => x.budget === s.budget)!;
    process.stderr.write(`${s.budget} (${s.target} params): SPT k=${s.k} → ${s.cost} params (${s.loraModules} LoRA modules, ${s.sparseParams} sparse, ${s.vectorParams} in vectors); ranks → ${rk.params} params\n`);
  }
  process.stdout.write(`wrote ${res.out}\n`);
}
